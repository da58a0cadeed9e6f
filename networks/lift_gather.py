"""Lifting image features to the voxels as ONE weighted gather (speed option ``--lift_impl gather``).

``networks.occ_net.lift_features`` calls grid_sample once per camera on every voxel centre: 6 full passes that
write (B, C, P) float32 volumes and add them up, and a backward whose atomic adds go channel by channel into the
NCHW feature map (11 ms a step on an H200 at the paper's 300 x 300 x 24 grid, issue 20). Here the same average is
one ``embedding_bag`` over a channels-last table of the feature maps (rows = camera pixels, C values each): each
voxel is a bag of the 4 bilinear corners of every camera that sees it, weighted by the bilinear weights over the
number of such cameras. The forward writes the volume once, already channels-last ((B, P, C) memory, what a
channels_last_3d 3D CNN reads); the backward sorts the corner indices and sums each pixel's rows (no atomics).

Same sampling as grid_sample(align_corners=False, padding_mode zeros) at the same normalised coordinates: corners
outside the map weigh 0, a voxel nobody sees gets zeros (tests/test_speed_options.py compares values and
gradients with lift_features). Geometry is float32 (``full_precision``), as there.
"""
import torch
import torch.nn.functional as F

from utils.geometry import inv
from utils.precision import full_precision


def _visible_pairs(K, cam2ego, pts, image_size, min_depth, with_depth=False):
    """Normalised sampling coordinates of every (sample, point, camera) and which ones are visible.

    Returns gx, gy (B, P, N_cam) as lift_features computes them (pixel centres: (u + 0.5) / W * 2 - 1) and
    visible (B, P, N_cam) bool (in front by min_depth and inside the image); with ``with_depth`` also the point's
    depth z (B, P, N_cam) in each camera."""
    H, W = image_size
    ego2cam = inv(cam2ego)  # (B, N_cam, 4, 4)
    pts_h = torch.cat([pts, torch.ones_like(pts[:, :1])], 1).t()  # (4, P)
    cam = ego2cam[:, :, :3] @ pts_h  # (B, N_cam, 3, P)
    z = cam[:, :, 2]
    uv = (K @ cam)[:, :, :2] / z.clamp(min=1e-6)[:, :, None]
    gx, gy = (uv[:, :, 0] + 0.5) / W * 2 - 1, (uv[:, :, 1] + 0.5) / H * 2 - 1
    visible = (z > min_depth) & (gx.abs() <= 1) & (gy.abs() <= 1)
    out = (gx.transpose(1, 2), gy.transpose(1, 2), visible.transpose(1, 2))
    return out + (z.transpose(1, 2),) if with_depth else out


def _corners(gx, gy, h, w):
    """Bilinear corners of grid_sample(align_corners=False) at normalised (gx, gy) (any equal shapes) on an h x w
    map: column, row (..., 4) long and weights (..., 4) (0 for a corner outside the map; its index clamped)."""
    ix, iy = ((gx + 1) * w - 1) / 2, ((gy + 1) * h - 1) / 2
    x0, y0 = torch.floor(ix), torch.floor(iy)
    x1, y1 = x0 + 1, y0 + 1
    xs = torch.stack([x0, x1, x0, x1], -1)
    ys = torch.stack([y0, y0, y1, y1], -1)
    wts = torch.stack([(x1 - ix) * (y1 - iy), (ix - x0) * (y1 - iy), (x1 - ix) * (iy - y0), (ix - x0) * (iy - y0)], -1)
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    wts = torch.where(inside, wts, torch.zeros_like(wts))
    return xs.clamp(0, w - 1).long(), ys.clamp(0, h - 1).long(), wts


@full_precision
def _bags(feat_shape, K, cam2ego, pts, image_size, min_depth):
    """The gather's indices and weights (float32 geometry): rows (pairs * 4,) into the (B * N_cam * h * w) table,
    per-sample weights (pairs * 4,), the bags' offsets (B * P,) and count (B, P), the cameras that see each point."""
    B, n_cam, _, h, w = feat_shape
    with torch.no_grad():
        gx, gy, visible = _visible_pairs(K, cam2ego, pts, image_size, min_depth)
        count = visible.sum(-1)  # (B, P): cameras that see each point
        b, p, c = visible.nonzero(as_tuple=True)  # grouped by (sample, point): the bags
        xs, ys, wts = _corners(gx[b, p, c], gy[b, p, c], h, w)
        rows = ((b * n_cam + c)[:, None] * h + ys) * w + xs  # (pairs, 4)
        wts = wts / count[b, p].clamp(min=1)[:, None].to(wts.dtype)
        per_point = 4 * count.flatten()
        offsets = per_point.cumsum(0) - per_point
    return rows.flatten(), wts.flatten(), offsets, count


def lift_features_gather(feats, K, cam2ego, pts, image_size, min_depth=0.1, visibility=True, dtype=None, split=False):
    """lift_features' result, computed as one gather. feats (B, N_cam, C, h, w), K (B, N_cam, 3, 3) at the image
    size ``image_size`` (H, W), cam2ego (B, N_cam, 4, 4), pts (P, 3) ego points.

    Returns (B, C + 1, P) with ``visibility`` (mean feature and the fraction of cameras that see the point), else
    (B, C, P); its memory is (B, P, C [+1]): viewed as (B, C, X, Y, Z) it is a channels_last_3d volume. The
    geometry is float32 whatever autocast says; the gather and the volume are in ``dtype`` (default: float32, or
    float64 for float64 features; ``--lift_dtype features`` passes the features' own dtype, bf16 under autocast, so
    that the 3D CNN's first convolution casts no volume of ~2e6 voxels x C channels forward and back). With
    ``split``: the tuple (B, C, P) features, (B, 1, P) visibility (None without ``visibility``), not concatenated
    (networks/occ_net.py's SplitConv3d takes them apart)."""
    B, n_cam, C, h, w = feats.shape
    if dtype is None:
        dtype = torch.float64 if feats.dtype == torch.float64 else torch.float32
    rows, wts, offsets, count = _bags(feats.shape, K, cam2ego, pts, image_size, min_depth)
    table = feats.to(dtype).permute(0, 1, 3, 4, 2).reshape(B * n_cam * h * w, C)  # one row per camera pixel
    with torch.autocast(feats.device.type, enabled=False):
        out = F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=wts.to(dtype))
    vis = count.flatten().to(dtype)[:, None] / n_cam if visibility else None
    if split:
        return out.view(B, pts.shape[0], -1).transpose(1, 2), None if vis is None else vis.view(B, 1, -1)
    if visibility:
        out = torch.cat([out, vis], 1)
    return out.view(B, pts.shape[0], -1).transpose(1, 2)
