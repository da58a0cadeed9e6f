"""The stage-2 training step, old code path against the new one, side by side in one process.

    python tools/bench_render.py --step_compare --out_dir logs/bench_step               # CUDA, paper config
    python tools/bench_render.py --step_compare --quick --device cpu --out_dir /tmp/s   # CPU smoke run

Both paths train the same GSVModel (paper sizes: input 384x640, render 180x320, grid 300 300 24; ``--step_net``:
the network measured in issue 5 ("project") and / or the authors' ("authors", today's defaults), see ``NETS``;
``--pose gt --use_sem true``, random init with the same seed) with the trainer's step: zero_grad, forward under
autocast (``--amp``), backward, grad clip, AdamW. What differs is everything around the network:

* old (the trainer of commit 5356495): a new DataLoader every epoch (workers restarted), items with the
  evaluation-only labels (dense LiDAR depth 6x900x1600 float32, Occ3D volumes) and float32 images, every
  tensor of the batch sent to the GPU, cuDNN's default algorithm choice, default memory layout;
* new (the trainer now): ``trainer.make_loader`` (persistent workers, prefetching), training items without the
  evaluation-only labels and with uint8 images, ``utils.batch.to_device(..., skip=EVAL_ONLY_KEYS)``, and
  ``utils.speed.prepare_model`` with the option defaults (cudnn.benchmark, channels_last).
With ``--step_ablations``, "new" minus each speed option; with ``--step_compile``, "new" + torch.compile.

Per variant: ``model_s``, the median step with one batch already on the device (how the 0.163 s of issue 5 was
measured); ``loop_s``, the median wall time per step over ``--step_iters`` steps fed by the DataLoader from an
in-memory dataset (12 items, so epoch boundaries are crossed), with the median ``data_wait_s``, and
``epoch_start_s``, the wait for an epoch's first batch (the old path restarts its workers there; the real
datasets have thousands of items an epoch, so this is reported apart, not averaged in). JPEG decoding is not
part of it (the same in both paths). ``loss_rel_diff``: the first step's
loss against the old path's at the same amp (0 on the CPU, where the paths compute the same thing).
``--profile`` adds the top operators of the new step (torch.profiler) to bench_step_profile.txt.
"""
import json
import os
import statistics
import time

import numpy as np
import torch

from datasets import EVAL_ONLY_KEYS, collate
from datasets.sampler import EpochSampler
from options import parse_args as parse_model_args
from tools.bench.harness import PAPER_MODEL, QUICK_MODEL, free_memory, make_train_step, sync
from tools.bench.scene import train_batch
from utils.batch import to_device
from utils.constants import CAMS
from utils.speed import prepare_model
from utils.throughput import timed_batches

N_ITEMS = 12
OLD = {"cudnn_benchmark": False, "channels_last": False, "compile": False}
# --step_net: "project" = the network the 0.163 s of issue 5 was measured on (this project's: ResNet-50, fpn neck
# at stride 8, visibility channel, residual 3D decoder); "authors" = the option defaults (configs/nusc-gsv.txt:
# ResNet-101, upconcat neck at stride 4, hourglass decoder). Both on the paper's sizes (PAPER_MODEL).
NETS = {"project": ["--encoder_layers", "50", "--image_neck", "fpn", "--feat_stride", "8", "--lift_visibility",
                    "true", "--occ_decoder", "residual"],
        "authors": []}


class MemoryItems(torch.utils.data.Dataset):
    """``N_ITEMS`` training items with the layout of NuScenesDataset (docs/ARCHITECTURE.md), from one batch.

    ``eval_labels`` adds the dense LiDAR depth (made like NuScenesDataset._load_depth: zeros with ~2 % of the
    pixels set, at ``depth_hw``) and the three Occ3D volumes; ``uint8_images`` returns uint8 images (the float
    ones are these divided by 255, as in the real loader)."""

    def __init__(self, batch, eval_labels, uint8_images, depth_hw):
        self.imgs = (batch["imgs"][0].cpu() * 255).round().to(torch.uint8)
        self.rest = {k: batch[k][0].cpu() for k in ("K", "cam2ego", "ego2global", "sem")}
        self.eval_labels, self.uint8_images, self.depth_hw = eval_labels, uint8_images, depth_hw

    def __len__(self):
        return N_ITEMS

    def __getitem__(self, i):
        item = {"imgs": self.imgs.clone() if self.uint8_images else self.imgs.float() / 255.0,
                **{k: v.clone() for k, v in self.rest.items()}, "token": f"t{i}", "scene": "s"}
        if self.eval_labels:
            rng = np.random.default_rng(i)
            h, w = self.depth_hw
            depth = np.zeros((len(CAMS), h, w), np.float32)
            n = h * w // 50
            for c in range(len(CAMS)):
                depth[c, rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(1, 80, n)
            item["depth_gt"] = torch.from_numpy(depth)
            for k in ("occ_semantics", "occ_mask_camera", "occ_mask_lidar"):
                item[k] = torch.from_numpy(rng.integers(0, 18, (200, 200, 16), dtype=np.uint8))
        return item


def old_loaders(dataset, opt, device):
    """The old trainer's data path: a DataLoader made anew every epoch, without persistent workers."""
    sampler = EpochSampler(len(dataset), seed=opt.seed)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield torch.utils.data.DataLoader(dataset, batch_size=opt.batch_size, sampler=sampler,
                                          num_workers=opt.num_workers, collate_fn=collate, drop_last=True,
                                          pin_memory=device.type == "cuda", persistent_workers=False)
        epoch += 1


def new_loaders(dataset, opt, device):
    """The trainer's data path now: one loader for the run (trainer.make_loader), a new order every epoch."""
    from trainer import make_loader
    sampler = EpochSampler(len(dataset), seed=opt.seed)
    loader = make_loader(dataset, sampler, opt, device)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield loader
        epoch += 1


def time_loop(step, loaders, move, iters, warmup):
    """Steps fed by the loaders (one per epoch) -> dict: loop_s (median seconds a step, data wait included),
    data_wait_s (median wait for a batch), epoch_start_s (mean wait for the first batch of an epoch: worker
    start-up and the first prefetch; paid once an epoch, so it is left out of the medians)."""
    times, waits, starts = [], [], []
    for loader in loaders:
        epoch_waits = []
        t0 = time.perf_counter()
        for batch in timed_batches(loader, epoch_waits.append):
            step(move(batch))
            if len(epoch_waits) == 1:
                starts.append(epoch_waits[0])
            else:
                times.append(time.perf_counter() - t0)
                waits.append(epoch_waits[-1])
            if len(times) >= warmup + iters:
                return {"loop_s": statistics.median(times[warmup:]), "data_wait_s": statistics.median(waits[warmup:]),
                        "epoch_start_s": statistics.mean(starts[1:] or starts)}
            t0 = time.perf_counter()
    raise RuntimeError("the loaders ran out")


def run_variant(name, amp, settings, args, device, base_argv):
    """One row: model step and loop timings of a variant (``settings``: speed options, or OLD)."""
    old = settings is OLD
    argv = base_argv + ["--amp", amp, "--num_workers", str(args.step_workers),
                        *[x for k, v in settings.items() for x in (f"--{k}", str(v).lower())]]
    opt = parse_model_args(argv)
    row = {"variant": name, "amp": amp, "status": "ok", **settings}
    from networks.gsv_model import GSVModel
    torch.manual_seed(args.seed)
    model = GSVModel(opt).to(device).train()
    row["speed"] = "; ".join(prepare_model(model, opt, device)) or "-"
    if old:  # prepare_model sets the flag from the options; the old trainer never touched it
        torch.backends.cudnn.benchmark = False
    train_step = make_train_step(model, opt, device)
    step = lambda b: train_step(b)[0]  # noqa: E731
    batch = train_batch(opt, device, args.seed)
    hw = (900, 1600) if not args.quick else (90, 160)
    data = MemoryItems(batch, eval_labels=old, uint8_images=not old, depth_hw=hw)
    move = (lambda b: to_device(b, device)) if old else (lambda b: to_device(b, device, skip=EVAL_ONLY_KEYS))
    fixed = move(collate([data[0]]))
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.step_repeats):
        sync(device)
        t0 = time.perf_counter()
        loss = step(fixed)
        sync(device)
        if i == 0:
            row["loss_first"] = loss
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    row["model_s"] = statistics.median(times)
    loaders = (old_loaders if old else new_loaders)(data, opt, device)
    row.update(time_loop(step, loaders, move, args.step_iters, max(args.warmup, 1)))
    if device.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.profile and not settings and amp == args.step_amp[0]:
        row["profile"] = profile_step(step, fixed, device)
    return row


def profile_step(step, batch, device, n=3):
    """Top operators of ``n`` steps by self device time (CPU time on the CPU), as a text table."""
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(n):
            step(batch)
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=30)


def variants(args):
    """(network, name, amp, speed settings) in the order they run."""
    out = []
    for net in (["quick"] if args.quick else args.step_net):
        pre = f"{net}: " if len(args.step_net) > 1 and not args.quick else ""
        for amp in args.step_amp:
            a = "" if amp == "none" else " " + amp
            out += [(net, f"{pre}old{a}", amp, OLD), (net, f"{pre}new{a}", amp, {})]
            if args.step_ablations:
                out += [(net, f"{pre}new{a} -{k}", amp, {k: False}) for k in ("cudnn_benchmark", "channels_last")]
            if args.step_compile:
                out.append((net, f"{pre}new{a} +compile", amp, {"compile": True}))
    return out


def run(args, device, meta):
    """All variants; writes bench_step.{md,json} (and bench_step_profile.txt) to ``args.out_dir``."""
    base = ["--stage", "gsv", "--pose", "gt", "--use_sem", "true", "--seed", str(args.seed),
            "--raster_backend", "torch" if args.quick or device.type != "cuda" else "gsplat"]
    rows = []
    for net, name, amp, settings in variants(args):
        print(f"step_compare: {name}", end=" ", flush=True)
        argv = base + (QUICK_MODEL if net == "quick" else PAPER_MODEL + NETS[net])
        try:
            row = run_variant(name, amp, settings, args, device, argv)
        except Exception as err:
            row = {"variant": name, "amp": amp, "status": f"error: {type(err).__name__}: {str(err)[:160]}"}
        row.update(net=net, old=settings is OLD)
        free_memory(device)
        rows.append(row)
        print(row["status"] if row["status"] != "ok" else
              f"model {row['model_s']:.4f} s, loop {row['loop_s']:.4f} s/step", flush=True)
    for r in rows:
        ref = next((x for x in rows if x["old"] and (x["net"], x["amp"]) == (r["net"], r["amp"])
                    and x["status"] == "ok"), None)
        if ref and r["status"] == "ok":
            r["model_speedup"] = ref["model_s"] / r["model_s"]
            r["loop_speedup"] = ref["loop_s"] / r["loop_s"]
            r["loss_rel_diff"] = abs(r["loss_first"] - ref["loss_first"]) / max(abs(ref["loss_first"]), 1e-12)
    os.makedirs(args.out_dir, exist_ok=True)
    profile = "\n\n".join(f"## {r['variant']}\n{r.pop('profile')}" for r in rows if "profile" in r)
    if profile:
        with open(os.path.join(args.out_dir, "bench_step_profile.txt"), "w") as f:
            f.write(profile + "\n")
    md = markdown(rows, meta, args)
    with open(os.path.join(args.out_dir, "bench_step.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out_dir, "bench_step.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print("\n" + md)
    return rows


def markdown(rows, meta, args):
    cfg = "tiny --quick config" if args.quick else (f"paper sizes: input 384x640, render 180x320, grid 300 300 24; "
                                                    f"network {' and '.join(args.step_net)}")
    L = [f"# Stage-2 training step: old code path vs new ({cfg})", "",
         f"- device: {meta['device']}; torch {meta['torch']} (CUDA {meta['cuda']}); gsplat {meta['gsplat']}",
         f"- date: {meta['date']}; command: `{meta['command']}`",
         f"- model step: median of {args.step_repeats} after {args.warmup} warm-up, batch on the device; loop: "
         f"median of {args.step_iters} steps from a DataLoader ({args.step_workers} workers, {N_ITEMS} in-memory "
         "items), data wait included; epoch start: wait for the first batch of an epoch (not in the medians)", "",
         "| variant | speed settings | model step s | speed-up | loop s/step | speed-up | data wait s | epoch start s "
         "| peak GiB | loss rel. diff vs old |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["status"] != "ok":
            L.append(f"| {r['variant']} | {r['status']} | | | | | | | | |")
            continue
        f = lambda k, fmt: format(r[k], fmt) if r.get(k) is not None else "-"  # noqa: E731
        L.append(f"| {r['variant']} | {r['speed']} | {f('model_s', '.4f')} | {f('model_speedup', '.2f')}x | "
                 f"{f('loop_s', '.4f')} | {f('loop_speedup', '.2f')}x | {f('data_wait_s', '.4f')} | "
                 f"{f('epoch_start_s', '.3f')} | {f('peak_mem_gib', '.1f')} | {f('loss_rel_diff', '.1e')} |")
    return "\n".join(L)
