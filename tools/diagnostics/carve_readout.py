"""Study: carve the read-out with the cameras' own rays through the saved opacity volumes (no label, no render).

A voxel read as occupied that most camera rays entering it cross while more than half of their light is still
left afterwards (transmittance after the voxel > 0.5: the ray's median termination lies behind it) is a
half-transparent layer in front of the surface the cameras see, not the surface: the rule frees it. Both 0.5s are
the median, not tuned. The rays go through the saved Occ3D-grid volume (``eval.py --save_pred``) from each camera
of the sample (its calibration from the nuScenes tables), one alpha per voxel a ray enters, as the splats are
composited; the volume above the label grid (a taller model volume) is not saved, so rays leaving through its top
see nothing more there, which frees nothing wrongly (what they cross below lies in front of whatever they meet).

    python -m tools.diagnostics.carve_readout --dataroot data/syn-kf16 --occ_root data/syn-kf16/gts \
        --pred logs/pred-default logs/pred-photo [--names default photo] [--out carve.md]

Prints mIoU* / geo IoU inside mask_camera AND mask_lidar for the saved read-out, with one ground voxel per column,
carved, and both.
"""
import argparse
import glob
import os

import numpy as np
import torch

from datasets.nuscenes_dataset import get, image_hw, load_tables, sample_sensor_data, sensor_pose
from utils.constants import CAMS, FREE_ID, OCC3D_LABEL_RANGE, OCC3D_VOXEL
from utils.occ_metrics import OccEvaluator, occ_eval_mask
from utils.occ_readout import thin_ground
from utils.pred_io import load_prediction


def sample_cameras(dataroot, version):
    """{sample token: [(K, cam2ego 4x4, (H, W)) in CAMS order]} of every keyframe, from the nuScenes-layout tables."""
    tables = load_tables(dataroot, version)
    out = {}
    for token, by_cam in sample_sensor_data(tables, CAMS).items():
        out[token] = [(np.asarray(get(tables, "calibrated_sensor", sd["calibrated_sensor_token"],
                                      f"sample_data {sd['token']}")["camera_intrinsic"], np.float64),
                       sensor_pose(tables, sd)[0], image_hw(dataroot, sd))
                      for sd in (by_cam[cam] for cam in CAMS)]
    return out


def carve(opacity, occupied, cams, stride=3, step=0.1, rmax=60.0, keep=0.5):
    """Bool (X, Y, Z): the occupied voxels that most rays entering them cross with transmittance > ``keep`` left.

    opacity: (X, Y, Z) float; occupied: bool, same shape; cams: [(K, cam2ego 4x4, (H, W))]."""
    o = torch.as_tensor(opacity, dtype=torch.float32)
    X, Y, Z = o.shape
    lo = torch.tensor(OCC3D_LABEL_RANGE[:3], dtype=torch.float32)
    enter = torch.zeros(X * Y * Z)
    passed = torch.zeros(X * Y * Z)
    ts = torch.arange(0.3, rmax, step)
    occ_flat = torch.as_tensor(np.asarray(occupied)).flatten()
    for K, M, (H, W) in cams:
        v, u = torch.meshgrid(torch.arange(stride / 2, H, stride), torch.arange(stride / 2, W, stride), indexing="ij")
        pix = torch.stack([u.flatten(), v.flatten(), torch.ones(u.numel())], -1).double()
        d = (torch.as_tensor(M[:3, :3]) @ torch.linalg.inv(torch.as_tensor(K)) @ pix.T).T
        d = (d / d.norm(dim=-1, keepdim=True)).float()
        pts = torch.as_tensor(M[:3, 3], dtype=torch.float32) + d[:, None] * ts[None, :, None]  # (R, S, 3)
        idx = ((pts - lo) / OCC3D_VOXEL).floor().long()
        inside = ((idx >= 0) & (idx < torch.tensor([X, Y, Z]))).all(-1)
        flat = (idx[..., 0].clamp(0, X - 1) * Y + idx[..., 1].clamp(0, Y - 1)) * Z + idx[..., 2].clamp(0, Z - 1)
        flat = torch.where(inside, flat, torch.full_like(flat, -1))
        new = torch.ones_like(inside)
        new[:, 1:] = flat[:, 1:] != flat[:, :-1]  # the first sample in each voxel a ray enters
        new &= flat >= 0
        a = torch.where(new, o.flatten()[flat.clamp(min=0)], torch.zeros(()))
        T_after = torch.cumprod(1 - a, dim=1)
        sel = new & occ_flat[flat.clamp(min=0)]
        enter.index_add_(0, flat[sel], torch.ones(int(sel.sum())))
        passed.index_add_(0, flat[sel], (T_after[sel] > keep).float())
    return ((enter > 0) & (passed > 0.5 * enter)).view(X, Y, Z).numpy()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-synthetic")
    p.add_argument("--occ_root", required=True)
    p.add_argument("--pred", nargs="+", required=True)
    p.add_argument("--names", nargs="*")
    p.add_argument("--stride", type=int, default=3, help="one ray every STRIDE pixels")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    cams = sample_cameras(a.dataroot, a.version)
    names = a.names or [os.path.basename(x.rstrip("/")) for x in a.pred]
    lines = ["| run | samples | as saved: mIoU* / geo IoU | thin ground | carved | thin ground + carved | "
             "voxels freed by carving (% of read-out) |", "|---|---:|---|---|---|---|---:|"]
    for name, folder in zip(names, a.pred):
        ev = {k: OccEvaluator() for k in ("saved", "thin", "carved", "both")}
        freed, total, n = 0, 0, 0
        for f in sorted(glob.glob(os.path.join(folder, "*.npz"))):
            pr = load_prediction(f)
            with np.load(os.path.join(a.occ_root, pr["scene"], pr["token"], "labels.npz")) as z:
                gt, mask = z["semantics"], occ_eval_mask(z["mask_camera"], z["mask_lidar"], "camera_lidar")
            occ = pr["occupancy"]
            c = carve(pr["opacity"], occ != FREE_ID, cams[pr["token"]], a.stride)
            thin = thin_ground(torch.as_tensor(occ), torch.as_tensor(pr["opacity"])).numpy()
            carved = np.where(c, FREE_ID, occ).astype(np.uint8)
            both = np.where(c, FREE_ID, thin).astype(np.uint8)
            for k, v in (("saved", occ), ("thin", thin), ("carved", carved), ("both", both)):
                ev[k].update(v, gt, mask)
            freed += int(c.sum())
            total += int((occ != FREE_ID).sum())
            n += 1
        s = {k: e.summary() for k, e in ev.items()}
        cell = lambda k: f"{s[k]['mIoU_star']:.2f} / {s[k]['geo_IoU']:.2f}"  # noqa: E731
        lines.append(f"| {name} | {n} | {cell('saved')} | {cell('thin')} | {cell('carved')} | {cell('both')} | "
                     f"{100 * freed / max(total, 1):.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
