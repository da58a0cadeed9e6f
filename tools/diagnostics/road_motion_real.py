"""Can the road's own pixels measure the ego motion's metric scale on REAL keyframes? (no network, CPU)

Stage 1 on the real fixture learns a motion ~1.3x too long, and pinning the road's depth to the plane that the
calibration fixes (--ground_mode road) did not bring the motion along at the fixture's size
(docs/results/runs/2026-12-06/fixture-s1-road-gpu). The same plane also fixes how each road pixel moves between two
frames of one camera for a given ego motion (the plane-induced homography; metric through the camera's height): with
the road's depth from the plane, only the motion's scale is left. This measures whether the images say it.

For each keyframe and camera: the road pixels (the 2D labels' driveable surface whose ray meets the plane within
``--max_depth``) take the plane's depth; the previous and the next keyframe of the same camera are warped into the
current one with the RECORDED ego motion whose translation is scaled by s over a log grid; the photometric error
(0.85 SSIM + 0.15 L1, the minimum over the sources whose warp is valid, as the training loss) is averaged over the
road pixels valid at every s. Per item and camera: the s of the smallest mean error and how deep that minimum is
(the error at s = 0.8 and 1.25 over the minimum); pooled over all: the same for the summed curve. Also the share of
road pixels where the warp at s = 1 beats no motion (the auto-mask's test: texture the road has). The curve here has
no auto-mask; with it (as --w_road_motion trains) every pixel is capped at its no-motion error and beyond ~2x the
curve is a plateau (docs/results/runs/2026-12-06/fixture-s1-road-motion-cpu): the global minimum is the measurement.

  python -m tools.diagnostics.road_motion_real --dataroot fixture_pack --sem_root sem_occ --out_dir OUT
  python -m tools.diagnostics.road_motion_real --dataroot data/synthetic-full --version v1.0-synthetic \
      --sem_root sem --val_split data/synthetic-full/splits/val.txt --samples 3 11 19 27 --out_dir OUT  # synthetic

Writes road_motion.json / road_motion.md.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from networks.gsp_loss import ROAD_ID
from tools.diagnostics.gsp_landscape_real import items, keyframe_dataset
from utils.geometry import ground_plane_depth, inverse_rigid, warp
from utils.losses import photometric_errors

SCALES = tuple(float(s) for s in np.exp(np.linspace(np.log(0.5), np.log(2.0), 41)))  # 3.5 % steps, 1.0 included
CAMS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")


def scaled_motion(cam2ego, E_tgt, E_src, s):
    """Target camera -> the same camera at the source frame, the ego's translation between the frames scaled by s.
    cam2ego (S, 4, 4), E_tgt / E_src (S, 4, 4) ego -> world (one per camera)."""
    ego = inverse_rigid(E_src) @ E_tgt  # target ego -> source ego
    ego = ego.clone()
    ego[:, :3, 3] *= s
    return inverse_rigid(cam2ego) @ ego @ cam2ego


def road_curves(item, height=0.0, max_depth=20.0, scales=SCALES):
    """Per camera the mean photometric error over its road pixels at each translation scale (S, len(scales)), the
    number of those pixels (S,), and the share of them where the warp at s = 1 beats no motion (S,)."""
    imgs, K, c2e = item["imgs"], item["K"], item["cam2ego"]
    E = item["ego2global"].double()  # (3, S, 4, 4): previous / current / next
    H, W = imgs.shape[-2:]
    plane = ground_plane_depth(K.double(), c2e.double(), (H, W), height).float()  # (S, 1, H, W)
    road = (item["sem"][:, None] == ROAD_ID) & torch.isfinite(plane) & (plane < max_depth)
    depth = torch.where(road, plane, torch.ones_like(plane))
    errs, valid_all = [], road.clone()
    for s in scales:
        warped, ok = [], []
        for k in (0, 2):
            T = scaled_motion(c2e.double(), E[1], E[k], s).float()
            wp, v = warp(imgs[k], depth, K, T)
            warped.append(wp)
            ok.append(v)
        e = photometric_errors(imgs[1], warped)  # (S, 2, H, W)
        ok = torch.cat(ok, 1)
        e = torch.where(ok, e, torch.full_like(e, float("inf"))).min(1, keepdim=True).values
        valid_all &= ok.any(1, keepdim=True)
        errs.append(e)
    errs = torch.cat(errs, 1)  # (S, len(scales), H, W)
    m = valid_all.float()
    n = m.sum((1, 2, 3))
    curves = (torch.where(valid_all, errs, torch.zeros_like(errs)) * m).sum((2, 3)) / n.clamp(min=1)[:, None]
    ident = photometric_errors(imgs[1], [imgs[0], imgs[2]]).min(1, keepdim=True).values
    at_one = errs[:, scales.index(1.0)][:, None]
    beats = ((at_one < ident) & valid_all).float().sum((1, 2, 3)) / n.clamp(min=1)
    return curves, n, beats


def curve_summary(curve, scales=SCALES):
    """argmin s and the depth of the minimum: the error at s = 0.8 and 1.25 (nearest grid points) over the minimum."""
    c = np.asarray(curve, dtype=float)
    i = int(np.argmin(c))
    near = lambda x: int(np.argmin(np.abs(np.log(np.asarray(scales)) - np.log(x))))  # noqa: E731
    return {"s_min": scales[i], "rise_at_0.8": float(c[near(0.8)] / c[i] - 1),
            "rise_at_1.25": float(c[near(1.25)] / c[i] - 1), "at_grid_end": i in (0, len(c) - 1)}


def dataset(a):
    """The keyframe items with their 2D labels at --size (no occupancy, no LiDAR depth needed)."""
    return keyframe_dataset(a, occupancy=False, depth=False,
                            extra=["--use_sem", "true", "--sem_root", a.sem_root,
                                   "--render_size", str(a.size[0]), str(a.size[1])])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--sem_root", default="sem_occ", help="2D labels (tools/data/occ_to_2d_labels.py on the fixture)")
    p.add_argument("--samples", type=int, nargs="+", default=[4, 14, 24, 34], help="item indices (keyframes)")
    p.add_argument("--size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"))
    p.add_argument("--val_split", default=None)
    p.add_argument("--height", type=float, default=0.0, help="the road plane's height in the ego frame, metres")
    p.add_argument("--max_depth", type=float, default=20.0, help="road pixels whose plane depth is below this")
    p.add_argument("--out_dir", default="logs/road-motion-real")
    a = p.parse_args(argv)
    per, total, weight = [], np.zeros(len(SCALES)), 0.0
    for i, item in items(p, a, dataset(a)):
        curves, n, beats = road_curves(item, a.height, a.max_depth)
        for c in range(len(curves)):
            if n[c] < 50:
                continue
            row = {"index": i, "camera": CAMS[c], "road_pixels": int(n[c]), "beats_no_motion": float(beats[c]),
                   **curve_summary(curves[c].numpy())}
            per.append(row)
            total += curves[c].numpy() * float(n[c])
            weight += float(n[c])
        print(f"item {i}: " + ", ".join(f"{r['camera']} s {r['s_min']:.3f}" for r in per if r["index"] == i),
              flush=True)
    pooled = total / max(weight, 1)
    s = np.array([r["s_min"] for r in per])
    res = {"pooled": {**curve_summary(pooled), "curve": pooled.tolist()}, "per_camera_image": per,
           "median_s_min": float(np.median(s)) if len(s) else None,
           "share_within_10pct": float(np.mean(np.abs(s - 1) <= 0.1)) if len(s) else None,
           "scales": list(SCALES), "size": list(a.size), "height": a.height, "max_depth": a.max_depth,
           "samples": a.samples}
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "road_motion.json").write_text(json.dumps(res, indent=1))
    md = [f"Pooled over {len(per)} camera images ({int(weight)} road pixels): s_min {res['pooled']['s_min']:.3f}, "
          f"error +{100 * res['pooled']['rise_at_0.8']:.1f} % at s = 0.8 and +{100 * res['pooled']['rise_at_1.25']:.1f} % "
          f"at 1.25; per image: median s_min {res['median_s_min']:.3f}, within 10 % of 1: "
          f"{100 * res['share_within_10pct']:.0f} %", "",
          "| item | camera | road pixels | warp at s = 1 beats no motion | s_min | rise at 0.8 | rise at 1.25 |",
          "|---:|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['index']} | {r['camera']} | {r['road_pixels']} | {r['beats_no_motion']:.2f} | {r['s_min']:.3f}"
           f"{' (grid end)' if r['at_grid_end'] else ''} | {100 * r['rise_at_0.8']:.1f} % | {100 * r['rise_at_1.25']:.1f} % |"
           for r in per]
    (out / "road_motion.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"wrote {out}/road_motion.json, .md")


if __name__ == "__main__":
    main()
