"""Efficiency benchmark: GSV (voxel Gaussians splatted) against volume rendering, on this project's code.

The paper's claim (GaussianOcc, Sec. 4): rendering the 24x300x300 volume into 6 views at 180x320 is ~5x faster
with Gaussian splatting than with volume rendering (0.17 s vs 0.85 s on an A100) and a training iteration ~2.7x.

    python tools/bench_render.py --out_dir bench                    # CUDA + gsplat: the full benchmark (~5-6 min)
    python tools/bench_render.py --out_dir bench --skip_full_iter   # render part only
    python tools/bench_render.py --quick --device cpu --out_dir /tmp/b   # CPU smoke run (tiny sizes, < 1 min)

1. Render benchmark. For every grid (Z x X x Y, as the paper writes them; the volume is (X, Y, Z), X forward,
   over the Occ3D range [-40, 40]^2 x [-1, 5.4] m) and every render size (H x W), the 6 cameras of the real
   nuScenes scene-0916 rig (``datasets/synthetic/rig.py``; intrinsics of the 1600x900 images rescaled to H x W
   with the project's pixel-centre convention) render one synthetic street scene (ground layer with road /
   sidewalk / terrain, cars, trucks, a bus, pedestrians, cones, barriers, trees, buildings; a fuzzy one-voxel
   margin around objects and a few floaters; 5-10 % of the voxels occupied) given as an 18-class logit volume
   with requires_grad (last channel = free). Methods:
     * ``gsplat``: ``voxels_to_gaussians`` (opacity = 1 - p(free), features = the 17 semantic logits, pruning of
       opacity < 1/255 and of voxels behind every camera, as in GSVModel) + ``rasterize(backend="gsplat")``;
     * ``torch``: the same with the pure PyTorch reference rasteriser;
     * ``volume``: occupancy = 1 - p(free), features = the 17 semantic logits, ``render_volume`` (step = half a
       voxel, near 0.1 m, far 80 m, as GSVModel's ``--render_type volume``).
   The conversion from logits counts in every method. Gaussian scale: ``--gs_scale`` when given, else 0.375 x
   the horizontal voxel size (80 m / X), i.e. voxel / 2.67: 0.15 m at 16x200x200, 0.1 m at 24x300x300 (the
   paper's best fixed scale), 0.059 m at 32x512x512. Modes: ``fwd`` (under torch.no_grad, inference) and
   ``fwd+bwd`` (autograd on, backward of depth.mean() + alpha.mean() + features.mean() down to the logits).
   Each case: ``--warmup`` untimed runs, then up to ``--repeats`` timed runs (wall clock between
   torch.cuda.synchronize calls), median reported; the runs of one case stop at ``--max_seconds_per_case``
   (at least one timed run; when the warm-up alone passes the cap, its time is reported, marked). Peak memory =
   torch.cuda.max_memory_allocated over the case (after reset_peak_memory_stats), inputs included. A case whose
   time, extrapolated linearly in 6 H W / voxel size from the largest case already measured for the same method
   and mode, cannot fit warm-up + one run in the cap is skipped ("skipped (est. N s)"); cases that do not fit
   the remaining ``--time_budget`` are skipped too; out of memory is recorded as "OOM". gsplat without CUDA is
   "unavailable". Sanity check: for each GSV method, the median relative difference of expected depth (depth /
   alpha) to the volume rendering over pixels with alpha > 0.9 in both (``depth_rel_diff``).
2. Full training iteration: GSVModel at the paper's config (input 384x640, render 180x320, grid 300 300 24,
   the options' default encoder, random init, batch 1, ``--pose gt``, ``--use_sem true``) on random smooth
   images, the rig's K / cam2ego, ego poses prev / cur / next 1 m apart along x, random 2D labels. Timed: the
   trainer's step (zero_grad, forward under autocast when ``--amp``, backward, grad clip 5, AdamW step).
   Variants: gs + gsplat, volume, both with ``--amp bf16``, and gs + torch backend (last, when time is left).
   Note: a randomly initialised OccNet starts every voxel at opacity 0.1, so every voxel is a Gaussian (the
   worst case for splatting; a trained net prunes most of them).
3. Output (``--out_dir``): bench_render.md / .csv / .json and bench_render.png (log-scale grouped bars), with
   the device, torch / CUDA / gsplat versions and the date; the markdown tables are printed at the end.

Execution order: gsplat's first call (JIT compile, timed separately), the paper's case (24x300x300 at 180x320)
when it is in the lists, the training iterations, then the other render cases: all gsplat ones, then volume, then
torch, each by increasing work (so the time budget cuts the slow methods' biggest cases).
"""
import argparse
import csv
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.synthetic import rig  # noqa: E402
from networks.occ_net import VoxelGrid  # noqa: E402
from networks.volume_render import render_volume  # noqa: E402
from networks.voxel_gaussians import voxels_to_gaussians  # noqa: E402
from options import parse_args as parse_model_args  # noqa: E402
from utils.constants import CAMS, FREE_ID, NUM_SEM_CLASSES, OCC3D_RANGE  # noqa: E402
from utils.geometry import inverse_rigid, scale_intrinsics  # noqa: E402
from utils.rasterizer import gsplat_available, rasterize  # noqa: E402

METHODS = ("gsplat", "torch", "volume")
MODES = ("fwd", "fwd+bwd")
PAPER_GRID, PAPER_SIZE = (24, 300, 300), (180, 320)
NEAR, FAR = 0.1, 80.0  # GSVModel's min_depth / max_depth defaults
SCALE_PER_VOXEL = 0.375  # gs_scale = voxel / 2.67: 0.1 m at 24x300x300
FULL_DEFAULT_GRIDS = "16x200x200,24x300x300,32x512x512"
FULL_DEFAULT_SIZES = "180x320,240x520,360x640"
QUICK_GRIDS, QUICK_SIZES = "8x100x100", "24x40,36x64"  # isotropic 0.8 m voxels: GSV and VR comparable
# Both renderers see the same uniform volume (volume rendering has no contracted grid); no ImageNet file needed.
BENCH_NET = ["--encoder_weights", "none", "--contracted", "false"]
# A tiny GSVModel for --quick (the one of tests/test_gsv_model.py: this project's network).
QUICK_MODEL = ["--encoder_layers", "18", "--grid_size", "24", "24", "6", "--feat_dim", "16", "--voxel_feat_dim",
               "8", "--decoder_blocks", "1", "--input_size", "64", "112", "--render_size", "32", "56",
               "--image_neck", "fpn", "--feat_stride", "8", "--lift_visibility", "true", "--occ_decoder", "residual",
               *BENCH_NET]
PAPER_MODEL = ["--input_size", "384", "640", "--render_size", "180", "320", "--grid_size", "300", "300", "24",
               *BENCH_NET]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=str, default="bench_render", help="folder of the md / csv / json / png")
    p.add_argument("--device", type=str, default=None, help="cuda if available, else cpu")
    p.add_argument("--grids", type=str, default=None,
                   help=f"comma-separated Z x X x Y grids (default {FULL_DEFAULT_GRIDS}; --quick {QUICK_GRIDS})")
    p.add_argument("--sizes", type=str, default=None,
                   help=f"comma-separated H x W render sizes (default {FULL_DEFAULT_SIZES}; --quick {QUICK_SIZES})")
    p.add_argument("--methods", type=str, default=",".join(METHODS), help="subset of gsplat,torch,volume")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5; --quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per case before the timed ones")
    p.add_argument("--max_seconds_per_case", type=float, default=None,
                   help="stop timing a case after this many seconds (default 20; --quick 10)")
    p.add_argument("--time_budget", type=float, default=None,
                   help="seconds for the whole benchmark; later cases that do not fit are skipped "
                        "(default 330 = 5.5 min; --quick 120)")
    p.add_argument("--gs_scale", type=float, default=None,
                   help="fixed Gaussian scale in metres for every grid (default: 0.375 x horizontal voxel size)")
    p.add_argument("--seed", type=int, default=0, help="scene / input seed")
    p.add_argument("--quick", action="store_true", help="tiny grids, sizes and model: CPU smoke run")
    p.add_argument("--skip_full_iter", action="store_true", help="render benchmark only")
    p.add_argument("--full_iter_repeats", type=int, default=None, help="timed training steps (default 3; quick 1)")
    p.add_argument("--full_iter_torch", action="store_true",
                   help="also time the training iteration with the torch rasteriser (always when gsplat is "
                        "unavailable); on the GPU at the paper config it is slow (2M Gaussians at init)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--no_plot", action="store_true", help="do not write bench_render.png")
    return p


def parse_triplets(text, n):
    out = []
    for item in text.split(","):
        vals = tuple(int(v) for v in item.strip().lower().split("x"))
        if len(vals) != n or min(vals) <= 0:
            raise ValueError(f"expected {n} positive integers joined by 'x', got {item!r}")
        out.append(vals)
    return out


def gstr(grid):
    return "x".join(str(v) for v in grid)


# ----------------------------------------------------------------------------------------------------------------
# Inputs: cameras and a synthetic street scene
# ----------------------------------------------------------------------------------------------------------------
def rig_cameras(h, w, device):
    """The scene-0916 rig at h x w: viewmats (6, 4, 4) ego -> camera, Ks (6, 3, 3), cam2ego (6, 4, 4)."""
    K_full = torch.tensor(np.stack([rig.intrinsics(*rig.NUSC_IMG_HW, c) for c in CAMS]), dtype=torch.float32)
    Ks = scale_intrinsics(K_full, w / rig.NUSC_IMG_HW[1], h / rig.NUSC_IMG_HW[0])
    cam2ego = torch.tensor(rig.cam2ego(), dtype=torch.float32)
    return inverse_rigid(cam2ego).to(device), Ks.to(device), cam2ego.to(device)


class _Filler:
    """Writes axis-aligned metric boxes into a label volume (X, Y, Z): a voxel belongs to a box when its centre
    lies inside; a box thinner than a voxel still takes one voxel (like Occ3D's any-sub-point rule)."""

    def __init__(self, labels):
        self.labels = labels
        self.lo = OCC3D_RANGE[:3]
        self.size = [(OCC3D_RANGE[3 + i] - OCC3D_RANGE[i]) / n for i, n in enumerate(labels.shape)]

    def _range(self, a, b, axis):
        n = self.labels.shape[axis]
        i0 = math.ceil((a - self.lo[axis]) / self.size[axis] - 0.5)
        i1 = max(math.ceil((b - self.lo[axis]) / self.size[axis] - 0.5), i0 + 1)
        return min(max(i0, 0), n), min(max(i1, 0), n)

    def box(self, cx, cy, z0, lx, ly, lz, cls):
        (x0, x1), (y0, y1) = self._range(cx - lx / 2, cx + lx / 2, 0), self._range(cy - ly / 2, cy + ly / 2, 1)
        z0_, z1_ = self._range(z0, z0 + lz, 2)
        self.labels[x0:x1, y0:y1, z0_:z1_] = cls


def scene_labels(X, Y, Z, seed=0):
    """A street scene as Occ3D class ids (X, Y, Z) uint8 (17 = free); the same metric scene at every grid.

    Ego frame, z = 0 on the road: one ground layer (the one holding z = -0.05 m; road |y| < 7 m and a crossing
    road at x in [18, 28] m, sidewalk 7-10 m, terrain beyond), cars / trucks / a bus in 4 lanes, pedestrians,
    cones and barriers, trees along the kerbs, hollow buildings from |y| = 11 m on.
    """
    labels = torch.full((X, Y, Z), FREE_ID, dtype=torch.uint8)
    f = _Filler(labels)
    rng = np.random.default_rng(seed)
    xc = OCC3D_RANGE[0] + (torch.arange(X) + 0.5) * f.size[0]
    yc = OCC3D_RANGE[1] + (torch.arange(Y) + 0.5) * f.size[1]
    ay = yc.abs()[None].expand(X, Y)
    ground = torch.where(ay < 7, 11, torch.where(ay < 10, 13, 14))
    ground[(xc >= 18) & (xc < 28)] = 11
    kg = int((-0.05 - OCC3D_RANGE[2]) // f.size[2])
    labels[:, :, kg] = ground.to(torch.uint8)
    for lane_y in (-5.5, -2.0, 2.0, 5.5):  # vehicles
        x = -40 + rng.uniform(0, 6)
        while x < 40:
            r = rng.uniform()
            L, W, H, cls = ((rng.uniform(4, 5), rng.uniform(1.8, 2.0), rng.uniform(1.4, 1.7), 4) if r < 0.85 else
                            (rng.uniform(7, 9), 2.4, rng.uniform(2.8, 3.4), 10) if r < 0.95 else (11.0, 2.5, 3.2, 3))
            cx = x + L / 2
            if not (abs(cx) < 6 and abs(lane_y) < 3) and not 17 < cx < 29:  # keep the ego's spot and the crossing
                f.box(cx, lane_y + rng.uniform(-0.3, 0.3), 0.0, L, W, H, cls)
            x += L + rng.uniform(3, 15)
    for side in (-1, 1):
        for x in np.arange(-38, 38, 11.0):  # trees: trunk and crown
            x = x + rng.uniform(-2, 2)
            if 16 < x < 30:
                continue
            f.box(x, side * 9.5, 0.0, 0.4, 0.4, 2.5, 16)
            d = rng.uniform(2.5, 3.5)
            f.box(x, side * 9.5, 2.2, d, d, rng.uniform(2.0, 3.0), 16)
        for _ in range(6):  # pedestrians, cones, barriers on the sidewalk
            x, y = rng.uniform(-38, 38), side * rng.uniform(7.3, 9.0)
            kind = rng.integers(3)
            if kind == 0:
                f.box(x, y, 0.0, 0.6, 0.6, 1.75, 7)
            elif kind == 1:
                f.box(x, side * 7.2, 0.0, 0.4, 0.4, 0.7, 8)
            else:
                f.box(x, side * 7.2, 0.0, 2.0, 0.5, 1.0, 1)
        x = -40 + rng.uniform(0, 4)
        while x < 40:  # buildings
            L, D, H = rng.uniform(8, 18), rng.uniform(4, 7), rng.uniform(3.5, 7.0)
            cx = x + L / 2
            if not 15 < cx < 31:  # a shell: 0.5 m walls and roof (what LiDAR-made labels hold), floor slab
                f.box(cx, side * (11 + D / 2), 0.0, L, D, H, 15)
                f.box(cx, side * (11 + D / 2), 0.5, L - 1.0, D - 1.0, H - 1.0, FREE_ID)
            x += L + rng.uniform(4, 10)
    return labels


def scene_logits(labels, seed=0, device="cpu"):
    """Class ids (X, Y, Z) -> logits (18, X, Y, Z) float32 with a chosen opacity 1 - p(free) per voxel.

    Occupied voxels: opacity U(0.7, 0.999), semantic logits favour the class. Free voxels: opacity 1e-3 (pruned
    from the Gaussians, faint for the volume renderer), except 25 % of those next to an object (U(0.02, 0.3),
    an undecided margin) and 0.1 % floaters anywhere (U(0.01, 0.5)).
    """
    g = torch.Generator().manual_seed(seed)
    labels = labels.long()
    X, Y, Z = labels.shape
    occ = labels != FREE_ID
    opacity = torch.full(labels.shape, 1e-3)
    opacity[occ] = 0.7 + 0.299 * torch.rand(int(occ.sum()), generator=g)
    near_obj = torch.nn.functional.max_pool3d(occ.float()[None, None], 3, 1, 1)[0, 0].bool() & ~occ
    margin = near_obj & (torch.rand(labels.shape, generator=g) < 0.25)
    opacity[margin] = 0.02 + 0.28 * torch.rand(int(margin.sum()), generator=g)
    floaters = ~occ & (torch.rand(labels.shape, generator=g) < 1e-3)
    opacity[floaters] = 0.01 + 0.49 * torch.rand(int(floaters.sum()), generator=g)
    sem = 0.5 * torch.randn(NUM_SEM_CLASSES, X, Y, Z, generator=g)
    cls = torch.where(occ, labels, torch.randint(0, NUM_SEM_CLASSES, labels.shape, generator=g))
    sem.scatter_add_(0, cls[None], torch.full((1, X, Y, Z), 4.0))
    # p(free) = sigmoid(l_free - logsumexp(sem)) = 1 - opacity
    free = torch.logit(1 - opacity) + torch.logsumexp(sem, 0)
    logits = torch.cat([sem, free[None]], 0).to(device)
    return logits, {"occupied_fraction": float(occ.float().mean()),
                    "gaussian_candidates": int((opacity >= 1 / 255).sum())}


def smooth_images(shape, gen, device):
    """Random images with some structure: a low-resolution random field upsampled, plus fine noise, in [0, 1]."""
    *lead, c, h, w = shape
    n = int(np.prod(lead))
    low = torch.rand(n, c, max(h // 16, 2), max(w // 16, 2), generator=gen)
    img = torch.nn.functional.interpolate(low, (h, w), mode="bicubic", align_corners=False)
    img = (img + 0.05 * torch.randn(n, c, h, w, generator=gen)).clamp(0, 1)
    return img.view(*shape).to(device)


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_oom(err):
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def free_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_case(fn, device, warmup, repeats, cap):
    """Run fn warm-up + timed times (within ``cap`` seconds). Returns dict(times, peak_mb, base_mb, note, last)."""
    free_memory(device)
    base = peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    t_case = time.perf_counter()
    times, note, last, t_run = [], "", None, 0.0
    for i in range(warmup + repeats):
        if i >= warmup and i > 0 and time.perf_counter() - t_case + t_run > cap:
            break
        sync(device)
        t0 = time.perf_counter()
        last = fn()
        sync(device)
        t_run = time.perf_counter() - t0
        if i >= warmup:
            times.append(t_run)
    if not times:  # the warm-up alone reached the cap: report it
        times, note = [t_run], "warm-up run only (cap)"
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    return {"times": times, "peak_mb": peak, "base_mb": base, "note": note, "last": last}


def summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "n_runs": len(times)}


# ----------------------------------------------------------------------------------------------------------------
# Render benchmark
# ----------------------------------------------------------------------------------------------------------------
class RenderInputs:
    """Scene, logits and cameras of one grid (cached while the grid is in use)."""

    def __init__(self, grid, args, device):
        Z, X, Y = grid
        self.grid = grid
        self.labels = scene_labels(X, Y, Z, args.seed)
        self.logits, self.info = scene_logits(self.labels, args.seed, device)
        self.logits.requires_grad_(True)
        self.centres = VoxelGrid((X, Y, Z), [-40.0, 40.0, -40.0, 40.0, -1.0, 5.4]).centres(device)
        self.voxel_xy = (OCC3D_RANGE[3] - OCC3D_RANGE[0]) / X
        self.voxel_mean = float(np.mean([(OCC3D_RANGE[3 + i] - OCC3D_RANGE[i]) / n for i, n in enumerate((X, Y, Z))]))
        self.gs_scale = args.gs_scale if args.gs_scale is not None else SCALE_PER_VOXEL * self.voxel_xy
        self.opt = parse_model_args(["--gs_scale", f"{self.gs_scale:.6g}", "--grid_size", str(X), str(Y), str(Z),
                                     *BENCH_NET])


def render_fn(method, inp, cams, w, h, grad):
    """A closure that renders the 6 views once from the logits (conversion included) and, with ``grad``,
    back-propagates depth.mean() + alpha.mean() + features.mean()."""
    viewmats, Ks = cams

    def run():
        inp.logits.grad = None
        with torch.set_grad_enabled(grad):
            if method == "volume":
                probs = torch.softmax(inp.logits, 0)
                out = render_volume(1 - probs[-1], inp.logits[:-1], OCC3D_RANGE, viewmats, Ks, w, h,
                                    near=NEAR, far=FAR)
                n = 0
            else:
                g = voxels_to_gaussians(inp.logits[None], inp.centres, inp.opt, None, viewmats[None], NEAR)[0]
                out = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["features"], viewmats, Ks,
                                w, h, near=NEAR, backend=method)
                n = len(g["means"])
            if grad:
                (out["depth"].mean() + out["alpha"].mean() + out["features"].mean()).backward()
        return {"depth": out["depth"].detach(), "alpha": out["alpha"].detach(), "n_gaussians": n}

    return run


def depth_rel_diff(a, b):
    """Median |d_a - d_b| / d_b of the expected depth (depth / alpha) where both alphas exceed 0.9."""
    mask = (a["alpha"] > 0.9) & (b["alpha"] > 0.9)
    if int(mask.sum()) == 0:
        return None, 0.0
    da, db = (x["depth"][mask] / x["alpha"][mask] for x in (a, b))
    return float(((da - db).abs() / db.clamp(min=1e-3)).median()), float(mask.float().mean())


class Bench:
    def __init__(self, args, device):
        self.args, self.device = args, device
        self.t_start = time.perf_counter()
        self.rows, self.train_rows = [], []
        self.refs = {}  # (method, mode) -> (work, median seconds) of the largest case measured
        self.renders = {}  # (grid, size, method) -> forward outputs on the CPU, for the depth sanity check
        self._inputs = None
        self.gsplat_ok = device.type == "cuda" and gsplat_available()
        self.gsplat_first_call_s = None
        self.gsplat_error = "`import gsplat` fails"
        self.train_est = {}  # render_type -> median seconds of a training step already measured

    def elapsed(self):
        return time.perf_counter() - self.t_start

    def inputs(self, grid):
        if self._inputs is None or self._inputs.grid != grid:
            self._inputs = None
            free_memory(self.device)
            self._inputs = RenderInputs(grid, self.args, self.device)
        return self._inputs

    def warm_gsplat(self):
        """gsplat's first call compiles its CUDA kernels (JIT): do it once, outside every timed case."""
        if not self.gsplat_ok:
            return
        dev = self.device
        viewmats, Ks, _ = rig_cameras(36, 64, dev)
        n = 1000
        means = (torch.rand(n, 3, device=dev) * 20 - 10).requires_grad_(True)
        quats = torch.tensor([1.0, 0, 0, 0], device=dev).repeat(n, 1)
        t0 = time.perf_counter()
        try:
            out = rasterize(means, quats, torch.full((n, 3), 0.2, device=dev), torch.full((n,), 0.5, device=dev),
                            torch.rand(n, 17, device=dev), viewmats, Ks, 64, 36, backend="gsplat")
            (out["depth"].mean() + out["features"].mean()).backward()
            sync(dev)
        except Exception as err:  # a broken build: report gsplat as unavailable
            print(f"gsplat first call failed ({type(err).__name__}: {err}); gsplat reported as unavailable")
            self.gsplat_ok = False
            self.gsplat_error = f"{type(err).__name__}: {str(err)[:200]}"
            return
        self.gsplat_first_call_s = time.perf_counter() - t0
        print(f"gsplat first call (JIT compile / load): {self.gsplat_first_call_s:.1f} s", flush=True)

    def render_case(self, grid, size, method, mode):
        args, dev = self.args, self.device
        h, w = size
        row = {"section": "render", "grid": gstr(grid), "size": gstr(size), "method": method, "mode": mode,
               "status": "ok", "median_s": None, "min_s": None, "n_runs": 0, "peak_mem_mb": None,
               "base_mem_mb": None, "n_gaussians": None, "occupied_fraction": None, "gs_scale": None,
               "depth_rel_diff": None, "note": ""}
        self.rows.append(row)
        if method == "gsplat" and not self.gsplat_ok:
            row["status"] = "unavailable"
            row["note"] = "gsplat needs CUDA and `import gsplat`" if dev.type != "cuda" else \
                self.gsplat_error
            return row
        Z, X, Y = grid
        work = 6 * h * w / (80.0 / X + 80.0 / Y + 6.4 / Z) * 3
        key = (method, mode)
        est = None
        if key in self.refs:
            w_ref, t_ref = self.refs[key]
            est = t_ref * work / w_ref
        cap = args.max_seconds_per_case
        if est is not None and method != "gsplat" and est * (args.warmup + 1) > cap:
            row["status"], row["note"] = f"skipped (est. {est:.0f} s)", \
                f"extrapolated {est:.1f} s a run > cap {cap:.3g} s / {args.warmup + 1} runs"
            return row
        left = args.time_budget - self.elapsed()
        if left <= 0 or (est is not None and est * (args.warmup + 1) > left):
            row["status"], row["note"] = "skipped (time budget)", f"{max(left, 0):.0f} s of the budget left"
            return row
        print(f"[{self.elapsed():6.1f} s] render {gstr(grid)} @ {gstr(size)} {method:6s} {mode:8s}"
              + (f" (est. {est:.2f} s)" if est is not None else ""), end=" ", flush=True)
        try:
            inp = self.inputs(grid)
            row.update(occupied_fraction=round(inp.info["occupied_fraction"], 4),
                       gs_scale=round(inp.gs_scale, 4) if method != "volume" else None)
            viewmats, Ks, _ = rig_cameras(h, w, dev)
            fn = render_fn(method, inp, (viewmats, Ks), w, h, grad=mode == "fwd+bwd")
            res = time_case(fn, dev, args.warmup, args.repeats, min(cap, max(left, 0.0)))
            inp.logits.grad = None
        except Exception as err:
            row["status"] = "OOM" if is_oom(err) else "error"
            row["note"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            print(row["status"], row["note"], flush=True)
            fn = res = None
            free_memory(dev)
            return row
        row.update(summary(res["times"]), peak_mem_mb=_r(res["peak_mb"]), base_mem_mb=_r(res["base_mb"]),
                   note=res["note"])
        if method != "volume":
            row["n_gaussians"] = res["last"]["n_gaussians"]
        if mode == "fwd":
            self.renders[(row["grid"], row["size"], method)] = {k: res["last"][k].cpu() for k in ("depth", "alpha")}
        if key not in self.refs or work >= self.refs[key][0]:
            self.refs[key] = (work, row["median_s"])
        print(f"median {row['median_s'] * 1e3:.1f} ms ({row['n_runs']} runs)"
              + (f", peak {row['peak_mem_mb']:.0f} MiB" if row["peak_mem_mb"] is not None else ""), flush=True)
        return row

    def finish_render(self):
        """Depth sanity check of each GSV method against the volume rendering of the same case."""
        for row in self.rows:
            if row["method"] == "volume" or row["mode"] != "fwd":
                continue
            a = self.renders.get((row["grid"], row["size"], row["method"]))
            b = self.renders.get((row["grid"], row["size"], "volume"))
            if a is not None and b is not None:
                d, frac = depth_rel_diff(a, b)
                for r in self.rows:
                    if (r["grid"], r["size"], r["method"]) == (row["grid"], row["size"], row["method"]):
                        r["depth_rel_diff"] = None if d is None else round(d, 4)
                        r["depth_mask_fraction"] = round(frac, 4)

    # ------------------------------------------------------------------------------------------------------------
    def train_case(self, render_type, backend, amp):
        args, dev = self.args, self.device
        name = f"{render_type}" + (f" ({backend})" if render_type == "gs" else "") + (f" {amp}" if amp else "")
        row = {"section": "train_iter", "variant": name, "render_type": render_type,
               "backend": backend if render_type == "gs" else None, "amp": amp or "none", "status": "ok",
               "median_s": None, "min_s": None, "n_runs": 0, "peak_mem_mb": None, "n_gaussians": None, "note": ""}
        self.train_rows.append(row)
        if render_type == "gs" and backend == "gsplat" and not self.gsplat_ok:
            row["status"], row["note"] = "unavailable", "gsplat needs CUDA and `import gsplat`"
            return row
        if amp and dev.type != "cuda":
            row["status"], row["note"] = "skipped", "AMP is CUDA only (as in the trainer)"
            return row
        left = args.time_budget - self.elapsed()
        est = self.train_est.get(render_type)
        if left <= 0 or (est is not None and est * (args.warmup + 2) > left):
            row["status"], row["note"] = "skipped (time budget)", f"{max(left, 0):.0f} s of the budget left"
            return row
        print(f"[{self.elapsed():6.1f} s] train iteration {name}", end=" ", flush=True)
        argv = ["--stage", "gsv", "--pose", "gt", "--use_sem", "true", "--render_type", render_type,
                "--raster_backend", backend, "--amp", amp or "none", "--seed", str(args.seed)]
        argv += QUICK_MODEL if args.quick else PAPER_MODEL
        model = optim = batch = None
        try:
            self._inputs = None
            free_memory(dev)
            from networks.gsv_model import GSVModel
            opt = parse_model_args(argv)
            torch.manual_seed(args.seed)
            model = GSVModel(opt).to(dev).train()
            params = model.trainable_parameters()
            optim = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
            batch = train_batch(opt, dev, args.seed)
            amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

            def step():
                optim.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss, logs, _ = model(batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], opt.grad_clip)
                optim.step()
                return {"loss": float(loss.detach()), "n_gaussians": float(logs["num_gaussians"])}

            res = time_case(step, dev, max(args.warmup, 1), args.full_iter_repeats,
                            min(3 * args.max_seconds_per_case, max(left, 0.0)))
        except Exception as err:
            row["status"] = "OOM" if is_oom(err) else "error"
            row["note"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            print(row["status"], row["note"], flush=True)
            return row
        finally:
            model = optim = batch = step = None  # noqa: F841
            free_memory(dev)
        row.update(summary(res["times"]), peak_mem_mb=_r(res["peak_mb"]), note=res["note"],
                   n_gaussians=int(res["last"]["n_gaussians"]) if render_type == "gs" else None,
                   loss=round(res["last"]["loss"], 4))
        self.train_est[render_type] = row["median_s"]
        print(f"median {row['median_s']:.3f} s ({row['n_runs']} runs)"
              + (f", peak {row['peak_mem_mb']:.0f} MiB" if row["peak_mem_mb"] is not None else ""), flush=True)
        return row


def _r(x, nd=1):
    return None if x is None else round(x, nd)


def train_batch(opt, device, seed):
    """One plausible sample: smooth random images, the rig at the input size, ego poses 1 m apart along x."""
    g = torch.Generator().manual_seed(seed)
    H, W = opt.input_size
    h, w = opt.render_size
    _, K, cam2ego = rig_cameras(H, W, device)
    e2g = torch.eye(4).repeat(3, 6, 1, 1)
    e2g[0, :, 0, 3], e2g[2, :, 0, 3] = -1.0, 1.0
    return {"imgs": smooth_images((1, 3, 6, 3, H, W), g, device), "K": K[None], "cam2ego": cam2ego[None],
            "ego2global": e2g[None].to(device),
            "sem": torch.randint(0, NUM_SEM_CLASSES, (1, 6, h, w), generator=g).to(device)}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------
def environment(device, bench):
    try:
        from importlib.metadata import version
        gs_version = version("gsplat")
    except Exception:
        gs_version = "not installed"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"device": f"{device.type}: {name}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "gsplat": gs_version, "gsplat_usable": bench.gsplat_ok,
            "gsplat_first_call_s": _r(bench.gsplat_first_call_s),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def _ms(row):
    if row is None:
        return "-"
    if row["status"] != "ok":
        return row["status"]
    s = f"{row['median_s'] * 1e3:.1f}" if row["median_s"] < 10 else f"{row['median_s'] * 1e3:.0f}"
    return s + ("*" if row.get("note") else "")


def _mb(row):
    return "-" if row is None or row.get("peak_mem_mb") is None else f"{row['peak_mem_mb']:.0f}"


def markdown(meta, args, rows, train_rows):
    L = ["# Render / training efficiency: GSV (voxel Gaussians) vs volume rendering", "",
         f"- device: {meta['device']}; torch {meta['torch']} (CUDA {meta['cuda']}); gsplat {meta['gsplat']}"
         + (f" (first call {meta['gsplat_first_call_s']} s)" if meta["gsplat_first_call_s"] is not None else ""),
         f"- date: {meta['date']}; python {meta['python']}; {meta['torch_threads']} torch threads",
         f"- command: `{meta['command']}`",
         f"- per case: {args.warmup} warm-up + up to {args.repeats} timed runs, median; "
         f"cap {args.max_seconds_per_case:.3g} s "
         f"a case, budget {args.time_budget:.0f} s in all (used {meta['elapsed_s']:.0f} s)",
         "- scene: ground layer + cars / trucks / bus / pedestrians / cones / barriers / trees / buildings over "
         "[-40, 40]^2 x [-1, 5.4] m, 18-class logits (requires_grad); 6 cameras of the nuScenes scene-0916 rig",
         "- gs_scale = 0.375 x horizontal voxel size unless --gs_scale; VR: step = half a voxel, near 0.1, far 80 m",
         "- fwd = no_grad; fwd+bwd = backward of depth.mean() + alpha.mean() + features.mean() to the logits; "
         "the logits -> Gaussians / occupancy conversion is timed in all", ""]
    L += ["## Render (6 views), median ms", "",
          "| grid ZxXxY | size HxW | method | Gaussians | fwd ms | fwd peak MiB | fwd+bwd ms | fwd+bwd peak MiB "
          "| depth rel. diff vs VR | note |",
          "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    cases = []
    for r in rows:
        if (r["grid"], r["size"]) not in cases:
            cases.append((r["grid"], r["size"]))
    cases.sort(key=lambda c: (parse_triplets(c[0], 3)[0][0] * parse_triplets(c[0], 3)[0][1],
                              parse_triplets(c[1], 2)[0]))
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    for g, s in cases:
        for m in METHODS:
            f, b = find.get((g, s, m, "fwd")), find.get((g, s, m, "fwd+bwd"))
            if f is None and b is None:
                continue
            ng = next((x["n_gaussians"] for x in (f, b) if x and x.get("n_gaussians") is not None), None)
            dd = next((x.get("depth_rel_diff") for x in (f, b) if x and x.get("depth_rel_diff") is not None), None)
            notes = "; ".join(sorted({x["note"] for x in (f, b) if x and x.get("note")}))
            L.append(f"| {g} | {s} | {m} | {ng if ng is not None else '-'} | {_ms(f)} | {_mb(f)} | {_ms(b)} | "
                     f"{_mb(b)} | {'-' if dd is None else f'{100 * dd:.1f} %'} | {notes} |")
    L += ["", "`*`: see note. skipped (est. N s): extrapolated from the largest measured case of the same method "
          "and mode (linear in 6 H W / voxel size), too slow for the cap.", ""]
    L += ["## Speed-up of splatting over volume rendering (VR time / GSV time)", "",
          "| grid | size | gsplat fwd | gsplat fwd+bwd | torch fwd | torch fwd+bwd |",
          "| --- | --- | ---: | ---: | ---: | ---: |"]
    for g, s in cases:
        cells = []
        for m in ("gsplat", "torch"):
            for mode in MODES:
                a, v = find.get((g, s, m, mode)), find.get((g, s, "volume", mode))
                ok = a and v and a["status"] == "ok" and v["status"] == "ok"
                cells.append(f"{v['median_s'] / a['median_s']:.1f}x" if ok else "-")
        L.append(f"| {g} | {s} | " + " | ".join(cells) + " |")
    L += ["", "Paper (A100): 0.17 s vs 0.85 s to render 6 views at 180x320 from 24x300x300 (~5x).", ""]
    if train_rows:
        cfg = "tiny --quick config" if args.quick else "paper config: input 384x640, render 180x320, grid 300 300 24"
        L += [f"## Full training iteration (GSVModel, {cfg}, batch 1, AdamW step included)", "",
              "| variant | median s | peak MiB | Gaussians | speed-up vs volume (same amp) | note |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in train_rows:
            ref = next((x for x in train_rows if x["render_type"] == "volume" and x["amp"] == r["amp"]
                        and x["status"] == "ok"), None)
            sp = f"{ref['median_s'] / r['median_s']:.2f}x" if ref and r["status"] == "ok" else "-"
            med = f"{r['median_s']:.3f}" + ("*" if r.get("note") else "") if r["status"] == "ok" else r["status"]
            ng = r["n_gaussians"] if r["n_gaussians"] is not None else "-"
            L.append(f"| {r['variant']} | {med} | {_mb(r)} | {ng} | {sp} | {r.get('note', '')} |")
        L += ["", "Paper: training ~2.7x faster with GSV than with volume rendering. A randomly initialised OccNet "
              "puts every voxel at opacity 0.1, so every voxel in front of a camera is a Gaussian here.", ""]
    return "\n".join(L)


def speedups(rows, train_rows):
    """VR time / GSV time for every case and mode where both ran; training step: volume / gs at the same amp."""
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    out = {"render": [], "train_iter": []}
    for (g, s, m, mode), r in find.items():
        v = find.get((g, s, "volume", mode))
        if m != "volume" and v and r["status"] == "ok" and v["status"] == "ok":
            out["render"].append({"grid": g, "size": s, "method": m, "mode": mode,
                                  "speedup": round(v["median_s"] / r["median_s"], 3)})
    for r in train_rows:
        v = next((x for x in train_rows if x["render_type"] == "volume" and x["amp"] == r["amp"]
                  and x["status"] == "ok"), None)
        if r["render_type"] == "gs" and v and r["status"] == "ok":
            out["train_iter"].append({"variant": r["variant"], "speedup": round(v["median_s"] / r["median_s"], 3)})
    return out


def write_csv(path, rows, train_rows):
    keys = []
    for r in rows + train_rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        for r in rows + train_rows:
            wr.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})


def plot(path, meta, rows, train_rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = []
    for r in rows:
        if (r["grid"], r["size"]) not in cases:
            cases.append((r["grid"], r["size"]))
    find = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in rows}
    series = [(m, mode) for m in METHODS for mode in MODES]
    colours = {"gsplat": ("#1f77b4", "#aec7e8"), "torch": ("#2ca02c", "#98df8a"), "volume": ("#d62728", "#ff9896")}
    ncol = 2 if train_rows else 1
    fig, axes = plt.subplots(1, ncol, figsize=(max(8, 1.6 * len(cases)) + (5 if train_rows else 0), 6),
                             gridspec_kw={"width_ratios": [max(3, len(cases)), 2] if train_rows else [1]},
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    width = 0.8 / len(series)
    for j, (m, mode) in enumerate(series):
        xs, ys = [], []
        for i, (g, s) in enumerate(cases):
            r = find.get((g, s, m, mode))
            x = i - 0.4 + (j + 0.5) * width
            if r is not None and r["status"] == "ok":
                xs.append(x)
                ys.append(r["median_s"])
            elif r is not None:
                ax.text(x, 0.02, r["status"].split(" ")[0], rotation=90, fontsize=6, ha="center", va="bottom",
                        transform=ax.get_xaxis_transform())
        ax.bar(xs, ys, width, label=f"{m} {mode}", color=colours[m][0 if mode == "fwd" else 1],
               edgecolor="black", linewidth=0.3)
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(cases) - 0.5)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{g}\n{s}" for g, s in cases], fontsize=7)
    ax.set_ylabel("median time per render of 6 views (s)")
    ax.set_title("render: grid ZxXxY / size HxW", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis="y", which="both", alpha=0.3)
    if train_rows:
        ax = axes[0, 1]
        names = [r["variant"] for r in train_rows]
        vals = [r["median_s"] if r["status"] == "ok" else 0 for r in train_rows]
        cols = [colours["volume" if r["render_type"] == "volume" else r["backend"] or "gsplat"][0 if r["amp"] == "none"
                else 1] for r in train_rows]
        ax.bar(range(len(names)), [v if v > 0 else float("nan") for v in vals], color=cols, edgecolor="black",
               linewidth=0.3)
        for i, r in enumerate(train_rows):
            if r["status"] != "ok":
                ax.text(i, 0.5, r["status"].split(" ")[0], rotation=90, fontsize=7, ha="center", va="bottom",
                        transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("median time per training step (s)")
        ax.set_title("full training iteration", fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle(f"{meta['device']} | torch {meta['torch']} | gsplat {meta['gsplat']} | {meta['date'][:16]}",
                 fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
def resolve_args(argv=None):
    args = build_parser().parse_args(argv)
    q = args.quick
    args.grids = args.grids or (QUICK_GRIDS if q else FULL_DEFAULT_GRIDS)
    args.sizes = args.sizes or (QUICK_SIZES if q else FULL_DEFAULT_SIZES)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 5)
    args.max_seconds_per_case = args.max_seconds_per_case or (10.0 if q else 20.0)
    args.time_budget = args.time_budget or (120.0 if q else 330.0)
    args.full_iter_repeats = args.full_iter_repeats or (1 if q else 3)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in args.methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}: choose from {', '.join(METHODS)}")
    return args


def main(argv=None):
    args = resolve_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    grids, sizes = parse_triplets(args.grids, 3), parse_triplets(args.sizes, 2)
    os.makedirs(args.out_dir, exist_ok=True)
    bench = Bench(args, device)
    bench.warm_gsplat()

    def work(c):
        (Z, X, Y), (h, w) = c
        return 6 * h * w / (80.0 / X + 80.0 / Y + 6.4 / Z)

    cases = sorted(((g, s) for g in grids for s in sizes), key=work)
    first = [c for c in cases if c == (PAPER_GRID, PAPER_SIZE)]
    for g, s in first:
        for m in args.methods:
            for mode in MODES:
                bench.render_case(g, s, m, mode)
    train_variants = [("gs", "gsplat", None), ("volume", "gsplat", None), ("gs", "gsplat", "bf16"),
                      ("volume", "gsplat", "bf16")]
    if not args.skip_full_iter:
        for rt, be, amp in train_variants:
            bench.train_case(rt, be, amp)
    # The rest, cheapest method first (gsplat, then volume, then torch), each by increasing work: what the
    # time budget cuts is the slow methods' biggest cases.
    for m in sorted(args.methods, key=("gsplat", "volume", "torch").index):
        for g, s in cases:
            if (g, s) in first:
                continue
            for mode in MODES:
                bench.render_case(g, s, m, mode)
    if not args.skip_full_iter and (args.full_iter_torch or not bench.gsplat_ok):
        bench.train_case("gs", "torch", None)
    bench.finish_render()

    meta = environment(device, bench)
    meta["command"] = "python tools/bench_render.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta["elapsed_s"] = round(bench.elapsed(), 1)
    meta["settings"] = {k: v for k, v in vars(args).items()}
    md = markdown(meta, args, bench.rows, bench.train_rows)
    paths = {k: os.path.join(args.out_dir, f"bench_render.{k}") for k in ("md", "csv", "json", "png")}
    with open(paths["md"], "w") as f:
        f.write(md + "\n")
    write_csv(paths["csv"], bench.rows, bench.train_rows)
    with open(paths["json"], "w") as f:
        json.dump({"meta": meta, "render": bench.rows, "train_iter": bench.train_rows,
                   "speedup_vs_volume": speedups(bench.rows, bench.train_rows)}, f, indent=1)
    if not args.no_plot:
        try:
            plot(paths["png"], meta, bench.rows, bench.train_rows)
        except Exception as err:  # a plot problem must not lose the numbers
            print(f"plot failed: {type(err).__name__}: {err}")
    print()
    print(md)
    print(f"written: {', '.join(paths.values())} ({bench.elapsed():.0f} s)")
    return {"meta": meta, "render": bench.rows, "train_iter": bench.train_rows, "paths": paths}


if __name__ == "__main__":
    main()
