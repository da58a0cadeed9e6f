"""A picture of one written sample: 6 cameras, their semantic maps and a bird's-eye view of the Occ3D labels."""
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.constants import FREE_ID, OCC_COLORS
from utils.vis import bev_image

LAYOUT = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"], ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]


def palette():
    """(256, 3) uint8 colours of class ids; 255 (sky / ignore) light blue."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:len(OCC_COLORS)] = OCC_COLORS
    pal[255] = (170, 210, 240)
    return pal


def occ_bev(semantics, mask_camera, size):
    """Top-down colour image (x forward = up, y left = left) of the highest occupied voxel per column
    (``utils.vis.bev_image``, free columns white), columns outside ``mask_camera`` darkened, ``size`` pixels a side,
    the ego car drawn at the centre."""
    img = bev_image(semantics, background=palette()[FREE_ID], observed=mask_camera)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    c = size // 2
    cv2.rectangle(img, (c - 4, c - 9), (c + 4, c + 3), (255, 255, 255), -1)  # the ego
    return img


def save_preview(root, path, sample=0):
    """Write the picture of the ``sample``-th sample of the set at ``root`` to ``path`` (reads the tables directly:
    no nuscenes-devkit needed)."""
    tables = Path(root) / "v1.0-synthetic"
    rec = json.loads((tables / "sample.json").read_text())[sample]
    scene = next(s["name"] for s in json.loads((tables / "scene.json").read_text()) if s["token"] == rec["scene_token"])
    files = {sd["filename"].split("/")[1]: sd["filename"] for sd in json.loads((tables / "sample_data.json").read_text())
             if sd["sample_token"] == rec["token"] and sd["is_key_frame"] and sd["filename"].startswith("samples/")}
    cams, sems = [], []
    for row in LAYOUT:
        cams.append([np.array(Image.open(Path(root) / files[c])) for c in row])
        sems.append([palette()[np.array(Image.open(Path(root) / "sem" / rec["token"] / f"{c}.png"))] for c in row])
    grid = np.concatenate([np.concatenate(r, 1) for r in cams + sems], 0)
    lab = np.load(Path(root) / "gts" / scene / rec["token"] / "labels.npz")
    bev = occ_bev(lab["semantics"], lab["mask_camera"], grid.shape[0])
    out = np.concatenate([grid, np.full((grid.shape[0], 8, 3), 255, np.uint8), bev], 1)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(out).save(path)
