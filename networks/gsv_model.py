"""Stage 2 (GSV): semantic occupancy from 6 images, supervised by rendering its voxel Gaussians.

OccNet -> logits (B, C+1, X, Y, Z) -> one Gaussian per voxel -> ONE rasterize call per sample for the 6 cameras
at ``render_size`` -> accumulated depth (sum w_i z_i, not divided by alpha), alpha and C semantic channels.
Losses, all at the render size:
  * temporal reprojection of the previous / next frame into the current one through the rendered depth
    (clamped to [min_depth, max_depth]), camera motion from the recorded ego poses (``--pose gt``) or from the
    frozen stage-1 pose net (``--pose stage1 --stage1_ckpt PATH``); 0.85 (1-SSIM)/2 + 0.15 L1, per-pixel
    minimum, auto-masking;
  * ``w_smooth`` x edge-aware smoothness of the disparity 1 / depth;
  * ``w_sem`` x cross-entropy of the rendered semantic logits against ``batch['sem']`` (with ``use_sem``),
    class-weighted as the authors' with ``sem_class_weights inv_sqrt_freq``;
  * ``w_entropy`` x binary entropy of the rendered alpha: pushes every ray to be decidedly empty or decidedly
    hit (the release's extra "last free" term is not used).
Pixels where the optional ``batch['mask']`` is 0 (DDAD: the ego car's own body) are left out of the reprojection
and semantic terms, as in stage 1.
``render_type volume`` renders the same volume by ray marching instead (the OccNeRF baseline).
"""
import functools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.occ_net import OccNet, semantic_classes
from networks.voxel_gaussians import voxels_to_gaussians
from options import str2bool
from utils.constants import FREE_ID, OCC3D_RANGE, OCC3D_SHAPE
from utils.geometry import ego_motion_to_cam, inverse_rigid, rel_cam_pose, rescale_K_to, warp
from utils.losses import opacity_entropy, reprojection_loss, semantic_ce, smoothness_loss
from utils.rasterizer import rasterize
from utils.vis import bev_image, depth_to_color, image_to_uint8, logits_to_color, mosaic


# The authors' options.py class_frequencies, one per class id 0..17 (17 = free).
AUTHORS_CLASS_FREQUENCIES = (0, 18164955800, 734218842, 2336187448, 10996756106, 395414611, 638889260, 651023279,
                             117046208, 985341947, 7303776233, 43131984997, 0, 9342674867, 9525824742,
                             51204832885, 22848065525, 31841090018)
CHECKPOINT_DEFAULTS = {"sem_class_weights": "none"}  # what a checkpoint older than the option was trained with


def add_args(parser):
    g = parser.add_argument_group(
        "stage 2 (GSV)", "voxel occupancy rendered by Gaussian splatting (--stage gsv); the network's options "
        "are in the OccNet group; also uses min_depth, max_depth and w_smooth of stage 1 and input_size, "
        "render_size, use_sem of the data group")
    g.add_argument("--pose", type=str, default="stage1", choices=["gt", "stage1"],
                   help="camera motion for the temporal loss: stage1 = the frozen stage-1 pose net of "
                        "--stage1_ckpt (the method: no GT poses); gt = recorded ego poses (ego2global)")
    g.add_argument("--stage1_ckpt", type=str, default=None, help="stage-1 (GSP) checkpoint, for --pose stage1")
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
    g.add_argument("--w_sem", type=float, default=0.02, help="weight of the rendered semantic cross-entropy")
    g.add_argument("--sem_class_weights", type=str, default="inv_sqrt_freq", choices=["inv_sqrt_freq", "none"],
                   help="class weights of the semantic cross-entropy: inv_sqrt_freq = the authors' (runner.py "
                        "sem_criterion) 1 / sqrt(--class_frequencies), 0 where a frequency is 0, weighted mean over "
                        "pixels; none: every labelled pixel counts the same")
    g.add_argument("--class_frequencies", type=float, nargs="+", default=list(AUTHORS_CLASS_FREQUENCIES),
                   help="voxel count per class id 0..17 for --sem_class_weights (the authors' options.py "
                        "default; 0 for others and other_flat, so those 2D labels carry no weight)")
    g.add_argument("--w_entropy", type=float, default=0.1, help="weight of the rendered alpha entropy")


def sem_class_weights(opt, n_cls):
    """(n_cls,) float weights of the semantic cross-entropy, or None (see --sem_class_weights)."""
    if opt.sem_class_weights == "none":
        return None
    freq = torch.tensor(opt.class_frequencies, dtype=torch.float64)
    if len(freq) < n_cls:
        raise ValueError(f"--class_frequencies has {len(freq)} values for {n_cls} semantic classes")
    w = torch.where(freq > 0, freq.clamp(min=1e-300).rsqrt(), torch.zeros_like(freq))
    return (w / w.mean())[:n_cls].float()  # the scale cancels in the weighted mean; kept as the authors'


def occ3d_centres(device=None):
    """Metric centres of the Occ3D voxels, (200, 200, 16, 3)."""
    lo, hi = torch.tensor(OCC3D_RANGE[:3]), torch.tensor(OCC3D_RANGE[3:])
    axes = [lo[i] + (hi[i] - lo[i]) * (torch.arange(n) + 0.5) / n for i, n in enumerate(OCC3D_SHAPE)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).to(device)


def logits_to_occ3d(logits, grid):
    """Sample logits (B, C+1, X, Y, Z) on ``grid`` (VoxelGrid) trilinearly at the Occ3D voxel centres.

    Returns (B, 200, 200, 16) uint8 class ids: argmax over C+1, the last channel (and anything outside the
    volume) -> FREE_ID. With C = 1 the occupied class comes out as 0 ("others").
    """
    s = grid.normalise(occ3d_centres(logits.device))  # (200, 200, 16, 3) x y z in [-1, 1]
    # grid_sample indexes the last volume dim (Z) with the first grid coordinate: pass z y x
    samples = F.grid_sample(logits, s.flip(-1)[None].expand(len(logits), *s.shape).to(logits.dtype),
                            align_corners=False, padding_mode="border")
    cls = samples.argmax(1)
    cls[(cls == logits.shape[1] - 1) | ~(s.abs() <= 1).all(-1)] = FREE_ID
    return cls.to(torch.uint8)


class GSVModel(nn.Module):
    """Stage 2. Batch (docs/ARCHITECTURE.md): imgs (B,3,6,3,H,W), K (B,6,3,3), cam2ego (B,6,4,4),
    ego2global (B,3,6,4,4), optional sem (B,6,h,w), optional mask (B,6,h,w) {0, 1} self-occlusion masks
    (DDAD, 0 = ego car body), left out of the reprojection and semantic losses like in stage 1."""

    def __init__(self, opt):
        super().__init__()
        if opt.pose == "stage1" and not opt.stage1_ckpt:
            raise ValueError("--pose stage1 needs --stage1_ckpt PATH (a stage-1 checkpoint); or use --pose gt")
        if opt.render_type == "volume" and opt.contracted:
            raise ValueError("--render_type volume works on uniform grids only: set --contracted false")
        self.opt = opt
        self.occ_net = OccNet(opt)
        w = sem_class_weights(opt, semantic_classes(opt)) if opt.use_sem else None
        self.register_buffer("sem_weight", w, persistent=False)
        self.rasterize = functools.partial(rasterize, backend=opt.raster_backend)
        self._stage1 = []  # the frozen pose model, loaded at first use; a list keeps it out of the state dict

    def trainable_parameters(self):
        """Optimiser parameter groups, dict(params, lr_scale) (see OccNet.param_groups)."""
        return self.occ_net.param_groups()

    def camera_motion(self, batch):
        """(B, 2, 6, 4, 4): current camera -> previous (0) / next (1) camera of the same sensor."""
        cam2ego, e2g = batch["cam2ego"], batch["ego2global"]
        if self.opt.pose == "gt":
            return torch.stack([rel_cam_pose(cam2ego, e2g[:, 1], e2g[:, k]) for k in (0, 2)], 1)
        if not self._stage1:
            from networks.gsp_model import load_gsp_from_checkpoint
            model = load_gsp_from_checkpoint(self.opt.stage1_ckpt, cam2ego.device).requires_grad_(False)
            self._stage1.append(model)
        poses = self._stage1[0].predict_pose(batch)
        return torch.stack([ego_motion_to_cam(poses[:, k], cam2ego) for k in range(2)], 1)

    def render(self, batch):
        """Predict the volume and render the current frame's 6 cameras at ``render_size``.

        Returns dict: logits (B, C+1, X, Y, Z), depth / alpha (B, 6, 1, h, w), sem (B, 6, C, h, w),
        K (B, 6, 3, 3) at the render size, num_gaussians (float tensor).
        """
        imgs, K, cam2ego = batch["imgs"][:, 1], batch["K"], batch["cam2ego"]
        h, w = self.opt.render_size
        out = self.occ_net(imgs, K, cam2ego)
        Kr = rescale_K_to(K, imgs.shape[-2:], (h, w))
        viewmats = inverse_rigid(cam2ego)
        if self.opt.render_type == "volume":
            renders = self._render_volume(out["logits"], viewmats, Kr, w, h)
            n_gauss = out["logits"].new_zeros(())
        else:
            gaussians = voxels_to_gaussians(out["logits"], self.occ_net.centres, self.opt, out.get("scale"),
                                            viewmats, self.opt.min_depth)
            renders = [self.rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["features"],
                                      viewmats[b], Kr[b], w, h, near=self.opt.min_depth)
                       for b, g in enumerate(gaussians)]
            n_gauss = out["logits"].new_tensor(sum(len(g["means"]) for g in gaussians) / len(gaussians))
        return {"logits": out["logits"], "K": Kr, "num_gaussians": n_gauss,
                **{k: torch.stack([r[key] for r in renders]) for k, key in
                   (("depth", "depth"), ("alpha", "alpha"), ("sem", "features"))}}

    def _render_volume(self, logits, viewmats, Ks, w, h):
        from networks.volume_render import render_volume
        probs = torch.softmax(logits, 1)
        rs = self.opt.real_size  # xmin xmax ymin ymax zmin zmax -> xmin ymin zmin xmax ymax zmax
        grid_range = (rs[0], rs[2], rs[4], rs[1], rs[3], rs[5])
        return [render_volume(1 - probs[b, -1], logits[b, :-1], grid_range, viewmats[b], Ks[b], w, h,
                              near=self.opt.min_depth, far=self.opt.max_depth) for b in range(len(logits))]

    def forward(self, batch):
        opt = self.opt
        r = self.render(batch)
        B, n = r["depth"].shape[:2]
        h, w = opt.render_size
        imgs = F.interpolate(batch["imgs"].flatten(0, 2), (h, w), mode="area").view(B, 3, n, 3, h, w)
        target, sources = imgs[:, 1].flatten(0, 1), [imgs[:, 0].flatten(0, 1), imgs[:, 2].flatten(0, 1)]
        depth = r["depth"].flatten(0, 1).clamp(opt.min_depth, opt.max_depth)
        T = self.camera_motion(batch)
        Kf = r["K"].flatten(0, 1)
        warped = [warp(src, depth, Kf, T[:, k].flatten(0, 1)) for k, src in enumerate(sources)]
        valid = None
        if "mask" in batch:  # (B,6,h',w') self-occlusion mask, 0 = ego car body -> (B*6,1,h,w) bool
            valid = F.interpolate(batch["mask"].flatten(0, 1)[:, None].float(), (h, w), mode="nearest") > 0.5
        loss_reproj, maps = reprojection_loss(target, [wp for wp, _ in warped], sources, [v for _, v in warped],
                                              target_mask=valid)
        loss_smooth = smoothness_loss(1 / depth, target)
        loss_entropy = opacity_entropy(r["alpha"])
        loss = loss_reproj + opt.w_smooth * loss_smooth + opt.w_entropy * loss_entropy
        logs = {"loss_reproj": loss_reproj.detach(), "automask_kept": maps["mask"].float().mean(),
                "loss_smooth": loss_smooth.detach(),
                "loss_entropy": loss_entropy.detach()}
        if opt.use_sem and "sem" in batch:
            labels = batch["sem"].flatten(0, 1)
            if valid is not None:
                labels = labels.masked_fill(~valid[:, 0], 255)
            loss_sem = semantic_ce(r["sem"].flatten(0, 1), labels, weight=self.sem_weight)
            loss = loss + opt.w_sem * loss_sem
            logs["loss_sem"] = loss_sem.detach()
        if valid is not None:
            logs["mask_visible"] = valid.float().mean()  # share of pixels left in by the self-occlusion mask
        logs.update(loss=loss.detach(), num_gaussians=r["num_gaussians"], mean_depth=depth.detach().mean(),
                    mean_alpha=r["alpha"].detach().mean())
        outputs = {"depth": r["depth"].detach()[:, :, 0], "alpha": r["alpha"].detach()[:, :, 0],
                   "sem": r["sem"].detach(), "logits": r["logits"].detach()}
        return loss, logs, outputs

    @torch.no_grad()
    def predict(self, batch, depth=True, occupancy=True):
        """The read-outs asked for, from ONE network forward: {"depth": rendered accumulated depth (B, 6, h, w) at
        ``render_size``, metres; "occupancy": (B, 200, 200, 16) uint8 Occ3D class ids (17 = free)}."""
        if depth:
            r = self.render(batch)
        else:
            r = self.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
        out = {"depth": r["depth"][:, :, 0]} if depth else {}
        if occupancy:
            out["occupancy"] = logits_to_occ3d(r["logits"], self.occ_net.grid)
        return out

    def predict_occupancy(self, batch):
        """(B, 200, 200, 16) uint8 Occ3D class ids (17 = free)."""
        return self.predict(batch, depth=False)["occupancy"]

    def predict_depth(self, batch):
        """Rendered accumulated depth (B, 6, h, w) at ``render_size``, metres."""
        return self.predict(batch, occupancy=False)["depth"]

    def visualise(self, batch, outputs):
        """First sample of the batch -> dict of (3, H, W) uint8 pictures."""
        chw = lambda img: np.ascontiguousarray(img.transpose(2, 0, 1))  # noqa: E731
        vis = {"images": chw(mosaic([image_to_uint8(im) for im in batch["imgs"][0, 1]])),
               "depth": chw(mosaic([depth_to_color(d) for d in outputs["depth"][0]])),
               "occ_bev": chw(bev_image(logits_to_occ3d(outputs["logits"][:1], self.occ_net.grid)[0]))}
        if semantic_classes(self.opt) > 1:
            vis["semantics"] = chw(mosaic([logits_to_color(s, a) for s, a in
                                           zip(outputs["sem"][0], outputs["alpha"][0])]))
        return vis
