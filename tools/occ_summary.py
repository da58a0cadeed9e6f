"""One table of stage-2 runs: occupancy, its health and the depth, from each run's eval/metrics.json and the last
row of its train_log.jsonl. An eval folder itself (one holding metrics.json, e.g. a run's eval-train) is a row too,
named run/folder.

    python tools/occ_summary.py logs/occ-* [logs/occ-a/eval-train] [--json out.json]
"""
import argparse
import json
import math
import os


def row_of(run):
    """Summary dict of one run folder (None if it has no eval/metrics.json), or of one eval folder of a run."""
    run = run.rstrip("/")
    path = os.path.join(run, "eval", "metrics.json")
    name = os.path.basename(run)
    if not os.path.exists(path) and os.path.exists(os.path.join(run, "metrics.json")):
        path = os.path.join(run, "metrics.json")
        run, ev = os.path.split(run)
        name = f"{os.path.basename(run)}/{ev}"
    if not os.path.exists(path):
        return None
    with open(path) as f:
        m = json.load(f)
    s = m.get("scalars", {})
    last = {}
    log = os.path.join(run, "train_log.jsonl")
    if os.path.exists(log):
        with open(log) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        steps = [r for r in rows if "loss" in r]
        last = steps[-1] if steps else {}
        last["warnings"] = sorted({r["warning"] for r in rows if "warning" in r})
    best = m.get("opacity", {}).get("best") or {}
    return {"run": name, "step": m.get("step"),
            "mIoU*": s.get("occ/mIoU*"), "geo_IoU": s.get("occ/IoU"), "AUC": s.get("occ/opacity_AUC"),
            "cal_mIoU*": s.get("occ/calibrated_mIoU*"), "cal_geo_IoU": s.get("occ/calibrated_IoU"),
            "cal_t": s.get("occ/calibrated_t"),
            "argmax_mIoU*": s.get("occ/argmax_mIoU*"), "argmax_geo_IoU": s.get("occ/argmax_IoU"),
            "thin_mIoU*": s.get("occ/thin_ground_mIoU*"), "thin_geo_IoU": s.get("occ/thin_ground_IoU"),
            "as_read_mIoU*": s.get("occ/as_read_mIoU*"), "as_read_geo_IoU": s.get("occ/as_read_IoU"),
            "shift-1_geo_IoU": s.get("occ/shift-1_IoU"), "shift+1_geo_IoU": s.get("occ/shift+1_IoU"),
            "best_t": best.get("t"), "best_mIoU*": best.get("mIoU_star"), "best_geo_IoU": best.get("geo_IoU"),
            "abs_rel": s.get("depth/abs_rel"), "seen_opacity": s.get("fog/seen_opacity"),
            "faint_alpha_share": s.get("fog/faint_alpha_share"), "voxels_to_half": s.get("fog/voxels_to_half"),
            "train_steps_per_s": last.get("steps_per_s"), "warnings": last.get("warnings", [])}


def fmt(v, nd=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = [r for r in (row_of(run) for run in sorted(a.runs)) if r is not None]
    print("| run | steps | mIoU* | geo IoU | opacity AUC | calibrated read-out: mIoU* / geo IoU (mean t) | "
          "argmax read-out: mIoU* / geo IoU | ground, one voxel per column: mIoU* / geo IoU | "
          "ground as read: mIoU* / geo IoU | "
          "best t: mIoU* / geo IoU | geo IoU moved -1 / +1 voxel | depth AbsRel | "
          "seen opacity | faint alpha | voxels to 0.5 | warnings |")
    print("|---|---:|---:|---:|---:|---|---|---|---|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['run']} | {fmt(r['step'])} | {fmt(r['mIoU*'])} | {fmt(r['geo_IoU'])} | {fmt(r['AUC'], 1)} | "
              f"{fmt(r['cal_mIoU*'])} / {fmt(r['cal_geo_IoU'])} ({fmt(r['cal_t'])}) | "
              f"{fmt(r['argmax_mIoU*'])} / {fmt(r['argmax_geo_IoU'])} | "
              f"{fmt(r['thin_mIoU*'])} / {fmt(r['thin_geo_IoU'])} | "
              f"{fmt(r['as_read_mIoU*'])} / {fmt(r['as_read_geo_IoU'])} | "
              f"{fmt(r['best_mIoU*'])} / {fmt(r['best_geo_IoU'])} (t = {fmt(r['best_t'])}) | "
              f"{fmt(r['shift-1_geo_IoU'])} / {fmt(r['shift+1_geo_IoU'])} | {fmt(r['abs_rel'], 3)} | "
              f"{fmt(r['seen_opacity'], 3)} | {fmt(r['faint_alpha_share'], 3)} | {fmt(r['voxels_to_half'], 1)} | "
              f"{', '.join(r['warnings']) or '-'} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
