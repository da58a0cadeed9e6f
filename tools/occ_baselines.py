"""Occupancy scores of trivial predictions, the floor a trained model must clear.

For every sample of a split, predict one constant class everywhere (each of the 17 semantic classes, and free),
and a "ground only" guess (driveable_surface in the voxel layer that holds z = 0, free elsewhere). Scores use the
same evaluator as eval.py (one confusion matrix inside mask_camera). Prints a markdown table and writes JSON.

    python tools/occ_baselines.py --dataroot data/synthetic-full --version v1.0-synthetic \
        --split data/synthetic-full/splits/val.txt --occ_root gts --out baselines.json
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.nuscenes_dataset import load_npz, read_split, resolve  # noqa: E402
from utils.constants import FREE_ID, OCC3D_RANGE, OCC3D_VOXEL, OCC_CLASSES  # noqa: E402
from utils.occ_metrics import OccEvaluator  # noqa: E402


def label_files(dataroot, version, split, occ_root):
    """Paths of <occ_root>/<scene>/<token>/labels.npz for the split's sample tokens (all samples if no split)."""
    tables = os.path.join(dataroot, version)
    with open(os.path.join(tables, "sample.json")) as f:
        samples = {s["token"]: s for s in json.load(f)}
    with open(os.path.join(tables, "scene.json")) as f:
        scenes = {s["token"]: s["name"] for s in json.load(f)}
    tokens = read_split(split) if split else list(samples)
    root = resolve(dataroot, occ_root)
    return [os.path.join(root, scenes[samples[t]["scene_token"]], t, "labels.npz") for t in tokens]


def ground_only(shape):
    pred = np.full(shape, FREE_ID, np.uint8)
    k = int(np.floor((0.0 - OCC3D_RANGE[2]) / OCC3D_VOXEL))
    pred[:, :, k] = OCC_CLASSES.index("driveable_surface")
    return pred


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synthetic")
    p.add_argument("--split", default=None, help="file of sample tokens (default: every sample)")
    p.add_argument("--occ_root", default="gts")
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args()

    files = label_files(args.dataroot, args.version, args.split, args.occ_root)
    guesses = {f"constant {OCC_CLASSES[c]}": c for c in range(len(OCC_CLASSES))}
    evals = {name: OccEvaluator() for name in list(guesses) + ["ground only"]}
    for path in files:
        gt, mask = load_npz(path, ("semantics", "mask_camera"), "Occ3D label")
        mask = mask.astype(bool)
        for name, c in guesses.items():
            evals[name].update(np.full(gt.shape, c, np.uint8), gt, mask)
        evals["ground only"].update(ground_only(gt.shape), gt, mask)
    rows = {name: ev.summary() for name, ev in evals.items()}
    best = max((n for n in rows if n.startswith("constant")), key=lambda n: rows[n]["mIoU_star"])
    print(f"{len(files)} samples\n\n| prediction | mIoU* | mIoU | geo IoU |\n|---|---|---|---|")
    for name in [best, "constant free", "ground only"]:
        r = rows[name]
        print(f"| {name} | {r['mIoU_star']:.2f} | {r['mIoU']:.2f} | {r['geo_IoU']:.2f} |")
    print(f"\nbest constant class: {best}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"samples": len(files), "best_constant": best,
                       "results": {n: {k: rows[n][k] for k in ("mIoU", "mIoU_star", "geo_IoU")} for n in rows}},
                      f, indent=1)


if __name__ == "__main__":
    main()
