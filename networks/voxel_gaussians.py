"""One Gaussian per voxel: the bridge from the occupancy volume to the rasteriser.

Each voxel becomes a Gaussian with identity rotation and
  * opacity  = 1 - p(free): ``voxel_opacity``, 1 - sigmoid(free logit) (the authors') or 1 - softmax(logits)[free],
  * features = the C semantic logits,
  * mean     = the voxel centre, or with ``gs_offset`` F > 0 the centre + F voxel tanh(raw offset) per axis,
  * scale    = ``gs_scale`` metres, or with ``gs_scale_learn`` ``gs_scale_max * sigmoid(raw scale)`` (a smooth
               clamp at the maximum; ``gs_scale_axes 3``: one per grid axis, axis-aligned ellipsoids); with
               contracted coordinates, x4 beyond 60 m and x8 beyond 80 m from the ego origin, where the voxels
               are large: distance along the contracted axes (horizontal for ``contract_mode xy``, 3D for ``xyz``,
               as the authors' point_distance).
Two prunings, both exact (they only drop Gaussians the rasteriser would not draw anyway; see the second):
  * opacity < 1/255: the rasteriser skips any alpha below 1/255 and alpha <= opacity;
  * behind all cameras: a Gaussian whose mean is closer than ``near`` along the optical axis of every camera
    (half-space test per camera) is culled by the rasteriser in every view (tested on the voxel centre: with
    ``gs_offset`` a mean within half a voxel of the cameras' planes may differ, next to the ego car only).
"""
import torch

from utils.precision import full_precision

# (distance in metres, scale factor) for contracted grids; the authors' 1.5 x real_size[1] and max_depth at their
# nuScenes settings
FAR_SCALE = ((60.0, 4.0), (80.0, 8.0))
MIN_OPACITY = 1.0 / 255.0


def voxel_opacity(logits, mode="sigmoid"):
    """Opacity (B, X, Y, Z) of the voxels of logits (B, C+1, X, Y, Z), last channel free: 1 - sigmoid(free logit)
    (``sigmoid``, the authors': the free channel alone decides occupancy) or 1 - softmax(logits)[free]."""
    if mode == "sigmoid":
        return 1 - torch.sigmoid(logits[:, -1])
    if mode == "softmax":
        if logits.dim() > 2 and logits.stride(1) == 1:  # channels-last volume: softmax along its contiguous axis
            return 1 - torch.softmax(logits.movedim(1, -1), dim=-1)[..., -1]
        return 1 - torch.softmax(logits, dim=1)[:, -1]
    raise ValueError(f"unknown opacity mode {mode!r} (expected sigmoid or softmax)")


def gaussian_scales(centres, raw_scale, opt):
    """Scale per voxel, (P,) (isotropic) or (P, 3) (one per grid axis, from raw_scale (P, 3)). centres (P, 3)
    metric; raw_scale (P,) / (P, 3) or None when the scale is fixed."""
    if opt.gs_scale_learn:
        scale = opt.gs_scale_max * torch.sigmoid(raw_scale)
    else:
        scale = centres.new_full(centres.shape[:1], opt.gs_scale)
    if opt.contracted:
        axes = 3 if opt.contract_mode == "xyz" else 2
        dist = centres[:, :axes].norm(dim=1)
        factor = torch.ones_like(dist)
        for d, f in FAR_SCALE:
            factor = torch.where(dist > d, torch.full_like(dist, f), factor)
        scale = scale * (factor if scale.dim() == 1 else factor[:, None])
    return scale


def voxel_size(opt):
    """(3,) metres per voxel of the uniform grid of ``opt`` (real_size / grid_size)."""
    rs = torch.tensor(opt.real_size, dtype=torch.float32)
    return (rs[1::2] - rs[0::2]) / torch.tensor(opt.grid_size, dtype=torch.float32)


def offset_metres(raw_offset, opt):
    """(P, 3) shift of the Gaussian means, metres: gs_offset x voxel x tanh(raw_offset (P, 3))."""
    return opt.gs_offset * voxel_size(opt).to(raw_offset) * torch.tanh(raw_offset)


@full_precision
def in_front_of_any(centres, viewmats, near):
    """centres (P, 3), viewmats (N_cam, 4, 4) ego -> camera. Returns (P,) bool: depth >= near in some camera."""
    z = centres @ viewmats[:, 2, :3].t() + viewmats[:, 2, 3]  # (P, N_cam)
    return (z >= near).any(1)


def voxels_to_gaussians(logits, centres, opt, raw_scale=None, viewmats=None, near=0.1, opacity=None,
                        raw_offset=None):
    """Turn logit volumes into per-sample Gaussian sets.

    logits (B, C+1, X, Y, Z), last channel free; opacity (B, X, Y, Z) (default ``voxel_opacity(logits,
    opt.opacity)``); centres (X, Y, Z, 3) or (P, 3) metric ego coordinates;
    raw_scale (B, 1 or 3, X, Y, Z) when ``opt.gs_scale_learn`` (3: one per grid axis, ``gs_scale_axes``);
    viewmats (B, N_cam, 4, 4) ego -> camera enable the behind-all-cameras cull at depth ``near``; raw_offset
    (B, 3, X, Y, Z) with ``opt.gs_offset`` > 0: each mean moves by gs_offset x voxel x tanh(raw offset) per axis
    (uniform grid: the voxel size of real_size / grid_size).
    Returns a list of B dicts: means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,),
    features (N, C), index (N,) flat voxel index of each Gaussian.
    """
    centres = centres.reshape(-1, 3)
    if opacity is None:
        opacity = voxel_opacity(logits, opt.opacity)
    out = []
    for b in range(logits.shape[0]):
        lg = logits[b].flatten(1).t()  # (P, C+1)
        op = opacity[b].flatten()
        keep = op.detach() >= MIN_OPACITY
        if viewmats is not None:
            keep &= in_front_of_any(centres, viewmats[b], near)
        index = keep.nonzero()[:, 0]
        # index_select, not x[index]: the same rows, but its backward is an index_add (the indices are unique),
        # where x[index]'s is an accumulating index_put that sorts all ~2e6 indices first (the H100 profile at
        # 300 x 300 x 24: 4 such a step, 3.2 ms, two of them these)
        raw = None
        if raw_scale is not None:  # (1 or 3, X, Y, Z) -> (P,) or (P, 3)
            raw = raw_scale[b].flatten(1).t().index_select(0, index)
            raw = raw[:, 0] if raw.shape[1] == 1 else raw
        means = centres[index]
        if raw_offset is not None and getattr(opt, "gs_offset", 0) > 0:
            means = means + offset_metres(raw_offset[b].flatten(1).t().index_select(0, index), opt)
        scales = gaussian_scales(centres[index], raw, opt)
        scales = scales[:, None].expand(-1, 3) if scales.dim() == 1 else scales
        quats = means.new_zeros(len(index), 4)
        quats[:, 0] = 1
        out.append(dict(means=means, quats=quats, scales=scales, opacities=op.index_select(0, index),
                        features=lg[:, :-1].index_select(0, index), index=index))
    return out
