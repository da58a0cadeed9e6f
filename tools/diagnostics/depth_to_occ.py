"""Depth-only occupancy oracle: the geo IoU a volume built from depth maps alone reaches, and how fast it falls
with depth error (no network, CPU).

For synthetic keyframes, the exact ranges of the 6 cameras (the generator's ray caster) at a render size,
optionally corrupted, become an Occ3D volume the way a depth-only method builds one: each pixel's ray is walked
through the label grid (``utils.voxel_walk.VoxelWalk``); the voxel where it ends counts a hit, every voxel it
crosses before counts a pass; a ray that leaves the grid first (sky, surfaces beyond 40 m) only passes. A voxel's
hit ratio hits / (hits + passes) is the opacity that explains the depth maps best (the share of the rays entering
it that end in it). Read-outs: ``any``: a voxel with a hit is occupied, every other voxel free (unobserved voxels
are free, as the model's read-out treats them); hit ratio >= t for each t of ``THRESHOLDS`` (0.5: at least as many
hits as passes, free-space carving); "best" is the best t per row over all keyframes (an upper bound). Scored
against the exact labels inside mask_camera AND mask_lidar by ``utils.occ_metrics.OccEvaluator`` (one confusion
matrix over all keyframes): geo IoU, and precision / recall of occupied voxels (recall also of the ground classes
and of the rest). Geo IoU, precision and recall are of the ``any`` read-out. Recall of exact depth under
``any`` is the resolution ceiling: the share of occupied evaluated voxels in which some pixel's ray ends.

Rows (``--rows``, ``kind[:level][@frames]``), each at every ``--hw`` size:
  exact      the ray caster's ranges
  pixel:A    a per-pixel factor exp(s e), e ~ N(0, 1), s such that E|factor - 1| = A (median 1: no scale bias)
  smooth:A   the same with e a white field low-pass filtered by a Gaussian of ``--smooth_px`` pixels at width 320
             (scaled with the width: the same angle at every size), renormalised to unit std per camera
  scale:F    one global factor F
  metres:S   a per-pixel error N(0, S^2) metres along the ray (a fixed error, not relative)
  ...@3      also the previous and next 12 Hz camera sweeps (t -+ 1/12 s, their own noise) in the keyframe's ego
             frame (3 depth maps per camera)
A factor multiplies camera z and the range along the ray alike. The AbsRel column is measured on the corrupted
maps (the keyframe's, dense, 0.1 < z < 80 m, no median scaling: ``utils.metrics.compute_depth_errors``).

    python -m tools.diagnostics.depth_to_occ --scenes 6 7 --frames 12 --keyframes 2 6 10 --threads 2 \\
        --out logs/depth_to_occ.jsonl --md logs/depth_to_occ.md

Results: docs/results/depth_to_occ.md.
"""
import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.optimize import brentq
from scipy.special import erf

from datasets.synthetic import rig
from datasets.synthetic.frame import cast_cameras, occ3d_labels
from datasets.synthetic.scene import SAMPLE_DT, make_scene
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL, OCC_CLASSES
from utils.metrics import compute_depth_errors
from utils.occ_metrics import OccEvaluator, occ_eval_mask
from utils.voxel_walk import VoxelWalk

SWEEP_DT = 1 / 12  # seconds between camera sweeps (12 Hz)
THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)  # hit ratio read-outs; 0: any hit
DEFAULT_ROWS = ["exact", "pixel:0.02", "pixel:0.05", "pixel:0.1", "pixel:0.18", "pixel:0.25", "smooth:0.02",
                "smooth:0.05", "smooth:0.1", "smooth:0.18", "smooth:0.25", "scale:0.95", "scale:1.05", "metres:0.1",
                "metres:0.2", "metres:0.4", "exact@3", "pixel:0.18@3", "smooth:0.18@3"]
GROUND = ("driveable_surface", "other_flat", "sidewalk", "terrain")
KINDS = ("exact", "pixel", "smooth", "scale", "metres")
DEPTH_RANGE = (0.1, 80.0)  # pixels the AbsRel column averages over, as eval.py's depth metric


def parse_row(spec):
    """'kind[:level][@frames]' -> (kind, level or None, frames 1 or 3)."""
    body, _, frames = spec.partition("@")
    kind, _, level = body.partition(":")
    frames = int(frames) if frames else 1
    if kind not in KINDS or frames not in (1, 3) or (kind == "exact") != (level == ""):
        raise ValueError(f"row {spec!r}: expected exact, pixel:A, smooth:A, scale:F or metres:S, optionally @3")
    return kind, float(level) if level else None, frames


def sigma_for_absrel(a):
    """s with E|exp(s e) - 1| = a for e ~ N(0, 1); that mean is exp(s^2 / 2) erf(s / sqrt 2), rising in s."""
    return brentq(lambda s: np.exp(s * s / 2) * erf(s / np.sqrt(2)) - a, 0.0, 5.0)


def depth_factor(kind, level, ranges, rng, smooth_px=20.0):
    """(6, h, w) multiplicative depth error of one row for the 6 depth maps of one frame of ``ranges`` (6, h, w)
    metres along the rays (inf: sky, which stays sky)."""
    shape = ranges.shape
    if kind == "exact":
        return np.ones(shape)
    if kind == "scale":
        return np.full(shape, level)
    e = rng.standard_normal(shape)
    if kind == "metres":
        return np.where(np.isfinite(ranges), np.maximum(1 + level * e / ranges, 1e-3), 1.0)
    if kind == "smooth":
        sigma = smooth_px * shape[2] / 320
        e = np.stack([gaussian_filter(c, sigma, mode="reflect") for c in e])
        e = (e - e.mean((1, 2), keepdims=True)) / e.std((1, 2), keepdims=True)
    return np.exp(sigma_for_absrel(level) * e)


def camera_rays(world, ref, pose, h, w):
    """Exact rays of the 6 cameras at ego pose ``pose``, in the ego frame of ego pose ``ref`` (both (4, 4) ego ->
    global, float64): origins (6, 3), unit directions (6, h * w, 3), camera z per metre of range (6, h * w), range
    (6, h * w) metres (inf: nothing within the caster's range, i.e. sky)."""
    T = np.linalg.inv(ref) @ pose
    origins, dirs, zper, ranges = [], [], [], []
    for c2e, (_, rays, _, hit) in zip(rig.cam2ego(), cast_cameras(world, pose, h, w)):
        c2r = T @ c2e
        origins.append(c2r[:3, 3])
        dirs.append(rays @ c2r[:3, :3].T)
        zper.append(rays[:, 2])
        ranges.append(hit["t"])
    return np.stack(origins), np.stack(dirs), np.stack(zper), np.stack(ranges)


def depth_volume(origins, dirs, ranges):
    """Hits and passes (200, 200, 16) int64 of rays from ``origins`` (R, 3) or (3,) inside the Occ3D label grid
    along unit ``dirs`` (R, 3) ending at ``ranges`` (R,) metres (inf: no end), ego frame. The voxel that holds a
    ray's end counts one hit (the nearer voxel when the end lies on a face), every voxel the ray crosses before it
    one pass; a ray that leaves the grid before its end only passes. Rays that start outside the grid are dropped."""
    shape = np.array(OCC3D_SHAPE)
    pad = shape + 2  # a one-voxel border: a ray that steps into it has left the grid
    strides = np.array([pad[1] * pad[2], pad[2], 1])
    inside = np.zeros(pad, bool)
    inside[1:-1, 1:-1, 1:-1] = True
    inside = inside.reshape(-1)
    lo = np.array(OCC3D_LABEL_RANGE[:3])
    dirs = np.asarray(dirs, np.float64).reshape(-1, 3)
    o = np.broadcast_to(np.asarray(origins, np.float64), dirs.shape)
    t_end = np.asarray(ranges, np.float64).reshape(-1)
    ijk = np.floor((o - lo) / OCC3D_VOXEL)
    ok = ((ijk >= 0) & (ijk < shape)).all(1) & (t_end > 0)
    walk = VoxelWalk(o[ok], dirs[ok], lo, OCC3D_VOXEL, strides, offset=1)
    t_end = t_end[ok]
    hits = np.zeros(inside.size, np.int64)
    passes = np.zeros(inside.size, np.int64)
    while len(walk.flat):
        end = walk.exit_distance() >= t_end
        hits += np.bincount(walk.flat[end], minlength=inside.size)
        passes += np.bincount(walk.flat[~end], minlength=inside.size)
        walk.advance(walk.axis())
        (t_end,) = walk.keep(~end & inside[walk.flat], t_end)
    crop = lambda a: a.reshape(pad)[1:-1, 1:-1, 1:-1]  # noqa: E731
    return crop(hits), crop(passes)


def read_out(hits, passes, t):
    """(200, 200, 16) uint8 class ids: 0 ('others') where some ray ends and the hit ratio is >= t, FREE_ID
    elsewhere."""
    occ = (hits > 0) & (hits >= t * (hits + passes))
    return np.where(occ, 0, FREE_ID).astype(np.uint8)


def occupied_scores(ev):
    """geo IoU, precision and recall of occupied voxels (percent), the voxel counts, the recall of the ground
    classes (``GROUND``) and of the other classes, and per class present [occupied voxels found, evaluated], of an
    OccEvaluator."""
    h = ev.hist.numpy().astype(np.int64)
    tp, gt, pred = h[:FREE_ID, :FREE_ID].sum(), h[:FREE_ID].sum(), h[:, :FREE_ID].sum()
    found, total = h[:FREE_ID, :FREE_ID].sum(1), h[:FREE_ID].sum(1)  # per GT class
    ground = np.isin(np.arange(FREE_ID), [OCC_CLASSES.index(c) for c in GROUND])
    pct = lambda a, b: float(100 * a / b) if b else float("nan")  # noqa: E731
    return dict(geo_iou=ev.summary()["geo_IoU"], precision=pct(tp, pred), recall=pct(tp, gt),
                recall_ground=pct(found[ground].sum(), total[ground].sum()),
                recall_objects=pct(found[~ground].sum(), total[~ground].sum()),
                tp=int(tp), fp=int(pred - tp), fn=int(gt - tp), n_eval=int(h.sum()),
                by_class={OCC_CLASSES[c]: [int(found[c]), int(total[c])] for c in range(FREE_ID) if total[c]})


def frame_poses(world, k, frames):
    """Ego poses (4, 4) of the depth maps of a row: the keyframe's, with 3 frames also the camera sweeps 1/12 s
    before and after it."""
    dts = (0.0,) if frames == 1 else (0.0, -SWEEP_DT, SWEEP_DT)
    return list(world.ego_pose([k * SAMPLE_DT + dt for dt in dts]))


def keyframe(seed, scene, frames, k, sizes, rows, smooth_px=20.0):
    """Every row of ``rows`` at every (h, w) of ``sizes`` on keyframe ``k`` of street (seed, scene); ``sizes`` may
    carry a third item, a tuple of the only rows to run there. Returns {(row, (h, w), t): OccEvaluator} for every
    t of THRESHOLDS and {(row, (h, w)): AbsRel of the keyframe's corrupted depth}."""
    torch.set_num_threads(1)
    world = make_scene(seed, scene, frames)
    lab = occ3d_labels(world, k)
    mask = occ_eval_mask(lab["mask_camera"], lab["mask_lidar"])
    ref = world.ego2global[k]
    evals, absrel = {}, {}
    for h, w, *only in sizes:
        size_rows = [r for r in rows if not only or r in only[0]]
        n_max = max(parse_row(r)[2] for r in size_rows)
        cams = [camera_rays(world, ref, pose, h, w) for pose in frame_poses(world, k, n_max)]
        for spec in size_rows:
            kind, level, n = parse_row(spec)
            rng = np.random.default_rng([seed, scene, k, h, rows.index(spec)])
            o_all, d_all, t_all = [], [], []
            for i, (origins, dirs, zper, ranges) in enumerate(cams[:n]):
                f = depth_factor(kind, level, ranges.reshape(6, h, w), rng, smooth_px).reshape(6, -1)
                if i == 0:
                    z = ranges * zper  # camera z; inf: sky
                    valid = (z > DEPTH_RANGE[0]) & (z < DEPTH_RANGE[1])
                    absrel[(spec, (h, w))] = compute_depth_errors(
                        z[valid], np.clip(z[valid] * f[valid], *DEPTH_RANGE))["abs_rel"]
                o_all.append(np.repeat(origins, h * w, 0))
                d_all.append(dirs.reshape(-1, 3))
                t_all.append((ranges * f).reshape(-1))
            hits, passes = depth_volume(np.concatenate(o_all), np.concatenate(d_all), np.concatenate(t_all))
            for t in THRESHOLDS:
                ev = OccEvaluator()
                ev.update(read_out(hits, passes, t), lab["semantics"], mask)
                evals[(spec, (h, w), t)] = ev
    return evals, absrel


def _job(args):
    t0 = time.time()
    out = keyframe(*args)
    return args, out, time.time() - t0


def table(evals, absrel, keys):
    """Markdown: one line per (row, (h, w)) of ``keys``, over all keyframes."""
    lines = ["| depth | size | AbsRel | geo IoU | precision | recall | recall ground | recall objects | "
             "IoU, hit ratio >= 0.5 | best IoU (ratio >=) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for spec, hw in keys:
        sc = {t: occupied_scores(evals[(spec, hw, t)]) for t in THRESHOLDS}
        a, best = sc[0.0], max(THRESHOLDS, key=lambda t: sc[t]["geo_iou"])
        lines.append(f"| {spec} | {hw[0]}x{hw[1]} | {np.mean(absrel[(spec, hw)]):.3f} | {a['geo_iou']:.1f} | "
                     f"{a['precision']:.1f} | {a['recall']:.1f} | {a['recall_ground']:.1f} | "
                     f"{a['recall_objects']:.1f} | {sc[0.5]['geo_iou']:.1f} | {sc[best]['geo_iou']:.1f} ({best:g}) |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (0: the GPU default's)")
    p.add_argument("--scenes", type=int, nargs="+", default=[6, 7],
                   help="streets (6, 7: the held-out streets of run_benchmarks.sh occupancy / pipeline)")
    p.add_argument("--frames", type=int, default=12, help="keyframes per street (12: those sets')")
    p.add_argument("--keyframes", type=int, nargs="+", default=[2, 6, 10],
                   help="keyframes of each street (0 .. frames - 1)")
    p.add_argument("--hw", type=int, nargs="+", default=[180, 320, 90, 160], help="render sizes: H W [H W ...]")
    p.add_argument("--exact_hw", type=int, nargs="*", default=[360, 640],
                   help="more render sizes for the exact rows only (the resolution ceiling): H W [H W ...]")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="kind[:level][@frames], see above")
    p.add_argument("--smooth_px", type=float, default=20.0, help="std (pixels at width 320) of the smooth noise")
    p.add_argument("--threads", type=int, default=1, help="worker processes (one keyframe each)")
    p.add_argument("--out", default="logs/depth_to_occ.jsonl", help="JSON lines: one per keyframe, row, size, t")
    p.add_argument("--md", default=None, help="also write the table to this markdown file")
    a = p.parse_args(argv)
    if len(a.hw) % 2 or len(a.exact_hw) % 2:
        p.error("--hw and --exact_hw take pairs H W")
    for spec in a.rows:
        parse_row(spec)
    pairs = lambda x: [tuple(x[i:i + 2]) for i in range(0, len(x), 2)]  # noqa: E731
    exact_rows = tuple(r for r in a.rows if parse_row(r)[0] == "exact")
    sizes = pairs(a.hw) + [(h, w, exact_rows) for h, w in pairs(a.exact_hw) if exact_rows]
    keys = [(r, hw[:2]) for r in a.rows for hw in sizes if len(hw) == 2 or r in hw[2]]
    t0 = time.time()
    jobs = [(a.seed, s, a.frames, k, sizes, a.rows, a.smooth_px) for s in a.scenes for k in a.keyframes]
    total, absrel = {}, {}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with mp.get_context("spawn").Pool(a.threads) as pool, open(a.out, "w") as f:
        for (seed, scene, _, k, *_), (evals, rel), sec in pool.imap_unordered(_job, jobs):
            print(f"street {scene} keyframe {k}: {sec:.0f} s", flush=True)
            for (spec, hw, t), ev in evals.items():
                f.write(json.dumps(dict(seed=seed, scene=scene, keyframe=k, row=spec, hw=list(hw), min_hit_ratio=t,
                                        abs_rel=rel[(spec, hw)], **occupied_scores(ev))) + "\n")
                total.setdefault((spec, hw, t), OccEvaluator()).merge(ev)
            for key, v in rel.items():
                absrel.setdefault(key, []).append(v)
    md = table(total, absrel, keys)
    print(md)
    print(f"{len(jobs)} keyframes in {time.time() - t0:.0f} s")
    if a.md:
        with open(a.md, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
