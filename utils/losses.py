"""Self-supervised losses: photometric (SSIM + L1) with per-pixel minimum and auto-masking, the temporal loss of
both stages built on it, edge-aware smoothness, 2D semantic cross-entropy and the opacity entropy term.

Masks are bool tensors or float tensors of 0 / 1 (anything > 0.5 counts as inside).
"""
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.geometry import warp
from utils.pool_kernels import avg_pool3
from utils.precision import full_precision


def _as_bool(mask):
    return mask if mask.dtype == torch.bool else mask > 0.5


def _and(mask, other=None):
    return mask if other is None else mask & other


def masked_mean(x, mask=None):
    """Mean of ``x`` over the entries where ``mask`` is set (mask broadcasts to x).

    Entries outside the mask never reach the result, even if they are inf / NaN. An empty mask gives 0 that
    still carries a (zero) gradient to x.
    """
    if mask is None:
        return x.mean()
    x, mask = torch.broadcast_tensors(x, _as_bool(mask))
    total = torch.where(mask, x, torch.zeros_like(x)).sum()
    return total / mask.sum().clamp(min=1)


class SSIM(nn.Module):
    """Per-pixel structural similarity with 3x3 box windows and reflection padding.

    forward(x, y): (B, C, H, W) images in [0, 1] -> (B, C, H, W) SSIM index (1 = identical).
    Constants C1 = 0.01^2, C2 = 0.03^2 (dynamic range 1).
    """

    C1 = 0.01 ** 2
    C2 = 0.03 ** 2

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1)
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x, y):
        pool = avg_pool3 if _SSIM_POOL["impl"] == "fused" else self.pool
        x, y = self.pad(x), self.pad(y)
        mu_x, mu_y = pool(x), pool(y)
        var_x = pool(x * x) - mu_x * mu_x
        var_y = pool(y * y) - mu_y * mu_y
        cov = pool(x * y) - mu_x * mu_y
        num = (2 * mu_x * mu_y + self.C1) * (2 * cov + self.C2)
        den = (mu_x * mu_x + mu_y * mu_y + self.C1) * (var_x + var_y + self.C2)
        return num / den


_ssim = SSIM()
_SSIM_POOL = {"impl": "torch"}  # --ssim_pool_impl (set_ssim_pool)


def set_ssim_pool(impl):
    """``--ssim_pool_impl``: the SSIM's 3x3 means through nn.AvgPool2d (torch) or utils/pool_kernels.avg_pool3
    (fused: one Triton kernel a pass on CUDA, the same numbers). Process-wide; utils.speed.prepare_model sets it."""
    if impl not in ("torch", "fused"):
        raise ValueError(f"--ssim_pool_impl must be torch or fused, got {impl!r}")
    _SSIM_POOL["impl"] = impl


def _photometric(pred, target, alpha):
    l1 = (pred - target).abs().mean(1, keepdim=True)
    dssim = ((1 - _ssim(pred, target)) / 2).clamp(0, 1).mean(1, keepdim=True)
    return alpha * dssim + (1 - alpha) * l1


def _smoothness(disp, img):
    d = disp / (disp.mean(dim=(2, 3), keepdim=True) + 1e-7)
    dx_d = (d[..., :, 1:] - d[..., :, :-1]).abs()
    dy_d = (d[..., 1:, :] - d[..., :-1, :]).abs()
    dx_i = (img[..., :, 1:] - img[..., :, :-1]).abs().mean(1, keepdim=True)
    dy_i = (img[..., 1:, :] - img[..., :-1, :]).abs().mean(1, keepdim=True)
    return (dx_d * torch.exp(-dx_i)).mean() + (dy_d * torch.exp(-dy_i)).mean()


_EAGER = {"photometric": _photometric, "smoothness": _smoothness}
_impl = dict(_EAGER)


def compile_losses(enabled):
    """``--compile_loss``: the per-pixel photometric error (SSIM + L1) and the smoothness run through torch.compile
    (their ~40 elementwise and pooling operators per call fused into a few kernels: fewer passes over the images and
    fewer launches), or eagerly again. Process-wide; utils.speed.prepare_model sets it from the option. The same
    function (tests/test_speed_options.py); the first call of each image size compiles (seconds to a minute). Where
    torch.compile fails (no compiler, an unsupported setup), the call warns once, names the option, and the eager
    function is used from then on."""
    for name, fn in _EAGER.items():
        _impl[name] = _CompiledOrEager(name, fn) if enabled else fn


class _CompiledOrEager:
    """``fn`` through torch.compile; if that raises, a warning and ``fn`` itself from then on (an error of the
    inputs raises again there)."""

    def __init__(self, name, fn):
        self.name, self.fn, self.compiled = name, fn, torch.compile(fn, dynamic=False)

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001 (inductor raises many kinds; the eager call re-raises real ones)
                warnings.warn(f"--compile_loss: torch.compile of the {self.name} loss failed ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}); the eager function is used (set "
                              "--compile_loss false to skip the attempt)")
                self.compiled = None
        return self.fn(*args)


def losses_compiled():
    return _impl["photometric"] is not _EAGER["photometric"]


@full_precision
def photometric_error(pred, target, alpha=0.85):
    """alpha (1 - SSIM) / 2 + (1 - alpha) |pred - target|, both averaged over channels.

    pred, target: (B, C, H, W). Returns (B, 1, H, W).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    return _impl["photometric"](pred, target, alpha)


def photometric_errors(target, images, alpha=0.85):
    """photometric_error of each of ``images`` (a list of (B, C, H, W)) against ``target`` (B, C, H, W), computed in
    one call on the images stacked along the batch. Returns (B, len(images), H, W)."""
    n, B = len(images), target.shape[0]
    err = photometric_error(torch.cat(images, 0), target.repeat(n, 1, 1, 1), alpha)  # (n B, 1, H, W)
    return err.view(n, B, *err.shape[2:]).transpose(0, 1)


@full_precision
def reprojection_loss(target, warped, sources=None, valid=None, alpha=0.85, target_mask=None, automask=True):
    """Temporal photometric loss with monodepth2's per-pixel minimum over sources and auto-masking.

    target: (B, 3, H, W). warped: list of (B, 3, H, W), each source image warped into the target view.
    sources: list of (B, 3, H, W) unwarped source images, or None for no auto-masking. valid: optional list of
    (B, 1, H, W) masks, one per warped image; an invalid source cannot be the minimum.
    With sources (auto-masking): every pixel counts, with min(best warped error, best identity error) (identity
    error + 1e-5 noise to break ties on static, textureless pixels), averaged over ALL pixels; a pixel with no
    valid source takes its identity error. So the loss can never be lowered by pushing pixels out of the source
    images or by making the warp worse than no motion: those pixels just fall back to a constant (no gradient).
    (Averaging over the kept pixels only would reward exactly that: a run of stage 1 sent its translation to
    800 m, where no pixel had a valid source and the loss was 0.)
    Without sources: the mean of the best warped error over the pixels that have a valid source.
    target_mask: optional (B, 1, H, W); target pixels outside it (e.g. the ego car's body) are left out entirely.
    automask False (with sources): a pixel keeps its best warped error wherever some source is valid, even when no
    motion would explain it better; only pixels without a valid source fall back to the identity error.
    Returns (loss scalar, maps: dict of (B, 1, H, W) ``reproj`` min warped error (inf where no source is valid),
    ``identity`` min identity error (only with sources), ``mask`` bool: pixels where the warp wins (with
    sources) or that have a valid source (without)).
    """
    if not warped:
        raise ValueError("reprojection_loss needs at least one warped image")
    # every warped (and source) image against the target in ONE photometric_error call, the images stacked along
    # the batch: the same values, a quarter of the operators and launches of one call per image
    both = photometric_errors(target, list(warped) + list(sources or []), alpha)  # (B, S (+ S), H, W)
    errors = both[:, :len(warped)]
    if valid is not None:
        if len(valid) != len(warped):
            raise ValueError(f"valid has {len(valid)} masks for {len(warped)} warped images")
        ok = torch.cat([_as_bool(v) for v in valid], dim=1)
        errors = torch.where(ok, errors, torch.full_like(errors, float("inf")))
    reproj = errors.min(dim=1, keepdim=True).values
    maps = {"reproj": reproj}
    inside = None if target_mask is None else _as_bool(target_mask)
    if sources is None:
        maps["mask"] = _and(torch.isfinite(reproj), inside)
        return masked_mean(reproj, maps["mask"]), maps
    identity = both[:, len(warped):].contiguous()  # (the noise below laid out as before)
    identity = identity + torch.randn_like(identity) * 1e-5
    maps["identity"] = identity.min(dim=1, keepdim=True).values
    wins = reproj < maps["identity"] if automask else torch.isfinite(reproj)
    maps["mask"] = _and(wins, inside)
    return masked_mean(torch.where(wins, reproj, maps["identity"]), inside), maps


def temporal_loss(target, sources, depth, K, T, target_mask=None, invalid="identity", alpha=0.85, automask=True):
    """The temporal photometric loss of both stages: each source image warped into the target view through the
    target's ``depth`` and the camera motion (``utils.geometry.warp``), then ``reprojection_loss`` (per-pixel
    minimum over the sources, auto-masking over ALL pixels).

    target: (N, 3, H, W); sources: list of (N, 3, H, W); depth: (N, 1, H, W) target camera z, metres; K: (N, 3, 3)
    at H x W; T: list of (N, 4, 4), target camera -> camera of each source. target_mask: optional (N, 1, H, W),
    pixels left out (the ego car's body). invalid: a warp that leaves its source image or lands behind its camera
    is ``identity``: never the per-pixel minimum (the pixel takes its no-motion error), or ``keep``: its border-
    padded error counts like any other (monodepth2's and the authors'; stage 2's ``--reproj_invalid``).
    automask: ``reprojection_loss``'s (False: a pixel with a valid warp always takes its warped error).
    Returns (loss scalar, maps of ``reprojection_loss`` + ``warp_valid`` (N, 1, H, W) bool: some source valid).
    """
    if invalid not in ("identity", "keep"):
        raise ValueError(f"invalid must be identity or keep, got {invalid!r}")
    # every source warped in ONE call (stacked along the batch, the depth and K repeated): the same values, half
    # the operators and launches of one call per source
    n, N = len(sources), target.shape[0]
    warped, ok = warp(torch.cat(list(sources), 0), depth.repeat(n, 1, 1, 1), K.repeat(n, 1, 1), torch.cat(list(T), 0))
    warped, ok = warped.split(N), ok.split(N)
    loss, maps = reprojection_loss(target, list(warped), sources, list(ok) if invalid == "identity" else None,
                                   alpha, target_mask=target_mask, automask=automask)
    maps["warp_valid"] = torch.cat(ok, 1).any(1, keepdim=True)
    return loss, maps


@full_precision
def smoothness_loss(disp, img):
    """Edge-aware first-order smoothness of the mean-normalised disparity.

    disp: (B, 1, H, W). img: (B, C, H, W) same size. Returns a scalar:
    mean |dx d| exp(-mean_c |dx I|) + mean |dy d| exp(-mean_c |dy I|), d = disp / mean(disp) per image.
    """
    if disp.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"disp {tuple(disp.shape)} and img {tuple(img.shape)} must have the same size")
    return _impl["smoothness"](disp, img)


@full_precision
def ground_hinge(depth, plane, margin=0.2, valid=None):
    """One-sided ground term: a ray that goes down meets something no farther than the road plane, so depth beyond
    the plane depth x (1 + margin) is penalised, mean of relu(log depth - log plane - log(1 + margin)) over the pixels
    whose ray meets the plane (and ``valid``). depth, plane (N, 1, H, W) (plane inf: no constraint). Returns (loss,
    share of those pixels beyond the margin)."""
    below = torch.isfinite(plane) if valid is None else torch.isfinite(plane) & _as_bool(valid)
    ref = torch.where(below, plane, depth.detach()).clamp(min=1e-3)
    excess = F.relu(torch.log(depth.clamp(min=1e-3)) - torch.log(ref) - math.log1p(margin))
    return masked_mean(excess, below), masked_mean((excess > 0).float(), below)


def road_on_plane(road, plane, max_depth=20.0, valid=None):
    """(N, 1, H, W) bool: the road pixels (``road``) whose ray meets the road plane (``plane`` depth, inf where the
    ray does not go down) within ``max_depth`` metres, and ``valid`` where given: the pixels the road terms hold."""
    on = _as_bool(road) & torch.isfinite(plane) & (plane <= max_depth)
    return on if valid is None else on & _as_bool(valid)


def ground_road(depth, plane, road, max_depth=20.0, valid=None):
    """Two-sided ground term on the road's pixels: a pixel labelled road (``road``, e.g. the 2D pseudo-labels'
    driveable surface) lies where its ray meets the road plane, so mean |log depth - log plane| over the road pixels
    whose ray meets the plane within ``max_depth`` metres (and ``valid``): an L1 in log depth, robust to the labels'
    edges and to the road's own slope beyond the near field. depth, plane (N, 1, H, W) (plane inf: the ray does not
    go down), road (N, 1, H, W) bool. Returns (loss, share of those pixels, share of them more than 10 % off)."""
    on = road_on_plane(road, plane, max_depth, valid)
    ref = torch.where(on, plane, depth.detach()).clamp(min=1e-3)
    err = (torch.log(depth.clamp(min=1e-3)) - torch.log(ref)).abs()
    return masked_mean(err, on), on.float().mean(), masked_mean((err > math.log(1.1)).float(), on)


@full_precision
def road_motion(target, sources, plane, road, K, T, max_depth=20.0, valid=None, automask=True, alpha=0.85):
    """The temporal loss (``temporal_loss``) of the road's own pixels warped through the road plane's depth, not the
    network's: the plane is metric (the rig's calibration fixes it), so only the motion ``T`` can lower the error, and
    the scale of its translation is what the road's texture says (on scene-0916's keyframes the summed error is
    lowest at 1.00-1.035 x the recorded translation and 8-10 % higher at 0.8 / 1.25 x:
    tools/diagnostics/road_motion_real.py). target (N, 3, H, W), sources list of (N, 3, H, W), plane (N, 1, H, W)
    (inf: the ray does not go down), road (N, 1, H, W) bool, K (N, 3, 3), T list of (N, 4, 4) target camera -> each
    source's camera. Averaged over the road pixels whose ray meets the plane within ``max_depth`` (and ``valid``).
    ``automask`` (monodepth2's, as the temporal term): a pixel takes min(warped error, no-motion error), so a motion
    near zero, where a large warp of the textured road first gets worse before it gets better, is not held there
    (without it the pose net's translation stayed at 2-14 % of the recorded one on the fixture, CPU). Returns
    (loss, share of all pixels it holds)."""
    on = road_on_plane(road, plane, max_depth, valid)
    depth = torch.where(on, plane, torch.ones_like(plane)).detach()
    loss, _ = temporal_loss(target, sources, depth, K, T, target_mask=on, alpha=alpha, automask=automask)
    return loss, on.float().mean()


def log_grid(span, points):
    """``points`` scales spaced evenly in log from 1 / span to span (1.0 in the middle for an odd count)."""
    if span <= 1 or points < 3:
        raise ValueError(f"a scale grid needs span > 1 and at least 3 points, got {span}, {points}")
    return torch.exp(torch.linspace(-math.log(span), math.log(span), points, dtype=torch.float64))


@full_precision
@torch.no_grad()
def road_error_curve(target, sources, plane, road, K, T_of, grid, max_depth=20.0, valid=None, alpha=0.85):
    """The road's photometric error (``road_motion``'s, with the auto-mask) for each motion of a family, pooled over
    every road pixel of the batch, no gradient: ``T_of(g)`` gives, for each value g of ``grid``, the list of
    (N, 4, 4) target camera -> source camera motions (e.g. the translation scaled by g). Returns (curve (len(grid),)
    float64, number of road pixels). Over the translation's scale the least value is what the metric road says the
    scale is (on both the synthetic set and scene-0916 at 1.00-1.035 x the recorded motion; beyond ~2x the auto-mask
    makes it a plateau, below ~0.3x the no-motion error: tools/diagnostics/road_motion_real.py), provided the
    translation's direction is right: a heading 10 / 20 deg off moves it to 0.87 / 0.58 pooled over four synthetic
    keyframe items, to 1.15 / 1.31 on another (yaw 3 deg off: 0.96 / 1.30; tools/diagnostics/road_scale_bias.py,
    docs/results/runs/2026-12-06/stage1-road-scale-cpu)."""
    on = road_on_plane(road, plane, max_depth, valid)
    depth = torch.where(on, plane, torch.ones_like(plane))
    curve = [temporal_loss(target, sources, depth, K, T_of(float(g)), target_mask=on, alpha=alpha)[0].double()
             for g in grid]
    return torch.stack(curve), on.sum()


def curve_minimum(curve, grid, log=True):
    """(grid value of the least value, contrast): the argmin refined by a parabola through it and its two neighbours
    (in log of the grid with ``log``, for a grid of scales; else linear, e.g. angles), the grid's end itself where the
    least value is at an end, and contrast = max / min - 1 of the curve (how much the curve says: ~0 where every value
    gives the no-motion error)."""
    g = grid.double().to(curve.device)
    c, x = curve.double(), torch.log(g) if log else g
    i = int(torch.argmin(c))
    best = x[i]
    if 0 < i < len(c) - 1:
        y0, y1, y2 = c[i - 1], c[i], c[i + 1]
        den = y0 - 2 * y1 + y2
        if den > 0:
            best = x[i] + 0.5 * (y0 - y2) / den * (x[i + 1] - x[i])
    return float(torch.exp(best) if log else best), float(c.max() / c.min().clamp(min=1e-12) - 1)


def semantic_ce(logits, labels, ignore_index=255, weight=None):
    """Cross-entropy averaged over labelled pixels.

    logits: (B, C, H, W). labels: (B, H, W) int64 class ids in [0, C) or ``ignore_index``.
    weight: optional (C,) class weights; then the mean is weighted, sum_i w[y_i] ce_i / sum_i w[y_i] (torch's
    ``cross_entropy(weight=...)``, as the authors' sem_criterion), and classes of weight 0 drop out.
    Returns a scalar; 0 (with a gradient) when every pixel is ignored or has weight 0.
    """
    if logits.dim() != 4 or labels.shape != (logits.shape[0],) + logits.shape[2:]:
        raise ValueError(f"labels {tuple(labels.shape)} must be (B, H, W) of logits {tuple(logits.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {labels.dtype}")
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"class weight {tuple(weight.shape)} must have one value per class ({logits.shape[1]})")
    known = labels != ignore_index
    if not labels.is_cuda:  # (on the GPU the check would wait for it every step: the loaders check the label files)
        bad = known & ((labels < 0) | (labels >= logits.shape[1]))
        if bad.any():
            raise ValueError(f"labels contain ids outside [0, {logits.shape[1]}) other than ignore_index "
                             f"{ignore_index}: {labels[bad].unique().tolist()[:10]}")
    if weight is not None:
        weight = weight.to(logits.dtype)
    ce = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="sum")
    if weight is None:
        return ce / known.sum().clamp(min=1)
    total = (weight[labels.clamp(0, logits.shape[1] - 1)] * known).sum()  # ignored pixels indexed harmlessly, dropped
    return ce / total.clamp(min=1e-12)


def opacity_entropy(alpha, eps=1e-6):
    """Mean binary entropy -(a log a + (1 - a) log(1 - a)) in nats, a clamped to [eps, 1 - eps].

    Small when opacities are decided (near 0 or 1), log 2 at 0.5. alpha: any shape, values in [0, 1].
    """
    a = alpha.clamp(eps, 1 - eps)
    return -(a * torch.log(a) + (1 - a) * torch.log(1 - a)).mean()
