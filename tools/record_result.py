"""Write a headline number into docs/results/summary.json, read from the results file a run produced (never typed).

    python tools/record_result.py synthetic_gsv_gtpose_miou_star docs/results/runs/<day>/<run>/metrics.json \
        --scalar occ/mIoU* --command "sh tools/run_benchmarks.sh occupancy ..." --machine "1x NVIDIA H200" \
        --commit feb42a2 [--scale 0.01] [--date YYYY-MM-DD]

The value is ``scalars[<scalar>] * scale`` of that metrics.json (eval.py's output); the entry keeps the command,
machine, commit, date and the file it came from. An existing key is replaced.
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("key")
    p.add_argument("metrics_file")
    p.add_argument("--scalar", required=True)
    p.add_argument("--command", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--commit", required=True)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--date", default=None)
    a = p.parse_args()
    print(json.dumps({a.key: record(a.key, a.metrics_file, a.scalar, a.command, a.machine, a.commit, a.scale,
                                    a.date)}, indent=1))


if __name__ == "__main__":
    main()
