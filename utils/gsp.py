"""GSP (Gaussian Splatting for Projection): the cross-view term of stage 1 that gives the depth metric scale.

Each pixel of camera i becomes a small Gaussian at its back-projected (predicted) depth. Those Gaussians are
splatted into the two ring neighbours j of camera i through the calibrated, metric extrinsics, and the rendering
is compared with the real image of camera j. Only a depth of the right metric scale makes the two agree, because
the baseline between the cameras is fixed in metres.

Overlap mask: the pixels of j where the rendered opacity of i's Gaussians exceeds 0.5, eroded by ``erode_px``
pixels (borders of the splatted footprint are blurred and half covered). It follows the geometry of the
predicted depth; it is detached (no gradient flows through the mask). It is empty when the views do not overlap.
"""
import torch
import torch.nn.functional as F

from utils.constants import ring_neighbours
from utils.geometry import backproject
from utils.losses import photometric_error


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
    m = (alpha.detach() > 0.5).float().reshape(-1, 1, *shape[-2:])
    if erode_px > 0:
        k = 2 * erode_px + 1
        m = 1.0 - F.max_pool2d(1.0 - m, k, stride=1, padding=erode_px)
    return m.reshape(shape)


def cross_view_loss(depths, imgs, scales, K, cam2ego, rasterize_fn, erode_px, neighbours=ring_neighbours,
                    valid=None):
    """Photometric error of every camera's pixel Gaussians rendered into its spatial neighbours.

    depths (B,S,1,H,W), imgs (B,S,3,H,W), scales (B,S,1,H,W) metres, K (B,S,3,3), cam2ego (B,S,4,4);
    rasterize_fn: ``utils.rasterizer.rasterize`` (or a partial of it); ``neighbours(i)`` -> target cameras of
    source i (T of them, the same T for all i). One rasterisation per source camera renders all its targets.
    valid: optional (B,S,1,H,W) {0, 1}, 0 on the ego car's body (DDAD self-occlusion): those pixels make no
    Gaussian and are left out of the target images.
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
    mask = overlap_mask(torch.stack(alphas).unflatten(0, (b, s)), erode_px)
    index = torch.tensor(targets).flatten()
    target = imgs[:, index].unflatten(1, (s, t))
    if valid is not None:
        mask = mask * valid[:, index].unflatten(1, (s, t))
    err = photometric_error(render.flatten(0, 2), target.flatten(0, 2)).unflatten(0, (b, s, t))
    loss = (err * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, {"render": render, "mask": mask, "target": target}
