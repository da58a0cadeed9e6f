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

``gemm`` (``--group_norm_impl gemm``, and ``--batch_norm_impl gemm`` for the authors' hourglass): the same function,
its per-(sample, channel) sums read by the tensor cores as matrix products: chunks of the volume as (C, K) matrices
U, V give sum_k U V^T (C x C, float32 accumulation and output) whose diagonal is sum u v, and U 1 the sums. The
forward's two statistics and the backward's two are then one pass of matrix products each over bytes the
elementwise passes read anyway; the products' arithmetic (2 C^2 per element: 2 k for C = 32) is nothing to tensor
cores. Why: the reductions of ``parallel`` ran at 0.29 TB/s of the 4.1 the copy reaches (one H200, the component
benchmark of 2026-12-02); the batch norm of torch NDHWC at 0.23 TB/s forward and backward.

Numerics: statistics in float32, the variance as E[x^2] - mean^2 (clamped at 0; fine while |mean| / std stays far
below 1e3, as after a convolution); y and dx in the input's dtype, computed in float32 and rounded once. Under bf16
autocast torch's group norm runs in float32 and returns float32, so the two agree to bf16 rounding; in float32 they
agree to float32 rounding (tests/test_speed_options.py).
"""
import os
import warnings

import torch
import torch.nn as nn

from networks import norm_kernels
from utils.speed import BATCH_NORM_IMPLS, GROUP_NORM_IMPLS  # the choices of --group_norm_impl, --batch_norm_impl


def _per_channel(t, ndim):
    """(B, C) tensor -> (B, C, 1, ..., 1) broadcastable against a (B, C, *spatial) volume of ``ndim`` dims."""
    return t.view(*t.shape, *([1] * (ndim - 2)))


def _acc_dtype(x):
    """Accumulation dtype: float64 for float64 volumes, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


GEMM_CHUNK = 8192  # voxels per matrix of the batched products (K); the rest of the volume is one more product
_OUT_DTYPE = [True]  # whether torch.bmm takes out_dtype (set False at its first refusal)


def _mm_acc(a, b):
    """Batched a @ b (S, m, k) x (S, k, n) with the accumulation dtype's result: bf16 / fp16 on CUDA through the
    tensor cores, accumulated and returned in float32 (torch's ``out_dtype``); otherwise in float32 (float64 for
    float64 inputs; on the CPU computed in float64)."""
    acc = _acc_dtype(a)
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16) and _OUT_DTYPE[0]:
        try:
            return torch.bmm(a, b, out_dtype=acc)
        except (TypeError, RuntimeError) as err:  # a torch without bmm's out_dtype: float32 copies (slower)
            _OUT_DTYPE[0] = False
            warnings.warn(f"--*_norm_impl gemm: torch.bmm(out_dtype=float32) is not available here ({err}); the "
                          "sums run on float32 copies of the volume (correct, slower)")
    if not a.is_cuda:  # the CPU's float32 bmm sums each long row in order (an error of up to ~1e-3 after the norms'
        # cancellation, seen with torch 2.14): float64 there, rounded to the accumulation dtype
        return torch.bmm(a.double(), b.double()).to(acc)
    return torch.bmm(a.to(acc), b.to(acc))


def _chunks(x_b, channels_last):
    """One sample's volume as (S, C, K) matrices (views, no copy) and the rest as (1, C, T) (or None): x_b is
    (C, *spatial), contiguous (``channels_last`` False) or NDHWC."""
    C = x_b.shape[0]
    if channels_last:
        rows = x_b.permute(*range(1, x_b.dim()), 0).reshape(-1, C)  # (M, C), a view of an NDHWC volume
        M = rows.shape[0]
        S = M // GEMM_CHUNK
        main = rows[:S * GEMM_CHUNK].view(S, GEMM_CHUNK, C).transpose(1, 2) if S else None
        rest = rows[S * GEMM_CHUNK:].t()[None] if M % GEMM_CHUNK else None
    else:
        cols = x_b.reshape(C, -1)  # (C, M)
        M = cols.shape[1]
        S = M // GEMM_CHUNK
        main = cols[:, :S * GEMM_CHUNK].view(C, S, GEMM_CHUNK).transpose(0, 1) if S else None
        rest = cols[:, S * GEMM_CHUNK:][None] if M % GEMM_CHUNK else None
    return [m for m in (main, rest) if m is not None]


def _like(t, x):
    """t in x's dtype and memory layout (no copy when it already is)."""
    fmt = torch.channels_last_3d if _is_channels_last(x) else torch.contiguous_format
    return t.to(x.dtype).contiguous(memory_format=fmt)


def _is_channels_last(x):
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def channel_sums_gemm(u, v):
    """(sum u, sum u v) over the voxels of each (sample, channel), (B, C) each in float32 (float64 for float64):
    u, v (B, C, *spatial) of one dtype; v is brought to u's layout (a copy only when they differ)."""
    cl = _is_channels_last(u)
    fmt = torch.channels_last_3d if cl else torch.contiguous_format
    u, v = u.contiguous(memory_format=fmt), v.contiguous(memory_format=fmt)
    B, C = u.shape[:2]
    acc = _acc_dtype(u)
    s1 = torch.zeros(B, C, dtype=acc, device=u.device)
    s2 = torch.zeros(B, C, dtype=acc, device=u.device)
    for b in range(B):
        for cu, cv in zip(_chunks(u[b], cl), _chunks(v[b], cl)):
            ones = torch.ones(1, cu.shape[2], 1, dtype=u.dtype, device=u.device).expand(cu.shape[0], -1, -1)
            s1[b] += _mm_acc(cu, ones).sum(0)[:, 0]
            s2[b] += _mm_acc(cu, cv.transpose(1, 2)).sum(0).diagonal()
    return s1, s2


def _fused(x, mode):
    """Whether ``mode`` fused runs its Triton kernels on x (networks/norm_kernels.py): a CUDA volume (or any, in
    Triton's interpreter) contiguous or channels_last_3d; otherwise the torch operators of ``parallel`` serve."""
    return (mode == "fused" and norm_kernels.available() and norm_kernels.volume_layout(x) is not None
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"))


def _sums(x, mode):
    """Per (sample, channel): sum x and sum x^2 (see the module docstring)."""
    if mode == "gemm":
        return channel_sums_gemm(x, x)
    if _fused(x, mode):
        return norm_kernels.channel_moments(x)
    dims, acc = tuple(range(2, x.dim())), _acc_dtype(x)
    return x.sum(dim=dims, dtype=acc), torch.linalg.vector_norm(x, 2, dim=dims, dtype=acc).square()


def _grad_sums(dy, x, mode):
    """Per (sample, channel): sum dy and sum dy x (exact float32 products of bf16 values)."""
    if mode == "gemm":
        return channel_sums_gemm(dy, x)
    if _fused(x, mode):
        return norm_kernels.channel_moments(dy, x)
    dims, acc = tuple(range(2, x.dim())), _acc_dtype(x)
    zero = torch.zeros(1, x.shape[1], *([1] * len(dims)), dtype=acc, device=x.device)
    return dy.sum(dim=dims, dtype=acc), torch.addcmul(zero, dy, x).sum(dim=dims)


def _affine(x, scale, shift, mode):
    """y = x scale + shift (per-(sample, channel) coefficients (B, C) in the accumulation dtype), in x's dtype and
    layout, rounded once."""
    if _fused(x, mode):
        return norm_kernels.channel_affine(x, scale, shift)
    y = torch.empty_like(x)
    torch.addcmul(_per_channel(shift, x.dim()), x, _per_channel(scale, x.dim()), out=y)
    return y


def _affine_grad_input(x, dy, a, k, m, mode):
    """dx = a dy + k x + m (per-(sample, channel) coefficients (B, C) in the accumulation dtype), in x's dtype and
    layout, rounded once."""
    if _fused(x, mode):
        return norm_kernels.channel_affine2(dy, x, a, k, m)
    t = torch.addcmul(_per_channel(m, x.dim()), x, _per_channel(k, x.dim()))  # in acc
    dx = torch.empty_like(x)
    torch.addcmul(t, dy, _per_channel(a, x.dim()), out=dx)
    return dx


class _GroupNorm(torch.autograd.Function):
    """group_norm(x (B, C, *spatial), weight (C,) or None, bias (C,) or None) with float32 statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, mode="parallel"):
        with torch.autocast(x.device.type, enabled=False), torch.profiler.record_function("fast_norm::group_norm"):
            B, C = x.shape[:2]
            n = x[0, 0].numel() * (C // groups)  # elements of one group
            acc = _acc_dtype(x)
            s1, s2 = _sums(x, mode)  # (B, C)
            mean = s1.view(B, groups, -1).sum(-1) / n  # (B, G)
            var = (s2.view(B, groups, -1).sum(-1) / n - mean * mean).clamp(min=0)
            rstd = torch.rsqrt(var + eps)
            scale = rstd.repeat_interleave(C // groups, 1)  # (B, C)
            if weight is not None:
                scale = scale * weight.to(acc)
            shift = -mean.repeat_interleave(C // groups, 1) * scale
            if bias is not None:
                shift = shift + bias.to(acc)
            y = _affine(x, scale, shift, mode)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.n, ctx.has_bias, ctx.mode = groups, n, bias is not None, mode
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        G, n = ctx.groups, ctx.n
        with torch.autocast(x.device.type, enabled=False):
            B, C = x.shape[:2]
            cg = C // G
            dy = _like(dy, x)
            acc = _acc_dtype(x)
            s1, s2 = _grad_sums(dy, x, ctx.mode)  # (B, C): sum of dy, sum of dy x
            mean_c, rstd_c = mean.repeat_interleave(cg, 1), rstd.repeat_interleave(cg, 1)
            dxhat = rstd_c * (s2 - mean_c * s1)  # (B, C): sum of dy x_hat
            g = weight.to(acc) if weight is not None else torch.ones(C, dtype=acc, device=x.device)
            a_sum = (g * s1).view(B, G, cg).sum(-1)  # (B, G): sum over the group of gamma dy
            b_sum = (g * dxhat).view(B, G, cg).sum(-1)  # sum of gamma dy x_hat
            k = -rstd * rstd * b_sum / n  # dx = rstd gamma dy + k (x - mean) - rstd a_sum / n
            m = -rstd * a_sum / n - k * mean
            dx = None
            if ctx.needs_input_grad[0]:
                dx = _affine_grad_input(x, dy, rstd_c * g, k.repeat_interleave(cg, 1), m.repeat_interleave(cg, 1),
                                        ctx.mode)
            dw = dxhat.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
            db = s1.sum(0).to(weight.dtype if weight is not None else x.dtype) \
                if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None, None


def group_norm(x, groups, weight=None, bias=None, eps=1e-5, mode="parallel"):
    """torch.nn.functional.group_norm(x, groups, weight, bias, eps) for x (B, C, *spatial), through reductions
    over the voxels of each (sample, channel) (``mode`` gemm: as matrix products; fused: Triton kernels on CUDA;
    see the module docstring); differentiable w.r.t. x, weight, bias."""
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    if mode not in GROUP_NORM_IMPLS or mode == "torch":
        raise ValueError(f"unknown group norm mode {mode!r}")
    return _GroupNorm.apply(x, weight, bias, groups, eps, mode)


class ParallelGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) whose forward is ``group_norm`` above."""

    mode = "parallel"

    def forward(self, x):
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.mode)


class GemmGroupNorm(ParallelGroupNorm):
    """ParallelGroupNorm with its sums as matrix products (``--group_norm_impl gemm``)."""

    mode = "gemm"


class FusedGroupNorm(ParallelGroupNorm):
    """ParallelGroupNorm with each pass one Triton kernel on CUDA (``--group_norm_impl fused``;
    networks/norm_kernels.py); the torch operators of ``parallel`` elsewhere."""

    mode = "fused"


def make_group_norm(groups, channels, impl="torch"):
    """nn.GroupNorm(groups, channels) for ``impl`` torch, ParallelGroupNorm for parallel, GemmGroupNorm for gemm
    (--group_norm_impl)."""
    if impl not in GROUP_NORM_IMPLS:
        raise ValueError(f"unknown group norm implementation {impl!r} (expected {' or '.join(GROUP_NORM_IMPLS)})")
    return {"torch": nn.GroupNorm, "parallel": ParallelGroupNorm, "gemm": GemmGroupNorm,
            "fused": FusedGroupNorm}[impl](groups, channels)


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm of x (B, C, *spatial) with the batch's statistics, its sums as matrix products;
    returns (y, mean (C,), biased variance (C,)) (the last two for the running statistics, not differentiated)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, mode="gemm"):
        with torch.autocast(x.device.type, enabled=False), torch.profiler.record_function("fast_norm::batch_norm"):
            C = x.shape[1]
            n = x.numel() // C  # elements of one channel
            acc = _acc_dtype(x)
            s1, s2 = (s.sum(0) for s in _sums(x, mode))  # (C,)
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp(min=0)
            rstd = torch.rsqrt(var + eps)
            scale = rstd * weight.to(acc) if weight is not None else rstd
            shift = -mean * scale + (bias.to(acc) if bias is not None else 0)
            y = _affine(x, scale[None], shift[None], mode)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.n, ctx.has_bias, ctx.mode = n, bias is not None, mode
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, rstd = ctx.saved_tensors
        n = ctx.n
        with torch.autocast(x.device.type, enabled=False):
            C = x.shape[1]
            dy = _like(dy, x)
            acc = _acc_dtype(x)
            s1, s2 = (s.sum(0) for s in _grad_sums(dy, x, ctx.mode))  # (C,): sum of dy, sum of dy x
            dxhat = rstd * (s2 - mean * s1)  # sum of dy x_hat
            g = weight.to(acc) if weight is not None else torch.ones(C, dtype=acc, device=x.device)
            a = g * rstd  # dx = a dy + k (x - mean) - a s1 / n
            k = -a * rstd * dxhat / n
            m = -a * s1 / n - k * mean
            dx = _affine_grad_input(x, dy, a[None], k[None], m[None], ctx.mode) if ctx.needs_input_grad[0] else None
            dw = dxhat.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
            db = s1.to(weight.dtype if weight is not None else x.dtype) \
                if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None, None


class GemmBatchNorm3d(nn.BatchNorm3d):
    """nn.BatchNorm3d (same parameters, buffers and state dict) whose training-mode forward takes the batch
    statistics as matrix products (``--batch_norm_impl gemm``) and updates the running statistics as torch does
    (momentum, or a cumulative average with momentum None; the unbiased variance). In eval mode, or without
    running statistics to use, torch's own batch norm (elementwise with the stored statistics)."""

    mode = "gemm"

    def forward(self, x):
        self._check_input_dim(x)
        if not self.training and self.track_running_stats:
            return super().forward(x)
        y, mean, var = _BatchNormTrain.apply(x, self.weight if self.affine else None,
                                             self.bias if self.affine else None, self.eps, self.mode)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                mom = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = x.numel() // x.shape[1]
                self.running_mean.mul_(1 - mom).add_(mom * mean.to(self.running_mean.dtype))
                unbiased = var * (n / max(n - 1, 1))
                self.running_var.mul_(1 - mom).add_(mom * unbiased.to(self.running_var.dtype))
        return y


class FusedBatchNorm3d(GemmBatchNorm3d):
    """GemmBatchNorm3d with each pass one Triton kernel on CUDA (``--batch_norm_impl fused``;
    networks/norm_kernels.py); the torch operators of the parallel group norm elsewhere."""

    mode = "fused"


def convert_batch_norm(module, impl="torch"):
    """``module`` with every nn.BatchNorm3d made a GemmBatchNorm3d for ``impl`` gemm, a FusedBatchNorm3d for fused
    (the same parameters and buffers, in place; SyncBatchNorm and other norms untouched); ``impl`` torch leaves it
    as it is."""
    if impl not in BATCH_NORM_IMPLS:
        raise ValueError(f"unknown batch norm implementation {impl!r} (expected {' or '.join(BATCH_NORM_IMPLS)})")
    cls = {"gemm": GemmBatchNorm3d, "fused": FusedBatchNorm3d}.get(impl)
    if cls is not None:
        for m in module.modules():
            if type(m) is nn.BatchNorm3d:
                m.__class__ = cls
    return module
