"""utils/pool_kernels.py: the SSIM's 3x3 means as Triton kernels (--ssim_pool_impl fused), checked in Triton's
interpreter on the CPU (TRITON_INTERPRET=1 is read when the kernels are defined: hence a fresh process) against the
order of sums of PyTorch's CUDA avg_pool2d written out in torch (equal bit for bit) and against F.avg_pool2d."""
import os

import pytest
import torch
import torch.nn.functional as F

from tests.triton_interpreter import run_interpreted
from utils import pool_kernels
from utils.losses import SSIM, set_ssim_pool


SCRIPT = r"""
import json
import torch
import torch.nn.functional as F
from utils import pool_kernels
from utils.losses import SSIM, set_ssim_pool


def in_cuda_order(x):  # avg_pool2d_out_cuda_frame: the window summed rows outer, columns inner, from 0; / 9
    OH, OW = x.shape[-2] - 2, x.shape[-1] - 2
    s = torch.zeros(*x.shape[:-2], OH, OW)
    for kh in range(3):
        for kw in range(3):
            s = s + x[..., kh:kh + OH, kw:kw + OW]
    return s / 9


def grad_in_cuda_order(g, H, W):  # avg_pool2d_backward_out_cuda_frame: each covering window's g / 9, ascending
    gp = F.pad(g / 9, (2, 2, 2, 2))
    acc = torch.zeros(*g.shape[:-2], H, W)
    for kh in range(3):
        for kw in range(3):
            acc = acc + gp[..., kh:kh + H, kw:kw + W]
    return acc


out = {}
gen = torch.Generator().manual_seed(0)
for shape in ((2, 3, 9, 13), (1, 1, 3, 3), (1, 2, 40, 37)):
    x = torch.rand(shape, generator=gen).requires_grad_()
    g = torch.randn(shape[0], shape[1], shape[2] - 2, shape[3] - 2, generator=gen)
    assert pool_kernels.kernels_apply(x) and not pool_kernels.kernels_apply(x.double())
    y = pool_kernels.avg_pool3(x)
    y.backward(g)
    ref = F.avg_pool2d(x.detach(), 3, stride=1)
    key = "x".join(map(str, shape))
    out[key] = {"fwd_equal": bool(torch.equal(y.detach(), in_cuda_order(x.detach()))),
                "bwd_equal": bool(torch.equal(x.grad, grad_in_cuda_order(g, *shape[2:]))),
                "fwd_vs_torch": float((y.detach() - ref).abs().max()),
                "bwd_vs_torch": float((x.grad - torch.autograd.grad(F.avg_pool2d(x, 3, stride=1), x, g)[0])
                                      .abs().max())}
a = torch.rand(4, 3, 20, 24, generator=gen).requires_grad_()
b = torch.rand(4, 3, 20, 24, generator=gen)
res = {}
for impl in ("torch", "fused"):
    set_ssim_pool(impl)
    a.grad = None
    s = SSIM()(a, b)
    s.sum().backward()
    res[impl] = (s.detach(), a.grad.clone())
out["ssim"] = {"out": float((res["fused"][0] - res["torch"][0]).abs().max()),
               "grad": float((res["fused"][1] - res["torch"][1]).abs().max())}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(not pool_kernels.available(), reason="triton is not installed")
def test_box_kernels_sum_in_avg_pool2d_cuda_order():
    out = run_interpreted(SCRIPT)
    for key, v in out.items():
        if key == "ssim":  # the SSIM with the kernels against avg_pool2d's (the CPU's own order): float32 rounding
            assert v["out"] < 1e-6 and v["grad"] < 1e-6, v
            continue
        assert v["fwd_equal"] and v["bwd_equal"], (key, v)
        assert v["fwd_vs_torch"] < 1e-6 and v["bwd_vs_torch"] < 1e-6, (key, v)


def test_box_falls_back_to_avg_pool2d_off_cuda():
    """Without CUDA (and without the interpreter) avg_pool3 is F.avg_pool2d itself; so is the SSIM with the fused
    pool; an unknown --ssim_pool_impl is refused by name."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter is on in this process")
    x = torch.rand(2, 3, 8, 10, requires_grad=True)
    assert not pool_kernels.kernels_apply(x)
    assert torch.equal(pool_kernels.avg_pool3(x), F.avg_pool2d(x, 3, stride=1))
    y = torch.rand(2, 3, 8, 10)
    try:
        set_ssim_pool("fused")
        fused = SSIM()(x, y)
    finally:
        set_ssim_pool("torch")
    assert torch.equal(fused, SSIM()(x, y))
    with pytest.raises(ValueError, match="--ssim_pool_impl"):
        set_ssim_pool("box")
