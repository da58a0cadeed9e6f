"""The stage-2 training step at the paper sizes: the old path (``OLD``) against each speed option, in one process.

    python tools/bench_render.py --speed_compare --out_dir $OUT                           # CUDA, both networks
    python tools/bench_render.py --speed_compare --quick --device cpu --out_dir /tmp/s    # CPU smoke run (< 30 s)

Order (CUDA): gsplat's kernels build in a background process (tools/gsplat_build.py, its log in gsplat_build.log)
while the component benchmarks run (tools/bench/components.py: copy and matmul ceilings, normalisation, 3D
convolution, lifting at the paper sizes); then, per network (``--step_net``: project, authors), the trainer's step
(zero_grad, forward under bf16 autocast, backward, grad clip, AdamW) of GSVModel at input 384x640, render 180x320,
grid 300 300 24, random init, ``--pose gt --use_sem true``, one batch on the device: ``old`` (the step before the
speed options: cudnn.benchmark, channels_last encoders), ``all`` (every option of ``ALL_ON``: the option defaults),
each option alone over ``old``, then ``all`` + gsplat's tile 8, unpacked and
(``--step_compile``) torch.compile, while ``--speed_budget`` lasts. Every
variant starts from the same weights (the old path's, copied), so the first step's loss compares the arithmetic:
``loss_rel_diff`` against the old path's. ``old`` and ``all`` (``--profile_variants``) are also profiled (``--profile``: device time per kernel
family, top operators, host-device synchronisations: tools/bench/profile.py).

Per variant: ``model_s`` median of ``--step_repeats`` steps after ``--warmup`` (+1: the first step pays cuDNN's
algorithm search), ``min_s``, the first step, peak memory, Gaussians. ``--speed_rounds R`` (default 3): after the
full pass, the variants of priority <= 1 (old, all, the ones under test) run R - 1 more times in the same order, and
``model_s`` is the median of the R medians (``round_s``): rows of the same settings spread ~7 % within one pass on an
H200 (drift between variants), so a single pass cannot tell 5 % apart. Files in ``--out_dir``: bench_speed.md
(tables), bench_speed.json (every number; ``scalars``: step_s_<net> = all, step_s_<net>_old = old, best variant,
loss differences; tools/record_result.py reads them), bench_speed_profile.txt (operator tables), gsplat_build.log.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from options import parse_args as parse_model_args
from tools.bench import components
from tools.bench.harness import PAPER_MODEL, QUICK_MODEL, free_memory, make_train_step, sync
from tools.bench.profile import count_syncs, families_markdown, profile_sources, profile_step, stages_markdown
from tools.bench.scene import train_batch
from tools.bench.step_compare import NETS
from utils.speed import prepare_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The step before the speed options (the defaults until they measured faster on one H200, docs/speed.md)
OLD = {"channels_last_3d": False, "group_norm_impl": "torch", "batch_norm_impl": "torch", "lift_impl": "grid_sample",
       "raster_zsq": "per_camera", "fused_optimizer": False, "graph_encoder": False, "graph_volume": False,
       "split_lift_conv": False, "ssim_pool_impl": "torch", "graph_loss": False, "compile_loss": False}
# every speed option on = the option defaults (the fused optimizer in it since 2026-12-04; before, ``all`` left it out
# and ``all +fused optimizer`` was the defaults)
# the fused norms and the graphed encoder in it since 2026-12-06 (before: ``defaults +fused norms +graphed encoder``)
# the split first convolution in it since 2026-12-06 (before: ``all +split lift conv``; only this project's network has
# a 65-channel lifted volume, the authors' lifts 64)
# the graphed 3D CNN for the authors' hourglass (graph_volume auto) since 2026-12-06 (before: ``defaults +graphed
# volume`` for that network)
# the SSIM pool's Triton kernels in it since 2026-12-06 (before: ``defaults +fused ssim pool``), and the compiled
# photometric error and smoothness (--compile_loss auto: on for stage 2; before: ``defaults +compiled loss``)
ALL_ON = {"channels_last_3d": True, "group_norm_impl": "fused", "batch_norm_impl": "fused", "lift_impl": "gather",
          "raster_zsq": "moments", "fused_optimizer": True, "graph_encoder": True, "graph_volume": "auto",
          "split_lift_conv": True, "ssim_pool_impl": "fused", "compile_loss": "auto"}
# (name, settings over the option defaults, networks (None: every one), priority: lower runs first)
DEFAULTS = {**OLD, **ALL_ON}
FUSED_NORMS = {"group_norm_impl": "fused", "batch_norm_impl": "fused"}  # networks/norm_kernels.py
GRAPHED_ENCODER = {"graph_encoder": True}  # networks/occ_net.OccNet.features_step
GRAPHED_VOLUME = {"graph_volume": True}  # networks/occ_net.OccNet.volume_step
BF16_LIFT = {"lift_dtype": "features"}  # networks/lift_gather.py: the volume in the features' bf16
VARIANTS = [
    ("old", OLD, None, 0),
    ("all", DEFAULTS, None, 0),
    ("+channels_last_3d", {**OLD, "channels_last_3d": True}, None, 1),
    ("+group_norm parallel", {**OLD, "group_norm_impl": "parallel"}, ("project", "quick"), 1),
    ("+lift gather", {**OLD, "lift_impl": "gather"}, None, 1),
    ("+zsq moments", {**OLD, "raster_zsq": "moments"}, None, 1),
    ("+fused optimizer", {**OLD, "fused_optimizer": True}, None, 1),
    ("all +tile 8", {**DEFAULTS, "gsplat_tile_size": 8}, None, 2),
    ("all +unpacked", {**DEFAULTS, "gsplat_packed": False}, None, 3),
    # the norms' sums as tensor-core matrix products (networks/fast_norm.py), over the option defaults
    ("defaults +gemm norms", {**DEFAULTS, "group_norm_impl": "gemm", "batch_norm_impl": "gemm"}, None, 1),
    # each norm pass one Triton kernel, over the option defaults
    ("defaults +fused norms", {**DEFAULTS, **FUSED_NORMS}, None, 1),
    # the image encoder's forward and backward as CUDA graphs
    ("defaults +graphed encoder", {**DEFAULTS, **GRAPHED_ENCODER}, None, 1),
    ("defaults +fused norms +graphed encoder", {**DEFAULTS, **FUSED_NORMS, **GRAPHED_ENCODER}, None, 1),
    # the 3D CNN's forward and backward as CUDA graphs too: the fused norms' launches off the host
    ("defaults +fused norms +graphed encoder +graphed volume",
     {**DEFAULTS, **FUSED_NORMS, **GRAPHED_ENCODER, **GRAPHED_VOLUME}, None, 1),
    ("defaults +graphed encoder +graphed volume", {**DEFAULTS, **GRAPHED_ENCODER, **GRAPHED_VOLUME}, None, 1),
    # the lifted volume in bf16: no float32 volume for the 3D CNN's first convolution to cast forward and back
    ("defaults +fused norms +graphed encoder +bf16 lift", {**DEFAULTS, **FUSED_NORMS, **GRAPHED_ENCODER, **BF16_LIFT},
     None, 1),
    ("defaults +fused norms +graphed encoder +graphed volume +bf16 lift",
     {**DEFAULTS, **FUSED_NORMS, **GRAPHED_ENCODER, **GRAPHED_VOLUME, **BF16_LIFT}, None, 1),
    # the lifted features and visibility as one 65-channel volume (the first convolution not split)
    ("defaults -split lift conv", {**DEFAULTS, "split_lift_conv": False}, ("project", "quick"), 1),
    # the authors' hourglass eager (--graph_volume auto graphs it)
    ("defaults -graphed volume", {**DEFAULTS, "graph_volume": False}, ("authors", "quick"), 1),
    # the loss terms' forward and backward as CUDA graphs (networks/loss_graph.py; the same kernels replayed), on
    # the steps that write no scalars (the trainer's 19 in 20: the steps that log run the terms eagerly); against
    # "defaults, not logged"
    ("defaults +graphed loss, not logged", {**DEFAULTS, "graph_loss": True, "_log_details": False}, None, 1),
    # the SSIM's 3x3 means through avg_pool2d (the defaults take them as Triton kernels, utils/pool_kernels.py: the
    # same numbers on CUDA)
    ("defaults -fused ssim pool", {**DEFAULTS, "ssim_pool_impl": "torch"}, None, 1),
    # the photometric error and the smoothness eager (the defaults run them through torch.compile, utils/losses.py)
    ("defaults -compiled loss", {**DEFAULTS, "compile_loss": False}, None, 1),
    ("all +compile", {**DEFAULTS, "compile": True}, None, 4),
    # the option defaults on a step that writes no scalars (the trainer's 19 in 20: no depth quantiles, no fog stats)
    ("defaults, not logged", {**DEFAULTS, "_log_details": False}, None, 1),
]
PROFILED = ("old", "all")  # the default of --profile_variants
COMPILE_EXTRA_S = 240  # what torch.compile may add to a variant (estimate for the budget)
COMPILE_LOSS_EXTRA_S = 90  # the same for --compile_loss (two small functions)


ROUND_PRIORITY = 1  # variants of this priority or lower are timed again in the later rounds (--speed_rounds)


def plan(args, max_priority=None):
    """(net, name, settings) in the order they run (with ``max_priority``: only those of that priority or lower)."""
    nets = ["quick"] if args.quick else args.step_net
    out = []
    for prio in sorted({v[3] for v in VARIANTS}):
        if max_priority is not None and prio > max_priority:
            continue
        for net in nets:
            for name, settings, only, p in VARIANTS:
                if p != prio or (only is not None and net not in only):
                    continue
                if settings.get("compile") and not args.step_compile:
                    continue
                wanted = getattr(args, "speed_variants", None)
                if wanted and name not in ("old", "all") and name not in wanted:
                    continue
                out.append((net, name, settings))
    return out


def more_rounds(rows, args, device, ref_states, deadline, log, t_start):
    """Rounds 2..--speed_rounds: the priority <= ROUND_PRIORITY variants again, in turn; each row keeps
    ``round_s`` (every round's median) and its ``model_s`` becomes their median, ``min_s`` the least of all."""
    by_key = {(r["net"], r["variant"]): r for r in rows if r["status"] == "ok"}
    order = [(n, v, s) for n, v, s in plan(args, ROUND_PRIORITY) if (n, v) in by_key]
    timed = [by_key[(n, v)] for n, v, _ in order]
    for r in timed:
        r["round_s"] = [r["model_s"]]
    for rnd in range(2, getattr(args, "speed_rounds", 1) + 1):
        for net, name, settings in order:
            row = by_key[(net, name)]
            if time.perf_counter() + row["wall_s"] * 1.3 > deadline:
                log(f"round {rnd}: {net}: {name} skipped (time budget)")
                continue
            try:
                again = run_variant(net, name, settings, args, device, ref_states, profile=False)
            except Exception as err:  # the first round's numbers stand
                log(f"round {rnd}: {net}: {name}: {type(err).__name__}: {err}")
                continue
            row["round_s"].append(again["model_s"])
            row["min_s"] = min(row["min_s"], again["min_s"])
            log(f"[{time.perf_counter() - t_start:5.0f} s] round {rnd}: {net}: {name} step {again['model_s']:.4f} s")
            free_memory(device)
    for r in timed:
        r["first_round_s"] = r["model_s"]
        r["model_s"] = statistics.median(r["round_s"])


def start_gsplat_build(device, out_dir):
    """Builds gsplat's kernels in a background process (CUDA and an importable gsplat); returns it or None."""
    if device.type != "cuda":
        return None
    try:
        import gsplat  # noqa: F401
    except Exception:
        return None
    log = open(os.path.join(out_dir, "gsplat_build.log"), "w")
    return subprocess.Popen([sys.executable, "-m", "tools.gsplat_build"], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)


def gsplat_ready(device, proc, log):
    """Waits for the build, loads the kernels here and renders once: (ok, detail, seconds waited)."""
    from utils.raster_backend import gsplat_status
    t0 = time.perf_counter()
    if proc is not None:
        proc.wait()
    ok, detail = gsplat_status()
    if ok:
        try:
            from tools.gsplat_build import smoke_render
            smoke_render(device)
        except Exception as err:
            ok, detail = False, f"first render failed ({type(err).__name__}: {err})"
    log(f"gsplat: {detail} (waited {time.perf_counter() - t0:.0f} s)")
    return ok, detail


def build_model(opt, device, seed, ref_state):
    """GSVModel on ``device`` (made there when it can be), with ``ref_state``'s weights when given."""
    from networks.gsv_model import GSVModel
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = GSVModel(opt)
    except Exception:  # something in the constructor wants the CPU
        torch.manual_seed(seed)
        model = GSVModel(opt)
    model = model.to(device).train()
    if ref_state is not None:
        model.load_state_dict(ref_state)
    return model


def step_options(net, settings, device, seed):
    """The options of the benchmark's step: network ``net`` (a key of NETS at the paper sizes, or "quick"),
    ``settings`` ({option: value}; keys starting with "_" are the harness's own) over the option defaults, bf16
    autocast and gsplat on CUDA."""
    amp = "bf16" if device.type == "cuda" else "none"
    argv = ["--stage", "gsv", "--pose", "gt", "--use_sem", "true", "--seed", str(seed), "--amp", amp,
            "--raster_backend", "gsplat" if device.type == "cuda" else "torch",
            *(QUICK_MODEL if net == "quick" else PAPER_MODEL + NETS[net]),
            *[x for k, v in settings.items() if not k.startswith("_") for x in (f"--{k}", str(v).lower())]]
    return parse_model_args(argv)


def run_variant(net, name, settings, args, device, ref_states, profile=True):
    """One row: the model step's timings of a variant, its first loss and (PROFILED) its profile."""
    opt = step_options(net, settings, device, args.seed)
    row = {"net": net, "variant": name, "settings": settings, "status": "ok"}
    t0 = time.perf_counter()
    model = build_model(opt, device, args.seed, ref_states.get(net))
    if net not in ref_states:
        ref_states[net] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    row["applied"] = "; ".join(prepare_model(model, opt, device)) or "-"
    step = make_train_step(model, opt, device, log_details=settings.get("_log_details", True),
                           frozen=getattr(args, "speed_weights", "frozen") == "frozen")
    batch = train_batch(opt, device, args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + 1 + args.step_repeats):
        sync(device)
        t = time.perf_counter()
        loss, logs = step(batch)
        sync(device)
        if i == 0:
            row.update(loss_first=loss, first_step_s=time.perf_counter() - t,
                       n_gaussians=float(logs["num_gaussians"]))
        elif i > args.warmup:
            times.append(time.perf_counter() - t)
    # the last timed step's loss: with frozen weights every variant's steps see the same weights, so this compares the
    # paths a variant takes after its first step (a CUDA graph captured at the second, --graph_loss) with the old one
    row.update(model_s=statistics.median(times), min_s=min(times), n_runs=len(times), loss_last=loss)
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if profile and args.profile and name in getattr(args, "profile_variants", PROFILED):
        row["profile"] = profile_step(lambda b: step(b), batch, device)
        row["profile"]["sources_ms"], row["profile"]["sources_shapes_ms"] = profile_sources(
            lambda b: step(b), batch, device, shapes=True)
        row["syncs"], row["sync_sites"] = count_syncs(lambda b: step(b), batch, device)
    row["wall_s"] = time.perf_counter() - t0
    return row


def run(args, device, meta, log=print):
    """Everything; writes the files of the module docstring to ``args.out_dir`` and returns the result dict."""
    t_start = time.perf_counter()
    deadline = t_start + args.speed_budget
    os.makedirs(args.out_dir, exist_ok=True)
    proc = start_gsplat_build(device, args.out_dir)
    if proc is not None:
        log("gsplat: building its kernels in the background (gsplat_build.log)")
    comp = components.run_components(device, quick=args.quick, log=log)
    ok, detail = gsplat_ready(device, proc, log) if device.type == "cuda" else (False, "no CUDA: torch rasteriser")
    meta.update(gsplat_usable=ok, gsplat_detail=detail, components_and_build_s=round(time.perf_counter() - t_start, 1),
                speed_weights=getattr(args, "speed_weights", "frozen"))
    rows, ref_states, est = [], {}, {}
    for net, name, settings in plan(args):
        compiles_loss = settings.get("compile_loss") is not False and device.type == "cuda"
        need = est.get(net, 0) * 1.3 + (COMPILE_EXTRA_S if settings.get("compile") else
                                        COMPILE_LOSS_EXTRA_S if compiles_loss else 0)
        if device.type == "cuda" and not ok:
            rows.append({"net": net, "variant": name, "settings": settings, "status": f"gsplat unavailable: {detail}"})
            continue
        if time.perf_counter() + need > deadline:
            rows.append({"net": net, "variant": name, "settings": settings, "status": "skipped (time budget)"})
            continue
        log(f"[{time.perf_counter() - t_start:5.0f} s] {net}: {name}", end=" ")
        try:
            row = run_variant(net, name, settings, args, device, ref_states)
            est[net] = max(est.get(net, 0), row["wall_s"])
            log(f"step {row['model_s']:.4f} s (first {row['first_step_s']:.1f} s, loss {row['loss_first']:.5f})")
        except Exception as err:
            row = {"net": net, "variant": name, "settings": settings,
                   "status": f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
            log(row["status"])
        rows.append(row)
        free_memory(device)
    more_rounds(rows, args, device, ref_states, deadline, log, t_start)
    compare(rows)
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    result = {"meta": meta, "scalars": scalars(rows), "rows": rows, "components": comp}
    write(result, args.out_dir, log)
    return result


def compare(rows):
    """speedup and loss_rel_diff of every row against the old path's row of its network."""
    for r in rows:
        ref = next((x for x in rows if x["net"] == r["net"] and x["variant"] == "old" and x["status"] == "ok"), None)
        if ref and r["status"] == "ok":
            r["speedup"] = ref["model_s"] / r["model_s"]
            r["loss_rel_diff"] = abs(r["loss_first"] - ref["loss_first"]) / max(abs(ref["loss_first"]), 1e-12)
            if r.get("loss_last") is not None and ref.get("loss_last") is not None:
                r["loss_last_rel_diff"] = abs(r["loss_last"] - ref["loss_last"]) / max(abs(ref["loss_last"]), 1e-12)


def scalars(rows):
    """Headline numbers per network: step_s_<net> (all), step_s_<net>_old (the old path), the best variant whose first
    loss is within 1e-3 of the old path's, and the loss differences."""
    out = {}
    for net in dict.fromkeys(r["net"] for r in rows):
        ok = {r["variant"]: r for r in rows if r["net"] == net and r["status"] == "ok"}
        if "old" in ok:
            out[f"step_s_{net}_old"] = ok["old"]["model_s"]
        if "all" in ok:
            out[f"step_s_{net}"] = ok["all"]["model_s"]
            out[f"loss_rel_diff_{net}"] = ok["all"].get("loss_rel_diff")
        good = [r for r in ok.values() if r.get("loss_rel_diff") is not None and r["loss_rel_diff"] <= 1e-3]
        if good:
            best = min(good, key=lambda r: r["model_s"])
            out[f"step_s_{net}_best"], out[f"best_variant_{net}"] = best["model_s"], best["variant"]
    return out


def markdown(result):
    meta, rows = result["meta"], result["rows"]
    L = ["# Stage-2 training step: the old path and the speed options", "",
         f"- device: {meta['device']}; torch {meta['torch']} (CUDA {meta['cuda']}); gsplat {meta['gsplat']} "
         f"({meta.get('gsplat_detail', '')})",
         f"- date: {meta['date']}; command: `{meta['command']}`; {meta.get('elapsed_s')} s "
         f"(components and gsplat build: {meta.get('components_and_build_s')} s)",
         "- step: median of the timed steps, one batch on the device (bf16 on CUDA); with rounds (the old path, all "
         "options and the priority-1 variants timed again in turn): the median of the rounds' medians; every variant "
         "starts from the old path's weights"
         + ("; the weights frozen (lr 0: every step the same work)" if meta.get("speed_weights") == "frozen" else
            "; the weights trained along the timed steps (lr of the trainer; the work moves with them)")
         + "; loss rel. diff = first step's loss against the old path's, and the last timed step's (with frozen "
         "weights the same weights: what a variant runs after its first step, e.g. a graph)", "",
         "| network | variant | applied | step s | rounds (s) | min s | speed-up | first step s | loss rel. diff | "
         "last loss rel. diff | peak GiB | Gaussians |",
         "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    f = lambda r, k, fmt: format(r[k], fmt) if r.get(k) is not None else "-"  # noqa: E731
    for r in rows:
        if r["status"] != "ok":
            L.append(f"| {r['net']} | {r['variant']} | {r['status']} | | | | | | | | | |")
            continue
        rounds = " / ".join(f"{t:.4f}" for t in r.get("round_s", [])) if len(r.get("round_s", [])) > 1 else "-"
        L.append(f"| {r['net']} | {r['variant']} | {r['applied']} | {f(r, 'model_s', '.4f')} | {rounds} | "
                 f"{f(r, 'min_s', '.4f')} | {f(r, 'speedup', '.2f')}x | {f(r, 'first_step_s', '.1f')} | "
                 f"{f(r, 'loss_rel_diff', '.1e')} | {f(r, 'loss_last_rel_diff', '.1e')} | "
                 f"{f(r, 'peak_mem_gib', '.1f')} | {f(r, 'n_gaussians', '.0f')} |")
    L += ["", "Headline (JSON `scalars`): " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in result["scalars"].items()), ""]
    L += ["## Components (tools/bench/components.py)", "", components.markdown(result["components"]), ""]
    prof = {f"{r['net']}: {r['variant']}": r["profile"] for r in rows if r.get("profile")}
    if prof:
        walls = ", ".join(f"{r['net']}: {r['variant']} {r['model_s'] * 1e3:.1f}" for r in rows if r.get("profile"))
        L += ["## Profile: device time per kernel family, ms per step (tools/bench/profile.py)", "",
              families_markdown(prof), "", f"Wall ms per step of the same variants: {walls}.", "",
              "Inclusive device time of some operators and autograd nodes, ms per step (nested entries overlap):", ""]
        L += [f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in p["ops_ms"].items()) for name, p in prof.items()]
        L += ["", "Device time by the line of this repository that made the work, ms per step (the 30 largest; "
              "tools/bench/profile.py `source_times`, each torch call in a range named by its line: CallSites):", ""]
        for name, p in prof.items():
            L += [f"**{name}**", ""] + [f"- {v:.2f} {k}" for k, v in (p.get("sources_ms") or {}).items()] + [""]
        L += ["The same by line and input shapes (the 20 largest):", ""]
        for name, p in prof.items():
            L += [f"**{name}**", ""] + [f"- {v:.2f} {k}" for k, v in (p.get("sources_shapes_ms") or {}).items()] + [""]
        L += ["", "## Per stage of the step: device time, host time (the CPU's own time of the operators and the Python "
              "between them) and kernel launches, ms per step (tools/bench/profile.py `stage_times`; a stage whose host "
              "time exceeds its device time sets the pace itself)", "", stages_markdown(prof)]
        syncs = "; ".join(f"{r['net']}: {r['variant']} {r['syncs']} ("
                          f"{', '.join(f'{k} x{v}' for k, v in r['sync_sites'].items())})"
                          for r in rows if r.get("profile") and r.get("syncs") is not None)
        L += [f"Host-device synchronisations in one step: {syncs or '(counted on CUDA only)'}", ""]
    return "\n".join(L)


def write(result, out_dir, log):
    tables = "\n\n".join(f"## {r['net']}: {r['variant']}\n{r['profile'].pop('table')}" for r in result["rows"]
                         if r.get("profile"))
    if tables:
        with open(os.path.join(out_dir, "bench_speed_profile.txt"), "w") as fh:
            fh.write(tables + "\n")
    md = markdown(result)
    with open(os.path.join(out_dir, "bench_speed.md"), "w") as fh:
        fh.write(md + "\n")
    with open(os.path.join(out_dir, "bench_speed.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    log("\n" + md)
