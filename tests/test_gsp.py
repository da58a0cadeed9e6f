"""Stage 1 (GSP): depth / pose networks, pixel Gaussians, the cross-view scale signal and the model."""
import argparse
import functools
import math

import numpy as np
import pytest
import torch

from networks import gsp_loss, gsp_model
from networks.depth_net import DepthNet, disp_to_depth
from networks.gsp_loss import GSPLoss
from networks.gsp_model import GSPModel
from networks.pose_net import PoseNet
from rebuild import load_model
from utils import rasterizer
from utils.checkpoint import save_checkpoint
from utils.geometry import axis_angle_to_matrix, ego_motion_to_cam, inverse_rigid, rel_cam_pose
from utils.gsp import cross_view_loss, overlap_mask, pixel_gaussians
from utils.vis import training_pictures

RASTERIZE = functools.partial(rasterizer.rasterize, backend="torch")


def make_opt(*argv):
    p = argparse.ArgumentParser()
    gsp_model.add_args(p)
    gsp_loss.add_args(p)
    rasterizer.add_args(p)
    return p.parse_args(["--gsp_pretrained", "false", "--raster_backend", "torch", *argv])


def make_model(*argv):
    """A GSPModel with its criterion, as networks.build_model composes it."""
    opt = make_opt(*argv)
    return GSPModel(opt, criterion=GSPLoss(opt))


def cam2ego(yaw_deg, pos):
    """OpenCV camera looking horizontally at ``yaw_deg`` (0 = ego forward, positive = left) placed at ``pos``."""
    y = math.radians(yaw_deg)
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[math.sin(y), 0.0, math.cos(y)],
                              [-math.cos(y), 0.0, math.sin(y)],
                              [0.0, -1.0, 0.0]])  # columns: camera right, down, forward in the ego frame
    T[:3, 3] = torch.tensor(pos)
    return T


# ---------------------------------------------------------------- networks

def test_depth_net_shapes_and_ranges():
    torch.manual_seed(0)
    opt = make_opt()
    out = DepthNet(opt)(torch.rand(1, 3, 64, 112))
    for s in range(4):
        d = out[("disp", s)]
        assert d.shape == (1, 1, 64 >> s, 112 >> s)
        assert 0 < d.min() and d.max() < 1
    assert out["gs_scale"].shape == (1, 1, 64, 112)
    assert 0 < out["gs_scale"].min() and out["gs_scale"].max() < opt.gsp_scale_max
    depth = disp_to_depth(torch.tensor([0.0, 1.0, 0.5]), 0.1, 80.0)
    assert torch.allclose(depth, torch.tensor([80.0, 0.1, 1 / (0.5 * (1 / 80 + 10))]))


def test_pose_net_starts_at_identity_and_outputs_rigid_motion():
    torch.manual_seed(0)
    net = PoseNet(make_opt())
    cur, adj = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    T = net(cur, adj)
    assert T.shape == (2, 4, 4)
    assert torch.allclose(T, torch.eye(4).expand(2, 4, 4), atol=1e-6)
    # the bias of the last layer is the raw motion when its weights are zero: axis-angle x gsp_rot_scale (0.01),
    # translation in metres
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([1.0, -2.0, 5.0, 1.5, -0.2, 0.1]))
    T = net(cur, adj)
    R = T[0, :3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(T[0, :3, 3], torch.tensor([1.5, -0.2, 0.1]))
    assert torch.allclose(T[0], axis_angle_to_matrix(torch.tensor([[0.01, -0.02, 0.05]]),
                                                     torch.tensor([[1.5, -0.2, 0.1]]))[0], atol=1e-6)


def test_checkpoint_without_rotation_units_loads_with_the_old_units(tmp_path):
    """A stage-1 checkpoint written before --gsp_rot_scale existed was trained with rotation in raw radians: it
    must rebuild with rot_scale 1 and give the motion it gave then; a new one keeps its stored 0.01."""
    torch.manual_seed(0)
    old = GSPModel(make_opt("--gsp_rot_scale", "1.0", "--gsp_pose", "net"))
    with torch.no_grad():
        old.pose.out.bias.copy_(torch.tensor([0.01, -0.02, 0.05, 1.5, -0.2, 0.1]))
    saved = {k: v for k, v in vars(old.opt).items() if k not in ("gsp_rot_scale", "gsp_pose")}  # both came later
    torch.save({"model": old.state_dict(), "opt": saved}, tmp_path / "old.pt")
    torch.save({"model": old.state_dict(), "opt": vars(make_opt())}, tmp_path / "new.pt")
    imgs = torch.rand(1, 3, 6, 3, 32, 64)
    loaded = load_model(str(tmp_path / "old.pt"), stage="gsp")
    assert loaded.pose.rot_scale == 1.0
    torch.testing.assert_close(loaded.predict_pose({"imgs": imgs}), old.eval().predict_pose({"imgs": imgs}))
    assert load_model(str(tmp_path / "new.pt"), stage="gsp").pose.rot_scale == 0.01


def test_predicted_ego_motion_convention_matches_recorded_poses():
    """predict_pose's T_ego = inv(E_adj) E_cur gives, per camera, the temporal transform of geometry.rel_cam_pose."""
    torch.manual_seed(0)
    cams = torch.stack([cam2ego(yaw, [1.0, 0.1 * i, 1.6]) for i, yaw in enumerate(range(0, 360, 60))])[None]
    E_cur = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.3]]), torch.tensor([[100.0, 50.0, 0.0]]))
    E_adj = axis_angle_to_matrix(torch.tensor([[0.01, 0.0, 0.25]]), torch.tensor([[98.0, 49.0, 0.1]]))
    T_ego = inverse_rigid(E_adj) @ E_cur
    expected = rel_cam_pose(cams, E_cur[:, None].expand(1, 6, 4, 4), E_adj[:, None].expand(1, 6, 4, 4))
    assert torch.allclose(ego_motion_to_cam(T_ego, cams), expected, atol=1e-4)


# ---------------------------------------------------------------- pixel Gaussians and the cross-view loss

def test_pixel_gaussian_sits_at_the_backprojected_ego_point():
    depth = torch.ones(1, 1, 4, 5)
    depth[0, 0, 1, 3] = 2.5  # pixel row v = 1, column u = 3
    img = torch.rand(1, 3, 4, 5)
    scale = torch.full((1, 1, 4, 5), 0.01)
    K = torch.tensor([[[10.0, 0, 2], [0, 12, 1.5], [0, 0, 1]]])
    T = cam2ego(0, [1.5, 0.0, 1.6])[None]  # front camera
    g = pixel_gaussians(depth, img, scale, K, T)
    # camera point (0.25, -0.5 / 12 * 2.5, 2.5) -> ego (1.5 + 2.5, -0.25, 1.6 + 0.5 / 12 * 2.5)
    assert torch.allclose(g["means"][0, 1 * 5 + 3], torch.tensor([4.0, -0.25, 1.6 + 2.5 / 24]), atol=1e-5)
    assert torch.allclose(g["colours"][0, 8], img[0, :, 1, 3])
    assert g["means"].shape == (1, 20, 3) and g["scales"].shape == (1, 20, 3)
    assert torch.equal(g["quats"][0, 8], torch.tensor([1.0, 0, 0, 0]))
    assert torch.all(g["opacities"] == 1) and torch.all(g["scales"] == 0.01)


def test_overlap_mask_is_thresholded_and_eroded():
    alpha = torch.zeros(2, 1, 20, 20)
    alpha[0, 0, 5:15, 5:15] = 0.9
    alpha[1, 0, 5:15, 5:15] = 0.4
    m = overlap_mask(alpha, 2)
    assert m[0].sum() == 36 and m[0, 0, 7:13, 7:13].all()
    assert m[1].sum() == 0


H, W, FOCAL, WALL_X = 48, 64, 32.0, 4.0
K_WALL = torch.tensor([[FOCAL, 0, (W - 1) / 2], [0, FOCAL, (H - 1) / 2], [0, 0, 1.0]])


def wall_view(T):
    """Image (3,H,W) and camera-z depth (1,H,W) of a textured wall x = WALL_X (ego) seen by camera T."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    rays = T[:3, :3] @ (torch.linalg.inv(K_WALL) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1))
    z = (WALL_X - T[0, 3]) / rays[0]  # ray parameter = camera z, since the camera rays have z = 1
    p = T[:3, 3:] + rays * z
    y, h = p[1], p[2]
    img = torch.stack([0.5 + 0.25 * torch.sin(2 * math.pi * y / L + ph)
                       + 0.2 * torch.cos(2 * math.pi * (h + 0.3 * y) / (0.8 * L) + 2 * ph)
                       for L, ph in ((1.5, 0.0), (2.1, 1.0), (1.2, 2.0))])
    return img.reshape(3, H, W), z.reshape(1, H, W)


def pair_loss(cams, depth_factor, depths=None, valid=None, mask_mode="rendered"):
    views = [wall_view(T) for T in cams]
    imgs = torch.stack([v[0] for v in views])[None]
    depths = torch.stack([v[1] for v in views])[None] * depth_factor if depths is None else depths
    return cross_view_loss(depths, imgs, torch.full_like(depths, 0.02), K_WALL.expand(1, 2, 3, 3),
                           torch.stack(cams)[None], RASTERIZE, 2, neighbours=lambda i: (1 - i,), valid=valid,
                           mask_mode=mask_mode)


def test_cross_view_loss_prefers_the_metric_depth():
    """Two cameras 1 m apart, 40 deg yaw apart, see a textured wall at 4 m: only the true scale lines them up."""
    cams = [cam2ego(0, [0.0, 0.0, 1.5]), cam2ego(40, [0.0, 1.0, 1.5])]
    true, cv = pair_loss(cams, 1.0)
    assert cv["render"].shape == (1, 2, 1, 3, H, W) and cv["mask"].shape == (1, 2, 1, 1, H, W)
    assert 0.25 < cv["mask"].mean() < 0.6  # a real overlap, not the whole image
    assert true < 0.08
    for factor in (0.5, 2.0):
        wrong, _ = pair_loss(cams, factor)
        assert wrong > 4 * true, (factor, wrong.item(), true.item())


def test_geometric_mask_does_not_follow_the_predicted_depth():
    """The rendered mask empties when the depth collapses (an escape from the loss); the geometric one does not."""
    cams = [cam2ego(0, [0.0, 0.0, 1.5]), cam2ego(40, [0.0, 1.0, 1.5])]
    true, cv = pair_loss(cams, 1.0, mask_mode="geometric")
    geo = cv["mask"]
    assert 0.15 < geo.mean() < 0.6 and true < 0.08
    rendered = pair_loss(cams, 1.0)[1]["mask"]
    assert (geo * (1 - rendered)).sum() <= 0.02 * geo.sum()  # inside the true-depth footprint
    for factor in (0.5, 2.0):
        wrong, cv = pair_loss(cams, factor, mask_mode="geometric")
        assert torch.equal(cv["mask"], geo) and wrong > 2 * true, (factor, wrong.item(), true.item())
    tiny_r, cv_r = pair_loss(cams, 0.02)  # depth collapsed to 8 cm: no splat reaches the other camera
    tiny_g, cv_g = pair_loss(cams, 0.02, mask_mode="geometric")
    assert cv_r["mask"].sum() == 0 and tiny_r.item() == 0.0  # the escape
    assert torch.equal(cv_g["mask"], geo) and tiny_g > 3 * true  # no escape
    back = [cam2ego(0, [0.0, 0.0, 1.5]), cam2ego(180, [-1.0, 0.0, 1.5])]
    assert pair_loss(back, 1.0, mask_mode="geometric")[1]["mask"].sum() == 0


def test_cross_view_leaves_out_self_occluded_pixels():
    """A camera whose image is all ego-car body (valid 0) neither makes Gaussians nor serves as a target."""
    cams = [cam2ego(0, [0.0, 0.0, 1.5]), cam2ego(40, [0.0, 1.0, 1.5])]
    valid = torch.ones(1, 2, 1, H, W)
    valid[0, 1] = 0
    loss, cv = pair_loss(cams, 1.0, valid=valid)
    assert cv["mask"].sum() == 0 and loss.item() == 0.0
    valid[0, 1, :, :, W // 2:] = 1  # the right half of camera 1 (which overlaps camera 0) is visible again
    _, cv = pair_loss(cams, 1.0, valid=valid)
    assert cv["mask"][0, 0].sum() > 0 and cv["mask"][0, 0, ..., : W // 2].sum() == 0


def test_cross_view_mask_is_empty_without_overlap():
    cams = [cam2ego(0, [0.0, 0.0, 1.5]), cam2ego(180, [-1.0, 0.0, 1.5])]  # front and back: nothing in common
    loss, cv = pair_loss(cams, 1.0, depths=torch.full((1, 2, 1, H, W), 4.0, requires_grad=True))
    assert cv["mask"].sum() == 0 and loss.item() == 0.0
    loss.backward()  # still a (zero) graph


# ---------------------------------------------------------------- the model

def ring_batch(b=1, h=64, w=112):
    """Random images with nuScenes-like intrinsics and a 6-camera ring (60 deg apart, 70 deg field of view)."""
    torch.manual_seed(0)
    f = w / 2 / math.tan(math.radians(35))
    K = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
    cams = torch.stack([cam2ego(-60 * i, [1.0 + 0.8 * math.cos(math.radians(-60 * i)),
                                          0.8 * math.sin(math.radians(-60 * i)), 1.6]) for i in range(6)])
    return {"imgs": torch.rand(b, 3, 6, 3, h, w), "K": K.expand(b, 6, 3, 3).clone(),
            "cam2ego": cams.expand(b, 6, 4, 4).clone()}


def test_forward_backward_on_a_tiny_batch():
    torch.manual_seed(0)
    model = make_model().train()
    batch = ring_batch()
    loss, logs, outputs = model(batch)
    assert torch.isfinite(loss) and loss > 0
    assert {"loss", "loss_temporal", "loss_smooth", "loss_gsp"} <= set(logs)
    assert logs["gsp_overlap"] > 0  # random depths still land in the ring neighbours
    loss.backward()
    for name, p in [("depth encoder", model.depth.encoder.net.conv1.weight),
                    ("scale head", model.depth.scale_head.weight), ("pose head", model.pose.out.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    vis = training_pictures(batch, outputs)
    assert vis["images"].shape == (3, 128, 336) and vis["depth"].dtype == np.uint8
    assert vis["gsp_cross_view"].shape == (3, 3 * 64, 6 * 112)
    assert model.predict_depth(batch).shape == (1, 6, 64, 112)
    assert torch.allclose(model.predict_pose(batch), torch.eye(4).expand(1, 2, 4, 4), atol=1e-6)


def test_refine_phase_freezes_the_pose_net_and_drops_the_cross_view_loss():
    model = make_model("--gsp_phase", "refine").train()
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not any(id(p) in trainable for p in model.pose.parameters())
    assert all(id(p) in trainable for p in model.depth.parameters())
    assert not model.pose.training and model.depth.training
    _, logs, _ = model(ring_batch(h=64, w=64))
    assert "loss_gsp" not in logs


def test_load_from_checkpoint_rebuilds_the_model(tmp_path):
    opt = make_opt("--max_depth", "60")
    model = GSPModel(opt).eval()
    path = str(tmp_path / "last.pt")
    save_checkpoint({"model": model.state_dict(), "opt": vars(opt), "step": 3}, path)
    loaded = load_model(path, "cpu", stage="gsp")
    assert not loaded.training and loaded.opt.max_depth == 60
    batch = ring_batch(h=64, w=64)
    assert torch.allclose(loaded.predict_depth(batch), model.predict_depth(batch))


def test_options_have_help_and_defaults():
    p = argparse.ArgumentParser()
    gsp_model.add_args(p)
    gsp_loss.add_args(p)
    opt = p.parse_args([])
    assert (opt.gsp_phase, opt.use_gsp, opt.min_depth, opt.max_depth, opt.gsp_scale_max) == ("main", True, 0.1, 80.0,
                                                                                             0.02)
    assert all(a.help for a in p._actions if a.dest != "help")
    with pytest.raises(SystemExit):
        p.parse_args(["--gsp_phase", "finetune"])


def test_scale_locked_depth_keeps_values_and_shape_gradient_but_no_scale_gradient():
    from networks.gsp_loss import scale_locked
    torch.manual_seed(0)
    depth = (5 + 20 * torch.rand(2, 1, 8, 12)).requires_grad_()
    s = torch.ones(2, 1, 1, 1, requires_grad=True)
    target = torch.rand(2, 1, 8, 12) * 30
    locked = scale_locked(depth * s)
    torch.testing.assert_close(locked, depth * s)
    ((locked - target) ** 2).mean().backward()
    assert s.grad.abs().max() < 1e-5  # a global factor on the map cannot be learned through it
    assert depth.grad.abs().max() > 1e-3  # the shape still can
    s.grad = None
    ((depth.detach() * s - target) ** 2).mean().backward()
    assert s.grad.abs().max() > 1e-2


def test_scale_lock_applies_to_the_main_phase_with_gsp_only(monkeypatch):
    calls = []
    monkeypatch.setattr(gsp_loss, "scale_locked", lambda d: calls.append(1) or d)
    batch = ring_batch()
    assert not make_opt().gsp_scale_lock  # off by default since the pose net can learn the motion
    for argv, n in ((["--gsp_scale_lock", "true"], 4), (["--use_gsp", "false", "--gsp_scale_lock", "true"], 0),
                    ([], 0), (["--gsp_phase", "refine", "--gsp_scale_lock", "true"], 0)):
        calls.clear()
        make_model(*argv)(batch)
        assert len(calls) == n, argv


def test_pose_net_sees_pairs_in_time_order_and_prev_motion_is_inverted():
    """A pose net with one constant answer A (earlier -> later) gives next = A and prev = inv(A): a constant
    velocity, not the zero motion that (cur, prev) / (cur, next) pairs would average to."""
    model = GSPModel(make_opt())
    A = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.05]]), torch.tensor([[1.5, 0.1, 0.0]]))
    seen = []

    def fake_pose(a, b):
        seen.append((a, b))
        return A.expand(a.shape[0], 4, 4)

    model.pose.forward = fake_pose
    imgs = torch.rand(1, 3, 6, 3, 8, 16)
    T = model.ego_motion(imgs)
    assert seen[0][0] is not None and torch.equal(seen[0][0], imgs[:, 0]) and torch.equal(seen[0][1], imgs[:, 1])
    assert torch.equal(seen[1][0], imgs[:, 1]) and torch.equal(seen[1][1], imgs[:, 2])
    torch.testing.assert_close(T[:, 1], A)
    torch.testing.assert_close(T[:, 0], inverse_rigid(A))


def test_near_neighbours_in_stage_1_are_two_more_sources_with_their_own_motion():
    """--near_stride: frames 3 / 4 get their motion from the same pose source (the near pair in time order) and are
    sources of the temporal loss; copies of the previous / next frame leave the loss as it was."""
    model = make_model("--use_gsp", "false", "--gsp_pose", "net").train()
    batch = ring_batch()
    batch["imgs"][:, 2] = batch["imgs"][:, 1].roll(3, -1)  # neighbours that differ from the current frame
    five = dict(batch, imgs=torch.cat([batch["imgs"], batch["imgs"][:, [0, 2]]], 1))
    seen = []
    crit = model.criterion.forward
    model.criterion.forward = lambda out, poses, b: seen.append(poses) or crit(out, poses, b)
    torch.manual_seed(0)
    _, logs3, out3 = model(batch)
    torch.manual_seed(0)
    _, logs5, out5 = model(five)
    assert seen[0].shape[1] == 2 and seen[1].shape[1] == 4
    torch.testing.assert_close(seen[1][:, 2:], seen[1][:, :2])  # the same pairs, the same motion
    assert out5["poses"].shape[1] == 2
    assert float(logs5["loss_temporal"]) == pytest.approx(float(logs3["loss_temporal"]), rel=1e-3)
    same = dict(five, imgs=five["imgs"].clone())
    same["imgs"][:, 3:] = batch["imgs"][:, 1:2]  # near neighbours = the current frame: the untrained pose net's
    torch.manual_seed(0)                          # identity motion fits them, so the minimum over 4 sources drops
    _, logs_same, _ = model(same)
    assert float(logs_same["loss_temporal"]) < 0.5 * float(logs3["loss_temporal"])


def test_gsp_pretrained_reads_the_imagenet_files_and_if_present_falls_back(tmp_path, monkeypatch, capsys):
    """--gsp_pretrained true loads torchvision's files into both encoders (the pose net's 2-image stem from the
    same file), if_present falls back to a random init with one line saying so, true without a file names it."""
    import networks.resnet_encoder as enc_mod
    from torchvision.models import resnet18
    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    p = argparse.ArgumentParser()
    gsp_model.add_args(p)
    assert p.parse_args(["--gsp_pretrained", "if_present"]).gsp_pretrained == "if_present"
    assert p.parse_args(["--gsp_pretrained", "no"]).gsp_pretrained is False
    with pytest.raises(SystemExit):
        p.parse_args(["--gsp_pretrained", "maybe"])

    def missing(n):
        raise FileNotFoundError(f"ImageNet weights resnet{n} not found")

    monkeypatch.setattr(enc_mod, "find_weights", missing)
    scratch = DepthNet(make_opt("--gsp_pretrained", "if_present"))
    assert "random init (--gsp_pretrained if_present)" in capsys.readouterr().out
    assert not torch.equal(scratch.encoder.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="resnet18"):
        PoseNet(make_opt("--gsp_pretrained", "true"))
    monkeypatch.setattr(enc_mod, "find_weights", lambda n: str(tmp_path / "r18.pth"))
    for flag in ("true", "if_present"):
        depth, pose = DepthNet(make_opt("--gsp_pretrained", flag)), PoseNet(make_opt("--gsp_pretrained", flag))
        assert torch.equal(depth.encoder.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
        assert torch.equal(pose.encoder.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
        stem = pose.encoder.net.conv1.weight  # 6 input channels: the file's stem twice, halved (monodepth2)
        assert torch.allclose(stem[:, :3], ref.conv1.weight / 2) and torch.allclose(stem[:, 3:], ref.conv1.weight / 2)


def test_a_stage1_checkpoint_from_imagenet_rebuilds_without_the_file():
    """A stage-1 model trained with --gsp_pretrained true (the nuScenes / DDAD configs) is rebuilt from its
    checkpoint without looking for ImageNet files, even when the evaluation's config names them."""
    import options
    saved = vars(options.parse_args(["--config", "configs/nusc-gsp.txt"]))
    assert saved["gsp_pretrained"] is True
    for argv in ([], ["--config", "configs/nusc-gsp.txt"], ["--config", "configs/fixture-gsp.txt"]):
        assert options.merge_checkpoint_options(dict(saved), argv=argv).gsp_pretrained is False
    assert options.parse_args(["--config", "configs/fixture-gsp.txt"]).gsp_pretrained == "if_present"
