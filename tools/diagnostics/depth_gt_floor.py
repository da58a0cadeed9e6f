"""How well can a perfect depth map score against the LiDAR depth ground truth of the synthetic set?

The depth benchmark (as SurroundDepth and the paper evaluate nuScenes) compares a camera's depth with the LiDAR
points projected into the image. The LiDAR sits 1.84 m up and ~1 m ahead of the cameras, so it sees over and
around near objects: a point it returns from behind a parked car lands on the car's pixels, where the camera sees
the car. No depth map can match such a point. This tool scores the exact camera depth of the synthetic streets
(``datasets.synthetic.oracle.render_rgbd``, ray-cast) through the same ``DepthEvaluator`` the evaluation uses:

  - at the ground truth's own grid (no interpolation): the floor from the LiDAR's viewpoint alone;
  - rendered at the model's output size and resized bilinearly to the grid, as eval.py does with a prediction:
    the floor a model at that size meets, edges blurred by the resize included.

Per camera, per street, by distance and by the 2D class of the point's pixel; plus the share of points the camera
cannot see (the exact camera depth shorter than the LiDAR's by more than 10 %).

  python -m tools.diagnostics.depth_gt_floor --dataroot data/synthetic-full --split val --size 224 352 \
      --out docs/results/depth_gt_floor/synthetic-val
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from datasets.nuscenes_dataset import NuScenesDataset, load_tables, read_split, scene_samples
from datasets.synthetic.oracle import render_rgbd
from datasets.synthetic.scene import make_scene
from utils.constants import CAMS
from utils.metrics import DepthEvaluator

HIDDEN_RATIO = 0.9  # a point the camera sees nearer than this fraction of its LiDAR depth is hidden from the camera


def keyframes(dataroot, version, split_file):
    """[(scene name, scene index, frame index, sample token, samples in the scene)] of the split's samples, in scene
    and time order (``datasets.nuscenes_dataset.scene_samples``)."""
    per_scene = {}
    for tok, name in scene_samples(load_tables(dataroot, version, names=("scene", "sample"))):
        per_scene.setdefault(name, []).append(tok)
    keep = set(read_split(split_file)) if split_file else None
    return [(name, int(name.rsplit("-", 1)[1]), k, tok, len(tokens)) for name, tokens in per_scene.items()
            for k, tok in enumerate(tokens) if keep is None or tok in keep]


def load_gt(depth_root, token):
    """(6, H, W) float32 LiDAR depth of a sample, 0 where no point (the training loader's ``_load_depth``)."""
    return torch.stack([NuScenesDataset._load_depth(os.path.join(depth_root, token, cam + ".npz")) for cam in CAMS])


def summarise(ev):
    s = ev.summary()
    return dict(per_camera={c: round(m["abs_rel"], 4) for c, m in s["per_camera"].items()},
                abs_rel=round(s["mean"]["abs_rel"], 4), a1=round(s["mean"]["a1"], 4),
                by_range={k: round(v, 4) for k, v in s.get("abs_rel_by_range", {}).items()},
                by_class={k: v for k, v in s.get("by_class", {}).items()})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", default="data/synthetic-full")
    p.add_argument("--version", default="v1.0-synthetic")
    p.add_argument("--split", default="val", help="splits/<split>.txt of the dataroot; 'all' for every sample")
    p.add_argument("--depth_root", default="depth_gt")
    p.add_argument("--seed", type=int, default=0, help="the generator's --seed of the set")
    p.add_argument("--size", type=int, nargs=2, default=[224, 352], help="the model's output size (h w)")
    p.add_argument("--max_samples", type=int, default=0, help="0 = all")
    p.add_argument("--out", default="", help="write <out>.json and <out>.md")
    a = p.parse_args(argv)

    split = None if a.split == "all" else os.path.join(a.dataroot, "splits", a.split + ".txt")
    items = keyframes(a.dataroot, a.version, split)
    if a.max_samples:
        items = items[:a.max_samples]
    depth_root = os.path.join(a.dataroot, a.depth_root)
    ev_grid, ev_size = DepthEvaluator(), DepthEvaluator()
    streets, hidden = {}, np.zeros((len(CAMS), 2))
    world_of = None  # (scene index, its world): the items come scene by scene
    for name, scene, k, tok, n in items:
        gt = load_gt(depth_root, tok)
        H, W = gt.shape[-2:]
        if world_of is None or world_of[0] != scene:
            world_of = (scene, make_scene(a.seed, scene, n))
        world = world_of[1]
        _, exact, cls = render_rgbd(world, world.ego2global[k], H, W, with_cls=True)
        _, small = render_rgbd(world, world.ego2global[k], *a.size)
        labels = cls.clone()
        labels[labels == 255] = -1
        ev_grid.update(exact[:, 0], gt, labels)
        ev_size.update(small[:, 0], gt, labels)
        ev_street = streets.setdefault(name, DepthEvaluator())
        ev_street.update(F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)[:, 0], gt)
        valid = gt > 0
        for c in range(len(CAMS)):
            g, e = gt[c][valid[c]], exact[c, 0][valid[c]]
            hidden[c] += [float((e < HIDDEN_RATIO * g).sum()), float(len(g))]
        print(f"{name} frame {k}: grid {ev_grid.summary()['mean']['abs_rel']:.4f} "
              f"size {ev_size.summary()['mean']['abs_rel']:.4f}", flush=True)

    res = dict(samples=len(items), grid_hw=[int(H), int(W)], size=a.size, hidden_ratio=HIDDEN_RATIO,
               exact_at_grid=summarise(ev_grid), exact_at_size=summarise(ev_size),
               hidden_share={c: round(h / max(n, 1), 4) for c, (h, n) in zip(CAMS, hidden)},
               streets={s: round(e.summary()["mean"]["abs_rel"], 4) for s, e in streets.items()})
    lines = [f"# The floor of the LiDAR depth benchmark: exact camera depth scored against the LiDAR ground truth",
             "", f"{len(items)} samples of {a.dataroot} ({a.split}); ground-truth grid {H}x{W}; model size "
             f"{a.size[0]}x{a.size[1]}. `python -m tools.diagnostics.depth_gt_floor "
             f"--dataroot {a.dataroot} --split {a.split} --size {a.size[0]} {a.size[1]}`", "",
             "| camera | AbsRel, exact at the grid | AbsRel, exact at the model size, resized | "
             f"points hidden from the camera (exact < {HIDDEN_RATIO} x LiDAR) |", "|---|---:|---:|---:|"]
    for c in CAMS:
        lines.append(f"| {c} | {res['exact_at_grid']['per_camera'][c]:.4f} | "
                     f"{res['exact_at_size']['per_camera'][c]:.4f} | {res['hidden_share'][c]:.3f} |")
    lines.append(f"| mean | {res['exact_at_grid']['abs_rel']:.4f} | {res['exact_at_size']['abs_rel']:.4f} | |")
    lines += ["", "By street (exact at the model size): " +
              ", ".join(f"{s} {v:.4f}" for s, v in res["streets"].items()),
              "", "By distance (exact at the model size): " +
              ", ".join(f"{k} {v:.4f}" for k, v in res["exact_at_size"]["by_range"].items())]
    bc = res["exact_at_size"]["by_class"]
    if bc:
        lines += ["", "By the 2D class of the point's pixel (exact at the model size; AbsRel, share of the points):",
                  ""]
        for cname, m in sorted(bc.items(), key=lambda kv: -kv[1]["share"]):
            lines.append(f"- {cname}: {m['abs_rel']:.4f} ({100 * m['share']:.1f} % of the points)")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        json.dump(res, open(a.out + ".json", "w"), indent=1)
        open(a.out + ".md", "w").write(text)


if __name__ == "__main__":
    main()
