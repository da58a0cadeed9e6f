"""Set-up step on GPU machines: load (building once, under a file lock) gsplat's CUDA kernels, check them on a
tiny render, and say which rasteriser ``--raster_backend auto`` will use.

    python -m tools.gsplat_build        # called by tools/setup_env.sh when nvidia-smi exists
    python -m tools.gsplat_build --save kernels/gsplat_cuda.so.gz   # also keep the built module (GSPLAT_KERNELS)

Exit status 0 when gsplat is ready or when there is no CUDA device (the pure-PyTorch rasteriser runs, as it
should on a CPU); 1 when a CUDA device is there but gsplat cannot run on it (the message gives the fix).
"""
import argparse
import gzip
import os
import shutil
import sys
import time

import torch

from utils.raster_backend import FIX, build_lock_path, gsplat_status, prebuilt_kernels_path


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


def save_kernels(out):
    """Copy the built module to ``out`` (gzipped when it ends in .gz) for GSPLAT_KERNELS on another machine."""
    src = os.environ.get("GSPLAT_KERNELS") or prebuilt_kernels_path()
    if not src:
        print("[setup] --save: no built gsplat_cuda.so found in torch's extension cache", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    reader = gzip.open if src.endswith(".gz") and not out.endswith(".gz") else open
    writer = gzip.open if out.endswith(".gz") and not src.endswith(".gz") else open
    with reader(src, "rb") as f, writer(out + ".tmp", "wb") as g:
        shutil.copyfileobj(f, g)
    os.replace(out + ".tmp", out)
    print(f"[setup] gsplat kernels saved: {out} ({os.path.getsize(out) / 2 ** 20:.1f} MiB; GSPLAT_KERNELS={out} "
          "loads them on a machine of the same torch, CUDA and GPU)")
    return 0


def main(argv=()):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", default=None, help="also copy the built kernels module here (.gz: gzipped)")
    args = ap.parse_args(list(argv))
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
    return save_kernels(args.save) if args.save else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
