"""Compile gsplat's CUDA kernels once (its first import JIT-builds them, ~1.5 min) before parallel jobs start, and
say which rasteriser the runs will get. Run on the GPU machine: python3 tools/device/warm_gsplat.py"""
import time

import torch

t0 = time.time()
try:
    from gsplat.cuda._backend import _C
    ok = _C is not None
except Exception as e:  # noqa: BLE001 - report anything the build raised
    ok, _C = False, e
print(f"gsplat CUDA backend {'ready' if ok else 'NOT available: ' + repr(_C)} after {time.time() - t0:.0f} s; "
      f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s)", flush=True)
