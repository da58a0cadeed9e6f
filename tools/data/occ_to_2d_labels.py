"""2D semantic labels rendered from occupancy labels: each pixel takes the class of the first occupied voxel its ray
meets (an ORACLE stand-in for 2D pseudo-labels where none exist, e.g. the real fixture; it is made from LiDAR).

For every keyframe of the chosen split that has occupancy labels (``tools/data/make_occ_gt_nusc.py`` makes them from
LiDAR and boxes), each camera's rays are marched through the labels (``tools.diagnostics.gsp_landscape_real.
occupancy_depth``) and ``<out>/<sample_token>/<CAM>.png`` is written in this project's label format (Occ3D ids,
255 = ignore where the ray meets nothing in the grid), which the loaders read with ``--use_sem true --sem_root
<out> --sem_format png``. ``<out>/labels_info.json`` says how they were made and how well the road pixels fit the
road plane: the LiDAR points that fall on a pixel labelled driveable surface, their depth against the depth at
which that pixel's ray meets the plane z_ego = --ground_height (what ``--ground_mode road`` of stage 1 trains
towards), and the road's height they say (the --ground_height to train with).

    python -m tools.data.occ_to_2d_labels --dataroot fixture_pack --version v1.0-mini --occ_root gts_lidar \\
        --depth_root depth_gt --size 180 320 --out fixture_pack/sem_occ
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import options
from datasets import build_dataset
from datasets.nuscenes_dataset import CAMS
from tools.diagnostics.ground_plane_real import ego_heights
from tools.diagnostics.gsp_landscape_real import lidar_points, occupancy_depth
from utils.constants import FREE_ID, IGNORE_ID, OCC_CLASSES
from utils.geometry import ground_plane_depth

ROAD = OCC_CLASSES.index("driveable_surface")


def keyframes(a, split):
    """The dataset of --split with occupancy labels and LiDAR depth at --size (keyframe neighbours)."""
    depth = ["--depth_root", a.depth_root] if a.depth_root else []
    opt = options.parse_args(["--stage", "gsp", "--dataset", "nuscenes", "--dataroot", a.dataroot, "--version",
                              a.version, "--occ_root", a.occ_root, *depth,
                              "--adjacent", "keyframe", "--input_size", str(a.size[0]), str(a.size[1]),
                              *[x for k in ("train_split", "val_split") if getattr(a, k)
                                for x in (f"--{k}", getattr(a, k))]])
    return build_dataset(opt, split)


def road_plane_fit(cls, K, cam2ego, lidar, hw, ground_height):
    """LiDAR points on road-labelled pixels whose ray goes down: (LiDAR depth, plane depth, ego height) arrays."""
    plane = ground_plane_depth(K.float(), cam2ego.float(), hw, ground_height)[:, 0]
    zs, ps, hs = [], [], []
    for c in range(len(cls)):
        z, vv, uu = lidar_points(lidar[c], hw)
        p = plane[c][vv, uu]
        keep = (cls[c][vv, uu] == ROAD) & torch.isfinite(p)
        zs.append(z[keep])
        ps.append(p[keep])
        hs.append(ego_heights(z[keep], vv[keep], uu[keep], K[c], cam2ego[c]))
    return torch.cat(zs), torch.cat(ps), torch.cat(hs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--occ_root", default="gts_lidar")
    p.add_argument("--depth_root", default="depth_gt", help="LiDAR depth maps, for the road check only ('' = no check)")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="the keyframes of these splits")
    p.add_argument("--train_split", default=None, help="token file of the train split (as train.py's)")
    p.add_argument("--val_split", default=None, help="token file of the val split (as train.py's)")
    p.add_argument("--size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"),
                   help="the labels' size (the loader resizes them, nearest neighbour, to its render size)")
    p.add_argument("--step", type=float, default=0.1, help="ray-marching step, metres (voxels are 0.4 m)")
    p.add_argument("--ground_height", type=float, default=0.08, help="the road plane of the check, ego frame (m)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    out = Path(a.out)
    done, counts, z_all, p_all, h_all = set(), np.zeros(len(OCC_CLASSES) + 1, np.int64), [], [], []
    for split in a.splits:
        ds = keyframes(a, split)
        for i in range(len(ds)):
            item = ds[i]
            if item["token"] in done:
                continue
            done.add(item["token"])
            _, cls = occupancy_depth(item["occ_semantics"].numpy(), item["K"], item["cam2ego"], a.size,
                                     step=a.step, with_class=True)
            lab = torch.where(cls == FREE_ID, torch.full_like(cls, IGNORE_ID), cls).to(torch.uint8).numpy()
            (out / item["token"]).mkdir(parents=True, exist_ok=True)
            for c, cam in enumerate(CAMS):
                tmp = out / item["token"] / f".{cam}.png"
                Image.fromarray(lab[c], mode="L").save(tmp)
                os.replace(tmp, out / item["token"] / f"{cam}.png")
            counts += np.bincount(np.where(lab == IGNORE_ID, len(OCC_CLASSES), lab).ravel(),
                                  minlength=len(counts))
            if "depth_gt" in item:
                z, pl, hgt = road_plane_fit(cls, item["K"], item["cam2ego"], item["depth_gt"], a.size,
                                            a.ground_height)
                z_all.append(z)
                p_all.append(pl)
                h_all.append(hgt)
            print(f"{split} {i + 1}/{len(ds)} {item['token']}", flush=True)
    share = counts / max(counts.sum(), 1)
    info = {"source": "occupancy labels rendered to each camera (first occupied voxel along the ray); an oracle made "
                      "from LiDAR, not a 2D segmentation", "dataroot": a.dataroot, "occ_root": a.occ_root,
            "size": list(a.size), "step_m": a.step, "keyframes": len(done),
            "pixel_share": {n: float(s) for n, s in zip(list(OCC_CLASSES) + ["ignore"], share) if s > 0}}
    if z_all:
        z, pl, hgt = torch.cat(z_all).double(), torch.cat(p_all).double(), torch.cat(h_all)
        rel, near = pl / z, z < 10
        info["road_vs_plane"] = {"ground_height": a.ground_height, "lidar_points": int(len(z)),
                                 # the --ground_height these points say: their median ego height within 10 m
                                 "road_height_within_10m": float(hgt[near].median()) if near.any() else None,
                                 "median_plane_over_lidar": float(rel.median()),
                                 "within_5pct": float(((rel - 1).abs() <= 0.05).double().mean()),
                                 "within_10pct": float(((rel - 1).abs() <= 0.10).double().mean()),
                                 "abs_rel": float(((pl - z).abs() / z).mean())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
