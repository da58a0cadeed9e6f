"""Occupancy metrics on Occ3D-nuScenes: one confusion matrix (mIoU, mIoU*, 13-class mIoU, geometric IoU) and RayIoU.

Voxel metrics (``OccEvaluator``), Occ3D convention: every sample adds to ONE 18x18 int64 confusion matrix inside
the evaluation mask (``occ_eval_mask``: by default ``mask_camera AND mask_lidar`` as the authors' nuScenes loader
does); processes sum their matrices (``all_reduce``) before any IoU is taken. IoU_c = TP / (TP + FP + FN) from
that matrix. A class with TP + FP + FN = 0 (absent from both GT and prediction) has IoU NaN and is left out of
the means (``nanmean``, as the official Occ3D script does); a class predicted but absent from GT counts with IoU 0.
mIoU averages the 17 semantic classes, mIoU* the 15 without ``others`` and ``other_flat``
(``MIOU_STAR_EXCLUDE``), mIoU_13 the 13 without ``others``, ``bicycle``, ``motorcycle`` and ``other_flat``
(``MIOU_13_EXCLUDE``, the release's "mIoU without empty"), with the same NaN rule. Geometric IoU: occupied (any
class but free) against free.

Ray metric (``RayIoU``) after SparseOcc (Liu et al., "Fully Sparse 3D Occupancy Prediction"), see its docstring;
its ray origins per sample: ``sparseocc_origins``. All numbers are reported in percent.
"""
import numpy as np
import torch

from utils.constants import FREE_ID, MIOU_13_EXCLUDE, MIOU_STAR_EXCLUDE, NUM_SEM_CLASSES, OCC3D_RANGE, OCC_CLASSES
from utils.metrics import SummedState
from utils.voxel_walk import VoxelWalk

# nuScenes LIDAR_TOP position in the ego frame (calibrated_sensor of scene-0916): the RayIoU origin of
# ``--rayiou_origins fixed``; the default casts from ``sparseocc_origins`` of each sample.
NUSC_LIDAR_ORIGIN = (0.943713, 0.0, 1.84023)
# Voxels evaluated (``occ_eval_mask``): the authors' nuScenes loader evaluates inside mask_camera AND mask_lidar.
OCC_EVAL_MASKS = ("camera_lidar", "camera", "none")


def _np(x):
    """numpy view of a numpy array or a (CPU or CUDA) tensor."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _nanmean(x):
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def _iou(tp, gt_count, pred_count):
    """Per-class IoU (percent) from counts; NaN where the union is empty."""
    union = gt_count + pred_count - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


def occ_eval_mask(mask_camera, mask_lidar, mode="camera_lidar"):
    """Bool mask of the evaluated voxels, same shape as the inputs ((..., 200, 200, 16), non-zero = visible).

    ``camera_lidar``: mask_camera AND mask_lidar (the authors' loader, datasets/nusc_dataset.py of the release);
    ``camera``: mask_camera only (the Occ3D challenge script); ``none``: every voxel (mask_lidar may be None).
    """
    if mode not in OCC_EVAL_MASKS:
        raise ValueError(f"--occ_eval_mask must be one of {OCC_EVAL_MASKS}, got {mode!r}")
    cam = _np(mask_camera) > 0
    if mode == "none":
        return np.ones_like(cam)
    if mode == "camera":
        return cam
    if mask_lidar is None:
        raise ValueError("--occ_eval_mask camera_lidar needs mask_lidar in the Occ3D labels (or use camera)")
    return cam & (_np(mask_lidar) > 0)


def _md_table(header, rows):
    """rows: list of (name, [floats]) -> markdown with 2 decimals."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for name, vals in rows]
    return "\n".join(lines)


class OccEvaluator(SummedState):
    """Confusion matrix of Occ3D class ids; ``hist[g, p]`` counts voxels of GT class g predicted as p."""

    STATE = ("hist",)

    def __init__(self, num_classes=18, use_mask=True):
        self.num_classes = num_classes
        self.use_mask = use_mask
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred, gt, mask_camera=None):
        """Add samples.

        Args:
            pred: (..., 200, 200, 16) predicted class ids in [0, num_classes).
            gt: same shape, Occ3D ``semantics``; ids >= num_classes (e.g. 255) are ignored.
            mask_camera: same shape, non-zero where evaluated; required when ``use_mask``.
        """
        pred = _np(pred).reshape(-1).astype(np.int64)
        gt = _np(gt).reshape(-1).astype(np.int64)
        assert pred.shape == gt.shape, (pred.shape, gt.shape)
        assert pred.min() >= 0 and pred.max() < self.num_classes, "prediction ids out of range"
        keep = gt < self.num_classes
        if self.use_mask:
            if mask_camera is None:
                raise ValueError("OccEvaluator(use_mask=True).update needs mask_camera")
            keep &= _np(mask_camera).reshape(-1) > 0
        n = self.num_classes
        counts = np.bincount(gt[keep] * n + pred[keep], minlength=n * n)
        self.hist += torch.from_numpy(counts.reshape(n, n))

    def summary(self):
        """Returns {"IoU": {class: %} for the 17 semantic classes, "mIoU", "mIoU_star", "mIoU_13", "geo_IoU" (%),
        "num_voxels"}. Absent classes (empty union) are NaN and left out of the means."""
        h = self.hist.numpy().astype(np.float64)
        tp = np.diag(h)
        iou = _iou(tp, h.sum(1), h.sum(0))[:NUM_SEM_CLASSES]
        star = [c for c in range(NUM_SEM_CLASSES) if c not in MIOU_STAR_EXCLUDE]
        thirteen = [c for c in range(NUM_SEM_CLASSES) if c not in MIOU_13_EXCLUDE]
        occ_tp = h[:FREE_ID, :FREE_ID].sum()
        geo_union = h.sum() - h[FREE_ID, FREE_ID]
        return {
            "IoU": dict(zip(OCC_CLASSES[:NUM_SEM_CLASSES], iou.tolist())),
            "mIoU": _nanmean(iou),
            "mIoU_star": _nanmean(iou[star]),
            "mIoU_13": _nanmean(iou[thirteen]),
            "geo_IoU": float(100.0 * occ_tp / geo_union) if geo_union > 0 else float("nan"),
            "num_voxels": int(h.sum()),
        }

    def table(self):
        """Markdown table: per-class IoU then mIoU, mIoU*, 13-class mIoU, geometric IoU."""
        s = self.summary()
        rows = [(k, [v]) for k, v in s["IoU"].items()]
        rows += [("**mIoU**", [s["mIoU"]]), ("**mIoU***", [s["mIoU_star"]]),
                 ("**mIoU (13 classes)**", [s["mIoU_13"]]), ("**geo IoU**", [s["geo_IoU"]])]
        return _md_table(["class", "IoU"], rows)


def radial_shift(occ, steps, voxel=0.4, lo=(OCC3D_RANGE[0], OCC3D_RANGE[1]), free_id=FREE_ID):
    """A predicted volume moved ``steps`` voxels away from the ego (negative: towards it) along the horizontal ray
    from the ego origin through each voxel: a diagnostic of a volume that sits systematically in front of or behind
    the surfaces (eval.py reports the scores of the read-out moved by -1 and +1 voxels).

    occ: (X, Y, Z) class ids (free = ``free_id``), voxel centres at ``lo`` + voxel (i + 0.5) in x and y. Each voxel
    takes the class of the voxel ``steps`` voxels nearer to the ego along its ray (rounded to the nearest voxel);
    free where that voxel lies outside the grid."""
    occ = _np(occ)
    X, Y = occ.shape[:2]
    x = lo[0] + voxel * (np.arange(X) + 0.5)
    y = lo[1] + voxel * (np.arange(Y) + 0.5)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    r = np.maximum(np.hypot(xx, yy), 1e-6)
    si = np.rint(np.arange(X)[:, None] - steps * xx / r).astype(np.int64)
    sj = np.rint(np.arange(Y)[None, :] - steps * yy / r).astype(np.int64)
    inside = (si >= 0) & (si < X) & (sj >= 0) & (sj < Y)
    out = np.full_like(occ, free_id)
    out[inside] = occ[si[inside], sj[inside]]
    return out


def lidar_ray_directions(num_azimuths=360, max_pitch=0.21):
    """Unit ray directions of a virtual LiDAR, the pattern SparseOcc's RayIoU uses.

    Pitches: -(pi/2 - atan(k)) for k = 1..10 (dense towards the horizon), then continued with the last spacing
    until ``max_pitch`` (0.21 rad, top of the nuScenes LiDAR field of view) is reached: 39 pitches from -45 deg to
    +12.5 deg. Azimuths: ``num_azimuths`` evenly spaced from 0. Returns (num_pitches * num_azimuths, 3) float64
    (x, y, z) in the ego frame, pitch-major.
    """
    pitches = [-(np.pi / 2 - np.arctan(k)) for k in range(1, 11)]
    spacing = pitches[-1] - pitches[-2]
    while pitches[-1] < max_pitch:
        pitches.append(pitches[-1] + spacing)
    pitch, azim = np.meshgrid(np.array(pitches), np.arange(num_azimuths) * 2 * np.pi / num_azimuths, indexing="ij")
    dirs = np.stack([np.cos(pitch) * np.cos(azim), np.cos(pitch) * np.sin(azim), np.sin(pitch)], -1)
    return dirs.reshape(-1, 3)


def first_hits(labels, origin, dirs, grid_range=OCC3D_RANGE, free_id=FREE_ID):
    """Cast rays through several label volumes at once (exact voxel traversal, ``utils.voxel_walk.VoxelWalk``).

    Args:
        labels: (V, X, Y, Z) int class volumes on the same grid (non-negative ids).
        origin: (3,) ray origin in metres, inside the grid.
        dirs: (R, 3) unit directions.
    Returns:
        dist: (V, R) float64, distance from the origin to where the ray LEAVES the first non-free voxel (SparseOcc's
            convention); where nothing is hit, the distance at which the ray leaves the grid.
        cls: (V, R) int64 class of that voxel, ``free_id`` where nothing is hit.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_vol, shape = labels.shape[0], np.array(labels.shape[1:])
    lo, hi = np.array(grid_range[:3], np.float64), np.array(grid_range[3:], np.float64)
    size = (hi - lo) / shape
    origin = np.asarray(origin, np.float64)
    idx0 = np.floor((origin - lo) / size).astype(np.int64)
    if np.any(idx0 < 0) or np.any(idx0 >= shape):
        raise ValueError(f"ray origin {origin.tolist()} lies outside the grid {list(grid_range)}")
    # A border of -1 voxels marks "left the grid", so a ray only needs its linear index into the padded volume.
    flat = np.pad(labels, ((0, 0), (1, 1), (1, 1), (1, 1)), constant_values=-1).reshape(num_vol, -1)
    strides = np.array([(shape[1] + 2) * (shape[2] + 2), shape[2] + 2, 1])
    # One axis a step; on an exact tie the later axis (z before y before x) steps first, as SparseOcc's dvr.
    walk = VoxelWalk(origin, dirs, lo, size, strides, tie="zyx", offset=1)
    num_rays = len(walk.ray)
    dist = np.zeros((num_vol, num_rays))
    cls = np.full((num_vol, num_rays), free_id, dtype=np.int64)
    # State of the rays still travelling. Finished rays are dropped in batches; until then they keep stepping
    # harmlessly (reads are clipped to the volume and their results are frozen by ``pending``).
    t_prev = np.zeros(num_rays)
    a_dist, a_cls = dist.copy(), cls.copy()
    pending = np.ones((num_vol, num_rays), bool)  # volumes in which the ray has found nothing yet
    while walk.ray.size:
        lab = flat.take(walk.flat, axis=1, mode="clip")
        out = lab[0] < 0
        t_exit = walk.exit_distance()
        hit = pending & (lab != free_id) & ~out
        a_dist = np.where(hit, t_exit, np.where(pending & out, t_prev, a_dist))
        a_cls = np.where(hit, lab, a_cls)
        pending &= ~(hit | out)
        walk.advance(walk.axis())
        t_prev = t_exit
        go = pending.any(0)
        if 4 * np.count_nonzero(go) < 3 * go.size or not go.any():
            done = ~go
            dist[:, walk.ray[done]], cls[:, walk.ray[done]] = a_dist[:, done], a_cls[:, done]
            t_prev, a_dist, a_cls, pending = walk.keep(go, t_prev, a_dist, a_cls, pending)
    return dist, cls


def sparseocc_origins(lidar2global, ref, lidar2ego, max_origins=8, max_xy=39.0):
    """RayIoU origins of one sample as SparseOcc computes them (its EgoPoseDataset, run by the authors).

    Every keyframe of the sample's scene contributes its LiDAR position, expressed in the current (``ref``) ego
    frame: lidar2ego_ref @ inv(lidar2global_ref) @ lidar2global_k applied to the origin. Positions with
    |x| >= max_xy or |y| >= max_xy are dropped; of more than ``max_origins`` left, the ones at
    round(linspace(0, n - 1, max_origins)) are kept (numpy rounding, time order).

    Args:
        lidar2global: (T, 4, 4) LIDAR_TOP -> world of the scene's T keyframes in time order (ego2global of the
            LiDAR sample_data @ its lidar2ego).
        ref: index of the current keyframe in that list.
        lidar2ego: (4, 4) LIDAR_TOP -> ego of the current keyframe.
    Returns:
        (K, 3) float64 origins in the current ego frame, metres, 1 <= K <= max_origins in time order (the current
        keyframe gives lidar2ego's translation).
    """
    poses = np.asarray(lidar2global, np.float64)
    lidar2ego = np.asarray(lidar2ego, np.float64)
    origins = (lidar2ego @ np.linalg.inv(poses[ref]) @ poses[:, :, 3:])[:, :3, 0]
    origins[ref] = lidar2ego[:3, 3]
    origins = origins[(np.abs(origins[:, 0]) < max_xy) & (np.abs(origins[:, 1]) < max_xy)]
    if len(origins) > max_origins:
        origins = origins[np.round(np.linspace(0, len(origins) - 1, max_origins)).astype(np.int64)]
    return origins


class RayIoU(SummedState):
    """RayIoU at 1, 2 and 4 m, SparseOcc's definition (its ray_metrics, as the authors run it).

    What is computed, per sample and per origin (``update``):
      * rays of ``lidar_ray_directions()`` (39 pitches x 360 azimuths = 14,040) are cast from the origin through
        the prediction and through the GT (both full 200x200x16 volumes: SparseOcc uses no camera mask);
      * each ray gives, per volume, the class of the first non-free voxel and the distance at which the ray leaves
        that voxel (class free if it leaves the grid first);
      * rays whose GT finds nothing (GT class free) are dropped; on the others, per class c: GT count = rays whose
        GT class is c, predicted count = rays whose predicted class is c (a prediction that finds nothing counts
        for free, which is not reported), TP at threshold d = rays where both classes are c and
        |dist_pred - dist_gt| < d;
      * counts are summed over rays, origins and samples; IoU_c = TP / (GT + pred - TP); RayIoU@d = nanmean over the
        17 semantic classes (NaN when a class has no GT and no predicted ray); RayIoU = mean of the 3.
    Origins: SparseOcc casts from the LiDAR positions of up to 8 keyframes of the scene in the current ego frame
    (``sparseocc_origins``; the datasets give them as ``ray_origins``); ``NUSC_LIDAR_ORIGIN`` alone is the
    ``--rayiou_origins fixed`` variant, which sees fewer occluded surfaces. The optional ``mask`` (not in
    SparseOcc) turns voxels outside it into free in both volumes.
    """

    STATE = ("gt_count", "pred_count", "tp")

    def __init__(self, thresholds=(1.0, 2.0, 4.0), grid_range=OCC3D_RANGE, num_classes=18, directions=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.grid_range = grid_range
        self.num_classes = num_classes
        self.dirs = lidar_ray_directions() if directions is None else np.asarray(directions, np.float64)
        self.gt_count = torch.zeros(num_classes, dtype=torch.int64)
        self.pred_count = torch.zeros(num_classes, dtype=torch.int64)
        self.tp = torch.zeros(len(self.thresholds), num_classes, dtype=torch.int64)

    def update(self, pred, gt, origins=(NUSC_LIDAR_ORIGIN,), mask=None):
        """Add one sample.

        Args:
            pred, gt: (X, Y, Z) class ids (free = ``FREE_ID``), e.g. (200, 200, 16).
            origins: (K, 3) ray origins in the ego frame (metres), inside the grid; rows with NaN (padding of
                the batched ``ray_origins``) are skipped.
            mask: optional (X, Y, Z), voxels where it is 0 become free in both volumes.
        Ids outside [0, num_classes) (e.g. 255) are treated as free.
        """
        vols = np.stack([_np(pred), _np(gt)]).astype(np.int64)
        vols[(vols < 0) | (vols >= self.num_classes)] = FREE_ID
        if mask is not None:
            vols[:, _np(mask) == 0] = FREE_ID
        n = self.num_classes
        origins = _np(origins).astype(np.float64).reshape(-1, 3)
        for origin in origins[~np.isnan(origins).any(1)]:
            dist, cls = first_hits(vols, origin, self.dirs, self.grid_range)
            keep = cls[1] != FREE_ID
            (d_pred, d_gt), (c_pred, c_gt) = dist[:, keep], cls[:, keep]
            self.gt_count += torch.from_numpy(np.bincount(c_gt, minlength=n))
            self.pred_count += torch.from_numpy(np.bincount(c_pred, minlength=n))
            same = c_pred == c_gt
            err = np.abs(d_pred - d_gt)
            for j, thr in enumerate(self.thresholds):
                self.tp[j] += torch.from_numpy(np.bincount(c_gt[same & (err < thr)], minlength=n))

    def summary(self):
        """Returns {"RayIoU": %, "RayIoU@<d>": % per threshold, "IoU@<d>": {class: %}} (17 semantic classes)."""
        gt, pred = self.gt_count.numpy(), self.pred_count.numpy()
        out, per_thr = {}, []
        for j, thr in enumerate(self.thresholds):
            iou = _iou(self.tp[j].numpy(), gt, pred)[:NUM_SEM_CLASSES]
            per_thr.append(_nanmean(iou))
            out[f"RayIoU@{thr:g}"] = per_thr[-1]
            out[f"IoU@{thr:g}"] = dict(zip(OCC_CLASSES[:NUM_SEM_CLASSES], iou.tolist()))
        out["RayIoU"] = float(np.mean(per_thr))
        return out

    def table(self):
        """Markdown table: per-class IoU at each threshold, then the means."""
        s = self.summary()
        names = [f"{t:g}" for t in self.thresholds]
        rows = [(c, [s[f"IoU@{t}"][c] for t in names]) for c in OCC_CLASSES[:NUM_SEM_CLASSES]]
        rows.append(("**mean**", [s[f"RayIoU@{t}"] for t in names]))
        table = _md_table(["class"] + [f"RayIoU@{t}m" for t in names], rows)
        return table + f"\n\nRayIoU (mean over thresholds): {s['RayIoU']:.2f}"


class OpacityStats(SummedState):
    """How well the predicted voxel opacity separates occupied from free voxels, and what each read-out threshold
    would give: the occupancy health of a stage-2 volume where labels exist.

    ``update(opacity, sem_cls, gt, mask)`` with the opacity sampled at the label voxels (float in [0, 1]) and the
    semantic argmax there (class ids < 17). Accumulates, inside the evaluation mask, the opacity histogram of each
    GT class (``bins`` bins over [0, 1]) and, for every threshold t of ``thresholds``, the confusion matrix of the
    read-out "class = sem_cls where opacity > t, else free". Summed over samples and ranks like OccEvaluator.
    """

    STATE = ("hist", "conf")

    def __init__(self, thresholds=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), bins=200, num_classes=18):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.bins, self.num_classes = bins, num_classes
        self.hist = torch.zeros(num_classes, bins, dtype=torch.int64)
        self.conf = torch.zeros(len(self.thresholds), num_classes, num_classes, dtype=torch.int64)

    def update(self, opacity, sem_cls, gt, mask):
        o = _np(opacity).reshape(-1).astype(np.float64)
        cls = _np(sem_cls).reshape(-1).astype(np.int64)
        gt = _np(gt).reshape(-1).astype(np.int64)
        keep = (_np(mask).reshape(-1) > 0) & (gt < self.num_classes)
        o, cls, gt = o[keep], cls[keep], gt[keep]
        b = np.clip((o * self.bins).astype(np.int64), 0, self.bins - 1)
        n = self.num_classes
        self.hist += torch.from_numpy(np.bincount(gt * self.bins + b, minlength=n * self.bins).reshape(n, self.bins))
        for j, t in enumerate(self.thresholds):
            pred = np.where(o > t, cls, FREE_ID)
            self.conf[j] += torch.from_numpy(np.bincount(gt * n + pred, minlength=n * n).reshape(n, n))

    def summary(self):
        """{"auc": P(opacity of an occupied voxel > that of a free one) (ties within a bin count half),
        "quantiles": {class: [p10, p50, p90]} of the opacity per GT class (bin centres; classes with voxels),
        "thresholds": [{"t", "mIoU_star", "mIoU", "geo_IoU"}] per threshold, "best": the row of the best mIoU*}."""
        h = self.hist.numpy().astype(np.float64)
        occ, free = h[:FREE_ID].sum(0), h[FREE_ID]
        below = np.cumsum(free) - free
        n = occ.sum() * free.sum()
        auc = float((occ * (below + 0.5 * free)).sum() / n) if n > 0 else float("nan")
        centres = (np.arange(self.bins) + 0.5) / self.bins
        quant = {}
        for c in range(self.num_classes):
            if h[c].sum() > 0:
                cdf = np.cumsum(h[c]) / h[c].sum()
                quant[(OCC_CLASSES + ["free"])[c]] = [float(centres[np.searchsorted(cdf, q)]) for q in (0.1, 0.5, 0.9)]
        rows = []
        for j, t in enumerate(self.thresholds):
            ev = OccEvaluator(num_classes=self.num_classes)
            ev.hist = self.conf[j].clone()
            s = ev.summary()
            rows.append({"t": t, "mIoU_star": s["mIoU_star"], "mIoU": s["mIoU"], "geo_IoU": s["geo_IoU"]})
        best = max(rows, key=lambda r: -1 if np.isnan(r["mIoU_star"]) else r["mIoU_star"]) if rows else None
        return {"auc": auc, "quantiles": quant, "thresholds": rows, "best": best}

    def table(self):
        s = self.summary()
        lines = [f"Opacity AUC (occupied vs free, inside the evaluation mask): {100 * s['auc']:.1f}", "",
                 "| GT class | opacity p10 | p50 | p90 |", "|---|---:|---:|---:|"]
        lines += [f"| {c} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} |" for c, q in s["quantiles"].items()]
        lines += ["", "Read-out 'occupied where opacity > t' (class: semantic argmax); t chosen on the evaluation set "
                  "is an upper bound, not a result:", "", "| t | mIoU* | mIoU | geo IoU |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['t']:g} | {r['mIoU_star']:.2f} | {r['mIoU']:.2f} | {r['geo_IoU']:.2f} |"
                  for r in s["thresholds"]]
        return "\n".join(lines)
