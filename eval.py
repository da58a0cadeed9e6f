"""Evaluate a checkpoint: depth (LiDAR), occupancy (Occ3D mIoU / mIoU* / IoU / RayIoU) and, for stage 1, pose.

    python eval.py --config configs/nusc-gsv.txt --ckpt logs/run/ckpt/last.pt [--out_dir DIR]
    torchrun --nproc_per_node 8 eval.py ...     # each rank takes every world-th sample; ONE confusion matrix

The model is rebuilt from the options stored in the checkpoint (``rebuild.py``; a checkpoint keeps every option
but the run's paths, so the data paths come from this command or its --config); options given here override them. The evaluation protocol (``options.PROTOCOL_OPTIONS``: --occ_eval_mask, --rayiou_origins) takes its
defaults unless this command sets it, whatever the run was trained with, and the choice is printed. A checkpoint
of the other stage than this command's --stage (or its --config's), one that does not fit the model, an empty
split or a dataset without any label stop with one line. Results: <out_dir>/metrics.json and metrics.md (default
out_dir: <run>/eval).
"""
import json
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from datasets import build_dataset, collate
from utils import dist
from utils.constants import CAMS


def _shard(n):
    """Indices of this rank: every world-th sample, no padding (no sample is counted twice)."""
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return list(range(rank, n, dist.world_size()))


SHIFTS = (-1, 1)  # voxels the default occupancy read-out is also scored moved by (utils.occ_metrics.radial_shift)
MASK_TEXT = {"camera_lidar": "inside mask_camera AND mask_lidar, the authors' protocol",
             "camera": "inside mask_camera only", "none": "every voxel, no visibility mask"}
FOG_KEYS = ("seen_opacity", "faint_alpha_share", "voxels_to_half")  # networks/gsv_loss.fog_stats
ORIGINS_TEXT = {"scene": "SparseOcc's origins: LiDAR positions of up to 8 keyframes of the scene",
                "fixed": "one fixed LiDAR origin (0.94, 0, 1.84) m"}


def _ray_origins(batch, b, mode):
    """(K, 3) RayIoU origins of sample ``b`` of the batch, ego frame, metres (``--rayiou_origins``)."""
    from utils.occ_metrics import NUSC_LIDAR_ORIGIN
    if mode == "fixed":
        return [NUSC_LIDAR_ORIGIN]
    if "ray_origins" not in batch:
        raise ValueError("--rayiou_origins scene needs the LIDAR_TOP keyframes of each scene in the nuScenes tables "
                         "(the dataset gave no ray_origins); use --rayiou_origins fixed")
    return batch["ray_origins"][b].cpu().numpy()


def derived_labels_info(dataset):
    """The ``occ_gt_info.json`` that tools/data/make_occ_gt_nusc.py writes next to LiDAR-derived labels, or None."""
    root = getattr(dataset, "occ_root", None)
    path = os.path.join(root, "occ_gt_info.json") if root else None
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def derived_labels_summary(info, occ, ray=None):
    """What is meaningful on LiDAR-derived labels: the IoU of the box classes the labels hold (inside the mask)
    and their mean, RayIoU over them, the ground / non-ground split. ``occ``: ``OccEvaluator``, ``ray``: ``RayIoU``
    or None. Returns (dict, markdown)."""
    from utils.constants import OCC_CLASSES
    from utils.occ_metrics import _nanmean

    s = occ.summary()
    gt_voxels = occ.hist.sum(1).numpy()
    present = [c for c in info["box_classes"] if gt_voxels[OCC_CLASSES.index(c)] > 0]
    out = {"box_classes_present": present, "box_IoU": {c: s["IoU"][c] for c in present},
           "mIoU_box": _nanmean([s["IoU"][c] for c in present])}
    text = ("### Labels derived from LiDAR (tools/data/make_occ_gt_nusc.py, docs/occ_gt.md)\n\n"
            "These labels hold only what LiDAR and boxes can give. **Meaningful**: geometric IoU "
            f"({s['geo_IoU']:.2f}) and the IoU of the box classes present in the labels: "
            + (", ".join(f"{c} {s['IoU'][c]:.2f}" for c in present) or "none")
            + f" (mean {out['mIoU_box']:.2f}")
    if ray is not None:
        r = ray.summary()
        out["RayIoU_box"] = float(np.mean([_nanmean([r[k][c] for c in present])
                                           for k in r if k.startswith("IoU@")]))
        text += f"; RayIoU over them {out['RayIoU_box']:.2f}"
    text += (f"). driveable_surface ({s['IoU']['driveable_surface']:.2f}) and manmade "
             f"({s['IoU']['manmade']:.2f}) only split the static voxels into ground (every ground type) and the "
             "rest (buildings, vegetation, poles...). **Not meaningful**: mIoU, mIoU*, the 13-class mIoU and "
             "RayIoU over all classes: the labels never hold other_flat, sidewalk, terrain or vegetation, so a "
             "model that predicts them scores 0 there.\n\n")
    return out, text


@torch.no_grad()
def evaluate(model, dataset, opt, device):
    """Run every metric the dataset has labels for. Returns {'scalars': {...}, 'text': markdown, ...}."""
    from utils.metrics import DepthEvaluator
    from utils.pred_io import save_prediction
    from utils.occ_metrics import OccEvaluator, OpacityStats, RayIoU, occ_eval_mask, radial_shift
    from utils.batch import to_device
    from utils.geometry import recorded_ego_motion
    from utils.pose_metrics import evaluate_scene_poses, per_street

    model.eval()
    idx = _shard(len(dataset))
    if opt.eval_max_samples > 0:
        idx = [i for i in idx if i < opt.eval_max_samples]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=1,
                                         num_workers=opt.num_workers, collate_fn=collate,
                                         generator=torch.Generator())  # draws nothing from torch's RNG
    depth_ev = DepthEvaluator(opt.min_depth_eval, opt.max_depth_eval, num_cams=len(CAMS))
    occ_ev, ray_ev, opa_ev = OccEvaluator(), RayIoU(), OpacityStats()
    cal_ev = OccEvaluator()  # the label-free calibrated read-out (--occ_readout calibrated, the default)
    arg_ev = OccEvaluator()  # the authors' argmax read-out, beside whichever is the default
    thin_ev = OccEvaluator()  # the read-out with one ground voxel per column (--occ_thin_ground, the default) ...
    asread_ev = OccEvaluator()  # ... and with the ground as the threshold leaves it, both beside the read-out
    shift_ev = {k: OccEvaluator() for k in SHIFTS}  # the default read-out moved along the rays (radial_shift)
    cal_t = torch.zeros(2, dtype=torch.float64)  # sum and count of its per-sample thresholds
    fog = torch.zeros(len(FOG_KEYS), 2, dtype=torch.float64)  # sum and count of each fog statistic (stage 2)
    poses = []  # (dataset index, scene, token, predicted next-motion, true next-motion)
    street_depth = []  # stage 1: (dataset index, scene, per camera (abs_rel, depth scale) or None)
    seen = {"depth": 0, "occ": 0}
    t0 = time.time()
    for n, batch in enumerate(tqdm(loader, desc="eval", disable=not dist.is_main(), dynamic_ncols=True)):
        batch = to_device(batch, device)
        want_depth = opt.eval_depth and "depth_gt" in batch
        want_occ = opt.stage == "gsv" and opt.eval_occ and "occ_semantics" in batch
        if opt.stage == "gsv" and (want_depth or want_occ):  # one network forward for both
            pred = model.predict(batch, depth=want_depth, occupancy=want_occ, calibrate=want_occ and want_depth)
        else:
            pred = {"depth": model.predict_depth(batch)} if want_depth else {}
        for j, k in enumerate(FOG_KEYS):
            if k in pred.get("fog", {}):
                fog[j] += torch.tensor([float(pred["fog"][k]), 1.0], dtype=torch.float64)
        if "depth" in pred:
            for b in range(pred["depth"].shape[0]):
                cams = depth_ev.update(pred["depth"][b].float().cpu(), batch["depth_gt"][b].cpu(),
                                       batch["sem"][b].cpu() if "sem" in batch else None)
                if opt.stage == "gsp":
                    street_depth.append((idx[n], batch["scene"][b], cams))
            seen["depth"] += pred["depth"].shape[0]
        if "occupancy" in pred:
            occ = pred["occupancy"].cpu().numpy()
            for b in range(occ.shape[0]):
                gt = batch["occ_semantics"][b].cpu().numpy()
                mask = occ_eval_mask(batch["occ_mask_camera"][b], batch["occ_mask_lidar"][b], opt.occ_eval_mask)
                occ_ev.update(occ[b], gt, mask)
                for k, e in shift_ev.items():
                    e.update(radial_shift(occ[b], k), gt, mask)
                if "occupancy_argmax" in pred:
                    arg_ev.update(pred["occupancy_argmax"][b].cpu().numpy(), gt, mask)
                if "occupancy_thin" in pred:
                    thin_ev.update(pred["occupancy_thin"][b].cpu().numpy(), gt, mask)
                if "occupancy_as_read" in pred:
                    asread_ev.update(pred["occupancy_as_read"][b].cpu().numpy(), gt, mask)
                if "occupancy_calibrated" in pred:
                    cal_ev.update(pred["occupancy_calibrated"][b].cpu().numpy(), gt, mask)
                    cal_t += torch.tensor([float(pred["occ_threshold"][b]), 1.0], dtype=torch.float64)
                if "occ_opacity" in pred:
                    opa_ev.update(pred["occ_opacity"][b], pred["occ_sem"][b], gt, mask)
                if opt.eval_rayiou:  # SparseOcc: no visibility mask
                    ray_ev.update(occ[b], gt, origins=_ray_origins(batch, b, opt.rayiou_origins))
                if opt.save_pred and "occ_opacity" in pred:
                    save_prediction(opt.save_pred, batch["token"][b], batch["scene"][b],
                                    pred["occ_opacity"][b].float().cpu().numpy(), pred["occ_sem"][b].cpu().numpy(),
                                    occ[b], float(pred["occ_threshold"][b]) if "occ_threshold" in pred else np.nan)
            seen["occ"] += occ.shape[0]
        if opt.stage == "gsp" and opt.eval_pose:
            pred = model.predict_pose(batch)[:, 1].double().cpu()
            true = recorded_ego_motion(batch["ego2global"])[:, 1].cpu()
            for b in range(pred.shape[0]):
                poses.append((idx[n], batch["scene"][b], batch["token"][b], pred[b].numpy(), true[b].numpy()))

    counts = dist.all_reduce_sum(torch.tensor([seen["depth"], seen["occ"]], device=device))
    fog = dist.all_reduce_sum(fog.to(device)).cpu()
    seen = {"depth": int(counts[0]), "occ": int(counts[1])}
    out = {"scalars": {}, "text": "", "samples": seen, "seconds": time.time() - t0}
    depth_ev.all_reduce()
    occ_ev.all_reduce()
    ray_ev.all_reduce()
    opa_ev.all_reduce()
    cal_ev.all_reduce()
    arg_ev.all_reduce()
    thin_ev.all_reduce()
    asread_ev.all_reduce()
    for e in shift_ev.values():
        e.all_reduce()
    cal_t = dist.all_reduce_sum(cal_t.to(device)).cpu()
    if fog[:, 1].sum() > 0:
        out["fog"] = {k: float(s / n) for k, (s, n) in zip(FOG_KEYS, fog) if n > 0}
        out["scalars"].update({f"fog/{k}": v for k, v in out["fog"].items()})
        out["text"] += "### Occupancy health of the renders (no labels needed)\n\n" + ", ".join(
            f"{k} {v:.3f}" for k, v in out["fog"].items()) + " (mean over samples; a fog: seen_opacity near the " \
            "voxel opacities, faint_alpha_share near 1, voxels_to_half in the tens)\n\n"
    if seen["depth"]:
        s = depth_ev.summary()
        out["depth"] = s
        out["scalars"].update({f"depth/{k}": v for k, v in s["mean"].items()})
        out["scalars"].update({f"depth/abs_rel_{k}": v for k, v in s["abs_rel_by_range"].items()})
        out["text"] += "### Depth (no median scaling)\n\n" + depth_ev.table() + "\n\n" + depth_ev.range_line() + "\n\n"
        line = depth_ev.class_line()
        if line:
            out["text"] += line + "\n\n"
            out["scalars"].update({f"depth/abs_rel_{k}": v["abs_rel"] for k, v in s["by_class"].items()})
    if seen["occ"]:
        s = occ_ev.summary()
        out["occupancy"] = s
        out["occ_eval_mask"] = opt.occ_eval_mask
        out["scalars"].update({"occ/mIoU": s["mIoU"], "occ/mIoU*": s["mIoU_star"], "occ/mIoU_13": s["mIoU_13"],
                               "occ/IoU": s["geo_IoU"]})
        out["text"] += f"### Occupancy (Occ3D, {MASK_TEXT[opt.occ_eval_mask]}: --occ_eval_mask " \
                       f"{opt.occ_eval_mask}; read-out: --occ_readout {opt.occ_readout}" + \
                       (f", --occ_threshold {opt.occ_threshold:g}" if opt.occ_readout == "opacity" else "") + \
                       ")\n\n" + occ_ev.table() + "\n\n"
        if cal_t[1] > 0:
            c = cal_ev.summary()
            out["occupancy_calibrated"] = {"mIoU_star": c["mIoU_star"], "mIoU": c["mIoU"], "geo_IoU": c["geo_IoU"],
                                           "mean_threshold": float(cal_t[0] / cal_t[1])}
            out["scalars"].update({"occ/calibrated_mIoU*": c["mIoU_star"], "occ/calibrated_IoU": c["geo_IoU"],
                                   "occ/calibrated_t": float(cal_t[0] / cal_t[1])})
            out["text"] += (f"Read-out calibrated without labels (--occ_readout calibrated: per sample, the opacity "
                            f"threshold whose first hits best match the rendered depth; mean t "
                            f"{cal_t[0] / cal_t[1]:.2f}): mIoU* {c['mIoU_star']:.2f}, mIoU {c['mIoU']:.2f}, geo IoU "
                            f"{c['geo_IoU']:.2f}\n\n")
        if arg_ev.hist.sum() > 0:
            a = arg_ev.summary()
            out["occupancy_argmax"] = {"mIoU_star": a["mIoU_star"], "mIoU": a["mIoU"], "geo_IoU": a["geo_IoU"]}
            out["scalars"].update({"occ/argmax_mIoU*": a["mIoU_star"], "occ/argmax_IoU": a["geo_IoU"]})
            out["text"] += (f"Read-out argmax over the C+1 channels (--occ_readout argmax, the authors'): mIoU* "
                            f"{a['mIoU_star']:.2f}, mIoU {a['mIoU']:.2f}, geo IoU {a['geo_IoU']:.2f}\n\n")
        if thin_ev.hist.sum() > 0:
            t_ = thin_ev.summary()
            out["occupancy_thin_ground"] = {"mIoU_star": t_["mIoU_star"], "mIoU": t_["mIoU"], "geo_IoU": t_["geo_IoU"]}
            out["scalars"].update({"occ/thin_ground_mIoU*": t_["mIoU_star"], "occ/thin_ground_IoU": t_["geo_IoU"]})
            out["text"] += (f"Read-out with one ground voxel per column (--occ_thin_ground "
                            f"{'true, the read-out above' if opt.occ_thin_ground else 'false: not the read-out above'}"
                            f"): mIoU* {t_['mIoU_star']:.2f}, mIoU {t_['mIoU']:.2f}, geo IoU {t_['geo_IoU']:.2f}\n\n")
        if asread_ev.hist.sum() > 0:
            r_ = asread_ev.summary()
            out["occupancy_ground_as_read"] = {"mIoU_star": r_["mIoU_star"], "mIoU": r_["mIoU"],
                                               "geo_IoU": r_["geo_IoU"]}
            out["scalars"].update({"occ/as_read_mIoU*": r_["mIoU_star"], "occ/as_read_IoU": r_["geo_IoU"]})
            out["text"] += (f"Read-out with the ground as the threshold leaves it (--occ_thin_ground false"
                            f"{': the read-out above' if not opt.occ_thin_ground else ''}): mIoU* "
                            f"{r_['mIoU_star']:.2f}, mIoU {r_['mIoU']:.2f}, geo IoU {r_['geo_IoU']:.2f}\n\n")
        if all(e.hist.sum() > 0 for e in shift_ev.values()):
            sh = {k: e.summary() for k, e in shift_ev.items()}
            out["occupancy_shifted"] = {str(k): {"mIoU_star": v["mIoU_star"], "geo_IoU": v["geo_IoU"]}
                                        for k, v in sh.items()}
            out["scalars"].update({f"occ/shift{k:+d}_IoU": v["geo_IoU"] for k, v in sh.items()})
            out["text"] += ("Read-out moved along the horizontal rays from the ego (a volume in front of or behind "
                            "its surfaces scores higher moved): " + ", ".join(
                                f"{k:+d} voxel: mIoU* {v['mIoU_star']:.2f}, geo IoU {v['geo_IoU']:.2f}"
                                for k, v in sh.items()) + f" (as read: {s['mIoU_star']:.2f} / {s['geo_IoU']:.2f})\n\n")
        o = opa_ev.summary()
        if o["thresholds"] and opa_ev.hist.sum() > 0:
            out["opacity"] = o
            out["scalars"].update({"occ/opacity_AUC": 100 * o["auc"], "occ/best_t_mIoU*": o["best"]["mIoU_star"],
                                   "occ/best_t": o["best"]["t"]})
            out["text"] += "### Occupancy health: opacity of occupied and free voxels\n\n" + opa_ev.table() + "\n\n"
        if opt.eval_rayiou:
            r = ray_ev.summary()
            out["rayiou"] = r
            out["rayiou_origins"] = opt.rayiou_origins
            out["scalars"]["occ/RayIoU"] = r["RayIoU"]
            out["text"] += f"RayIoU {r['RayIoU']:.2f} (1/2/4 m: " + \
                           "/".join(f"{r[k]:.2f}" for k in ("RayIoU@1", "RayIoU@2", "RayIoU@4")) + \
                           f"; {ORIGINS_TEXT[opt.rayiou_origins]}: --rayiou_origins {opt.rayiou_origins}; " \
                           "no visibility mask, as SparseOcc)\n\n"
        info = derived_labels_info(dataset)
        if info is not None:
            d, text = derived_labels_summary(info, occ_ev, ray_ev if opt.eval_rayiou else None)
            out["occupancy"]["derived_labels"] = d
            out["scalars"]["occ/mIoU_box"] = d["mIoU_box"]
            if "RayIoU_box" in d:
                out["scalars"]["occ/RayIoU_box"] = d["RayIoU_box"]
            out["text"] += text
    poses, street_depth = _gather(poses), _gather(street_depth)
    if poses:
        poses = [p[1:] for p in sorted(poses, key=lambda p: p[0])]  # dataset order = time order in a scene
        p = evaluate_scene_poses(poses)
        out["pose"] = p
        out["scalars"].update({f"pose/{k}": v for k, v in p["mean"].items()})
        out["text"] += "### Pose (no scale alignment)\n\n" + p["table"] + "\n\n"
    if poses or street_depth:  # stage 1, per street: the scale of the depth alone next to that of the motion
        depth_rows = [r[1:] for r in sorted(street_depth, key=lambda r: r[0])]
        s = per_street(out.get("pose", {}).get("scenes"), depth_rows)
        out["streets"] = s["streets"]
        out["text"] += ("### Per street (stage 1; depth scale = median of predicted / LiDAR depth, no pose "
                        "involved)\n\n") + s["table"] + "\n\n"
    return out


def protocol_line(opt, saved, explicit):
    """Which mask and RayIoU origins this evaluation scores with, and why (printed before it runs)."""
    parts = []
    for key, text in (("occ_eval_mask", MASK_TEXT), ("rayiou_origins", ORIGINS_TEXT)):
        value = getattr(opt, key)
        why = "given here" if key in explicit else "the protocol default"
        if key not in explicit and saved.get(key, value) != value:
            why += f"; the run was trained with {saved[key]}, pass --{key} {saved[key]} for that"
        parts.append(f"--{key} {value} ({text[value]}; {why})")
    return "[eval] " + "; ".join(parts)


def _gather(records):
    """A list of picklable records from every rank, concatenated (the list itself without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return records
    gathered = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, records)
    return [r for part in gathered for r in part]


def load_for_eval(argv=None):
    """(options, checkpoint state): the checkpoint's options under this command's, the stage checked."""
    from options import PROTOCOL_OPTIONS, explicit_options, parse_args
    from rebuild import saved_options
    from utils.checkpoint import STAGE_NAMES, checkpoint_stage, load_checkpoint
    from utils.errors import BadCheckpoint, ConfigError

    cli = parse_args(argv)
    if not cli.ckpt:
        raise ConfigError("--ckpt is required: the checkpoint to evaluate (e.g. logs/<run>/ckpt/last.pt)")
    state = load_checkpoint(cli.ckpt)
    explicit = explicit_options(argv)
    stage = checkpoint_stage(state)
    if stage is not None and "stage" in explicit and explicit["stage"] != stage:
        raise BadCheckpoint(f"--ckpt {cli.ckpt} is a {STAGE_NAMES.get(stage, stage)} checkpoint, and this command "
                            f"asks for --stage {explicit['stage']} (on the command line or in --config): pass a "
                            f"{STAGE_NAMES.get(explicit['stage'])} checkpoint, or the config of the checkpoint's stage")
    # stage 1's 2D labels were a training input (its road term), not part of the model: read only when asked here
    fresh = PROTOCOL_OPTIONS + (("use_sem",) if stage == "gsp" else ())
    opt = saved_options(state, cli.ckpt, argv, fresh=fresh)
    if "dataroot" not in state["opt"] and "dataroot" not in explicit and dist.is_main():
        print(f"[eval] the checkpoint keeps no paths: the data comes from this command (--dataroot {opt.dataroot}; "
              "pass the run's --config or --dataroot)")
    if opt.stage == "gsv" and opt.eval_occ and dist.is_main():
        print(protocol_line(opt, state["opt"], explicit))
    return opt, state


def write_results(metrics, opt, state):
    from utils.errors import DiskFull, disk_full_cause
    out_dir = opt.out_dir or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(opt.ckpt))), "eval")
    metrics["ckpt"] = os.path.abspath(opt.ckpt)
    metrics["step"] = state.get("step")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1, default=lambda x: np.asarray(x).tolist())
        with open(os.path.join(out_dir, "metrics.md"), "w") as f:
            f.write(metrics["text"])
    except OSError as e:
        if disk_full_cause(e) is None:
            raise
        raise DiskFull(f"disk full writing the metrics to {out_dir} ({e.strerror}): free space, then evaluate "
                       "again") from None
    print(metrics["text"])
    print(f"written to {out_dir}/metrics.json")


def main(argv=None):
    from networks import build_model
    from utils.checkpoint import load_model_state
    from utils.errors import BadData, UserError, message

    try:  # bad input (options, checkpoint, data, a full disk) ends with one line, no traceback
        opt, state = load_for_eval(argv)
        _, _, device = dist.init_distributed(opt.device, getattr(opt, "share_gpu", False))
        model = build_model(opt).to(device)
        load_model_state(model, state, opt.ckpt)
        dataset = build_dataset(opt, "val")
        where = f"split file {opt.val_split}" if opt.val_split else f"--dataroot {opt.dataroot}"
        if len(dataset) == 0:
            raise BadData(f"the val split ({where}) has no sample: nothing to evaluate")
        metrics = evaluate(model, dataset, opt, device)
        if not metrics["text"]:
            raise BadData(f"nothing was evaluated on the val split ({where}): no label to score against; give "
                          "--depth_root (LiDAR depth) or --occ_root (Occ3D labels, stage 2)")
        if dist.is_main():
            write_results(metrics, opt, state)
    except (UserError, ValueError) as e:
        sys.exit(f"error: {message(e)}")
    dist.cleanup()


if __name__ == "__main__":
    main()
