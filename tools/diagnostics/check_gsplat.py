"""Check the pure PyTorch rasteriser against gsplat (values, gradients, speed) on nuScenes-like scenes.

    python -m tools.diagnostics.check_gsplat --out check_gsplat.json          # on a CUDA machine with gsplat==1.5.3
    python -m tools.diagnostics.check_gsplat --device cpu --n_voxel 20000    # CPU: torch backend only (timings)

Scenes: "voxel" (Gaussians on a jittered subset of a 0.8 m grid over the Occ3D range, isotropic scale
0.1-0.2 m, identity rotation, like stage 2) and "random" (uniform positions, random rotations, anisotropic
scales). Cameras: a 6-camera ring like nuScenes (yaw 0, -55, -110, 180, 110, 55 degrees, 1.5 m up).
Each scene is rendered by each available backend at every size; the loss is a fixed random linear function of
depth, alpha and features. Printed and written to JSON: max |diff| and relative L2 (||a-b|| / ||b||, b = gsplat)
of the outputs and of the gradients w.r.t. means / scales / opacities / features, and median times (forward,
forward+backward) after warm-up.
"""
import argparse
import json
import math
import statistics
import time

import torch

from utils.rasterizer import gsplat_available, rasterize

YAWS_DEG = (0.0, -55.0, -110.0, 180.0, 110.0, 55.0)  # utils.constants.CAMS ring order


def nuscenes_like_rig(width, height, device):
    """6 cameras: viewmats (6,4,4) ego -> camera (OpenCV), Ks (6,3,3) at width x height (1600x900 scaled)."""
    viewmats, Ks = [], []
    for yaw in YAWS_DEG:
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        cam2ego = torch.eye(4, dtype=torch.float64)
        # columns: camera x (right), y (down), z (forward) in ego coordinates (x fwd, y left, z up).
        cam2ego[:3, :3] = torch.tensor([[s, 0.0, c], [-c, 0.0, s], [0.0, -1.0, 0.0]], dtype=torch.float64)
        cam2ego[:3, 3] = torch.tensor([1.0 * c + 1.0, 1.0 * s, 1.5], dtype=torch.float64)
        viewmats.append(torch.inverse(cam2ego))
        f = 1260.0 * width / 1600.0
        Ks.append(torch.tensor([[f, 0.0, width / 2 - 0.5], [0.0, 1260.0 * height / 900.0, height / 2 - 0.5],
                                [0.0, 0.0, 1.0]], dtype=torch.float64))
    return torch.stack(viewmats).float().to(device), torch.stack(Ks).float().to(device)


def make_scene(kind, n, n_feat, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "voxel":
        xs = torch.arange(-40.0, 40.0, 0.8)
        zs = torch.arange(-1.0, 5.4, 0.8)
        grid = torch.stack(torch.meshgrid(xs, xs, zs, indexing="ij"), -1).reshape(-1, 3)
        means = grid[torch.randperm(grid.shape[0], generator=g)[:n]] + 0.4
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(means.shape[0], 1)
        scales = (0.1 + 0.1 * torch.rand(means.shape[0], 1, generator=g)).repeat(1, 3)
        opac = torch.rand(means.shape[0], generator=g) ** 2  # many faint, some near 1
    else:
        lo, hi = torch.tensor([-40.0, -40.0, -1.0]), torch.tensor([40.0, 40.0, 5.4])
        means = lo + (hi - lo) * torch.rand(n, 3, generator=g)
        quats = torch.randn(n, 4, generator=g)
        scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.05), math.log(0.5), generator=g))
        opac = torch.rand(n, generator=g)
    feats = torch.randn(means.shape[0], n_feat, generator=g)
    return {k: v.to(device) for k, v in dict(means=means, quats=quats, scales=scales, opacities=opac,
                                               features=feats).items()}


def render(scene, viewmats, Ks, w, h, backend, with_grad):
    params = {k: v.detach().clone().requires_grad_(with_grad) for k, v in scene.items()}
    out = rasterize(params["means"], params["quats"], params["scales"], params["opacities"], params["features"],
                    viewmats, Ks, w, h, backend=backend)
    return params, out


def linear_loss(out, seed=1):
    g = torch.Generator().manual_seed(seed)
    loss = 0.0
    for key in ("depth", "alpha", "features"):
        wgt = torch.randn(out[key].shape, generator=g).to(out[key].device)
        loss = loss + (wgt * out[key]).sum()
    return loss


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def compare(a, b):
    a, b = a.detach().double(), b.detach().double()
    return {"max_abs": (a - b).abs().max().item() if a.numel() else 0.0,
            "rel_l2": ((a - b).norm() / b.norm().clamp(min=1e-30)).item(),
            "frac_gt_1e-3": ((a - b).abs() > 1e-3).double().mean().item() if a.numel() else 0.0}


def run_case(scene, viewmats, Ks, w, h, backends, device, repeats, warmup):
    res = {"times": {}, "diff": {}}
    outs, grads = {}, {}
    for be in backends:
        params, out = render(scene, viewmats, Ks, w, h, be, True)
        linear_loss(out).backward()
        outs[be] = out
        grads[be] = {k: p.grad for k, p in params.items()}

        def fwd():
            with torch.no_grad():
                render(scene, viewmats, Ks, w, h, be, False)

        def fwd_bwd():
            params, out = render(scene, viewmats, Ks, w, h, be, True)
            linear_loss(out).backward()

        res["times"][be] = {"forward_s": timed(fwd, device, repeats, warmup),
                            "forward_backward_s": timed(fwd_bwd, device, repeats, warmup)}
        res.setdefault("coverage", {})[be] = (outs[be]["alpha"] > 0.5).double().mean().item()
    if len(backends) == 2:
        ref, test = backends[1], backends[0]  # gsplat is the reference
        for key in ("depth", "alpha", "features"):
            res["diff"][key] = compare(outs[test][key], outs[ref][key])
        for key in ("means", "quats", "scales", "opacities", "features"):
            res["diff"]["grad_" + key] = compare(grads[test][key], grads[ref][key])
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n_voxel", type=int, default=50000, help="Gaussians of the voxel-like scene")
    p.add_argument("--n_random", type=int, default=20000, help="Gaussians of the random scene")
    p.add_argument("--n_feat", type=int, default=18, help="feature channels (18 = semantic logits)")
    p.add_argument("--sizes", default="90x160,180x320", help="comma separated HxW render sizes")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (gsplat JIT happens earlier)")
    p.add_argument("--out", default=None, help="write the results here as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    backends = ["torch"]
    if device.type == "cuda" and gsplat_available():
        backends.append("gsplat")
    else:
        print(f"gsplat part skipped: device {device}, gsplat importable: {gsplat_available()}")
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "backends": backends, "cases": {}}
    if "gsplat" in backends:
        import gsplat
        results["gsplat"] = gsplat.__version__
        t0 = time.perf_counter()  # first call compiles gsplat's CUDA code
        scene = make_scene("random", 100, 2, device)
        render(scene, *nuscenes_like_rig(32, 32, device), 32, 32, "gsplat", False)
        sync(device)
        results["gsplat_first_call_s"] = time.perf_counter() - t0
    for kind, n in (("voxel", args.n_voxel), ("random", args.n_random)):
        scene = make_scene(kind, n, args.n_feat, device)
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.lower().split("x"))
            viewmats, Ks = nuscenes_like_rig(w, h, device)
            name = f"{kind}_{scene['means'].shape[0]}_{h}x{w}"
            res = run_case(scene, viewmats, Ks, w, h, backends, device, args.repeats, args.warmup)
            results["cases"][name] = res
            print(f"== {name}")
            for be, t in res["times"].items():
                print(f"  {be:6s} forward {t['forward_s'] * 1e3:9.1f} ms   forward+backward "
                      f"{t['forward_backward_s'] * 1e3:9.1f} ms   coverage(alpha>0.5) {res['coverage'][be]:.3f}")
            for key, d in res["diff"].items():
                print(f"  {key:16s} max|diff| {d['max_abs']:.3e}  rel L2 {d['rel_l2']:.3e}  "
                      f"frac>1e-3 {d['frac_gt_1e-3']:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        print("wrote", args.out)
    return results


if __name__ == "__main__":
    main()
