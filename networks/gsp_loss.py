"""Stage-1 (GSP) criterion: depth outputs + ego motion + batch -> loss and logs, all at the input size.

Averaged over the 4 scales of the depth net, each upsampled to the input size (monodepth2):
  * the temporal loss (``utils.losses.temporal_loss``): the previous / next frame warped into the current one
    through the depth and the ego motion mapped to each camera, per-pixel minimum, auto-masking;
  * ``w_smooth`` / 2^scale x edge-aware smoothness of the disparity;
and, in the main phase with ``use_gsp``, ``w_gsp`` x the GSP cross-view loss (``utils/gsp.py``): the only term
that knows the metric baseline between cameras, hence the scale of depth and pose; with ``w_ground`` > 0 (off by
default) the one-sided ground term (``utils.losses.ground_hinge``: no depth beyond the road plane). With
``gsp_scale_lock`` (off by default) the temporal term cannot move the global scale of a depth map: the scale then
comes from GSP alone (``scale_locked``). Pixels where ``batch['mask']`` is 0 (DDAD: the ego car's own body) are left out of every term.
"""
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.depth_net import NUM_SCALES, disp_to_depth
from utils.batch import self_occlusion
from utils.cli import str2bool
from utils.constants import OCC_CLASSES
from utils.errors import BadData
from utils.geometry import capture_synced_cam2ego, ego_motion_to_cam, ground_plane_depth, rescale_K_to
from utils.gsp import cross_view_loss
from utils.losses import (curve_minimum, ground_hinge, ground_road, log_grid, road_motion, road_error_curve,
                          smoothness_loss, temporal_loss)
from utils.rasterizer import rasterize

ROAD_ID = OCC_CLASSES.index("driveable_surface")


def add_args(parser):
    g = parser.add_argument_group("stage 1 (GSP) losses", "the criterion of networks/gsp_loss.py")
    g.add_argument("--use_gsp", type=str2bool, default=True,
                   help="GSP cross-view loss (off = ablation: depth and pose lose the metric scale)")
    g.add_argument("--w_gsp", type=float, default=0.1, help="weight of the GSP cross-view photometric loss")
    g.add_argument("--w_smooth", type=float, default=1e-3,
                   help="weight of the edge-aware disparity smoothness (stage 2 reads it too)")
    g.add_argument("--gsp_automask", type=str2bool, default=True,
                   help="monodepth2's auto-mask in the temporal loss: a pixel that no motion explains better than "
                        "the warp keeps its warped error, else takes the no-motion error (no gradient). false: every "
                        "pixel with a valid warp keeps its warped error (pixels with none still fall back). Measured "
                        "off on the synthetic streets (CPU, depth oracle): the road went 7x too far, held-out AbsRel "
                        "0.241 -> 2.38 (docs/results/runs/2026-12-04/stage1-cars-cpu)")
    g.add_argument("--gsp_scale_relative", type=str2bool, default=False,
                   help="Gaussian scale = predicted value x pixel depth (constant size in pixels) instead of metres")
    g.add_argument("--gsp_erode", type=int, default=4, help="erosion of the cross-view overlap mask, pixels")
    g.add_argument("--gsp_mask", type=str, default="rendered", choices=["rendered", "geometric"],
                   help="cross-view overlap mask: rendered = splat opacity > 0.5 (follows the predicted depth); "
                        "geometric = frustum overlap from the calibration only (see utils/gsp.py)")
    g.add_argument("--gsp_sync", type=str2bool, default=True,
                   help="cross-view term with each camera where it was at its own capture time (the batch's "
                        "cam_time; the ego motion of this step spread over the cameras' time offsets, "
                        "utils.geometry.capture_synced_cam2ego) instead of the calibration alone. nuScenes' cameras "
                        "fire over ~42 ms: the ego moves ~0.2 m between the two left cameras, whose baseline is 0.5 m, "
                        "and the term's scale minimum moved off 1 on real keyframes. No effect where the cameras "
                        "fire together (the synthetic set, DDAD: one timestamp per sample)")
    g.add_argument("--w_ground", type=float, default=0.0,
                   help="weight of the one-sided ground term (utils.losses.ground_hinge): a pixel whose ray goes down "
                        "is penalised for a depth beyond where the ray meets the road plane x (1 + --ground_margin). "
                        "Metric and the same on every street (the rig's calibration fixes the plane); needs no "
                        "texture, which the near road on real keyframes lacks (docs/results/runs/2026-12-04/"
                        "fixture-photo-evidence-cpu). Off: at 0.5 on the real fixture (CPU) the near field improved "
                        "but the whole depth scale halved, a bound cannot set a scale (runs/2026-12-04/"
                        "fixture-s1-ground-cpu)")
    g.add_argument("--ground_height", type=float, default=0.0,
                   help="the road's height in the ego frame, metres: the LiDAR points on road-labelled pixels within "
                        "10 m say 0.036 on nuScenes scene-0916 and 0.00 on the synthetic set (tools/data/"
                        "occ_to_2d_labels.py; all the bottom third's points, kerbs and pavements too: 0.08 / 0.05, "
                        "tools/diagnostics/ground_plane_real.py)")
    g.add_argument("--ground_margin", type=float, default=0.2,
                   help="--w_ground: depth up to this factor beyond the plane is free (downhill roads, the plane "
                        "height's error: 3 %% of scene-0916 LiDAR points below the horizon lie beyond 1.2 x the plane)")
    g.add_argument("--ground_mode", type=str, default="hinge", choices=["hinge", "road", "road_hinge"],
                   help="--w_ground: hinge = the one-sided bound on every pixel whose ray goes down; road = two-sided "
                        "(utils.losses.ground_road) on the pixels the 2D labels call driveable surface: their depth "
                        "is where the ray meets the plane (needs --use_sem true and --sem_root; keyframes only: "
                        "camera sweeps carry no labels); road_hinge = road, and the hinge on the other pixels (what "
                        "stands on the road is no farther than the road behind it)")
    g.add_argument("--ground_max_depth", type=float, default=20.0,
                   help="--ground_mode road: only road pixels whose ray meets the plane within this many metres (the "
                        "plane fits the near road: on scene-0916 95 %% of the road-labelled LiDAR points within 5 m "
                        "lie within 10 %% of it, 50 %% of those at 10-20 m; tools/data/occ_to_2d_labels.py)")
    g.add_argument("--ground_shape_only", type=str2bool, default=False,
                   help="--w_ground: the term gets no gradient along each depth map's global scale (scale_locked), "
                        "so it can bring the near road in against the far field but cannot shrink the whole map "
                        "(what the plain term did on the real fixture: runs/2026-12-04/fixture-s1-ground-cpu)")
    g.add_argument("--ground_scale_only", type=str2bool, default=False,
                   help="--w_ground: the term moves each depth map's global scale only (shape_locked), the shape is "
                        "left to the photometric terms. With --ground_mode road on the synthetic streets (recorded "
                        "motion, CPU) the road's two-sided term taught the network to paint the plane over the cars "
                        "standing on it (car AbsRel 0.63 -> 1.30): docs/results/runs/2026-12-05/fixture-s1-road-cpu")
    g.add_argument("--ground_steps", type=int, default=0,
                   help="--w_ground: the term only in the first N training steps (a warm-up that sets the metric "
                        "scale, after which the photometric terms keep it), and never in the refine phase, which "
                        "continues a main phase that had it; 0: every step of either phase")
    g.add_argument("--w_road_motion", type=float, default=0.0,
                   help="weight of the road-motion term (main phase; utils.losses.road_motion): the road pixels (2D "
                        "labels' driveable surface within --ground_max_depth) warped to the adjacent frames through "
                        "the road plane's depth (--ground_height), so only the motion can lower their error: it "
                        "ties the translation's scale to the metric road (needs --use_sem true and --sem_root). "
                        "Off: beyond ~2x the true motion the term is a plateau, and on synthetic keyframes (CPU) the "
                        "pose net overshot to 5-7x (docs/results/runs/2026-12-06/fixture-s1-road-motion-cpu)")
    g.add_argument("--road_motion_automask", type=str2bool, default=True,
                   help="--w_road_motion: a road pixel takes min(warped error, no-motion error) as the temporal term's "
                        "auto-mask (false: the warped error; then the translation stayed near zero on the fixture)")
    g.add_argument("--w_road_scale", type=float, default=0.0,
                   help="weight of the road-scale term (main phase): each step, with no gradient, the road pixels (2D "
                        "labels' driveable surface within --ground_max_depth, at the road plane's metric depth) are "
                        "warped to the adjacent frames with the pose net's motion, its translation scaled over a log "
                        "grid (--road_scale_span, --road_scale_points); the scale s of the least error, pooled over "
                        "the batch, is a measurement, and the term is mean |log |t| - stopgrad(log s |t|)| over the "
                        "batch's translations t: the road says how far the ego went, the term pulls the pose net there "
                        "(needs --use_sem true and --sem_root). The road's error as a loss (--w_road_motion) has a "
                        "plateau beyond ~2x; its least value does not. Off: on the CPU (96 x 160) it held the pose net's "
                        "translation short from step 0 (along a wrong heading the least error is not at the true "
                        "scale) and from step 120 pulled the scale 25-35 %% too low on both data sets "
                        "(docs/results/runs/2026-12-06/stage1-road-scale-cpu)")
    g.add_argument("--road_scale_from", type=int, default=0,
                   help="--w_road_scale: the term from this main-phase step on (before it the temporal term learns "
                        "the translation's direction: from the first step on, the term held the pose net's "
                        "translation at 0.2-0.4x with its heading ~30 deg off on synthetic keyframes, CPU: along a "
                        "wrong heading the road's least error is not at the true scale)")
    g.add_argument("--road_scale_span", type=float, default=4.0,
                   help="--w_road_scale: the grid runs from 1 / span to span x the current translation")
    g.add_argument("--road_scale_points", type=int, default=25, help="--w_road_scale: grid points (odd: 1 included)")
    g.add_argument("--road_scale_heading", type=float, default=20.0,
                   help="--w_road_scale: before the scale, the translation's heading is searched over +-this many "
                        "degrees about the ego's up axis (at the current length; the scale is then searched at the "
                        "best heading): along a heading 10 / 20 deg off the road's least error moved to 0.87 / 0.58 of "
                        "the true scale on four synthetic keyframe items, to 1.15 / 1.31 on another "
                        "(tools/diagnostics/road_scale_bias.py); 0: the pose net's heading as it is")
    g.add_argument("--road_scale_heading_points", type=int, default=9,
                   help="--w_road_scale: points of the heading grid (odd: 0 included)")
    g.add_argument("--road_scale_downsample", type=int, default=2,
                   help="--w_road_scale: the search runs at the input size / this (area-averaged images)")
    g.add_argument("--road_scale_min_contrast", type=float, default=0.05,
                   help="--w_road_scale: no pull in a step whose curve varies less than this (max / min - 1): every "
                        "scale gives about the no-motion error, e.g. while the translation is still near zero")
    g.add_argument("--gsp_scale_lock", type=str2bool, default=False,
                   help="main phase with GSP: the temporal loss gets no gradient along each depth map's global scale "
                        "(depth x exp(g - stopgrad(g)), g = mean log depth), so only the cross-view term sets the "
                        "metric scale. Off by default: once the pose net can learn (gsp_rot_scale) the temporal "
                        "loss's scale gradient is what balances it against GSP; every locked run with the pose fix "
                        "drifted or diverged, every unlocked one converged")


# what a checkpoint older than the option was trained with: the cross-view term on the calibration alone
CHECKPOINT_DEFAULTS = {"gsp_sync": False}


def shape_locked(depth):
    """Same values as depth (N,1,H,W), but its gradient only along each map's global scale (the shape detached): a loss
    of it can set how far the whole map is, not its shape (the complement of ``scale_locked``)."""
    g = depth.log().mean((1, 2, 3), keepdim=True)
    return depth.detach() * torch.exp(g - g.detach())


def scale_locked(depth):
    """Same values as depth (N,1,H,W), but no gradient along each map's global scale: the gradient of any loss
    L(depth) w.r.t. a factor s in depth x s (per map) is zero at s = 1, shape gradients pass unchanged."""
    g = depth.log().mean((1, 2, 3), keepdim=True)
    return depth * torch.exp(g.detach() - g)


def road_pixels(batch, hw, flag):
    """(N, 1, H, W) bool: the pixels the batch's 2D labels call driveable surface, at the size ``hw``; a clear error
    naming ``flag`` when the batch has no labels."""
    if "sem" not in batch:
        raise BadData(f"{flag} reads the road's pixels from the 2D labels: set --use_sem true and --sem_root "
                      "(tools/data/occ_to_2d_labels.py makes labels from occupancy)")
    sem = F.interpolate(batch["sem"].flatten(0, 1)[:, None].float(), hw, mode="nearest")
    return sem == ROAD_ID


class GSPLoss(nn.Module):
    """forward(out, poses, batch) -> (loss scalar, logs dict of detached scalars, pictures dict).

    out: the depth net's outputs for the B*6 current images (``GSPModel.depth_outputs``: ("disp", s) per scale,
    "depth" (B*6,1,H,W) metres, "gs_scale" (B*6,1,H,W)); poses (B,2,4,4): current ego -> previous / next ego;
    batch: imgs (B,3,6,3,H,W) (the originals: the losses never see the colour-augmented copy), K (B,6,3,3) at the
    input size, cam2ego (B,6,4,4), optional mask (B,6,h,w). pictures: {"gsp": the cross-view renders, masks and
    targets, detached} in the main phase with GSP.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.rasterize = functools.partial(rasterize, backend=opt.raster_backend)
        self.step = 0  # the trainer's step (set_step), for --ground_steps

    def set_step(self, step, log=True):
        self.step = step

    def road_scale(self, target, sources, K, cam2ego, poses, batch, valid, hw):
        """--w_road_scale: (loss, logs). The road's error (``utils.losses.road_error_curve``, at the input size /
        --road_scale_downsample) first over the heading of the translation (turned about the ego's up axis by up to
        +-``--road_scale_heading`` deg; along a wrong heading the road's least error is not at the true scale, see
        road_error_curve), then over its scale at the best heading; mean |log |t| - stopgrad(log s* |t|)| over every translation of ``poses``
        (B, F, 4, 4); zero (with a gradient) where the scale curve is flatter than --road_scale_min_contrast."""
        opt = self.opt
        road = road_pixels(batch, hw, "--w_road_scale")
        size = tuple(max(1, x // opt.road_scale_downsample) for x in hw)
        small = lambda x: F.interpolate(x, size, mode="area")  # noqa: E731
        near = lambda x: F.interpolate(x.float(), size, mode="nearest") > 0.5  # noqa: E731
        Ks = rescale_K_to(K, hw, size)
        plane = ground_plane_depth(Ks, cam2ego.flatten(0, 1), size, opt.ground_height)
        P = poses.detach().float()

        def moved(s, heading=0.0):
            Q = P.clone()
            c, d = math.cos(math.radians(heading)), math.sin(math.radians(heading))
            x, y = Q[..., 0, 3].clone(), Q[..., 1, 3].clone()
            Q[..., 0, 3], Q[..., 1, 3] = c * x - d * y, d * x + c * y
            Q[..., :3, 3] *= s
            return [ego_motion_to_cam(Q[:, k], cam2ego).flatten(0, 1) for k in range(Q.shape[1])]

        args = (small(target), [small(x) for x in sources], plane, near(road), Ks)
        rest = (opt.ground_max_depth, None if valid is None else near(valid))
        heading = 0.0
        if opt.road_scale_heading > 0:
            grid = torch.linspace(-opt.road_scale_heading, opt.road_scale_heading, opt.road_scale_heading_points)
            curve, _ = road_error_curve(*args, lambda a: moved(1.0, a), grid, *rest)
            heading, _ = curve_minimum(curve, grid, log=False)
        scales = log_grid(opt.road_scale_span, opt.road_scale_points)
        curve, npx = road_error_curve(*args, lambda s: moved(s, heading), scales, *rest)
        s_best, contrast = curve_minimum(curve, scales)
        t = poses[..., :3, 3].norm(dim=-1).clamp(min=1e-4)  # (B, F)
        used = contrast >= opt.road_scale_min_contrast and int(npx) > 0
        goal = torch.log(t.detach()) + math.log(s_best)
        loss = (torch.log(t) - goal).abs().mean() if used else t.sum() * 0.0
        logs = {"road_scale": torch.tensor(s_best), "road_scale_contrast": torch.tensor(contrast),
                "road_scale_used": torch.tensor(float(used)), "road_scale_heading": torch.tensor(heading)}
        return loss, logs

    def forward(self, out, poses, batch):
        opt = self.opt
        imgs, K, cam2ego = batch["imgs"], batch["K"], batch["cam2ego"]
        b, _, n, _, h, w = imgs.shape
        valid = self_occlusion(batch, (h, w))
        valid = None if valid is None else valid.flatten(0, 1)  # (B*6,1,H,W)
        # frames: previous, current, next (and with --near_stride the near previous / next: poses 3rd and 4th)
        T = [ego_motion_to_cam(poses[:, k], cam2ego).flatten(0, 1) for k in range(poses.shape[1])]
        target = imgs[:, 1].flatten(0, 1)
        sources = [imgs[:, f].flatten(0, 1) for f in range(imgs.shape[1]) if f != 1]
        Kf = K.flatten(0, 1)
        logs, pictures = {}, {}
        loss_t = loss_s = 0.0
        gsp = opt.use_gsp and opt.gsp_phase == "main"
        for s in range(NUM_SCALES):
            disp = out[("disp", s)]
            depth = disp_to_depth(F.interpolate(disp, (h, w), mode="bilinear", align_corners=False),
                                  opt.min_depth, opt.max_depth)
            if opt.gsp_scale_lock and gsp:
                depth = scale_locked(depth)
            lt, maps = temporal_loss(target, sources, depth, Kf, T, target_mask=valid, automask=opt.gsp_automask)
            loss_t = loss_t + lt
            if s == 0:
                logs["automask_kept"] = maps["mask"].float().mean()  # pixels where the warp beats no motion
            img_s = F.interpolate(target, disp.shape[-2:], mode="area")
            loss_s = loss_s + smoothness_loss(disp, img_s) / 2 ** s
        loss = (loss_t + opt.w_smooth * loss_s) / NUM_SCALES
        logs["loss_temporal"] = loss_t.detach() / NUM_SCALES
        logs["loss_smooth"] = loss_s.detach() / NUM_SCALES
        warm = opt.gsp_phase == "main" and self.step < opt.ground_steps
        ground_on = opt.w_ground > 0 and (opt.ground_steps <= 0 or warm)
        road_motion_on = opt.w_road_motion > 0 and opt.gsp_phase == "main"
        if ground_on or road_motion_on:  # the road plane's depth per pixel, for either term
            plane = ground_plane_depth(Kf, cam2ego.flatten(0, 1), (h, w), opt.ground_height)
        if ground_on:
            depth_gr = out["depth"]
            if opt.ground_shape_only:
                depth_gr = scale_locked(depth_gr)
            elif opt.ground_scale_only:
                depth_gr = shape_locked(depth_gr)
            if opt.ground_mode in ("road", "road_hinge"):
                road = road_pixels(batch, (h, w), f"--ground_mode {opt.ground_mode}")
                loss_gr, share, off = ground_road(depth_gr, plane, road, opt.ground_max_depth, valid)
                logs["ground_road_px"] = share.detach()  # share of the pixels the term holds
                logs["ground_off"] = off.detach()  # share of them more than 10 % off the plane
                if opt.ground_mode == "road_hinge":  # the rest below the horizon: no farther than the plane
                    rest = ~road if valid is None else ~road & (valid > 0)
                    loss_h, beyond = ground_hinge(depth_gr, plane, opt.ground_margin, rest)
                    loss_gr = loss_gr + loss_h
                    logs["ground_beyond"] = beyond.detach()
            else:
                loss_gr, beyond = ground_hinge(depth_gr, plane, opt.ground_margin, valid)
                logs["ground_beyond"] = beyond.detach()  # share of the downward pixels beyond the plane's margin
            loss = loss + opt.w_ground * loss_gr
            logs["loss_ground"] = loss_gr.detach()
        if road_motion_on:
            road = road_pixels(batch, (h, w), "--w_road_motion")
            loss_rm, share = road_motion(target, sources, plane, road, Kf, T, opt.ground_max_depth, valid,
                                         automask=opt.road_motion_automask)
            loss = loss + opt.w_road_motion * loss_rm
            logs["loss_road_motion"] = loss_rm.detach()
            logs["road_motion_px"] = share.detach()  # share of the pixels the term holds
        if opt.w_road_scale > 0 and opt.gsp_phase == "main" and self.step >= opt.road_scale_from:
            loss_rs, rs_logs = self.road_scale(target, sources, Kf, cam2ego, poses, batch, valid, (h, w))
            loss = loss + opt.w_road_scale * loss_rs
            logs.update(rs_logs)
        if gsp:
            scale = out["gs_scale"] * (out["depth"] if opt.gsp_scale_relative else 1.0)
            rig = cam2ego  # where each camera was when it took its image (--gsp_sync), else the calibration
            if opt.gsp_sync and "cam_time" in batch:
                rig = capture_synced_cam2ego(cam2ego, poses[:, :2], batch["cam_time"]).to(cam2ego.dtype)
            loss_g, cv = cross_view_loss(out["depth"].unflatten(0, (b, n)), imgs[:, 1], scale.unflatten(0, (b, n)),
                                         K, rig, self.rasterize, opt.gsp_erode, mask_mode=opt.gsp_mask,
                                         valid=None if valid is None else valid.unflatten(0, (b, n)))
            loss = loss + opt.w_gsp * loss_g
            logs["loss_gsp"] = loss_g.detach()
            logs["gsp_overlap"] = cv["mask"].mean()
            pictures["gsp"] = {k: v.detach() for k, v in cv.items()}
        if valid is not None:
            logs["mask_visible"] = valid.mean()  # share of pixels left in by the self-occlusion mask
        logs["loss"] = loss.detach()
        return loss, logs, pictures
