"""Triton kernels for the normalisations of large 3D volumes (``--group_norm_impl fused``, ``--batch_norm_impl
fused``): each statistic pass and each elementwise pass of networks/fast_norm.py in ONE kernel over the volume.

Why. The ``parallel`` norms are built from torch operators, and three of their passes are slow on the GPU: the
backward's sum of dy x goes through a float32 volume written and read again (torch.addcmul on a broadcast zero,
then a sum), the backward's dx = a dy + k x + m through another float32 volume (two addcmul), and the forward's
y = x a + b runs in TensorIterator's broadcasting loop (not vectorised). Profiled on one H200 (2026-12-04,
runs/2026-12-04/speed): addcmul 7.1 ms and the group norm backward 6.6 ms a step for the 5 group norms of this
project's decoder, against ~0.2 ms a norm that the bytes need (read dy, x twice, write dx). Here:

* ``channel_moments(u, v)``: per (sample, channel) sum u and sum u v (float32, products exact in float32), one read
  of u and v. Each program sums a block of voxels for every channel and writes its partial sums; torch adds the
  partials (deterministic, no atomics).
* ``channel_affine(x, a, b)``: y = a x + b with per-(sample, channel) a, b, computed in float32, stored in x's dtype.
* ``channel_affine2(u, v, a, k, m)``: a u + k v + m, likewise (the norms' input gradient).

Layouts: a (B, C, *spatial) volume contiguous (NCDHW) or channels_last_3d (NDHWC); both are read in place as
(B, C, M) with strides (C M, M, 1) or (M C, 1, C). Anything else (other strides) is for the caller to refuse.
Used on CUDA tensors only (networks/fast_norm.py falls back to torch operators elsewhere); the kernels also run in
Triton's interpreter (TRITON_INTERPRET=1) on CPU tensors, which is how tests/test_norm_kernels.py checks them
without a GPU.
"""
import torch

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 (no triton, or a broken one: the torch operators are used)
    triton = None


def available():
    return triton is not None


def volume_layout(x):
    """'ncdhw', 'ndhwc' or None: how a (B, C, *spatial) tensor lies in memory."""
    if x.dim() < 3:
        return None
    if x.is_contiguous():
        return "ncdhw"
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return "ndhwc"
    return None


if triton is not None:
    @triton.jit
    def _moments_kernel(u_ptr, v_ptr, s1_ptr, s2_ptr, C, M, s_b, s_c, s_m, nblk,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ITERS: tl.constexpr, SAME: tl.constexpr):
        # program (b, j): voxels [j ITERS BLOCK_M, (j+1) ITERS BLOCK_M) of sample b, every channel in chunks of
        # BLOCK_C, summed in registers; partial sums to s1 / s2 at [(b nblk + j) C + c]
        b = tl.program_id(0).to(tl.int64)
        j = tl.program_id(1).to(tl.int64)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C).to(tl.int64)
            mask_c = offs_c < C
            acc1 = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
            acc2 = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
            for i in range(ITERS):
                offs_m = (j * ITERS + i) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
                idx = b * s_b + offs_c[None, :] * s_c + offs_m[:, None] * s_m
                mask = (offs_m < M)[:, None] & mask_c[None, :]
                u = tl.load(u_ptr + idx, mask=mask, other=0.0).to(tl.float32)
                if SAME:
                    v = u
                else:
                    v = tl.load(v_ptr + idx, mask=mask, other=0.0).to(tl.float32)
                acc1 += u
                acc2 += u * v
            out = (b * nblk + j) * C + offs_c
            tl.store(s1_ptr + out, tl.sum(acc1, axis=0), mask=mask_c)
            tl.store(s2_ptr + out, tl.sum(acc2, axis=0), mask=mask_c)

    @triton.jit
    def _coef_index(j, C: tl.constexpr, M, CL: tl.constexpr, BLOCK: tl.constexpr):
        # (offsets within the sample's C M elements, channel of each) for block j; int32 arithmetic (a sample's
        # volume is below 2^31 elements: channel_affine checks) so that no element pays for an int64 division
        local = j * BLOCK + tl.arange(0, BLOCK)
        if CL:
            c = local % C
        else:
            c = local // M
        return local, c

    @triton.jit
    def _affine_kernel(x_ptr, y_ptr, a_ptr, b_ptr, C: tl.constexpr, M, CL: tl.constexpr, BLOCK: tl.constexpr):
        # y = a[s, c] x + b[s, c]; program (s, j): elements [j BLOCK, (j+1) BLOCK) of sample s
        s = tl.program_id(0)
        local, c = _coef_index(tl.program_id(1), C, M, CL, BLOCK)
        mask = local < C * M
        base = s.to(tl.int64) * C * M
        x = tl.load(x_ptr + base + local, mask=mask, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + s * C + c, mask=mask, other=0.0)
        b = tl.load(b_ptr + s * C + c, mask=mask, other=0.0)
        tl.store(y_ptr + base + local, (x * a + b).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _affine2_kernel(u_ptr, v_ptr, y_ptr, a_ptr, k_ptr, m_ptr, C: tl.constexpr, M, CL: tl.constexpr,
                        BLOCK: tl.constexpr):
        # y = a[s, c] u + k[s, c] v + m[s, c]
        s = tl.program_id(0)
        local, c = _coef_index(tl.program_id(1), C, M, CL, BLOCK)
        mask = local < C * M
        base = s.to(tl.int64) * C * M
        u = tl.load(u_ptr + base + local, mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + base + local, mask=mask, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + s * C + c, mask=mask, other=0.0)
        k = tl.load(k_ptr + s * C + c, mask=mask, other=0.0)
        m = tl.load(m_ptr + s * C + c, mask=mask, other=0.0)
        tl.store(y_ptr + base + local, (a * u + k * v + m).to(y_ptr.dtype.element_ty), mask=mask)


MOMENT_BLOCK_M = 128  # voxels per load of the statistics (x up to 32 channels: 32 values a thread of 4 warps)
MOMENT_ITERS = 8  # loads summed in registers per program
AFFINE_BLOCK = 2048  # elements per program of the elementwise passes


def _shape(x):
    layout = volume_layout(x)
    if layout is None:
        raise ValueError(f"norm kernels: a (B, C, *spatial) volume contiguous or channels_last_3d is needed, got "
                         f"shape {tuple(x.shape)} strides {x.stride()}")
    B, C = x.shape[:2]
    M = x[0, 0].numel()
    strides = (C * M, M, 1) if layout == "ncdhw" else (M * C, 1, C)
    return layout, B, C, M, strides


def _check_like(u, v, what):
    """v must have u's shape and layout (the kernels read both at the same offsets)."""
    if v.shape != u.shape or volume_layout(v) != volume_layout(u):
        raise ValueError(f"norm kernels: the two volumes of {what} must have one shape and one layout")


def _coef(t, B, C):
    """(B, C) or broadcastable per-(sample, channel) coefficient -> (B * C,) float32 contiguous."""
    return t.to(torch.float32).expand(B, C).contiguous().view(-1)


def channel_moments(u, v=None):
    """(sum u, sum u v) per (sample, channel) as (B, C) float32 tensors; v None: sum u^2. v must lie as u does."""
    _, B, C, M, (s_b, s_c, s_m) = _shape(u)
    if v is not None:
        _check_like(u, v, "channel_moments")
    nblk = triton.cdiv(M, MOMENT_BLOCK_M * MOMENT_ITERS)
    block_c = min(triton.next_power_of_2(C), 32)
    s1 = torch.empty(B, nblk, C, dtype=torch.float32, device=u.device)
    s2 = torch.empty_like(s1)
    _moments_kernel[(B, nblk)](u, u if v is None else v, s1, s2, C, M, s_b, s_c, s_m, nblk,
                               BLOCK_M=MOMENT_BLOCK_M, BLOCK_C=block_c, ITERS=MOMENT_ITERS, SAME=v is None)
    return s1.sum(1), s2.sum(1)


def _elementwise_grid(B, C, M):
    if C * M >= 2 ** 31 - AFFINE_BLOCK:
        raise ValueError(f"norm kernels: one sample of {C} x {M} elements is beyond int32 indexing")
    return (B, triton.cdiv(C * M, AFFINE_BLOCK))


def channel_affine(x, a, b):
    """a x + b with (B, C) coefficients, in x's dtype and layout, computed in float32."""
    layout, B, C, M, _ = _shape(x)
    y = torch.empty_like(x)
    _affine_kernel[_elementwise_grid(B, C, M)](x, y, _coef(a, B, C), _coef(b, B, C), C, M,
                                               CL=layout == "ndhwc", BLOCK=AFFINE_BLOCK)
    return y


def channel_affine2(u, v, a, k, m):
    """a u + k v + m with (B, C) coefficients, in u's dtype and layout (v must lie as u does)."""
    layout, B, C, M, _ = _shape(u)
    _check_like(u, v, "channel_affine2")
    y = torch.empty_like(u)
    _affine2_kernel[_elementwise_grid(B, C, M)](u, v, y, _coef(a, B, C), _coef(k, B, C), _coef(m, B, C), C, M,
                                                CL=layout == "ndhwc", BLOCK=AFFINE_BLOCK)
    return y
