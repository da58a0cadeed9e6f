"""The ground terms of stage 1 (--w_ground): the road plane's depth per pixel from the calibration; a hinge that pulls
a depth beyond that plane back, leaving nearer depths (anything standing on the road) alone; and (--ground_mode road)
a two-sided term on the pixels the 2D labels call road."""
import math

import torch

import pytest

import options
from networks.gsp_loss import ROAD_ID, GSPLoss
from tests.test_gsp import cam2ego, make_opt
from utils.errors import BadData, ConfigError
from utils.geometry import ground_plane_depth
from utils.losses import ground_hinge, ground_road, road_motion


def _rig(h=24, w=32, f=20.0, height=1.5):
    K = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
    return K, cam2ego(0, [1.0, 0.0, height])


def test_ground_plane_depth_is_where_each_downward_ray_meets_the_road():
    h, w, f = 24, 32, 20.0
    K, c2e = _rig(h, w, f)
    plane = ground_plane_depth(K[None], c2e[None], (h, w), height=0.1)
    assert plane.shape == (1, 1, h, w)
    cy = (h - 1) / 2
    for v in (12, 17, 23):  # below the horizon (row 11.5): z = (camera height above the road) / (row slope)
        want = (1.5 - 0.1) / ((v - cy) / f)
        assert torch.allclose(plane[0, 0, v], torch.full((w,), want), rtol=1e-5)
    assert torch.isinf(plane[0, 0, :12]).all()  # the horizon and above: the ray never meets the road


def test_ground_hinge_pulls_only_depths_beyond_the_plane():
    plane = torch.tensor([4.0, 8.0, float("inf"), 6.0]).view(1, 1, 1, 4)
    depth = torch.tensor([6.0, 4.0, 50.0, 6.0]).view(1, 1, 1, 4).requires_grad_(True)
    loss, beyond = ground_hinge(depth, plane, margin=0.2)
    # only the first pixel is beyond 1.2 x its plane; the sky pixel (inf) does not count in the mean
    assert math.isclose(loss.item(), (math.log(6 / 4) - math.log(1.2)) / 3, rel_tol=1e-6)
    assert math.isclose(beyond.item(), 1 / 3, rel_tol=1e-6)
    loss.backward()
    assert depth.grad[0, 0, 0, 0] > 0 and torch.all(depth.grad[0, 0, 0, 1:] == 0)  # the step shortens it, only it
    masked, _ = ground_hinge(depth, plane, 0.2, valid=torch.tensor([0.0, 1, 1, 1]).view(1, 1, 1, 4))
    assert masked.item() == 0  # left out by the mask (e.g. the ego car's body)


def _ring_batch(b=1, h=32, w=48):
    """6 cameras 1.5 m up looking out every 60 deg, random images, no motion, flat disparity outputs: (batch,
    motion, out without depth / gs_scale, (b, h, w))."""
    K, _ = _rig(h, w)
    c2e = torch.stack([cam2ego(60 * c, [0.5 * math.cos(math.radians(60 * c)), 0.5 * math.sin(math.radians(60 * c)),
                                        1.5]) for c in range(6)])[None]
    batch = {"imgs": torch.rand(b, 3, 6, 3, h, w), "K": K.expand(b, 6, 3, 3), "cam2ego": c2e}
    motion = torch.eye(4).repeat(b, 2, 1, 1)
    out = {("disp", s): torch.full((b * 6, 1, h >> s, w >> s), 0.2) for s in range(4)}
    return batch, motion, out, (b, h, w)


def test_stage1_criterion_adds_the_ground_term_with_w_ground():
    batch, motion, out, (b, h, w) = _ring_batch()
    out.update(depth=torch.full((b * 6, 1, h, w), 80.0), gs_scale=torch.full((b * 6, 1, h, w), 0.05))
    base, logs0, _ = GSPLoss(make_opt("--use_gsp", "false"))(out, motion, batch)
    with_ground, logs, _ = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "0.5"))(out, motion, batch)
    assert "loss_ground" not in logs0 and float(logs["loss_ground"]) > 0 and float(logs["ground_beyond"]) == 1.0
    assert math.isclose(float(with_ground - base), 0.5 * float(logs["loss_ground"]), rel_tol=1e-5)


def test_ground_steps_make_the_term_a_warm_up():
    """--ground_steps N: the term in the trainer's steps 0 .. N-1 (set_step through the model), none after."""
    from networks.gsp_model import GSPModel
    batch, motion, out, (b, h, w) = _ring_batch()
    out.update(depth=torch.full((b * 6, 1, h, w), 80.0), gs_scale=torch.full((b * 6, 1, h, w), 0.05))
    crit = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "0.5", "--ground_steps", "3"))
    model = GSPModel.__new__(GSPModel)  # only set_step's routing to the criterion is under test here
    torch.nn.Module.__init__(model)
    model.criterion = crit
    seen = []
    for step in (0, 2, 3, 10):
        model.set_step(step)
        seen.append("loss_ground" in crit(out, motion, batch)[1])
    assert seen == [True, True, False, False]
    # the refine phase continues a main phase that had the warm-up: none of it again from its own step 0
    refine = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "0.5", "--ground_steps", "3", "--gsp_phase", "refine"))
    refine.step = 0
    assert "loss_ground" not in refine(out, motion, batch)[1]
    always = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "0.5", "--gsp_phase", "refine"))
    assert "loss_ground" in always(out, motion, batch)[1]  # without --ground_steps: every step of either phase


def test_shape_only_ground_term_cannot_move_the_maps_scale():
    """--ground_shape_only: the criterion's gradient along each map's global log-scale is zero (the term cannot
    shrink the whole map, what the plain term did on the real fixture), while with the plain term it points to
    shorter. With no motion the temporal term does not depend on the depth, so the gradient is the ground term's."""
    batch, motion, out, (b, h, w) = _ring_batch()
    out["gs_scale"] = torch.full((b * 6, 1, h, w), 0.05)
    grads = {}
    for shape_only in ("false", "true"):
        g = torch.zeros(b * 6, 1, 1, 1, requires_grad=True)  # log-scale of each map
        out["depth"] = torch.linspace(20.0, 60.0, h * w).view(1, 1, h, w).expand(b * 6, 1, h, w) * g.exp()
        loss, logs, _ = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "1",
                                         "--ground_shape_only", shape_only))(out, motion, batch)
        assert float(logs["loss_ground"]) > 0.1 and float(logs["ground_beyond"]) > 0.5
        loss.backward()
        grads[shape_only] = g.grad.flatten()
    assert (grads["false"] > 1e-3).all()  # the plain term shortens every map
    assert grads["true"].abs().max() < 1e-6  # the shape-only one cannot


def test_ground_road_pulls_road_pixels_to_the_plane_from_both_sides():
    plane = torch.tensor([4.0, 8.0, 6.0, float("inf"), 30.0]).view(1, 1, 1, 5)
    depth = torch.tensor([6.0, 4.0, 6.0, 9.0, 3.0]).view(1, 1, 1, 5).requires_grad_(True)
    road = torch.tensor([True, True, False, True, True]).view(1, 1, 1, 5)
    loss, share, off = ground_road(depth, plane, road, max_depth=20.0)
    # held: the first two (the third is not road, the fourth's ray never meets the road, the fifth's plane is too far)
    assert math.isclose(loss.item(), (math.log(6 / 4) + math.log(8 / 4)) / 2, rel_tol=1e-6)
    assert math.isclose(share.item(), 2 / 5, rel_tol=1e-6) and off.item() == 1.0
    loss.backward()
    g = depth.grad.flatten()
    assert g[0] > 0 and g[1] < 0 and torch.all(g[2:] == 0)  # too far is shortened, too near lengthened
    at_plane, _, off = ground_road(torch.tensor([4.0, 8.2]).view(1, 1, 1, 2), plane[..., :2], road[..., :2])
    assert at_plane.item() < 0.02 and off.item() == 0.0  # on the plane (within 10 %): nothing off


def test_stage1_road_mode_reads_the_labels_and_refuses_without_them():
    batch, motion, out, (b, h, w) = _ring_batch()
    out.update(depth=torch.full((b * 6, 1, h, w), 80.0), gs_scale=torch.full((b * 6, 1, h, w), 0.05))
    opt = make_opt("--use_gsp", "false", "--w_ground", "0.5", "--ground_mode", "road")
    with pytest.raises(BadData, match="--use_sem true"):
        GSPLoss(opt)(out, motion, batch)
    sem = torch.full((b, 6, h // 2, w // 2), 15, dtype=torch.uint8)  # labels at another size (the render size)
    sem[..., h // 4 + 2:, :] = ROAD_ID  # the lower part of each image is road
    loss, logs, _ = GSPLoss(opt)(out, motion, dict(batch, sem=sem))
    plane = ground_plane_depth(batch["K"][0], batch["cam2ego"][0], (h, w))
    held = torch.isfinite(plane) & (plane <= 20)
    held[..., :h // 2 + 4, :] = False  # the rows the labels call road
    assert math.isclose(float(logs["ground_road_px"]), float(held.float().mean()), rel_tol=1e-6)
    want = (math.log(80.0) - plane[held].log()).mean()
    assert math.isclose(float(logs["loss_ground"]), float(want), rel_tol=1e-5)
    assert float(logs["ground_off"]) == 1.0 and "ground_beyond" not in logs
    # road_hinge: and the hinge on the other pixels whose ray goes down (all 80 m: beyond the plane x 1.2)
    _, logs_h, _ = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "0.5", "--ground_mode", "road_hinge"))(
        out, motion, dict(batch, sem=sem))
    rest = torch.isfinite(plane)
    rest[..., h // 2 + 4:, :] = False  # the rows below are road
    hinge = (math.log(80.0) - plane[rest].log() - math.log(1.2)).clamp(min=0).mean()
    assert math.isclose(float(logs_h["loss_ground"]), float(want + hinge), rel_tol=1e-5)
    assert float(logs_h["ground_beyond"]) == 1.0


def test_road_mode_needs_the_labels_option():
    with pytest.raises(ConfigError, match="--ground_mode road on the command line: must be hinge unless --use_sem"):
        options.parse_args(["--stage", "gsp", "--w_ground", "0.5", "--ground_mode", "road"])
    with pytest.raises(ConfigError, match="--ground_scale_only"):
        options.parse_args(["--stage", "gsp", "--ground_scale_only", "true", "--ground_shape_only", "true"])


def test_eval_reads_stage1_labels_only_when_asked(tmp_path):
    """A stage-1 run trained with the road term (--use_sem true) evaluates without its labels (the checkpoint keeps no
    paths, and the labels are no part of the model); with --use_sem true they give the per-class depth rows."""
    from eval import load_for_eval
    from utils.checkpoint import save_checkpoint
    opt = options.parse_args(["--stage", "gsp", "--w_ground", "0.5", "--ground_mode", "road", "--use_sem", "true"])
    save_checkpoint({"model": {}, "opt": vars(opt)}, str(tmp_path / "gsp.pt"))  # the options are what is read
    got, _ = load_for_eval(["--ckpt", str(tmp_path / "gsp.pt")])
    assert not got.use_sem and got.ground_mode == "road"
    got, _ = load_for_eval(["--ckpt", str(tmp_path / "gsp.pt"), "--use_sem", "true"])
    assert got.use_sem


def test_scale_only_ground_term_moves_the_scale_not_the_shape():
    """--ground_scale_only: along a change of shape with the mean log depth fixed the criterion's gradient is zero;
    along the map's global log-scale it is not (road pixels at 80 m lie beyond their plane: it shortens)."""
    batch, motion, out, (b, h, w) = _ring_batch()
    out["gs_scale"] = torch.full((b * 6, 1, h, w), 0.05)
    sem = torch.full((b, 6, h, w), 15, dtype=torch.uint8)
    sem[..., h // 2 + 4:, :] = ROAD_ID
    field = torch.linspace(-1.0, 1.0, h * w).view(1, 1, h, w)  # a zero-mean change of log depth
    grads = {}
    for scale_only in ("false", "true"):
        g = torch.zeros(b * 6, 1, 1, 1, requires_grad=True)  # log-scale of each map
        e = torch.zeros(b * 6, 1, 1, 1, requires_grad=True)  # amount of the shape change
        out["depth"] = torch.full((b * 6, 1, h, w), 80.0) * (g + e * field).exp()
        loss, logs, _ = GSPLoss(make_opt("--use_gsp", "false", "--w_ground", "1", "--ground_mode", "road",
                                         "--ground_scale_only", scale_only))(out, motion, dict(batch, sem=sem))
        assert float(logs["loss_ground"]) > 1.0
        loss.backward()
        grads[scale_only] = (g.grad.flatten(), e.grad.flatten())
    assert (grads["false"][1].abs() > 1e-3).all()  # the full term reshapes the map ...
    assert grads["true"][1].abs().max() < 1e-6  # ... the scale-only one cannot
    assert (grads["true"][0] > 1e-3).all() and torch.allclose(grads["true"][0], grads["false"][0], rtol=1e-4)


def _road_frames(h=48, w=64, f=40.0, height=1.5, step=1.0):
    """One forward-looking camera 1.5 m above a textured road plane (z_ego = 0) at three ego positions x = -step, 0,
    +step: (images (3, 1, 3, h, w) previous / current / next, K (1, 3, 3), cam2ego (1, 4, 4), true ego motions
    current -> previous / next (2, 4, 4)). Pixels above the horizon see a flat grey sky."""
    K = torch.tensor([[[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]])
    c2e = cam2ego(0, [0.0, 0.0, height])[None]
    plane = ground_plane_depth(K, c2e, (h, w), 0.0)[0, 0]  # (h, w)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    rays = torch.stack([(u - K[0, 0, 2]) / f, (v - K[0, 1, 2]) / f, torch.ones_like(u)], 0)  # camera z = 1
    frames = []
    for x0 in (-step, 0.0, step):
        z = torch.where(torch.isfinite(plane), plane, torch.zeros_like(plane))
        p_cam = rays * z
        p_ego = (c2e[0, :3, :3] @ p_cam.view(3, -1)).view(3, h, w) + c2e[0, :3, 3, None, None]
        gx, gy = p_ego[0] + x0, p_ego[1]  # the road point in the world (the ego at x0)
        tex = torch.stack([0.5 + 0.25 * torch.sin(2.1 * gx) * torch.cos(1.7 * gy),
                           0.5 + 0.25 * torch.sin(1.3 * gx + 0.7 * gy),
                           0.5 + 0.25 * torch.cos(0.9 * gx - 1.9 * gy)], 0)
        frames.append(torch.where(torch.isfinite(plane)[None], tex, torch.full_like(tex, 0.5)))
    motions = torch.eye(4).repeat(2, 1, 1)
    motions[0, 0, 3], motions[1, 0, 3] = step, -step  # current ego -> previous (behind: x + step) / next ego
    return torch.stack(frames)[:, None], K, c2e, motions


def test_road_motion_finds_the_translation_scale_from_the_road_alone():
    """A textured road seen by a camera moving 1 m a frame: with the road's depth from the plane, the error of its
    pixels is smallest at the true translation, larger at 0.8x and 1.25x (what makes the term metric); the road
    pixels beyond --ground_max_depth and the sky are not held."""
    from utils.geometry import ego_motion_to_cam
    imgs, K, c2e, motions = _road_frames()
    plane = ground_plane_depth(K, c2e, imgs.shape[-2:], 0.0)
    road = torch.isfinite(plane)
    vals = {}
    for s in (0.6, 0.8, 1.0, 1.25, 1.6):
        m = motions.clone()
        m[:, :3, 3] *= s
        T = [ego_motion_to_cam(m[k:k + 1], c2e[None])[:, 0] for k in range(2)]
        vals[s], share = road_motion(imgs[1], [imgs[0], imgs[2]], plane, road, K, T, max_depth=8.0)
    assert min(vals, key=lambda s: float(vals[s])) == 1.0  # (beyond ~8 m this texture aliases at 48 x 64)
    assert float(vals[1.0]) < 0.015 and float(vals[0.8]) > 3 * float(vals[1.0]) and float(vals[1.25]) > 3 * float(vals[1.0])
    held = road & (plane <= 8.0)
    assert 0 < float(share) <= float(held.float().mean()) + 1e-6


def test_road_motion_term_moves_the_motion_not_the_depth():
    """--w_road_motion: the criterion adds w x the term in the main phase (none in refine); its gradient reaches the
    ego motion and not the depth maps (the plane's depth is a constant)."""
    batch, motion, out, (b, h, w) = _ring_batch()
    batch["sem"] = torch.full((b, 6, h, w), ROAD_ID, dtype=torch.int64)
    depth = torch.full((b * 6, 1, h, w), 10.0, requires_grad=True)
    out.update(depth=depth, gs_scale=torch.full((b * 6, 1, h, w), 0.05))
    out[("disp", 0)].requires_grad_(True)
    motion = motion.clone()
    motion[:, :, 0, 3] = 0.5
    motion.requires_grad_(True)
    opts = ("--use_gsp", "false")
    torch.manual_seed(1)  # the auto-mask's tie-breaking noise: the same draws in both criteria's temporal term
    base, _, _ = GSPLoss(make_opt(*opts))(out, motion, batch)
    crit = GSPLoss(make_opt(*opts, "--w_road_motion", "2"))
    torch.manual_seed(1)
    with_rm, logs, _ = crit(out, motion, batch)
    assert float(logs["loss_road_motion"]) > 0 and float(logs["road_motion_px"]) > 0.1
    assert math.isclose(float(with_rm.detach() - base.detach()), 2 * float(logs["loss_road_motion"]), rel_tol=1e-5)
    disp = out[("disp", 0)]  # what the temporal term reads the depth from (both criteria use it)
    g_motion, g_disp = torch.autograd.grad(with_rm - base, (motion, disp))
    assert g_motion.abs().sum() > 0 and g_disp.abs().max() < 1e-7  # the motion moves, the depth cannot
    refine = GSPLoss(make_opt(*opts, "--w_road_motion", "2", "--gsp_phase", "refine"))
    assert "loss_road_motion" not in refine(out, motion, batch)[1]
    del batch["sem"]
    with pytest.raises(BadData, match="--w_road_motion reads the road's pixels"):
        crit(out, motion, batch)

