"""A picture of saved predicted volumes (``eval.py --save_pred``) beside the labels: per chosen sample, the 6 cameras,
then the Occ3D labels the cameras see and each run's read-out (inside the same camera-visible voxels, or all of it
with ``--pred_mask none``), each as a 3D view beside its top view. It needs no checkpoint and no GPU: the volumes of
a GPU run, brought back, are drawn on any machine.

    python -m tools.diagnostics.occ_pred_figure --config configs/synthetic-gsv.txt --dataroot data/syn-kf16 \\
        --val_split data/syn-kf16/splits/val.txt --pred logs/pred-a logs/pred-b --names "volume to 5.4 m" \\
        "volume to 9.4 m" --samples 0 --out docs/img/occ_pred.jpg
"""
import argparse
import os

import cv2
import numpy as np
from PIL import Image

from datasets import build_dataset
from options import parse_args
from tools.visualize import gt_occupancy, occupancy_row
from utils.constants import FREE_ID
from utils.pred_io import load_prediction
from utils.vis import compose, image_to_uint8, mosaic, put_label, render_voxels


def figure(dataset, indices, preds, names, pred_mask="camera", view_hw=(300, 520)):
    """(H, W, 3) uint8: per dataset index a row of cameras and a row of [labels, runs...] views."""
    rows = []
    for i in indices:
        item = dataset[i]
        rows.append([put_label(mosaic([image_to_uint8(im) for im in item["imgs"][1]], labels=True),
                               f"{item['scene']} sample {i}")])
        row = []
        gt = gt_occupancy(item)
        row += occupancy_row(render_voxels(gt, view_hw[1], view_hw[0]), gt, "labels (camera-visible voxels)")
        for d, name in zip(preds, names):
            path = os.path.join(d, f"{item['token']}.npz")
            if not os.path.exists(path):
                raise SystemExit(f"error: --pred {d} has no volume of sample {i} ({item['token']}.npz)")
            occ = load_prediction(path)["occupancy"].copy()
            if pred_mask == "camera":
                occ[item["occ_mask_camera"].numpy() == 0] = FREE_ID
            row += occupancy_row(render_voxels(occ, view_hw[1], view_hw[0]), occ, name)
        rows.append(row)
    return compose(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", nargs="+", required=True, help="folders of <token>.npz (eval.py --save_pred)")
    p.add_argument("--names", nargs="*", default=None, help="a title per folder (default: the folder names)")
    p.add_argument("--samples", type=int, nargs="+", default=[0], help="dataset indices (val split)")
    p.add_argument("--pred_mask", default="camera", choices=["camera", "none"],
                   help="camera: the read-out inside the labels' mask_camera (what is scored); none: all of it")
    p.add_argument("--out", required=True, help="output picture (.jpg or .png)")
    p.add_argument("--width", type=int, default=1600, help="picture width in pixels")
    a, rest = p.parse_known_args(argv)
    names = a.names or [os.path.basename(os.path.normpath(d)) for d in a.pred]
    if len(names) != len(a.pred):
        raise SystemExit(f"error: --names gives {len(names)} names for {len(a.pred)} --pred folders")
    opt = parse_args(rest + ["--input_size", "180", "320"])
    img = figure(build_dataset(opt, "val"), a.samples, a.pred, names, a.pred_mask)
    img = cv2.resize(img, (a.width, round(img.shape[0] * a.width / img.shape[1])), interpolation=cv2.INTER_AREA)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(a.out, quality=85)
    print(f"wrote {a.out} ({os.path.getsize(a.out) // 1024} KB)")


if __name__ == "__main__":
    main()
