"""Where a predicted occupancy volume is wrong: the geometric errors of ``eval.py --save_pred`` volumes (or of
``occ_supervised --sup_save_pred``) against the Occ3D labels, broken down so that the cause shows.

geo IoU alone does not say whether a volume misses its surfaces, draws them one voxel off, draws them thick, or
draws phantoms in free space. For each folder of predictions (several side by side) on the same labels, inside the
evaluation mask (``--occ_eval_mask``, eval.py's):

* precision / recall / geo IoU of the read-out as saved, and **with a tolerance of 1 and 2 voxels** (a predicted
  occupied voxel counts as right when a GT-occupied voxel lies within that Chebyshev distance, anywhere in the grid;
  a GT-occupied voxel as found when a predicted one does): a volume whose tolerant IoU is far above its exact one
  places its surfaces imprecisely, one whose tolerant recall stays low misses them;
* the false positives by their distance to the nearest GT-occupied voxel (1 = a thick or shifted surface, 2, 3-5,
  > 5 = phantoms in free space) and by range from the ego;
* recall per class, exact and within 1 voxel, and the share of the geometrically right voxels that have the right
  class (semantics given geometry);
* per height layer, the share of the evaluated voxels at least 3 voxels from any GT-occupied one that are read
  occupied (a lid of occupancy at the top of a volume shows as a jump in its last layers);
* along horizontal rays from the ego (every 0.25 deg, each height layer): where the first predicted-occupied voxel
  lies relative to the first GT-occupied one (in metres; negative = in front of the surface), for the rays whose
  GT first hit is evaluated.

    python -m tools.diagnostics.occ_errors --occ_root data/syn-kf16/gts --pred logs/occ-default/pred \\
        logs/occ_sup-none/pred --names stage2 oracle --out docs/results/occ_errors.md
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
from scipy import ndimage

from utils.constants import FREE_ID, OCC3D_RANGE, OCC_CLASSES
from utils.occ_metrics import occ_eval_mask
from utils.pred_io import load_prediction

FP_BINS = ((1, 1), (2, 2), (3, 5), (6, 10 ** 6))  # Chebyshev distance to the nearest GT-occupied voxel
RANGE_BINS = ((0, 10), (10, 20), (20, 30), (30, 60))  # metres from the ego, horizontal
OFFSET_EDGES = np.array([-np.inf, -2.0, -0.6, -0.2, 0.2, 0.6, 2.0, np.inf])  # metres, first hit pred - GT
OFFSET_NAMES = ("< -2", "-2..-0.6", "-0.6..-0.2", "+-0.2", "0.2..0.6", "0.6..2", "> 2", "none")
VOXEL = 0.4


def chebyshev_distance(occupied):
    """Chebyshev distance (voxels) of every voxel to the nearest True voxel of ``occupied`` (large where none)."""
    if not occupied.any():
        return np.full(occupied.shape, 10 ** 6, dtype=np.int64)
    return ndimage.distance_transform_cdt(~occupied, metric="chessboard").astype(np.int64)


def horizontal_ranges(shape=(200, 200), voxel=VOXEL, lo=OCC3D_RANGE[:2]):
    """Horizontal distance (m) of each (x, y) voxel centre from the ego origin."""
    x = lo[0] + voxel * (np.arange(shape[0]) + 0.5)
    y = lo[1] + voxel * (np.arange(shape[1]) + 0.5)
    return np.hypot(x[:, None], y[None, :])


def first_hit_offsets(pred_occ, gt_occ, mask, num_az=1440, step=0.1, rmax=40.0, voxel=VOXEL, lo=OCC3D_RANGE[:2]):
    """Horizontal rays from the ego origin in every height layer: for each ray whose first GT-occupied voxel is
    inside ``mask``, the distance (m) of the first predicted-occupied voxel minus that of the GT one (NaN when the
    prediction has none on the ray). Returns a 1D array over those rays."""
    X, Y, Z = gt_occ.shape
    az = np.linspace(0, 2 * np.pi, num_az, endpoint=False)
    r = np.arange(step, rmax, step)
    i = np.floor((r[None, :] * np.cos(az)[:, None] - lo[0]) / voxel).astype(np.int64)
    j = np.floor((r[None, :] * np.sin(az)[:, None] - lo[1]) / voxel).astype(np.int64)
    inside = (i >= 0) & (i < X) & (j >= 0) & (j < Y)
    i, j = np.clip(i, 0, X - 1), np.clip(j, 0, Y - 1)
    out = []
    for z in range(Z):
        g = gt_occ[i, j, z] & inside
        p = pred_occ[i, j, z] & inside
        has_g = g.any(1)
        kg = g.argmax(1)
        rows = np.nonzero(has_g)[0]
        rows = rows[mask[i[rows, kg[rows]], j[rows, kg[rows]], z]]
        if not len(rows):
            continue
        kp = p[rows].argmax(1).astype(np.float64)
        kp[~p[rows].any(1)] = np.nan
        out.append((kp - kg[rows]) * step)
    return np.concatenate(out) if out else np.zeros(0)


class ErrorStats:
    """Sums of one run's counts over samples."""

    def __init__(self):
        self.n = 0
        self.c = {}
        self.cls = np.zeros((len(OCC_CLASSES), 4), dtype=np.int64)  # GT count, found exact, found within 1, right class
        self.offsets = []
        self.far = None  # per height layer: evaluated voxels >= 3 voxels from any GT-occupied one, those read occupied

    def add(self, key, value):
        self.c[key] = self.c.get(key, 0) + int(value)

    def update(self, pred, gt, mask):
        """pred, gt: (X, Y, Z) class ids (FREE_ID = free); mask: bool, the evaluated voxels."""
        self.n += 1
        P, G = pred != FREE_ID, gt != FREE_ID
        dg, dp = chebyshev_distance(G), chebyshev_distance(P)
        rng = np.broadcast_to(horizontal_ranges(gt.shape[:2])[:, :, None], gt.shape)
        Pm, Gm = P & mask, G & mask
        self.add("pred", Pm.sum())
        self.add("gt", Gm.sum())
        self.add("tp", (Pm & G).sum())
        for d in (1, 2):
            self.add(f"prec_tol{d}", (Pm & (dg <= d)).sum())
            self.add(f"rec_tol{d}", (Gm & (dp <= d)).sum())
        far = mask & (dg >= 3)
        layer = np.stack([far.sum((0, 1)), (far & P).sum((0, 1))], 1).astype(np.int64)
        self.far = layer if self.far is None else self.far + layer
        fp = Pm & ~G
        for lo_, hi in FP_BINS:
            self.add(f"fp_d{lo_}", (fp & (dg >= lo_) & (dg <= hi)).sum())
        for lo_, hi in RANGE_BINS:
            sel = mask & (rng >= lo_) & (rng < hi)
            self.add(f"r{lo_}_pred", (P & sel).sum())
            self.add(f"r{lo_}_gt", (G & sel).sum())
            self.add(f"r{lo_}_tp", (P & G & sel).sum())
        for c in range(len(OCC_CLASSES)):
            gc = Gm & (gt == c)
            if gc.any():
                self.cls[c] += [gc.sum(), (gc & P).sum(), (gc & (dp <= 1)).sum(), (gc & (pred == c)).sum()]
        self.offsets.append(first_hit_offsets(P, G, mask))

    def summary(self):
        c = self.c
        iou = lambda tp, p, g: 100.0 * tp / max(p + g - tp, 1)  # noqa: E731
        out = {"samples": self.n, "precision": 100.0 * c["tp"] / max(c["pred"], 1),
               "recall": 100.0 * c["tp"] / max(c["gt"], 1), "geo_IoU": iou(c["tp"], c["pred"], c["gt"])}
        for d in (1, 2):
            p, r = c[f"prec_tol{d}"] / max(c["pred"], 1), c[f"rec_tol{d}"] / max(c["gt"], 1)
            out[f"precision_tol{d}"], out[f"recall_tol{d}"] = 100 * p, 100 * r
            # IoU from the tolerant precision and recall: 1 / (1/p + 1/r - 1)
            out[f"geo_IoU_tol{d}"] = 100.0 / (1 / max(p, 1e-9) + 1 / max(r, 1e-9) - 1)
        fp = c["pred"] - c["tp"]
        names = [(f"{lo}" if lo == hi else f"{lo}-{hi}") if hi < 10 ** 6 else f">{lo - 1}" for lo, hi in FP_BINS]
        out["fp_share_by_distance"] = {k: 100.0 * c[f"fp_d{lo}"] / max(fp, 1) for k, (lo, _) in zip(names, FP_BINS)}
        out["by_range"] = {f"{lo}-{hi} m": {"precision": 100.0 * c[f"r{lo}_tp"] / max(c[f"r{lo}_pred"], 1),
                                            "recall": 100.0 * c[f"r{lo}_tp"] / max(c[f"r{lo}_gt"], 1),
                                            "geo_IoU": iou(c[f"r{lo}_tp"], c[f"r{lo}_pred"], c[f"r{lo}_gt"])}
                           for lo, hi in RANGE_BINS}
        out["by_class"] = {OCC_CLASSES[k]: {"gt_voxels": int(n), "recall": 100.0 * e / n, "recall_tol1": 100.0 * t / n,
                                            "right_class_of_found": 100.0 * s / max(e, 1)}
                           for k, (n, e, t, s) in enumerate(self.cls) if n > 0}
        off = np.concatenate(self.offsets) if self.offsets else np.zeros(0)
        hist = np.histogram(off[~np.isnan(off)], OFFSET_EDGES)[0]
        share = np.append(hist, np.isnan(off).sum()) / max(len(off), 1)
        out["first_hit_offset_share"] = dict(zip(OFFSET_NAMES, (100.0 * share).tolist()))
        out["first_hit_offset_median_m"] = float(np.nanmedian(off)) if np.isfinite(off).any() else float("nan")
        out["rays"] = int(len(off))
        out["far_read_occupied_by_layer"] = [100.0 * b / a if a else float("nan") for a, b in self.far]
        return out


def table(names, sums):
    """Markdown tables of several runs' summaries."""
    rows = [("geo IoU (as saved)", "geo_IoU"), ("geo IoU within 1 voxel", "geo_IoU_tol1"),
            ("geo IoU within 2 voxels", "geo_IoU_tol2"), ("precision", "precision"),
            ("precision within 1", "precision_tol1"),
            ("recall", "recall"), ("recall within 1", "recall_tol1")]
    head = "| measure | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
    t = head + "".join(f"| {lab} | " + " | ".join(f"{s[k]:.1f}" for s in sums) + " |\n" for lab, k in rows)
    t += "".join(f"| false positives at distance {k} from GT (% of FP) | " +
                 " | ".join(f"{s['fp_share_by_distance'][k]:.1f}" for s in sums) + " |\n"
                 for k in sums[0]["fp_share_by_distance"])
    t += "".join(f"| geo IoU {k} (precision / recall) | " + " | ".join(
        f"{s['by_range'][k]['geo_IoU']:.1f} ({s['by_range'][k]['precision']:.0f} / {s['by_range'][k]['recall']:.0f})"
        for s in sums) + " |\n" for k in sums[0]["by_range"])
    t += "".join(f"| first hit {k + ' m' if k != 'none' else 'none on the ray'} (% of rays) | " +
                 " | ".join(f"{s['first_hit_offset_share'][k]:.1f}" for s in sums) + " |\n" for k in OFFSET_NAMES)
    t += "| first hit offset, median (m) | " + " | ".join(f"{s['first_hit_offset_median_m']:+.2f}" for s in sums) \
        + " |\n"
    t += "\nFar from any surface (>= 3 voxels), share read occupied per height layer (%, layer 0 = the ground, 0.4 m " \
         "each):\n\n" + head.replace("measure", "layer")
    for k in range(len(sums[0]["far_read_occupied_by_layer"])):
        vals = [s["far_read_occupied_by_layer"][k] for s in sums]
        if all(np.isnan(v) for v in vals):
            continue
        t += f"| {k} | " + " | ".join("-" if np.isnan(v) else f"{v:.0f}" for v in vals) + " |\n"
    t += "\nPer class (recall exact / within 1 voxel / right class of the found, %):\n\n" + head.replace(
        "measure", "class")
    classes = [k for k in OCC_CLASSES if any(k in s["by_class"] for s in sums)]
    for k in classes:
        cells = [f"{s['by_class'][k]['recall']:.0f} / {s['by_class'][k]['recall_tol1']:.0f} / "
                 f"{s['by_class'][k]['right_class_of_found']:.0f}" if k in s["by_class"] else "-" for s in sums]
        t += f"| {k} ({sums[0]['by_class'].get(k, {}).get('gt_voxels', 0)}) | " + " | ".join(cells) + " |\n"
    return t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pred", nargs="+", required=True, help="folders of <token>.npz (eval.py --save_pred)")
    p.add_argument("--names", nargs="*", default=None, help="a column name per folder (default: the folder names)")
    p.add_argument("--occ_root", required=True, help="Occ3D labels: <occ_root>/<scene>/<token>/labels.npz")
    p.add_argument("--occ_eval_mask", default="camera_lidar", choices=["camera_lidar", "camera", "none"])
    p.add_argument("--readout", default="saved", choices=["saved", "threshold"],
                   help="saved = the run's read-out; threshold = opacity > --threshold with the semantic argmax")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out", default=None, help="markdown file (and .json beside it)")
    a = p.parse_args(argv)
    names = a.names or [os.path.basename(os.path.normpath(d)) for d in a.pred]
    if len(names) != len(a.pred):
        sys.exit(f"error: --names gives {len(names)} names for {len(a.pred)} --pred folders")
    files = [sorted(glob.glob(os.path.join(d, "*.npz"))) for d in a.pred]
    for d, f in zip(a.pred, files):
        if not f:
            sys.exit(f"error: --pred {d}: no <token>.npz in it (write them with eval.py --save_pred)")
    tokens = set.intersection(*[{os.path.basename(x)[:-4] for x in f} for f in files])
    if not tokens:
        sys.exit("error: the --pred folders share no sample")
    stats = [ErrorStats() for _ in a.pred]
    for tok in sorted(tokens):
        gt = None
        for d, st in zip(a.pred, stats):
            pr = load_prediction(os.path.join(d, tok + ".npz"))
            if gt is None:
                path = os.path.join(a.occ_root, pr["scene"], tok, "labels.npz")
                if not os.path.exists(path):
                    sys.exit(f"error: no labels for {tok}: {path} is missing (--occ_root)")
                with np.load(path) as z:
                    gt, mask = z["semantics"], occ_eval_mask(z["mask_camera"], z["mask_lidar"], a.occ_eval_mask)
            occ = pr["occupancy"] if a.readout == "saved" else \
                np.where(pr["opacity"] > a.threshold, pr["sem"], FREE_ID).astype(np.uint8)
            st.update(occ, gt, mask)
    sums = [s.summary() for s in stats]
    text = f"{len(tokens)} samples, mask {a.occ_eval_mask}, read-out {a.readout}\n\n" + table(names, sums)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(dict(zip(names, sums)), f, indent=1)
    return dict(zip(names, sums))


if __name__ == "__main__":
    main()
