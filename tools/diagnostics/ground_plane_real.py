"""How much of the near field the ground at the cameras' known height would place, on real keyframes (no network, CPU).

On the real fixture's keyframes the temporal photometric loss hardly places the near road (tools/diagnostics/
photo_evidence_real.py: +-23-28 % within 10 m). A cue that needs no texture: the road is a plane at a height the rig's
calibration fixes (metric, the same on every street). This tool reads, at each LiDAR point, its height in the ego frame
and the depth the ground plane would give its pixel; the plane's height is the median height of the LiDAR points in
the bottom third of the images within ``--near`` metres (on nuScenes those are road). Reported: that height and its
spread, and per image third and distance the share of the LiDAR points whose plane depth is within 5 % of the LiDAR
(the pixels such a cue could place), and how many LiDAR points lie beyond the plane (what a one-sided ground term,
stage 1's --w_ground, must allow: its --ground_margin), with no network and no photometric term.

  python -m tools.diagnostics.ground_plane_real --dataroot fixture_pack --samples 4 14 24 34 --out_dir OUT
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tools.diagnostics.gsp_landscape_real import add_data_args, items, keyframe_dataset, lidar_points
from utils.geometry import ground_plane_depth

RANGES = ((0, 10), (10, 20), (20, 40))


def ego_heights(z, vv, uu, K, cam2ego):
    """The ego-frame heights (float64) of LiDAR points of one camera: camera depth z at pixel row vv, column uu of the
    grid K belongs to."""
    pix = torch.stack([uu.double(), vv.double(), torch.ones_like(z, dtype=torch.float64)], 1)  # (P, 3)
    ray = pix @ torch.linalg.inv(K.double()).T  # camera frame, z = 1
    return ((ray * z.double()[:, None]) @ cam2ego[:3, :3].double().T + cam2ego[:3, 3].double())[:, 2]


def plane_depth_at(vv, uu, K, cam2ego, hw, ground_z):
    """utils.geometry.ground_plane_depth (the map stage 1's --w_ground uses) at those pixels, in float64."""
    return ground_plane_depth(K[None].double(), cam2ego[None].double(), hw, ground_z)[0, 0][vv, uu]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, (4, 14, 24, 34))
    p.add_argument("--near", type=float, default=10.0, help="metres: the points that fix the plane's height")
    p.add_argument("--out_dir", default="logs/ground-plane-real")
    a = p.parse_args(argv)
    pts = []  # per camera: the LiDAR points' camera depth and pixel, K and cam2ego, finished once the height is known
    for _, item in items(p, a, keyframe_dataset(a, occupancy=False)):
        for c in range(len(item["K"])):
            z, vv, uu = lidar_points(item["depth_gt"][c], a.size)
            pts.append((z, vv, uu, item["K"][c], item["cam2ego"][c]))
    heights = torch.cat([ego_heights(z, vv, uu, K, c2e) for z, vv, uu, K, c2e in pts])
    zs = torch.cat([z for z, *_ in pts]).double()
    rows = torch.cat([(vv.double() + 0.5) / a.size[0] for _, vv, *_ in pts])
    base = (rows >= 2 / 3) & (zs < a.near)
    ground_z = float(heights[base].median())
    spread = float((heights[base] - ground_z).abs().median())
    plane = torch.cat([plane_depth_at(vv, uu, K, c2e, a.size, ground_z) for _, vv, uu, K, c2e in pts])
    ok = (plane / zs - 1).abs() <= 0.05
    down = torch.isfinite(plane)  # the points whose ray goes down to the plane: how many lie beyond it (--w_ground)
    beyond = {f"{m:g}": float((zs[down] > plane[down] * (1 + m)).double().mean()) for m in (0.05, 0.1, 0.2)}
    res = {"ground_z": ground_z, "ground_z_median_abs_dev": spread, "points_fixing_it": int(base.sum()), "bins": {},
           "points_below_horizon": int(down.sum()), "share_beyond_plane_times_1_plus": beyond}
    for name, lo, hi in (("top third", 0, 1 / 3), ("middle third", 1 / 3, 2 / 3), ("bottom third", 2 / 3, 1.01)):
        for rlo, rhi in RANGES:
            sel = (rows >= lo) & (rows < hi) & (zs >= rlo) & (zs < rhi)
            if sel.any():
                res["bins"][f"{name}, {rlo}-{rhi} m"] = {"points": int(sel.sum()), "plane_within_5pct":
                                                         float(ok[sel].double().mean())}
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_plane.json").write_text(json.dumps(res, indent=1))
    md = [f"Ground height in the ego frame: {ground_z:.3f} m (median abs. deviation {spread:.3f} m, "
          f"{res['points_fixing_it']} LiDAR points of the bottom thirds within {a.near:g} m)", "",
          f"LiDAR points whose ray goes down to the plane: {res['points_below_horizon']}; of them beyond the plane "
          "depth x (1 + m): " + ", ".join(f"m = {m}: {v:.3f}" for m, v in beyond.items()), "",
          "| LiDAR points | count | plane depth within 5 % |", "|---|---:|---:|"]
    md += [f"| {k} | {v['points']} | {v['plane_within_5pct']:.2f} |" for k, v in res["bins"].items()]
    (out / "ground_plane.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out}/ground_plane.json, .md")


if __name__ == "__main__":
    main()
