"""Occupancy scores of trivial predictions, the floor a trained model must clear, and of the protocols.

For every sample of a split, predict one constant class everywhere (each of the 17 semantic classes, and free),
a "ground only" guess (driveable_surface in the label layer that holds the road surface, ego z = 0: layer 0 in the
released Occ3D-nuScenes labels and the synthetic ones, ``--occ_label_zmin``; free elsewhere) and the ground
truth lifted by one voxel (0.4 m). Scores use the evaluators of eval.py (one confusion matrix inside the
``--occ_eval_mask`` mask); with ``--rayiou`` the last two also get RayIoU from SparseOcc's scene origins and from
the fixed origin, side by side. Prints a markdown table and writes JSON.

    python -m tools.diagnostics.occ_baselines --dataroot data/synthetic-full --version v1.0-synthetic \
        --split data/synthetic-full/splits/val.txt --occ_root gts --out baselines.json [--rayiou]
"""
import argparse
import json
import os
import sys

import numpy as np

from datasets.nuscenes_dataset import (load_npz, load_tables, read_split, resolve, sample_sensor_data,
                                       scene_ray_origins, scene_samples)
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_VOXEL, OCC_CLASSES
from utils.occ_metrics import NUSC_LIDAR_ORIGIN, OCC_EVAL_MASKS, OccEvaluator, RayIoU, occ_eval_mask


def label_files(dataroot, version, split, occ_root):
    """[(path of <occ_root>/<scene>/<token>/labels.npz, RayIoU scene origins (K, 3))] of the split's sample tokens
    (all samples if no split)."""
    tables = load_tables(dataroot, version)
    samples = scene_samples(tables)
    origins = scene_ray_origins(tables, samples, sample_sensor_data(tables, ("LIDAR_TOP",)))
    scene_of = dict(samples)
    tokens = read_split(split) if split else [t for t, _ in samples]
    root = resolve(dataroot, occ_root)
    return [(os.path.join(root, scene_of[t], t, "labels.npz"), origins.get(t)) for t in tokens]


def lifted(gt):
    """The ground truth one voxel higher (free below), a near miss."""
    pred = np.full_like(gt, FREE_ID)
    pred[:, :, 1:] = gt[:, :, :-1]
    return pred


def ground_only(shape, zmin=OCC3D_LABEL_RANGE[2]):
    """driveable_surface in the layer that holds ego z = 0 when layer 0 starts at ``zmin`` metres, free elsewhere."""
    pred = np.full(shape, FREE_ID, np.uint8)
    k = int(np.floor((0.0 - zmin) / OCC3D_VOXEL))
    pred[:, :, k] = OCC_CLASSES.index("driveable_surface")
    return pred


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synthetic")
    p.add_argument("--split", default=None, help="file of sample tokens (default: every sample)")
    p.add_argument("--occ_root", default="gts")
    p.add_argument("--occ_eval_mask", default="camera_lidar", choices=OCC_EVAL_MASKS, help="as in eval.py")
    p.add_argument("--rayiou", action="store_true", help="also RayIoU of 'ground only' and 'GT lifted 0.4 m' "
                   "from the scene origins and from the fixed origin")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--occ_label_zmin", type=float, default=OCC3D_LABEL_RANGE[2],
                   help="ego height (m) where label layer 0 starts: -0.2 released Occ3D / synthetic labels (road in "
                        "layer 0), -1.0 Occ3D's documented range (road in layer 2)")
    args = p.parse_args()

    files = label_files(args.dataroot, args.version, args.split, args.occ_root)
    guesses = {f"constant {OCC_CLASSES[c]}": (lambda gt, c=c: np.full(gt.shape, c, np.uint8))
               for c in range(len(OCC_CLASSES))}
    guesses.update({"ground only": lambda gt: ground_only(gt.shape, args.occ_label_zmin),
                    "GT lifted 0.4 m": lifted})
    evals = {name: OccEvaluator() for name in guesses}
    rays = {(n, o): RayIoU() for n in ("ground only", "GT lifted 0.4 m") for o in ("scene", "fixed")}
    for path, origins in files:
        gt, cam, lidar = load_npz(path, ("semantics", "mask_camera", "mask_lidar"), "Occ3D label")
        mask = occ_eval_mask(cam, lidar, args.occ_eval_mask)
        for name, guess in guesses.items():
            pred = guess(gt)
            evals[name].update(pred, gt, mask)
            if args.rayiou and (name, "scene") in rays:
                if origins is None:
                    sys.exit(f"error: {path}: no LIDAR_TOP keyframes in the tables for the scene origins")
                rays[name, "scene"].update(pred, gt, origins=origins)
                rays[name, "fixed"].update(pred, gt, origins=[NUSC_LIDAR_ORIGIN])
    rows = {name: ev.summary() for name, ev in evals.items()}
    best = max((n for n in rows if n.startswith("constant")), key=lambda n: rows[n]["mIoU_star"])
    print(f"{len(files)} samples, --occ_eval_mask {args.occ_eval_mask}\n\n"
          "| prediction | mIoU* | mIoU | mIoU (13) | geo IoU | RayIoU (scene origins) | RayIoU (fixed origin) |\n"
          "|---|---|---|---|---|---|---|")
    for name in [best, "constant free", "ground only", "GT lifted 0.4 m"]:
        r = rows[name]
        ray = [f"{rays[name, o].summary()['RayIoU']:.2f}" if args.rayiou and (name, o) in rays else "-"
               for o in ("scene", "fixed")]
        print(f"| {name} | {r['mIoU_star']:.2f} | {r['mIoU']:.2f} | {r['mIoU_13']:.2f} | {r['geo_IoU']:.2f} | "
              + " | ".join(ray) + " |")
    print(f"\nbest constant class: {best}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"samples": len(files), "best_constant": best, "occ_eval_mask": args.occ_eval_mask,
                       "results": {n: {k: rows[n][k] for k in ("mIoU", "mIoU_star", "mIoU_13", "geo_IoU")}
                                   for n in rows},
                       "rayiou": {f"{n} ({o} origins)": r.summary()["RayIoU"] for (n, o), r in rays.items()}
                       if args.rayiou else {}}, f, indent=1)


if __name__ == "__main__":
    main()
