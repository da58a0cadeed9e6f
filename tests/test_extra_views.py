"""--w_extra_views: stage 2 also renders the previous / next frame's cameras (from the pose source's motion) in the
same rasterize call, and their temporal loss trains the same volume."""
import math

import pytest
import torch

from networks import build_model
from networks.gsv_loss import GSVLoss
from networks.gsv_model import GSVModel
from tests.test_gsv_model import make_batch, tiny_opt
from utils.geometry import inverse_rigid

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def motion(dx, yaw):
    """A rigid transform: rotation about the camera's y axis by ``yaw`` radians, then ``dx`` metres along its z."""
    M = torch.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    M[0, 0], M[0, 2], M[2, 0], M[2, 2] = c, s, -s, c
    M[2, 3] = dx
    return M


def fixed_volume(model, seed=0):
    """The model's network replaced by one fixed random volume (whatever the cameras), so that two renders of it
    differ only in their cameras."""
    out = model.occ_net(make_batch()["imgs"][:, 1], make_batch()["K"], make_batch()["cam2ego"])
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(out["logits"].shape, generator=g) * 3
    model.occ_net.forward = lambda *a, **k: {"logits": logits}
    return logits


def test_the_extra_cameras_render_like_cameras_placed_at_the_adjacent_poses():
    model = GSVModel(tiny_opt("--w_extra_views", "1", "--w_dist", "0.03"))
    fixed_volume(model)
    batch = make_batch()
    T = torch.stack([torch.stack([motion(-0.7, 0.05 * c) for c in range(6)]),
                     torch.stack([motion(0.9, -0.03 * c) for c in range(6)])])[None]  # (1, 2, 6, 4, 4)
    r = model.render(batch, T)
    assert r["depth"].shape == (1, 6, 1, 32, 56) and r["K"].shape == (1, 6, 3, 3)
    assert r["extra"]["depth"].shape == (1, 2, 6, 1, 32, 56) and "zsq" in r["extra"]
    plain = model.render(batch)
    assert torch.allclose(r["depth"], plain["depth"], atol=1e-5)  # the current cameras are unchanged
    for k in range(2):  # cameras moved to the adjacent poses: camera -> ego = (current cam -> ego) o (adjacent -> current)
        moved = dict(batch, cam2ego=batch["cam2ego"] @ inverse_rigid(T[0, k]))
        ref = model.render(moved)
        assert torch.allclose(r["extra"]["depth"][:, k], ref["depth"], rtol=1e-4, atol=1e-3), k
        assert torch.allclose(r["extra"]["alpha"][:, k], ref["alpha"], atol=1e-4), k
    still = model.render(batch, torch.eye(4).expand(1, 2, 6, 4, 4))
    assert torch.allclose(still["extra"]["depth"][:, 0], plain["depth"], atol=1e-4)


def test_the_extra_views_add_their_loss_and_train_the_network():
    torch.manual_seed(0)
    batch = make_batch()
    batch["ego2global"][:, 0, :, 0, 3] = -0.5  # the car moved 0.5 m forward between frames
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    batch["imgs"][:, 0] = (batch["imgs"][:, 0] * 0.8 + 0.1)  # the previous frame differs from the current one
    base = build_model(tiny_opt())
    torch.manual_seed(0)
    model = build_model(tiny_opt("--w_extra_views", "0.5"))
    model.load_state_dict(base.state_dict())
    loss0, logs0, _ = base(batch)
    loss, logs, _ = model(batch)
    assert {"loss_reproj_extra", "loss_smooth_extra", "loss_dist_extra"} <= set(logs)
    assert "loss_reproj_extra" not in logs0
    # the current cameras' terms are those of the run without extra views; the extra ones come on top
    # (this untrained pair's auto-mask keeps no pixel, so loss_reproj is float noise of ~1e-7 in both)
    for k in ("loss_reproj", "loss_smooth", "loss_sem", "loss_dist"):
        assert float(logs[k]) == pytest.approx(float(logs0[k]), rel=1e-5, abs=1e-6), k
    extra = 0.5 * (logs["loss_reproj_extra"] + model.opt.w_smooth * logs["loss_smooth_extra"]
                   + model.opt.w_dist * logs["loss_dist_extra"])
    assert float(loss.detach()) == pytest.approx(float(loss0.detach()) + float(extra), rel=1e-5, abs=1e-6)
    assert 0 < float(logs["loss_reproj_extra"]) < 1
    loss.backward()
    assert model.occ_net.decoder[0].weight.grad.abs().sum() > 0


def test_extra_views_need_the_gaussian_renderer():
    opt = tiny_opt("--w_extra_views", "1", "--render_type", "volume")
    model = GSVModel(opt, criterion=GSVLoss(opt, 17), pose_source=lambda b: torch.eye(4).expand(1, 2, 6, 4, 4))
    with pytest.raises(ValueError, match="--w_extra_views needs --render_type gs"):
        model(make_batch())


def test_extra_semantics_are_those_of_cameras_at_the_adjacent_poses_and_add_their_loss():
    model = GSVModel(tiny_opt("--w_extra_views", "1", "--w_extra_sem", "0.3"))
    fixed_volume(model)
    batch = make_batch()
    T = torch.stack([torch.stack([motion(-0.7, 0.05 * c) for c in range(6)]),
                     torch.stack([motion(0.9, -0.03 * c) for c in range(6)])])[None]
    r = model.render(batch, T)
    assert r["extra"]["sem"].shape == (1, 2, 6) + r["sem"].shape[2:]
    for k in range(2):
        ref = model.render(dict(batch, cam2ego=batch["cam2ego"] @ inverse_rigid(T[0, k])))
        assert torch.allclose(r["extra"]["sem"][:, k], ref["sem"], atol=1e-4), k
    crit = GSVLoss(model.opt, 17)
    labels = batch["sem"][:, None].repeat(1, 2, 1, 1, 1)
    labels[:, 1, :, :4] = 255  # unlabelled pixels of the next frame are left out
    torch.manual_seed(1)  # (the auto-mask's tie-breaking noise)
    with_adj = crit.terms(r, dict(batch, sem_adj=labels), T)
    torch.manual_seed(1)
    without = crit.terms(r, batch, T)
    assert "sem_extra" in with_adj[0] and "sem_extra" not in without[0]
    from utils.losses import semantic_ce
    want = semantic_ce(r["extra"]["sem"].flatten(0, 2), labels.flatten(0, 2), weight=crit.sem_weight)
    assert float(with_adj[1]["loss_sem_extra"]) == pytest.approx(float(want), rel=1e-5)
    assert float(with_adj[0]["sem_extra"]) == pytest.approx(0.3 * float(want), rel=1e-5)
    for k in without[0]:  # the other terms are unchanged
        assert float(with_adj[0][k]) == pytest.approx(float(without[0][k]), rel=1e-6, abs=1e-9), k
    none = crit.terms(r, dict(batch, sem_adj=torch.full_like(labels, 255)), T)[0]
    assert "sem_extra" not in none  # a frame without labels adds nothing (no NaN from an empty mean)


def test_extra_semantics_need_the_extra_views():
    from utils.errors import ConfigError
    with pytest.raises(ConfigError, match="--w_extra_sem"):
        tiny_opt("--w_extra_sem", "0.3")


def test_near_neighbours_are_two_more_sources_of_the_temporal_loss():
    """--near_stride: the batch's frames 3 / 4 are sources too (per-pixel minimum over 4); the recorded pose source
    gives their motion as T's 3rd / 4th entries. Copies of the previous / next frame change nothing."""
    from networks.pose_source import RecordedPoses
    batch = make_batch()
    batch["ego2global"][:, 0, :, 0, 3] = -0.5
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    batch["imgs"][:, 0] = batch["imgs"][:, 0] * 0.8 + 0.1
    batch["imgs"][:, 2] = batch["imgs"][:, 2].flip(-1) * 0.7 + 0.2  # neither neighbour matches the current frame
    five = dict(batch, imgs=torch.cat([batch["imgs"], batch["imgs"][:, [0, 2]]], 1),
                ego2global=torch.cat([batch["ego2global"], batch["ego2global"][:, [0, 2]]], 1))
    T3, T5 = RecordedPoses()(batch), RecordedPoses()(five)
    assert T3.shape[1] == 2 and T5.shape[1] == 4 and torch.allclose(T5[:, 2:], T3)
    model = GSVModel(tiny_opt())
    fixed_volume(model)
    r = model.render(batch)
    crit = GSVLoss(model.opt, 17)
    torch.manual_seed(0)
    three = crit.terms(r, batch, T3)[1]["loss_reproj"]
    torch.manual_seed(0)
    dup = crit.terms(r, five, T5)[1]["loss_reproj"]
    assert float(three) > 0.01
    assert float(dup) == pytest.approx(float(three), rel=1e-3)
    other = dict(five, imgs=five["imgs"].clone())
    other["imgs"][:, 3:] = other["imgs"][:, 1:2]  # near neighbours identical to the current frame: warps that fit
    T_still = torch.cat([T3, torch.eye(4).expand(1, 2, 6, 4, 4)], 1)
    torch.manual_seed(0)
    still = crit.terms(r, other, T_still)[1]["loss_reproj"]
    assert float(still) < 0.5 * float(three)  # the new sources are used: the minimum drops


def test_stage1_pose_source_predicts_the_near_pair_from_its_own_frames():
    """Stage1Poses with --near_stride batches: the far pair from frames 0 / 1 / 2, the near pair from frames 3 / 1 /
    4 (each in time order, as the stage-1 net was trained), cached under their own keys."""
    from networks.pose_source import Stage1Poses
    from utils.geometry import ego_motion_to_cam

    class Fake:  # ego motion = a translation equal to the mean of the previous / next images
        def requires_grad_(self, flag):
            return self

        def predict_pose(self, b):
            out = torch.eye(4).repeat(b["imgs"].shape[0], 2, 1, 1)
            out[:, 0, 0, 3] = b["imgs"][:, 0].mean()
            out[:, 1, 0, 3] = b["imgs"][:, 2].mean()
            return out

    src = Stage1Poses("ckpt", lambda path, device: Fake(), cache=True)
    batch = make_batch()
    imgs = torch.stack([torch.full_like(batch["imgs"][:, 0], v) for v in (0.1, 0.5, 0.2, 0.3, 0.4)], 1)
    five = dict(batch, imgs=imgs, ego2global=torch.eye(4).expand(1, 5, 6, 4, 4), token=["s0"])
    T = src(five)
    assert T.shape == (1, 4, 6, 4, 4)
    cam = batch["cam2ego"]
    for k, v in enumerate((0.1, 0.2, 0.3, 0.4)):  # prev, next, near prev, near next
        M = torch.eye(4)
        M[0, 3] = v
        torch.testing.assert_close(T[:, k], ego_motion_to_cam(M[None], cam))
    assert set(src.cache) == {"s0", "s0#near"}
