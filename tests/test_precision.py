"""Geometry and photometric losses stay in float32 under autocast (utils/precision.py)."""
import numpy as np
import pytest
import torch

from utils.geometry import axis_angle_to_matrix, ego_motion_to_cam, warp
from utils.losses import photometric_error
from utils.precision import full_precision


def _case():
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[[252.0, 0, 175.5], [0, 252.0, 111.5], [0, 0, 1]]]).repeat(2, 1, 1)
    depth = 5 + 45 * torch.rand(2, 1, 56, 88, generator=g)
    K[:, :2] /= 4
    img = torch.rand(2, 3, 56, 88, generator=g)
    T = torch.eye(4).repeat(2, 1, 1)
    T[:, :3, :3] = axis_angle_to_matrix(torch.tensor([[0.0, 0.02, 0.0]] * 2), torch.zeros(2, 3))[:, :3, :3]
    T[:, :3, 3] = torch.tensor([0.1, 0.0, -1.7])
    return img, depth, K, T


def test_warp_under_bf16_autocast_matches_float32():
    img, depth, K, T = _case()
    depth = depth.bfloat16().float()  # the network's bf16 output, exactly representable
    ref, ok_ref = warp(img, depth, K, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ok = warp(img, depth.bfloat16(), K, T)
        raw = (K @ (depth.flatten(2) * torch.ones(2, 3, 1)))  # an undecorated matmul does go to bf16
    assert raw.dtype == torch.bfloat16
    assert out.dtype == torch.float32
    assert torch.equal(ok, ok_ref)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_photometric_error_and_pose_algebra_in_float32():
    img, _, _, T = _case()
    c2e = torch.eye(4).repeat(2, 6, 1, 1)
    c2e[..., :3, 3] = torch.tensor([1.5, 0.3, 1.6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        err = photometric_error(img.bfloat16(), (img * 0.9 + 0.05).bfloat16())
        Tc = ego_motion_to_cam(T, c2e)
    assert err.dtype == torch.float32 and Tc.dtype == torch.float32
    torch.testing.assert_close(err, photometric_error(img.bfloat16().float(), (img * 0.9 + 0.05).bfloat16().float()))
    torch.testing.assert_close(Tc, ego_motion_to_cam(T, c2e))


def test_full_precision_casts_lists_and_leaves_float64():
    @full_precision
    def f(xs, y):
        return [x.dtype for x in xs], y.dtype, torch.is_autocast_enabled("cpu")

    with torch.autocast("cpu", dtype=torch.bfloat16):
        dtypes, ydt, on = f([torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16)],
                            y=torch.ones(2, dtype=torch.float64))
    assert dtypes == [torch.float32, torch.float32] and ydt == torch.float64 and not on


def test_losses_know_the_scale_under_bf16():
    """Exact synthetic depth and pose: GSP and the temporal loss with the true translation are smallest at the
    true depth; the temporal loss with depth and translation scaled together cannot tell (flat)."""
    from tools.diagnostics.gsp_landscape import landscape
    scales = (0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = landscape(scene=0, frame=1, size=(56, 88), scales=scales, masks=("rendered",), erode=2)
    i1 = scales.index(1.0)
    for key in ("gsp_rendered", "temporal_gt"):
        v = np.array(res[key])
        assert abs(int(np.argmin(v)) - i1) <= 1, (key, v)
        assert v[0] > 1.5 * v[i1] and v[-1] > 1.5 * v[i1], (key, v)
    t = np.array(res["temporal"])
    assert t.max() - t.min() < 0.05 * t.mean(), t
    assert 0.8 < res["speed_m_per_frame"] < 2.5


def test_relative_motion_of_global_poses_under_bf16():
    """The stage-2 --pose gt path on the recorded poses of synthetic scene 0 (ego near x = 128 m, y = 187 m, 1.64 m
    between frames): an undecorated bf16 product gives (0.93, 0.76, 0) m; rel_cam_pose gives the float32 answer."""
    from datasets.synthetic.scene import make_scene
    from utils.geometry import rel_cam_pose
    E = torch.tensor(make_scene(0, 0, 3, dt=0.25).ego2global[:2], dtype=torch.float32)
    E_prev, E_cur = (e.expand(1, 6, 4, 4) for e in E)
    truth = torch.linalg.inv(E[0].double()) @ E[1].double()
    c2e = torch.eye(4).repeat(1, 6, 1, 1)
    ref = rel_cam_pose(c2e, E_cur, E_prev)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_bf16 = rel_cam_pose(c2e, E_cur, E_prev)
        raw = torch.linalg.inv(E[0]) @ E[1]  # what an undecorated product gives
    torch.testing.assert_close(raw[:3, 3].float(), torch.tensor([0.9297, 0.7617, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(ref_bf16, ref)  # dtype and values
    torch.testing.assert_close(ref[0, 0, :3, 3].double(), truth[:3, 3], atol=1e-3, rtol=0)
    assert abs(truth[0, 3].item() - 1.637) < 1e-3


def test_rigid_inverse_and_ground_plane_under_bf16_autocast_stay_float32():
    """inverse_rigid (the render's view matrices) and ground_plane_depth run in float32 under bf16 autocast, with the
    values of float32 (an undecorated 4x4 matmul under autocast rounds to 8 mantissa bits)."""
    from utils.geometry import ground_plane_depth, inverse_rigid
    _, _, K, T = _case()
    T[:, :3, 3] = torch.tensor([128.3, 187.1, 1.6])  # metres from an origin, as a global pose
    ref, plane_ref = inverse_rigid(T), ground_plane_depth(K, T, (56, 88))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, plane = inverse_rigid(T), ground_plane_depth(K, T, (56, 88))
    assert out.dtype == plane.dtype == torch.float32
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(plane, plane_ref)
