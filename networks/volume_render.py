"""Volume rendering of a voxel occupancy volume: the OccNeRF-style baseline that GSV's splatting replaces.

Rays leave each camera through the pixel centres, are clipped to the grid's box (and to ``near`` / ``far`` camera
depth), and are cut into segments of ``step`` metres (the last one shorter). At each segment's midpoint the
occupancy probability and the features are interpolated trilinearly (``F.grid_sample``; the volume's border values
extend outwards). Density: sigma = -log(1 - p (1 - eps)) / voxel_size, so crossing one voxel of probability p gives
alpha = p (1 - eps). Front-to-back compositing, w_i = T_i (1 - exp(-sigma_i delta_i)). The outputs follow
``utils.rasterizer.rasterize``: depth is the accumulated camera z (OpenCV z along the optical axis), not divided
by alpha. Everything is differentiable with respect to ``occ`` and ``feats``; ray chunks are recomputed in the
backward pass (activation checkpointing) so memory grows with ``chunk``, not with the image.
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from utils.precision import full_precision


@full_precision
def _camera_rays(viewmats, Ks, width, height):
    """Rays through the pixel centres (at integer pixel coordinates, the OpenCV convention of utils.geometry
    and of the rasteriser).

    Returns origins (C*H*W, 3) and directions (C*H*W, 3) in the world frame, scaled so that moving by one
    direction changes camera z by 1 (so the ray parameter of a point is its camera depth).
    """
    C = viewmats.shape[0]
    dev, dt = viewmats.device, viewmats.dtype
    v, u = torch.meshgrid(
        torch.arange(height, device=dev, dtype=dt), torch.arange(width, device=dev, dtype=dt), indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (HW, 3)
    dirs_cam = pix @ torch.linalg.inv(Ks).transpose(1, 2)  # (C, HW, 3), z = 1
    cam2world = torch.linalg.inv(viewmats)
    dirs = dirs_cam @ cam2world[:, :3, :3].transpose(1, 2)
    origins = cam2world[:, None, :3, 3].expand_as(dirs)
    return origins.reshape(-1, 3), dirs.reshape(-1, 3)


def _box_clip(origins, dirs, lo, hi, near, far):
    """Camera-depth interval [z_in, z_out] of each ray inside the box lo..hi and near..far (empty: z_out <= z_in)."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (lo - origins) / safe, (hi - origins) / safe
    z_in = torch.minimum(t0, t1).amax(-1).clamp(min=near)
    z_out = torch.maximum(t0, t1).amin(-1).clamp(max=far)
    return z_in, z_out


def _render_chunk(volume, origins, dirs, z_in, z_out, lo, hi, dz_max, voxel, eps):
    """Composite one chunk of R rays.

    Args:
        volume: (1, 1+D, Z, Y, X) occupancy probability then features.
        origins, dirs: (R, 3); z_in, z_out: (R,) camera-depth limits; dz_max: (R,) segment length in camera depth
            (``step`` divided by the ray's length per unit depth).
    Returns (R, 2 + D): depth, alpha, features.
    """
    num = max(int(torch.ceil(((z_out - z_in) / dz_max).max()).item()), 1)
    k = torch.arange(num, device=dirs.device, dtype=dirs.dtype)
    z0 = z_in[:, None] + k * dz_max[:, None]  # (R, S)
    z1 = torch.minimum(z0 + dz_max[:, None], z_out[:, None])
    dz = (z1 - z0).clamp(min=0)
    z_mid = 0.5 * (z0 + z1)
    pts = origins[:, None] + dirs[:, None] * z_mid[..., None]  # (R, S, 3)
    grid = 2 * (pts - lo) / (hi - lo) - 1
    samples = F.grid_sample(volume, grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    samples = samples[0, :, 0]  # (1+D, R, S)
    p = samples[0].clamp(0, 1)
    length = dz * dirs.norm(dim=-1, keepdim=True)  # metres travelled in each segment
    tau = -torch.log1p(-p * (1 - eps)) / voxel * length
    trans = torch.exp(-(torch.cumsum(tau, 1) - tau))
    weights = trans * (1 - torch.exp(-tau))  # (R, S)
    depth = (weights * z_mid).sum(1, keepdim=True)
    alpha = weights.sum(1, keepdim=True)
    feats = torch.einsum("rs,drs->rd", weights, samples[1:])
    return torch.cat([depth, alpha, feats], 1)


def render_volume(
    occ, feats, grid_range, viewmats, Ks, width, height, *, step=None, near=0.1, far=None, chunk=4096, eps=1e-6
):
    """Volume-render an occupancy volume into C cameras.

    Args:
        occ: (X, Y, Z) occupancy probability in [0, 1] (X forward, like Occ3D), on the box ``grid_range``.
        feats: (D, X, Y, Z) per-voxel features (e.g. semantic logits) or None.
        grid_range: (xmin, ymin, zmin, xmax, ymax, zmax) in the world frame of ``viewmats`` (metres).
        viewmats: (C, 4, 4) world -> camera (OpenCV); Ks: (C, 3, 3) intrinsics for width x height.
        step: segment length in metres along the ray (default half the mean voxel size).
        near, far: camera-depth limits in metres (far None: up to the box).
        chunk: rays composited at once (memory: about chunk * samples per ray * (D + 1) floats).
        eps: keeps the density finite where p = 1.
    Returns:
        dict with ``depth`` (C,1,H,W) sum_i w_i z_i, ``depth_exp`` (C,1,H,W) depth / alpha, ``alpha`` (C,1,H,W)
        sum_i w_i, ``features`` (C,D,H,W) sum_i w_i f_i (D = 0 when ``feats`` is None).
    """
    shape = torch.tensor(occ.shape, dtype=occ.dtype, device=occ.device)
    lo = torch.tensor(grid_range[:3], dtype=occ.dtype, device=occ.device)
    hi = torch.tensor(grid_range[3:], dtype=occ.dtype, device=occ.device)
    voxel = ((hi - lo) / shape).mean()
    step = float(voxel) / 2 if step is None else float(step)
    volume = occ[None] if feats is None else torch.cat([occ[None], feats.to(occ.dtype)], 0)
    volume = volume.permute(0, 3, 2, 1)[None].contiguous()  # (1, 1+D, Z, Y, X): grid_sample's (x, y, z) order

    origins, dirs = _camera_rays(viewmats.to(occ), Ks.to(occ), width, height)
    z_in, z_out = _box_clip(origins, dirs, lo, hi, near, math.inf if far is None else far)
    dz_max = step / dirs.norm(dim=-1)
    use_ckpt = torch.is_grad_enabled() and volume.requires_grad
    outs = []
    for s in range(0, origins.shape[0], chunk):
        args = (volume, origins[s : s + chunk], dirs[s : s + chunk], z_in[s : s + chunk], z_out[s : s + chunk])
        args += (lo, hi, dz_max[s : s + chunk], voxel, eps)
        outs.append(checkpoint(_render_chunk, *args, use_reentrant=False) if use_ckpt else _render_chunk(*args))
    C = viewmats.shape[0]
    out = torch.cat(outs, 0).reshape(C, height, width, -1).permute(0, 3, 1, 2)
    depth, alpha = out[:, :1], out[:, 1:2]
    return {
        "depth": depth,
        "depth_exp": depth / alpha.clamp(min=1e-10),
        "alpha": alpha,
        "features": out[:, 2:],
    }
