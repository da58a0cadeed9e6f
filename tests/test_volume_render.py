"""Volume-rendering baseline (networks/volume_render.py)."""
import numpy as np
import pytest
import torch

from networks.volume_render import render_volume

# A camera at the ego origin looking forward (+x): camera x = -y, camera y = -z, camera z = x.
VIEW = torch.tensor([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)[None]
# pixel centres sit at integer coordinates (utils.geometry): the optical axis of a WxH image is at ((W-1)/2, (H-1)/2)
K8 = torch.tensor([[8.0, 0, 3.5], [0, 8, 3.5], [0, 0, 1]], dtype=torch.float64)[None]  # 8x8 image, +-26 deg
K1 = torch.tensor([[1.0, 0, 0.0], [0, 1, 0.0], [0, 0, 1]], dtype=torch.float64)[None]  # 1x1 image on the axis
RANGE = (-1.2, -2.0, -2.0, 8.0, 2.0, 2.0)  # 23 x 10 x 10 voxels of 0.4 m


def _wall():
    """Opaque slab over x in [4.0, 4.8] (voxels 13 and 14)."""
    occ = torch.zeros(23, 10, 10, dtype=torch.float64)
    occ[13:15] = 1.0
    return occ


def _expected_wall_depth():
    """1-D quadrature of the on-axis ray: p ramps linearly between voxel centres (trilinear interpolation)."""
    x = np.linspace(0.1, 8.0, 400001)
    p = np.interp(x, [3.8, 4.2, 4.6, 5.0], [0, 1, 1, 0])
    sigma = -np.log1p(-p * (1 - 1e-6)) / 0.4
    dx = x[1] - x[0]
    w = sigma * dx * np.exp(-np.cumsum(sigma * dx))
    return (w * x).sum()


def test_opaque_wall_depth_is_camera_z():
    out = render_volume(_wall(), None, RANGE, VIEW, K8, 8, 8)
    depth, alpha = out["depth"][0, 0], out["alpha"][0, 0]
    assert out["depth"].shape == (1, 1, 8, 8) and out["features"].shape == (1, 0, 8, 8)
    assert torch.all(alpha > 0.999)
    # The interpolated surface lies within half a voxel behind the face at x = 4.0, for every pixel: camera z,
    # not ray length (that would reach 4.0 / cos(26 deg) = 4.4 in the corners).
    assert torch.all((depth > 4.0) & (depth < 4.2))
    assert torch.allclose(out["depth_exp"], out["depth"] / out["alpha"])
    on_axis = render_volume(_wall(), None, RANGE, VIEW, K1, 1, 1, step=0.005)["depth"].item()
    assert on_axis == pytest.approx(_expected_wall_depth(), abs=2e-3)
    coarse = render_volume(_wall(), None, RANGE, VIEW, K1, 1, 1)["depth"].item()  # default step: 0.2 m
    assert coarse == pytest.approx(on_axis, abs=0.02)


def test_empty_volume_and_uniform_absorption():
    empty = render_volume(torch.zeros(23, 10, 10), None, RANGE, VIEW.float(), K8.float(), 8, 8)
    assert torch.all(empty["alpha"] == 0) and torch.all(empty["depth"] == 0) and torch.all(empty["depth_exp"] == 0)
    # p = 0.5 everywhere: each 0.4 m crossed lets half through; the axis ray travels 8.0 - 0.1 m (near plane).
    half = render_volume(torch.full((23, 10, 10), 0.5, dtype=torch.float64), None, RANGE, VIEW, K1, 1, 1)
    expected = 1 - (1 - 0.5 * (1 - 1e-6)) ** (7.9 / 0.4)
    assert half["alpha"].item() == pytest.approx(expected, rel=1e-9)
    half_occ = torch.full((23, 10, 10), 0.5, dtype=torch.float64)
    far = render_volume(half_occ, None, RANGE, VIEW, K1, 1, 1, near=1.0, far=3.0)
    assert far["alpha"].item() == pytest.approx(1 - (1 - 0.5 * (1 - 1e-6)) ** (2.0 / 0.4), rel=1e-9)


def test_features_composite_with_the_weights():
    occ = _wall() * 0.7
    x_centres = torch.linspace(-1.0, 7.8, 23, dtype=torch.float64)
    feats = torch.stack([torch.ones(23, 10, 10, dtype=torch.float64), x_centres[:, None, None].expand(23, 10, 10)])
    out = render_volume(occ, feats, RANGE, VIEW, K8, 8, 8)
    # feature 0 = 1 gives sum w = alpha; feature 1 = x (interpolated exactly) gives sum w x = sum w z = depth
    assert torch.allclose(out["features"][:, 0:1], out["alpha"])
    assert torch.allclose(out["features"][:, 1:2], out["depth"], atol=1e-6)
    assert torch.all(out["alpha"] < 1) and torch.all(out["alpha"] > 0.8)


def test_chunking_does_not_change_the_result():
    torch.manual_seed(0)
    occ = torch.rand(23, 10, 10, dtype=torch.float64) * 0.3
    feats = torch.rand(3, 23, 10, 10, dtype=torch.float64)
    a = render_volume(occ, feats, RANGE, VIEW, K8, 8, 8, chunk=7)
    b = render_volume(occ, feats, RANGE, VIEW, K8, 8, 8, chunk=1 << 20)
    for k in a:
        assert torch.allclose(a[k], b[k]), k


def test_gradients_flow_and_match_finite_differences():
    torch.manual_seed(0)
    occ = (torch.rand(23, 10, 10, dtype=torch.float64) * 0.5 + 0.2).requires_grad_()
    feats = torch.rand(2, 23, 10, 10, dtype=torch.float64, requires_grad=True)
    out = render_volume(occ, feats, RANGE, VIEW, K8, 8, 8, chunk=16)
    (out["depth"].sum() + out["features"].sum()).backward()
    assert occ.grad.abs().sum() > 0 and feats.grad.abs().sum() > 0 and torch.isfinite(occ.grad).all()

    small = (torch.rand(4, 3, 3, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    small_feats = torch.rand(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    box = (0.0, -1.5, -1.5, 4.0, 1.5, 1.5)
    K2 = torch.tensor([[2.0, 0, 0.5], [0, 2, 0.5], [0, 0, 1]], dtype=torch.float64)[None]

    def f(o, ft):
        r = render_volume(o, ft, box, VIEW, K2, 2, 2, step=0.3, chunk=3)
        return r["depth"], r["alpha"], r["features"]

    assert torch.autograd.gradcheck(f, (small, small_feats))
