"""Efficiency benchmark: GSV (voxel Gaussians splatted) against volume rendering, on this project's code.

The paper's claim (GaussianOcc, Sec. 4): rendering the 24x300x300 volume into 6 views at 180x320 is ~5x faster
with Gaussian splatting than with volume rendering (0.17 s vs 0.85 s on an A100) and a training iteration ~2.7x.

    python tools/bench_render.py --out_dir bench                    # CUDA + gsplat: the full benchmark (~5-6 min)
    python tools/bench_render.py --out_dir bench --skip_full_iter   # render part only
    python tools/bench_render.py --quick --device cpu --out_dir /tmp/b   # CPU smoke run (tiny sizes, < 1 min)
    python tools/bench_render.py --step_compare --out_dir bench_step  # training step, old vs new code path
                                                                      # (tools/bench/step_compare.py)
    python tools/bench_render.py --speed_compare --profile --out_dir bench_speed  # issue 20: today's step vs each
                                                                      # speed option (tools/bench/speed_compare.py)

1. Render benchmark. For every grid (Z x X x Y, as the paper writes them; the volume is (X, Y, Z), X forward,
   over the Occ3D range [-40, 40]^2 x [-1, 5.4] m) and every render size (H x W), the 6 cameras of the real
   nuScenes scene-0916 rig (``datasets/synthetic/rig.py``; intrinsics of the 1600x900 images rescaled to H x W
   with the project's pixel-centre convention) render one synthetic street scene (ground layer with road /
   sidewalk / terrain, cars, trucks, a bus, pedestrians, cones, barriers, trees, buildings; a fuzzy one-voxel
   margin around objects and a few floaters; 5-10 % of the voxels occupied) given as an 18-class logit volume
   with requires_grad (last channel = free). Methods:
     * ``gsplat``: ``voxels_to_gaussians`` (opacity = 1 - p(free), features = the 17 semantic logits, pruning of
       opacity < 1/255 and of voxels behind every camera, as in GSVModel) + ``rasterize(backend="gsplat")``;
     * ``torch``: the same with the pure PyTorch reference rasteriser;
     * ``volume``: occupancy = 1 - p(free), features = the 17 semantic logits, ``render_volume`` (step = half a
       voxel, near 0.1 m, far 80 m, as GSVModel's ``--render_type volume``).
   The conversion from logits counts in every method. Gaussian scale: ``--gs_scale`` when given, else 0.375 x
   the horizontal voxel size (80 m / X), i.e. voxel / 2.67: 0.15 m at 16x200x200, 0.1 m at 24x300x300 (the
   paper's best fixed scale), 0.059 m at 32x512x512. Modes: ``fwd`` (under torch.no_grad, inference) and
   ``fwd+bwd`` (autograd on, backward of depth.mean() + alpha.mean() + features.mean() down to the logits).
   Each case: ``--warmup`` untimed runs, then up to ``--repeats`` timed runs (wall clock between
   torch.cuda.synchronize calls), median reported; the runs of one case stop at ``--max_seconds_per_case``
   (at least one timed run; when the warm-up alone passes the cap, its time is reported, marked). Peak memory =
   torch.cuda.max_memory_allocated over the case (after reset_peak_memory_stats), inputs included. A case whose
   time, extrapolated linearly in 6 H W / voxel size from the largest case already measured for the same method
   and mode, cannot fit warm-up + one run in the cap is skipped ("skipped (est. N s)"); cases that do not fit
   the remaining ``--time_budget`` are skipped too; out of memory is recorded as "OOM". gsplat without CUDA is
   "unavailable". Sanity check: for each GSV method, the median relative difference of expected depth (depth /
   alpha) to the volume rendering over pixels with alpha > 0.9 in both (``depth_rel_diff``).
2. Full training iteration: GSVModel at the paper's config (input 384x640, render 180x320, grid 300 300 24,
   the options' default encoder, random init, batch 1, ``--pose gt``, ``--use_sem true``) on random smooth
   images, the rig's K / cam2ego, ego poses prev / cur / next 1 m apart along x, random 2D labels. Timed: the
   trainer's step (zero_grad, forward under autocast when ``--amp``, backward, grad clip 5, AdamW step).
   Variants: gs + gsplat, volume, both with ``--amp bf16``, and gs + torch backend (last, when time is left).
   Note: a randomly initialised OccNet starts every voxel at opacity 0.1, so every voxel is a Gaussian (the
   worst case for splatting; a trained net prunes most of them).
3. Output (``--out_dir``): bench_render.md / .csv / .json and bench_render.png (log-scale grouped bars), with
   the device, torch / CUDA / gsplat versions and the date; the markdown tables are printed at the end.

Execution order: gsplat's first call (JIT compile, timed separately), the paper's case (24x300x300 at 180x320)
when it is in the lists, the training iterations, then the other render cases: all gsplat ones, then volume, then
torch, each by increasing work (so the time budget cuts the slow methods' biggest cases).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.bench.harness import METHODS, MODES, Bench, parse_triplets  # noqa: E402,F401 (re-exported)
from tools.bench.report import environment, markdown, plot, speedups, write_csv  # noqa: E402
from tools.bench.scene import scene_labels, scene_logits  # noqa: E402,F401 (re-exported)

PAPER_GRID, PAPER_SIZE = (24, 300, 300), (180, 320)
FULL_DEFAULT_GRIDS = "16x200x200,24x300x300,32x512x512"
FULL_DEFAULT_SIZES = "180x320,240x520,360x640"
QUICK_GRIDS, QUICK_SIZES = "8x100x100", "24x40,36x64"  # isotropic 0.8 m voxels: GSV and VR comparable


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=str, default="bench_render", help="folder of the md / csv / json / png")
    p.add_argument("--device", type=str, default=None, help="cuda if available, else cpu")
    p.add_argument("--grids", type=str, default=None,
                   help=f"comma-separated Z x X x Y grids (default {FULL_DEFAULT_GRIDS}; --quick {QUICK_GRIDS})")
    p.add_argument("--sizes", type=str, default=None,
                   help=f"comma-separated H x W render sizes (default {FULL_DEFAULT_SIZES}; --quick {QUICK_SIZES})")
    p.add_argument("--methods", type=str, default=",".join(METHODS), help="subset of gsplat,torch,volume")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5; --quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per case before the timed ones")
    p.add_argument("--max_seconds_per_case", type=float, default=None,
                   help="stop timing a case after this many seconds (default 20; --quick 10)")
    p.add_argument("--time_budget", type=float, default=None,
                   help="seconds for the whole benchmark; later cases that do not fit are skipped "
                        "(default 330 = 5.5 min; --quick 120)")
    p.add_argument("--gs_scale", type=float, default=None,
                   help="fixed Gaussian scale in metres for every grid (default: 0.375 x horizontal voxel size)")
    p.add_argument("--seed", type=int, default=0, help="scene / input seed")
    p.add_argument("--quick", action="store_true", help="tiny grids, sizes and model: CPU smoke run")
    p.add_argument("--skip_full_iter", action="store_true", help="render benchmark only")
    p.add_argument("--full_iter_repeats", type=int, default=None, help="timed training steps (default 3; quick 1)")
    p.add_argument("--full_iter_torch", action="store_true",
                   help="also time the training iteration with the torch rasteriser (always when gsplat is "
                        "unavailable); on the GPU at the paper config it is slow (2M Gaussians at init)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    g = p.add_argument_group("step comparison", "--step_compare: the training step, old code path vs new "
                             "(tools/bench/step_compare.py); the render benchmark is not run then")
    g.add_argument("--step_compare", action="store_true", help="time the old vs the new training step")
    g.add_argument("--step_amp", type=str, default=None, help="comma-separated amp modes (default none,bf16; "
                   "--quick or CPU: none)")
    g.add_argument("--step_net", type=str, default="project",
                   help="comma-separated networks: project (the one issue 5 measured, 0.163 s), authors (today's "
                        "defaults); --quick uses a tiny one")
    g.add_argument("--step_repeats", type=int, default=None, help="timed model steps (default 10; --quick 2)")
    g.add_argument("--step_iters", type=int, default=None,
                   help="timed steps fed by the DataLoader (default 24; --quick 4)")
    g.add_argument("--step_workers", type=int, default=None, help="DataLoader workers (default 4; --quick 0)")
    g.add_argument("--step_ablations", action="store_true", help="also 'new' without each speed option")
    g.add_argument("--step_compile", action="store_true", help="also 'new' with torch.compile (slow to start)")
    g.add_argument("--profile", action="store_true",
                   help="top operators of the new step (torch.profiler) to bench_step_profile.txt; with "
                        "--speed_compare: the profile of today's and of all options' step")
    g = p.add_argument_group("speed options", "--speed_compare: the training step with each speed option of issue "
                             "20 against today's path (tools/bench/speed_compare.py); uses --step_net, "
                             "--step_repeats, --warmup, --step_compile, --profile")
    g.add_argument("--speed_compare", action="store_true", help="time today's step against each speed option")
    g.add_argument("--speed_budget", type=float, default=None,
                   help="seconds for the whole comparison, gsplat's build included; later variants that do not fit "
                        "are skipped (default 480; --quick 60)")
    g.add_argument("--speed_rounds", type=int, default=3,
                   help="the old path, all options and the priority-1 variants are timed this many times in turn "
                        "(round 1 is the full pass; each later round runs them again in the same order); step s = "
                        "median of the rounds' medians, so that drift of the GPU between variants cancels")
    g.add_argument("--speed_weights", type=str, default="frozen", choices=["frozen", "trained"],
                   help="frozen: the timed steps run with learning rate 0 (the optimiser's kernels run, the weights "
                        "stay, every step does the same work); trained: the trainer's learning rate, the weights move "
                        "on the one batch and the rasteriser's work with them (the protocol of the runs before commit "
                        "a928f91)")
    g.add_argument("--speed_variants", type=str, default=None,
                   help="variant names separated by ';' to time besides old and all (default: every variant)")
    g.add_argument("--profile_variants", type=str, default="old;all",
                   help="with --profile: the variants to profile, names separated by ';' (default: old;all)")
    p.add_argument("--no_plot", action="store_true", help="do not write bench_render.png")
    return p


def variant_names(flag, text):
    """The ';'-separated speed-comparison variant names of ``flag``, each checked against the known ones."""
    from tools.bench.speed_compare import VARIANTS
    names = [v.strip() for v in text.split(";") if v.strip()]
    unknown = [v for v in names if v not in {x[0] for x in VARIANTS}]
    if unknown:
        raise SystemExit(f"{flag}: unknown {unknown}; choose from {', '.join(x[0] for x in VARIANTS)}")
    return names


def resolve_args(argv=None):
    args = build_parser().parse_args(argv)
    q = args.quick
    args.grids = args.grids or (QUICK_GRIDS if q else FULL_DEFAULT_GRIDS)
    args.sizes = args.sizes or (QUICK_SIZES if q else FULL_DEFAULT_SIZES)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 5)
    args.max_seconds_per_case = args.max_seconds_per_case or (10.0 if q else 20.0)
    args.time_budget = args.time_budget or (120.0 if q else 330.0)
    args.full_iter_repeats = args.full_iter_repeats or (1 if q else 3)
    cpu = args.device == "cpu" or not torch.cuda.is_available()
    args.step_amp = (args.step_amp or ("none" if q or cpu else "none,bf16")).split(",")
    args.step_repeats = args.step_repeats or (2 if q else 10)
    args.step_net = args.step_net.split(",")
    args.step_iters = args.step_iters or (4 if q else 24)
    args.step_workers = args.step_workers if args.step_workers is not None else (0 if q else 4)
    args.speed_budget = args.speed_budget or (60.0 if q else 480.0)
    if args.speed_variants:
        args.speed_variants = variant_names("--speed_variants", args.speed_variants)
    if args.speed_compare:
        args.profile_variants = variant_names("--profile_variants", args.profile_variants)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    return args


def main(argv=None):
    args = resolve_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    grids, sizes = parse_triplets(args.grids, 3), parse_triplets(args.sizes, 2)
    os.makedirs(args.out_dir, exist_ok=True)
    command = "python tools/bench_render.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.speed_compare:  # gsplat builds in the background there, while the components run
        from types import SimpleNamespace
        from tools.bench.speed_compare import run as speed_run
        meta = environment(device, SimpleNamespace(gsplat_ok=None, gsplat_first_call_s=None))
        meta["command"] = command
        return speed_run(args, device, meta)
    bench = Bench(args, device)
    bench.warm_gsplat()
    if args.step_compare:
        from tools.bench.step_compare import run
        meta = environment(device, bench)
        meta["command"] = "python tools/bench_render.py " + " ".join(sys.argv[1:] if argv is None else argv)
        return {"meta": meta, "step": run(args, device, meta)}

    def work(c):
        (Z, X, Y), (h, w) = c
        return 6 * h * w / (80.0 / X + 80.0 / Y + 6.4 / Z)

    cases = sorted(((g, s) for g in grids for s in sizes), key=work)
    first = [c for c in cases if c == (PAPER_GRID, PAPER_SIZE)]
    for g, s in first:
        for m in args.methods:
            for mode in MODES:
                bench.render_case(g, s, m, mode)
    train_variants = [("gs", "gsplat", None), ("volume", "gsplat", None), ("gs", "gsplat", "bf16"),
                      ("volume", "gsplat", "bf16")]
    if not args.skip_full_iter:
        for rt, be, amp in train_variants:
            bench.train_case(rt, be, amp)
    # The rest, cheapest method first (gsplat, then volume, then torch), each by increasing work: what the
    # time budget cuts is the slow methods' biggest cases.
    for m in sorted(args.methods, key=("gsplat", "volume", "torch").index):
        for g, s in cases:
            if (g, s) in first:
                continue
            for mode in MODES:
                bench.render_case(g, s, m, mode)
    if not args.skip_full_iter and (args.full_iter_torch or not bench.gsplat_ok):
        bench.train_case("gs", "torch", None)
    bench.finish_render()

    meta = environment(device, bench)
    meta["command"] = "python tools/bench_render.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta["elapsed_s"] = round(bench.elapsed(), 1)
    meta["settings"] = {k: v for k, v in vars(args).items()}
    md = markdown(meta, args, bench.rows, bench.train_rows)
    paths = {k: os.path.join(args.out_dir, f"bench_render.{k}") for k in ("md", "csv", "json", "png")}
    with open(paths["md"], "w") as f:
        f.write(md + "\n")
    write_csv(paths["csv"], bench.rows, bench.train_rows)
    with open(paths["json"], "w") as f:
        json.dump({"meta": meta, "render": bench.rows, "train_iter": bench.train_rows,
                   "speedup_vs_volume": speedups(bench.rows, bench.train_rows)}, f, indent=1)
    if not args.no_plot:
        try:
            plot(paths["png"], meta, bench.rows, bench.train_rows)
        except Exception as err:  # a plot problem must not lose the numbers
            print(f"plot failed: {type(err).__name__}: {err}")
    print()
    print(md)
    print(f"written: {', '.join(paths.values())} ({bench.elapsed():.0f} s)")
    return {"meta": meta, "render": bench.rows, "train_iter": bench.train_rows, "paths": paths}


if __name__ == "__main__":
    main()
