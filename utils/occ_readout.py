"""A label-free occupancy read-out: the opacity threshold under which the volume reproduces its own rendered depth.

The voxel opacities a stage-2 run ends with are on no fixed scale: the same street reads best at opacity > 0.4 in one
run and > 0.1 in another (a longer temporal baseline fits the depth with fainter voxels; a ground voxel crossed at a
grazing angle needs little opacity to stop a ray). A fixed threshold, or the argmax over the C+1 channels (about
opacity > 0.5), then throws most of a faint but well-placed volume away. This read-out picks the threshold per
sample from the sample's own render, without labels:

  for each camera ray whose rendered alpha is above ``min_alpha`` (it ends on the volume, not on the far background)
  and whose rendered surface point lies inside the Occ3D grid, the thresholded volume places the surface at the first
  voxel of opacity > t the ray meets (a binary volume of voxel Gaussians renders about at that voxel's centre). The
  error of t is how far that lands from the rendered surface, |log(z of the voxel centre / rendered z)| clipped at 1,
  averaged over the rays.

``consistent_threshold`` returns the middle one of the candidates whose error is within a tolerance of the
smallest. It is a property of the model's own volume and render: the labels are used only to score the result.
"""
import torch

from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_VOXEL, OCC_CLASSES

# Occ3D's ground classes: driveable_surface, other_flat, sidewalk, terrain
GROUND_IDS = tuple(OCC_CLASSES.index(c) for c in ("driveable_surface", "other_flat", "sidewalk", "terrain"))

CANDIDATES = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 ... 0.95


def first_hits(opacity, depth, K, cam2ego, candidates=CANDIDATES, zmin=OCC3D_LABEL_RANGE[2], stride=4, step=0.1,
               near=0.5, reach=1.5, chunk=1 << 21):
    """Where the thresholded volume ends each camera ray, for every threshold of ``candidates``.

    opacity (X, Y, Z) float, the Occ3D voxels (``zmin`` = bottom of layer 0); depth (N_cam, h, w) camera z of the
    rendered surface (NaN or <= 0 where a ray is not used); K (N_cam, 3, 3) at h x w; cam2ego (N_cam, 4, 4). Rays of
    every ``stride``-th pixel in both directions, whose rendered surface point lies inside the grid, are sampled
    every ``step`` metres from ``near`` metres along the ray to ``reach`` times the farthest surface.
    Returns (hits (R, T), surface (R,)), camera z: of the CENTRE of the first voxel of opacity > t the ray meets (a
    binary volume of voxel Gaussians renders about there; the last sample's voxel when there is none) and of the
    rendered surface.
    """
    dev = opacity.device
    n_cam, h, w = depth.shape
    X, Y, Z = opacity.shape
    lo = torch.tensor([OCC3D_LABEL_RANGE[0], OCC3D_LABEL_RANGE[1], zmin], device=dev)
    size = torch.tensor([X, Y, Z], device=dev)
    thr = torch.tensor(candidates, device=dev, dtype=torch.float32)
    vs, us = torch.meshgrid(torch.arange(stride // 2, h, stride, device=dev),
                            torch.arange(stride // 2, w, stride, device=dev), indexing="ij")
    pix = torch.stack([us, vs, torch.ones_like(us)], -1).reshape(-1, 3).float()
    flat = opacity.reshape(-1).float()
    hits, surface = [], []
    for c in range(n_cam):
        d = depth[c][vs, us].reshape(-1).float()
        R, origin = cam2ego[c, :3, :3].float(), cam2ego[c, :3, 3].float()
        dirs = pix @ torch.linalg.inv(K[c].float()).T @ R.T  # ego frame, camera z = 1
        ok = torch.isfinite(d) & (d > 0)
        cell = (origin + dirs * d.nan_to_num(0)[:, None] - lo) / OCC3D_VOXEL
        ok &= ((cell >= 0) & (cell < size)).all(1)
        if not ok.any():
            continue
        norm = dirs[ok].norm(dim=1)
        unit, dist = dirs[ok] / norm[:, None], d[ok] * norm  # metres along the ray to the surface
        n_s = int(((reach * dist.max() - near) / step).ceil().item()) + 1
        s = near + step * torch.arange(n_s, device=dev, dtype=torch.float32)
        per = max(1, chunk // n_s)
        for i in range(0, len(dist), per):
            idx = ((origin + unit[i:i + per, None, :] * s[None, :, None] - lo) / OCC3D_VOXEL).floor()
            inside = ((idx >= 0) & (idx < size)).all(-1)
            li = idx.long()
            lin = (li[..., 0].clamp(0, X - 1) * Y + li[..., 1].clamp(0, Y - 1)) * Z + li[..., 2].clamp(0, Z - 1)
            run = torch.where(inside, flat[lin], torch.zeros((), device=dev)).cummax(1).values  # (R, S)
            zc = ((idx + 0.5) * OCC3D_VOXEL + lo - origin) @ R[:, 2]  # camera z of each sample's voxel centre
            # the first sample above t comes after those whose running maximum (non-decreasing) is <= t
            first = torch.searchsorted(run, thr.expand(len(run), -1).contiguous(), right=True).clamp(max=n_s - 1)
            hits.append(zc.gather(1, first))
        surface.append(d[ok])
    if not hits:
        return opacity.new_zeros(0, len(candidates)), opacity.new_zeros(0)
    return torch.cat(hits), torch.cat(surface)


def consistent_threshold(opacity, depth_acc, alpha, K, cam2ego, zmin=OCC3D_LABEL_RANGE[2], candidates=CANDIDATES,
                         min_alpha=0.5, tolerance=0.01, **kw):
    """The threshold of ``candidates`` under which the volume's first hits best match its rendered depth.

    opacity (X, Y, Z): the Occ3D-voxel opacities of the sample; depth_acc / alpha (N_cam, h, w) (or (N_cam, 1, h, w)):
    the render's sum_i w_i z_i and sum_i w_i (no background); K at the render size, cam2ego (N_cam, 4, 4); ``kw``:
    ``first_hits``. Rays with alpha > ``min_alpha`` count. The error of a threshold is the mean over rays of
    min(|log(z of the first hit / z of the rendered surface)|, 1); the thresholds within ``tolerance`` of the smallest
    error explain the render equally well (a crisp volume: every t between its free and its occupied voxels), and the
    middle one of them is taken. Returns (t, error, rays): the threshold (float; the median candidate when no ray
    qualifies), its error and the number of rays used.
    """
    if depth_acc.dim() == 4:
        depth_acc, alpha = depth_acc[:, 0], alpha[:, 0]
    a = alpha.float()
    depth = torch.where(a > min_alpha, depth_acc.float() / a.clamp(min=1e-6), torch.full_like(a, float("nan")))
    hits, surface = first_hits(opacity, depth, K, cam2ego, candidates, zmin, **kw)
    if len(surface) == 0:
        return float(candidates[len(candidates) // 2]), float("nan"), 0
    err = (hits.clamp(min=1e-3) / surface[:, None]).log().abs().clamp(max=1).mean(0)
    good = (err <= err.min() + tolerance).nonzero()[:, 0]
    k = int(good[len(good) // 2])
    return float(candidates[k]), float(err[k]), len(surface)


def thin_ground(occ, opacity, ground_ids=GROUND_IDS, free_id=FREE_ID):
    """The ground as one voxel per column: of the voxels of a column read as a ground class, only the most opaque
    stays (the others become free; every other class is left as it is).

    occ: (..., X, Y, Z) class ids (a read-out); opacity: the same shape, the voxel opacities it was read from. Occ3D's
    ground is a height field: one ground voxel per column in 94.5 % of the ground columns of the real Occ3D-nuScenes
    sample (the rest, on slopes and kerbs, hold two) and in every column of the synthetic labels; a volume drawn from
    renders has it thicker towards range, where rays cross the layers above the ground at grazing angles
    (docs/results/runs/2026-12-03/occ-lid). No parameter, no label."""
    ground = torch.isin(occ, torch.tensor(ground_ids, dtype=occ.dtype, device=occ.device))
    score = torch.where(ground, opacity.float(), torch.full_like(opacity, -1, dtype=torch.float32))
    keep = score.argmax(-1, keepdim=True)
    z = torch.arange(occ.shape[-1], device=occ.device)
    return torch.where(ground & (z != keep), torch.full_like(occ, free_id), occ)
