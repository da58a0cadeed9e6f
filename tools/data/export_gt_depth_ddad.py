"""Project each DDAD sample's LiDAR sweep into its 6 cameras and save the sparse depth per camera.

Same files as ``tools/data/export_gt_depth_nusc.py``: ``<out>/<token>/<CAM>.npz`` with ``uv`` (N, 2) int32 pixel
column/row, ``depth`` (N,) float32 camera z (0.1-200 m by default) and ``hw`` (2,) image height/width; tokens
are ``<scene>_<index>`` and ``<CAM>`` the ring-position name (CAM_FRONT = CAMERA_01, see
``datasets.ddad_dataset.RING_NAME``). Points go LIDAR (its timestamp) -> world -> camera (its own timestamp)
through the per-datum poses. Samples whose 6 files exist already are skipped.

    python -m tools.data.export_gt_depth_ddad --dataroot data/ddad_train_val --out depth_gt
"""
import argparse
import os
import warnings

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.ddad_dataset import (DDAD_CAMS, LIDAR, RING_NAME, SPLIT_IDS, find_dataset_json,
                                   load_scene, sample_token, split_scene_files)
from datasets.nuscenes_dataset import resolve
from tools.data.export_gt_depth_nusc import project_to_image


def load_lidar(path):
    """(N, 3) float64 points of a DGP point-cloud ``.npz`` (columns X, Y, Z, ... in the LIDAR frame)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DDAD: LiDAR file not found: {path}")
    with np.load(path) as z:
        if "data" not in z.files:
            raise ValueError(f"DDAD: LiDAR file {path} has no 'data' array (has {z.files})")
        return z["data"][:, :3]


def lidar_to_camera(frame, cam):
    """4x4 transform from the LIDAR frame at its timestamp to camera ``cam`` at its own timestamp (via world)."""
    return np.linalg.inv(frame[cam]["pose"]) @ frame[LIDAR]["pose"]


def image_hw(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"DDAD: image not found (needed for its size): {path}")
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def export_scene(scene, out, max_depth=200.0):
    """Write the depth files of every sample of one parsed scene; returns the number of samples written."""
    written = 0
    for i, frame in enumerate(scene["frames"]):
        folder = os.path.join(out, sample_token(scene["name"], i))
        if all(os.path.isfile(os.path.join(folder, RING_NAME[c] + ".npz")) for c in DDAD_CAMS):
            continue
        points = load_lidar(frame[LIDAR]["file"])
        os.makedirs(folder, exist_ok=True)
        for cam in DDAD_CAMS:
            hw = image_hw(frame[cam]["file"])
            uv, depth = project_to_image(points, lidar_to_camera(frame, cam), scene["calib"][cam][0], hw, max_depth)
            tmp = os.path.join(folder, RING_NAME[cam] + ".tmp.npz")
            np.savez(tmp, uv=uv, depth=depth, hw=np.array(hw, dtype=np.int64))
            os.replace(tmp, os.path.join(folder, RING_NAME[cam] + ".npz"))
        written += 1
    return written


def export_depth(dataroot, out, splits=("train", "val"), max_depth=200.0):
    """Export every scene of ``splits`` that has the 6 cameras and the LiDAR; returns samples written."""
    written = 0
    ds_json = find_dataset_json(dataroot)
    paths = dict.fromkeys(p for s in splits for p in split_scene_files(ds_json, s))  # each scene once, in order
    for path in tqdm(paths, desc="DDAD lidar depth", unit="scene"):
        scene = load_scene(path)
        missing = [c for c in DDAD_CAMS + [LIDAR] if any(c not in fr for fr in scene["frames"])]
        if missing:
            warnings.warn(f"DDAD: scene {scene['name']} skipped, it lacks {', '.join(missing)}")
            continue
        written += export_scene(scene, out, max_depth)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True, help="DDAD root (folder of ddad.json) or the dataset JSON itself")
    p.add_argument("--out", default="depth_gt", help="output folder (relative paths are resolved against the root)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], choices=sorted(SPLIT_IDS),
                   help="scene splits of the dataset JSON to export")
    p.add_argument("--max_depth", type=float, default=200.0, help="keep points with camera z in (0.1, max_depth) m")
    args = p.parse_args(argv)
    root = os.path.dirname(find_dataset_json(args.dataroot))
    out = resolve(root, args.out)
    n = export_depth(args.dataroot, out, args.splits, args.max_depth)
    print(f"wrote depth of {n} samples to {out}")


if __name__ == "__main__":
    main()
