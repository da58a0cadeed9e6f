"""The parts of the stage-2 step that issue 20 speeds up, timed alone at the paper sizes (they need no gsplat, so
``tools/bench/speed_compare.py`` runs them while gsplat's kernels build), and the two ceilings of the device.

Each case: forward, and forward + backward of a random gradient, median of CUDA-event times (wall clock with a
synchronize on the CPU); the bytes one pass must move (floor) and the rate it reached; the relative difference of
output and input gradient to the case's reference (the first of its group), which must stay at rounding level.
Groups: ``ceiling`` (device-to-device copy, a bf16 matrix product), ``norm`` (one normalisation of the decoder's
32-channel bf16 volume 300 x 300 x 24: torch's group norm under autocast as the step runs it, the parallel and the
gemm one in NCDHW and NDHWC, batch norm torch / gemm NCDHW / NDHWC, an elementwise x * 2 as the cost of one pass), ``conv`` (a
3x3x3 32 -> 32 convolution NCDHW / NDHWC), ``lift`` (grid_sample per camera / one gather, at both networks'
feature maps) and ``loss`` (the SSIM's 3x3 mean of the step's warped images: avg_pool2d against
utils/pool_kernels.avg_pool3, which must agree bit for bit on CUDA).
"""
import statistics
import time

import torch

from networks.fast_norm import FusedBatchNorm3d, FusedGroupNorm, GemmBatchNorm3d, GemmGroupNorm, ParallelGroupNorm
from networks.lift_gather import lift_features_gather
from networks.occ_net import VoxelGrid, lift_features
from tools.bench.scene import rig_cameras
from utils.pool_kernels import avg_pool3

PAPER_VOLUME, QUICK_VOLUME = (300, 300, 24), (24, 24, 8)
CL3D = torch.channels_last_3d


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps, warmup=2):
    """Median and minimum seconds of ``fn()`` over ``reps`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def ceilings(device, quick):
    """Copy bandwidth (bytes read + written per second) and bf16 (CPU: float32) matrix-product rate."""
    n = (1 << 22) if quick else (1 << 30)
    src = torch.rand(n // 4, device=device)
    dst = torch.empty_like(src)
    med, _ = timed(lambda: dst.copy_(src), device, 5 if quick else 20)
    m = 256 if quick else 8192
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(m, m, device=device, dtype=dt), torch.randn(m, m, device=device, dtype=dt)
    mm, _ = timed(lambda: a @ b, device, 3 if quick else 10)
    return [{"group": "ceiling", "case": f"copy {2 * n / 2**30:.2f} GiB read+written", "median_ms": med * 1e3,
             "rate": f"{2 * n / med / 1e12:.2f} TB/s", "copy_tb_s": 2 * n / med / 1e12},
            {"group": "ceiling", "case": f"matmul {m}^3 {str(dt).split('.')[-1]}", "median_ms": mm * 1e3,
             "rate": f"{2 * m ** 3 / mm / 1e12:.0f} TFLOP/s", "matmul_tflops": 2 * m ** 3 / mm / 1e12}]


def _case(group, name, make, device, reps, ref=None, bytes_fwd=None, bytes_bwd=None):
    """Times make() -> (forward fn returning the output, input tensor requiring grad); compares with ``ref``. A case
    that fails is a row with its error (the others still run)."""
    try:
        return _timed_case(group, name, make, device, reps, ref, bytes_fwd, bytes_bwd)
    except Exception as err:
        return {"group": group, "case": name, "error": f"{type(err).__name__}: {str(err)[:200]}"}


def _layout(t):
    """The memory format ``t`` is dense in: channels-last (4D / 5D) when it is that and not plain contiguous."""
    cl = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())
    return cl if cl is not None and t.is_contiguous(memory_format=cl) and not t.is_contiguous() else \
        torch.contiguous_format


def _timed_case(group, name, make, device, reps, ref, bytes_fwd, bytes_bwd):
    fwd, x = make()
    out = fwd()
    # the output's gradient in the output's own layout, as the step's next layer hands it back (an NCDHW gradient
    # for a channels-last output would time a layout copy that the step does not make)
    dy = torch.randn(out.shape, device=device, generator=torch.Generator(device).manual_seed(0)).to(out.dtype)
    dy = dy.contiguous(memory_format=_layout(out))

    def both():
        x.grad = None
        fwd().backward(dy)
    f_med, _ = timed(fwd, device, reps)
    b_med, _ = timed(both, device, reps)
    both()
    row = {"group": group, "case": name, "fwd_ms": f_med * 1e3, "fwd_bwd_ms": b_med * 1e3,
           "out": out.detach(), "grad": x.grad.detach().clone()}
    if bytes_fwd:
        row["rate"] = f"{bytes_fwd / f_med / 1e12:.2f} / {(bytes_fwd + bytes_bwd) / b_med / 1e12:.2f} TB/s"
    if ref is not None and "out" in ref:  # (an input of fewer channels than the reference's: those it has)
        row["out_rel_diff"], row["grad_rel_diff"] = _rel(out, ref["out"]), _rel(x.grad, ref["grad"][:, :x.shape[1]])
    return row


def norm_cases(device, quick, reps):
    """One normalisation of a (1, 32, X, Y, Z) bf16 volume (float32 on the CPU), forward and backward."""
    shape = (1, 32, *(QUICK_VOLUME if quick else PAPER_VOLUME))
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(1)).to(dt)
    nbytes = base.numel() * base.element_size()
    amp = device.type == "cuda"

    def gn(cls, fmt):
        m = cls(8, 32).to(device)

        def make():
            x = base.detach().clone(memory_format=fmt).requires_grad_()

            def fwd():
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    return m(x)
            return fwd, x
        return make

    def bn(fmt, cls=torch.nn.BatchNorm3d):
        m = cls(32).to(device)

        def make():
            x = base.detach().clone(memory_format=fmt).requires_grad_()
            return (lambda: m(x)), x
        return make

    def scale():
        x = base.clone().requires_grad_()
        return (lambda: x * 2), x

    rows = [_case("norm", "group norm, torch (autocast float32), NCDHW", gn(torch.nn.GroupNorm,
                                                                           torch.contiguous_format), device, reps,
                  bytes_fwd=2 * nbytes, bytes_bwd=3 * nbytes)]
    for impl, cls in (("parallel", ParallelGroupNorm), ("gemm", GemmGroupNorm), ("fused", FusedGroupNorm)):
        for name, fmt in (("NCDHW", torch.contiguous_format), ("NDHWC", CL3D)):
            rows.append(_case("norm", f"group norm, {impl}, {name}", gn(cls, fmt), device, reps,
                              rows[0], 2 * nbytes, 3 * nbytes))
    bn_ref = _case("norm", "batch norm, torch, NCDHW", bn(torch.contiguous_format), device, reps,
                   bytes_fwd=2 * nbytes, bytes_bwd=3 * nbytes)
    rows.append(bn_ref)
    rows.append(_case("norm", "batch norm, torch, NDHWC", bn(CL3D), device, reps, bn_ref, 2 * nbytes, 3 * nbytes))
    for impl, cls in (("gemm", GemmBatchNorm3d), ("fused", FusedBatchNorm3d)):
        for name, fmt in (("NCDHW", torch.contiguous_format), ("NDHWC", CL3D)):
            rows.append(_case("norm", f"batch norm, {impl}, {name}", bn(fmt, cls), device, reps, bn_ref,
                              2 * nbytes, 3 * nbytes))
    rows.append(_case("norm", "elementwise reference: x * 2 (one read, one write)", scale, device, reps,
                      bytes_fwd=2 * nbytes, bytes_bwd=2 * nbytes))
    return rows


def conv_cases(device, quick, reps):
    """3x3x3 convolutions of the decoders NCDHW / NDHWC: 32 -> 32, and the residual decoder's first, 65 -> 32 (64
    lifted channels + visibility; NDHWC also with the input and the weight padded by zeros to 72 channels, the same
    result: cuDNN's fast NDHWC kernels want channels in multiples of 8; split as --split_lift_conv runs it, the 64
    feature channels and the visibility channel as two volumes, one convolution each, summed (SplitConv3d); and, on
    CUDA, with a bf16 input as --lift_dtype features gives it, where the others are float32 volumes that autocast
    casts)."""
    grid = QUICK_VOLUME if quick else PAPER_VOLUME
    amp = device.type == "cuda"
    dtype = "bf16" if amp else "float32"
    rows = []
    for cin in (32, 65):
        base = torch.randn(1, cin, *grid, device=device, generator=torch.Generator(device).manual_seed(2))
        conv = torch.nn.Conv3d(cin, 32, 3, padding=1, bias=False).to(device)
        ref = None
        for name, fmt, pad in (("NCDHW", torch.contiguous_format, 0), ("NDHWC", CL3D, 0),
                               ("NDHWC, padded to 72", CL3D, -cin % 8), ("NDHWC, split 64 + 1", CL3D, 0),
                               ("NDHWC, bf16 input", CL3D, 0)):
            if (name.endswith("72") and pad == 0) or (name.endswith("bf16 input") and (cin == 32 or not amp)) or (
                    "split" in name and cin != 65):
                continue
            if "split" in name:
                rows.append(_case("conv", f"conv3d 3x3x3 {cin}->32 {dtype}, {name}",
                                  lambda: _split_conv(conv, base, 64), device, reps, ref))
                continue
            # "bf16 input": the volume as --lift_dtype features hands it over (no autocast cast, forward or back)
            in_dtype = torch.bfloat16 if name.endswith("bf16 input") else base.dtype

            def make(fmt=fmt, pad=pad, in_dtype=in_dtype):
                conv.to(memory_format=fmt)
                x = base.detach().to(in_dtype).clone(memory_format=fmt).requires_grad_()

                def fwd():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        if not pad:
                            return conv(x)
                        xp = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 0, 0, pad)).contiguous(memory_format=fmt)
                        w = torch.nn.functional.pad(conv.weight, (0, 0, 0, 0, 0, 0, 0, pad))
                        return torch.nn.functional.conv3d(xp, w.contiguous(memory_format=fmt), padding=1)
                return fwd, x
            row = _case("conv", f"conv3d 3x3x3 {cin}->32 {dtype}, {name}", make, device, reps, ref)
            ref = ref or row
            rows.append(row)
    return rows


def _split_conv(conv, base, split):
    """make() of the split case: ``conv`` as networks/occ_net.SplitConv3d runs it on (the first ``split`` channels
    of ``base``, the rest), each a channels-last volume of its own; the input whose gradient counts is the first."""
    from networks.occ_net import SplitConv3d
    m = SplitConv3d(conv.in_channels, conv.out_channels, conv.kernel_size, split, padding=conv.padding,
                    bias=False).to(base.device)
    m.load_state_dict(conv.state_dict())
    m.to(memory_format=CL3D)
    main = base[:, :split].detach().clone(memory_format=CL3D).requires_grad_()
    extra = base[:, split:].detach().clone(memory_format=CL3D)
    amp = base.device.type == "cuda"

    def fwd():
        with torch.autocast(base.device.type, dtype=torch.bfloat16, enabled=amp):
            return m((main, extra))
    return fwd, main


def lift_cases(device, quick, reps):
    """lift_features vs lift_features_gather on the rig at 384 x 640, feature maps of stride 8 and 4."""
    H, W = (64, 112) if quick else (384, 640)
    grid = QUICK_VOLUME if quick else PAPER_VOLUME
    pts = VoxelGrid(grid, [-40.0, 40.0, -40.0, 40.0, -1.0, 5.4]).centres(device).view(-1, 3)
    _, K, cam2ego = rig_cameras(H, W, device)
    K, cam2ego = K[None], cam2ego[None]
    rows = []
    for stride, net in ((8, "project"), (4, "authors")):
        feats = torch.randn(1, 6, 64, H // stride, W // stride, device=device,
                            generator=torch.Generator(device).manual_seed(3))
        cases = (("grid_sample per camera", lambda f: lift_features(f, K, cam2ego, pts, (H, W))),
                 ("gather (embedding_bag)", lambda f: lift_features_gather(f, K, cam2ego, pts, (H, W))),
                 ("gather in bf16 (--lift_dtype features)",
                  lambda f: lift_features_gather(f.bfloat16(), K, cam2ego, pts, (H, W), dtype=torch.bfloat16)))
        ref = None
        for name, fn in cases:
            def make(fn=fn):
                x = feats.clone().requires_grad_()
                return (lambda: fn(x)), x
            row = _case("lift", f"lift, {net} (stride {stride}, 64 ch): {name}", make, device, reps, ref)
            ref = ref or row
            rows.append(row)
    return rows


def loss_cases(device, quick, reps):
    """The SSIM's 3x3 mean over the images of one step's photometric error (2 warped + 2 identity images x 6
    cameras x RGB at the input size 384 x 640, --photo_res input, reflection-padded): torch's avg_pool2d, then the
    Triton kernels of --ssim_pool_impl fused."""
    shape = (4, 3, 34, 58) if quick else (24, 3, 386, 642)
    x0 = torch.rand(shape, device=device, generator=torch.Generator(device).manual_seed(5))
    rows, ref = [], None
    for name, fn in (("avg_pool2d", lambda t: torch.nn.functional.avg_pool2d(t, 3, stride=1)),
                     ("Triton kernels (--ssim_pool_impl fused)", avg_pool3)):
        def make(fn=fn):
            x = x0.clone().requires_grad_()
            return (lambda: fn(x)), x
        row = _case("loss", f"ssim pool {'x'.join(map(str, shape))} float32: {name}", make, device, reps, ref,
                    bytes_fwd=x0.numel() * 4 * 2, bytes_bwd=x0.numel() * 4 * 2)
        ref = ref or row
        rows.append(row)
    return rows


def run_components(device, quick=False, reps=None, log=print):
    """Every group; rows without the tensors (JSON-ready). A group that fails is one row with its error."""
    reps = reps or (2 if quick else 10)
    rows = []
    groups = (("ceiling", lambda: ceilings(device, quick)), ("norm", lambda: norm_cases(device, quick, reps)),
              ("conv", lambda: conv_cases(device, quick, reps)), ("lift", lambda: lift_cases(device, quick, reps)),
              ("loss", lambda: loss_cases(device, quick, reps)))
    for name, fn in groups:
        t0 = time.perf_counter()
        try:
            got = fn()
        except Exception as err:  # one broken group must not lose the others
            got = [{"group": name, "case": "error", "error": f"{type(err).__name__}: {str(err)[:200]}"}]
        for r in got:
            r.pop("out", None), r.pop("grad", None)
        rows += got
        log(f"components: {name} ({time.perf_counter() - t0:.1f} s)")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def markdown(rows):
    L = ["| group | case | forward ms | fwd+bwd ms | rate (fwd / fwd+bwd) | out rel. diff | grad rel. diff |",
         "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    f = lambda r, k, fmt: format(r[k], fmt) if r.get(k) is not None else "-"  # noqa: E731
    for r in rows:
        if "error" in r:
            L.append(f"| {r['group']} | {r['case']}: error {r['error']} | | | | | |")
            continue
        fwd = f(r, "fwd_ms", ".3f") if "fwd_ms" in r else f(r, "median_ms", ".3f")
        L.append(f"| {r['group']} | {r['case']} | {fwd} | {f(r, 'fwd_bwd_ms', '.3f')} | {r.get('rate', '-')} | "
                 f"{f(r, 'out_rel_diff', '.1e')} | {f(r, 'grad_rel_diff', '.1e')} |")
    return "\n".join(L)
