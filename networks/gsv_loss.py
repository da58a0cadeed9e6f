"""Stage-2 (GSV) criterion: rendered maps + batch + camera motion -> loss and logs, all at the render size.

  * the temporal loss of both stages (``utils.losses.temporal_loss``): the previous / next frame warped into the
    current one through the rendered depth (clamped to [min_depth, max_depth]); 0.85 (1-SSIM)/2 + 0.15 L1,
    per-pixel minimum, auto-masking; ``reproj_invalid`` says what a warp that leaves its source image counts;
  * ``w_smooth`` x edge-aware smoothness of the disparity 1 / depth;
  * ``w_sem`` x cross-entropy of the rendered semantic logits against ``batch['sem']`` (with ``use_sem``),
    class-weighted as the authors' with ``sem_class_weights inv_sqrt_freq``;
  * ``w_entropy`` x an entropy term that makes occupancy decided, on ``entropy_on``:
      - ``gaussians`` (default, the authors' GS version): mean over ALL voxel Gaussians of -o log o, o the
        opacity. Its gradient -(log o + 1) pushes opacities below 1/e towards 0 and above 1/e towards 1, the same
        for every voxel wherever it sits along a ray;
      - ``alpha`` (this project's first version): binary entropy of the rendered alpha per pixel. Measured to
        start the collapse of stage 2 without labels: at initialisation every ray's alpha is ~0.99 (hundreds of
        voxels of opacity 0.1 on it), the entropy pushes it to 1, and d alpha / d o_i is largest for the first
        Gaussians on the ray (transmittance ~1), so the voxels next to the cameras turn opaque first and the
        rendered depth falls to ~0.3 m; then every warp leaves the image or is worse than no motion, the
        reprojection loss takes the identity error (no gradient) and nothing pulls the depth back;
  * ``w_tv`` x total variation of the voxel logits (mean |difference| of neighbouring voxels along x, y and z,
    all channels), the authors' ``weight_distortion`` in GS mode.
Pixels where ``batch['mask']`` is 0 (DDAD: the ego car's own body) are left out of the reprojection and semantic
terms.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.loss_graph import graphed_raw_terms
from utils.batch import self_occlusion
from utils.cli import above, at_least
from utils.constants import IGNORE_ID, SKY_ID
from utils.geometry import inverse_rigid
from utils.losses import opacity_entropy, semantic_ce, smoothness_loss, temporal_loss

# The authors' options.py class_frequencies, one per class id 0..17 (17 = free).
AUTHORS_CLASS_FREQUENCIES = (0, 18164955800, 734218842, 2336187448, 10996756106, 395414611, 638889260, 651023279,
                             117046208, 985341947, 7303776233, 43131984997, 0, 9342674867, 9525824742,
                             51204832885, 22848065525, 31841090018)
# What a checkpoint older than an option was trained with (options.merge_checkpoint_options).
CHECKPOINT_DEFAULTS = {"sem_class_weights": "none", "entropy_on": "alpha", "w_tv": 0.0,
                       "reproj_invalid": "identity", "entropy_schedule": [0, 0], "w_dist": 0.0,
                       "w_sky": 0.0, "w_dist_metric": 0.0, "photo_res": "render"}


OPTION_RANGES = {"dist_metric_scale": above(0), "w_dist_metric": at_least(0), "w_sky": at_least(0)}


def add_args(parser):
    g = parser.add_argument_group("stage 2 (GSV) losses", "the criterion of networks/gsv_loss.py (also uses "
                                  "w_smooth, min_depth and max_depth of stage 1)")
    g.add_argument("--w_sem", type=float, default=0.02, help="weight of the rendered semantic cross-entropy")
    g.add_argument("--sem_class_weights", type=str, default="inv_sqrt_freq", choices=["inv_sqrt_freq", "none"],
                   help="class weights of the semantic cross-entropy: inv_sqrt_freq = the authors' (runner.py "
                        "sem_criterion) 1 / sqrt(--class_frequencies), 0 where a frequency is 0, weighted mean over "
                        "pixels; none: every labelled pixel counts the same")
    g.add_argument("--class_frequencies", type=float, nargs="+", default=list(AUTHORS_CLASS_FREQUENCIES),
                   help="voxel count per class id 0..17 for --sem_class_weights (the authors' options.py "
                        "default; 0 for others and other_flat, so those 2D labels carry no weight)")
    g.add_argument("--w_entropy", type=float, default=0.0,
                   help="weight of the opacity entropy term (the authors': 0.1; measured here to turn the volume into "
                        "a fog or an empty volume, see README, 'Where our defaults differ')")
    g.add_argument("--entropy_on", type=str, default="gaussians", choices=["gaussians", "gaussians_binary", "alpha"],
                   help="gaussians: mean -o log o over every voxel Gaussian (the authors'); gaussians_binary: mean "
                        "binary entropy -o log o - (1-o) log(1-o) over the Gaussians (decides at 0.5 instead of 1/e); "
                        "alpha: binary entropy of the rendered alpha per pixel (starts a collapse of the depth "
                        "towards the cameras without labels, see networks/gsv_loss.py)")
    g.add_argument("--entropy_schedule", type=int, nargs=2, default=[0, 0], metavar=("START", "RAMP"),
                   help="the entropy weight is 0 before step START and rises linearly to --w_entropy over RAMP steps")
    g.add_argument("--w_dist", type=float, default=0.03,
                   help="weight of the depth spread along each ray: alpha Var(z) / E[z]^2 of the rendered weights of "
                        "the Gaussians (a distortion loss: small when each ray ends in one place, large for a fog; "
                        "0 for a transparent ray; GS rendering only)")
    g.add_argument("--photo_res", type=str, default="input", choices=["render", "input"],
                   help="resolution of the photometric loss and the smoothness: input = the rendered depth upsampled "
                        "(bilinear) to --input_size and the full images warped, as the authors' runner.py and "
                        "monodepth2 (the semantic and depth-spread terms stay at the render size); render = at "
                        "--render_size with the images area-downsampled to it. Measured on held-out synthetic "
                        "streets, three pairs (occ-round12c): occupancy equal within noise (mIoU* 21.37 vs 21.18, "
                        "geo IoU 43.50 vs 42.73), depth AbsRel 0.109-0.127 vs 0.117-0.204, same steps per second")
    g.add_argument("--w_dist_metric", type=float, default=0.0,
                   help="weight of the depth spread along each ray in metres: alpha Var(z) / --dist_metric_scale^2 "
                        "(--w_dist's spread, relative to E[z]^2, fades with range: a ray that ends in a 5 m slab at 30 "
                        "m costs it 0.002; on the synthetic set the ground is drawn thick from 20 m on, "
                        "docs/results/runs/2026-12-03/occ-lid). Measured negative: at 0.001 and 0.003 the depth "
                        "collapses towards the cameras (auto-mask 8.5 %%, AbsRel 0.70-0.80, occ-round12c). 0 = off")
    g.add_argument("--dist_metric_scale", type=float, default=0.4,
                   help="metres: the spread of --w_dist_metric counts in units of this (default one Occ3D voxel)")
    g.add_argument("--w_sky", type=float, default=0.0,
                   help="> 0 (with --use_sem): weight of -log(1 - alpha) of the rendered alpha on the pixels whose 2D "
                        "label is --sky_id (a ray to the sky crosses no occupied voxel; the release's 'sky is free', "
                        "said through the opacity). Measured negative on the synthetic set: the sky rays empty but "
                        "near surfaces render far (depth AbsRel 0.33-0.69 against 0.11; docs/results/runs/2026-12-03/"
                        "occ-lid). 0 = off")
    g.add_argument("--sky_id", type=int, default=SKY_ID,
                   help="id of sky in the 2D labels (left out of the semantic cross-entropy; --w_sky): 254 = this "
                        "project's (the Grounded-SAM labels' sky is read as 254); the synthetic set writes 255 for sky "
                        "and has no other unlabelled pixel")
    g.add_argument("--w_extra_views", type=float, default=0.0,
                   help="> 0: also render the 6 cameras at the previous and next frame's poses (the pose source's "
                        "motion, in the current ego frame) and add their temporal loss (the current images warped "
                        "into them), smoothness and depth spread with this weight: 3x the rays on the same volume "
                        "(a depth-only volume's ceiling rises from 68.8 to 82.7 geo IoU with the adjacent sweeps' "
                        "rays, docs/results/depth_to_occ.md); 0 = the current cameras only (the authors')")
    g.add_argument("--w_extra_sem", type=float, default=0.0,
                   help="> 0 (with --w_extra_views > 0 and --use_sem): also the semantic cross-entropy of the "
                        "previous / next frame's rendered cameras against that keyframe's own 2D labels, with this "
                        "weight: the silhouettes of the same volume from the viewpoints 0.5 s away, which constrain "
                        "surfaces that have too little texture for the photometric loss (docs/results/photo_depth.md; "
                        "measured negative: docs/results/runs/2026-12-03/occ-round8); neighbours without labels "
                        "(camera sweeps) are left out. 0 = off (the authors')")
    g.add_argument("--w_depth_oracle", type=float, default=0.0,
                   help="DIAGNOSTIC ONLY, uses ground truth: > 0 adds this weight times |rendered depth - LiDAR depth| "
                        "/ LiDAR depth at the points of --depth_root (the training set then loads them). It says how "
                        "much occupancy a better depth would buy; a run with it is not self-supervised and never a "
                        "result of the method. 0 = off")
    g.add_argument("--w_tv", type=float, default=0.0,
                   help="weight of the total variation of the voxel logits (the authors' weight_distortion in GS mode: "
                        "0.1)")
    g.add_argument("--reproj_invalid", type=str, default="identity", choices=["identity", "keep"],
                   help="a warp that lands outside the source image or behind its camera: identity = it cannot be "
                        "the per-pixel minimum (the pixel falls back to the no-motion error); keep = its "
                        "border-padded error counts like any other (monodepth2, the authors)")


def sem_class_weights(opt, n_cls):
    """(n_cls,) float weights of the semantic cross-entropy, or None (see --sem_class_weights)."""
    if opt.sem_class_weights == "none":
        return None
    freq = torch.tensor(opt.class_frequencies, dtype=torch.float64)
    if len(freq) < n_cls:
        raise ValueError(f"--class_frequencies has {len(freq)} values for {n_cls} semantic classes")
    w = torch.where(freq > 0, freq.clamp(min=1e-300).rsqrt(), torch.zeros_like(freq))
    return (w / w.mean())[:n_cls].float()  # the scale cancels in the weighted mean; kept as the authors'


def gaussian_entropy(opacity, eps=1e-8):
    """Mean of -o log(o + eps) over every entry of ``opacity`` (any shape, values in [0, 1]): the authors' term."""
    return -(opacity * torch.log(opacity + eps)).mean()


def binary_entropy(opacity, eps=1e-6):
    """Mean binary entropy -o log o - (1 - o) log(1 - o) over every entry of ``opacity`` (values in [0, 1])."""
    o = opacity.clamp(eps, 1 - eps)
    return -(o * o.log() + (1 - o) * (1 - o).log()).mean()


def _ray_moments(depth_acc, zsq_acc, alpha):
    """E[z] and Var(z) of the Gaussians' weights on each ray, from depth_acc = sum_i w_i z_i, zsq_acc = sum_i w_i
    z_i^2 and alpha = sum_i w_i (any equal shapes; no background)."""
    a = alpha.clamp(min=1e-4)
    mean = depth_acc / a
    return mean, (zsq_acc / a - mean * mean).clamp(min=0)


def depth_spread(depth_acc, zsq_acc, alpha, min_depth=0.1):
    """Mean over pixels of alpha Var(z) / E[z]^2 of the Gaussians' weights on each ray (``_ray_moments``). 0 where
    the weights sit at one depth or the ray is transparent; for a fog spread evenly over [0, 2 E[z]], 1/3 alpha."""
    mean, var = _ray_moments(depth_acc, zsq_acc, alpha)
    return (alpha * var / mean.clamp(min=min_depth) ** 2).mean()


def sky_loss(alpha, sky):
    """Mean of -log(1 - alpha) over the sky pixels: alpha (N, 1, h, w) or (N, h, w) rendered alpha, sky (N, h, w)
    bool. 0 (with a gradient) when no pixel is sky."""
    a = alpha.reshape(sky.shape).float().clamp(max=1 - 1e-4)
    if not sky.any():
        return a.sum() * 0
    return -torch.log1p(-a[sky]).mean()


def depth_spread_metric(depth_acc, zsq_acc, alpha, scale=0.4):
    """Mean over pixels of alpha Var(z) / scale^2 of the Gaussians' weights on each ray (``_ray_moments``): the
    spread in units of ``scale`` metres whatever the range; 0 for a transparent ray."""
    _, var = _ray_moments(depth_acc, zsq_acc, alpha)
    return (alpha * var).mean() / scale ** 2


def depth_spread_wanted(opt):
    """Whether the criterion needs sum_i w_i z_i^2 rendered (--w_dist or --w_dist_metric)."""
    return opt.w_dist > 0 or getattr(opt, "w_dist_metric", 0) > 0


def depth_oracle_loss(depth, depth_gt, max_depth):
    """Mean |d - d_gt| / d_gt over the LiDAR points (diagnostic; uses ground truth). depth: rendered (B, 6, 1, h, w)
    or (B, 6, h, w); depth_gt: (B, 6, H, W) at the image size, 0 where no point. The render is sampled bilinearly at
    every point (upsampled to H x W), so no point is dropped by the smaller render."""
    d = depth.flatten(0, 1)
    d = d if d.dim() == 4 else d[:, None]
    gt = depth_gt.flatten(0, 1)[:, None].to(d.dtype)
    up = F.interpolate(d, gt.shape[-2:], mode="bilinear", align_corners=False)
    m = (gt > 0) & (gt < max_depth)
    if not m.any():
        return d.sum() * 0
    return ((up - gt).abs() / gt.clamp(min=1e-3))[m].mean()


def total_variation(volume):
    """Mean |difference| of neighbours along the last three dims of ``volume`` (B, C, X, Y, Z), averaged."""
    return sum(volume.diff(dim=d).abs().mean() for d in (2, 3, 4)) / 3


def _visible(batch, size):
    """(B*6, 1, h, w) bool of the pixels not on the ego car's body (``self_occlusion`` at ``size``), None without
    masks."""
    valid = self_occlusion(batch, size)
    return None if valid is None else valid.flatten(0, 1) > 0.5


class GSVLoss(nn.Module):
    """forward(r, batch, T) -> (loss scalar, logs dict of detached scalars).

    r: the model's render dict: depth / alpha (B, 6, 1, h, w), sem (B, 6, C, h, w), logits (B, C+1, X, Y, Z),
    opacity (B, X, Y, Z), K (B, 6, 3, 3) at the render size. batch: imgs (B, 3, 6, 3, H, W) and the optional sem
    (B, 6, h, w), mask (B, 6, h', w'). T (B, 2, 6, 4, 4): current camera -> previous / next camera.
    """

    def __init__(self, opt, n_sem_classes):
        super().__init__()
        self.opt = opt
        self.step = 0  # the trainer's step (set_step), for --entropy_schedule
        self.log_details = True  # False (set_step): leave out the depth quantiles and fog statistics (log only)
        self.graph = False  # --graph_loss (utils/speed.py): raw_terms' forward and backward as a CUDA graph
        self._graphs = {}  # networks/loss_graph.py: input signature -> graphed raw_terms (not state)
        w = sem_class_weights(opt, n_sem_classes) if opt.use_sem else None
        self.register_buffer("sem_weight", w, persistent=False)

    def set_step(self, step, log=True):
        self.step, self.log_details = step, log

    def entropy_ramp(self):
        """Factor of --w_entropy at the current step (--entropy_schedule)."""
        start, ramp = self.opt.entropy_schedule
        if self.step < start:
            return 0.0
        return min(1.0, (self.step - start + 1) / ramp) if ramp > 0 else 1.0

    def forward(self, r, batch, T):
        terms, logs = self.terms(r, batch, T)
        loss = sum(terms.values())
        logs["loss"] = loss.detach()
        return loss, logs

    def terms(self, r, batch, T):
        """The weighted loss terms, dict name -> scalar tensor (their sum is the loss), and the logs."""
        if self.graph and not self.log_details:  # (--graph_loss: networks/loss_graph.py; eager where it cannot)
            raw, logs = graphed_raw_terms(self, r, batch, T)
        else:
            raw, logs = self.raw_terms(r, batch, T)
        opt, x = self.opt, self.opt.w_extra_views
        weights = {"reproj": 1.0, "smooth": opt.w_smooth, "entropy": opt.w_entropy * self.entropy_ramp(),
                   "tv": opt.w_tv, "sem": opt.w_sem, "dist": opt.w_dist, "dist_metric": opt.w_dist_metric,
                   "depth_oracle": opt.w_depth_oracle,
                   "reproj_extra": x, "smooth_extra": x * opt.w_smooth, "dist_extra": x * opt.w_dist,
                   "sem_extra": opt.w_extra_sem, "sky": opt.w_sky}
        terms = {k: weights[k] * v for k, v in raw.items()}
        logs.update({f"loss_{k}": v.detach() for k, v in raw.items()})
        if not self.log_details:  # (they wait for the GPU: only on the steps that are logged)
            return terms, logs
        d = r["depth"].detach().flatten(0, 1)  # the depth of the photometric loss, as raw_terms makes it
        if opt.photo_res == "input":
            d = F.interpolate(d, batch["imgs"].shape[-2:], mode="bilinear", align_corners=False)
        d = d.clamp(opt.min_depth, opt.max_depth)
        q = torch.quantile(d.flatten()[:: max(1, d.numel() // 100000)].float(),
                           torch.tensor([0.1, 0.5, 0.9], device=d.device))
        logs.update(mean_depth=d.mean(), depth_p10=q[0], depth_p50=q[1], depth_p90=q[2],
                    mean_alpha=r["alpha"].detach().mean(), mean_opacity=r["opacity"].detach().mean())
        logs.update(fog_stats(r))
        return terms, logs

    def raw_terms(self, r, batch, T):
        """The unweighted loss terms (dict name -> scalar tensor) and the logs that come with them (automask_kept,
        warp_valid, mask_visible): every term the options ask for, whatever its weight at this step."""
        opt = self.opt
        B, n = r["depth"].shape[:2]
        h, w = r["depth"].shape[-2:]
        imgs = F.interpolate(batch["imgs"].flatten(0, 2), (h, w), mode="area").view(B, -1, n, 3, h, w)
        valid = _visible(batch, (h, w))
        # the photometric loss and the smoothness: at the render size, or (--photo_res input, the authors') with the
        # rendered depth upsampled to the input images (monodepth2's full-resolution reprojection)
        if opt.photo_res == "input":
            H, W = batch["imgs"].shape[-2:]
            pimgs, pK = batch["imgs"].float(), batch["K"].flatten(0, 1)
            pdepth = F.interpolate(r["depth"].flatten(0, 1), (H, W), mode="bilinear", align_corners=False)
            pvalid = _visible(batch, (H, W))
        else:
            pimgs, pK, pdepth, pvalid = imgs, r["K"].flatten(0, 1), r["depth"].flatten(0, 1), valid
        # frames: previous, current, next (and with --near_stride the near previous / next, T's 3rd and 4th)
        target = pimgs[:, 1].flatten(0, 1)
        sources = [pimgs[:, f].flatten(0, 1) for f in range(pimgs.shape[1]) if f != 1]
        depth = pdepth.clamp(opt.min_depth, opt.max_depth)
        raw = {}  # unweighted
        raw["reproj"], maps = temporal_loss(target, sources, depth, pK,
                                            [T[:, k].flatten(0, 1) for k in range(len(sources))], target_mask=pvalid,
                                            invalid=opt.reproj_invalid)
        raw["smooth"] = smoothness_loss(1 / depth, target)
        if opt.entropy_on == "gaussians":
            raw["entropy"] = gaussian_entropy(r["opacity"])
        elif opt.entropy_on == "gaussians_binary":
            raw["entropy"] = binary_entropy(r["opacity"])
        else:
            raw["entropy"] = opacity_entropy(r["alpha"])
        if opt.w_dist > 0 and "zsq" in r:  # GS rendering (the volume renderer of the baseline does not give E[z^2])
            raw["dist"] = depth_spread(r["depth_acc"], r["zsq"], r["alpha"], opt.min_depth)
        if opt.w_dist_metric > 0 and "zsq" in r:
            raw["dist_metric"] = depth_spread_metric(r["depth_acc"], r["zsq"], r["alpha"], opt.dist_metric_scale)
        if "extra" in r:  # the previous / next frame's cameras: each its own target, the current images the source
            ex = r["extra"]
            cur = imgs[:, 1].flatten(0, 1)
            parts = {"reproj_extra": [], "smooth_extra": [], "dist_extra": []}
            for k, a in enumerate((0, 2)):
                d = ex["depth"][:, k].flatten(0, 1).clamp(opt.min_depth, opt.max_depth)
                tgt = imgs[:, a].flatten(0, 1)
                loss_k, _ = temporal_loss(tgt, [cur], d, r["K"].flatten(0, 1), [inverse_rigid(T[:, k].flatten(0, 1))],
                                          target_mask=valid, invalid=opt.reproj_invalid)
                parts["reproj_extra"].append(loss_k)
                parts["smooth_extra"].append(smoothness_loss(1 / d, tgt))
                if opt.w_dist > 0 and "zsq" in ex:
                    parts["dist_extra"].append(depth_spread(ex["depth_acc"][:, k], ex["zsq"][:, k], ex["alpha"][:, k],
                                                            opt.min_depth))
            raw.update({k: sum(v) / len(v) for k, v in parts.items() if v})
            if opt.w_extra_sem > 0 and "sem_adj" in batch and "sem" in ex:
                labels = batch["sem_adj"].flatten(0, 2)  # (B*2*6, h, w)
                labels = labels.masked_fill(labels == opt.sky_id, IGNORE_ID)
                if valid is not None:
                    labels = labels.masked_fill(~valid[:, 0].view(B, 1, n, h, w).expand(B, 2, n, h, w)
                                                .flatten(0, 2), 255)
                if (labels != 255).any():
                    raw["sem_extra"] = semantic_ce(ex["sem"].flatten(0, 2), labels, weight=self.sem_weight)
        if opt.w_depth_oracle > 0:
            if "depth_gt" not in batch:
                raise ValueError("--w_depth_oracle > 0 but the batch holds no depth_gt (this loader reads no LiDAR "
                                 "depth for training)")
            raw["depth_oracle"] = depth_oracle_loss(r["depth"], batch["depth_gt"], opt.max_depth)
        if opt.w_tv > 0:
            raw["tv"] = total_variation(r["logits"])
        if opt.use_sem and "sem" in batch:
            labels = batch["sem"].flatten(0, 1)
            sky = labels == opt.sky_id  # (before the fill below: --sky_id may be IGNORE_ID itself)
            if valid is not None:
                labels = labels.masked_fill(~valid[:, 0], IGNORE_ID)
                sky &= valid[:, 0]
            if opt.w_sky > 0:
                raw["sky"] = sky_loss(r["alpha"].flatten(0, 1), sky)
            raw["sem"] = semantic_ce(r["sem"].flatten(0, 1), labels.masked_fill(sky, IGNORE_ID),
                                     weight=self.sem_weight)
        logs = {"automask_kept": maps["mask"].float().mean(),
                "warp_valid": maps["warp_valid"].float().mean()}  # pixels with a source inside its image
        if valid is not None:
            logs["mask_visible"] = valid.float().mean()  # share of pixels left in by the self-occlusion mask
        return raw, logs


def fog_stats(r):
    """What tells a fog from occupancy without labels, from a render dict with ``seen_opacity`` and
    ``faint_alpha`` (networks/gsv_model.py; {} without them): scalars
      * seen_opacity: the alpha-weighted mean opacity of the Gaussians that make the pixels' alpha (crisp surfaces:
        near 1; a fog of faint Gaussians: near their opacity);
      * faint_alpha_share: the share of all rendered alpha carried by Gaussians of opacity below FAINT_OPACITY;
      * voxels_to_half: median over pixels with alpha > 0.5 of the number of Gaussians of the pixel's seen opacity
        that a ray needs to reach alpha 0.5, ln 0.5 / ln(1 - seen opacity) (1 for a surface, tens for a fog).
    """
    if "seen_opacity" not in r:
        return {}
    alpha = r["alpha"].detach().float()
    seen, faint = r["seen_opacity"].detach().float(), r["faint_alpha"].detach().float()
    total = alpha.sum().clamp(min=1e-6)
    out = {"seen_opacity": seen.sum() / total, "faint_alpha_share": faint.sum() / total}
    solid = alpha > 0.5
    if solid.any():
        o = (seen[solid] / alpha[solid]).clamp(1e-4, 1 - 1e-4)
        out["voxels_to_half"] = (math.log(0.5) / torch.log1p(-o)).clamp(min=1).median()
    return out
