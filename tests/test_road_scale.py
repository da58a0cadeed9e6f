"""The road as a measurement of the motion's scale (--w_road_scale): the road pixels at the plane's metric depth warped
with the motion's translation scaled over a log grid; the least error's scale says how far the ego went, and the term
pulls the pose net's translation toward it."""
import math

import torch

import pytest

from networks.gsp_loss import ROAD_ID, GSPLoss
from tests.test_ground_term import _road_frames
from tests.test_gsp import make_opt
from utils.errors import BadData
from utils.geometry import ego_motion_to_cam, ground_plane_depth
from utils.losses import curve_minimum, log_grid, road_error_curve


def _curve(imgs, K, c2e, motions, factor, span=4.0, points=25):
    plane = ground_plane_depth(K, c2e, imgs.shape[-2:], 0.0)

    def moved(s):
        m = motions.clone()
        m[:, :3, 3] *= factor * s
        return [ego_motion_to_cam(m[k:k + 1], c2e[None])[:, 0] for k in range(2)]

    scales = log_grid(span, points)
    curve, npx = road_error_curve(imgs[1], [imgs[0], imgs[2]], plane, torch.isfinite(plane), K, moved, scales, 8.0)
    return curve, npx, scales


def test_log_grid_is_even_in_log_and_holds_one():
    g = log_grid(4.0, 25)
    assert len(g) == 25 and math.isclose(float(g[0]), 0.25) and math.isclose(float(g[-1]), 4.0)
    assert math.isclose(float(g[12]), 1.0, abs_tol=1e-12)
    assert torch.allclose(torch.diff(torch.log(g)), torch.full((24,), math.log(16) / 24, dtype=torch.float64))
    with pytest.raises(ValueError):
        log_grid(1.0, 5)


def test_curve_minimum_refines_between_grid_points():
    scales = log_grid(4.0, 25)
    x = torch.log(scales)
    for true in (0.7, 1.0, 1.37):  # a parabola in log scale: its vertex exactly
        s, contrast = curve_minimum(1.0 + (x - math.log(true)) ** 2, scales)
        assert math.isclose(s, true, rel_tol=1e-6) and contrast > 1
    s, _ = curve_minimum(1.0 + x, scales)  # least at the grid's end: the end itself
    assert math.isclose(s, 0.25)
    _, flat = curve_minimum(torch.full((25,), 0.3, dtype=torch.float64), scales)
    assert flat == 0


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.5])
def test_the_road_measures_how_wrong_the_translation_is(factor):
    """A textured road seen by a camera moving 1 m a frame, the motion handed over at 0.5 / 1 / 2.5x the truth: the
    least error over the grid (0.25-4x of the handed motion) is at 1 / factor, within 3 %."""
    imgs, K, c2e, motions = _road_frames()
    curve, npx, scales = _curve(imgs, K, c2e, motions, factor)
    s, contrast = curve_minimum(curve, scales)
    assert int(npx) > 100
    assert abs(s * factor - 1) < 0.03, (factor, s)
    assert contrast > 1.0  # the road's texture says it clearly


def test_a_textureless_road_measures_nothing():
    imgs, K, c2e, motions = _road_frames()
    curve, _, scales = _curve(torch.full_like(imgs, 0.5), K, c2e, motions, 1.0)
    _, contrast = curve_minimum(curve, scales)
    assert contrast < 0.05  # below --road_scale_min_contrast's default: no pull


def _six(imgs, K, c2e):
    """The one road camera as all 6 of a rig (the criterion's batch layout, B = 1)."""
    h, w = imgs.shape[-2:]
    return {"imgs": imgs[:, 0][None, :, None].expand(1, 3, 6, 3, h, w).contiguous(),
            "K": K.expand(1, 6, 3, 3), "cam2ego": c2e.expand(1, 6, 4, 4),
            "sem": torch.full((1, 6, h, w), ROAD_ID, dtype=torch.int64)}


def test_criterion_pulls_the_translation_toward_what_the_road_measures():
    """--w_road_scale: a motion 1.6x too long gets a gradient shortening it (and a 0.6x one lengthening it), the
    measured scale is logged (~1 / 1.6), the term's value is |log s*| x w; none in the refine phase; a clear error
    without labels."""
    imgs, K, c2e, motions = _road_frames()
    batch = _six(imgs, K, c2e)
    h, w = imgs.shape[-2:]
    out = {("disp", s): torch.full((6, 1, h >> s, w >> s), 0.2) for s in range(4)}
    out.update(depth=torch.full((6, 1, h, w), 10.0), gs_scale=torch.full((6, 1, h, w), 0.05))
    opts = ("--use_gsp", "false", "--ground_max_depth", "8", "--road_scale_downsample", "1")
    for factor, sign in ((1.6, 1), (0.6, -1)):
        poses = motions.clone()[None]
        poses[..., :3, 3] *= factor
        poses.requires_grad_(True)
        torch.manual_seed(0)
        base, _, _ = GSPLoss(make_opt(*opts))(out, poses, batch)
        torch.manual_seed(0)
        loss, logs, _ = GSPLoss(make_opt(*opts, "--w_road_scale", "0.5"))(out, poses, batch)
        s = float(logs["road_scale"])
        assert abs(s * factor - 1) < 0.05 and float(logs["road_scale_used"]) == 1
        assert math.isclose(float((loss - base).detach()), 0.5 * abs(math.log(s)), rel_tol=1e-4)
        g, = torch.autograd.grad(loss - base, poses)
        t = poses[..., :3, 3].detach()
        assert (sign * (g[..., :3, 3] * t).sum(-1) > 0).all()  # along +t for too long: descent shortens it
    refine = GSPLoss(make_opt(*opts, "--w_road_scale", "0.5", "--gsp_phase", "refine"))
    assert "road_scale" not in refine(out, poses, batch)[1]
    del batch["sem"]
    with pytest.raises(BadData, match="--w_road_scale reads the road's pixels"):
        GSPLoss(make_opt(*opts, "--w_road_scale", "0.5"))(out, poses, batch)


def test_the_heading_search_turns_the_translation_back_toward_the_road():
    """A translation 1.3x too long and turned 12 deg about the up axis: the heading search (at the handed length)
    turns it back by most of the 12 deg, the road then fits far better (higher contrast), and the scale at that heading
    is within 3 % of 1 / 1.3; the term from step --road_scale_from on only."""
    imgs, K, c2e, motions = _road_frames()
    batch = _six(imgs, K, c2e)
    h, w = imgs.shape[-2:]
    out = {("disp", s): torch.full((6, 1, h >> s, w >> s), 0.2) for s in range(4)}
    out.update(depth=torch.full((6, 1, h, w), 10.0), gs_scale=torch.full((6, 1, h, w), 0.05))
    turn = math.radians(12)
    poses = motions.clone()[None]
    x = poses[..., 0, 3].clone()
    poses[..., 0, 3], poses[..., 1, 3] = 1.3 * math.cos(turn) * x, 1.3 * math.sin(turn) * x
    opts = ("--use_gsp", "false", "--ground_max_depth", "8", "--road_scale_downsample", "1", "--w_road_scale", "0.5")
    logs = {}
    for heading in ("0", "20"):
        logs[heading] = GSPLoss(make_opt(*opts, "--road_scale_heading", heading))(out, poses, batch)[1]
    assert -14 < float(logs["20"]["road_scale_heading"]) < -6
    assert float(logs["20"]["road_scale_contrast"]) > 2 * float(logs["0"]["road_scale_contrast"])
    assert abs(float(logs["20"]["road_scale"]) * 1.3 - 1) < 0.03
    late = GSPLoss(make_opt(*opts, "--road_scale_from", "10"))
    assert "road_scale" not in late(out, poses, batch)[1]
    late.set_step(10)
    assert "road_scale" in late(out, poses, batch)[1]
