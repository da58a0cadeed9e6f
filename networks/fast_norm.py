"""Group norm for large 3D volumes at small batch: torch.nn.GroupNorm's function, computed with reductions that
spread over the whole GPU (speed option ``--group_norm_impl parallel``).

Why. PyTorch's CUDA group norm reduces each (sample, group) in ONE thread block and its backward each (sample,
channel) in one block: for the residual decoder's 32-channel volume in 8 groups at batch 1 (300 x 300 x 24 voxels,
8.6 M elements a group) that is 8 (32) blocks on a 132-multiprocessor GPU, each walking millions of elements one
load at a time. Measured on an H200 (docs/results/bench_step.md, issue 20): 34 ms forward + 10 ms backward a
step for the 5 group norms, a third of the step; it also forces NCDHW (a channels_last_3d volume is copied
first) and, under autocast, float32 (the bf16 volume is copied to float32 and back).

How. Every statistic is a per-(sample, channel) sum over the voxels, ``Tensor.sum`` / ``linalg.vector_norm`` with
float32 accumulation (on CUDA they read bf16 directly and split each sum over many blocks), in the input's memory
layout; a group's statistics are the sums of its channels'. Forward: two reads of x (sum, sum of squares) and one
fused multiply-add writing y = x a_c + b_c. Backward: sums of dy and of dy x (exact float32 products) per channel,
then dx = a_c dy + k_g x + m_g (the group norm gradient with its per-group coefficients folded in).

Numerics: statistics in float32, the variance as E[x^2] - mean^2 (clamped at 0; fine while |mean| / std stays far
below 1e3, as after a convolution); y and dx in the input's dtype, computed in float32 and rounded once. Under bf16
autocast torch's group norm runs in float32 and returns float32, so the two agree to bf16 rounding; in float32 they
agree to float32 rounding (tests/test_speed_options.py).
"""
import torch
import torch.nn as nn

from utils.speed import GROUP_NORM_IMPLS  # the choices of --group_norm_impl


def _per_channel(t, ndim):
    """(B, C) tensor -> (B, C, 1, ..., 1) broadcastable against a (B, C, *spatial) volume of ``ndim`` dims."""
    return t.view(*t.shape, *([1] * (ndim - 2)))


def _acc_dtype(x):
    """Accumulation dtype: float64 for float64 volumes, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _GroupNorm(torch.autograd.Function):
    """group_norm(x (B, C, *spatial), weight (C,) or None, bias (C,) or None) with float32 statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):
        with torch.autocast(x.device.type, enabled=False), torch.profiler.record_function("fast_norm::group_norm"):
            B, C = x.shape[:2]
            dims = tuple(range(2, x.dim()))
            n = x[0, 0].numel() * (C // groups)  # elements of one group
            acc = _acc_dtype(x)
            s1 = x.sum(dim=dims, dtype=acc)  # (B, C)
            s2 = torch.linalg.vector_norm(x, 2, dim=dims, dtype=acc).square()
            mean = s1.view(B, groups, -1).sum(-1) / n  # (B, G)
            var = (s2.view(B, groups, -1).sum(-1) / n - mean * mean).clamp(min=0)
            rstd = torch.rsqrt(var + eps)
            scale = rstd.repeat_interleave(C // groups, 1)  # (B, C)
            if weight is not None:
                scale = scale * weight.to(acc)
            shift = -mean.repeat_interleave(C // groups, 1) * scale
            if bias is not None:
                shift = shift + bias.to(acc)
            y = torch.empty_like(x)
            torch.addcmul(_per_channel(shift, x.dim()), x, _per_channel(scale, x.dim()), out=y)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.n, ctx.has_bias = groups, n, bias is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        G, n = ctx.groups, ctx.n
        with torch.autocast(x.device.type, enabled=False):
            B, C = x.shape[:2]
            cg = C // G
            dims = tuple(range(2, x.dim()))
            dy = dy.to(x.dtype)
            acc = _acc_dtype(x)
            s1 = dy.sum(dim=dims, dtype=acc)  # (B, C): sum of dy
            zero = torch.zeros(1, C, *([1] * len(dims)), dtype=acc, device=x.device)  # products in float32
            s2 = torch.addcmul(zero, dy, x).sum(dim=dims)  # sum of dy x (bf16 x bf16 is exact in float32)
            mean_c, rstd_c = mean.repeat_interleave(cg, 1), rstd.repeat_interleave(cg, 1)
            dxhat = rstd_c * (s2 - mean_c * s1)  # (B, C): sum of dy x_hat
            g = weight.to(acc) if weight is not None else torch.ones(C, dtype=acc, device=x.device)
            a_sum = (g * s1).view(B, G, cg).sum(-1)  # (B, G): sum over the group of gamma dy
            b_sum = (g * dxhat).view(B, G, cg).sum(-1)  # sum of gamma dy x_hat
            k = -rstd * rstd * b_sum / n  # dx = rstd gamma dy + k (x - mean) - rstd a_sum / n
            m = -rstd * a_sum / n - k * mean
            dx = None
            if ctx.needs_input_grad[0]:
                t = torch.addcmul(_per_channel(m.repeat_interleave(cg, 1), x.dim()), x,
                                  _per_channel(k.repeat_interleave(cg, 1), x.dim()))  # in acc
                dx = torch.empty_like(x)
                torch.addcmul(t, dy, _per_channel(rstd_c * g, x.dim()), out=dx)
            dw = dxhat.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
            db = s1.sum(0).to(weight.dtype if weight is not None else x.dtype) \
                if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


def group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    """torch.nn.functional.group_norm(x, groups, weight, bias, eps) for x (B, C, *spatial), through reductions
    over the voxels of each (sample, channel) (see the module docstring); differentiable w.r.t. x, weight, bias."""
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    return _GroupNorm.apply(x, weight, bias, groups, eps)


class ParallelGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) whose forward is ``group_norm`` above."""

    def forward(self, x):
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def make_group_norm(groups, channels, impl="torch"):
    """nn.GroupNorm(groups, channels) for ``impl`` torch, ParallelGroupNorm for parallel (--group_norm_impl)."""
    if impl not in GROUP_NORM_IMPLS:
        raise ValueError(f"unknown group norm implementation {impl!r} (expected {' or '.join(GROUP_NORM_IMPLS)})")
    return (ParallelGroupNorm if impl == "parallel" else nn.GroupNorm)(groups, channels)
