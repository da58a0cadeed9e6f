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
    for k in ("loss_reproj", "loss_smooth", "loss_sem", "loss_dist"):
        assert float(logs[k]) == pytest.approx(float(logs0[k]), rel=1e-5, abs=1e-7), k
    extra = 0.5 * (logs["loss_reproj_extra"] + model.opt.w_smooth * logs["loss_smooth_extra"]
                   + model.opt.w_dist * logs["loss_dist_extra"])
    assert float(loss.detach()) == pytest.approx(float(loss0.detach()) + float(extra), rel=1e-5, abs=1e-7)
    assert 0 < float(logs["loss_reproj_extra"]) < 1
    loss.backward()
    assert model.occ_net.decoder[0].weight.grad.abs().sum() > 0


def test_extra_views_need_the_gaussian_renderer():
    opt = tiny_opt("--w_extra_views", "1", "--render_type", "volume")
    model = GSVModel(opt, criterion=GSVLoss(opt, 17), pose_source=lambda b: torch.eye(4).expand(1, 2, 6, 4, 4))
    with pytest.raises(ValueError, match="--w_extra_views needs --render_type gs"):
        model(make_batch())
