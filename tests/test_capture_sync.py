"""Cameras that fire one after another (nuScenes): each camera placed where it was at its own capture time
(utils.geometry.capture_synced_cam2ego), from the frames' ego motion and the items' cam_time; what --gsp_sync feeds
the cross-view term."""
import math

import pytest
import torch

import options
from datasets import build_dataset, collate
from utils.geometry import axis_angle_to_matrix, capture_synced_cam2ego, matrix_to_axis_angle, recorded_ego_motion


def fixture_items(nusc_root):
    """The real scene-0916 keyframes as stage 1 reads them (small images)."""
    opt = options.parse_args(["--stage", "gsp", "--dataset", "nuscenes", "--dataroot", str(nusc_root),
                              "--version", "v1.0-mini", "--adjacent", "keyframe", "--input_size", "64", "96"])
    return build_dataset(opt, "val")


def test_axis_angle_round_trip():
    aa = torch.tensor([[0.0, 0.0, 0.0], [1e-5, -2e-5, 3e-5], [0.3, -0.2, 0.1], [0.0, 0.0, 2.5]])
    R = axis_angle_to_matrix(aa, torch.zeros(4, 3))[:, :3, :3]
    assert torch.allclose(matrix_to_axis_angle(R), aa, atol=1e-6)


def test_constant_velocity_is_spread_over_the_capture_times():
    """10 m/s forward and 0.2 rad/s of yaw: a camera 0.02 s late sits 0.2 m further and 0.004 rad turned."""
    b = 1
    cam2ego = torch.eye(4).expand(b, 6, 4, 4).clone()
    cam2ego[:, :, 1, 3] = torch.arange(6.0)  # cameras 1 m apart sideways
    pose_next = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.1]]), torch.tensor([[5.0, 0.0, 0.0]]))
    pose_prev = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, -0.1]]), torch.tensor([[-5.0, 0.0, 0.0]]))
    motion = torch.stack([torch.linalg.inv(pose_prev), torch.linalg.inv(pose_next)], 1)  # current -> prev / next
    offsets = torch.tensor([-0.02, -0.01, 0.0, 0.01, 0.02, 0.03])
    cam_time = torch.stack([offsets - 0.5, offsets, offsets + 0.5])[None]
    out = capture_synced_cam2ego(cam2ego, motion, cam_time)
    for c in range(6):
        shift = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.2 * offsets[c]]]),
                                     torch.tensor([[10.0 * offsets[c], 0.0, 0.0]]))[0]
        assert torch.allclose(out[0, c], shift @ cam2ego[0, c], atol=1e-5)
    # no neighbour on one side (that frame is the current one): the other side alone gives the same velocity
    one_sided = cam_time.clone()
    one_sided[:, 0] = cam_time[:, 1]
    assert torch.allclose(capture_synced_cam2ego(cam2ego, motion, one_sided), out, atol=1e-5)
    # cameras that fire together, or no neighbour at all: the calibration as it is
    assert torch.equal(capture_synced_cam2ego(cam2ego, motion, torch.zeros(1, 3, 6)), cam2ego)


def test_on_real_keyframes_the_recorded_motion_gives_each_cameras_own_pose(nusc_root):
    """scene-0916: the keyframe motion spread over the capture times places every camera within 2 cm of its recorded
    pose at its own timestamp (relative to every other camera); the calibration alone is 14-21 cm off."""
    ds = fixture_items(nusc_root)
    batch = collate([ds[i] for i in (0, 5, 20, len(ds) - 1)])
    E, c2e = batch["ego2global"].double(), batch["cam2ego"].double()
    assert batch["cam_time"].shape == (4, 3, 6)
    spread = batch["cam_time"][:, 1].max(-1).values - batch["cam_time"][:, 1].min(-1).values
    assert ((spread > 0.03) & (spread < 0.06)).all()  # the six cameras fire over ~42 ms
    synced = capture_synced_cam2ego(c2e, recorded_ego_motion(E), batch["cam_time"].double())

    def relative(poses):  # (B, 6, 4, 4) -> (B, 6, 6, 3): translation of camera i in camera j's frame
        return (torch.linalg.inv(poses)[:, None] @ poses[:, :, None])[..., :3, 3]

    true = relative(E[:, 1] @ c2e)  # each camera at its own timestamp (its recorded ego pose)
    err_synced = (relative(synced) - true).norm(dim=-1)
    err_calib = (relative(c2e) - true).norm(dim=-1)
    assert torch.isfinite(err_synced).all()
    assert err_synced.max() < 0.02 and err_calib.max() > 0.14, (err_synced.max(), err_calib.max())


def test_synthetic_cameras_fire_together(synth_root):
    opt = options.parse_args(["--stage", "gsp", "--dataset", "nuscenes", "--dataroot", str(synth_root),
                              "--version", "v1.0-synthetic", "--adjacent", "keyframe", "--input_size", "64", "96"])
    item = build_dataset(opt, "val")[1]
    assert torch.equal(item["cam_time"][1], torch.zeros(6))
    assert (item["cam_time"][2] > 0.1).all() and (item["cam_time"][0] < -0.1).all()  # the keyframes around it


@pytest.mark.parametrize("sync", [True, False])
def test_the_cross_view_term_gets_the_capture_rig_with_gsp_sync(monkeypatch, sync):
    """GSPLoss hands the cross-view term the cameras placed at their capture times from the step's own motion (which
    keeps its gradient: the term then also knows the metric speed), or the calibration with --gsp_sync false."""
    from networks import gsp_loss
    from networks.gsp_loss import GSPLoss
    from tests.test_gsp import cam2ego as make_cam, make_opt
    seen = []
    real = gsp_loss.cross_view_loss
    monkeypatch.setattr(gsp_loss, "cross_view_loss", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    b, h, w = 1, 64, 96
    c2e = torch.stack([make_cam(60 * c, [0.5 * math.cos(math.radians(60 * c)), 0.5 * math.sin(math.radians(60 * c)),
                                         1.5]) for c in range(6)])[None]
    K = torch.tensor([[40.0, 0, (w - 1) / 2], [0, 40.0, (h - 1) / 2], [0, 0, 1]]).expand(b, 6, 3, 3)
    offsets = torch.linspace(-0.02, 0.02, 6)
    batch = {"imgs": torch.rand(b, 3, 6, 3, h, w), "K": K, "cam2ego": c2e,
             "cam_time": torch.stack([offsets - 0.5, offsets, offsets + 0.5])[None]}
    speed = torch.tensor(4.0, requires_grad=True)  # m per 0.5 s forward
    fwd = torch.eye(4).repeat(2, 1, 1)
    fwd[1, 0, 3] = -1.0  # the next ego is ahead: current coordinates -> next ones move back
    fwd[0, 0, 3] = 1.0
    motion = torch.eye(4).repeat(b, 2, 1, 1) + (fwd - torch.eye(4))[None] * speed
    out = {("disp", s): torch.full((b * 6, 1, h >> s, w >> s), 0.2) for s in range(4)}
    out.update(depth=torch.full((b * 6, 1, h, w), 8.0), gs_scale=torch.full((b * 6, 1, h, w), 0.05))
    loss, _, _ = GSPLoss(make_opt("--gsp_sync", str(sync).lower()))(out, motion, batch)
    rig = seen[0]
    if sync:
        assert torch.allclose(rig, capture_synced_cam2ego(c2e, motion.detach(), batch["cam_time"]), atol=1e-6)
        assert abs(float((rig[0, 5, 0, 3] - c2e[0, 5, 0, 3]).detach()) - 8.0 * 0.02) < 1e-4  # 8 m/s x 20 ms later
        loss.backward()
        assert speed.grad is not None and speed.grad != 0  # the motion reaches the cross-view term
    else:
        assert torch.equal(rig, c2e)


def test_the_landscape_capture_rig_moves_the_late_cameras_forward(nusc_root):
    """tools/diagnostics/gsp_landscape_real --rig capture: on scene-0916 (driving forward, +x) the camera that fires
    last (CAM_BACK_LEFT, ~22 ms after the mean) sits ahead of its calibration, the first (CAM_FRONT_LEFT) behind it."""
    from tools.diagnostics.gsp_landscape_real import capture_rig
    item = fixture_items(nusc_root)[10]
    rig = capture_rig(item)
    dx = rig[:, 0, 3] - item["cam2ego"][:, 0, 3]  # metres along the ego's forward axis, per camera
    late, early = int(item["cam_time"][1].argmax()), int(item["cam_time"][1].argmin())
    assert float(dx[late]) > 0.04 and float(dx[early]) < -0.04, dx
    assert rig.dtype == torch.float32 and torch.allclose(rig[:, 3], item["cam2ego"][:, 3])
