"""Evaluate a checkpoint: depth (LiDAR), occupancy (Occ3D mIoU / mIoU* / IoU / RayIoU) and, for stage 1, pose.

    python eval.py --config configs/nusc-gsv.txt --ckpt logs/run/ckpt/last.pt [--out_dir DIR]
    torchrun --nproc_per_node 8 eval.py ...     # each rank takes every world-th sample; ONE confusion matrix

The model is rebuilt from the options stored in the checkpoint; options given here (data paths, eval switches)
override them. Results: <out_dir>/metrics.json and metrics.md (default out_dir: <run>/eval).
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


MASK_TEXT = {"camera_lidar": "inside mask_camera AND mask_lidar, the authors' protocol",
             "camera": "inside mask_camera only", "none": "every voxel, no visibility mask"}
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


@torch.no_grad()
def evaluate(model, dataset, opt, device):
    """Run every metric the dataset has labels for. Returns {'scalars': {...}, 'text': markdown, ...}."""
    from utils.metrics import DepthEvaluator
    from utils.occ_metrics import OccEvaluator, RayIoU, occ_eval_mask
    from utils.batch import to_device
    from utils.geometry import recorded_ego_motion
    from utils.pose_metrics import evaluate_scene_poses, per_street

    model.eval()
    idx = _shard(len(dataset))
    if opt.eval_max_samples > 0:
        idx = [i for i in idx if i < opt.eval_max_samples]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=1,
                                         num_workers=opt.num_workers, collate_fn=collate)
    depth_ev = DepthEvaluator(opt.min_depth_eval, opt.max_depth_eval, num_cams=len(CAMS))
    occ_ev, ray_ev = OccEvaluator(), RayIoU()
    poses = []  # (dataset index, scene, token, predicted next-motion, true next-motion)
    street_depth = []  # stage 1: (dataset index, scene, per camera (abs_rel, depth scale) or None)
    seen = {"depth": 0, "occ": 0}
    t0 = time.time()
    for n, batch in enumerate(tqdm(loader, desc="eval", disable=not dist.is_main(), dynamic_ncols=True)):
        batch = to_device(batch, device)
        want_depth = opt.eval_depth and "depth_gt" in batch
        want_occ = opt.stage == "gsv" and opt.eval_occ and "occ_semantics" in batch
        if opt.stage == "gsv" and (want_depth or want_occ):  # one network forward for both
            pred = model.predict(batch, depth=want_depth, occupancy=want_occ)
        else:
            pred = {"depth": model.predict_depth(batch)} if want_depth else {}
        if "depth" in pred:
            for b in range(pred["depth"].shape[0]):
                cams = depth_ev.update(pred["depth"][b].float().cpu(), batch["depth_gt"][b].cpu())
                if opt.stage == "gsp":
                    street_depth.append((idx[n], batch["scene"][b], cams))
            seen["depth"] += pred["depth"].shape[0]
        if "occupancy" in pred:
            occ = pred["occupancy"].cpu().numpy()
            for b in range(occ.shape[0]):
                gt = batch["occ_semantics"][b].cpu().numpy()
                occ_ev.update(occ[b], gt, occ_eval_mask(batch["occ_mask_camera"][b], batch["occ_mask_lidar"][b],
                                                        opt.occ_eval_mask))
                if opt.eval_rayiou:  # SparseOcc: no visibility mask
                    ray_ev.update(occ[b], gt, origins=_ray_origins(batch, b, opt.rayiou_origins))
            seen["occ"] += occ.shape[0]
        if opt.stage == "gsp" and opt.eval_pose:
            pred = model.predict_pose(batch)[:, 1].double().cpu()
            true = recorded_ego_motion(batch["ego2global"])[:, 1].cpu()
            for b in range(pred.shape[0]):
                poses.append((idx[n], batch["scene"][b], batch["token"][b], pred[b].numpy(), true[b].numpy()))

    counts = dist.all_reduce_sum(torch.tensor([seen["depth"], seen["occ"]], device=device))
    seen = {"depth": int(counts[0]), "occ": int(counts[1])}
    out = {"scalars": {}, "text": "", "samples": seen, "seconds": time.time() - t0}
    depth_ev.all_reduce()
    occ_ev.all_reduce()
    ray_ev.all_reduce()
    if seen["depth"]:
        s = depth_ev.summary()
        out["depth"] = s
        out["scalars"].update({f"depth/{k}": v for k, v in s["mean"].items()})
        out["text"] += "### Depth (no median scaling)\n\n" + depth_ev.table() + "\n\n"
    if seen["occ"]:
        s = occ_ev.summary()
        out["occupancy"] = s
        out["occ_eval_mask"] = opt.occ_eval_mask
        out["scalars"].update({"occ/mIoU": s["mIoU"], "occ/mIoU*": s["mIoU_star"], "occ/mIoU_13": s["mIoU_13"],
                               "occ/IoU": s["geo_IoU"]})
        out["text"] += f"### Occupancy (Occ3D, {MASK_TEXT[opt.occ_eval_mask]}: --occ_eval_mask " \
                       f"{opt.occ_eval_mask})\n\n" + occ_ev.table() + "\n\n"
        if opt.eval_rayiou:
            r = ray_ev.summary()
            out["rayiou"] = r
            out["rayiou_origins"] = opt.rayiou_origins
            out["scalars"]["occ/RayIoU"] = r["RayIoU"]
            out["text"] += f"RayIoU {r['RayIoU']:.2f} (1/2/4 m: " + \
                           "/".join(f"{r[k]:.2f}" for k in ("RayIoU@1", "RayIoU@2", "RayIoU@4")) + \
                           f"; {ORIGINS_TEXT[opt.rayiou_origins]}: --rayiou_origins {opt.rayiou_origins}; " \
                           "no visibility mask, as SparseOcc)\n\n"
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


def _gather(records):
    """A list of picklable records from every rank, concatenated (the list itself without torch.distributed)."""
    if not torch.distributed.is_initialized():
        return records
    gathered = [None] * dist.world_size()
    torch.distributed.all_gather_object(gathered, records)
    return [r for part in gathered for r in part]


def main():
    from networks import build_model
    from options import ConfigError, merge_checkpoint_options, parse_args
    from utils.checkpoint import load_checkpoint, strip_module_prefix
    from utils.errors import UserError, message

    try:
        cli = parse_args()
        if not cli.ckpt:
            sys.exit("error: --ckpt is required")
        state = load_checkpoint(cli.ckpt)
        opt = merge_checkpoint_options(state["opt"])
    except (ConfigError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    try:  # bad data (a wrong --dataroot, a truncated label file, ...) ends with one line, no traceback
        _, _, device = dist.init_distributed(opt.device)
        model = build_model(opt).to(device)
        model.load_state_dict(strip_module_prefix(state["model"]))
        dataset = build_dataset(opt, "val")
        metrics = evaluate(model, dataset, opt, device)
    except (UserError, ValueError) as e:
        sys.exit(f"error: {message(e)}")
    if dist.is_main():
        out_dir = opt.out_dir or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(opt.ckpt))), "eval")
        os.makedirs(out_dir, exist_ok=True)
        metrics["ckpt"] = os.path.abspath(opt.ckpt)
        metrics["step"] = state.get("step")
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1, default=lambda x: np.asarray(x).tolist())
        with open(os.path.join(out_dir, "metrics.md"), "w") as f:
            f.write(metrics["text"])
        print(metrics["text"])
        print(f"written to {out_dir}/metrics.json")
    dist.cleanup()


if __name__ == "__main__":
    main()
