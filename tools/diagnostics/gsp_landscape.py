"""Loss landscape of stage 1 on a synthetic frame with exact depth and pose: which loss knows the metric scale?

Renders three consecutive frames of one synthetic scene (exact dense depth from the ray caster, exact ego
motion) and evaluates, for a global factor s applied to the true depth (and, for the temporal loss, to the
true translation as well), each stage-1 loss:
  gsp_<mask>   cross-view loss (utils/gsp.py) with depth x s: should be smallest at s = 1
  temporal     temporal loss with depth x s and translation x s: flat in s (scale ambiguity)
  temporal_gt  temporal loss with depth x s and the true translation: smallest at s = 1
A correct GSP term has its minimum at s = 1 and a clear valley around it; this is the check that the
cross-view term can give the scale before spending GPU time on training.

  python -m tools.diagnostics.gsp_landscape --out_dir logs/landscape [--size 112 176] [--scene 0] [--frame 1]
Writes landscape.json and landscape.png.
"""
import argparse
import json
from pathlib import Path

import torch


from datasets.synthetic.oracle import ego_motion, render_rgbd, rig_tensors
from datasets.synthetic.scene import make_scene
from utils.geometry import ego_motion_to_cam, warp
from utils.gsp import cross_view_loss
from utils.losses import reprojection_loss
from utils.rasterizer import rasterize

SCALES = (0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.4, 1.7, 2.0, 3.0, 4.0)


def landscape(scene=0, frame=1, size=(112, 176), seed=0, scales=SCALES, gs_scale=0.02, erode=4, backend="torch",
              masks=("rendered", "geometric")):
    """Dict: scales and one list of loss values per term (see module docstring)."""
    h, w = size
    world = make_scene(seed, scene, frame + 2, dt=0.25)  # frames 0.25 s apart, as the sets the results came from
    imgs, depths = zip(*[render_rgbd(world, world.ego2global[k], h, w) for k in (frame - 1, frame, frame + 1)])
    K, c2e = rig_tensors(h, w)
    motion = [ego_motion(world.ego2global, frame, frame + k) for k in (-1, 1)]  # current ego -> prev / next ego
    depth = depths[1]
    res = {"scales": list(scales), "speed_m_per_frame": float(motion[1][:3, 3].norm())}
    for mask in masks:
        vals = []
        for s in scales:
            loss, _ = cross_view_loss((depth * s)[None], imgs[1][None], torch.full_like(depth, gs_scale)[None],
                                      K[None], c2e[None], lambda *a, **k: rasterize(*a, backend=backend, **k),
                                      erode, mask_mode=mask)
            vals.append(float(loss))
        res[f"gsp_{mask}"] = vals
    for name, scale_t in (("temporal", True), ("temporal_gt", False)):
        vals = []
        for s in scales:
            warped, ok = [], []
            for k, src in ((0, imgs[0]), (1, imgs[2])):
                T = motion[k].clone()
                if scale_t:
                    T[:3, 3] *= s
                Tc = ego_motion_to_cam(T[None], c2e[None])[0]
                wp, v = warp(src, depth * s, K, Tc)
                warped.append(wp)
                ok.append(v)
            vals.append(float(reprojection_loss(imgs[1], warped, [imgs[0], imgs[2]], ok)[0]))
        res[name] = vals
    return res


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, v in res.items():
        if isinstance(v, list) and k != "scales":
            ax.plot(res["scales"], v, marker="o", label=k)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.5)
    ax.set_xlabel("depth (and translation) x s")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="logs/landscape")
    p.add_argument("--size", type=int, nargs=2, default=(112, 176), metavar=("H", "W"))
    p.add_argument("--scene", type=int, default=0)
    p.add_argument("--frame", type=int, default=1, help="middle frame (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gs_scale", type=float, default=0.02, help="pixel Gaussian scale, metres")
    p.add_argument("--erode", type=int, default=4)
    p.add_argument("--backend", default="torch", choices=["torch", "gsplat"])
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                   help="evaluate the losses under autocast, as training with --amp does")
    a = p.parse_args(argv)
    if a.frame < 1:
        p.error("--frame must be >= 1 (the previous frame is used)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)
    device = "cuda" if a.backend == "gsplat" else "cpu"
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        res = landscape(a.scene, a.frame, tuple(a.size), a.seed, gs_scale=a.gs_scale, erode=a.erode,
                        backend=a.backend)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "landscape.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "landscape.png")
    keys = [k for k in res if isinstance(res[k], list) and k != "scales"]
    print("s      " + " ".join(f"{k:>14}" for k in keys))
    for i, s in enumerate(res["scales"]):
        print(f"{s:<6} " + " ".join(f"{res[k][i]:14.4f}" for k in keys))
    print(f"wrote {out / 'landscape.json'} and landscape.png")


if __name__ == "__main__":
    main()
