"""Project each keyframe's LIDAR_TOP sweep into the 6 cameras and save the sparse depth per camera.

Writes ``<out>/<sample_token>/<CAM>.npz`` with ``uv`` (N, 2) int32 pixel column/row, ``depth`` (N,) float32
camera z in metres and ``hw`` (2,) image height/width. Points go lidar -> ego (lidar time) -> global ->
ego (camera time) -> camera, like nuscenes-devkit's ``map_pointcloud_to_image``; a point lands on the pixel
nearest to its projection (pixel centres at integer coordinates), and the nearest point wins a shared pixel.
Samples whose 6 files exist already are skipped, so an interrupted run can simply be started again.

    python -m tools.data.export_gt_depth_nusc --dataroot data/nuscenes --version v1.0-trainval --out depth_gt   # -> data/nuscenes/depth_gt
"""
import argparse
import os

import numpy as np
from tqdm import tqdm

from datasets.nuscenes_dataset import (get, image_hw, load_tables, read_lidar, read_split,
                                       resolve, sample_sensor_data, scene_samples, sensor_pose)
from utils.constants import CAMS

MIN_DEPTH = 0.1


def project_to_image(points, lidar2cam, K, hw, max_depth):
    """Sparse depth image of LiDAR points.

    points (N, 3) lidar frame, lidar2cam (4, 4), K (3, 3), hw (H, W) ->
    uv (M, 2) int32 column/row, one point per pixel (the nearest), depth (M,) float32 camera z.
    """
    cam = points @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
    z = cam[:, 2]
    keep = (z > MIN_DEPTH) & (z < max_depth)
    cam, z = cam[keep], z[keep]
    pix = cam @ np.asarray(K, dtype=np.float64).T
    uv = np.round(pix[:, :2] / pix[:, 2:3]).astype(np.int64)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < hw[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < hw[0])
    uv, z = uv[inside], z[inside]
    order = np.argsort(z, kind="stable")  # nearest first; np.unique keeps the first of each pixel
    _, first = np.unique(uv[order, 1] * hw[1] + uv[order, 0], return_index=True)
    keep = order[first]
    return uv[keep].astype(np.int32), z[keep].astype(np.float32)


def export_depth(dataroot, version, out, max_depth=80.0, tokens=None):
    """Write the depth files of every sample (or of ``tokens``); returns the number of samples written."""
    tables = load_tables(dataroot, version)
    if tokens is None:
        tokens = [t for t, _ in scene_samples(tables)]
    sensor_data = sample_sensor_data(tables, CAMS + ["LIDAR_TOP"])
    written = 0
    for token in tqdm(tokens, desc="lidar depth", unit="sample"):
        folder = os.path.join(out, token)
        if all(os.path.isfile(os.path.join(folder, cam + ".npz")) for cam in CAMS):
            continue
        data = sensor_data.get(token, {})
        missing = [c for c in CAMS + ["LIDAR_TOP"] if c not in data]
        if missing:
            raise ValueError(f"sample {token} has no keyframe sample_data for {missing}")
        lidar = data["LIDAR_TOP"]
        points = read_lidar(os.path.join(dataroot, lidar["filename"]))
        lidar2ego, lidar_ego2global = sensor_pose(tables, lidar)
        os.makedirs(folder, exist_ok=True)
        for cam in CAMS:
            cam2ego, cam_ego2global = sensor_pose(tables, data[cam])
            lidar2cam = np.linalg.inv(cam_ego2global @ cam2ego) @ lidar_ego2global @ lidar2ego
            K = get(tables, "calibrated_sensor", data[cam]["calibrated_sensor_token"], cam)["camera_intrinsic"]
            hw = image_hw(dataroot, data[cam])
            uv, depth = project_to_image(points, lidar2cam, K, hw, max_depth)
            tmp = os.path.join(folder, cam + ".tmp.npz")
            np.savez_compressed(tmp, uv=uv, depth=depth, hw=np.array(hw, dtype=np.int64))
            os.replace(tmp, os.path.join(folder, cam + ".npz"))
        written += 1
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True, help="nuScenes root (tables in <dataroot>/<version>/)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-trainval, v1.0-mini")
    p.add_argument("--out", default="depth_gt", help="output folder (relative paths are resolved against dataroot)")
    p.add_argument("--max_depth", type=float, default=80.0, help="keep points with camera z in (0.1, max_depth) m")
    p.add_argument("--split", default=None, help="optional split file of sample tokens (default: every sample)")
    args = p.parse_args(argv)
    tokens = read_split(args.split) if args.split else None
    out = resolve(args.dataroot, args.out)
    n = export_depth(args.dataroot, args.version, out, args.max_depth, tokens)
    print(f"wrote depth of {n} samples to {out}")


if __name__ == "__main__":
    main()
