"""Shared geometry (utils/geometry.py), self-supervised losses (utils/losses.py) and pose metrics."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from utils import geometry as geo
from utils import losses
from utils import pose_metrics as pm

# OpenCV camera looking along the ego x axis: camera z = ego x, camera x = -ego y, camera y = -ego z.
CAM_TO_EGO_ROT = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def make_K(fx=100.0, fy=90.0, cx=31.5, cy=23.5, B=1):
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K.expand(B, 3, 3).clone()


def rigid(R=None, t=(0.0, 0.0, 0.0)):
    T = torch.eye(4)
    if R is not None:
        T[:3, :3] = torch.as_tensor(R, dtype=torch.float32)
    T[:3, 3] = torch.tensor(t, dtype=torch.float32)
    return T


def texture(B=1, C=3, H=48, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g)


# ---------------------------------------------------------------- geometry


def test_backproject_project_round_trip():
    B, H, W = 2, 5, 7
    depth = torch.rand(B, 1, H, W, generator=torch.Generator().manual_seed(1)) * 20 + 1
    K = make_K(B=B)
    points = geo.backproject(depth, torch.linalg.inv(K))
    assert points.shape == (B, 3, H * W)
    assert torch.allclose(points[:, 2], depth.reshape(B, -1))
    pix, z = geo.project(points, K)
    v, u = torch.meshgrid(torch.arange(float(H)), torch.arange(float(W)), indexing="ij")
    expected = torch.stack([u.reshape(-1), v.reshape(-1)], -1).expand(B, -1, -1)
    assert torch.allclose(pix, expected, atol=1e-4)
    assert torch.allclose(z, depth.reshape(B, -1))


def test_project_reports_points_behind_camera():
    points = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [5.0, 5.0]]])  # (1, 3, 2): x = 0 and x = 1 at z = 5
    T = rigid(t=(0.0, 0.0, -10.0))[None]  # moves both points to z = -5
    pix, z = geo.project(points, make_K(cx=0.0, cy=0.0), T)
    assert torch.allclose(z, torch.tensor([[-5.0, -5.0]]))
    pix, z = geo.project(points, make_K(cx=0.0, cy=0.0))
    assert torch.allclose(pix, torch.tensor([[[0.0, 0.0], [20.0, 0.0]]]))  # u = fx x / z = 100 / 5


def test_warp_identity_reproduces_image():
    img = texture(B=2)
    depth = torch.full((2, 1, 48, 64), 7.0)
    warped, valid = geo.warp(img, depth, make_K(B=2), torch.eye(4).expand(2, 4, 4))
    assert valid.shape == (2, 1, 48, 64) and valid.all()
    assert torch.allclose(warped, img, atol=1e-5)


def test_warp_translation_of_fronto_parallel_plane():
    # Plane at z = 10, fx = 100: moving the points by tx = 0.2 m shifts them by fx tx / z = 2 px to the right,
    # so the target pixel u reads the source pixel u + 2.
    img = texture(W=64)
    depth = torch.full((1, 1, 48, 64), 10.0)
    T = rigid(t=(0.2, 0.0, 0.0))[None]
    warped, valid = geo.warp(img, depth, make_K(), T)
    assert torch.allclose(warped[..., :62], img[..., 2:], atol=1e-5)
    assert valid[..., :62].all() and not valid[..., 62:].any()
    # Half a pixel: bilinear average of neighbouring columns (pixel centres at integers).
    warped, _ = geo.warp(img, depth, make_K(), rigid(t=(0.05, 0.0, 0.0))[None])
    assert torch.allclose(warped[..., :63], (img[..., :63] + img[..., 1:]) / 2, atol=1e-5)


def test_warp_invalid_behind_source_camera():
    depth = torch.full((1, 1, 8, 8), 10.0)
    _, valid = geo.warp(texture(H=8, W=8), depth, make_K(cx=3.5, cy=3.5), rigid(t=(0.0, 0.0, -20.0))[None])
    assert not valid.any()


def test_warp_from_half_resolution_source_uses_pixel_centres():
    # A horizontal ramp I(u) = u, 2x2-average-pooled, warped back with the halved intrinsics, gives the ramp back.
    H, W = 8, 16
    ramp = torch.arange(float(W)).expand(1, 3, H, W).contiguous()
    half = F.avg_pool2d(ramp, 2)
    K = make_K(fx=20.0, fy=20.0, cx=7.5, cy=3.5)
    K_half = geo.scale_intrinsics(K, 0.5, 0.5)
    warped, valid = geo.warp(half, torch.full((1, 1, H, W), 5.0), K, torch.eye(4)[None], K_src=K_half)
    assert valid.all()
    assert torch.allclose(warped[..., 1:-1], ramp[..., 1:-1], atol=1e-5)  # border columns clamp


def test_warp_is_differentiable_in_depth():
    depth = torch.full((1, 1, 8, 8), 10.0, requires_grad=True)
    warped, _ = geo.warp(texture(H=8, W=8), depth, make_K(cx=3.5, cy=3.5), rigid(t=(0.3, 0.1, 0.0))[None])
    warped.sum().backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0


def test_scale_intrinsics_and_rescale():
    # cx' = sx (cx + 0.5) - 0.5 = 0.5 * 50.5 - 0.5, cy' = 0.25 * 40.5 - 0.5.
    K = make_K(fx=100.0, fy=80.0, cx=50.0, cy=40.0)
    K2 = geo.scale_intrinsics(K, 0.5, 0.25)
    expected = torch.tensor([[[50.0, 0.0, 24.75], [0.0, 20.0, 9.625], [0.0, 0.0, 1.0]]])
    assert torch.allclose(K2, expected)
    assert torch.equal(K, make_K(fx=100.0, fy=80.0, cx=50.0, cy=40.0))  # input untouched
    assert torch.allclose(geo.rescale_K_to(K, (900, 1600), (225, 800)), expected)
    K_np = geo.scale_intrinsics(K[0].numpy(), 0.5, 0.25)
    assert isinstance(K_np, np.ndarray) and np.allclose(K_np, expected[0].numpy())
    with pytest.raises(ValueError, match="scale factors"):
        geo.scale_intrinsics(K, 0.0, 1.0)


def test_inverse_rigid_matches_matrix_inverse():
    R = Rotation.from_rotvec([0.3, -0.2, 0.9]).as_matrix()
    T = rigid(R, (1.0, -2.0, 3.0)).expand(2, 3, 4, 4)
    assert torch.allclose(geo.inverse_rigid(T), torch.linalg.inv(T), atol=1e-6)


def test_rel_cam_pose_forward_motion():
    # Front camera 1.5 m above the ego origin; the ego drives 2 m forward (world x 1 -> 3) from target to source.
    cam2ego = rigid(CAM_TO_EGO_ROT, (0.0, 0.0, 1.5)).expand(1, 6, 4, 4)
    E_tgt = rigid(t=(1.0, 0.0, 0.0)).expand(1, 6, 4, 4)
    E_src = rigid(t=(3.0, 0.0, 0.0)).expand(1, 6, 4, 4)
    T = geo.rel_cam_pose(cam2ego, E_tgt, E_src)
    assert T.shape == (1, 6, 4, 4)
    # A point 10 m in front of the target camera is 8 m in front of the source camera.
    assert torch.allclose(T, rigid(t=(0.0, 0.0, -2.0)).expand(1, 6, 4, 4), atol=1e-6)
    T_ego = geo.inverse_rigid(E_src[:, 0]) @ E_tgt[:, 0]
    assert torch.allclose(geo.ego_motion_to_cam(T_ego, cam2ego), T, atol=1e-6)


def test_rel_cam_pose_between_cameras():
    # Same instant; the source camera sits 1 m to the left (ego +y) of the target camera, both facing forward.
    cam2ego = rigid(CAM_TO_EGO_ROT, (0.0, 0.0, 1.5)).expand(1, 6, 4, 4)
    cam2ego_src = rigid(CAM_TO_EGO_ROT, (0.0, 1.0, 1.5)).expand(1, 6, 4, 4)
    E = rigid(R=Rotation.from_euler("z", 30, degrees=True).as_matrix(), t=(5.0, 2.0, 0.0)).expand(1, 6, 4, 4)
    T = geo.rel_cam_pose(cam2ego, E, E, cam2ego_src=cam2ego_src)
    # Ego left is camera -x, so in the source camera every point appears 1 m further right (+x).
    assert torch.allclose(T, rigid(t=(1.0, 0.0, 0.0)).expand(1, 6, 4, 4), atol=1e-5)


def test_axis_angle_matches_scipy():
    aa = torch.tensor([[0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-6], [0.3, -0.2, 0.9], [-2.0, 1.0, 0.5], [0.0, 3.1, 0.0]])
    t = torch.arange(15.0).reshape(5, 3)
    T = geo.axis_angle_to_matrix(aa, t)
    R_ref = torch.tensor(Rotation.from_rotvec(aa.double().numpy()).as_matrix(), dtype=torch.float32)
    assert torch.allclose(T[:, :3, :3], R_ref, atol=1e-6)
    assert torch.equal(T[:, :3, 3], t)
    assert torch.equal(T[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(5, 4))


def test_axis_angle_gradient_at_zero():
    aa = torch.zeros(1, 3, requires_grad=True)
    R = geo.axis_angle_to_matrix(aa, torch.zeros(1, 3))[0, :3, :3]
    R[2, 1].backward()  # dR/d(aa_x) at 0 is the generator [x]_x, whose (2, 1) entry is +1
    assert torch.allclose(aa.grad, torch.tensor([[1.0, 0.0, 0.0]]))


def test_geometry_rejects_bad_shapes():
    with pytest.raises(ValueError, match="depth"):
        geo.backproject(torch.ones(1, 2, 4, 4), torch.eye(3)[None])
    with pytest.raises(ValueError, match="T_tgt2src"):
        geo.warp(texture(H=4, W=4), torch.ones(1, 1, 4, 4), make_K(), torch.eye(3)[None])
    with pytest.raises(ValueError, match="cam2ego"):
        geo.ego_motion_to_cam(torch.eye(4)[None], torch.eye(4)[None])


# ---------------------------------------------------------------- losses


def test_ssim_identical_is_one_and_photometric_zero():
    img = texture()
    assert torch.allclose(losses.SSIM()(img, img), torch.ones_like(img), atol=1e-5)
    err = losses.photometric_error(img, img)
    assert err.shape == (1, 1, 48, 64) and err.abs().max() < 1e-5


def test_photometric_error_hand_computed():
    # Constant images 0.5 vs 0.3: variances and covariance are 0, so SSIM = (2 * 0.15 + C1) / (0.25 + 0.09 + C1).
    # float64: in float32 the rounding noise of the variances (0.25 - 0.5^2) moves SSIM by ~1e-5.
    pred = torch.full((1, 3, 5, 5), 0.5, dtype=torch.float64)
    target = torch.full((1, 3, 5, 5), 0.3, dtype=torch.float64)
    ssim = (0.3 + 1e-4) / (0.34 + 1e-4)
    expected = 0.85 * (1 - ssim) / 2 + 0.15 * 0.2
    assert torch.allclose(losses.photometric_error(pred, target), torch.full_like(pred[:, :1], expected), atol=1e-9)
    # Pure L1 is the mean over channels: |0.1|, |0.2|, |0.6| -> 0.3.
    base = torch.full((1, 3, 4, 4), 0.3)
    err = losses.photometric_error(base + torch.tensor([0.1, -0.2, 0.6]).view(1, 3, 1, 1), base, alpha=0.0)
    assert torch.allclose(err, torch.full_like(err, 0.3), atol=1e-6)


def test_reprojection_per_pixel_minimum_and_validity():
    target = texture(seed=1)
    noise = texture(seed=2)
    left = torch.zeros(1, 1, 48, 64, dtype=torch.bool)
    left[..., :32] = True
    good_left = torch.where(left, target, noise)
    good_right = torch.where(left, noise, target)
    loss, maps = losses.reprojection_loss(target, [good_left, good_right])
    e1, e2 = losses.photometric_error(good_left, target), losses.photometric_error(good_right, target)
    assert torch.allclose(maps["reproj"], torch.minimum(e1, e2))
    assert maps["mask"].all() and torch.isclose(loss, torch.minimum(e1, e2).mean())
    # Source 1 invalid on its good half: the minimum must come from source 2 there.
    loss, maps = losses.reprojection_loss(target, [good_left, good_right], valid=[~left, torch.ones_like(left)])
    assert torch.allclose(maps["reproj"], torch.where(left, e2, torch.minimum(e1, e2)))
    # No valid source on the left half: those pixels are dropped, the loss stays finite.
    loss, maps = losses.reprojection_loss(target, [good_left, good_right], valid=[~left, ~left])
    assert torch.equal(maps["mask"], ~left)
    assert torch.isclose(loss, torch.minimum(e1, e2)[~left].mean())


def test_reprojection_automask_static_pixels():
    # Static camera: the unwarped source already equals the target, a (wrong) shifted warp must be masked out.
    target = texture(seed=3)
    shifted = torch.roll(target, 3, dims=-1)
    loss, maps = losses.reprojection_loss(target, [shifted], sources=[target.clone()])
    assert not maps["mask"].any() and loss.item() < 1e-4  # the identity error of a static pixel, ~0
    # Moving camera: a good warp beats the unwarped (shifted) source everywhere.
    warped = (target + 0.02).clamp(0, 1)
    loss, maps = losses.reprojection_loss(target, [warped], sources=[shifted])
    assert maps["mask"].all()
    assert torch.isclose(loss, losses.photometric_error(warped, target).mean())


def test_reprojection_without_automask_keeps_every_valid_warp():
    # Static camera and a wrong warp: with the auto-mask off the pixels keep their (large) warped error, so the
    # gradient reaches them; a pixel with no valid source still falls back to its identity error.
    target = texture(seed=3)
    shifted = torch.roll(target, 3, dims=-1)
    err = losses.photometric_error(shifted, target)
    loss, maps = losses.reprojection_loss(target, [shifted], sources=[target.clone()], automask=False)
    assert maps["mask"].all() and torch.isclose(loss, err.mean())
    left = torch.zeros(1, 1, 48, 64, dtype=torch.bool)
    left[..., :32] = True
    loss, maps = losses.reprojection_loss(target, [shifted], sources=[target.clone()], valid=[~left],
                                          automask=False)
    assert torch.equal(maps["mask"], ~left)
    assert torch.isclose(loss, torch.where(left, maps["identity"], err).mean())


def test_masked_mean_ignores_nonfinite_outside_mask():
    x = torch.tensor([1.0, 3.0, float("inf"), float("nan")], requires_grad=True)
    m = torch.tensor([True, True, False, False])
    out = losses.masked_mean(x, m)
    out.backward()
    assert out.item() == 2.0 and torch.equal(x.grad, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    empty = losses.masked_mean(x, torch.zeros(4))
    assert empty.item() == 0.0 and empty.requires_grad


def test_smoothness_hand_computed():
    img = torch.zeros(1, 3, 2, 3)
    assert losses.smoothness_loss(torch.full((1, 1, 2, 3), 4.0), img).item() == 0.0
    disp = torch.tensor([1.0, 2.0, 3.0]).expand(1, 1, 2, 3)  # mean 2: normalised steps of 0.5 along x, 0 along y
    assert math.isclose(losses.smoothness_loss(disp, img).item(), 0.5, rel_tol=1e-6)
    img[..., 2] = 1.0  # an edge between columns 1 and 2 down-weights that step by exp(-1)
    expected = 0.25 * (1 + math.exp(-1))
    assert math.isclose(losses.smoothness_loss(disp, img).item(), expected, rel_tol=1e-6)


def test_semantic_ce_matches_torch_and_ignores():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 3, 4, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (2, 3, 4), generator=g)
    labels[0, 0] = 255
    ce = losses.semantic_ce(logits, labels)
    assert torch.isclose(ce, F.cross_entropy(logits, labels, ignore_index=255))
    none = losses.semantic_ce(logits, torch.full((2, 3, 4), 255))
    none.backward()
    assert none.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    with pytest.raises(ValueError, match="outside"):
        losses.semantic_ce(logits, torch.full((2, 3, 4), 7))


def test_opacity_entropy():
    assert math.isclose(losses.opacity_entropy(torch.full((10,), 0.5)).item(), math.log(2), rel_tol=1e-6)
    alpha = torch.tensor([0.0, 1.0], requires_grad=True)
    h = losses.opacity_entropy(alpha)
    h.backward()
    assert 0 <= h.item() < 1e-4 and torch.isfinite(alpha.grad).all()


# ---------------------------------------------------------------- pose metrics


def yaw_pose(x, y, yaw):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    T[:2, 3] = x, y
    return T


@pytest.fixture
def drive():
    """ego2global of a car driving a curve: 8 frames, 1.5 m apart, turning 5 degrees a step."""
    poses, x, y, yaw = [], 0.0, 0.0, 0.3
    for _ in range(8):
        poses.append(yaw_pose(x, y, yaw))
        x, y, yaw = x + 1.5 * math.cos(yaw), y + 1.5 * math.sin(yaw), yaw + math.radians(5)
    return np.stack(poses)


def test_relative_motion_convention():
    M = pm.relative_motions(np.stack([np.eye(4), yaw_pose(1.0, 0.0, 0.0)]))
    assert np.allclose(M[0], yaw_pose(-1.0, 0.0, 0.0))  # a static point 5 m ahead is 4 m ahead one frame later


def test_chain_motions_recovers_trajectory(drive):
    P = pm.chain_motions(pm.relative_motions(drive))
    assert np.allclose(P, np.linalg.inv(drive[0]) @ drive)


def test_exact_prediction_metrics(drive):
    true = pm.relative_motions(drive)
    m = pm.pose_metrics(true.copy(), true)
    assert m["scale_median"] == pytest.approx(1.0) and m["scale_count"] == 7
    assert m["ate"] == pytest.approx(0.0, abs=1e-9)
    assert m["rpe_trans"] == pytest.approx(0.0, abs=1e-9) and m["rpe_rot"] == pytest.approx(0.0, abs=1e-5)


def test_doubled_translation_scale(drive):
    true = pm.relative_motions(drive)
    pred = true.copy()
    pred[:, :3, 3] *= 2
    s = pm.scale_ratio(pred, true)
    assert s["median"] == pytest.approx(2.0) and s["mean"] == pytest.approx(2.0)
    assert pm.rpe(pred, true)["trans"] == pytest.approx(1.5)  # |2t - t| = 1.5 m each step


def test_scale_ratio_skips_standing_still():
    true = np.stack([yaw_pose(-1.0, 0, 0), yaw_pose(-0.01, 0, 0), yaw_pose(-2.0, 0, 0)])
    pred = np.stack([yaw_pose(-2.0, 0, 0), yaw_pose(-5.0, 0, 0), yaw_pose(-3.0, 0, 0)])
    s = pm.scale_ratio(pred, true)
    assert s["count"] == 2 and s["median"] == pytest.approx(1.75) and s["mean"] == pytest.approx(1.75)


def test_ate_straight_line_double_scale():
    # 4 steps of 1 m, predicted 2 m: positions 0..4 vs 0..8 on a line. Aligning centroids leaves residuals
    # k - 2 for k = 0..4, so ATE = sqrt((4 + 1 + 0 + 1 + 4) / 5) = sqrt(2).
    true = np.stack([yaw_pose(-1.0, 0, 0)] * 4)
    pred = np.stack([yaw_pose(-2.0, 0, 0)] * 4)
    assert pm.ate(pred, true) == pytest.approx(math.sqrt(2))


def test_ate_ignores_global_rotation_rpe_does_not(drive):
    # Conjugating every motion by a fixed rotation G rotates the whole trajectory about the start.
    true = pm.relative_motions(drive)
    G = np.eye(4)
    G[:3, :3] = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    pred = G @ true @ np.linalg.inv(G)
    assert pm.ate(pred, true) == pytest.approx(0.0, abs=1e-9)
    assert pm.rpe(pred, true)["trans"] > 0.1


def test_rpe_rotation_error_degrees(drive):
    true = pm.relative_motions(drive)
    pred = true @ yaw_pose(0.0, 0.0, math.radians(1.0))  # an extra 1 degree of yaw per step, same translation
    r = pm.rpe(pred, true)
    assert r["rot"] == pytest.approx(1.0) and r["trans"] == pytest.approx(0.0, abs=1e-9)


def test_pose_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same"):
        pm.rpe(np.stack([np.eye(4)] * 2), np.stack([np.eye(4)] * 3))
    with pytest.raises(ValueError, match="ego2global"):
        pm.relative_motions(np.eye(4)[None])
    with pytest.raises(ValueError, match="pred"):
        pm.ate(np.eye(3)[None], np.eye(4)[None])


def test_evaluate_scene_poses_groups_and_skips_missing_next(drive):
    true = pm.relative_motions(drive)
    pred = true.copy()
    pred[:, :3, 3] *= 2
    entries = [("a", f"t{k}", pred[k], true[k]) for k in range(7)] + [("a", "last", np.eye(4) * 3, np.eye(4))]
    entries += [("b", f"u{k}", true[k], true[k]) for k in range(7)]
    out = pm.evaluate_scene_poses(entries)
    assert set(out["scenes"]) == {"a", "b"} and out["scenes"]["a"]["scale_count"] == 7
    assert out["scenes"]["a"]["scale_median"] == pytest.approx(2.0)
    assert out["mean"]["scale_median"] == pytest.approx(1.5) and out["mean"]["rpe_trans"] == pytest.approx(0.75)
    assert "| mean | 14 |" in out["table"]


def test_reprojection_loss_cannot_be_lowered_by_leaving_the_image():
    """Auto-masked loss: pixels with no valid source, or where the warp is worse than no motion, keep their
    identity error; the loss is a mean over all pixels, so invalidating pixels never helps."""
    target = texture(seed=4)
    source = torch.roll(target, 2, dims=-1)  # the camera moved: identity error > 0
    good = (target + 0.01).clamp(0, 1)
    e_good = losses.photometric_error(good, target)
    e_id = losses.photometric_error(source, target)
    half = torch.zeros_like(target[:, :1], dtype=torch.bool)
    half[..., : target.shape[-1] // 2] = True
    full, _ = losses.reprojection_loss(target, [good], sources=[source])
    out, maps = losses.reprojection_loss(target, [good], sources=[source], valid=[~half])
    assert torch.isclose(full, torch.minimum(e_good, e_id).mean(), atol=1e-4)
    assert torch.isclose(out, torch.where(half, e_id, torch.minimum(e_good, e_id)).mean(), atol=1e-4)
    assert out > full  # losing half of the valid pixels costs, it does not pay
    gone, maps = losses.reprojection_loss(target, [good], sources=[source], valid=[torch.zeros_like(half)])
    assert not maps["mask"].any() and torch.isclose(gone, e_id.mean(), atol=1e-4) and gone > full

