"""GSP (Gaussian Splatting for Projection): the cross-view term of stage 1 that gives the depth metric scale.

Each pixel of camera i becomes a small Gaussian at its back-projected (predicted) depth. Those Gaussians are
splatted into the two ring neighbours j of camera i through the calibrated, metric extrinsics, and the rendering
is compared with the real image of camera j. Only a depth of the right metric scale makes the two agree, because
the baseline between the cameras is fixed in metres.

Overlap mask, two choices (``mask_mode``), both detached and eroded by ``erode_px`` pixels:
  * "rendered": the pixels of j where the rendered opacity of i's Gaussians exceeds 0.5. It follows the
    predicted depth, so a depth that shrinks until no splat reaches j also empties the mask (and the loss).
  * "geometric": the pixels of j whose viewing ray lands inside camera i's image at every depth of
    ``GEOMETRIC_DEPTHS`` (3 to 48 m): whatever surface such a pixel sees in that range, camera i sees it too.
    It depends on the calibration only, so the network cannot escape the term by shrinking the depth.
"""
import torch
import torch.nn.functional as F

from utils.constants import ring_neighbours
from utils.geometry import backproject, project
from utils.losses import photometric_error
from utils.precision import full_precision

GEOMETRIC_DEPTHS = (3.0, 6.0, 12.0, 24.0, 48.0)  # metres along the target camera's rays


@full_precision
def pixel_gaussians(depth, img, scale, K, cam2ego):
    """One Gaussian per pixel, in the ego frame.

    depth (B,1,H,W) metres (camera z), img (B,3,H,W), scale (B,1,H,W) metres, K (B,3,3), cam2ego (B,4,4).
    Returns a dict of N = H*W Gaussians per image: means (B,N,3) ego frame, quats (B,N,4) identity (wxyz),
    scales (B,N,3) isotropic, opacities (B,N) ones, colours (B,N,3) the pixel's RGB.
    """
    b = depth.shape[0]
    points = backproject(depth, torch.inverse(K))  # (B,3,N) camera frame
    means = (cam2ego[:, :3, :3] @ points + cam2ego[:, :3, 3:]).transpose(1, 2)
    n = means.shape[1]
    quats = means.new_zeros(b, n, 4)
    quats[..., 0] = 1.0
    return {
        "means": means,
        "quats": quats,
        "scales": scale.reshape(b, n, 1).expand(b, n, 3),
        "opacities": means.new_ones(b, n),
        "colours": img.reshape(b, 3, n).transpose(1, 2),
    }


def overlap_mask(alpha, erode_px):
    """Rendered opacity (..., 1, H, W) -> float mask (..., 1, H, W) of alpha > 0.5, eroded by erode_px pixels."""
    shape = alpha.shape
    return erode((alpha.detach() > 0.5).float().reshape(-1, 1, *shape[-2:]), erode_px).reshape(shape)


def erode(mask, erode_px):
    """Float mask (N, 1, H, W) eroded by erode_px pixels."""
    if erode_px <= 0:
        return mask
    k = 2 * erode_px + 1
    return 1.0 - F.max_pool2d(1.0 - mask, k, stride=1, padding=erode_px)


@torch.no_grad()
@full_precision
def geometric_overlap(K, cam2ego, targets, h, w, erode_px, depths=GEOMETRIC_DEPTHS):
    """Pixels of each target camera seen by the source camera at some plausible depth.

    K (B,S,3,3), cam2ego (B,S,4,4), targets: list over sources of target indices (T each).
    Returns (B,S,T,1,H,W) float {0, 1}: 1 where the target pixel's ray at each of ``depths`` metres projects
    inside the source image, in front of it; eroded by erode_px.
    """
    b, s = K.shape[:2]
    t = len(targets[0])
    src = torch.arange(s).repeat_interleave(t)
    tgt = torch.tensor(targets).flatten()
    Kt, Ks = K[:, tgt].flatten(0, 1), K[:, src].flatten(0, 1)
    T_t2s = (torch.inverse(cam2ego[:, src]) @ cam2ego[:, tgt]).flatten(0, 1)  # target camera -> source camera
    seen = torch.ones(Kt.shape[0], 1, h, w, device=K.device)
    for d in depths:
        pts = backproject(torch.full((Kt.shape[0], 1, h, w), d, device=K.device), torch.inverse(Kt))
        pix, z = project(pts, Ks, T_t2s)
        inside = (z > 1e-3) & (pix[..., 0] >= -0.5) & (pix[..., 0] <= w - 0.5) & \
                 (pix[..., 1] >= -0.5) & (pix[..., 1] <= h - 0.5)
        seen = seen * inside.float().view(-1, 1, h, w)
    return erode(seen, erode_px).view(b, s, t, 1, h, w)


@full_precision
def cross_view_loss(depths, imgs, scales, K, cam2ego, rasterize_fn, erode_px, neighbours=ring_neighbours,
                    valid=None, mask_mode="rendered"):
    """Photometric error of every camera's pixel Gaussians rendered into its spatial neighbours.

    depths (B,S,1,H,W), imgs (B,S,3,H,W), scales (B,S,1,H,W) metres, K (B,S,3,3), cam2ego (B,S,4,4);
    rasterize_fn: ``utils.rasterizer.rasterize`` (or a partial of it); ``neighbours(i)`` -> target cameras of
    source i (T of them, the same T for all i). One rasterisation per source camera renders all its targets.
    valid: optional (B,S,1,H,W) {0, 1}, 0 on the ego car's body (DDAD self-occlusion): those pixels make no
    Gaussian and are left out of the target images. mask_mode: "rendered" or "geometric" (module docstring).
    Returns (loss: masked mean of photometric_error over all pairs, 0 when no pixel overlaps,
             dict(render (B,S,T,3,H,W), mask (B,S,T,1,H,W), target (B,S,T,3,H,W))).
    """
    b, s, _, h, w = imgs.shape
    g = pixel_gaussians(depths.flatten(0, 1), imgs.flatten(0, 1), scales.flatten(0, 1), K.flatten(0, 1),
                        cam2ego.flatten(0, 1))
    g = {k: v.unflatten(0, (b, s)) for k, v in g.items()}
    if valid is not None:
        g["opacities"] = g["opacities"] * valid.flatten(2)  # opacity 0: dropped by the rasteriser
    viewmats = torch.inverse(cam2ego)
    targets = [list(neighbours(i)) for i in range(s)]
    renders, alphas = [], []
    for bi in range(b):
        for i in range(s):
            out = rasterize_fn(g["means"][bi, i], g["quats"][bi, i], g["scales"][bi, i], g["opacities"][bi, i],
                               g["colours"][bi, i], viewmats[bi, targets[i]], K[bi, targets[i]], w, h)
            renders.append(out["features"])
            alphas.append(out["alpha"])
    t = len(targets[0])
    render = torch.stack(renders).unflatten(0, (b, s))  # (B,S,T,3,H,W)
    if mask_mode == "geometric":
        mask = geometric_overlap(K, cam2ego, targets, h, w, erode_px)
    elif mask_mode == "rendered":
        mask = overlap_mask(torch.stack(alphas).unflatten(0, (b, s)), erode_px)
    else:
        raise ValueError(f"unknown GSP mask mode {mask_mode!r} (rendered or geometric)")
    index = torch.tensor(targets).flatten()
    target = imgs[:, index].unflatten(1, (s, t))
    if valid is not None:
        mask = mask * valid[:, index].unflatten(1, (s, t))
    err = photometric_error(render.flatten(0, 2), target.flatten(0, 2)).unflatten(0, (b, s, t))
    loss = (err * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, {"render": render, "mask": mask, "target": target}
