"""How right must the motion's direction be for the road to measure its scale? (no network, CPU)

``--w_road_scale`` scales the pose net's translation over a grid and takes the scale of the least road error
(utils.losses.road_error_curve: the road pixels at the road plane's metric depth, with the auto-mask, as training
computes it). With the recorded motion that scale is 1; this turns the recorded motion wrong in one way at a time and
measures where the least error then lies, pooled over the items (and per item):

  heading  the translation turned about the ego's up axis by 5-30 deg (its length kept)
  yaw      the rotation turned about the up axis by 0.5-3 deg (the translation kept)

  python -m tools.diagnostics.road_scale_bias --dataroot /tmp/syn8 --version v1.0-synthetic --sem_root sem \
      --val_split /tmp/syn8/splits/train.txt --samples 5 10 20 30 --size 96 160 --out_dir OUT

Writes road_scale_bias.json / .md.
"""
import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from networks.gsp_loss import ROAD_ID
from tools.diagnostics.gsp_landscape_real import items
from tools.diagnostics.road_motion_real import dataset
from utils.geometry import ego_motion_to_cam, ground_plane_depth, recorded_ego_motion
from utils.losses import curve_minimum, log_grid, road_error_curve

CHANGES = (("heading", (0.0, 5.0, 10.0, 20.0, 30.0)), ("yaw", (0.5, 1.0, 2.0, 3.0)))


def turn_z(deg):
    """(3, 3) rotation about the up (z) axis."""
    t = math.radians(deg)
    return torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])


def changed(motion, kind, deg):
    """The recorded motions (1, 2, 4, 4) with their translation's heading (``heading``) or their rotation (``yaw``)
    turned by ``deg`` about the up axis."""
    m = motion.clone()
    if kind == "heading":
        m[..., :3, 3] = (turn_z(deg) @ m[..., :3, 3, None])[..., 0]
    else:
        m[..., :3, :3] = turn_z(deg) @ m[..., :3, :3]
    return m


def item_curves(item, scales, height=0.0, max_depth=20.0):
    """{(kind, deg): road error curve over ``scales``} of one keyframe item (all its cameras pooled)."""
    imgs, K, c2e = item["imgs"][None], item["K"], item["cam2ego"][None]
    h, w = imgs.shape[-2:]
    rec = recorded_ego_motion(item["ego2global"][None]).float()
    plane = ground_plane_depth(K, c2e[0], (h, w), height)
    road = F.interpolate((item["sem"][:, None] == ROAD_ID).float(), (h, w), mode="nearest") > 0.5
    target, sources = imgs[0, 1], [imgs[0, 0], imgs[0, 2]]
    out = {}
    for kind, degs in CHANGES:
        for deg in degs:
            m = changed(rec, kind, deg)

            def moved(s, m=m):
                q = m.clone()
                q[..., :3, 3] *= s
                return [ego_motion_to_cam(q[:, k], c2e)[0] for k in range(2)]

            out[(kind, deg)] = road_error_curve(target, sources, plane, road, K, moved, scales, max_depth)[0]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--sem_root", default="sem_occ")
    p.add_argument("--samples", type=int, nargs="+", default=[4, 14, 24, 34], help="item indices (keyframes)")
    p.add_argument("--size", type=int, nargs=2, default=(96, 160), metavar=("H", "W"))
    p.add_argument("--val_split", default=None)
    p.add_argument("--height", type=float, default=0.0, help="the road plane's height in the ego frame, metres")
    p.add_argument("--max_depth", type=float, default=20.0)
    p.add_argument("--out_dir", default="logs/road-scale-bias")
    a = p.parse_args(argv)
    scales = log_grid(4.0, 25)
    curves = {}
    for i, item in items(p, a, dataset(a)):
        for key, c in item_curves(item, scales, a.height, a.max_depth).items():
            curves.setdefault(key, []).append(c)
    rows = []
    for (kind, deg), cs in curves.items():
        s, contrast = curve_minimum(torch.stack(cs).sum(0), scales)
        rows.append({"change": kind, "degrees": deg, "pooled_scale": s, "contrast": contrast,
                     "per_item": [curve_minimum(c, scales)[0] for c in cs]})
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "road_scale_bias.json").write_text(json.dumps({"rows": rows, "samples": a.samples, "size": list(a.size),
                                                          "height": a.height, "max_depth": a.max_depth}, indent=1))
    md = ["| change | degrees | least-error scale (pooled) | contrast | per item |", "|---|---:|---:|---:|---|"]
    md += [f"| {r['change']} | {r['degrees']:g} | {r['pooled_scale']:.3f} | {r['contrast']:.2f} | "
           + ", ".join(f"{x:.2f}" for x in r["per_item"]) + " |" for r in rows]
    (out / "road_scale_bias.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
