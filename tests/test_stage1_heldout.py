"""Issue 18: stage 1's motion on streets it has never seen, at any frame spacing, and its per-street evaluation.

The pose net regresses the motion of its training streets instead of measuring it (tests/test_pose_learning.py:
its translation is the same at 1/12 s and at 0.5 s). Aligning the adjacent images onto the current ones through the
depth (utils/pose_solver.py) measures it: on exact depth of a street no training saw, the translation is metric
at sweep and at keyframe spacing, and its scale is the depth's scale.
"""
import numpy as np
import pytest
import torch

from datasets.synthetic.oracle import ego_motion, scene_clip
from eval import evaluate
from options import parse_args
from utils.geometry import scale_intrinsics
from utils.metrics import DepthEvaluator
from utils.pose_metrics import per_street
from utils.pose_solver import solve_ego_motion

H, W, FRAMES = 64, 112, 8  # 7 camera sweeps (1/12 s) after the first: pairs 1 and 6 sweeps apart (0.5 s)


@pytest.fixture(scope="module")
def street(one_thread):
    """Street 6 of seed 0: never a training street of the runs in docs/results/stage1_heldout.md."""
    return scene_clip(0, 6, FRAMES, H, W, dt=1 / 12)


def solve(clip, k, d, depth_factor=1.0):
    """(scale = |t| / |t_true|, rotation error in degrees) of the alignment of frame k + d onto frame k."""
    T = solve_ego_motion(clip["imgs"][[k]], clip["imgs"][[k + d]], clip["depth"][[k]] * depth_factor,
                         clip["K"][None], clip["cam2ego"][None])[0].double()
    true = ego_motion(clip["ego2global"], k, k + d).double()
    cos = ((T[:3, :3].T @ true[:3, :3]).trace() - 1) / 2
    return float(T[:3, 3].norm() / true[:3, 3].norm()), float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))


@pytest.mark.parametrize("stride", [1, 6])
def test_alignment_measures_metric_motion_on_an_unseen_street(street, stride):
    scale, rot = solve(street, 1 if stride == 1 else 0, stride)
    assert abs(scale - 1) < 0.05 and rot < 0.2, (scale, rot)


def test_the_measured_motion_has_the_depths_scale(street):
    """A depth 20% too far gives a motion 20% too long: the scale comes from the depth (metric through GSP)."""
    scale, _ = solve(street, 0, 6, depth_factor=1.2)
    assert scale == pytest.approx(1.2, abs=0.05)


def test_pixels_outside_the_mask_do_not_pull_the_motion(street):
    """A static textured body over the lower half of every image (DDAD's ego car) drags the alignment towards no
    motion; with it masked out (the self-occlusion mask) the motion is metric again."""
    k, d = 0, 6
    torch.manual_seed(0)
    body = torch.rand(6, 3, H // 2, W)
    cur, adj = street["imgs"][[k]].clone(), street["imgs"][[k + d]].clone()
    cur[..., H // 2:, :] = body
    adj[..., H // 2:, :] = body
    mask = torch.ones(1, 6, 1, H, W)
    mask[..., H // 2:, :] = 0
    true = float(ego_motion(street["ego2global"], k, k + d)[:3, 3].norm())
    args = (cur, adj, street["depth"][[k]], street["K"][None], street["cam2ego"][None])
    unmasked = float(solve_ego_motion(*args)[0, :3, 3].norm()) / true
    masked = float(solve_ego_motion(*args, mask=mask)[0, :3, 3].norm()) / true
    assert abs(masked - 1) < 0.05 and unmasked < 0.9, (masked, unmasked)


def test_gsp_model_with_the_alignment_trains_the_depth_only(street):
    """--gsp_pose solve: the temporal loss takes the aligned motion (no pose-net weight moves), and predict_pose
    measures it again at another image size (stage 2's), the intrinsics rescaled."""
    from networks import build_model
    opt = parse_args(["--stage", "gsp", "--input_size", str(H), str(W), "--raster_backend", "torch",
                      "--gsp_pose", "solve"])
    torch.manual_seed(0)
    model = build_model(opt)
    k = 1
    batch = {"imgs": street["imgs"][[k - 1, k, k + 1]][None], "K": street["K"][None],
             "cam2ego": street["cam2ego"][None]}
    loss, logs, out = model(batch)
    loss.backward()
    assert all(p.grad is None for p in model.pose.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.depth.parameters())
    true = ego_motion(street["ego2global"], k, k + 1)[:3, 3].norm()
    assert 0.5 < float(out["poses"][0, 1, :3, 3].norm() / true) < 1.5  # untrained depth: 10 m everywhere
    model.eval()
    big = dict(batch, imgs=torch.nn.functional.interpolate(batch["imgs"].flatten(0, 2), (2 * H, 2 * W),
                                                           mode="bilinear").unflatten(0, (1, 3, 6)),
               K=scale_intrinsics(batch["K"], 2.0, 2.0))
    again = model.predict_pose(big)
    assert torch.allclose(again[0, 1, :3, 3], out["poses"][0, 1, :3, 3], atol=0.1 * float(true))


def test_depth_evaluator_returns_each_cameras_abs_rel_and_scale():
    gt = torch.zeros(6, 4, 4)
    gt[:, 1:3, 1:3] = torch.tensor([[5.0, 10.0], [20.0, 40.0]])
    gt[5] = 0  # camera 5 has no LiDAR point
    pred = torch.full((6, 4, 4), 1.0)
    pred[:, 1:3, 1:3] = gt[0, 1:3, 1:3] * 1.1
    out = DepthEvaluator(num_cams=6).update(pred, gt)
    assert out[5] is None
    assert out[0][0] == pytest.approx(0.1) and out[0][1] == pytest.approx(1.1)


class _Stage1Stub(torch.nn.Module):
    """Stand-in for GSPModel: depth = LiDAR x the street's factor, motion = the recorded one x the street's factor."""

    FACTORS = {"a": (1.1, 1.3), "b": (0.8, 1.0)}  # street: (depth factor, motion factor)

    def predict_depth(self, batch):
        return batch["depth_gt"] * self.FACTORS[batch["scene"][0]][0]

    def predict_pose(self, batch):
        from utils.geometry import recorded_ego_motion
        m = recorded_ego_motion(batch["ego2global"]).float()
        m[:, :, :3, 3] *= self.FACTORS[batch["scene"][0]][1]
        return m


def _item(scene, k, speed):
    e2g = torch.eye(4).repeat(3, 6, 1, 1)
    for f in range(3):
        e2g[f, :, 0, 3] = speed * (k + f - 1)
    depth = torch.zeros(6, 8, 8)
    depth[:, 2:6, 2:6] = torch.linspace(4, 30, 16).view(4, 4)
    return {"scene": scene, "token": f"{scene}{k}", "ego2global": e2g, "depth_gt": depth, "imgs": torch.zeros(1)}


def test_eval_reports_each_streets_depth_scale_next_to_its_motion_scale():
    items = [_item("a", k, 0.6) for k in range(4)] + [_item("b", k, 0.4) for k in range(3)]
    opt = parse_args(["--stage", "gsp", "--num_workers", "0", "--device", "cpu"])
    res = evaluate(_Stage1Stub(), items, opt, "cpu")
    a, b = res["streets"]["a"], res["streets"]["b"]
    assert a["depth_scale"] == pytest.approx(1.1) and a["abs_rel"] == pytest.approx(0.1)
    assert a["scale_median"] == pytest.approx(1.3) and a["scale_count"] == 4 and a["depth_frames"] == 4
    assert b["depth_scale"] == pytest.approx(0.8) and b["abs_rel"] == pytest.approx(0.2)
    assert b["scale_median"] == pytest.approx(1.0) and b["ate"] == pytest.approx(0.0, abs=1e-6)
    assert "| a | 1.100 | 0.100 | 1.300 |" in res["text"]


def test_per_street_without_poses_keeps_the_depth_rows():
    rows = [("s", [(0.2, 0.9)] * 6), ("s", [(0.4, 1.1)] * 5 + [None])]
    out = per_street(None, rows)["streets"]["s"]
    assert out["abs_rel"] == pytest.approx(np.mean([0.3] * 5 + [0.2]))
    assert out["depth_scale"] == pytest.approx(0.9) and out["depth_frames"] == 2  # the median of 6 x 0.9, 5 x 1.1


def test_stage1_poses_are_measured_once_per_sample(tmp_path):
    """Stage 2 with a stage-1 model that aligns images (net_solve): each sample's motion is computed at its first
    batch and kept; a batch with an unseen sample is computed again, whole."""
    from networks.gsp_model import GSPModel
    from networks.pose_source import Stage1Poses, build_pose_source
    from rebuild import load_stage1
    from utils.checkpoint import save_checkpoint
    gsp_opt = parse_args(["--stage", "gsp", "--raster_backend", "torch", "--input_size", "64", "96",
                          "--gsp_pose", "net"])  # counts the calls; what computes them does not matter here
    save_checkpoint({"model": GSPModel(gsp_opt).state_dict(), "opt": vars(gsp_opt)}, str(tmp_path / "gsp.pt"))
    source = Stage1Poses(str(tmp_path / "gsp.pt"), load_stage1, cache=True)
    torch.manual_seed(0)
    batch = {"imgs": torch.rand(2, 3, 6, 3, 64, 96), "K": torch.eye(3).repeat(2, 6, 1, 1) * 30,
             "cam2ego": torch.eye(4).repeat(2, 6, 1, 1), "token": ["a", "b"]}
    batch["K"][..., 2, 2] = 1
    first = source(batch)
    calls = []
    predict = source.model.predict_pose
    source.model.predict_pose = lambda b: calls.append(b["token"]) or predict(b)
    assert torch.equal(source(batch), first) and calls == []
    source(dict(batch, token=["a", "c"]))
    assert calls == [["a", "c"]] and set(source.cache) == {"a", "b", "c"}
    stage2 = ["--pose", "stage1", "--stage1_ckpt", str(tmp_path / "gsp.pt")]
    assert build_pose_source(parse_args(stage2), load_stage1).cache == {}
    assert build_pose_source(parse_args(stage2 + ["--frame_stride", "1", "3"]), load_stage1).cache is None


def test_the_oracle_tool_scores_the_exact_depth_as_exact_and_a_long_one_as_worse(street, tmp_path):
    """tools/diagnostics/stage1_oracle's per-class evidence and breakdown: a model whose depth IS the exact depth
    has the exact depth's temporal loss on every class and zero error; 1.5x that depth has log bias log 1.5, a
    higher loss on the facades (the class the photometric loss resolves best) and AbsRel 0.5 on every camera."""
    import math
    from types import SimpleNamespace

    from tools.diagnostics.stage1_oracle import depth_breakdown, evidence
    from utils.constants import CAMS
    clips = {6: street}
    for factor in (1.0, 1.5):
        model = SimpleNamespace(depth_outputs=lambda imgs, f=factor: {
            "depth": street["depth"][[int(k) for k in range(FRAMES) if torch.equal(street["imgs"][k], imgs[0])][0]]
            .clamp(0.1, 200.0) * f})
        ev = evidence(model, clips, stride=1, frames_step=3)
        assert {"manmade", "driveable_surface"} <= set(ev)
        for c, r in ev.items():
            assert r["pixels"] > 0 and r["log_bias"] == pytest.approx(math.log(factor), abs=3e-3), (c, r)  # (clamped at 80 m)
            if factor == 1.0:
                assert r["loss_pred"] == pytest.approx(r["loss_exact"], rel=1e-3, abs=1e-6) and r["exact_lower"] < 0.01
        if factor == 1.5:
            assert ev["manmade"]["loss_pred"] > 1.5 * ev["manmade"]["loss_exact"]
            assert ev["manmade"]["exact_lower"] > 0.5
    import cv2
    from tools.diagnostics.stage1_oracle import picture
    picture(model, clips, str(tmp_path / "p.png"), frame=3, cams=(1, 2), zoom=1)  # (the 1.5x model of the loop)
    png = cv2.imread(str(tmp_path / "p.png"))
    assert png.shape == (2 * H, 4 * W, 3)
    err = png[:, 3 * W:].reshape(-1, 3).astype(int)  # log 1.5 = 0.41 everywhere but the sky (beyond 80 m)
    want = cv2.applyColorMap(np.uint8([[round((math.log(1.5) + 1) / 2 * 255)]]), cv2.COLORMAP_JET)[0, 0].astype(int)
    assert (np.abs(err - want).max(1) <= 2).mean() > 0.9
    gt = street["depth"][:3]
    valid = (gt > 0.1) & (gt < 80)
    out = depth_breakdown((gt * 1.5 - gt).abs() / gt, gt, valid, street["cls"][:3][:, :, None])
    assert set(out["abs_rel_cam"]) == set(CAMS)
    assert all(v == pytest.approx(0.5, abs=1e-5) for v in out["abs_rel_cam"].values())
    assert out["abs_rel_near"] == pytest.approx(0.5, abs=1e-5)
    assert sum(share for _, share in out["abs_rel_class"].values()) == pytest.approx(1.0, abs=1e-6)


def test_class_landscape_rises_away_from_the_exact_depth(street):
    """stage1_oracle.class_landscape: the near cars of street 6 alone pushed away, the rest exact: their loss grows
    with the factor (the evidence reaches 2x off); a class with no near pixel is an error that names it."""
    from tools.diagnostics.stage1_oracle import class_landscape
    r = class_landscape({6: street}, "car", factors=(1.0, 1.5, 2.0))
    assert r["pixels"] > 1000 and r["loss"][0] == 1.0 and 1.5 < r["loss"][1] < r["loss"][2]
    assert all(0.3 < k < 0.9 for k in r["kept"])
    with pytest.raises(ValueError, match="no manmade pixel within 10.0 m"):
        class_landscape({6: street}, "manmade")
