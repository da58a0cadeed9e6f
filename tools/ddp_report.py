"""Throughput and metrics of training runs side by side (tools/bench_ddp.sh: 1 GPU against N GPUs).

    python tools/ddp_report.py logs/bench_ddp/ddp-1gpu logs/bench_ddp/ddp-2gpu --out logs/bench_ddp/bench_ddp

Per run folder: <run>/options.txt, <run>/train_log.jsonl (written by the trainer: steps_per_s, data_wait_frac,
peak_mem_gib, samples, time_s) and <run>/eval/metrics.json (eval.py), and <run>/eval-ranks/metrics.json when the
same checkpoint was also evaluated by several processes (its largest difference to the one-process numbers is
reported, and that of the confusion-matrix scores alone: one matrix summed over the ranks, so 0 exactly; the
continuous statistics may differ by the forward's float order between processes). Throughput = samples / seconds between the
first and the last log line (the start-up and the first step are left out); the first run is the reference of
the speed-up. Writes <out>.md and <out>.json and prints the table.
"""
import argparse
import json
import os

METRICS = (("occ/mIoU*", "mIoU*"), ("occ/mIoU", "mIoU"), ("occ/IoU", "IoU"), ("occ/RayIoU", "RayIoU"),
           ("depth/abs_rel", "AbsRel"))
CONFUSION_KEYS = ("occ/mIoU*", "occ/mIoU", "occ/IoU")


def read_options(run):
    opts = {}
    with open(os.path.join(run, "options.txt")) as f:
        for line in f:
            if " = " in line:
                k, v = line.rstrip("\n").split(" = ", 1)
                opts[k] = v
    return opts


def summarise(run):
    """dict: processes, steps, samples, seconds, samples_per_s, data_wait_frac, peak_mem_gib, metrics."""
    rows = [json.loads(line) for line in open(os.path.join(run, "train_log.jsonl")) if line.strip()]
    rows = [r for r in rows if "samples" in r]
    if len(rows) < 2:
        raise SystemExit(f"{run}/train_log.jsonl: fewer than two log lines with throughput (log_every too large?)")
    first, last = rows[0], rows[-1]
    seconds = last["time_s"] - first["time_s"]
    out = {"run": run, "steps": last["step"], "samples": last["samples"],
           "processes": last["samples"] // max(last["step"], 1) // int(read_options(run).get("batch_size", 1)),
           "seconds": seconds, "samples_per_s": (last["samples"] - first["samples"]) / max(seconds, 1e-9),
           "data_wait_frac": sum(r["data_wait_frac"] for r in rows[1:]) / len(rows[1:]),
           "peak_mem_gib": max((r.get("peak_mem_gib") or 0) for r in rows), "metrics": {}}
    path = os.path.join(run, "eval", "metrics.json")
    if os.path.isfile(path):
        scalars = json.load(open(path)).get("scalars", {})
        out["metrics"] = {name: scalars.get(key) for key, name in METRICS}
        ranks = os.path.join(run, "eval-ranks", "metrics.json")
        if os.path.isfile(ranks):
            other = json.load(open(ranks)).get("scalars", {})
            diffs = [(abs(other[k] - v), k) for k, v in scalars.items()
                     if isinstance(v, (int, float)) and isinstance(other.get(k), (int, float))]
            out["eval_ranks_max_abs_diff"] = max(diffs)[0] if diffs else None
            out["eval_ranks_max_diff_key"] = max(diffs)[1] if diffs else None
            # the confusion-matrix scores (one matrix summed over the ranks: equal exactly) apart from the rest
            # (continuous statistics of the forward, whose float order may differ between processes)
            occ = [d for d, k in diffs if k in CONFUSION_KEYS]
            out["eval_ranks_occ_max_abs_diff"] = max(occ) if occ else None
            out["eval_ranks_missing"] = sorted(set(scalars) ^ set(other))
    return out


def ranks_cell(r):
    if "eval_ranks_max_abs_diff" not in r:
        return "-"
    d, occ = r["eval_ranks_max_abs_diff"], r.get("eval_ranks_occ_max_abs_diff")
    miss = f" ({len(r['eval_ranks_missing'])} metrics in one only)" if r["eval_ranks_missing"] else ""
    occ_txt = "" if occ is None else f"occupancy {occ:.2g}, "
    return ("-" if d is None else f"{occ_txt}any {d:.2g} ({r.get('eval_ranks_max_diff_key')})") + miss


def table(runs):
    ref = runs[0]["samples_per_s"]
    L = ["| run | processes | steps | samples | s (after the 1st log line) | samples/s | speed-up | data wait | "
         "peak GiB | " + " | ".join(n for _, n in METRICS) + " | eval on N processes vs 1: largest difference |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in METRICS)
         + " | ---: |"]
    for r in runs:
        m = [("-" if r["metrics"].get(n) is None else f"{r['metrics'][n]:.3f}" if n == "AbsRel"
              else f"{r['metrics'][n]:.2f}") for _, n in METRICS]
        L.append(f"| {os.path.basename(r['run'])} | {r['processes']} | {r['steps']} | {r['samples']} | "
                 f"{r['seconds']:.0f} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / ref:.2f}x | "
                 f"{100 * r['data_wait_frac']:.0f} % | {r['peak_mem_gib']:.1f} | " + " | ".join(m) + " | "
                 + ranks_cell(r) + " |")
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders (the first is the reference)")
    p.add_argument("--out", type=str, default=None, help="write <out>.md and <out>.json")
    args = p.parse_args(argv)
    runs = [summarise(r) for r in args.runs]
    md = table(runs)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(md + "\n")
        with open(args.out + ".json", "w") as f:
            json.dump(runs, f, indent=1)
    print(md)
    return runs


if __name__ == "__main__":
    main()
