"""2D semantic pseudo-labels: this project's PNG files and the release's Grounded-SAM ``*_mask.bin`` files.

``--sem_format png`` (this project): ``<sem_root>/<sample_token>/<CAM>.png``, a single-channel uint8 image of
Occ3D class ids, 255 = ignore.

``--sem_format gsam_bin`` (the authors' files, made by GroundedSAM_GaussianOcc): one file per camera image,
``<sem_root>/<image path without its extension>_mask.bin`` on nuScenes (their folder is ``nuscenes_semantic``,
e.g. ``nuscenes_semantic/samples/CAM_FRONT/<name>_mask.bin``) and ``<sem_root>/<scene>/<CAMERA_xx>/<name>_mask.bin``
on DDAD (their ``ddad_semantic``). Raw int8, no header, row-major, one Grounded-SAM id per pixel of the ORIGINAL
image (900 x 1600 on nuScenes, 1216 x 1936 on DDAD). Ids (their prompt dictionary): 0 nothing detected,
1 sedan, 2 highway, 3 bus, 4 truck, 5 terrain, 6 tree, 7 sidewalk, 8 bicycle / bicyclist, 9 barrier / barricade,
10 person / pedestrian, 11 building / bridge / pole / billboard / light / ashbin, 12 motorcycle / motorcyclist,
13 crane, 14 trailer, 15 cone, 16 sky. ``GSAM_TO_OCC`` maps them as the release's loaders do, with one
difference for sky:
  * 0 (nothing detected) -> 0 ``others``: their comment says "ignore", but their cross-entropy ignores -1 only,
    so these pixels are trained as ``others``; kept as theirs;
  * 16 sky -> 17 (free) in the release, trained against their 18 rendered channels (17 classes + free); this
    project renders the 17 semantic channels only (the free class is the opacity), so sky becomes ``SKY_ID`` (254):
    left out of the semantic cross-entropy, and with ``--w_sky`` > 0 its rays are trained transparent (the
    release's "sky is free", said through the opacity; networks/gsv_loss.py).
"""
import os

import numpy as np
import torch
from PIL import Image

from utils.constants import IGNORE_ID, NUM_SEM_CLASSES, SKY_ID
from utils.errors import BadData, MissingFile, UnreadableFile

SEM_FORMATS = ("png", "gsam_bin")
GSAM_NAMES = ("nothing", "sedan", "highway", "bus", "truck", "terrain", "tree", "sidewalk", "bicycle", "barrier",
              "person", "building", "motorcycle", "crane", "trailer", "cone", "sky")
# Grounded-SAM id -> Occ3D class id (utils.constants.OCC_CLASSES), SKY_ID = sky.
GSAM_TO_OCC = np.array([0, 4, 11, 3, 10, 14, 16, 13, 2, 1, 7, 15, 6, 5, 9, 8, SKY_ID], np.uint8)


def read_png_label(path, extra_ids=(SKY_ID, IGNORE_ID)):
    """(h, w) uint8 class ids of a single-channel PNG label: Occ3D classes 0..NUM_SEM_CLASSES-1 and ``extra_ids``
    (sky, ignore; the loader passes its --sky_id). Other ids are refused here, naming the file (the cross-entropy
    on the GPU does not check them: that would wait for the GPU every step)."""
    if not os.path.isfile(path):
        raise MissingFile(f"semantic label missing: {path}")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise BadData(f"semantic label {path}: expected a single-channel uint8 PNG, got {img.mode}")
            labels = np.asarray(img, dtype=np.uint8)
    except OSError as e:
        raise UnreadableFile(f"cannot read semantic label {path}: {e}") from None
    ids = np.unique(labels)
    bad = [int(i) for i in ids if i >= NUM_SEM_CLASSES and i not in extra_ids]
    if bad:
        raise BadData(f"semantic label {path}: ids {bad[:10]} are neither Occ3D classes 0..{NUM_SEM_CLASSES - 1} nor "
                      f"sky / ignore {sorted(set(extra_ids))}")
    return labels


def read_gsam_bin(path, image_hw):
    """(h, w) uint8 Occ3D class ids of a Grounded-SAM ``*_mask.bin`` file of an image of ``image_hw`` pixels."""
    if not os.path.isfile(path):
        raise MissingFile(f"Grounded-SAM label missing: {path}")
    h, w = (int(s) for s in image_hw)
    raw = np.fromfile(path, dtype=np.int8)
    if raw.size != h * w:
        raise BadData(f"Grounded-SAM label {path}: {raw.size} bytes, expected {h} x {w} = {h * w} (int8, one id "
                      f"per pixel of the {w} x {h} image it belongs to)")
    if raw.min() < 0 or raw.max() >= len(GSAM_TO_OCC):
        raise BadData(f"Grounded-SAM label {path}: ids outside 0..{len(GSAM_TO_OCC) - 1}: "
                      f"{sorted(set(np.unique(raw).tolist()) - set(range(len(GSAM_TO_OCC))))[:10]}")
    return GSAM_TO_OCC[raw.reshape(h, w)]


def gsam_path(sem_root, image_file):
    """nuScenes layout of the release: ``<sem_root>/<image path without extension>_mask.bin``."""
    return os.path.join(sem_root, os.path.splitext(image_file)[0] + "_mask.bin")


def resize_labels(labels, size_hw):
    """(h, w) uint8 ids -> (H, W) int64 tensor at ``size_hw`` (nearest neighbour)."""
    if tuple(labels.shape) != tuple(size_hw):
        labels = np.asarray(Image.fromarray(labels).resize((size_hw[1], size_hw[0]), Image.NEAREST))
    return torch.from_numpy(labels.astype(np.int64))
