"""Geometry and photometric losses run in float32 whatever autocast (``--amp``) says.

Under bf16 autocast a 4x4 matmul keeps 8 mantissa bits. Measured on a synthetic street (ego at x = 128 m,
y = 187 m): the relative ego motion inv(E_prev) E_cur of two recorded global poses, truly 1.64 m forward, came out
as (0.93, 0.76, 0) m, so stage 2 trained with ``--pose gt`` saw the wrong motion; and on exact depth and pose the
temporal loss was 0.019 instead of 0.010 and the GSP loss 0.066 instead of 0.040 (pixel coordinates off by up to a
pixel, SSIM variances E[x^2] - E[x]^2 lost to cancellation). ``tools/diagnostics/gsp_landscape.py --amp bf16`` and
``tests/test_precision.py`` check it. Only the networks should run in low precision.
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
    tuples) cast to float32 (with or without autocast). float32 / float64 arguments are passed unchanged."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        args, kwargs = _to_fp32(args), {k: _to_fp32(v) for k, v in kwargs.items()}
        if not any(torch.is_autocast_enabled(d) for d in ("cuda", "cpu")):
            return fn(*args, **kwargs)
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)
    return run
