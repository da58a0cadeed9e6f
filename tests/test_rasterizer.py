"""utils/rasterizer.py, torch backend: against a naive dense renderer, analytic cases, gradients, edge cases."""
import argparse
import math

import pytest
import torch

from utils import rasterizer as R
from utils.rasterizer import rasterize

DT = torch.float64


def naive_render(means, quats, scales, opac, feats, viewmats, Ks, W, H, near=0.1, far=1e10):
    """Deliberately plain: every Gaussian against every pixel, Gaussians walked one by one front to back.

    Same rules as the module docstring, written independently (pixel centres at integer coordinates of K).
    """
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, v = q[:, :1, None], q[:, 1:]
    skew = torch.zeros(len(q), 3, 3, dtype=q.dtype)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    skew = skew - skew.transpose(1, 2)
    rot = (w * w - (v * v).sum(-1)[:, None, None]) * torch.eye(3, dtype=q.dtype) \
        + 2 * v[:, :, None] * v[:, None, :] + 2 * w * skew
    cov3 = rot @ torch.diag_embed(scales ** 2) @ rot.transpose(1, 2)
    vv, uu = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
    pix = torch.stack([uu.flatten(), vv.flatten()], -1)  # (P,2) pixel centres
    outs, n_stopped = [], 0
    for c in range(len(viewmats)):
        Rc, tc = viewmats[c, :3, :3], viewmats[c, :3, 3]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        gx, gy = cx + 0.5, cy + 0.5  # the principal point in gsplat's pixel frame (for the clip limits)
        img = torch.zeros(H * W, feats.shape[1] + 2, dtype=DT)
        T = torch.ones(H * W, dtype=DT)
        done = torch.zeros(H * W, dtype=torch.bool)
        zs = (means @ Rc.T + tc)[:, 2]
        for i in torch.sort(zs.detach(), stable=True).indices.tolist():
            x, y, z = Rc @ means[i] + tc
            if not (near <= z <= far) or opac[i] < 1 / 255:
                continue
            ux = z * torch.clamp(x / z, -(gx / fx + 0.15 * W / fx), (W - gx) / fx + 0.15 * W / fx)
            uy = z * torch.clamp(y / z, -(gy / fy + 0.15 * H / fy), (H - gy) / fy + 0.15 * H / fy)
            J = torch.stack([torch.stack([fx / z, 0 * z, -fx * ux / z ** 2]),
                             torch.stack([0 * z, fy / z, -fy * uy / z ** 2])])
            cov2 = J @ Rc @ cov3[i] @ Rc.T @ J.T + 0.3 * torch.eye(2, dtype=DT)
            if torch.det(cov2) <= 0:
                continue
            d = torch.stack([fx * x / z + cx, fy * y / z + cy]) - pix
            sigma = 0.5 * ((d @ torch.linalg.inv(cov2)) * d).sum(-1)
            alpha = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
            hit = (alpha >= 1 / 255) & (sigma >= 0) & ~done
            stop = hit & (T * (1 - alpha) <= 1e-4)
            draw = hit & ~stop
            done = done | stop
            f = torch.cat([feats[i], z[None], torch.ones(1, dtype=DT)])
            img = img + torch.where(draw[:, None], (alpha * T)[:, None] * f, torch.zeros_like(img))
            T = torch.where(draw, T * (1 - alpha), T)
        outs.append(img.T.reshape(-1, H, W))
        n_stopped += int(done.sum())
    out = torch.stack(outs)
    D = feats.shape[1]
    return {"features": out[:, :D], "depth": out[:, D:D + 1], "alpha": out[:, D + 1:], "n_stopped": n_stopped}


def look_at_cams(n_cams, gen):
    """Cameras around the origin looking roughly at it: viewmats (C,4,4), Ks (C,3,3) for 20x16 images."""
    vms, Ks = [], []
    for c in range(n_cams):
        yaw = 0.3 * c + 0.1 * torch.randn(1, generator=gen, dtype=DT).item()
        cy_, sy = math.cos(yaw), math.sin(yaw)
        rot = torch.tensor([[cy_, 0, -sy], [0, 1, 0], [sy, 0, cy_]], dtype=DT)  # world -> cam rotation
        vm = torch.eye(4, dtype=DT)
        vm[:3, :3] = rot
        vm[:3, 3] = torch.tensor([0.2 * c, -0.1, 0.3], dtype=DT)
        vms.append(vm)
        Ks.append(torch.tensor([[18.0 + c, 0, 9.3], [0, 19.0, 7.6], [0, 0, 1]], dtype=DT))
    return torch.stack(vms), torch.stack(Ks)


def random_scene(n, n_feat, gen, cluster=True):
    means = torch.randn(n, 3, generator=gen, dtype=DT) * torch.tensor([1.5, 1.0, 1.0], dtype=DT) \
        + torch.tensor([0, 0, 4.0], dtype=DT)
    means[:3, 2] = torch.tensor([-2.0, 0.05, -0.5], dtype=DT)  # behind the cameras / too near
    quats = torch.randn(n, 4, generator=gen, dtype=DT)
    scales = 0.05 + 0.4 * torch.rand(n, 3, generator=gen, dtype=DT)
    opac = torch.rand(n, generator=gen, dtype=DT)
    opac[::4] = 0.999  # opaque ones so that some pixels stop early
    if cluster:  # six near-opaque Gaussians in a clump
        means[4:10] = torch.tensor([0.3, 0.0, 4.0], dtype=DT) + 0.2 * torch.randn(6, 3, generator=gen, dtype=DT)
        opac[4:10], scales[4:10] = 0.995, 0.6
    opac[1] = 0.002  # below 1/255: culled
    feats = torch.randn(n, n_feat, generator=gen, dtype=DT)
    return means, quats, scales, opac, feats


def _leaves(*xs):
    return [x.detach().clone().requires_grad_(True) for x in xs]


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_naive_values_and_gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    vms, Ks = look_at_cams(2, gen)
    scene = random_scene(30, 3, gen)
    W, H = 20, 16
    a = _leaves(*scene)
    b = _leaves(*scene)
    out = rasterize(*a, vms, Ks, W, H, backend="torch")
    ref = naive_render(*b, vms, Ks, W, H)
    assert ref["n_stopped"] > 10 and (ref["alpha"] > 1 / 255).float().mean() > 0.3  # early stops, not empty
    for key in ("depth", "alpha", "features"):
        assert out[key].shape == ref[key].shape
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["depth_exp"], out["depth"] / out["alpha"].clamp(min=1e-10))
    wgen = torch.Generator().manual_seed(7)
    ws = {k: torch.randn(ref[k].shape, generator=wgen, dtype=DT) for k in ("depth", "alpha", "features")}
    sum(((ws[k] * out[k]).sum() for k in ws)).backward()
    sum(((ws[k] * ref[k]).sum() for k in ws)).backward()
    for name, x, y in zip(("means", "quats", "scales", "opacities", "features"), a, b):
        assert x.grad.abs().max() > 0, name
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-6, msg=name)


def test_early_stop_rule_against_naive():
    """Many opaque Gaussians on one ray: the pixel stops before the Gaussian that takes T to <= 1e-4."""
    K = torch.tensor([[[20.0, 0, 5], [0, 20, 5], [0, 0, 1]]], dtype=DT)
    n = 6
    means = torch.zeros(n, 3, dtype=DT)
    means[:, 2] = torch.arange(n, dtype=DT) + 2.0
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=DT).repeat(n, 1)
    scales = torch.full((n, 3), 0.2, dtype=DT)
    opac = torch.full((n,), 0.98, dtype=DT)
    feats = torch.arange(n, dtype=DT)[:, None]
    out = rasterize(means, quats, scales, opac, feats, torch.eye(4, dtype=DT)[None], K, 11, 11, backend="torch")
    # centre pixel: T = 1, 0.02, 4e-4, then 8e-6 <= 1e-4 stops -> 2 Gaussians drawn.
    assert out["alpha"][0, 0, 5, 5].item() == pytest.approx(1 - 0.02 ** 2, abs=1e-12)
    assert out["depth"][0, 0, 5, 5].item() == pytest.approx(0.98 * 2 + 0.02 * 0.98 * 3, abs=1e-12)
    ref = naive_render(means, quats, scales, opac, feats, torch.eye(4, dtype=DT)[None], K, 11, 11)
    for key in ("depth", "alpha", "features"):
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-9)


def test_single_gaussian_analytic():
    f, z, s, o = 50.0, 5.0, 0.1, 0.7
    K = torch.tensor([[[f, 0, 10], [0, f, 8], [0, 0, 1]]], dtype=DT)
    one = dict(quats=torch.tensor([[1.0, 0, 0, 0]], dtype=DT), scales=torch.full((1, 3), s, dtype=DT),
               opacities=torch.tensor([o], dtype=DT), features=torch.tensor([[2.0, -1.0]], dtype=DT))
    out = rasterize(torch.tensor([[0, 0, z]], dtype=DT), one["quats"], one["scales"], one["opacities"],
                    one["features"], torch.eye(4, dtype=DT)[None], K, 20, 16, backend="torch")
    alpha, depth = out["alpha"][0, 0], out["depth"][0, 0]
    assert alpha.argmax().item() == 8 * 20 + 10  # projected centre (10, 8) -> column 10, row 8
    assert alpha[8, 10].item() == pytest.approx(o, abs=1e-12)
    assert depth[8, 10].item() == pytest.approx(o * z, abs=1e-12)
    assert out["depth_exp"][0, 0, 8, 10].item() == pytest.approx(z, abs=1e-12)
    torch.testing.assert_close(out["features"][0, :, 8, 10], torch.tensor([2.0, -1.0], dtype=DT) * o)
    var = (f * s / z) ** 2 + 0.3  # EWA at the optical axis + the 0.3 px low-pass
    assert alpha[8, 11].item() == pytest.approx(o * math.exp(-0.5 / var), abs=1e-12)
    assert alpha[10, 10].item() == pytest.approx(o * math.exp(-0.5 * 4 / var), abs=1e-12)
    # nothing below 1/255, and the support is the ellipse sigma <= ln(255 o)
    r2 = 2 * var * math.log(255 * o)
    vv, uu = torch.meshgrid(torch.arange(16, dtype=DT), torch.arange(20, dtype=DT), indexing="ij")
    inside = (uu - 10) ** 2 + (vv - 8) ** 2 <= r2
    assert torch.equal(alpha > 0, inside)


def test_two_gaussians_occlusion():
    K = torch.tensor([[[40.0, 0, 6], [0, 40, 6], [0, 0, 1]]], dtype=DT)
    means = torch.tensor([[0, 0, 6.0], [0, 0, 3.0]], dtype=DT)  # back one first in the input
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=DT).repeat(2, 1)
    scales = torch.full((2, 3), 0.1, dtype=DT)
    opac = torch.tensor([0.5, 0.6], dtype=DT)
    feats = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=DT)
    vm = torch.eye(4, dtype=DT)[None]
    out = rasterize(means, quats, scales, opac, feats, vm, K, 13, 13, backend="torch")
    assert out["alpha"][0, 0, 6, 6].item() == pytest.approx(1 - 0.4 * 0.5, abs=1e-12)
    assert out["depth"][0, 0, 6, 6].item() == pytest.approx(0.6 * 3 + 0.4 * 0.5 * 6, abs=1e-12)
    torch.testing.assert_close(out["features"][0, :, 6, 6], torch.tensor([0.6, 0.2], dtype=DT))
    swapped = rasterize(means.flip(0), quats, scales, opac.flip(0), feats.flip(0), vm, K, 13, 13, backend="torch")
    for key in ("depth", "alpha", "features"):
        torch.testing.assert_close(out[key], swapped[key], rtol=0, atol=1e-12)


def test_behind_near_far_culled():
    K = torch.tensor([[[40.0, 0, 6], [0, 40, 6], [0, 0, 1]]], dtype=DT)
    means = torch.tensor([[0, 0, -5.0], [0, 0, 0.05], [0, 0, 50.0]], dtype=DT)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=DT).repeat(3, 1)
    scales = torch.full((3, 3), 0.5, dtype=DT)
    opac = torch.full((3,), 0.9, dtype=DT, requires_grad=True)
    out = rasterize(means, quats, scales, opac, None, torch.eye(4, dtype=DT)[None], K, 13, 13,
                    near=0.1, far=20.0, backend="torch")
    assert out["alpha"].abs().max() == 0 and out["depth"].abs().max() == 0
    assert out["features"].shape == (1, 0, 13, 13)
    out["alpha"].sum().backward()
    assert torch.equal(opac.grad, torch.zeros(3, dtype=DT))
    far_ok = rasterize(means, quats, scales, opac, None, torch.eye(4, dtype=DT)[None], K, 13, 13,
                       near=0.1, far=60.0, backend="torch")
    assert far_ok["alpha"][0, 0, 6, 6].item() == pytest.approx(0.9, abs=1e-12)


def test_offset_camera_pinhole_pixel():
    """A rotated, translated camera sees the Gaussian at K (R p + t), pixel centres at integers."""
    yaw = 0.4
    cam2world = torch.eye(4, dtype=DT)
    cam2world[:3, :3] = torch.tensor([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0],
                                      [-math.sin(yaw), 0, math.cos(yaw)]], dtype=DT)
    cam2world[:3, 3] = torch.tensor([1.0, 0.5, -2.0], dtype=DT)
    K = torch.tensor([[60.0, 0, 15.5], [0, 55.0, 11.0], [0, 0, 1]], dtype=DT)
    u, v, z = 21, 7, 4.0
    p_cam = torch.linalg.solve(K, torch.tensor([u * z, v * z, z], dtype=DT))
    p_world = (cam2world @ torch.cat([p_cam, torch.ones(1, dtype=DT)]))[:3]
    out = rasterize(p_world[None], torch.tensor([[1.0, 0, 0, 0]], dtype=DT), torch.full((1, 3), 0.05, dtype=DT),
                    torch.tensor([0.9], dtype=DT), None, torch.inverse(cam2world)[None], K[None], 32, 24,
                    backend="torch")
    alpha = out["alpha"][0, 0]
    assert divmod(alpha.argmax().item(), 32) == (v, u)
    assert alpha[v, u].item() == pytest.approx(0.9, abs=1e-12)
    assert out["depth"][0, 0, v, u].item() == pytest.approx(0.9 * z, abs=1e-12)


def test_gradcheck_small():
    gen = torch.Generator().manual_seed(3)
    vms, Ks = look_at_cams(1, gen)
    means, quats, scales, opac, feats = random_scene(8, 2, gen, cluster=False)
    Ks = Ks * torch.tensor([0.5, 0.5, 1.0], dtype=DT)[:, None]  # 10x8 image
    Ks[:, 2, 2] = 1

    def f(m, q, s, o, ft):
        out = rasterize(m, q, s, o, ft, vms, Ks, 10, 8, backend="torch")
        return out["depth"], out["alpha"], out["features"]

    assert torch.autograd.gradcheck(f, tuple(_leaves(means, quats, scales, opac, feats)), eps=1e-6, atol=1e-5,
                                    fast_mode=True)


def test_composite_gradcheck():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(12, generator=gen, dtype=DT, requires_grad=True)
    F = torch.randn(4, 3, generator=gen, dtype=DT, requires_grad=True)
    k = torch.randint(0, 4, (12,), generator=gen)
    pix = torch.randint(0, 5, (12,), generator=gen)
    assert torch.autograd.gradcheck(lambda w, F: R._composite(w, k, pix, F, 5), (w, F))


def test_chunking_and_features_none_consistent():
    gen = torch.Generator().manual_seed(5)
    vms, Ks = look_at_cams(2, gen)
    scene = random_scene(40, 4, gen)
    big = rasterize(*scene, vms, Ks, 20, 16, backend="torch")
    small = rasterize(*scene, vms, Ks, 20, 16, backend="torch", max_pairs=7)
    nofeat = rasterize(*scene[:4], None, vms, Ks, 20, 16, backend="torch")
    for key in ("depth", "alpha", "features"):
        torch.testing.assert_close(big[key], small[key], rtol=0, atol=1e-12)
    for key in ("depth", "alpha"):
        torch.testing.assert_close(big[key], nofeat[key], rtol=0, atol=1e-12)


def test_empty_inputs():
    vm, K = torch.eye(4)[None].repeat(6, 1, 1), torch.eye(3)[None].repeat(6, 1, 1)
    means = torch.zeros(0, 3, requires_grad=True)
    out = rasterize(means, torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 5), vm, K, 7, 5)
    assert out["depth"].shape == (6, 1, 5, 7) and out["features"].shape == (6, 5, 5, 7)
    assert out["alpha"].abs().sum() == 0
    out["depth"].sum().backward()
    assert means.grad.shape == (0, 3)


def test_float32_and_auto_backend():
    gen = torch.Generator().manual_seed(2)
    vms, Ks = look_at_cams(2, gen)
    scene = random_scene(30, 3, gen)
    out32 = rasterize(*(x.float() for x in scene), vms.float(), Ks.float(), 20, 16)  # auto -> torch on CPU
    out64 = rasterize(*scene, vms, Ks, 20, 16, backend="torch")
    assert out32["alpha"].dtype == torch.float32
    for key in ("depth", "alpha", "features"):
        torch.testing.assert_close(out32[key].double(), out64[key], rtol=0, atol=1e-3)


def test_backend_selection_and_args():
    assert R.resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        R.resolve_backend("gsplat", torch.device("cpu"))
    with pytest.raises(ValueError):
        R.resolve_backend("cuda", torch.device("cpu"))
    p = argparse.ArgumentParser()
    R.add_args(p)
    assert p.parse_args([]).raster_backend == "auto"
    assert p.parse_args(["--raster_backend", "torch"]).raster_backend == "torch"


def test_check_gsplat_tool_runs_on_cpu(tmp_path):
    from tools.diagnostics.check_gsplat import main
    out = tmp_path / "r.json"
    res = main(["--device", "cpu", "--n_voxel", "400", "--n_random", "100", "--n_feat", "3", "--sizes", "9x16",
                "--repeats", "1", "--warmup", "0", "--out", str(out)])
    assert out.exists() and res["backends"] == ["torch"]
    case = res["cases"]["voxel_400_9x16"]
    assert case["times"]["torch"]["forward_s"] > 0
