"""Stage-1 loss landscape on REAL keyframes: does the cross-view (GSP) loss know the metric scale on real images?

The synthetic landscape (``tools/diagnostics/gsp_landscape.py``) has exact dense depth. A real nuScenes keyframe has
sparse LiDAR; this tool takes a dense depth from the keyframe's LiDAR-derived occupancy labels instead (each pixel's
ray marched through the labels to the first occupied voxel: ``tools/data/make_occ_gt_nusc.py`` makes them), checks
that depth against the LiDAR points (median ratio, AbsRel), and evaluates for a global factor s applied to it:

  gsp_<mask>   the cross-view loss of stage 1 (utils/gsp.py), pixels without a depth left out: smallest at s = 1 if
               the cross-view term carries the metric scale on these cameras
  temporal_gt  the temporal loss to the previous / next keyframe with depth x s and the RECORDED motion: smallest
               near s = 1 when the depth source is right (the check of the depth itself)
  temporal     the same with the translation x s too: flat (the ambiguity GSP has to remove)

  python -m tools.diagnostics.gsp_landscape_real --dataroot ../shared/fixtures/nuscenes-scene-0916 \
      --version v1.0-mini --occ_root gts_lidar --depth_root depth_gt --samples 5 10 20 30 --out_dir logs/landscape-real

``--depth_source model --ckpt <stage-1 checkpoint>``: the same curves around the depth a trained stage 1 predicts
(its median ratio to the LiDAR is the column "depth / LiDAR: median ratio"): an argmin of the cross-view term at s = 1 says the
term is content with the learnt scale, at 1 / ratio that it pulls toward the LiDAR's scale.

Writes landscape.json / .md (per sample and the mean over samples) and landscape.png.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import options
from datasets import build_dataset
from rebuild import load_stage1
from tools.diagnostics.gsp_landscape import SCALES, plot
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE
from utils.geometry import capture_synced_cam2ego, recorded_ego_motion, rel_cam_pose, warp
from utils.gsp import cross_view_loss
from utils.losses import photometric_error, reprojection_loss
from utils.rasterizer import rasterize


def occupancy_depth(labels, K, cam2ego, hw, step=0.05, max_dist=60.0, grid_range=OCC3D_LABEL_RANGE,
                    free_id=FREE_ID, chunk=1 << 16, with_class=False):
    """(S, H, W) camera depth (z, metres) of the first non-free voxel of ``labels`` (X, Y, Z) along each pixel's
    ray, sampled every ``step`` metres up to ``max_dist``; 0 where the ray leaves the grid or meets nothing. With
    ``with_class`` also (S, H, W) int64: that voxel's label, ``free_id`` where the ray meets nothing."""
    h, w = hw
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    shape = torch.tensor(lab.shape)
    lo = torch.tensor(grid_range[:3], dtype=torch.float64)
    size = (torch.tensor(grid_range[3:], dtype=torch.float64) - lo) / shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    ts = torch.arange(step, max_dist, step, dtype=torch.float64)
    out = torch.zeros(len(K), h * w, dtype=torch.float64)
    cls = torch.full((len(K), h * w), free_id, dtype=torch.int64)
    for c in range(len(K)):
        d_cam = pix @ torch.linalg.inv(K[c].double()).T  # z = 1
        R, t = cam2ego[c, :3, :3].double(), cam2ego[c, :3, 3].double()
        norm = d_cam.norm(dim=1, keepdim=True)
        d_ego = (d_cam / norm) @ R.T  # unit directions in the ego frame
        for a in range(0, len(d_ego), chunk):
            pts = t + ts[None, :, None] * d_ego[a:a + chunk, None, :]  # (R, T, 3)
            idx = torch.floor((pts - lo) / size).long()
            inside = ((idx >= 0) & (idx < shape)).all(-1)
            idx = torch.minimum(idx.clamp(min=0), shape - 1)
            val = lab[idx[..., 0], idx[..., 1], idx[..., 2]]
            occ = inside & (val != free_id)
            hit = occ.any(1)
            first = occ.float().argmax(1)
            dist = ts[first]
            out[c, a:a + chunk] = torch.where(hit, dist / norm[a:a + chunk, 0], torch.zeros_like(dist))
            if with_class:
                first_val = val.gather(1, first[:, None])[:, 0]
                cls[c, a:a + chunk] = torch.where(hit, first_val, torch.full_like(first_val, free_id))
    depth = out.reshape(len(K), h, w).float()
    return (depth, cls.reshape(len(K), h, w)) if with_class else depth


def lidar_points(lidar_map, hw):
    """The LiDAR points of one (H, W) depth map at the original image size: their depths and the (row, column) of the
    (h, w) grid's pixel each falls on (pixel centres at integer coordinates in both)."""
    v, u = torch.nonzero(lidar_map > 0, as_tuple=True)
    H, W = lidar_map.shape
    uu = torch.clamp((u.float() + 0.5) * hw[1] / W - 0.5, 0, hw[1] - 1).round().long()
    vv = torch.clamp((v.float() + 0.5) * hw[0] / H - 0.5, 0, hw[0] - 1).round().long()
    return lidar_map[v, u], vv, uu


def lidar_depth(lidar, hw):
    """(S, h, w) the nearest LiDAR point of each pixel of an (h, w) grid (0 where none), from the (S, H, W) LiDAR depth
    maps at the original image size: a sparse depth with no quantisation error."""
    out = torch.zeros((len(lidar),) + tuple(hw))
    for c in range(len(lidar)):
        z, vv, uu = lidar_points(lidar[c], hw)
        flat = torch.full((hw[0] * hw[1],), float("inf"))
        flat.scatter_reduce_(0, vv * hw[1] + uu, z, reduce="amin")
        out[c] = torch.where(torch.isinf(flat), torch.zeros_like(flat), flat).reshape(hw)
    return out


def lidar_check(dense, lidar, hw):
    """Median ratio occupancy depth / LiDAR and AbsRel of the occupancy depth, at the LiDAR points (of the
    original image size) that fall on a pixel of ``dense`` with a depth."""
    ratios = []
    for c in range(len(dense)):
        z, vv, uu = lidar_points(lidar[c], hw)
        d = dense[c][vv, uu]
        keep = (d > 0) & (z < 60)
        ratios.append(d[keep] / z[keep])
    r = torch.cat(ratios)
    return {"lidar_points": int(len(r)), "median_ratio": float(r.median()), "abs_rel": float((r - 1).abs().mean())}


def model_depth(model, imgs, size):
    """(S, H, W) depth of a stage-1 model's depth net for the current frame of ``imgs`` (F, S, 3, h, w), predicted at
    the model's own input size and resized to ``size`` through the inverse depth: the depth training works with."""
    in_size = tuple(getattr(model.opt, "input_size", imgs.shape[-2:]))
    x = F.interpolate(imgs[1], in_size, mode="bilinear", align_corners=False, antialias=True)  # the current frame
    with torch.no_grad():
        d = model.depth_outputs(x[None])["depth"][:, 0]  # (S, h', w'): predict_depth of one sample
    return 1.0 / F.interpolate(1.0 / d[:, None].clamp(min=1e-3), tuple(size), mode="bilinear",
                               align_corners=False)[:, 0]


def affine_loss(render, target, mask):
    """The cross-view error after matching each camera pair's brightness: per pair and colour channel the render is
    mapped by the least-squares gain and offset onto the target over the pair's mask (the cameras' exposure and white
    balance differ; the synthetic cameras' do not). render / target (S, T, 3, H, W), mask (S, T, 1, H, W)."""
    m = mask.float()
    n = m.sum(dim=(-1, -2), keepdim=True).clamp(min=1.0)
    mr, mt = (render * m).sum((-1, -2), keepdim=True) / n, (target * m).sum((-1, -2), keepdim=True) / n
    cov = ((render - mr) * (target - mt) * m).sum((-1, -2), keepdim=True)
    var = ((render - mr) ** 2 * m).sum((-1, -2), keepdim=True).clamp(min=1e-6)
    gain = (cov / var).clamp(0.5, 2.0)
    adj = ((render - mr) * gain + mt).clamp(0, 1)
    err = photometric_error(adj.flatten(0, 1), target.flatten(0, 1)).unflatten(0, mask.shape[:2])
    return float((err * m).sum() / m.sum().clamp(min=1.0))


def capture_rig(item):
    """(S, 4, 4) each camera where it was at its capture time, from the item's recorded keyframe motion and cam_time:
    what --gsp_sync gives stage 1 when its motion is right."""
    motion = recorded_ego_motion(item["ego2global"][None].double())
    return capture_synced_cam2ego(item["cam2ego"][None].double(), motion, item["cam_time"][None].double())[0].float()


def landscape_real(item, depth, scales=SCALES, gs_scale=0.05, erode=4, masks=("rendered", "geometric"), rig=None):
    """Loss values per scale for one item (``imgs`` (F, S, 3, H, W) with frames prev / cur / next); ``rig`` (S, 4, 4):
    the camera poses of the cross-view term (default: the calibration, ``cam2ego``)."""
    imgs = item["imgs"]
    K, c2e = item["K"], item["cam2ego"]
    rig = c2e if rig is None else rig
    has = depth > 0  # (S, H, W) pixels with a depth: the only ones that make Gaussians or count in a loss
    res = {"scales": list(scales)}
    far = torch.where(has, depth, torch.ones_like(depth))  # placeholder where invalid (no Gaussian)
    for mask in masks:
        vals, vals_affine = [], []
        for s in scales:
            loss, d = cross_view_loss((far * s)[None, :, None], imgs[1][None], torch.full_like(far, gs_scale)[None, :, None],
                                      K[None], rig[None], lambda *a, **k: rasterize(*a, backend="torch", **k),
                                      erode, valid=has[None, :, None].float(), mask_mode=mask)
            vals.append(float(loss))
            vals_affine.append(affine_loss(d["render"][0], d["target"][0], d["mask"][0]))
        res[f"gsp_{mask}"] = vals
        res[f"gsp_{mask}_affine"] = vals_affine
    E = item["ego2global"].double()  # (3, 6, 4, 4): previous / current / next, each camera on its own clock
    res["translation_m"] = [float((torch.linalg.inv(E[k, 0]) @ E[1, 0])[:3, 3].norm()) for k in (0, 2)]
    for name, scale_t in (("temporal_gt", False), ("temporal", True)):
        vals = []
        for s in scales:
            warped, ok = [], []
            for k in (0, 2):
                T = rel_cam_pose(c2e.double(), E[1], E[k]).float()  # current camera -> the same camera at frame k
                if scale_t:
                    T[:, :3, 3] *= s
                wp, v = warp(imgs[k], (far * s)[:, None], K, T)
                warped.append(wp)
                ok.append(v & has[:, None])
            vals.append(float(reprojection_loss(imgs[1], warped, [imgs[0], imgs[2]], ok,
                                                target_mask=has[:, None])[0]))
        res[name] = vals
    return res


def argmin_scale(res, key):
    return res["scales"][int(np.argmin(res[key]))]


def add_data_args(p, samples):
    """The real-keyframe diagnostics' data options: a nuScenes-format root with LiDAR depth and occupancy labels."""
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", default="v1.0-mini")
    p.add_argument("--occ_root", default="gts_lidar")
    p.add_argument("--depth_root", default="depth_gt")
    p.add_argument("--samples", type=int, nargs="+", default=list(samples), help="item indices (keyframes)")
    p.add_argument("--size", type=int, nargs=2, default=(112, 176), metavar=("H", "W"))
    p.add_argument("--val_split", default=None, help="a token file (e.g. the synthetic set's splits/val.txt: the same "
                   "measurement on synthetic keyframes through the same pipeline)")


def keyframe_dataset(a, occupancy=True, depth=True, extra=()):
    """The validation items of ``add_data_args``' options at --size, keyframe neighbours (the occupancy labels read
    only with ``occupancy``, the LiDAR depth only with ``depth``; ``extra``: more dataset options)."""
    occ = ["--occ_root", a.occ_root] if occupancy else []
    lidar = ["--depth_root", a.depth_root] if depth else []
    opt = options.parse_args(["--stage", "gsp", "--dataset", "nuscenes", "--dataroot", a.dataroot, "--version",
                              a.version, *occ, *lidar, "--adjacent", "keyframe",
                              "--input_size", str(a.size[0]), str(a.size[1]),
                              *(["--val_split", a.val_split] if a.val_split else []), *extra])
    return build_dataset(opt, "val")


def items(p, a, ds):
    """(index, item) of --samples, a clear error for an index the dataset does not have."""
    for i in a.samples:
        if not 0 <= i < len(ds):
            p.error(f"--samples: {i} is not an item of the {len(ds)} there are")
        yield i, ds[i]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p, (5, 15, 25, 35))
    p.add_argument("--gs_scale", type=float, default=0.05, help="pixel Gaussian scale, metres")
    p.add_argument("--depth_source", default="occupancy", choices=["occupancy", "lidar", "model"],
                   help="occupancy: dense, marched through the labels; lidar: the nearest LiDAR point of each pixel "
                        "(sparse, exact; use a larger --gs_scale so that its splats cover the gaps); model: the depth "
                        "net of the stage-1 checkpoint --ckpt (where does the cross-view term put the scale of the "
                        "depth training has learnt?)")
    p.add_argument("--ckpt", default=None, help="stage-1 checkpoint (--depth_source model)")
    p.add_argument("--rig", default="calibration", choices=["calibration", "capture"],
                   help="camera poses of the cross-view term: the calibration alone, or each camera where it was at "
                        "its capture time (the recorded keyframe motion spread over the cameras' time offsets: what "
                        "--gsp_sync gives stage 1 when its motion is right)")
    p.add_argument("--out_dir", default="logs/landscape-real")
    a = p.parse_args(argv)
    if (a.depth_source == "model") != bool(a.ckpt):
        p.error("--ckpt PATH goes with --depth_source model (and only with it)")
    ds = keyframe_dataset(a, occupancy=a.depth_source == "occupancy")  # labels read only to march through
    model = load_stage1(a.ckpt) if a.depth_source == "model" else None
    rows, per = [], []
    for i, item in items(p, a, ds):
        if a.depth_source == "occupancy":
            depth = occupancy_depth(item["occ_semantics"].numpy(), item["K"], item["cam2ego"], a.size)
        elif a.depth_source == "model":
            depth = model_depth(model, item["imgs"], a.size)
        else:
            depth = lidar_depth(item["depth_gt"], a.size)
        chk = lidar_check(depth, item["depth_gt"], a.size)
        rig = capture_rig(item) if a.rig == "capture" else None
        res = landscape_real(item, depth, gs_scale=a.gs_scale, rig=rig)
        res.update(chk, index=i, token=item["token"], depth_coverage=float((depth > 0).float().mean()))
        per.append(res)
        rows.append(f"| {i} | {res['translation_m'][0]:.2f} / {res['translation_m'][1]:.2f} | "
                    f"{res['depth_coverage']:.2f} | {chk['median_ratio']:.3f} ({chk['abs_rel']:.3f}) | "
                    + " | ".join(f"{argmin_scale(res, k)}" for k in ("gsp_rendered", "gsp_rendered_affine", "gsp_geometric", "gsp_geometric_affine", "temporal_gt"))
                    + " |")
        print(rows[-1], flush=True)
    keys = [k for k in per[0] if isinstance(per[0][k], list) and k not in ("scales", "translation_m")]
    mean = {"scales": list(SCALES), **{k: [float(np.mean([r[k][j] for r in per])) for j in range(len(SCALES))]
                                         for k in keys}}
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "landscape.json").write_text(json.dumps({"samples": per, "mean": mean}, indent=1))
    plot(mean, out / "landscape.png")
    md = ["| item | recorded motion to prev / next (m) | pixels with a depth | depth / LiDAR: median ratio "
          "(AbsRel) | argmin s: GSP rendered | same, brightness matched | GSP geometric | same, brightness matched | temporal, recorded motion |",
          "|---:|---|---:|---|---:|---:|---:|---:|---:|", *rows, "",
          "Mean over the samples (loss at each s):", "",
          "| s | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    md += [f"| {s} | " + " | ".join(f"{mean[k][j]:.4f}" for k in keys) + " |" for j, s in enumerate(SCALES)]
    (out / "landscape.md").write_text("\n".join(md) + "\n")
    print("\n".join(md[len(rows) + 2:]))
    print(f"wrote {out}/landscape.json, .md, .png")


if __name__ == "__main__":
    main()
