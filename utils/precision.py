"""Geometry and photometric losses run in float32 whatever autocast (``--amp``) says.

Under bf16 autocast a 3x3 matmul keeps 8 mantissa bits: a pixel coordinate of 300 is off by about one pixel and
SSIM's variances (E[x^2] - E[x]^2) cancel to noise. ``tools/gsp_landscape.py --amp bf16`` shows what that does:
the temporal loss at the true depth and pose rises from 0.010 to 0.087 and its minimum moves to 1.7x the true
depth, so training drifts to far depth. Only the networks should run in low precision.
"""
import functools

import torch

_LOW = (torch.float16, torch.bfloat16)


def _to_fp32(x):
    if torch.is_tensor(x) and x.dtype in _LOW:
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x


def full_precision(fn):
    """Decorator: run ``fn`` with autocast off and its float16 / bfloat16 tensor arguments (also inside lists and
    tuples) cast to float32. A no-op outside autocast and for float32 / float64 inputs."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        on = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
        args, kwargs = _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}
        if not on:
            return fn(*args, **kwargs)
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)
    return run
