"""The benchmark's report: environment, markdown tables, speed-ups, CSV and the bar plot."""
import csv
import datetime
import os
import platform

import torch

from tools.bench.harness import METHODS, MODES, _r, parse_triplets


def environment(device, bench):
    try:
        from importlib.metadata import version
        gs_version = version("gsplat")
    except Exception:
        gs_version = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": f"{device.type}: {name}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "gsplat": gs_version, "gsplat_usable": bench.gsplat_ok,
            "gsplat_first_call_s": _r(bench.gsplat_first_call_s),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def _ms(row):
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"]
    s = f"{row['median_s'] * 1e3:.1f}" if row["median_s"] < 10 else f"{row['median_s'] * 1e3:.0f}"
    return s + ("*" if row.get("note") else "")


def _mb(row):
    return "-" if row is None or row.get("peak_mem_mb") is None else f"{row['peak_mem_mb']:.0f}"


def markdown(meta, args, rows, train_rows):
    L = ["# Render / training efficiency: GSV (voxel Gaussians) vs volume rendering", "",
         f"- device: {meta['device']}; torch {meta['torch']} (CUDA {meta['cuda']}); gsplat {meta['gsplat']}"
         + (f" (first call {meta['gsplat_first_call_s']} s)" if meta["gsplat_first_call_s"] is not None else ""),
         f"- date: {meta['date']}; python {meta['python']}; {meta['torch_threads']} torch threads",
         f"- command: `{meta['command']}`",
         f"- per case: {args.warmup} warm-up + up to {args.repeats} timed runs, median; "
         f"cap {args.max_seconds_per_case:.3g} s "
         f"a case, budget {args.time_budget:.0f} s in all (used {meta['elapsed_s']:.0f} s)",
         "- scene: ground layer + cars / trucks / bus / pedestrians / cones / barriers / trees / buildings over "
         "[-40, 40]^2 x [-1, 5.4] m, 18-class logits (requires_grad); 6 cameras of the nuScenes scene-0916 rig",
         "- gs_scale = 0.375 x horizontal voxel size unless --gs_scale; VR: step = half a voxel, near 0.1, far 80 m",
         "- fwd = no_grad; fwd+bwd = backward of depth.mean() + alpha.mean() + features.mean() to the logits; "
         "the logits -> Gaussians / occupancy conversion is timed in all", ""]
    L += ["## Render (6 views), median ms", "",
          "| grid ZxXxY | size HxW | method | Gaussians | fwd ms | fwd peak MiB | fwd+bwd ms | fwd+bwd peak MiB "
          "| depth rel. diff vs VR | note |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    cases = []
    for r in rows:
        if (r["grid"], r["size"]) not in cases:
            cases.append((r["grid"], r["size"]))
    cases.sort(key=lambda c: (parse_triplets(c[0], 3)[0][0] * parse_triplets(c[0], 3)[0][1],
                              parse_triplets(c[1], 2)[0]))
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    for g, s in cases:
        for m in METHODS:
            f, b = find.get((g, s, m, "fwd")), find.get((g, s, m, "fwd+bwd"))
            if f is None and b is None:
                continue
            ng = next((x["n_gaussians"] for x in (f, b) if x and x.get("n_gaussians") is not None), None)
            dd = next((x.get("depth_rel_diff") for x in (f, b) if x and x.get("depth_rel_diff") is not None), None)
            notes = "; ".join(sorted({x["note"] for x in (f, b) if x and x.get("note")}))
            L.append(f"| {g} | {s} | {m} | {ng if ng is not None else '-'} | {_ms(f)} | {_mb(f)} | {_ms(b)} | "
                     f"{_mb(b)} | {'-' if dd is None else f'{100 * dd:.1f} %'} | {notes} |")
    L += ["", "`*`: see note. skipped (est. N s): extrapolated from the largest measured case of the same method "
          "and mode (linear in 6 H W / voxel size), too slow for the cap.", ""]
    L += ["## Speed-up of splatting over volume rendering (VR time / GSV time)", "",
          "| grid | size | gsplat fwd | gsplat fwd+bwd | torch fwd | torch fwd+bwd |",
          "| --- | --- | ---: | ---: | ---: | ---: |"]
    for g, s in cases:
        cells = []
        for m in ("gsplat", "torch"):
            for mode in MODES:
                a, v = find.get((g, s, m, mode)), find.get((g, s, "volume", mode))
                ok = a and v and a["status"] == "ok" and v["status"] == "ok"
                cells.append(f"{v['median_s'] / a['median_s']:.1f}x" if ok else "-")
        L.append(f"| {g} | {s} | " + " | ".join(cells) + " |")
    L += ["", "Paper (A100): 0.17 s vs 0.85 s to render 6 views at 180x320 from 24x300x300 (~5x).", ""]
    if train_rows:
        cfg = "tiny --quick config" if args.quick else "paper config: input 384x640, render 180x320, grid 300 300 24"
        L += [f"## Full training iteration (GSVModel, {cfg}, batch 1, AdamW step included)", "",
              "| variant | median s | peak MiB | Gaussians | speed-up vs volume (same amp) | note |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in train_rows:
            ref = next((x for x in train_rows if x["render_type"] == "volume" and x["amp"] == r["amp"]
                        and x["status"] == "ok"), None)
            sp = f"{ref['median_s'] / r['median_s']:.2f}x" if ref and r["status"] == "ok" else "-"
            med = f"{r['median_s']:.3f}" + ("*" if r.get("note") else "") if r["status"] == "ok" else r["status"]
            ng = r["n_gaussians"] if r["n_gaussians"] is not None else "-"
            L.append(f"| {r['variant']} | {med} | {_mb(r)} | {ng} | {sp} | {r.get('note', '')} |")
        L += ["", "Paper: training ~2.7x faster with GSV than with volume rendering. A randomly initialised OccNet "
              "puts every voxel at opacity 0.1, so every voxel in front of a camera is a Gaussian here.", ""]
    return "\n".join(L)


def speedups(rows, train_rows):
    """VR time / GSV time for every case and mode where both ran; training step: volume / gs at the same amp."""
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    out = {"render": [], "train_iter": []}
    for (g, s, m, mode), r in find.items():
        v = find.get((g, s, "volume", mode))
        if m != "volume" and v and r["status"] == "ok" and v["status"] == "ok":
            out["render"].append({"grid": g, "size": s, "method": m, "mode": mode,
                                  "speedup": round(v["median_s"] / r["median_s"], 3)})
    for r in train_rows:
        v = next((x for x in train_rows if x["render_type"] == "volume" and x["amp"] == r["amp"]
                  and x["status"] == "ok"), None)
        if r["render_type"] == "gs" and v and r["status"] == "ok":
            out["train_iter"].append({"variant": r["variant"], "speedup": round(v["median_s"] / r["median_s"], 3)})
    return out


def write_csv(path, rows, train_rows):
    keys = []
    for r in rows + train_rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        for r in rows + train_rows:
            wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def plot(path, meta, rows, train_rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = []
    for r in rows:
        if (r["grid"], r["size"]) not in cases:
            cases.append((r["grid"], r["size"]))
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    series = [(m, mode) for m in METHODS for mode in MODES]
    colours = {"gsplat": ("#1f77b4", "#aec7e8"), "torch": ("#2ca02c", "#98df8a"), "volume": ("#d62728", "#ff9896")}
    ncol = 2 if train_rows else 1
    fig, axes = plt.subplots(1, ncol, figsize=(max(8, 1.6 * len(cases)) + (5 if train_rows else 0), 6),
                             gridspec_kw={"width_ratios": [max(3, len(cases)), 2] if train_rows else [1]},
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    width = 0.8 / len(series)
    for j, (m, mode) in enumerate(series):
        xs, ys = [], []
        for i, (g, s) in enumerate(cases):
            r = find.get((g, s, m, mode))
            x = i - 0.4 + (j + 0.5) * width
            if r is not None and r["status"] == "ok":
                xs.append(x)
                ys.append(r["median_s"])
            elif r is not None:
                ax.text(x, 0.02, r["status"].split(" ")[0], rotation=90, fontsize=6, ha="center", va="bottom",
                        transform=ax.get_xaxis_transform())
        ax.bar(xs, ys, width, label=f"{m} {mode}", color=colours[m][0 if mode == "fwd" else 1],
               edgecolor="black", linewidth=0.3)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(cases) - 0.5)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{g}\n{s}" for g, s in cases], fontsize=7)
    ax.set_ylabel("median time per render of 6 views (s)")
    ax.set_title("render: grid ZxXxY / size HxW", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", which="both", alpha=0.3)
    if train_rows:
        ax = axes[0, 1]
        names = [r["variant"] for r in train_rows]
        vals = [r["median_s"] if r["status"] == "ok" else 0 for r in train_rows]
        cols = [colours["volume" if r["render_type"] == "volume" else r["backend"] or "gsplat"][0 if r["amp"] == "none"
                else 1] for r in train_rows]
        ax.bar(range(len(names)), [v if v > 0 else float("nan") for v in vals], color=cols, edgecolor="black",
               linewidth=0.3)
        for i, r in enumerate(train_rows):
            if r["status"] != "ok":
                ax.text(i, 0.5, r["status"].split(" ")[0], rotation=90, fontsize=7, ha="center", va="bottom",
                        transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("median time per training step (s)")
        ax.set_title("full training iteration", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(f"{meta['device']} | torch {meta['torch']} | gsplat {meta['gsplat']} | {meta['date'][:16]}",
                 fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
