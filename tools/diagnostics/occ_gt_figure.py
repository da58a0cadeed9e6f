"""A picture of Occ3D labels next to the camera images: per chosen sample, the 6 cameras, the top view of every
labelled voxel and the top view inside mask_camera (utils.vis: mosaic, bev_image, compose).

    python -m tools.diagnostics.occ_gt_figure --dataroot ../shared/fixtures/nuscenes-scene-0916 --version v1.0-mini \\
        --occ_root $PWD/data/occ_gt_scene-0916 --samples 0 20 40 --out docs/img/occ_gt_scene-0916.jpg
"""
import argparse
import os

import cv2
import numpy as np
from PIL import Image

from datasets import build_dataset
from options import parse_args
from utils.constants import FREE_ID
from utils.vis import bev_image, compose, image_to_uint8, mosaic, put_label


def figure(dataset, indices, bev_px=240):
    """(H, W, 3) uint8: one row per dataset index."""
    rows = []
    for i in indices:
        item = dataset[i]
        cams = mosaic([image_to_uint8(im) for im in item["imgs"][1]], labels=True)
        sem = item["occ_semantics"].numpy()
        seen = np.where(item["occ_mask_camera"].numpy() > 0, sem, FREE_ID)
        bevs = [put_label(cv2.resize(bev_image(v), (bev_px, bev_px), interpolation=cv2.INTER_NEAREST), t)
                for v, t in ((sem, f"sample {i}: all labels"), (seen, "inside mask_camera"))]
        rows.append([put_label(cams, f"{item['scene']} sample {i}")] + bevs)
    return compose(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, nargs="+", default=[0], help="dataset indices (val split)")
    p.add_argument("--out", required=True, help="output picture (.jpg or .png)")
    p.add_argument("--width", type=int, default=1200, help="picture width in pixels")
    a, rest = p.parse_known_args(argv)
    opt = parse_args(rest + ["--input_size", "180", "320"])
    img = figure(build_dataset(opt, "val"), a.samples)
    img = cv2.resize(img, (a.width, round(img.shape[0] * a.width / img.shape[1])), interpolation=cv2.INTER_AREA)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    Image.fromarray(img).save(a.out, quality=85)
    print(f"wrote {a.out} ({os.path.getsize(a.out) // 1024} KB)")


if __name__ == "__main__":
    main()
