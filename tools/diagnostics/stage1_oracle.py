"""Stage-1 oracles on exact synthetic streets: which half of stage 1 generalises to streets it has never seen?

Streets are rendered on the fly (``datasets.synthetic.oracle``: exact images, camera-z depth and ego poses) at
camera-sweep spacing (1/12 s). One model (``networks.build_model``: GSPModel with its criterion) trains on some streets,
with the temporal neighbours ``stride`` sweeps away (a stride drawn per sample from ``--strides``), and is measured
on its training streets and on held-out ones, at each stride of ``--eval_strides`` (1 = the sweeps stage 2 uses,
6 = keyframes, 0.5 s):

  --mode pose   depth frozen to the exact depth, only the pose net trains (temporal loss; GSP does not reach the
                pose): does the pose net read metric motion on a new street?
  --mode depth  pose frozen to the recorded motion, only the depth net trains (temporal + GSP): does the depth scale
                hold on a new street?
  --mode joint  both train, as stage 1 does.

  python -m tools.diagnostics.stage1_oracle --mode pose --train 0 1 2 3 4 5 --heldout 6 7 8 9 --strides 1 --steps 400
Writes <out>.json and prints a table per street: translation scale (|t_pred| / |t_true|, median over pairs),
mean |t_pred| and |t_true|, rotation error, depth scale (median of pred / exact depth) and AbsRel.
"""
import argparse
import json
import time

import numpy as np
import torch


from datasets.synthetic.oracle import ego_motion, scene_clip
from networks.depth_net import NUM_SCALES
from networks import build_model
from options import build_parser

SWEEP_DT = 1 / 12
TIE = 1e-4  # evidence: loss differences below this are ties (the identity error's tie-breaking noise is 1e-5)


def street_clips(streets, frames, h, w, seed=0):
    """{street: clip} of ``frames`` camera sweeps each (``scene_clip``)."""
    return {s: scene_clip(seed, s, frames, h, w, dt=SWEEP_DT) for s in streets}


def make_model(h, w, mode, use_gsp=True, extra=()):
    """A GSPModel at input size h x w on the torch rasteriser (motion from the pose net unless ``extra`` says
    otherwise); in mode pose / depth the other net is frozen."""
    opt = build_parser().parse_args(["--stage", "gsp", "--input_size", str(h), str(w), "--raster_backend", "torch",
                                     "--use_gsp", str(use_gsp and mode != "pose").lower(), "--gsp_pose", "net",
                                     *extra])
    model = build_model(opt)
    if mode == "pose":
        model.depth.requires_grad_(False)
    if mode == "depth":
        model.pose.requires_grad_(False)
    return model


def batch_of(clips, picks):
    """picks: [(street, k, stride)] -> batch (imgs (B,3,6,3,H,W), K, cam2ego, depth (B,6,1,H,W) exact, sem (B,6,H,W)
    exact 2D classes (what --ground_mode road reads), motion (B,2,4,4) recorded current -> previous / next ego,
    computed in float64)."""
    c = [clips[s] for s, _, _ in picks]
    return {"imgs": torch.stack([x["imgs"][[k - d, k, k + d]] for x, (_, k, d) in zip(c, picks)]),
            "K": torch.stack([x["K"] for x in c]), "cam2ego": torch.stack([x["cam2ego"] for x in c]),
            "depth": torch.stack([x["depth"][k] for x, (_, k, _) in zip(c, picks)]),
            "sem": torch.stack([x["cls"][k] for x, (_, k, _) in zip(c, picks)]),  # exact 2D classes (255 = sky)
            "motion": torch.stack([torch.stack([ego_motion(x["ego2global"], k, k + o) for o in (-d, d)])
                                   for x, (_, k, d) in zip(c, picks)])}


def exact_depth_outputs(depth, opt):
    """DepthNet-like outputs (every scale at full resolution) holding the exact depth (B,6,1,H,W)."""
    d = depth.flatten(0, 1).clamp(opt.min_depth, opt.max_depth)
    disp = (1 / d - 1 / opt.max_depth) / (1 / opt.min_depth - 1 / opt.max_depth)
    out = {("disp", s): disp for s in range(NUM_SCALES)}
    out["gs_scale"] = torch.full_like(d, opt.gsp_scale_max)
    out["depth"] = d
    return out


def loss_with_oracle(model, batch, mode):
    """model(batch) with the depth (mode pose) or the pose (mode depth) replaced by the truth."""
    if mode == "pose":
        model.depth_outputs = lambda cur: exact_depth_outputs(batch["depth"], model.opt)
    if mode == "depth":
        model.ego_motion = lambda imgs: batch["motion"]
    return model(batch)


def train(model, clips, mode, steps, strides, lr=2e-4, batch_size=1, warmup=30, seed=0, log_every=50,
          stride_ramp=0.0):
    """Adam on the model's own loss (warm-up, lr / 10 for the last 20%, gradient clip 5, as the trainer).
    stride_ramp > 0: the largest stride drawn grows linearly from the smallest to the largest of ``strides`` over
    that fraction of the steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    streets = sorted(clips)
    frames = len(clips[streets[0]]["imgs"])
    model.train()
    for step in range(steps):
        picks = []
        for _ in range(batch_size):
            top = max(strides) if stride_ramp <= 0 else min(strides) + (max(strides) - min(strides)) * min(
                1.0, step / (stride_ramp * steps))
            d = int(rng.choice([x for x in strides if x <= top]))
            picks.append((streets[rng.integers(len(streets))], int(rng.integers(d, frames - d)), d))
        if hasattr(model, "set_step"):  # the criterion's schedules (--ground_steps)
            model.set_step(step)
        loss, logs, _ = loss_with_oracle(model, batch_of(clips, picks), mode)
        for g in optim.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / warmup) * (0.1 if step >= 0.8 * steps else 1.0)
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optim.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}: " + " ".join(f"{k} {float(v):.4f}" for k, v in logs.items()), flush=True)
    model.eval()
    return model


def _motion_stats(preds, trues):
    """Lists of (4,4) predicted / true motions -> scale (median length ratio), mean lengths, rotation error."""
    tp = np.array([float(p[:3, 3].norm()) for p in preds])
    tt = np.array([float(t[:3, 3].norm()) for t in trues])
    rot = [float(torch.rad2deg(torch.arccos((((p[:3, :3].T @ t[:3, :3]).trace() - 1) / 2).clamp(-1, 1))))
           for p, t in zip(preds, trues)]
    return {"scale": float(np.median(tp / tt)), "t_pred": float(tp.mean()), "t_true": float(tt.mean()),
            "rot_err_deg": float(np.mean(rot))}


@torch.no_grad()
def measure(model, clips, eval_strides, mode, max_depth_eval=80.0, solver_every=0):
    """Per street: for each stride, translation scale (median |t_pred| / |t_true|), mean |t_pred|, |t_true| (m),
    rotation error (deg, mean) of the pose net; depth scale (median of pred / exact over pixels with exact depth
    < max_depth_eval) and AbsRel (no scaling), over every third frame. solver_every > 0: the same motion
    statistics of ``utils.pose_solver`` (on the model's depth; the exact depth in mode pose) over every
    solver_every-th pair, under ``solver_stride<d>``."""
    from utils.pose_solver import solve_ego_motion
    res = {}
    for s, clip in clips.items():
        r = {}
        imgs, frames = clip["imgs"], len(clip["imgs"])
        for d in eval_strides:
            pairs = range(0, frames - d)
            trues = [ego_motion(clip["ego2global"], k, k + d).double() for k in pairs]
            if mode != "depth" and model.opt.gsp_pose != "solve":
                r[f"stride{d}"] = _motion_stats([model.pose(imgs[[k]], imgs[[k + d]])[0].double() for k in pairs],
                                                trues)
            if solver_every:
                ks = list(pairs)[::solver_every]
                depth = [clip["depth"][[k]] if mode == "pose" else model.depth_outputs(imgs[[k]])["depth"][None]
                         for k in ks]
                preds = [solve_ego_motion(imgs[[k]], imgs[[k + d]], z, clip["K"][None], clip["cam2ego"][None])[0]
                         for k, z in zip(ks, depth)]
                r[f"solver_stride{d}"] = _motion_stats([p.double() for p in preds], trues[::solver_every])
        if mode != "pose":
            ratios, absrel, errs = [], [], []
            for k in range(0, frames, 3):
                pred = model.depth_outputs(imgs[[k]])["depth"]  # (6,1,H,W)
                gt = clip["depth"][k]
                m = (gt > 0.1) & (gt < max_depth_eval)
                p = pred[m].clamp(0.1, max_depth_eval)
                ratios.append((p / gt[m]).median())
                absrel.append(((p - gt[m]).abs() / gt[m]).mean())
                errs.append(((pred.clamp(0.1, max_depth_eval) - gt).abs() / gt, gt, m, clip["cls"][k][:, None]))
            r["depth_scale"] = float(torch.stack(ratios).median())
            r["abs_rel"] = float(torch.stack(absrel).mean())
            r.update(depth_breakdown(*[torch.stack(x) for x in zip(*errs)]))
        res[s] = r
    return res


def depth_breakdown(rel, gt, valid, cls, near=10.0):
    """AbsRel per camera, within ``near`` metres, and per 2D class (pixels pooled over frames) from (F, 6, 1, H, W)
    relative errors, exact depth, valid mask and class ids: {"abs_rel_cam": {cam: v}, "abs_rel_near": v,
    "abs_rel_class": {class: [AbsRel, share of the valid pixels]}}."""
    from utils.constants import CAMS, OCC_CLASSES
    out = {"abs_rel_cam": {c: float(rel[:, i][valid[:, i]].mean()) for i, c in enumerate(CAMS)}}
    near_m = valid & (gt < near)
    out["abs_rel_near"] = float(rel[near_m].mean()) if near_m.any() else float("nan")
    n = int(valid.sum())
    out["abs_rel_class"] = {OCC_CLASSES[k]: [float(rel[valid & (cls == k)].mean()), int((valid & (cls == k)).sum()) / n]
                            for k in range(len(OCC_CLASSES)) if (valid & (cls == k)).any()}
    return out


@torch.no_grad()
def scale_valleys(model, clips, factors=(0.8, 0.9, 1.0, 1.1, 1.25), frames=(3, 9, 15)):
    """Which term holds the depth's scale: per street, (s, temporal loss, w_gsp x GSP loss) with the model's
    depth x s and the recorded motion, over ``frames`` (stride 1)."""
    from networks.depth_net import disp_to_depth
    opt, orig, source = model.opt, model.depth_outputs, model.opt.gsp_pose
    opt.gsp_pose = "net"  # the motion of the loss is the recorded one (ego_motion below), not an alignment
    lo, hi = 1 / opt.max_depth, 1 / opt.min_depth
    out = {}
    for s_, clip in clips.items():
        batch = batch_of(clips, [(s_, k, 1) for k in frames])
        model.ego_motion = lambda imgs: batch["motion"]
        rows = []
        for f in factors:
            def scaled(cur, f=f):
                o = orig(cur)
                for k in [k for k in o if isinstance(k, tuple)]:
                    o[k] = (1 / (disp_to_depth(o[k], opt.min_depth, opt.max_depth) * f) - lo) / (hi - lo)
                o["depth"] = o["depth"] * f
                return o
            model.depth_outputs = scaled
            _, logs, _ = model(batch)
            rows.append((f, float(logs["loss_temporal"]), opt.w_gsp * float(logs["loss_gsp"])))
        model.depth_outputs = orig
        del model.ego_motion
        out[s_] = rows
    opt.gsp_pose = source
    return out


def pair_loss(clip, k, stride, depth):
    """The training's per-pixel temporal loss (auto-masked minimum over frames k -/+ ``stride``, recorded motion) of
    frame k of a clip at ``depth`` (6, 1, H, W), and the auto-mask's kept pixels: two (6, 1, H, W) maps."""
    from utils.geometry import ego_motion_to_cam
    from utils.losses import temporal_loss
    imgs = clip["imgs"]
    T = [ego_motion_to_cam(ego_motion(clip["ego2global"], k, k + o)[None], clip["cam2ego"][None])[0]
         for o in (-stride, stride)]
    _, maps = temporal_loss(imgs[k], [imgs[k - stride], imgs[k + stride]], depth, clip["K"], T)
    return torch.minimum(maps["reproj"], maps["identity"]), maps["mask"]


@torch.no_grad()
def evidence(model, clips, stride=1, frames_step=3):
    """Is a wrong depth what the photometric loss prefers, or a minimum the training missed? Per 2D class, over the
    given streets' frames (every ``frames_step``-th, neighbours ``stride`` sweeps away, the recorded motion): the
    per-pixel temporal loss (the training's: min over the two sources, auto-masked) at the model's depth and at the
    exact depth, the share of pixels where the exact depth scores lower, the auto-mask's kept share at each, and
    the model's mean log(pred / exact). {class: {...}} pooled over the streets' valid pixels (exact depth < 80 m).
    "Lower" means by more than TIE: the auto-mask's identity error carries 1e-5 noise to break ties."""
    from utils.constants import OCC_CLASSES
    acc = {}
    for clip in clips.values():
        frames = len(clip["imgs"])
        for k in range(stride, frames - stride, frames_step):
            pred = model.depth_outputs(clip["imgs"][[k]])["depth"]  # (6,1,H,W)
            exact = clip["depth"][k]
            per = {"pred": pair_loss(clip, k, stride, pred),
                   "exact": pair_loss(clip, k, stride, exact.clamp(0.1, 200.0))}
            valid = (exact > 0.1) & (exact < 80.0)
            cls = clip["cls"][k][:, None]
            logr = (pred.clamp(0.1, 80.0) / exact).log()
            for c in cls[valid].unique().tolist():
                m = valid & (cls == c)
                a = acc.setdefault(OCC_CLASSES[c], np.zeros(7))
                a += [float(per["pred"][0][m].sum()), float(per["exact"][0][m].sum()),
                      float((per["exact"][0][m] < per["pred"][0][m] - TIE).sum()), float(per["pred"][1][m].sum()),
                      float(per["exact"][1][m].sum()), float(logr[m].sum()), float(m.sum())]
    return {c: {"loss_pred": a[0] / a[6], "loss_exact": a[1] / a[6], "exact_lower": a[2] / a[6],
                "kept_pred": a[3] / a[6], "kept_exact": a[4] / a[6], "log_bias": a[5] / a[6], "pixels": int(a[6])}
            for c, a in sorted(acc.items(), key=lambda kv: -kv[1][6])}


@torch.no_grad()
def class_landscape(clips, cls_name, factors=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0), near=10.0, frame=3, stride=1):
    """Does the photometric loss tell a class's depth from far away? No network: on frame ``frame`` of each clip, the
    pixels of 2D class ``cls_name`` within ``near`` metres get the exact depth x each factor, every other pixel
    keeps the exact depth, neighbours ``stride`` sweeps away with the recorded motion. Returns {"loss": mean
    training loss (auto-masked minimum) over those pixels relative to factor 1, "kept": the auto-mask's kept
    share, "pixels"}. A loss that keeps rising with the factor means a gradient towards the truth from far off."""
    from utils.constants import OCC_CLASSES
    c = OCC_CLASSES.index(cls_name)
    loss, kept, n = np.zeros(len(factors)), np.zeros(len(factors)), 0
    for clip in clips.values():
        exact = clip["depth"][frame]
        sel = (clip["cls"][frame][:, None] == c) & (exact < near)
        for i, f in enumerate(factors):
            pix, mask = pair_loss(clip, frame, stride, torch.where(sel, exact * f, exact))
            loss[i] += float(pix[sel].sum())
            kept[i] += float(mask[sel].sum())
        n += int(sel.sum())
    if n == 0:
        raise ValueError(f"no {cls_name} pixel within {near} m on frame {frame} of the streets {sorted(clips)}")
    return {"factors": list(factors), "loss": (loss / loss[0]).tolist(), "kept": (kept / n).tolist(), "pixels": n}


@torch.no_grad()
def picture(model, clips, path, frame=9, cams=(1, 2, 4), zoom=2):
    """One PNG: per street of ``clips`` and camera of ``cams`` (default the two right cameras and the back left
    one), a row of image | exact inverse depth | the model's | log(model / exact) (blue: too near, red: too far,
    green: right; +-1 across the colour map)."""
    import cv2
    rows = []
    inv = lambda d: cv2.applyColorMap(np.clip(510 / d.clamp(0.5, 80).numpy(), 0, 255).astype(np.uint8),
                                      cv2.COLORMAP_MAGMA)  # 1 / depth, 2 m and nearer white
    for clip in clips.values():
        k = min(frame, len(clip["imgs"]) - 1)
        pred = model.depth_outputs(clip["imgs"][[k]])["depth"][:, 0]
        exact = clip["depth"][k][:, 0]
        for c in cams:
            img = (clip["imgs"][k, c].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[:, :, ::-1]
            err = ((pred[c].clamp(0.1, 80.0) / exact[c]).log().numpy() + 1) / 2 * 255
            err = cv2.applyColorMap(np.clip(err, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
            rows.append(np.concatenate([img, inv(exact[c]), inv(pred[c]), err], 1))
    out = np.concatenate(rows, 0)
    cv2.imwrite(path, cv2.resize(out, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST))


def evidence_table(ev):
    lines = ["| class | pixels | loss at model depth | loss at exact depth | exact scores lower | "
             "auto-mask kept, model | kept, exact | mean log(model / exact) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c, r in ev.items():
        lines.append(f"| {c} | {r['pixels']} | {r['loss_pred']:.4f} | {r['loss_exact']:.4f} | {r['exact_lower']:.2f} | "
                     f"{r['kept_pred']:.2f} | {r['kept_exact']:.2f} | {r['log_bias']:+.3f} |")
    return "\n".join(lines)


def table(res, train_streets):
    """Markdown table of ``measure`` results."""
    strides = sorted({k for r in res.values() for k in r if "stride" in k},
                     key=lambda k: (int(k.split("stride")[1]), k))
    cols = [f"{c} {k}" for k in strides for c in ("scale", "t_pred / t_true", "rot err")]
    head = "| " + " | ".join(["street", "role"] + cols + ["depth scale", "AbsRel"]) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s, r in res.items():
        cells = []
        for k in strides:
            x = r[k]
            cells += [f"{x['scale']:.3f}", f"{x['t_pred']:.3f} / {x['t_true']:.3f}", f"{x['rot_err_deg']:.3f}"]
        cells += [f"{r[k]:.3f}" if k in r else "-" for k in ("depth_scale", "abs_rel")]
        lines.append(f"| {s} | {'train' if s in train_streets else 'held out'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(res, train_streets):
    """Markdown: AbsRel per camera and within 10 m per street, then per class over the held-out streets."""
    from utils.constants import CAMS
    rows = {s: r for s, r in res.items() if "abs_rel_cam" in r}
    if not rows:
        return ""
    lines = ["| street | role | " + " | ".join(CAMS) + " | < 10 m |", "|---|---|" + "---:|" * (len(CAMS) + 1)]
    for s, r in rows.items():
        lines.append(f"| {s} | {'train' if s in train_streets else 'held out'} | " +
                     " | ".join(f"{r['abs_rel_cam'][c]:.3f}" for c in CAMS) + f" | {r['abs_rel_near']:.3f} |")
    held = [r for s, r in rows.items() if s not in train_streets] or list(rows.values())
    classes = sorted({c for r in held for c in r["abs_rel_class"]},
                     key=lambda c: -sum(r["abs_rel_class"].get(c, [0, 0])[1] for r in held))
    lines += ["", "Held-out streets, per 2D class (AbsRel, mean share of the pixels): " + ", ".join(
        f"{c} {np.mean([r['abs_rel_class'][c][0] for r in held if c in r['abs_rel_class']]):.3f} "
        f"({100 * np.mean([r['abs_rel_class'].get(c, [0, 0])[1] for r in held]):.1f} %)" for c in classes)]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["pose", "depth", "joint"], default="pose")
    p.add_argument("--train", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="training streets")
    p.add_argument("--heldout", type=int, nargs="+", default=[6, 7, 8, 9], help="held-out streets")
    p.add_argument("--strides", type=int, nargs="+", default=[1], help="training strides, sweeps (one per sample)")
    p.add_argument("--stride_ramp", type=float, default=0.0,
                   help="fraction of the steps over which the largest training stride grows to max(--strides)")
    p.add_argument("--eval_strides", type=int, nargs="+", default=[1, 6])
    p.add_argument("--frames", type=int, default=19, help="sweeps per street (1/12 s apart)")
    p.add_argument("--size", type=int, nargs=2, default=[32, 56], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--use_gsp", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--solver_every", type=int, default=0,
                   help="also measure utils.pose_solver on every N-th pair (0 = off)")
    p.add_argument("--model_args", type=str, nargs="*", default=[],
                   help="options of the model as on the train.py command line, without the leading dashes "
                        "(e.g. gsp_pose solve)")
    p.add_argument("--save", type=str, default=None, help="save the trained model's state_dict here")
    p.add_argument("--load", type=str, default=None, help="start from this state_dict (--steps 0: measure only)")
    p.add_argument("--valleys", action="store_true",
                   help="also print the temporal and GSP losses against a factor on the depth (scale_valleys)")
    p.add_argument("--evidence", action="store_true",
                   help="mode depth / joint: also the per-class temporal loss at the model's depth against the exact "
                        "depth on the held-out streets (evidence)")
    p.add_argument("--landscape", type=str, nargs="*", default=[], metavar="CLASS",
                   help="also, on the held-out streets' exact data (no network): the loss of each 2D class's pixels "
                        "within 10 m against a factor on their depth alone (``class_landscape``), e.g. car manmade")
    p.add_argument("--picture", type=str, default=None,
                   help="mode depth / joint: write a PNG of image | exact | model depth | log error for the right "
                        "cameras and the back left one of the held-out streets (``picture``)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=str, default=None, help="JSON file of the results")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()
    h, w = a.size
    clips = street_clips(a.train + a.heldout, a.frames, h, w)
    print(f"rendered {len(clips)} streets in {time.time() - t0:.0f} s", flush=True)
    extra = [("--" + x) if i % 2 == 0 else x for i, x in enumerate(a.model_args)]
    model = make_model(h, w, a.mode, bool(a.use_gsp), extra)
    if a.load:
        model.load_state_dict(torch.load(a.load))
    train(model, {s: clips[s] for s in a.train}, a.mode, a.steps, a.strides, a.lr, a.batch_size, seed=a.seed,
          stride_ramp=a.stride_ramp)
    if a.save:
        torch.save(model.state_dict(), a.save)
    res = measure(model, clips, a.eval_strides, a.mode, solver_every=a.solver_every)
    if a.valleys:
        for s_, rows in scale_valleys(model, clips).items():
            res[s_]["valleys"] = rows
            print(f"street {s_}: (depth factor, temporal, w_gsp x GSP) " +
                  " ".join(f"({f}, {t:.4f}, {g:.4f})" for f, t, g in rows))
    print(table(res, a.train))
    print(breakdown_table(res, a.train))
    for cname in a.landscape:
        r = class_landscape({s_: clips[s_] for s_ in a.heldout}, cname)
        res[f"landscape_{cname}"] = r
        print(f"{cname} within 10 m ({r['pixels']} pixels), loss relative to the exact depth: " + ", ".join(
            f"x{f} {v:.2f} (kept {k:.2f})" for f, v, k in zip(r["factors"], r["loss"], r["kept"])))
    if a.picture and a.mode != "pose":
        picture(model, {s_: clips[s_] for s_ in a.heldout}, a.picture)
    if a.evidence and a.mode != "pose":
        for d in a.eval_strides:
            res[f"evidence_stride{d}"] = evidence(model, {s_: clips[s_] for s_ in a.heldout}, stride=d)
            print(f"\nHeld-out streets, temporal loss per class at stride {d}:\n" +
                  evidence_table(res[f"evidence_stride{d}"]))
    print(f"{time.time() - t0:.0f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "seconds": time.time() - t0, "streets": res}, f, indent=1)


if __name__ == "__main__":
    main()
