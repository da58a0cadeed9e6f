"""Where a training step's time goes: device time per kernel family, the top operators, and the synchronisations.

``profile_step(step, batch, device)`` runs ``n`` steps under torch.profiler and returns per-step device (on the
CPU: CPU) time of each family of ``FAMILIES`` (first pattern that matches a kernel's or an operator's name), the
busy time, the number of kernel launches, the text of the top operators and, per stage of the step (the ranges that
``utils.speed.stage`` names: image encoder, lifting, 3D CNN, voxels to Gaussians, rasteriser, loss, optimizer; each
forward stage's backward found through the autograd sequence numbers), the device time, the host time and the
launches (``stages_ms``: where the host, not the GPU, sets the pace). ``count_syncs(step, batch, device)``
runs one step under ``torch.cuda.set_sync_debug_mode("warn")`` and counts the host-device synchronisations by the
line of Python that caused them.
"""
import collections
import functools
import os
import re
import sys
import warnings

import torch

from utils.speed import STAGE_PREFIX

# (family, pattern); the first match names a kernel (CUDA) or an operator (CPU).
FAMILIES = [
    ("normalisation", r"group_?norm|GroupNorm|RowwiseMoments|ComputeFusedParams|ComputeInternalGradients|"
                      r"BackwardFusedParams|GammaBeta|batch_?norm|BatchNorm|Welford|welford|fast_norm"),
    ("layout (NCHW <-> NHWC)", r"nchwToNhwc|nhwcToNchw|[Tt]ranspose|permute"),
    ("convolution", r"conv|fprop|dgrad|wgrad|implicit|cudnn"),
    ("matmul", r"gemm|gemv|cublas|matmul|aten::mm|aten::bmm|aten::addmm"),
    ("rasteriser (gsplat / torch)", r"rasteriz|projection|isect|gsplat|_Composite|_pixel_pairs"),
    ("grid_sample (lifting, the loss's warps)", r"grid_sampler"),
    ("lifting: embedding_bag", r"embedding|EmbeddingBag|compute_grad_weight|sum_and_scatter|krn_partial|segment_"),
    ("sort / scan / nonzero", r"[Rr]adix|cub::|Scan|[Ss]ort|cumsum|nonzero|unique"),
    ("reduction", r"reduce_kernel|[Rr]educe|norm_kernel|aten::sum|aten::mean|aten::norm"),
    ("optimizer", r"multi_tensor|foreach|[Aa]dam"),
    ("copy / cast / fill", r"[Cc]opy|Memcpy|Memset|fill|aten::to|_to_copy|cat"),
    ("elementwise", r"elementwise|vectorized|unrolled|pointwise|threshold|relu|softmax|aten::"),
]


# Operators and autograd nodes whose inclusive time (their kernels and their children's) the profile also lists.
OPS_OF_INTEREST = (r"aten::native_group_norm|aten::native_batch_norm|_batch_norm_with_update|NormBackward|"
                   r"fast_norm::|_GroupNormBackward|aten::grid_sampler_2d|GridSampler2DBackward|aten::embedding_bag|"
                   r"EmbeddingBagBackward|aten::cudnn_convolution|aten::convolution_backward|_RasterizeToPixels|"
                   r"_FullyFusedProjection|aten::_fused_adamw|aten::_foreach")


def family(name):
    for fam, pat in FAMILIES:
        if re.search(pat, name):
            return fam
    return "other"


def _self_time(e, cuda):
    """Self time in microseconds of a key_averages entry (device time for kernels, CPU time on the CPU)."""
    if cuda:
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
    return e.self_cpu_time_total


def kernel_entries(avgs, cuda):
    """The entries of a profile's key_averages that are work: on CUDA the kernels, memcpys and memsets (device
    events), not the device-side copies of record_function ranges (``is_user_annotation``: utils.speed.stage's
    ranges, fast_norm's; counted as kernels, they put each range's whole time a second time in "other" and the busy
    sum); on the CPU the operators that ran no other operator inside (their self time is their whole cost)."""
    if not cuda:
        return [e for e in avgs if e.key.startswith("aten::")]
    work = [e for e in avgs if not getattr(e, "is_user_annotation", False)]
    return [e for e in work if str(getattr(e, "device_type", "")).endswith("CUDA")] or \
        [e for e in work if e.self_cpu_time_total == 0 and _self_time(e, True) > 0]


def profile_step(step, batch, device, n=3, top=25):
    """dict(families {family: ms per step}, launches per step, busy_ms per step, table: top operators text)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            step(batch)
        if cuda:
            torch.cuda.synchronize(device)
    avgs = prof.key_averages()
    entries = kernel_entries(avgs, cuda)
    fams = collections.Counter()
    kernels = collections.Counter()
    launches = 0
    for e in entries:
        t = _self_time(e, cuda) / 1e3 / n
        fams[family(e.key)] += t
        kernels[e.key[:100]] += t
        launches += e.count
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = "device_time_total" if cuda else "cpu_time_total"
    ops = collections.Counter({e.key[:100]: getattr(e, total, 0) / 1e3 / n for e in avgs
                               if re.search(OPS_OF_INTEREST, e.key) and not e.key.startswith("void ")})
    return {"families_ms": dict(fams.most_common()), "busy_ms": sum(fams.values()), "launches": launches / n,
            "top_kernels_ms": dict(kernels.most_common(15)), "ops_ms": dict(ops.most_common(20)),
            "stages_ms": stage_times(prof.events(), n),
            "table": avgs.table(sort_by=key, row_limit=top)}


BACKWARD_NODE = "autograd::engine::evaluate_function: "
OUTSIDE = "outside the stages"


def _stage_of(e, seq_stage, memo):
    """The stage an event belongs to: its innermost ``stage::`` range, or for the autograd engine's work the stage
    whose forward made the node (``<stage> (backward)``)."""
    chain, found, p = [], None, e
    while p is not None:
        if p.id in memo:
            found = memo[p.id]
            break
        chain.append(p)
        if p.name.startswith(STAGE_PREFIX):
            found = p.name[len(STAGE_PREFIX):]
            break
        if p.name.startswith(BACKWARD_NODE):
            node = p.name[len(BACKWARD_NODE):]
            fwd = seq_stage.get((p.fwd_thread, p.sequence_nr))
            found = (f"{fwd} (backward)" if fwd else
                     "gradient accumulation" if "AccumulateGrad" in node else "backward, not attributed")
            break
        p = p.cpu_parent
    found = found or OUTSIDE
    for c in chain:
        memo[c.id] = found
    return found


# operators that launch no kernel (views, allocation, metadata)
NO_KERNEL = re.compile(r"aten::(empty\w*|as_strided|view\w*|_?reshape\w*|resolve_\w+|t|transpose|expand\w*|permute|"
                       r"unsqueeze|squeeze\w*|slice|select|alias|detach\w*|_unsafe_view|unflatten|flatten|lift_fresh|"
                       r"split\w*|chunk|unbind|narrow|set_|_local_scalar_dense|item|is_\w+|size|stride|numel|result_type)$")


def _launching(e):
    return e.name.startswith("aten::") and not NO_KERNEL.match(e.name)


def stage_times(events, n=1):
    """{stage: {device_ms, host_ms, launches, ops}} per step from a profiler's events: device = the kernels an
    operator launched (CUDA), host = the operator's own CPU time (its children's excluded; a range's own time is the
    Python between its operators), ops = the operators that ran no other operator (on the CPU, where nothing is
    launched, what stands for the launches)."""
    memo, seq_stage = {}, {}
    cpu = [e for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    for e in cpu:  # the forward operators that made autograd nodes, by (thread, sequence number)
        if e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_NODE):
            st = _stage_of(e, seq_stage, memo)
            if not st.endswith("(backward)") and st not in ("gradient accumulation", "backward, not attributed"):
                seq_stage.setdefault((e.thread, e.sequence_nr), st)
    memo.clear()
    out = collections.defaultdict(lambda: {"device_ms": 0.0, "host_ms": 0.0, "launches": 0.0, "ops": 0.0})
    for e in cpu:
        row = out[_stage_of(e, seq_stage, memo)]
        kernels = getattr(e, "kernels", None) or []
        row["device_ms"] += sum(k.duration for k in kernels) / 1e3 / n
        row["launches"] += len(kernels) / n
        row["host_ms"] += e.self_cpu_time_total / 1e3 / n
        if _launching(e) and not any(_launching(c) for c in e.cpu_children):
            row["ops"] += 1 / n  # operators that ran no other: about one kernel each on a GPU
    return dict(sorted(out.items(), key=lambda kv: -(kv[1]["device_ms"] + kv[1]["host_ms"])))


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# frames that are wrappers, not the line that asked for the work
# (the benchmark's own step in tools/bench/harness.py is a line: the optimizer and the gradient clipping are there)
_WRAPPERS = ("utils/speed.py", "utils/precision.py", "tools/bench/profile.py", "tools/bench/speed_compare.py",
             "tools/bench_render.py")


_FRAME = re.compile(r"^(.+\.py)\((\d+)\): (.+)$")


@functools.lru_cache(maxsize=None)
def _repo_file(path):
    """path relative to this repository if it is one of its files (absolute, or relative to it), else None; not a
    wrapper's, nor a package installed inside it (a virtual environment such as .venv/)."""
    path = path.replace(os.sep, "/")
    root = REPO.replace(os.sep, "/") + "/"
    rel = path.split(root, 1)[1] if root in path else path
    if rel.startswith(_WRAPPERS) or rel.startswith(".") or "site-packages/" in rel:
        return None
    return rel if os.path.isfile(os.path.join(REPO, rel)) else None


def _frame_line(frame):
    """"<file>(<line>): <function>" relative to this repository for a Python frame of one of its files, else None."""
    m = _FRAME.match(frame)
    rel = _repo_file(m.group(1)) if m else None
    return f"{rel}({m.group(2)}): {m.group(3)}" if rel else None


def _source_line(e, fwd=None):
    """The innermost frame of this repository's Python above a profiler event ("networks/x.py(12): fn"): from its
    ``stack`` (older torch) or from the events around it (the Python tracer's function events with with_stack, the
    ranges CallSites names by the calling line: the same "<file>(<line>): <function>" form); for the autograd
    engine's work (``fwd``: (thread, sequence number) -> line of the forward operators) the line of its forward
    operator, marked "(backward)"; else None."""
    for frame in e.stack or []:
        line = _frame_line(frame)
        if line:
            return line
    p = e.cpu_parent
    while p is not None:
        if fwd is not None and p.name.startswith(BACKWARD_NODE):
            line = fwd.get((p.fwd_thread, p.sequence_nr))
            return f"{line} (backward)" if line else None
        line = _frame_line(p.name)
        if line:
            return line
        p = p.cpu_parent
    return None


def _shapes(e):
    """" [shape, shape]" of an operator's first two tensor inputs (a profile with ``record_shapes``), or ""."""
    shapes = [list(s) for s in (getattr(e, "input_shapes", None) or []) if s][:2]
    return f" {shapes}" if shapes else ""


def source_times(events, n=1, top=30, cuda=True, shapes=False):
    """{"<file>(<line>): <function> <operator>": ms per step}: the device time (CUDA; CPU time on the CPU) of the
    operators that ran no other operator, by the line of this repository's Python that made them (a profile taken
    with ``with_stack``); the autograd engine's work by the line of its forward operator, marked "(backward)".
    ``shapes``: each key also names the operator's input shapes (a profile taken with ``record_shapes``)."""
    cpu = [e for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    fwd = {}
    for e in cpu:  # forward operators that made autograd nodes: (thread, sequence number) -> their line
        if e.sequence_nr >= 0 and not e.name.startswith(BACKWARD_NODE):
            line = _source_line(e)
            if line:
                fwd.setdefault((e.thread, e.sequence_nr), line)
    out = collections.Counter()
    for e in cpu:
        if not _launching(e) or any(_launching(c) for c in e.cpu_children):
            continue
        kernels = getattr(e, "kernels", None) or []
        t = sum(k.duration for k in kernels) if cuda else e.self_cpu_time_total
        if t <= 0:
            continue
        line = _source_line(e, fwd)
        out[f"{line or '(no line of this repository)'} {e.name}{_shapes(e) if shapes else ''}"] += t / 1e3 / n
    return dict(out.most_common(top))


def _call_site():
    """"<file>(<line>): <function>" of the innermost frame of this repository's Python on the stack (not a wrapper),
    or None."""
    f = sys._getframe(2)
    while f is not None:
        rel = _repo_file(f.f_code.co_filename)
        if rel:
            return f"{rel}({f.f_lineno}): {f.f_code.co_name}"
        f = f.f_back
    return None


class CallSites(torch.overrides.TorchFunctionMode):
    """Under it every torch function runs inside a profiler range named by the line of this repository that called
    it (``_call_site``), which _source_line reads as it reads the Python tracer's frames: the attribution then needs
    no Python tracer (on the GPU machine, torch 2.11 with CUDA activity, the tracer's frames did not reach the
    operators: every line was "no line of this repository"), and names the calling line, not the function's first."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        site = _call_site()
        if site is None:
            return func(*args, **(kwargs or {}))
        with torch.profiler.record_function(site):
            return func(*args, **(kwargs or {}))


def profile_sources(step, batch, device, n=1, shapes=False):
    """source_times of ``n`` steps of ``step`` (a second profile, its torch calls in ranges named by their line of
    this repository (CallSites) and with Python stacks: its host times are not comparable to profile_step's); with
    ``shapes`` a pair (by line, by line and input shapes). torch.compile'd functions (``--compile_loss``) run eagerly
    here: under a TorchFunctionMode dynamo would break their graphs at every operator and recompile them to its
    limit (seen on the H100: a "graph break" in the SSIM's pool, made by the mode itself); their fused time is in
    profile_step's families."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.compiler.set_stance("force_eager"), \
            profile(activities=acts, with_stack=True, record_shapes=shapes) as prof, CallSites():
        for _ in range(n):
            step(batch)
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.events()
    by_line = source_times(events, n, cuda=cuda)
    return (by_line, source_times(events, n, top=20, cuda=cuda, shapes=True)) if shapes else by_line


def stages_markdown(profiles):
    """profiles: {column name: profile_step result} -> one table per profile: stage, device / host ms, launches."""
    L = []
    for name, p in profiles.items():
        st = p.get("stages_ms") or {}
        if not st:
            continue
        L += [f"**{name}**", "", "| stage | device ms | host ms | launches | leaf operators |",
              "| --- | ---: | ---: | ---: | ---: |"]
        L += [f"| {k} | {v['device_ms']:.1f} | {v['host_ms']:.1f} | {v['launches']:.0f} | {v.get('ops', 0):.0f} |"
              for k, v in st.items()]
        tot = {k: sum(v.get(k, 0) for v in st.values()) for k in ("device_ms", "host_ms", "launches", "ops")}
        L += [f"| **total** | **{tot['device_ms']:.1f}** | **{tot['host_ms']:.1f}** | **{tot['launches']:.0f}** | "
              f"**{tot['ops']:.0f}** |", ""]
    return "\n".join(L)


def count_syncs(step, batch, device):
    """(number of host-device synchronisations in one step, {file:line: count}); (None, {}) without CUDA."""
    if device.type != "cuda":
        return None, {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(batch)
            torch.cuda.synchronize(device)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    sites = collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    return sum(sites.values()), dict(sites.most_common())


def families_markdown(profiles):
    """profiles: {column name: profile_step result} -> one table, a row per family, ms per step."""
    names = list(profiles)
    fams = []
    for p in profiles.values():
        fams += [f for f in p["families_ms"] if f not in fams]
    L = ["| family | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for f in fams:
        L.append(f"| {f} | " + " | ".join(f"{p['families_ms'].get(f, 0):.1f}" for p in profiles.values()) + " |")
    L.append("| **busy (sum)** | " + " | ".join(f"**{p['busy_ms']:.1f}**" for p in profiles.values()) + " |")
    L.append("| launches per step | " + " | ".join(f"{p['launches']:.0f}" for p in profiles.values()) + " |")
    return "\n".join(L)
