"""The stage-2 network trained on the occupancy labels themselves: what its architecture can learn and carry to
streets it has not seen when the supervision is perfect (an oracle of the criterion, not a method).

Stage 2 learns from renders; when its held-out occupancy plateaus (docs/results.md, rounds 6-8: mIoU* 18-22, geo IoU
36-40) the question is whether the criterion or the network is the limit. Here the network (``networks.occ_net``,
any of its options, e.g. ``--lift_geometry``) is trained with a cross-entropy on the Occ3D labels (17 classes + free)
inside mask_camera of the TRAINING streets (on the GPU when there is one, bf16 with ``--amp bf16``), its logits
sampled at the Occ3D voxel centres as eval.py reads them (``networks.gsv_model.occ3d_readout``: any model grid),
then scored on the held-out streets with the read-out ``argmax`` (the free channel competes with the classes) by
``utils.occ_metrics.OccEvaluator`` inside the ``--occ_eval_mask`` mask. One JSON line per run (options, losses every
``--log_every_sup`` steps, mIoU*, geo IoU, per class IoU).

    python -m tools.diagnostics.occ_supervised --config configs/quick-gsv.txt --dataroot data/syn-kf16 \\
        --train_split data/syn-kf16/splits/train.txt --val_split data/syn-kf16/splits/val.txt \\
        --sup_steps 300 --sup_out logs/occ_sup.jsonl --sup_name base [network options, e.g. --lift_geometry bins]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from datasets.nuscenes_dataset import NuScenesDataset
from networks.gsv_model import occ3d_sample
from networks.occ_net import OccNet
from options import parse_args
from utils.batch import to_device
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE
from utils.occ_metrics import OccEvaluator, occ_eval_mask
from utils.pred_io import save_prediction


def occ3d_logits(logits, grid, zmin=OCC3D_LABEL_RANGE[2]):
    """logits (B, C+1, X, Y, Z) on ``grid`` read at the Occ3D voxel centres as eval.py reads them
    (``networks.gsv_model.occ3d_sample``): (B, C+1, 200, 200, 16), differentiable."""
    return occ3d_sample(logits, grid, zmin)[0]


def supervised_loss(logits, semantics, mask_camera):
    """Cross-entropy of (B, C+1, 200, 200, 16) Occ3D-aligned logits (last channel = free) against Occ3D labels
    (B, 200, 200, 16) (17 = free) inside mask_camera (the voxels a camera sees)."""
    n = logits.shape[1]
    labels = torch.where(semantics.long() == FREE_ID, n - 1, semantics.long())
    labels = torch.where((mask_camera > 0) & (labels < n), labels, torch.full_like(labels, -100))
    return F.cross_entropy(logits.float(), labels, ignore_index=-100)


def predict_classes(logits):
    """Occ3D ids (B, 200, 200, 16) uint8 of Occ3D-aligned logits: argmax over C+1, the last -> FREE_ID."""
    a = logits.argmax(1)
    return torch.where(a == logits.shape[1] - 1, torch.full_like(a, FREE_ID), a).to(torch.uint8)


def loader(opt, split, shuffle):
    ds = NuScenesDataset(opt, split, eval_labels=True)
    ds.load_depth = False  # labels only (the training streets have no exported LiDAR depth)
    return torch.utils.data.DataLoader(ds, batch_size=1, shuffle=shuffle, num_workers=opt.num_workers,
                                       drop_last=shuffle)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=False)
    p.add_argument("--sup_steps", type=int, default=300)
    p.add_argument("--sup_minutes", type=float, default=0, help="also stop training after this long (0 = no limit)")
    p.add_argument("--sup_lr", type=float, default=1e-3)
    p.add_argument("--sup_out", required=True, help="JSON lines file (appended)")
    p.add_argument("--sup_name", default="run")
    p.add_argument("--sup_eval_max", type=int, default=0, help="held-out samples scored (0 = all)")
    p.add_argument("--log_every_sup", type=int, default=25)
    p.add_argument("--sup_save_pred", default=None, metavar="DIR",
                   help="also write each held-out sample's volume to DIR/<token>.npz (utils/pred_io.py; opacity = "
                        "1 - p(free)) for tools/diagnostics/occ_errors.py")
    own, rest = p.parse_known_args(argv)
    opt = parse_args(["--stage", "gsv", "--pose", "gt"] + rest)
    torch.manual_seed(opt.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = OccNet(opt).to(dev)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda" and opt.amp == "bf16")
    optim = torch.optim.Adam(net.parameters(), lr=own.sup_lr)
    train = loader(opt, "train", True)
    log, t0, step = [], time.time(), 0
    net.train()
    while step < own.sup_steps:
        for batch in train:
            batch = to_device(batch, dev)
            with torch.autocast(**amp):
                logits = occ3d_logits(net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])["logits"], net.grid)
            loss = supervised_loss(logits, batch["occ_semantics"], batch["occ_mask_camera"])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"occ_supervised: loss {loss.item()} at step {step}")
            optim.zero_grad()
            loss.backward()
            optim.step()
            step += 1
            if step % own.log_every_sup == 0 or step == own.sup_steps:
                log.append({"step": step, "loss": round(loss.item(), 5), "s": round(time.time() - t0, 1)})
                print(f"[occ_supervised] {own.sup_name} step {step} loss {loss.item():.4f}", flush=True)
            if own.sup_minutes and time.time() - t0 > 60 * own.sup_minutes:
                own.sup_steps = step  # the clock ends it
            if step >= own.sup_steps:
                break
    net.eval()
    ev, ev_train = OccEvaluator(), OccEvaluator()
    with torch.no_grad():
        for split, e in (("val", ev), ("train", ev_train)):
            for i, batch in enumerate(loader(opt, split, False)):
                if own.sup_eval_max and i >= own.sup_eval_max:
                    break
                batch = to_device(batch, dev)
                with torch.autocast(**amp):
                    logits = occ3d_logits(net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])["logits"], net.grid)
                pred = predict_classes(logits.float()).cpu()
                if split == "val" and own.sup_save_pred:
                    prob = logits.float().softmax(1)
                    occupied = (1 - prob[:, -1]).cpu().numpy()
                    sem = prob[:, :-1].argmax(1).to(torch.uint8).cpu().numpy()
                    for b in range(len(pred)):
                        save_prediction(own.sup_save_pred, batch["token"][b], batch["scene"][b], occupied[b],
                                        sem[b], pred[b].numpy())
                batch = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
                for b in range(len(pred)):
                    mask = occ_eval_mask(batch["occ_mask_camera"][b], batch["occ_mask_lidar"][b], opt.occ_eval_mask)
                    e.update(pred[b], batch["occ_semantics"][b], mask)
    res, res_train = ev.summary(), ev_train.summary()
    device = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    row = {"name": own.sup_name, "options": rest, "device": device, "steps": step,
           "seconds": round(time.time() - t0, 1),
           "mIoU_star": res["mIoU_star"], "geo_IoU": res["geo_IoU"], "IoU": res["IoU"],
           "train_mIoU_star": res_train["mIoU_star"], "train_geo_IoU": res_train["geo_IoU"], "log": log}
    os.makedirs(os.path.dirname(os.path.abspath(own.sup_out)), exist_ok=True)
    with open(own.sup_out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"[occ_supervised] {own.sup_name}: held out mIoU* {res['mIoU_star']:.2f} geo IoU {res['geo_IoU']:.2f}; "
          f"training streets ({own.sup_eval_max or 'all'} samples) mIoU* {res_train['mIoU_star']:.2f} geo IoU "
          f"{res_train['geo_IoU']:.2f}")
    return row


if __name__ == "__main__":
    main()
