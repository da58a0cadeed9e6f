"""Set-up step on GPU machines: load (building once, under a file lock) gsplat's CUDA kernels, check them on a
tiny render, and say which rasteriser ``--raster_backend auto`` will use.

    python -m tools.gsplat_build        # called by tools/setup_env.sh when nvidia-smi exists

Exit status 0 when gsplat is ready or when there is no CUDA device (the pure-PyTorch rasteriser runs, as it
should on a CPU); 1 when a CUDA device is there but gsplat cannot run on it (the message gives the fix).
"""
import sys
import time

import torch

from utils.raster_backend import FIX, build_lock_path, gsplat_status


def smoke_render(device):
    """One forward + backward of 100 Gaussians into 2 cameras: the kernels run, the gradients are finite."""
    from utils.rasterizer import rasterize
    g = torch.Generator(device="cpu").manual_seed(0)
    means = (torch.rand(100, 3, generator=g) * 4 - 2 + torch.tensor([0.0, 0.0, 6.0])).to(device).requires_grad_()
    quats = torch.tensor([1.0, 0, 0, 0], device=device).repeat(100, 1)
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]], device=device).repeat(2, 1, 1)
    out = rasterize(means, quats, torch.full((100, 3), 0.2, device=device), torch.full((100,), 0.6, device=device),
                    torch.rand(100, 4, generator=g).to(device), torch.eye(4, device=device).repeat(2, 1, 1), K, 64,
                    48, backend="gsplat")
    (out["depth"].mean() + out["features"].mean()).backward()
    if not (out["alpha"].max() > 0.5 and torch.isfinite(means.grad).all()):
        raise RuntimeError("gsplat ran but rendered nothing or gave non-finite gradients")


def main():
    if not torch.cuda.is_available():
        print("[setup] rasteriser: torch (pure PyTorch; torch sees no CUDA device)")
        return 0
    name = torch.cuda.get_device_name(0)
    t0 = time.perf_counter()
    ok, detail = gsplat_status()
    if ok:
        try:
            smoke_render(torch.device("cuda", 0))
        except Exception as e:
            ok, detail = False, f"gsplat's first render failed ({type(e).__name__}: {e})"
    if not ok:
        print(f"[setup] WARNING: {name} found, but gsplat cannot run: {detail}.\n[setup] Training with the default "
              f"--raster_backend auto will stop with this message. Fix: {FIX}", file=sys.stderr)
        return 1
    print(f"[setup] rasteriser: {detail} on {name} (ready in {time.perf_counter() - t0:.0f} s; kernels cached "
          f"next to {build_lock_path()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
