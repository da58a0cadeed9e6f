"""How much depth the photometric loss itself can tell, per class of the 2D label (exact motion, no network).

For keyframes of a synthetic street, the exact dense depth of every camera is multiplied by one factor s per
sweep step (0.70 ... 1.40 in 1 % steps), the previous and next frames (at the given spacing, exact ego motion)
are warped into the keyframe with it, and each pixel keeps the s of its smallest photometric error (monodepth2's
0.85 SSIM + 0.15 L1, minimum over the two sources): a winner-take-all stereo match along the true depth
direction. ``|s* - 1|`` is then the relative depth error a pixel's own photometric evidence leaves, before any
smoothness or network prior; ``box:N`` sums each pixel's error over an N x N window first (block matching, what a
prior that keeps depth smooth over N pixels could at best recover). Per class: mean |s* - 1| (the AbsRel of that
depth), median, the share within 2 % and 5 %, pixels.

The network's depth error per class (eval's ``AbsRel by the 2D label``) set beside this says whether the data (a
class whose photometric error is flat in depth: little texture, occlusion at this baseline, the render size) or
the training (a class the photometric evidence resolves but the network does not) limits the depth, and with it
the occupancy of the standing classes.

  python -m tools.diagnostics.photo_depth --scenes 12 13 --keyframes 2 5 --size 180 320 --spacing 0.5 \
      --out logs/photo_depth.json
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datasets.synthetic.frame import MAX_RANGE
from datasets.synthetic.oracle import ego_motion, render_rgbd, rig_tensors
from datasets.synthetic.scene import SAMPLE_DT, make_scene
from utils.constants import OCC_CLASSES
from utils.geometry import ego_motion_to_cam, warp
from utils.losses import photometric_error

SCALES = tuple(np.round(np.exp(np.linspace(np.log(0.7), np.log(1.4), 71)), 4))


def winner_take_all(img, depth, sources, motions, K, cam2ego, scales=SCALES, boxes=(1,)):
    """``sources`` / ``motions``: the neighbour images and the ego motions current -> neighbour. Per box size:
    (6, 1, h, w) the factor s of the smallest (box-summed) photometric error per pixel, and a (6, 1, h, w) mask of
    pixels with a valid warp from some source at every s."""
    best = {b: (torch.full_like(depth, float("inf")), torch.ones_like(depth)) for b in boxes}
    ok_all = torch.ones_like(depth, dtype=torch.bool)
    Tc = [ego_motion_to_cam(T[None], cam2ego[None])[0] for T in motions]
    for s in scales:
        errs = []
        for src, T in zip(sources, Tc):
            wp, valid = warp(src, depth * s, K, T)
            e = photometric_error(wp, img)
            errs.append(torch.where(valid.bool(), e, torch.full_like(e, float("inf"))))
        err = torch.stack(errs).min(0).values
        ok_all &= torch.isfinite(err)
        for b in boxes:
            e = err if b == 1 else F.avg_pool2d(torch.nan_to_num(err, posinf=1.0), b, 1, b // 2,
                                                count_include_pad=False)
            cur, arg = best[b]
            better = e < cur
            best[b] = (torch.where(better, e, cur), torch.where(better, torch.full_like(arg, s), arg))
    return {b: best[b][1] for b in boxes}, ok_all


def summarise(rel, cls, keep):
    """Per class name: mean / median |s* - 1|, share within 2 % and 5 %, pixels (plus 'all')."""
    out = {}
    for c in [int(c) for c in torch.unique(cls[keep])] + [-1]:
        m = keep & (cls == c) if c >= 0 else keep
        r = rel[m]
        if r.numel() == 0:
            continue
        name = "all" if c < 0 else (OCC_CLASSES[c] if c < len(OCC_CLASSES) else str(c))
        out[name] = {"abs_rel": float(r.mean()), "median": float(r.median()),
                     "within_2pct": float((r < 0.02).float().mean()),
                     "within_5pct": float((r < 0.05).float().mean()), "pixels": int(r.numel())}
    return out


def run(seed, scenes, keyframes, size, spacing, boxes, frames_per_scene=8):
    """``spacing``: seconds to the neighbours, one value or several (then all their neighbours are sources)."""
    spacings = [spacing] if isinstance(spacing, (int, float)) else list(spacing)
    h, w = size
    K, c2e = rig_tensors(h, w)
    rels = {b: [] for b in boxes}
    cls_all, keep_all = [], []
    for sc in scenes:
        world = make_scene(seed, sc, frames_per_scene)
        for k in keyframes:
            offsets = [o for sp in spacings for o in (-sp, sp)]
            poses = world.ego_pose(k * SAMPLE_DT + np.array([0.0] + offsets))
            img, depth, cls = render_rgbd(world, poses[0], h, w, with_cls=True)
            srcs = [render_rgbd(world, poses[j], h, w)[0] for j in range(1, len(poses))]
            motions = [ego_motion(poses, 0, j) for j in range(1, len(poses))]
            s_best, ok = winner_take_all(img, depth, srcs, motions, K, c2e, boxes=boxes)
            keep = ok[:, 0] & (depth[:, 0] < MAX_RANGE * 0.99) & (cls < 255)
            for b in boxes:
                rels[b].append((s_best[b][:, 0] - 1).abs())
            cls_all.append(cls)
            keep_all.append(keep)
    cls, keep = torch.cat(cls_all), torch.cat(keep_all)
    return {f"box{b}": summarise(torch.cat(rels[b]), cls, keep) for b in boxes}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, nargs="+", default=[12, 13])
    p.add_argument("--frames_per_scene", type=int, default=8)
    p.add_argument("--keyframes", type=int, nargs="+", default=[2, 5])
    p.add_argument("--size", type=int, nargs=2, default=(180, 320), metavar=("H", "W"))
    p.add_argument("--spacing", type=float, nargs="+", default=[SAMPLE_DT],
                   help="seconds to the previous / next frame; several values: the neighbours at every spacing are "
                        "sources at once (the per-pixel minimum over all of them)")
    p.add_argument("--boxes", type=int, nargs="+", default=[1, 7])
    p.add_argument("--out", default="logs/photo_depth.json")
    a = p.parse_args(argv)
    if any(k < 1 or k >= a.frames_per_scene - 1 for k in a.keyframes):
        p.error("--keyframes must be inside 1 .. frames_per_scene - 2 (the previous and next frames are used)")
    res = {"args": vars(a), "results": run(a.seed, a.scenes, a.keyframes, tuple(a.size), a.spacing, a.boxes,
                                            a.frames_per_scene)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    for box, rows in res["results"].items():
        print(f"\n{box} (spacing {a.spacing} s, {a.size[0]}x{a.size[1]}): class | AbsRel | median | <2% | <5% | pixels")
        for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["pixels"]):
            print(f"| {name} | {r['abs_rel']:.3f} | {r['median']:.3f} | {r['within_2pct']:.2f} | "
                  f"{r['within_5pct']:.2f} | {r['pixels']} |")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
