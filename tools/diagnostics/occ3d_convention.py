"""Evidence on the Occ3D vertical convention: where the ground and the objects of labels.npz files sit in z and how
much of each visibility mask is free space, and where the ground lies in the nuScenes ego frame according to its
LiDAR (docs/occ3d_convention.md).

    python -m tools.diagnostics.occ3d_convention --labels ../shared/fixtures/occ3d-sample/*/labels.npz \
        --nuscenes_root ../shared/fixtures/nuscenes-scene-0916 --version v1.0-mini
    python -m tools.diagnostics.occ3d_convention --labels data/synthetic/gts/*/*/labels.npz --json stats.json

Labels (summed over the files): voxels per layer of driveable_surface, sidewalk and car; the share of free voxels
in mask_camera and in mask_lidar; whether mask_camera lies inside mask_lidar; the share of observed (mask_lidar)
free voxels per layer within 10 m of the ego, the layers the sensors' rays cross most (LiDAR at ego z = 1.84 m,
cameras at 1.5 m). LiDAR: the height of the ground in the ego frame, the most frequent z (5 cm bins) of the
keyframe points 4-15 m from the sensor, with the 10th / 50th percentiles.
"""
import argparse
import json
import os

import numpy as np

from datasets.nuscenes_dataset import get, load_npz, load_tables
from utils.constants import FREE_ID, OCC3D_SHAPE, OCC3D_VOXEL, OCC_CLASSES
from utils.geometry import pose_matrix

CLASSES = ("driveable_surface", "sidewalk", "car")


def label_stats(paths):
    """Dict of the statistics above, summed over the label files ``paths``."""
    Z = OCC3D_SHAPE[2]
    per_layer = {c: np.zeros(Z, np.int64) for c in CLASSES}
    n = dict(cam=0, cam_free=0, lidar=0, lidar_free=0, cam_outside_lidar=0)
    near_free, near_all = np.zeros(Z, np.int64), np.zeros(Z, np.int64)
    xy = (np.arange(OCC3D_SHAPE[0]) + 0.5) * OCC3D_VOXEL - OCC3D_SHAPE[0] * OCC3D_VOXEL / 2
    near = np.hypot(xy[:, None], xy[None, :]) < 10.0
    for path in paths:
        sem, cam, lidar = load_npz(path, ("semantics", "mask_camera", "mask_lidar"), "Occ3D labels")
        cam, lidar, free = cam.astype(bool), lidar.astype(bool), sem == FREE_ID
        for c in CLASSES:
            per_layer[c] += np.bincount(np.nonzero(sem == OCC_CLASSES.index(c))[2], minlength=Z)
        n["cam"] += int(cam.sum())
        n["cam_free"] += int((cam & free).sum())
        n["lidar"] += int(lidar.sum())
        n["lidar_free"] += int((lidar & free).sum())
        n["cam_outside_lidar"] += int((cam & ~lidar).sum())
        near_free += (lidar & free)[near].sum(0)
        near_all += near.sum()
    return dict(files=len(paths), per_layer={c: v.tolist() for c, v in per_layer.items()},
                free_share_camera=n["cam_free"] / max(n["cam"], 1),
                free_share_lidar=n["lidar_free"] / max(n["lidar"], 1),
                camera_inside_lidar=n["cam_outside_lidar"] == 0, camera_voxels_per_file=n["cam"] / len(paths),
                observed_free_near_by_layer=(near_free / near_all).round(3).tolist())


def lidar_ground(dataroot, version):
    """Ground height in the ego frame from the keyframe LiDAR sweeps of a nuScenes set: dict of the median over
    sweeps of the modal z (5 cm bins) of the points 4-15 m from the sensor, and of their 10th / 50th percentiles."""
    tables = load_tables(dataroot, version, ("sample_data", "calibrated_sensor", "sensor"))
    modes, p10, p50 = [], [], []
    for sd in tables["sample_data"].values():
        cs = get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], f"sample_data {sd['token']}")
        if not sd["is_key_frame"] or tables["sensor"][cs["sensor_token"]]["channel"] != "LIDAR_TOP":
            continue
        pts = np.fromfile(os.path.join(dataroot, sd["filename"]), np.float32).reshape(-1, 5)[:, :3]
        T = pose_matrix(cs["translation"], cs["rotation"])
        r = np.hypot(pts[:, 0], pts[:, 1])
        z = (pts @ T[:3, :3].T + T[:3, 3])[(r > 4) & (r < 15), 2]
        hist, edges = np.histogram(z, bins=np.arange(-2.0, 2.0001, 0.05))
        modes.append(edges[hist.argmax()] + 0.025)
        p10.append(np.percentile(z, 10))
        p50.append(np.percentile(z, 50))
    return dict(sweeps=len(modes), ground_z_mode=float(np.median(modes)), ground_z_p10=float(np.median(p10)),
                ground_z_p50=float(np.median(p50)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", nargs="*", default=[], help="labels.npz files")
    p.add_argument("--nuscenes_root", default=None, help="a nuScenes dataroot whose LiDAR gives the ground height")
    p.add_argument("--version", default="v1.0-mini", help="its table folder")
    p.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    a = p.parse_args()
    out = {}
    if a.labels:
        s = out["labels"] = label_stats(a.labels)
        print(f"{s['files']} label file(s)")
        for c, v in s["per_layer"].items():
            print(f"{c:>18} voxels per layer 0..15: {v}")
        print(f"free share: mask_camera {s['free_share_camera']:.3f}, mask_lidar {s['free_share_lidar']:.3f}; "
              f"mask_camera inside mask_lidar: {s['camera_inside_lidar']}; "
              f"mask_camera voxels per file {s['camera_voxels_per_file']:.0f}")
        print(f"observed free share per layer within 10 m: {s['observed_free_near_by_layer']}")
    if a.nuscenes_root:
        g = out["lidar"] = lidar_ground(a.nuscenes_root, a.version)
        print(f"LiDAR ground in the ego frame ({g['sweeps']} keyframe sweeps, points 4-15 m away): most frequent z "
              f"{g['ground_z_mode']:+.3f} m, 10th / 50th percentile {g['ground_z_p10']:+.3f} / "
              f"{g['ground_z_p50']:+.3f} m")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
