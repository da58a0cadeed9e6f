"""Agreement of derived Occ3D labels (tools/data/make_occ_gt_nusc.py) with reference labels of the same samples: the
exact labels of a synthetic set, or released Occ3D labels.

Per sample, summed over samples (one confusion matrix, as eval.py): geometric IoU, precision and recall of the
occupancy inside the reference mask_camera (and inside mask_camera AND mask_lidar); IoU of each box class there,
and how often a voxel occupied in both gets the box class right; the IoU of the two mask_camera and of the two
mask_lidar; the ground / non-ground split (derived driveable_surface vs manmade against the reference ground
classes 11-14 vs 15-16) on voxels occupied in both. Writes <out>.json and <out>.md with the command, machine,
commit and date.

    python -m tools.data.make_synthetic_nusc --out /tmp/syn --num_scenes 2 --frames_per_scene 10 --img_size 180 320 \\
        --sweeps_per_keyframe 0
    python -m tools.data.make_occ_gt_nusc --dataroot /tmp/syn --version v1.0-synthetic --out /tmp/syn/gts_lidar
    python -m tools.diagnostics.occ_gt_check --derived /tmp/syn/gts_lidar --reference /tmp/syn/gts --out docs/results/occ_gt_check
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys

import numpy as np

from datasets.nuscenes_dataset import load_npz
from datasets.occ_gt.scene import CATEGORY_CLASS
from tools import REPO
from utils.constants import FREE_ID, OCC_CLASSES
from utils.occ_metrics import OccEvaluator

KEYS = ("semantics", "mask_camera", "mask_lidar")
BOX_CLASSES = sorted({c for _, c in CATEGORY_CLASS})
GROUND, NON_GROUND = (11, 12, 13, 14), (15, 16)


def _load(path):
    sem, cam, lidar = load_npz(path, KEYS, "Occ3D labels")
    return sem.astype(np.int64), cam > 0, lidar > 0


def compare(pairs):
    """Agreement numbers (dict) over ``pairs`` [(derived labels.npz, reference labels.npz)]."""
    ev_cam, ev_both = OccEvaluator(), OccEvaluator()
    sums = {k: 0 for k in ("cam_i", "cam_u", "lidar_i", "lidar_u", "tp", "fp", "fn", "split_ok", "split_n")}
    box_right = np.zeros((len(OCC_CLASSES), 2), np.int64)  # per reference box class: right class, occupied in both
    per_sample = []
    for d_path, r_path in pairs:
        d, dc, dl = _load(d_path)
        r, rc, rl = _load(r_path)
        ev_cam.update(d, r, rc)
        ev_both.update(d, r, rc & rl)
        occ_d, occ_r = d != FREE_ID, r != FREE_ID
        both = occ_d & occ_r & rc
        s = dict(tp=int(both.sum()), fp=int((occ_d & ~occ_r & rc).sum()), fn=int((~occ_d & occ_r & rc).sum()),
                 cam_i=int((dc & rc).sum()), cam_u=int((dc | rc).sum()), lidar_i=int((dl & rl).sum()),
                 lidar_u=int((dl | rl).sum()))
        static = both & np.isin(r, GROUND + NON_GROUND) & np.isin(d, (11, 15))
        s["split_n"] = int(static.sum())
        s["split_ok"] = int((static & (np.isin(r, GROUND) == (d == 11))).sum())
        for c in BOX_CLASSES:
            sel = both & (r == c)
            box_right[c] += [int((sel & (d == c)).sum()), int(sel.sum())]
        for k in sums:
            sums[k] += s[k]
        geo = s["tp"] / max(s["tp"] + s["fp"] + s["fn"], 1)
        per_sample.append(dict(derived=d_path, geo_iou=geo, mask_camera_iou=s["cam_i"] / max(s["cam_u"], 1),
                               mask_lidar_iou=s["lidar_i"] / max(s["lidar_u"], 1)))
    cam, both = ev_cam.summary(), ev_both.summary()
    present = [c for c in BOX_CLASSES if box_right[c, 1] or not np.isnan(cam["IoU"][OCC_CLASSES[c]])]
    return dict(
        samples=len(pairs),
        geo_iou_in_mask_camera=cam["geo_IoU"] / 100,
        precision_in_mask_camera=sums["tp"] / max(sums["tp"] + sums["fp"], 1),
        recall_in_mask_camera=sums["tp"] / max(sums["tp"] + sums["fn"], 1),
        geo_iou_in_mask_camera_and_lidar=both["geo_IoU"] / 100,
        mask_camera_iou=sums["cam_i"] / max(sums["cam_u"], 1), mask_lidar_iou=sums["lidar_i"] / max(sums["lidar_u"], 1),
        box_class_iou_in_mask_camera={OCC_CLASSES[c]: cam["IoU"][OCC_CLASSES[c]] / 100 for c in present},
        box_class_right_where_both_occupied={OCC_CLASSES[c]: box_right[c, 0] / max(box_right[c, 1], 1)
                                             for c in present if box_right[c, 1]},
        ground_split_agreement=sums["split_ok"] / max(sums["split_n"], 1), ground_split_voxels=sums["split_n"],
        per_sample_min={k: min(s[k] for s in per_sample) for k in ("geo_iou", "mask_camera_iou", "mask_lidar_iou")},
        per_sample=per_sample)


def _provenance(argv):
    git = lambda *a: subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()  # noqa
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.isfile("/proc/cpuinfo") else platform.processor()
    return dict(command="python -m tools.diagnostics.occ_gt_check " + " ".join(argv), commit=git("rev-parse", "HEAD"),
                uncommitted_changes=bool(git("status", "--porcelain", "--untracked-files=no")),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, {platform.platform()}")


def markdown(r):
    """A short report of the ``compare`` numbers with their provenance."""
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# Derived (LiDAR) vs reference Occ3D labels: {r['samples']} samples", "",
             f"- command: `{r['command']}`", f"- commit: {r['commit']}" + (" (with uncommitted changes)"
                                                                            if r["uncommitted_changes"] else ""),
             f"- machine: {r['machine']}", f"- date: {r['date']}"]
    if r.get("reference_made_by"):
        lines.append(f"- reference labels: the synthetic set of `{r['reference_made_by']}`")
    if r.get("derived_info"):
        i = r["derived_info"]
        lines.append(f"- derived labels: `{i.get('command', 'tools/data/make_occ_gt_nusc.py')}` (ground fill "
                     f"{i['ground_fill_m']} m, heights aligned: {i.get('align_heights')}, {i['seconds']} s)")
    lines += ["", "| inside the reference mask_camera | % |", "| --- | ---: |",
              f"| geometric IoU | {pct(r['geo_iou_in_mask_camera'])} |",
              f"| precision / recall of occupied | {pct(r['precision_in_mask_camera'])} / "
              f"{pct(r['recall_in_mask_camera'])} |",
              f"| geometric IoU inside mask_camera AND mask_lidar | {pct(r['geo_iou_in_mask_camera_and_lidar'])} |",
              f"| ground / non-ground split right (voxels occupied in both) | {pct(r['ground_split_agreement'])} |",
              "", "| masks | IoU % |", "| --- | ---: |", f"| mask_camera | {pct(r['mask_camera_iou'])} |",
              f"| mask_lidar | {pct(r['mask_lidar_iou'])} |", "",
              "| box class | IoU in mask_camera % | right class where both occupied % |", "| --- | ---: | ---: |"]
    for c, v in r["box_class_iou_in_mask_camera"].items():
        right = r["box_class_right_where_both_occupied"].get(c)
        lines.append(f"| {c} | {pct(v)} | {'-' if right is None else pct(right)} |")
    m = r["per_sample_min"]
    lines += ["", f"Worst sample: geometric IoU {pct(m['geo_iou'])}, mask_camera IoU {pct(m['mask_camera_iou'])}, "
              f"mask_lidar IoU {pct(m['mask_lidar_iou'])}.", ""]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--derived", required=True, help="folder <scene>/<token>/labels.npz of the derived labels")
    p.add_argument("--reference", required=True, help="folder <scene>/<token>/labels.npz of the reference labels")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md (default: print only)")
    a = p.parse_args(argv)
    derived = sorted(glob.glob(os.path.join(a.derived, "*", "*", "labels.npz")))
    pairs = [(d, os.path.join(a.reference, os.path.relpath(d, a.derived))) for d in derived]
    pairs = [(d, r) for d, r in pairs if os.path.isfile(r)]
    if not pairs:
        sys.exit(f"error: no <scene>/<token>/labels.npz of {a.derived} has a counterpart in {a.reference}")
    r = compare(pairs)
    r.update(_provenance(argv))
    made = os.path.join(os.path.dirname(os.path.abspath(a.reference)), "README.txt")
    if os.path.isfile(made):  # a synthetic set says how it was made
        with open(made) as f:
            text = f.read()
        if "Made by:" in text:
            r["reference_made_by"] = " ".join(text.split("Made by:", 1)[1].split("Load:", 1)[0].split())
    info = os.path.join(a.derived, "occ_gt_info.json")
    if os.path.isfile(info):
        with open(info) as f:
            r["derived_info"] = {k: v for k, v in json.load(f).items() if k != "scenes"}
    text = markdown(r)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".json", "w") as f:
            json.dump(r, f, indent=1)
        with open(a.out + ".md", "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
