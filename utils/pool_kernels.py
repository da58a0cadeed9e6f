"""The SSIM's 3x3 box mean as two Triton kernels (``--ssim_pool_impl fused``): the same numbers as F.avg_pool2d.

Why. The photometric error's SSIM takes five 3x3 means a call (of x, y, x x, y y, x y) over every warped image of
the step, and torch's avg_pool2d is slow at them: on one H100 (2026-12-06, docs/results/runs/2026-12-06/
speed-h100-frozen, this project's network at the paper sizes) its backward took 0.73 ms a call for the 1.8e7
float32 values of the step's images (2 warped + 2 identity x 6 cameras x RGB at 386 x 642), ~0.2 TB/s where the
device moves ~3, and the forward 0.44 ms; 2.2 ms of backward a step.

``avg_pool3(x)``: (N, C, H, W) float32 -> (N, C, H - 2, W - 2), the mean of each 3x3 window at stride 1 without
padding (the SSIM pads by reflection first). Each output is the window's nine values summed one by one, rows outer
and columns inner, from zero, then divided by 9 (IEEE division); each input gradient is the sum, in the same order
of the windows that cover it, of their output gradient divided by 9. That is the order of PyTorch's CUDA kernels
(avg_pool2d_out_cuda_frame / avg_pool2d_backward_out_cuda_frame, count_include_pad, no divisor override), so on
CUDA the results should be those of F.avg_pool2d bit for bit: tools/bench/components.py's "ssim pool" rows compare
them on the GPU (H100, docs/results/runs/2026-12-06/speed-h100-pool-graphloss: relative difference 0 in output and
gradient, 0.78 -> 0.44 ms forward and backward). One launch a pass, as torch's, with each thread's nine loads
adjacent in memory.

Used for float32 CUDA tensors (and CPU tensors under Triton's interpreter, TRITON_INTERPRET=1, which is how
tests/test_pool_kernels.py checks them without a GPU); anything else, and code that torch.compile traces, gets
F.avg_pool2d (under ``--compile_loss`` inductor fuses the pools with the SSIM's other operators, as the occupancy
check of the compiled loss ran them, docs/results/runs/2026-12-06/compile-loss-occupancy-noise).
"""
import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 (no triton, or a broken one: avg_pool2d is used)
    triton = None

BLOCK = 1024  # output (forward) or input (backward) pixels per program


def available():
    return triton is not None


if triton is not None:
    @triton.jit
    def _plane_block(rows, cols, BLOCK: tl.constexpr):
        # program (plane p, block j): elements [j BLOCK, (j+1) BLOCK) of a rows x cols plane, their row and column
        p = tl.program_id(0).to(tl.int64)
        local = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        return p, local, local < rows * cols, local // cols, local % cols

    @triton.jit
    def _box3_fwd_kernel(x_ptr, y_ptr, H, W, OH, OW, BLOCK: tl.constexpr):
        # the outputs of a block of plane p
        p, local, mask, oh, ow = _plane_block(OH, OW, BLOCK)
        src = x_ptr + p * H * W + oh * W + ow
        s = tl.zeros((BLOCK,), dtype=tl.float32)
        for kh in tl.static_range(3):
            for kw in tl.static_range(3):
                s += tl.load(src + kh * W + kw, mask=mask, other=0.0)
        tl.store(y_ptr + p * OH * OW + local, tl.math.div_rn(s, tl.full((BLOCK,), 9.0, tl.float32)), mask=mask)

    @triton.jit
    def _box3_bwd_kernel(g_ptr, dx_ptr, H, W, OH, OW, BLOCK: tl.constexpr):
        # the input gradients of a block of plane p; the windows (ph, pw) that cover (ih, iw) are ph = ih - 2 .. ih,
        # pw = iw - 2 .. iw within the output, ascending
        p, local, mask, ih, iw = _plane_block(H, W, BLOCK)
        g = g_ptr + p * OH * OW
        nine = tl.full((BLOCK,), 9.0, tl.float32)
        acc = tl.zeros((BLOCK,), dtype=tl.float32)
        for kh in tl.static_range(3):
            ph = ih - 2 + kh
            for kw in tl.static_range(3):
                pw = iw - 2 + kw
                ok = mask & (ph >= 0) & (ph < OH) & (pw >= 0) & (pw < OW)
                acc += tl.math.div_rn(tl.load(g + ph * OW + pw, mask=ok, other=0.0), nine)
        tl.store(dx_ptr + p * H * W + local, acc, mask=mask)


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernels_apply(x):
    """Whether avg_pool3 runs the kernels for ``x`` (else F.avg_pool2d)."""
    if triton is None or x.dtype != torch.float32 or x.dim() != 4 or x.shape[-1] < 3 or x.shape[-2] < 3:
        return False
    if torch.compiler.is_compiling():
        return False
    return x.is_cuda or (_interpreting() and x.device.type == "cpu")


class _Box3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        N, C, H, W = x.shape
        x = x.contiguous()
        y = x.new_empty(N, C, H - 2, W - 2)
        _box3_fwd_kernel[(N * C, triton.cdiv((H - 2) * (W - 2), BLOCK))](x, y, H, W, H - 2, W - 2, BLOCK=BLOCK)
        ctx.shape = (N, C, H, W)
        return y

    @staticmethod
    def backward(ctx, g):
        N, C, H, W = ctx.shape
        g = g.contiguous()
        dx = g.new_empty(N, C, H, W)
        _box3_bwd_kernel[(N * C, triton.cdiv(H * W, BLOCK))](g, dx, H, W, H - 2, W - 2, BLOCK=BLOCK)
        return dx


def avg_pool3(x):
    """F.avg_pool2d(x, 3, stride=1) of a (N, C, H, W) tensor, through the kernels where ``kernels_apply``."""
    return _Box3.apply(x) if kernels_apply(x) else F.avg_pool2d(x, 3, stride=1)
