"""How much depth the temporal photometric loss itself can tell on REAL keyframes, by distance (no network, CPU).

The real fixture's stage 1 learns a depth that is long, and longest in the near field (AbsRel 0.59 within 20 m, 0.29
beyond 40 m: docs/results/runs/2026-12-04/fixture-s1-landscape-gpu). Is that the data (the photometric error of
those pixels is flat in depth, so smoothness and the network's priors place them) or the training?

For each keyframe: a dense depth marched through its LiDAR-derived occupancy labels (as gsp_landscape_real), scaled by
s over a log grid; the previous and the next keyframe warped into it with the RECORDED motion; each pixel keeps the s
of its smallest photometric error (0.85 SSIM + 0.15 L1, the minimum over the sources whose warp is valid, as the
training loss). At the LiDAR points where the dense depth agrees with the LiDAR within ``--agree`` (there s* = 1 is
the right answer): |s* - 1| by LiDAR distance and by image row (the bottom third is mostly the near road). The
synthetic counterpart with exact dense depth is tools/diagnostics/photo_depth.py.

  python -m tools.diagnostics.photo_evidence_real --dataroot fixture_pack --samples 4 14 24 34 --out_dir OUT
  python -m tools.diagnostics.photo_evidence_real --dataroot data/synthetic-full --version v1.0-synthetic \
      --occ_root gts --val_split data/synthetic-full/splits/val.txt --samples 3 11 19 27 --out_dir OUT  # synthetic

Writes evidence.json / evidence.md.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tools.diagnostics.gsp_landscape_real import add_data_args, items, keyframe_dataset, lidar_points, occupancy_depth
from utils.geometry import rel_cam_pose, warp
from utils.losses import photometric_errors

SCALES = tuple(float(s) for s in np.exp(np.linspace(np.log(0.5), np.log(2.0), 41)))  # 3.5 % steps, 1.0 included
RANGES = ((0, 10), (10, 20), (20, 40), (40, 80))


def pixel_scale_argmin(target, sources, depth, K, Ts, scales=SCALES):
    """Per pixel the s of the smallest photometric error when ``depth`` is scaled by s (the minimum over the sources
    whose warp is valid). target (N, 3, H, W), sources list of (N, 3, H, W), depth (N, 1, H, W), K (N, 3, 3), Ts list
    of (N, 4, 4) target camera -> source camera. Returns s* (N, H, W) and valid (N, H, W): some source valid at every
    s (a pixel that leaves the images at some s is not counted: its minimum would be decided by that)."""
    errs, valid = [], None
    for s in scales:
        warped, ok = zip(*[warp(src, depth * s, K, T) for src, T in zip(sources, Ts)])
        e = photometric_errors(target, list(warped))  # (N, S, H, W)
        ok = torch.cat(ok, 1)
        e = torch.where(ok, e, torch.full_like(e, float("inf"))).min(1).values
        errs.append(e)
        any_ok = ok.any(1)
        valid = any_ok if valid is None else valid & any_ok
    best = torch.stack(errs).argmin(0)
    return torch.tensor(scales)[best], valid


def evidence_at_lidar(s_star, valid, depth, lidar, size, agree=0.1):
    """The LiDAR points (original image size) whose pixel has a valid s* and whose dense depth agrees with the LiDAR
    within ``agree``: arrays of LiDAR distance z, image row fraction (0 top, 1 bottom), s*."""
    zs, rows, ss = [], [], []
    for c in range(len(s_star)):
        z, vv, uu = lidar_points(lidar[c], size)
        d = depth[c][vv, uu]
        keep = valid[c][vv, uu] & (d > 0) & ((d / z.clamp(min=1e-3) - 1).abs() < agree)
        zs.append(z[keep])
        rows.append((vv[keep].float() + 0.5) / size[0])
        ss.append(s_star[c][vv, uu][keep])
    return torch.cat(zs).numpy(), torch.cat(rows).numpy(), torch.cat(ss).numpy()


def summarise(s, scales=SCALES):
    """Median |s* - 1|, the share within 5 % and the share at the ends of the grid (no minimum inside it)."""
    if len(s) == 0:
        return {"points": 0}
    dev = np.abs(s - 1)
    edge = (s <= scales[0] + 1e-9) | (s >= scales[-1] - 1e-9)
    return {"points": int(len(s)), "median_dev": float(np.median(dev)), "within_5pct": float(np.mean(dev <= 0.05)),
            "at_grid_end": float(np.mean(edge)), "median_s": float(np.median(s))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, (4, 14, 24, 34))
    p.add_argument("--agree", type=float, default=0.1, help="dense depth within this of the LiDAR (relative)")
    p.add_argument("--out_dir", default="logs/photo-evidence-real")
    a = p.parse_args(argv)
    zs, rows, ss, per = [], [], [], []
    for i, item in items(p, a, keyframe_dataset(a)):
        depth = occupancy_depth(item["occ_semantics"].numpy(), item["K"], item["cam2ego"], a.size).float()
        imgs, K, c2e, E = item["imgs"], item["K"], item["cam2ego"], item["ego2global"].double()
        Ts = [rel_cam_pose(c2e.double(), E[1], E[k]).float() for k in (0, 2)]
        s_star, valid = pixel_scale_argmin(imgs[1], [imgs[0], imgs[2]], depth[:, None], K, Ts)
        valid &= depth > 0
        z, r, s = evidence_at_lidar(s_star, valid, depth, item["depth_gt"], a.size, a.agree)
        zs.append(z), rows.append(r), ss.append(s)
        per.append({"index": i, "token": item["token"], **summarise(s)})
        print(f"item {i}: {per[-1]}", flush=True)
    z, r, s = np.concatenate(zs), np.concatenate(rows), np.concatenate(ss)
    by_range = {f"{lo}-{hi} m": summarise(s[(z >= lo) & (z < hi)]) for lo, hi in RANGES}
    by_row = {name: summarise(s[(r >= lo) & (r < hi)])
              for name, lo, hi in (("top third", 0, 1 / 3), ("middle third", 1 / 3, 2 / 3), ("bottom third", 2 / 3, 1.01))}
    res = {"samples": per, "all": summarise(s), "by_range": by_range, "by_row": by_row, "scales": list(SCALES),
           "size": list(a.size), "agree": a.agree}
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evidence.json").write_text(json.dumps(res, indent=1))
    md = ["| LiDAR points | count | median s* | median abs(s* - 1) | within 5 % | at the grid's end |",
          "|---|---:|---:|---:|---:|---:|"]
    for name, row in [("all", res["all"]), *by_range.items(), *by_row.items()]:
        if row["points"]:
            md.append(f"| {name} | {row['points']} | {row['median_s']:.3f} | {row['median_dev']:.3f} | "
                      f"{row['within_5pct']:.2f} | {row['at_grid_end']:.2f} |")
        else:
            md.append(f"| {name} | 0 | | | | |")
    (out / "evidence.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out}/evidence.json, .md")


if __name__ == "__main__":
    main()
