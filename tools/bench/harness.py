"""The timing harness: warm-up + timed runs of a case within a cap (median, peak memory), the render cases
(voxel Gaussians with gsplat or the torch backend, volume rendering) and the GSVModel training iteration, with
time-budget and out-of-memory handling. Rows are plain dicts (see ``Bench.render_case`` / ``Bench.train_case``)."""
import gc
import statistics
import time

import numpy as np
import torch

from networks.occ_net import VoxelGrid
from networks.volume_render import render_volume
from networks.voxel_gaussians import voxel_opacity, voxels_to_gaussians
from options import parse_args as parse_model_args
from tools.bench.scene import rig_cameras, scene_labels, scene_logits, train_batch
from utils.constants import OCC3D_RANGE
from utils.rasterizer import gsplat_available, rasterize
from utils.speed import stage

METHODS = ("gsplat", "torch", "volume")
MODES = ("fwd", "fwd+bwd")
NEAR, FAR = 0.1, 80.0  # GSVModel's min_depth / max_depth defaults
SCALE_PER_VOXEL = 0.375  # gs_scale = voxel / 2.67: 0.1 m at 24x300x300
# Both renderers see the same uniform volume (volume rendering has no contracted grid); no ImageNet file needed.
BENCH_NET = ["--encoder_weights", "none", "--contracted", "false"]
# A tiny GSVModel for --quick (the one of tests/test_gsv_model.py: this project's network).
QUICK_MODEL = ["--encoder_layers", "18", "--grid_size", "24", "24", "6", "--feat_dim", "16", "--voxel_feat_dim",
               "8", "--decoder_blocks", "1", "--input_size", "64", "112", "--render_size", "32", "56",
               "--image_neck", "fpn", "--feat_stride", "8", "--lift_visibility", "true", "--occ_decoder", "residual",
               *BENCH_NET]
PAPER_MODEL = ["--input_size", "384", "640", "--render_size", "180", "320", "--grid_size", "300", "300", "24",
               *BENCH_NET]


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


def make_train_step(model, opt, device, log_details=True, frozen=False):
    """The trainer's optimiser step (zero_grad, forward under autocast ``opt.amp``, backward, grad clip, AdamW)
    as ``step(batch on the device) -> (loss as a float, logs)``. ``log_details=False``: the criterion leaves out its
    log-only statistics, as on the trainer's steps that write no scalars (all but one in --log_every).
    ``frozen``: every group's learning rate 0, so the optimiser runs its kernels but the weights stay as they are
    and every step does the same work (with the weights moving on one batch, the rasteriser's work moves with the
    opacities: one H100 took 0.072-0.089 s a step of this project's network along one run of 60 steps)."""
    from trainer import param_groups
    from utils.speed import autocast_cache, make_optimizer
    groups = param_groups(model.trainable_parameters())
    for g in groups:  # the trainer's lr of each group at a step without warm-up or decay (0 when frozen)
        g["lr"] = 0.0 if frozen else opt.lr * g["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    optim = make_optimizer(groups, opt, device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp)

    if hasattr(model, "set_step"):
        model.set_step(0, log=log_details)

    def step(batch):
        optim.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None,
                            cache_enabled=autocast_cache(opt)):
            loss, logs, _ = model(batch)
        loss.backward()
        with stage("optimizer"):
            torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            optim.step()
        return float(loss.detach()), logs
    return step


def summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "n_runs": len(times)}


def _r(x, nd=1):
    return None if x is None else round(x, nd)


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
        # the scene's logits are built for opacity 1 - softmax[free] (scene.py), and both renderers read it
        self.opt = parse_model_args(["--gs_scale", f"{self.gs_scale:.6g}", "--grid_size", str(X), str(Y), str(Z),
                                     "--opacity", "softmax", *BENCH_NET])


def render_fn(method, inp, cams, w, h, grad):
    """A closure that renders the 6 views once from the logits (conversion included) and, with ``grad``,
    back-propagates depth.mean() + alpha.mean() + features.mean()."""
    viewmats, Ks = cams

    def run():
        inp.logits.grad = None
        with torch.set_grad_enabled(grad):
            if method == "volume":
                opacity = voxel_opacity(inp.logits[None], inp.opt.opacity)[0]
                out = render_volume(opacity, inp.logits[:-1], OCC3D_RANGE, viewmats, Ks, w, h,
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
        model = train_step = batch = None
        try:
            self._inputs = None
            free_memory(dev)
            from networks.gsv_model import GSVModel
            opt = parse_model_args(argv)
            torch.manual_seed(args.seed)
            model = GSVModel(opt).to(dev).train()
            train_step = make_train_step(model, opt, dev)
            batch = train_batch(opt, dev, args.seed)

            def step():
                loss, logs = train_step(batch)
                return {"loss": loss, "n_gaussians": float(logs["num_gaussians"])}

            res = time_case(step, dev, max(args.warmup, 1), args.full_iter_repeats,
                            min(3 * args.max_seconds_per_case, max(left, 0.0)))
        except Exception as err:
            row["status"] = "OOM" if is_oom(err) else "error"
            row["note"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            print(row["status"], row["note"], flush=True)
            return row
        finally:
            model = train_step = batch = step = None  # noqa: F841
            free_memory(dev)
        row.update(summary(res["times"]), peak_mem_mb=_r(res["peak_mb"]), note=res["note"],
                   n_gaussians=int(res["last"]["n_gaussians"]) if render_type == "gs" else None,
                   loss=round(res["last"]["loss"], 4))
        self.train_est[render_type] = row["median_s"]
        print(f"median {row['median_s']:.3f} s ({row['n_runs']} runs)"
              + (f", peak {row['peak_mem_mb']:.0f} MiB" if row["peak_mem_mb"] is not None else ""), flush=True)
        return row
