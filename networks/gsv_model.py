"""Stage 2 (GSV): semantic occupancy from 6 images, supervised by rendering its voxel Gaussians.

OccNet -> logits (B, C+1, X, Y, Z) -> one Gaussian per voxel (opacity 1 - p(free)) -> ONE rasterize call per
sample for the 6 cameras at ``render_size`` -> depth (sum w_i z_i, not divided by alpha, plus (1 - alpha) max_depth
with ``depth_background far``), alpha and C
semantic channels -> the criterion passed in (``networks/gsv_loss.py``) with the camera motion of the pose source passed
in (``networks/pose_source.py``: recorded ego poses or the frozen stage-1 pose net); ``networks.build_model``
composes the three.
``render_type volume`` renders the same volume by ray marching instead (the OccNeRF baseline).
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.gsv_loss import depth_spread_wanted, fog_stats
from networks.occ_net import OccNet
from networks.voxel_gaussians import voxel_opacity, voxels_to_gaussians
from utils.cli import str2bool
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL
from utils.geometry import inverse_rigid, rescale_K_to
from utils.occ_readout import consistent_threshold, thin_ground
from utils.rasterizer import rasterize
from utils.speed import stage

CHECKPOINT_DEFAULTS = {"opacity": "softmax", "depth_background": "none"}  # what a checkpoint older than the option was trained with
FAINT_OPACITY = 0.1  # a Gaussian fainter than this is "fog" in the occupancy health statistics


def add_args(parser):
    g = parser.add_argument_group(
        "stage 2 (GSV)", "voxel occupancy rendered by Gaussian splatting (--stage gsv); the network's options "
        "are in the OccNet group; also uses min_depth, max_depth and w_smooth of stage 1 and input_size, "
        "render_size, use_sem of the data group")
    g.add_argument("--pose", type=str, default="stage1", choices=["gt", "stage1"],
                   help="camera motion for the temporal loss: stage1 = the frozen stage-1 pose net of "
                        "--stage1_ckpt (the method: no GT poses); gt = recorded ego poses (ego2global)")
    g.add_argument("--stage1_ckpt", type=str, metavar="PATH", default=None, help="stage-1 (GSP) checkpoint, for --pose stage1")
    g.add_argument("--stage1_poses", type=str, metavar="PATH", default=None,
                   help="the stage-1 motion of every training sample, exported once (tools/export_stage1_poses.py), "
                        "for --pose stage1 without loading the stage-1 model (--stage1_ckpt then only for samples "
                        "the file lacks)")
    g.add_argument("--render_type", type=str, default="gs", choices=["gs", "volume"],
                   help="gs: voxel Gaussians splatted (GSV); volume: ray-marched volume rendering (baseline)")
    g.add_argument("--num_classes", type=int, default=None,
                   help="semantic classes before free (default: 17 Occ3D classes with --use_sem, else 1 = "
                        "occupied vs free)")
    g.add_argument("--gs_scale", type=float, default=0.1,
                   help="fixed Gaussian scale, metres (paper's best 0.1; the release used 0.2)")
    g.add_argument("--gs_scale_learn", type=str2bool, default=False,
                   help="predict the Gaussian scale per voxel, smoothly clamped at gs_scale_max")
    g.add_argument("--gs_scale_max", type=float, default=0.12, help="cap of the learnt Gaussian scale, metres")
    g.add_argument("--gs_scale_axes", type=int, default=1, choices=[1, 3],
                   help="with --gs_scale_learn: 1 = one scale per voxel (isotropic, the authors'); 3 = one per grid "
                        "axis (axis-aligned ellipsoids: a ground voxel can flatten, so that a ray grazing the road "
                        "stops on it and not on the Gaussian's top, a wall voxel thin across the wall), starting at "
                        "--gs_scale (which must then be below --gs_scale_max)")
    g.add_argument("--gs_offset", type=float, default=0.0,
                   help="> 0: the 3D CNN also moves each Gaussian's mean off its voxel centre, by at most this share "
                        "of the voxel along each axis (F voxel tanh(raw offset)), so that a surface inside a voxel "
                        "can be drawn where it is; uniform grids only; 0 = fixed centres (the authors')")
    g.add_argument("--depth_background", type=str, default="far", choices=["far", "none"],
                   help="far: every ray ends at max_depth, rendered depth = sum_i w_i z_i + (1 - alpha) max_depth, so "
                        "a transparent ray reads as far away (sky), as in volume rendering with a last, opaque "
                        "sample; none: sum_i w_i z_i only (the authors' GS depth, whose contracted infinite-range "
                        "grid makes every ray end on the outer shell; in an 80 m box a ray that leaves it reads as "
                        "close to the camera, and measured on the real fixture the depth collapsed with it)")
    g.add_argument("--occ_readout", type=str, default="calibrated", choices=["argmax", "opacity", "calibrated"],
                   help="occupancy read-out at the Occ3D voxels: calibrated (default) = occupied where the voxel "
                        "opacity exceeds a threshold chosen per sample WITHOUT labels: the one under which the first "
                        "voxel above it along each camera ray best matches the sample's own rendered depth "
                        "(utils/occ_readout.py; --occ_threshold where nothing is rendered), class = the semantic "
                        "argmax; argmax = the authors' argmax over the C+1 channels (free last), which kept "
                        "60-94 %% of the calibrated mIoU* on held-out synthetic streets "
                        "(docs/results/runs/2026-12-02/occ-round6); opacity = occupied where the opacity exceeds "
                        "--occ_threshold")
    g.add_argument("--occ_thin_ground", type=str2bool, default=True,
                   help="after the read-out, keep one ground voxel per column (the most opaque of those read as "
                        "driveable_surface, other_flat, sidewalk or terrain; utils/occ_readout.thin_ground): Occ3D's "
                        "ground is a height field, a volume drawn from renders has it thick towards range. Measured "
                        "on training streets (occ-round12c): +1.9 to +2.7 mIoU* and +0.9 to +2.1 geo IoU in all 6 "
                        "runs; false reads the ground as the threshold leaves it. eval reports the other beside it")
    g.add_argument("--occ_threshold", type=float, default=0.5,
                   help="opacity threshold of --occ_readout opacity (and of calibrated where a volume is read out "
                        "without a render)")
    g.add_argument("--opacity", type=str, default="softmax", choices=["sigmoid", "softmax"],
                   help="voxel opacity: 1 - softmax(logits)[free] (the semantic channels and the free one compete, "
                        "so the rendered semantics and the argmax read-out see the same occupancy) or 1 - sigmoid("
                        "free logit) (the authors': the free channel alone decides occupancy)")


def occ3d_centres(device=None, zmin=OCC3D_LABEL_RANGE[2]):
    """Metric centres (ego frame) of the Occ3D label voxels, (200, 200, 16, 3); layer 0 starts at ``zmin``: -0.2
    for the released labels (road surface in layer 0, docs/occ3d_convention.md), -1.0 for the documented range."""
    lo = torch.tensor([OCC3D_LABEL_RANGE[0], OCC3D_LABEL_RANGE[1], zmin], dtype=torch.float64)
    axes = [lo[i] + OCC3D_VOXEL * (torch.arange(n, dtype=torch.float64) + 0.5) for i, n in enumerate(OCC3D_SHAPE)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).float().to(device)


def occ3d_sample(logits, grid, zmin=OCC3D_LABEL_RANGE[2]):
    """logits (B, C+1, X, Y, Z) on ``grid`` (VoxelGrid) sampled trilinearly (differentiable) at the Occ3D voxel
    centres (``occ3d_centres(zmin=zmin)``): (B, C+1, 200, 200, 16), and (200, 200, 16) bool, the centre lies inside
    the volume."""
    s = grid.normalise(occ3d_centres(logits.device, zmin))  # (200, 200, 16, 3) x y z in [-1, 1]
    # grid_sample indexes the last volume dim (Z) with the first grid coordinate: pass z y x
    samples = F.grid_sample(logits, s.flip(-1)[None].expand(len(logits), *s.shape).to(logits.dtype),
                            align_corners=False, padding_mode="border")
    return samples, (s.abs() <= 1).all(-1)


def occ3d_readout(logits, grid, opacity="softmax", zmin=OCC3D_LABEL_RANGE[2]):
    """Sample logits (B, C+1, X, Y, Z) on ``grid`` (VoxelGrid) trilinearly at the Occ3D voxel centres
    (``occ3d_sample``). Returns dict of (B, 200, 200, 16): ``opacity`` (float, ``voxel_opacity`` of the
    sampled logits), ``sem`` (long, argmax over the C semantic channels), ``argmax`` (long, argmax over all C+1
    channels, C = free) and ``inside`` (bool, the centre lies inside the volume); and ``num_semantic`` = C."""
    samples, inside = occ3d_sample(logits, grid, zmin)
    return {"opacity": voxel_opacity(samples.float(), opacity), "sem": samples[:, :-1].argmax(1),
            "argmax": samples.argmax(1), "inside": inside.expand(len(logits), *inside.shape),
            "num_semantic": logits.shape[1] - 1}


def readout_classes(ro, readout="argmax", threshold=0.5, opacity="softmax"):
    """Occ3D class ids (B, 200, 200, 16) uint8 (17 = free, also outside the volume) from ``occ3d_readout`` (with
    ``num_semantic`` = C):
      * ``opacity``: occupied where the opacity exceeds ``threshold`` (a float, or a (B, 1, 1, 1) tensor: one per
        sample), class = the semantic argmax there;
      * ``argmax`` (the authors'): the argmax over the C+1 channels, the last (free) -> FREE_ID, with either
        opacity (with their sigmoid opacity it compares the free logit with the semantic ones); with C = 1 and
        sigmoid opacity the occupied channel is not rendered and its logit means nothing: opacity > 0.5 decides.
    """
    if readout not in ("opacity", "argmax"):
        raise ValueError(f"unknown --occ_readout {readout!r} (expected opacity or argmax)")
    free = torch.full_like(ro["sem"], FREE_ID)
    if readout == "argmax" and not (opacity == "sigmoid" and ro["num_semantic"] == 1):
        cls = torch.where(ro["argmax"] == ro["num_semantic"], free, ro["argmax"])
    else:
        cls = torch.where(ro["opacity"] > (threshold if readout == "opacity" else 0.5), ro["sem"], free)
    return torch.where(ro["inside"], cls, free).to(torch.uint8)


def logits_to_occ3d(logits, grid, opacity="softmax", zmin=OCC3D_LABEL_RANGE[2], readout="argmax", threshold=0.5):
    """(B, 200, 200, 16) uint8 Occ3D class ids (17 = free) of logits (B, C+1, X, Y, Z) on ``grid``: the read-out
    ``readout_classes`` of ``occ3d_readout``."""
    return readout_classes(occ3d_readout(logits, grid, opacity, zmin), readout, threshold, opacity)


def standalone_parts(opt):
    """(criterion, recorded poses) of a GSVModel built alone with ``--pose gt`` (``GSVModel(opt)``, as the benchmark
    scripts of tools/bench build it): what ``networks.build_model`` passes. A transition: once every script composes
    through ``networks.build_model``, the model takes only what it is given."""
    from networks.gsv_loss import GSVLoss
    from networks.occ_net import semantic_classes
    from networks.pose_source import RecordedPoses
    return GSVLoss(opt, semantic_classes(opt)), RecordedPoses()


class GSVModel(nn.Module):
    """Stage 2. Batch (docs/ARCHITECTURE.md): imgs (B,3,6,3,H,W), K (B,6,3,3), cam2ego (B,6,4,4),
    ego2global (B,3,6,4,4), optional sem (B,6,h,w), optional mask (B,6,h,w) {0, 1} self-occlusion masks
    (DDAD, 0 = ego car body), optional imgs_net: the network's (colour-augmented) copy of imgs.

    criterion: (render dict, batch, camera motion) -> (loss, logs) (networks/gsv_loss.py); pose_source: callable
    batch -> (B, 2, 6, 4, 4) camera motion (networks/pose_source.py). Both are only used in training: without them
    the model predicts (evaluation, pictures). A model built alone with ``--pose gt`` takes the parts
    ``networks.build_model`` would pass (``standalone_parts``).
    """

    def __init__(self, opt, criterion=None, pose_source=None):
        super().__init__()
        if opt.render_type == "volume" and opt.contracted:
            raise ValueError("--render_type volume works on uniform grids only: set --contracted false")
        self.opt = opt
        if criterion is None and pose_source is None and opt.pose == "gt":
            criterion, pose_source = standalone_parts(opt)
        self.pose_source = pose_source
        self.occ_net = OccNet(opt)
        self.criterion = criterion
        self.rasterize = functools.partial(rasterize, backend=opt.raster_backend, packed=opt.gsplat_packed,
                                           tile_size=opt.gsplat_tile_size)

    def set_step(self, step, log=True):
        """The trainer's step, for the criterion's schedules; log=False: the criterion leaves out the statistics
        that are only logged (the trainer writes scalars every --log_every steps)."""
        if self.criterion is not None:
            self.criterion.set_step(step, log)

    def trainable_parameters(self):
        """Optimiser parameter groups, dict(params, lr_scale) (see OccNet.param_groups)."""
        return self.occ_net.param_groups()

    def render(self, batch, T=None):
        """Predict the volume and render the current frame's 6 cameras at ``render_size`` (with ``T``, (B, 2, 6, 4, 4)
        current camera -> previous / next camera, also the 6 cameras of the previous and next frame: ``extra``).

        Returns dict: logits (B, C+1, X, Y, Z), opacity (B, X, Y, Z), depth / alpha (B, 6, 1, h, w) (depth with the
        ``depth_background``),
        sem (B, 6, C, h, w), K (B, 6, 3, 3) at the render size, num_gaussians (float tensor), and (no gradient)
        seen_opacity / faint_alpha (B, 6, 1, h, w): sum_i w_i o_i and sum_i w_i [o_i < FAINT_OPACITY], the opacity
        of the Gaussians that make each pixel's alpha and the part of the alpha that faint ones carry (fog
        statistics, ``fog_stats``); with ``T``: extra = dict of depth, depth_acc, alpha (, zsq) (B, 2, 6, 1, h, w)
        and sem (B, 2, 6, C, h, w) of the previous / next frame's cameras, rendered in the same rasterize call.
        """
        imgs, K, cam2ego = batch.get("imgs_net", batch["imgs"])[:, 1], batch["K"], batch["cam2ego"]
        h, w = self.opt.render_size
        out = self.occ_net(imgs, K, cam2ego)
        with stage("voxels to Gaussians"):
            opacity = voxel_opacity(out["logits"], self.opt.opacity)
        Kr = rescale_K_to(K, imgs.shape[-2:], (h, w))
        viewmats = inverse_rigid(cam2ego)
        n_cam = viewmats.shape[1]
        if T is not None:  # ego -> previous / next camera = (current camera -> that camera) o (ego -> current camera)
            if self.opt.render_type == "volume":
                raise ValueError("--w_extra_views needs --render_type gs")
            adj = T.detach().to(viewmats.dtype) @ viewmats[:, None]  # (B, 2, 6, 4, 4)
            viewmats = torch.cat([viewmats, adj.flatten(1, 2)], 1)  # (B, 18, 4, 4)
            Kr = Kr.repeat(1, 3, 1, 1)
        if self.opt.render_type == "volume":
            with stage("rasteriser"):
                renders = self._render_volume(out["logits"], opacity, viewmats, Kr, w, h)
            n_gauss = out["logits"].new_zeros(())
        else:
            with stage("voxels to Gaussians"):
                gaussians = voxels_to_gaussians(out["logits"], self.occ_net.centres, self.opt, out.get("scale"),
                                                viewmats, self.opt.min_depth, opacity=opacity,
                                                raw_offset=out.get("offset"))
            renders = []
            zsq = self.opt.raster_zsq if depth_spread_wanted(self.opt) else None  # sum_i w_i z_i^2: depth spread
            with stage("rasteriser"):
                for b, g in enumerate(gaussians):
                    o = g["opacities"].detach()[:, None]
                    feats = torch.cat([g["features"], o.to(g["features"].dtype),
                                       (o < FAINT_OPACITY).to(g["features"].dtype)], 1)
                    renders.append(self.rasterize(g["means"], g["quats"], g["scales"], g["opacities"], feats,
                                                  viewmats[b], Kr[b], w, h, near=self.opt.min_depth, zsq=zsq))
                    f = renders[-1].pop("features")
                    renders[-1].update(features=f[:, :-2], seen_opacity=f[:, -2:-1], faint_alpha=f[:, -1:])
            # (a CPU tensor from the shapes: a copy to the device would wait for it)
            n_gauss = torch.tensor(sum(len(g["means"]) for g in gaussians) / len(gaussians))
        r = {"logits": out["logits"], "opacity": opacity, "K": Kr, "num_gaussians": n_gauss,
             **{k: torch.stack([r[key] for r in renders]) for k, key in
                (("depth", "depth"), ("alpha", "alpha"), ("sem", "features"), ("seen_opacity", "seen_opacity"),
                 ("faint_alpha", "faint_alpha"), ("zsq", "zsq")) if key in renders[0]}}
        r["depth_acc"] = r["depth"]  # sum_i w_i z_i, before the background
        if self.opt.depth_background == "far":
            r["depth"] = r["depth"] + (1 - r["alpha"]).clamp(min=0) * self.opt.max_depth
        if T is not None:  # the cameras after the first 6 are the previous / next frame's
            B = r["depth"].shape[0]
            r["extra"] = {k: r[k][:, n_cam:].reshape(B, 2, n_cam, *r[k].shape[2:])
                          for k in ("depth", "depth_acc", "alpha", "zsq", "sem") if k in r}
            for k in ("depth", "depth_acc", "alpha", "zsq", "sem", "seen_opacity", "faint_alpha"):
                if k in r:
                    r[k] = r[k][:, :n_cam]
            r["K"] = r["K"][:, :n_cam]
        return r

    def _render_volume(self, logits, opacity, viewmats, Ks, w, h):
        from networks.volume_render import render_volume
        rs = self.opt.real_size  # xmin xmax ymin ymax zmin zmax -> xmin ymin zmin xmax ymax zmax
        grid_range = (rs[0], rs[2], rs[4], rs[1], rs[3], rs[5])
        return [render_volume(opacity[b], logits[b, :-1], grid_range, viewmats[b], Ks[b], w, h,
                              near=self.opt.min_depth, far=self.opt.max_depth) for b in range(len(logits))]

    def forward(self, batch):
        if self.criterion is None or self.pose_source is None:
            raise ValueError("this GSVModel has no criterion or no pose source: networks.build_model(opt, load_stage1="
                             "rebuild.load_stage1) composes one that trains")
        with stage("pose"):
            T = self.pose_source(batch)
        r = self.render(batch, T[:, :2]) if self.opt.w_extra_views > 0 else self.render(batch)
        with stage("loss"):
            loss, logs = self.criterion(r, batch, T)
        logs["num_gaussians"] = r["num_gaussians"]
        outputs = {"depth": r["depth"].detach()[:, :, 0], "alpha": r["alpha"].detach()[:, :, 0],
                   "sem": r["sem"].detach(), "logits": r["logits"].detach()}
        if "depth_acc" in r:  # what ``occupancy`` calibrates the trainer's picture on
            outputs.update(depth_acc=r["depth_acc"].detach()[:, :, 0], K=r["K"].detach())
        return loss, logs, outputs

    @torch.no_grad()
    def predict(self, batch, depth=True, occupancy=True, calibrate=False):
        """The read-outs asked for, from ONE network forward: {"depth": rendered accumulated depth (B, 6, h, w) at
        ``render_size``, metres, and "fog": the fog statistics of that render (networks/gsv_loss.fog_stats);
        "occupancy": (B, 200, 200, 16) uint8 Occ3D class ids (17 = free, the read-out of --occ_readout), with
        "occ_opacity" (float) and "occ_sem" (semantic argmax) at the same voxels; with ``calibrate`` (or
        --occ_readout calibrated) also the label-free calibrated read-out of ``readout``}."""
        if depth or (occupancy and (calibrate or self.opt.occ_readout == "calibrated")):
            r = self.render(batch)
        else:
            r = self.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
        out = {"depth": r["depth"][:, :, 0], "fog": fog_stats(r)} if depth else {}
        if occupancy:
            out.update(self.readout(r, batch["cam2ego"], calibrate=calibrate))
        return out

    @torch.no_grad()
    def readout(self, r, cam2ego=None, calibrate=False):
        """The Occ3D read-out of a ``render`` (or of an ``occ_net`` output with its logits only): "occupancy" (B,
        200, 200, 16) uint8 class ids (17 = free) by --occ_readout, "occ_opacity" (float, 0 outside the volume) and
        "occ_sem" (the semantic argmax), "occupancy_argmax" (the authors' read-out, whatever --occ_readout says).
        With a render (depth_acc, alpha, K) and ``cam2ego``, for --occ_readout
        calibrated or with ``calibrate``: "occ_threshold" / "occ_threshold_error" (B,) of
        ``utils.occ_readout.consistent_threshold`` and "occupancy_calibrated", the read-out at those thresholds."""
        ro = occ3d_readout(r["logits"], self.occ_net.grid, self.opt.opacity, self.opt.occ_label_zmin)
        opacity = torch.where(ro["inside"], ro["opacity"], torch.zeros_like(ro["opacity"]))
        out = {"occ_opacity": opacity, "occ_sem": ro["sem"],
               "occupancy_argmax": readout_classes(ro, "argmax", opacity=self.opt.opacity)}
        rendered = cam2ego is not None and all(k in r for k in ("depth_acc", "alpha", "K"))
        if rendered and (calibrate or self.opt.occ_readout == "calibrated"):
            cal = [consistent_threshold(opacity[b], r["depth_acc"][b], r["alpha"][b], r["K"][b], cam2ego[b],
                                        self.opt.occ_label_zmin) for b in range(len(opacity))]
            out["occ_threshold"] = torch.tensor([c[0] for c in cal], dtype=torch.float64)
            out["occ_threshold_error"] = torch.tensor([c[1] for c in cal])
            # one threshold per sample, compared in float32 as a Python float threshold is
            t = out["occ_threshold"].to(opacity.device, torch.float32).view(-1, 1, 1, 1)
            out["occupancy_calibrated"] = readout_classes(ro, "opacity", t, self.opt.opacity)
        if self.opt.occ_readout != "calibrated":
            out["occupancy"] = readout_classes(ro, self.opt.occ_readout, self.opt.occ_threshold, self.opt.opacity)
        elif "occupancy_calibrated" in out:
            out["occupancy"] = out["occupancy_calibrated"]
        else:  # nothing rendered: the fixed threshold
            out["occupancy"] = readout_classes(ro, "opacity", self.opt.occ_threshold, self.opt.opacity)
        out["occupancy_as_read"] = out["occupancy"]  # the ground as the threshold leaves it
        out["occupancy_thin"] = thin_ground(out["occupancy"], opacity)
        if getattr(self.opt, "occ_thin_ground", True):
            out["occupancy"] = out["occupancy_thin"]
        return out

    def predict_occupancy(self, batch):
        """(B, 200, 200, 16) uint8 Occ3D class ids (17 = free)."""
        return self.predict(batch, depth=False)["occupancy"]

    def predict_depth(self, batch):
        """Rendered accumulated depth (B, 6, h, w) at ``render_size``, metres."""
        return self.predict(batch, occupancy=False)["depth"]

    @torch.no_grad()
    def occupancy(self, logits, render=None, cam2ego=None):
        """(B, 200, 200, 16) uint8 Occ3D class ids (17 = free) of logits (B, C+1, X, Y, Z): the read-out of
        ``--occ_readout`` (the trainer's top-view picture): ``readout`` of the logits and ``render`` (depth_acc, alpha,
        K of the same samples, as ``forward``'s outputs hold them), so ``calibrated`` calibrates on that render with
        ``cam2ego`` and reads out at the fixed --occ_threshold without them."""
        return self.readout({**(render or {}), "logits": logits}, cam2ego)["occupancy"]
