"""An independent check of the synthetic Occ3D labels against the generator's geometry, frame by frame.

For samples of synthetic scenes (re-rendered from the seed, so no dataset on disk is needed) it measures:
  * hits in occupied voxels: the share of LiDAR returns and of camera hits (at --img_size) inside the grid whose
    voxel is occupied (Occ3D's rule: a voxel that holds surface points is occupied);
  * 2D / 3D agreement: the share of camera pixels whose first occupied voxel along the ray carries the pixel's
    class, overall and where that voxel lies within 0.6 m of the true surface;
  * camera mask coverage: the share of the voxels that a full-resolution (900 x 1600 per camera) ray cast reaches,
    up to the first occupied voxel on rays that end on one, that mask_camera's camera part holds, and how many it
    holds beyond them;
  * the free share of mask_camera and of mask_lidar.

    python -m tools.diagnostics.synthetic_label_check --seed 0 --scenes 0 1 --frames_per_scene 10 --samples 2 6 --json out.json
"""
import argparse
import json

import numpy as np

from datasets.synthetic import frame, rig, visibility
from datasets.synthetic.scene import make_scene
from utils.constants import CAMS, FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL

LO = np.array(OCC3D_LABEL_RANGE[:3])


def _index(p):
    idx = np.floor((p - LO) / OCC3D_VOXEL).astype(np.int64)
    return idx, ((idx >= 0) & (idx < np.array(OCC3D_SHAPE))).all(-1)


def first_voxels(sem, origin, dirs, step=0.02, far=45.0):
    """Class and distance of the first occupied voxel along rays (N, 3) from ``origin`` (FREE_ID, inf: none)."""
    cls, dist = np.full(len(dirs), FREE_ID), np.full(len(dirs), np.inf)
    t = np.arange(0.3, far, step)
    for part in np.array_split(np.arange(len(dirs)), max(1, len(dirs) // 2000)):
        idx, ok = _index(origin + dirs[part, None] * t[:, None])
        c = np.where(ok, sem[tuple(np.where(ok[..., None], idx, 0).transpose(2, 0, 1))], FREE_ID)
        hit = (c != FREE_ID).any(1)
        first = (c != FREE_ID).argmax(1)
        cls[part] = np.where(hit, c[np.arange(len(part)), first], FREE_ID)
        dist[part] = np.where(hit, t[first], np.inf)
    return cls, dist


def dense_camera_cast(occupied, h=900, w=1600):
    """Voxels reached by the rays of every pixel of h x w images, up to the first occupied voxel, for rays that
    end on one."""
    out = np.zeros(OCC3D_SHAPE, bool)
    for cam, c2e in zip(CAMS, rig.cam2ego()):
        d = frame.pixel_rays(rig.intrinsics(h, w, cam), h, w) @ c2e[:3, :3].T
        for part in np.array_split(d, 8):
            _, hit, _ = visibility.observed(occupied, c2e[:3, 3], part, first_hits=True)
            out |= visibility.observed(occupied, c2e[:3, 3], part[hit >= 0])
    return out


def check_sample(world, k, img_hw):
    """The numbers above for sample ``k`` of ``world`` (a dict)."""
    E = world.ego2global[k]
    labels = frame.occ3d_labels(world, k)
    sem = labels["semantics"]
    occ = sem != FREE_ID
    g2e = np.linalg.inv(E)
    _, lidar = frame.lidar_in_ego(world, E, E)
    hits, agree = [lidar], dict(n=0, ok=0, near=0, near_ok=0)
    for (_, _, d, hit), c2e in zip(frame.cast_cameras(world, E, *img_hw), rig.cam2ego()):
        seen = np.isfinite(hit["t"])
        hits.append(hit["point"][seen] @ g2e[:3, :3].T + g2e[:3, 3])
        px = seen & (hit["cls"] != 255)
        cls, dist = first_voxels(sem, c2e[:3, 3], d[px] @ g2e[:3, :3].T)
        found = cls != FREE_ID
        near = found & (np.abs(dist - hit["t"][px]) < 0.6)
        agree["n"] += int(found.sum())
        agree["ok"] += int((cls[found] == hit["cls"][px][found]).sum())
        agree["near"] += int(near.sum())
        agree["near_ok"] += int((cls[near] == hit["cls"][px][near]).sum())
    in_occ = []
    for p in hits:
        idx, ok = _index(p)
        in_occ.append(float(occ[tuple(idx[ok].T)].mean()))
    cams = [(rig.intrinsics(*frame.MASK_HW, c), c2e, *frame.MASK_HW) for c, c2e in zip(CAMS, rig.cam2ego())]
    cam_vis, dense = visibility.camera_mask(occ, cams), dense_camera_cast(occ)
    mc, ml = labels["mask_camera"].astype(bool), labels["mask_lidar"].astype(bool)
    return dict(lidar_hits_in_occupied=in_occ[0], camera_hits_in_occupied=float(np.mean(in_occ[1:])),
                agreement=agree["ok"] / agree["n"], agreement_near=agree["near_ok"] / agree["near"],
                near_share=agree["near"] / agree["n"], dense_voxels=int(dense.sum()),
                dense_covered=float((cam_vis & dense).sum() / dense.sum()), beyond_dense=int((cam_vis & ~dense).sum()),
                free_share_camera=float((~occ[mc]).mean()), free_share_lidar=float((~occ[ml]).mean()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, nargs="+", default=[0, 1])
    p.add_argument("--frames_per_scene", type=int, default=10, help="as given to make_synthetic_nusc.py")
    p.add_argument("--samples", type=int, nargs="+", default=[2, 6], help="sample indices checked in each scene")
    p.add_argument("--img_size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"))
    p.add_argument("--json", default=None, help="also write the per-sample results and their mean here")
    a = p.parse_args()
    rows = []
    for scene in a.scenes:
        world = make_scene(a.seed, scene, a.frames_per_scene)
        for k in a.samples:
            rows.append(dict(scene=scene, sample=k, **check_sample(world, k, tuple(a.img_size))))
            print(json.dumps({key: round(v, 4) if isinstance(v, float) else v for key, v in rows[-1].items()}))
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("scene", "sample")}
    print("mean: " + json.dumps({key: round(v, 4) for key, v in mean.items()}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(args=vars(a), samples=rows, mean=mean), f, indent=1)


if __name__ == "__main__":
    main()
