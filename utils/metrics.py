"""Depth evaluation: the 7 standard metrics against projected LiDAR, per camera, then averaged over cameras.

Protocol (docs/evaluation.md): the predicted depth is resized (bilinear) to the ground-truth size, ground truth
is kept where ``min_depth < gt < max_depth``, the prediction is clamped to ``[min_depth, max_depth]``, no median
scaling. The metrics of one (frame, camera) are averaged over the frames of each camera, and those per-camera means
are averaged over the cameras. ``median_scaling=True`` is there only to compare with scale-less methods; it scales
each image by median(gt) / median(pred) before clamping and reports the mean and spread of that ratio.

Accumulators hold plain sums and counts, so evaluators of several processes add up exactly (``merge``,
``all_reduce``).
"""
import numpy as np
import torch
import torch.nn.functional as F

from utils.constants import CAMS, OCC_CLASSES
from utils.dist import all_reduce_sum

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
# LiDAR distance bins of the depth error by range: inside 20 m, 20-40 m (the edge of the 80 x 80 m occupancy grid),
# beyond (where an uncontracted grid's rays read as the far background)
DEPTH_RANGES = (0.0, 20.0, 40.0, float("inf"))


def range_names(edges=DEPTH_RANGES):
    return [f"{a:g}-{b:g}m" if b != float("inf") else f"{a:g}m+" for a, b in zip(edges[:-1], edges[1:])]


class SummedState:
    """Accumulators that are plain sums: the tensors named in ``STATE`` add up exactly across evaluators and
    ranks (``merge``, ``all_reduce``) and travel as a ``state_dict``."""

    STATE = ()

    def state_dict(self):
        return {k: getattr(self, k).clone() for k in self.STATE}

    def load_state_dict(self, state):
        for k in self.STATE:
            setattr(self, k, state[k].clone())

    def merge(self, other):
        """Add the accumulators of another evaluator of the same kind (or its ``state_dict``)."""
        state = other.state_dict() if isinstance(other, SummedState) else other
        for k in self.STATE:
            setattr(self, k, getattr(self, k) + state[k])

    def all_reduce(self):
        """Sum the accumulators over torch.distributed ranks (no-op without an initialised process group)."""
        for k in self.STATE:
            setattr(self, k, all_reduce_sum(getattr(self, k)))


def compute_depth_errors(gt, pred):
    """The 7 standard depth metrics of valid pixels.

    Args:
        gt, pred: (N,) positive depths in metres (numpy or torch), already masked and clamped.
    Returns:
        dict ``{name: float}`` for ``DEPTH_METRICS``: abs_rel = mean |g-p|/g, sq_rel = mean (g-p)^2/g,
        rmse = sqrt(mean (g-p)^2), rmse_log = sqrt(mean (ln g - ln p)^2), a<k> = share of max(g/p, p/g) < 1.25^k.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    ratio = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
    }


class DepthEvaluator(SummedState):
    """Accumulates depth metrics per camera.

    State: ``sums`` (num_cams, 7) float64 sums of per-image metrics, ``counts`` (num_cams,) int64 images with at
    least one valid pixel, ``ratios`` (3,) float64 (count, sum, sum of squares) of the median-scaling ratios.
    """

    STATE = ("sums", "counts", "ratios", "range_sums", "class_sums")

    def __init__(self, min_depth=0.1, max_depth=80.0, num_cams=6, median_scaling=False):
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.num_cams = num_cams
        self.median_scaling = median_scaling
        self.cam_names = list(CAMS) if num_cams == len(CAMS) else [f"cam{i}" for i in range(num_cams)]
        self.sums = torch.zeros(num_cams, len(DEPTH_METRICS), dtype=torch.float64)
        self.counts = torch.zeros(num_cams, dtype=torch.int64)
        self.ratios = torch.zeros(3, dtype=torch.float64)
        self.range_sums = torch.zeros(len(DEPTH_RANGES) - 1, 2, dtype=torch.float64)  # (sum |g-p|/g, points)
        # per class of the 2D label at each point (update's ``labels``): (sum |g-p|/g, sum log(p/g), points)
        self.class_sums = torch.zeros(len(OCC_CLASSES), 3, dtype=torch.float64)

    def update(self, pred, gt, labels=None):
        """Add one frame (or a batch of frames).

        Args:
            pred: (num_cams, h, w) or (B, num_cams, h, w) predicted depth in metres (torch or numpy).
            gt: (num_cams, Hg, Wg) or (B, num_cams, Hg, Wg) sparse LiDAR depth, 0 where there is none.
            labels: optional (num_cams, hl, wl) (or batched) 2D class ids (Occ3D ids, 255 = none) of the same
                views, resized to the LiDAR grid by nearest neighbour: AbsRel and the signed log error per class of
                the point's pixel (``summary()["by_class"]``).
        Returns, per camera of the frame (a list of those per frame for a batch): None where no pixel is valid,
        else (abs_rel, scale) with scale = median of pred / gt over the valid pixels (the prediction clamped to
        the range, before any median scaling): the depth's own metric scale, 1 when right.
        """
        pred = torch.as_tensor(pred).detach().float().cpu()
        gt = torch.as_tensor(gt).detach().float().cpu()
        if pred.dim() == 4:
            return [self.update(p, g, lab)
                    for p, g, lab in zip(pred, gt, labels if labels is not None else [None] * len(pred))]
        assert pred.shape[0] == gt.shape[0] == self.num_cams, (pred.shape, gt.shape)
        pred = F.interpolate(pred[:, None], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        if labels is not None:
            labels = F.interpolate(torch.as_tensor(labels).detach().cpu()[:, None].float(), size=gt.shape[-2:],
                                   mode="nearest")[:, 0].long()
        out = []
        for c in range(self.num_cams):
            valid = (gt[c] > self.min_depth) & (gt[c] < self.max_depth)
            if not valid.any():
                out.append(None)
                continue
            g = gt[c][valid].double().numpy()
            p = pred[c][valid].double().numpy()
            scale = float(np.median(np.clip(p, self.min_depth, self.max_depth) / g))
            if self.median_scaling:
                ratio = np.median(g) / np.median(p)
                p = p * ratio
                self.ratios += torch.tensor([1.0, ratio, ratio**2], dtype=torch.float64)
            p = np.clip(p, self.min_depth, self.max_depth)
            errors = compute_depth_errors(g, p)
            rel = np.abs(g - p) / g
            bins = np.digitize(g, DEPTH_RANGES[1:-1])
            self.range_sums[:, 0] += torch.from_numpy(np.bincount(bins, rel, len(DEPTH_RANGES) - 1))
            self.range_sums[:, 1] += torch.from_numpy(np.bincount(bins, None, len(DEPTH_RANGES) - 1))
            if labels is not None:
                n = len(OCC_CLASSES)
                cls = labels[c][valid].numpy()
                keep = (cls >= 0) & (cls < n)
                self.class_sums[:, 0] += torch.from_numpy(np.bincount(cls[keep], rel[keep], n))
                self.class_sums[:, 1] += torch.from_numpy(np.bincount(cls[keep], np.log(p[keep] / g[keep]), n))
                self.class_sums[:, 2] += torch.from_numpy(np.bincount(cls[keep], None, n))
            self.sums[c] += torch.tensor([errors[k] for k in DEPTH_METRICS], dtype=torch.float64)
            self.counts[c] += 1
            out.append((errors["abs_rel"], scale))
        return out

    def summary(self):
        """Returns dict with ``per_camera`` {cam: {metric: mean over frames}}, ``mean`` {metric: mean over the
        cameras that have frames}, ``num_frames`` {cam: int} and, with median scaling, ``median_ratio``
        {mean, std}. Metrics are NaN when nothing was accumulated."""
        seen = self.counts > 0
        per_cam = self.sums / self.counts.clamp(min=1)[:, None].double()
        per_cam[~seen] = float("nan")
        mean = per_cam[seen].mean(0) if seen.any() else per_cam.new_full((len(DEPTH_METRICS),), float("nan"))
        out = {
            "per_camera": {n: dict(zip(DEPTH_METRICS, row.tolist())) for n, row in zip(self.cam_names, per_cam)},
            "mean": dict(zip(DEPTH_METRICS, mean.tolist())),
            "num_frames": dict(zip(self.cam_names, self.counts.tolist())),
        }
        sums, pts = self.range_sums[:, 0], self.range_sums[:, 1]
        out["abs_rel_by_range"] = {n: (float(a / c) if c > 0 else float("nan"))
                                   for n, a, c in zip(range_names(), sums.tolist(), pts.tolist())}
        out["points_by_range"] = dict(zip(range_names(), [int(c) for c in pts.tolist()]))
        cs = self.class_sums
        if cs[:, 2].sum() > 0:  # points with a 2D label, per class: AbsRel, mean log(pred / gt), share of points
            out["by_class"] = {OCC_CLASSES[k]: {"abs_rel": float(cs[k, 0] / cs[k, 2]),
                                                "log_bias": float(cs[k, 1] / cs[k, 2]),
                                                "share": float(cs[k, 2] / cs[:, 2].sum())}
                               for k in range(len(OCC_CLASSES)) if cs[k, 2] > 0}
        if self.median_scaling:
            n, s, s2 = self.ratios.tolist()
            m = s / n if n else float("nan")
            out["median_ratio"] = {"mean": m, "std": float(np.sqrt(max(s2 / n - m * m, 0.0))) if n else m}
        return out

    def table(self):
        """Markdown table: one row per camera and a final ``mean`` row."""
        s = self.summary()
        lines = ["| camera | " + " | ".join(DEPTH_METRICS) + " |", "|---" * (len(DEPTH_METRICS) + 1) + "|"]
        rows = list(s["per_camera"].items()) + [("**mean**", s["mean"])]
        for name, m in rows:
            lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" for k in DEPTH_METRICS) + " |")
        return "\n".join(lines)

    def range_line(self):
        """One line: AbsRel per LiDAR distance bin, pooled over the points, and each bin's share of them."""
        s = self.summary()
        total = max(1, sum(s["points_by_range"].values()))
        return "AbsRel by LiDAR distance (pooled over points): " + ", ".join(
            f"{n} {v:.3f} ({100 * s['points_by_range'][n] / total:.0f}% of points)"
            for n, v in s["abs_rel_by_range"].items())

    def class_line(self):
        """One line (empty without labels): AbsRel per class of the 2D label at the points, pooled over them, with
        the mean log(pred / gt) (negative: too short) and each class's share of the points, largest share first."""
        by = self.summary().get("by_class")
        if not by:
            return ""
        parts = [f"{n} {v['abs_rel']:.3f} (bias {v['log_bias']:+.3f}, {100 * v['share']:.0f}%)"
                 for n, v in sorted(by.items(), key=lambda kv: -kv[1]["share"])]
        return "AbsRel by the 2D label of the point's pixel (pooled over points; log bias = mean log(pred / gt), " \
               "< 0: too near): " + ", ".join(parts)
