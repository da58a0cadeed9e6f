"""Stage-2 oracle: optimise a free voxel volume (no network) on one synthetic keyframe and score its occupancy.

Freezes everything but the volume to the truth (exact images, exact ego motion, optionally exact depth) and asks
which criterion turns a volume of voxel Gaussians into occupancy rather than a fog. The volume is aligned with
the Occ3D label grid (``--coarsen`` k merges k x k x k label voxels into one, a voxel is occupied when any of its
label voxels is), so opacities are scored against the labels voxel for voxel, inside mask_camera AND mask_lidar:
AUC (probability that an occupied voxel is more opaque than a free one), geometric IoU at opacity 0.5 and at
the best threshold (an upper bound), and the median opacity of occupied / free voxels.

    python -m tools.diagnostics.gsv_oracle --variants "depth:--sup depth --w_entropy 0" "photo:--sup photo --w_entropy 0"

Each variant is a label and options (below) over the defaults; results go to --out (JSON lines) and a table.
"""
import argparse
import json
import os
import shlex
import time

import numpy as np
import torch


from datasets.synthetic.frame import occ3d_labels
from datasets.synthetic.oracle import ego_motion, render_rgbd, rig_tensors
from datasets.synthetic.scene import SAMPLE_DT, make_scene
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_VOXEL
from utils.geometry import ego_motion_to_cam, inverse_rigid, warp
from utils.losses import reprojection_loss, smoothness_loss
from utils.rasterizer import rasterize


def variant_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--sup", choices=["depth", "photo"], default="photo",
                   help="depth: L1 of the rendered depth against the exact depth; photo: temporal photometric loss")
    p.add_argument("--init", type=float, default=0.1, help="initial opacity of every voxel")
    p.add_argument("--init_gt", type=float, nargs=2, default=None, metavar=("OCC", "FREE"),
                   help="start from the labels instead: opacity OCC in occupied voxels, FREE elsewhere")
    p.add_argument("--param", choices=["sigmoid", "direct"], default="sigmoid")
    p.add_argument("--w_entropy", type=float, default=0.0, help="mean -o log o over the Gaussians (the authors')")
    p.add_argument("--w_bin_entropy", type=float, default=0.0, help="mean binary entropy of the opacities")
    p.add_argument("--ent_ramp", type=float, default=0.0,
                   help="share of the steps over which the entropy weights rise linearly from 0 (after --ent_start)")
    p.add_argument("--ent_start", type=float, default=0.0, help="share of the steps before the entropy terms act")
    p.add_argument("--w_dist", type=float, default=0.0,
                   help="depth spread along each ray (w_i and the far background), relative: Var(z) / E[z]^2")
    p.add_argument("--dist_bg", type=int, default=0, help="1: the far background takes part in --w_dist")
    p.add_argument("--w_alpha_ent", type=float, default=0.0, help="binary entropy of the rendered alpha")
    p.add_argument("--w_smooth", type=float, default=0.001)
    p.add_argument("--gs_scale", type=float, default=None, help="Gaussian std, metres (default 0.375 voxel)")
    p.add_argument("--background", choices=["far", "none"], default="far")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--offsets", type=float, default=0.0,
                   help="> 0: each Gaussian's mean also learns an offset from its voxel centre, at most this share of "
                        "the voxel along each axis (tanh-bounded; lr as the opacities'); 0 = fixed centres")
    p.add_argument("--scales", choices=["fixed", "iso", "aniso"], default="fixed",
                   help="iso / aniso: each Gaussian also learns its scale (one, or one per axis: the rotation stays "
                        "the identity, so the axes are the grid's), from --gs_scale, bounded to [1/4, 2] x it "
                        "(sigmoid; lr as the opacities'); fixed = --gs_scale for every Gaussian")
    p.add_argument("--save", default=None, help="write the final opacity volume to this .npy")
    return p.parse_args(argv)


def load_frame(seed, scene, frames, k, h, w, coarsen, views=(0.0,)):
    """Truth of keyframe k: images / depth of the current, previous and next camera sweep, motions, labels;
    and the exact depth seen from the cameras at the ego poses ``views`` seconds from the keyframe (``view_*``:
    viewmats map the keyframe's ego frame to those cameras)."""
    world = make_scene(seed, scene, frames)
    t = k * SAMPLE_DT
    poses = world.ego_pose([t - 1 / 12, t, t + 1 / 12])
    rgbd = [render_rgbd(world, p, h, w) for p in poses]
    K, cam2ego = rig_tensors(h, w)
    vm, vd = [], []
    for dt in views:
        pose = world.ego_pose([t + dt])[0]
        vd.append(rgbd[1][1] if dt == 0 else render_rgbd(world, pose, h, w)[1])
        ref2view = torch.tensor(np.linalg.inv(pose) @ poses[1], dtype=torch.float32)
        vm.append(inverse_rigid(cam2ego) @ ref2view)
    lab = occ3d_labels(world, k)
    occ = lab["semantics"] != FREE_ID
    mask = (lab["mask_camera"] > 0) & (lab["mask_lidar"] > 0)
    if coarsen > 1:
        c = coarsen
        X, Y, Z = (n // c for n in occ.shape)
        pool = lambda a: a[:X * c, :Y * c, :Z * c].reshape(X, c, Y, c, Z, c).any((1, 3, 5))  # noqa: E731
        occ, mask = pool(occ), pool(mask)
    motions = torch.stack([ego_motion(poses, 1, 0), ego_motion(poses, 1, 2)])  # current ego -> prev / next ego
    return dict(imgs=torch.stack([r[0] for r in rgbd]), depth=rgbd[1][1], K=K, cam2ego=cam2ego,
                T=ego_motion_to_cam(motions, cam2ego[None].expand(2, -1, -1, -1)), occ=occ, mask=mask,
                view_viewmats=torch.cat(vm), view_K=K.repeat(len(views), 1, 1), view_depth=torch.cat(vd))


def voxel_centres(shape, voxel):
    lo = np.array(OCC3D_LABEL_RANGE[:3])
    axes = [lo[i] + voxel * (np.arange(n) + 0.5) for i, n in enumerate(shape)]
    return torch.tensor(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3), dtype=torch.float32)


def render(o, centres, scale, viewmats, K, w, h, with_sq=False, shift=None):
    """Rasterise the voxel Gaussians of opacity o (those >= 1/255), at centres + shift (N, 3) metres if given;
    ``scale``: metres, one for all or (N, 3) per Gaussian and axis; with_sq adds sum_i w_i z_i^2 (``zsq``)."""
    keep = (o.detach() >= 1 / 255).nonzero()[:, 0]
    scales = scale[keep] if torch.is_tensor(scale) else torch.full((len(keep), 3), scale)
    means = centres[keep] if shift is None else centres[keep] + shift[keep]
    quats = torch.zeros(len(keep), 4)
    quats[:, 0] = 1
    feats = None
    if with_sq:  # E[z^2] per pixel: z^2 of each Gaussian in each camera as a per-camera feature
        z = means @ viewmats[:, 2, :3].T + viewmats[:, 2, 3]  # (N, C)
        feats = (z * z).T[..., None]
    r = rasterize(means, quats, scales, o[keep], feats, viewmats, K, w, h, near=0.1, backend="torch")
    out = dict(depth=r["depth"], alpha=r["alpha"], n=len(keep))
    if with_sq:
        out["zsq"] = r["features"]
    return out


def auc(scores, labels):
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata
    r = rankdata(scores)
    n1, n0 = labels.sum(), (~labels).sum()
    return float((r[labels].sum() - n1 * (n1 + 1) / 2) / max(n1 * n0, 1))


def score(o, occ, mask):
    s, lab = o[mask], occ[mask]
    iou = lambda t: float(((s > t) & lab).sum() / max(((s > t) | lab).sum(), 1))  # noqa: E731
    ts = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    best = max((iou(t), t) for t in ts)
    return dict(auc=auc(s, lab), iou50=iou(0.5), best_iou=best[0], best_t=best[1],
                med_occ=float(np.median(s[lab])), med_free=float(np.median(s[~lab])),
                q90_free=float(np.quantile(s[~lab], 0.9)), mean_all=float(o.mean()))


def run_variant(frame, a, h, w, voxel, max_depth=80.0):
    torch.manual_seed(0)
    occ, mask = frame["occ"], frame["mask"]
    centres = voxel_centres(occ.shape, voxel)
    scale = a.gs_scale if a.gs_scale is not None else 0.375 * voxel
    o0 = torch.full((len(centres),), a.init)
    if a.init_gt is not None:
        o0 = torch.where(torch.from_numpy(occ.reshape(-1)), a.init_gt[0], a.init_gt[1])
    if a.param == "sigmoid":
        p = torch.logit(o0).requires_grad_()
        to_o = torch.sigmoid
    else:
        p = o0.clone().requires_grad_()
        to_o = lambda x: x.clamp(0, 1)  # noqa: E731
    params = [p]
    if a.offsets > 0:
        raw_shift = torch.zeros(len(centres), 3, requires_grad=True)
        params.append(raw_shift)
        to_shift = lambda: a.offsets * voxel * torch.tanh(raw_shift)  # noqa: E731
    else:
        to_shift = lambda: None  # noqa: E731
    if a.scales != "fixed":  # scale = s0 (1/4 + 7/4 sigmoid(raw)), raw = 0 at s0: logit(3/7)
        raw_scale = torch.full((len(centres), 1 if a.scales == "iso" else 3), float(np.log(3 / 4)),
                               requires_grad=True)
        params.append(raw_scale)
        s0 = scale
        scale_of = lambda: (s0 * (0.25 + 1.75 * torch.sigmoid(raw_scale))).expand(-1, 3)  # noqa: E731
    else:
        scale_of = lambda: scale  # noqa: E731
    opt = torch.optim.Adam(params, lr=a.lr)
    viewmats = inverse_rigid(frame["cam2ego"])
    K = frame["K"]
    imgs = frame["imgs"]
    log = []
    t0 = time.time()
    if a.sup == "depth":  # every view of --views (the keyframe's cameras first)
        viewmats, K, target = frame["view_viewmats"], frame["view_K"], frame["view_depth"]
    else:
        target = frame["depth"]
    for step in range(a.steps):
        o = to_o(p)
        r = render(o, centres, scale_of(), viewmats, K, w, h, with_sq=a.w_dist > 0, shift=to_shift())
        bg = (1 - r["alpha"]).clamp(min=0)
        depth = r["depth"] + (bg * max_depth if a.background == "far" else 0)
        dc = depth.clamp(0.1, max_depth)
        terms = {}
        if a.sup == "depth":
            gt = target.clamp(max=max_depth)
            terms["depth"] = ((dc - gt).abs() / gt).mean()
        else:
            warped, ok = zip(*[warp(imgs[s], dc, K, frame["T"][i]) for i, s in ((0, 0), (1, 2))])
            terms["photo"], _ = reprojection_loss(imgs[1], list(warped), [imgs[0], imgs[2]], list(ok))
            terms["smooth"] = a.w_smooth * smoothness_loss(1 / dc, imgs[1])
        frac = step / a.steps
        ramp = 0.0 if frac < a.ent_start else min(1.0, (frac - a.ent_start) / a.ent_ramp) if a.ent_ramp else 1.0
        if a.w_entropy:
            terms["ent"] = ramp * a.w_entropy * -(o * torch.log(o + 1e-8)).mean()
        if a.w_bin_entropy:
            oc = o.clamp(1e-6, 1 - 1e-6)
            terms["bent"] = ramp * a.w_bin_entropy * -(oc * oc.log() + (1 - oc) * (1 - oc).log()).mean()
        if a.w_alpha_ent:
            al = r["alpha"].clamp(1e-6, 1 - 1e-6)
            terms["aent"] = a.w_alpha_ent * -(al * al.log() + (1 - al) * (1 - al).log()).mean()
        if a.w_dist:
            if a.dist_bg:
                ez2 = r["zsq"] + (bg * max_depth ** 2 if a.background == "far" else 0)
                var = (ez2 - depth ** 2).clamp(min=0)
                terms["dist"] = a.w_dist * (var / depth.clamp(min=0.1) ** 2).mean()
            else:  # spread of the Gaussians' weights alone, relative, times alpha (a transparent ray costs 0)
                al = r["alpha"].clamp(min=1e-4)
                mu = r["depth"] / al
                var = (r["zsq"] / al - mu * mu).clamp(min=0)
                terms["dist"] = a.w_dist * (r["alpha"] * var / mu.clamp(min=0.1) ** 2).mean()
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == a.steps - 1:
            gt = frame["depth"].clamp(max=max_depth)
            rel = float(((dc.detach()[:6] - gt).abs() / gt).mean())
            sc = scale_of()
            sc_occ = sc.detach()[torch.from_numpy(occ.reshape(-1))] if torch.is_tensor(sc) else None
            extra = {} if sc_occ is None else dict(scale_occ_xy=float(sc_occ[:, :2].median()),
                                                   scale_occ_z=float(sc_occ[:, 2].median()))
            row = dict(step=step, loss=float(loss), depth_absrel=rel, n_gauss=r["n"], **extra,
                       **{k: float(v) for k, v in terms.items()}, **score(to_o(p).detach().view(occ.shape).numpy(),
                                                                         occ, mask), sec=time.time() - t0)
            log.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if a.save:
        np.save(a.save, to_o(p).detach().view(occ.shape).numpy())
    return log


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", required=True, help='"name:options" (options of variant_args)')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scene", type=int, default=0)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--keyframe", type=int, default=1)
    p.add_argument("--hw", type=int, nargs=2, default=[45, 80])
    p.add_argument("--coarsen", type=int, default=2)
    p.add_argument("--views", type=float, nargs="+", default=[0.0],
                   help="--sup depth: exact depth from the cameras at these times (s) from the keyframe")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="logs/gsv_oracle.jsonl")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    h, w = args.hw
    t0 = time.time()
    frame = load_frame(args.seed, args.scene, args.frames, args.keyframe, h, w, args.coarsen, args.views)
    print(f"frame loaded in {time.time() - t0:.1f} s; occupied voxels in the mask "
          f"{int((frame['occ'] & frame['mask']).sum())} of {int(frame['mask'].sum())}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    results = {}
    for v in args.variants:
        name, _, opts = v.partition(":")
        a = variant_args(shlex.split(opts))
        print(f"== {name}: {opts}", flush=True)
        log = run_variant(frame, a, h, w, OCC3D_VOXEL * args.coarsen)
        results[name] = log[-1]
        with open(args.out, "a") as f:
            f.write(json.dumps({"variant": name, "options": opts, "hw": [h, w], "coarsen": args.coarsen,
                            "views": args.views,
                                "log": log}) + "\n")
    print("| variant | depth AbsRel | AUC | IoU@0.5 | best IoU (t) | median o occ / free |")
    print("|---|---:|---:|---:|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['depth_absrel']:.3f} | {r['auc']:.3f} | {r['iou50']:.3f} | "
              f"{r['best_iou']:.3f} ({r['best_t']}) | {r['med_occ']:.4f} / {r['med_free']:.4f} |")


if __name__ == "__main__":
    main()
