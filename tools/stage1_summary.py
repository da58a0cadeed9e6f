"""Summary of stage-1 evaluations per street and per frame spacing (issue 18), from eval.py's metrics.json files.

    python tools/stage1_summary.py --out_dir DIR --main solve \
        solve:sweep=logs/a/eval-sweep/metrics.json solve:keyframe=logs/a/eval-kf/metrics.json \
        net:sweep=... fixture:keyframe=...

Each argument is VARIANT:SPACING=PATH. Writes DIR/summary.json and DIR/summary.md: per variant and spacing the
per-street rows of eval.py (depth scale from the depth alone, motion scale, RPE, ATE, depth AbsRel), the largest
|motion scale - 1| over the streets and the mean depth AbsRel. The ``--main`` variant gives the headline keys
``stage1_heldout_scale_max_dev`` (largest |scale - 1| over its streets and spacings) and
``stage1_heldout_abs_rel`` (its depth AbsRel at sweep spacing, the mean over cameras, no median scaling).
"""
import argparse
import json
import math
import os


def variant_summary(metrics):
    """eval.py metrics dict -> {streets: {street: row}, scale_max_dev, depth_scale_max_dev, abs_rel, step}."""
    streets = metrics.get("streets", {})
    scales = [r["scale_median"] for r in streets.values() if math.isfinite(r.get("scale_median", math.nan))]
    depth_scales = [r["depth_scale"] for r in streets.values() if math.isfinite(r.get("depth_scale", math.nan))]
    return {"streets": streets,
            "scale_max_dev": max((abs(s - 1) for s in scales), default=math.nan),
            "depth_scale_max_dev": max((abs(s - 1) for s in depth_scales), default=math.nan),
            "abs_rel": metrics.get("scalars", {}).get("depth/abs_rel", math.nan),
            "abs_rel_by_range": metrics.get("depth", {}).get("abs_rel_by_range", {}),
            "abs_rel_by_camera": {c: m["abs_rel"] for c, m in metrics.get("depth", {}).get("per_camera", {}).items()},
            "abs_rel_by_class": {c: m["abs_rel"] for c, m in sorted(metrics.get("depth", {}).get("by_class", {}).items(),
                                                                   key=lambda kv: -kv[1].get("share", 0))},
            "step": metrics.get("step")}


def summarise(runs, main):
    """runs: {(variant, spacing): metrics dict} -> summary dict (see module docstring)."""
    out = {"variants": {f"{v}:{s}": variant_summary(m) for (v, s), m in runs.items()}}
    mine = [out["variants"][f"{v}:{s}"] for (v, s) in runs if v == main]
    if mine:
        out["stage1_heldout_scale_max_dev"] = max(x["scale_max_dev"] for x in mine)
        sweep = out["variants"].get(f"{main}:sweep", mine[0])
        out["stage1_heldout_abs_rel"] = sweep["abs_rel"]
        out["stage1_heldout_depth_scale_max_dev"] = max(x["depth_scale_max_dev"] for x in mine)
        # the same under "scalars", as eval.py writes them (tools/record_result.py reads them from there)
        out["scalars"] = {k: out[k] for k in ("stage1_heldout_scale_max_dev", "stage1_heldout_abs_rel",
                                              "stage1_heldout_depth_scale_max_dev")}
    return out


def markdown(summary, main):
    lines = ["# Stage 1 per street and frame spacing", ""]
    for k in ("stage1_heldout_scale_max_dev", "stage1_heldout_abs_rel", "stage1_heldout_depth_scale_max_dev"):
        if k in summary:
            lines.append(f"- `{k}` ({main}): {summary[k]:.3f}")
    for name, v in summary["variants"].items():
        lines += ["", f"## {name} (step {v['step']}): largest |motion scale - 1| {v['scale_max_dev']:.3f}, "
                      f"largest |depth scale - 1| {v['depth_scale_max_dev']:.3f}, depth AbsRel {v['abs_rel']:.3f}"
                      + ("" if not v.get("abs_rel_by_range") else " (by LiDAR distance, pooled over points: " + ", ".join(
                          f"{n} {x:.3f}" for n, x in v["abs_rel_by_range"].items()) + ")"),
                  ] + [f"{what}: " + ", ".join(f"{n} {x:.3f}" for n, x in v[key].items())
                       for what, key in (("Depth AbsRel per camera", "abs_rel_by_camera"),
                                         ("Depth AbsRel per 2D class, largest share first", "abs_rel_by_class"))
                       if v.get(key)] + [
                  "", "| street | depth scale (depth alone) | depth AbsRel | motion scale | RPE t (m) | RPE r (deg) | "
                      "ATE (m) |", "|---|---|---|---|---|---|---|"]
        for s, r in sorted(v["streets"].items()):
            lines.append(f"| {s} | " + " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in (
                "depth_scale", "abs_rel", "scale_median", "rpe_trans", "rpe_rot", "ate")) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="VARIANT:SPACING=PATH to an eval.py metrics.json")
    p.add_argument("--main", required=True, help="the variant whose numbers are the headline keys")
    p.add_argument("--out_dir", required=True)
    a = p.parse_args(argv)
    runs = {}
    for arg in a.runs:
        name, path = arg.split("=", 1)
        variant, spacing = name.split(":", 1)
        if not os.path.isfile(path):
            print(f"[summary] {path} missing: {name} left out")
            continue
        with open(path) as f:
            runs[(variant, spacing)] = json.load(f)
    summary = summarise(runs, a.main)
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    text = markdown(summary, a.main)
    with open(os.path.join(a.out_dir, "summary.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
