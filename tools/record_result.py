"""Write a headline number into docs/results/summary.json, read from the results file a run produced (never typed).

    python tools/record_result.py synthetic_gsv_gtpose_miou_star docs/results/runs/<day>/<run>/metrics.json \
        --scalar occ/mIoU* --command "sh tools/run_benchmarks.sh occupancy ..." --machine "1x NVIDIA H200" \
        --commit feb42a2 [--scale 0.01] [--date YYYY-MM-DD]

The value is ``scalars[<scalar>] * scale`` of that metrics.json (eval.py's output); the entry keeps the command,
machine, commit, date and the file it came from. An existing key is replaced.

    python tools/record_result.py --gpu_default docs/results/runs/<day>/gpu-default --command "..." \
        --machine "1x NVIDIA H200" --commit abc1234

records every headline key that a `sh tools/run_benchmarks.sh gpu-default` run folder holds (GPU_DEFAULT_KEYS; the
run folders directly in it or under runs/, as its logs.tar.gz unpacks).
"""
import argparse
import datetime
import json
import os

SUMMARY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results", "summary.json")


def record(key, metrics_file, scalar, command, machine, commit, scale=1.0, date=None, summary=SUMMARY, ndigits=4):
    with open(metrics_file) as f:
        scalars = json.load(f)["scalars"]
    if scalar not in scalars:
        raise SystemExit(f"error: {metrics_file} has no scalar {scalar!r} (it has: {', '.join(sorted(scalars))})")
    entries = {}
    if os.path.exists(summary):
        with open(summary) as f:
            entries = json.load(f)
    entries[key] = {"value": round(float(scalars[scalar]) * scale, ndigits), "command": command, "machine": machine,
                    "commit": commit, "date": date or datetime.date.today().isoformat(),
                    "file": os.path.relpath(os.path.abspath(metrics_file), os.path.dirname(os.path.dirname(
                        os.path.dirname(summary))))}
    with open(summary, "w") as f:
        json.dump(entries, f, indent=1, sort_keys=True)
        f.write("\n")
    return entries[key]


# key -> (file in a gpu-default folder, scalar, scale)
GPU_DEFAULT_KEYS = {
    "synthetic_gsv_gtpose_miou_star": ("gd-gtpose-default/metrics.json", "occ/mIoU*", 1.0),
    "synthetic_gsv_gtpose_geo_iou": ("gd-gtpose-default/metrics.json", "occ/IoU", 1.0),
    "synthetic_occ_auc": ("gd-gtpose-default/metrics.json", "occ/opacity_AUC", 0.01),
    "synthetic_gsv_stage1pose_miou_star": ("synthetic-gsv/metrics.json", "occ/mIoU*", 1.0),
    "stage1_heldout_scale_max_dev": ("stage1/summary.json", "stage1_heldout_scale_max_dev", 1.0),
    "stage1_heldout_abs_rel": ("stage1/summary.json", "stage1_heldout_abs_rel", 1.0),
    "fixture_gsv_abs_rel": ("gd-fixture/metrics.json", "depth/abs_rel", 1.0),
    "fixture_geo_iou": ("gd-fixture/metrics.json", "occ/IoU", 1.0),
}


def record_gpu_default(folder, command, machine, commit, date=None, summary=SUMMARY):
    """Every GPU_DEFAULT_KEYS entry whose file exists in ``folder`` (or ``folder``/runs); returns {key: entry}."""
    out = {}
    for key, (rel, scalar, scale) in GPU_DEFAULT_KEYS.items():
        for base in (folder, os.path.join(folder, "runs")):
            path = os.path.join(base, rel)
            if os.path.exists(path):
                out[key] = record(key, path, scalar, command, machine, commit, scale, date, summary)
                break
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key", nargs="?")
    p.add_argument("metrics_file", nargs="?")
    p.add_argument("--gpu_default", default=None, metavar="DIR", help="record every headline key of this run folder")
    p.add_argument("--scalar", default=None)
    p.add_argument("--command", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--commit", required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--date", default=None)
    a = p.parse_args()
    if a.gpu_default:
        print(json.dumps(record_gpu_default(a.gpu_default, a.command, a.machine, a.commit, a.date), indent=1))
        return
    if not (a.key and a.metrics_file and a.scalar):
        p.error("give KEY METRICS_FILE --scalar NAME, or --gpu_default DIR")
    print(json.dumps({a.key: record(a.key, a.metrics_file, a.scalar, a.command, a.machine, a.commit, a.scale,
                                    a.date)}, indent=1))


if __name__ == "__main__":
    main()
