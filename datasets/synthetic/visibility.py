"""Which Occ3D voxels the sensors observe: a ray walk through the grid, the LiDAR mask and the camera mask.

Occ3D's rules as documented (Occ3D and CVPR 2023 challenge READMEs, Occ3D paper Sec. 3.2): a voxel is observed by
the LiDAR when a beam ends in it or passes through it, over the sweeps accumulated for the scene; beams are cast to
the RETURNED points, so a beam without a return observes nothing (``lidar_mask``). ``mask_camera`` keeps the
LiDAR-observed voxels that a camera sees (in the released labels it is a subset of ``mask_lidar``): the voxels on
lines of sight from a camera up to and including the first occupied voxel, for lines of sight that END on an
occupied voxel of the grid, so free air with nothing behind it (the sky) is not observed (``camera_mask``).
Grid: ``OCC3D_LABEL_RANGE`` in the current ego frame (layer 0 holds the road surface, see utils/constants.py).
"""
import numpy as np

from utils.constants import OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL
from utils.voxel_walk import VoxelWalk

GMIN, GMAX = np.array(OCC3D_LABEL_RANGE[:3]), np.array(OCC3D_LABEL_RANGE[3:])
SHAPE = np.array(OCC3D_SHAPE)
R_VOXEL = OCC3D_VOXEL * np.sqrt(3) / 2  # half diagonal of a voxel


def _axis_centres(n, lo):
    return lo + (np.arange(n) + 0.5) * OCC3D_VOXEL


def _exit_distance(o, d):
    """Distance along each ray from its origin (inside the grid) to where it leaves the grid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (GMAX - o) / d, np.where(d < 0, (GMIN - o) / d, np.inf))
    return t.min(1)


def observed(occupied, origins, dirs, t_max=None, first_hits=False):
    """Voxels crossed by rays (origins (N, 3) or (3,) inside the grid, unit dirs (N, 3), ego frame, metres) as a
    bool grid: up to and including the first occupied voxel (``occupied`` (200, 200, 16) bool; None: never stop),
    and with ``t_max`` (N,) up to and including the voxel that holds origin + t_max dir (both voxels when that
    point lies on a face between them). ``utils.voxel_walk.VoxelWalk`` over all rays at once. With
    ``first_hits``, also the flat index of each ray's first occupied voxel (-1: none, the ray leaves the grid or
    reaches t_max) and the axis (0, 1, 2) of the face it enters that voxel through (-1: none, or the ray starts
    inside it)."""
    n_vox = int(np.prod(SHAPE))
    occ = None if occupied is None else np.append(occupied.reshape(-1), False)  # last entry: a sink
    seen = np.zeros(n_vox + 1, dtype=bool)
    o = np.broadcast_to(origins, dirs.shape)
    hit_flat, hit_axis = np.full(len(dirs), -1, np.int64), np.full(len(dirs), -1, np.int8)
    idx = np.floor((o - GMIN) / OCC3D_VOXEL).astype(np.int64)
    ok = ((idx >= 0) & (idx < SHAPE)).all(1)
    d, o = dirs[ok], o[ok]
    strides = np.array([SHAPE[1] * SHAPE[2], SHAPE[2], 1])
    walk = VoxelWalk(o, d, GMIN, OCC3D_VOXEL, strides, tie="xyz", rays=np.nonzero(ok)[0])  # ties: x, then y
    axis = np.full(len(walk.flat), -1, np.int8)  # axis of the last step (the face the ray entered through)
    t_stop = _exit_distance(o, d) - 1e-6
    if t_max is not None:  # a point within 1 micrometre of a voxel face marks the voxels on both sides
        t_stop = np.minimum(t_stop, np.broadcast_to(t_max, len(dirs))[ok] + 1e-6)
    while len(walk.flat):
        flat = walk.flat
        seen[flat] = True
        stop = occ[flat] if occ is not None else np.zeros(len(flat), bool)
        if first_hits and stop.any():
            hit_flat[walk.ray[stop]], hit_axis[walk.ray[stop]] = flat[stop], axis[stop]
        go = ~stop & (walk.exit_distance() < t_stop)
        n_go = int(go.sum())
        if n_go == 0:
            break
        step = walk.axis()
        walk.advance(step)
        walk.flat = np.where(go, walk.flat, n_vox)  # finished rays: to the sink
        if first_hits:
            axis = step.astype(np.int8)
        if n_go < 0.6 * len(flat):  # drop the finished rays once they are many (compacting every step is slower)
            t_stop, axis = walk.keep(go, t_stop, axis)
        else:
            t_stop = np.where(go, t_stop, -np.inf)
    seen = seen[:n_vox].reshape(OCC3D_SHAPE)
    return (seen, hit_flat, hit_axis) if first_hits else seen


# sample points of a voxel for the camera test: its centre and its 8 corners pulled 1 % of a voxel inwards (so a
# voxel of which only a sliver at a silhouette is visible still counts; on a synthetic frame: 98.9 % of the voxels a
# full-resolution 900 x 1600 ray cast reaches, against 97.0 % with corners 10 % inside)
SAMPLE_OFFSETS = np.concatenate([np.zeros((1, 3)), 0.49 * OCC3D_VOXEL * np.array(
    np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T])


def _exposed(occupied):
    """(6, X * Y * Z) bool: row 2 a + (s > 0) tells whether the neighbour of each voxel at index - s along axis a
    (the side a ray travelling in direction s along a comes from) is free; outside the grid counts as occupied
    (a camera inside the grid never sees a voxel from outside it)."""
    free = np.pad(~occupied, 1, constant_values=False)
    X, Y, Z = occupied.shape
    rows = []
    for a in range(3):
        for s in (-1, 1):
            sl = [slice(1, X + 1), slice(1, Y + 1), slice(1, Z + 1)]
            sl[a] = slice(1 - s, 1 - s + occupied.shape[a])
            rows.append(free[tuple(sl)].reshape(-1))
    return np.stack(rows)


def _lookup(x, y, z, K, h, w):
    """Camera-frame points -> (indices of those in front of the camera that project into the image, their
    nearest pixel's flat index)."""
    ok = z > 1e-3
    zs = np.where(ok, z, np.float32(1))
    pu = np.floor(K[0, 0] * x / zs + (K[0, 2] + 0.5))
    pv = np.floor(K[1, 1] * y / zs + (K[1, 2] + 0.5))
    ok &= (pu >= 0) & (pu < w) & (pv >= 0) & (pv < h)
    sel = np.nonzero(ok)[0]
    return sel, pv[sel].astype(np.int64) * w + pu[sel].astype(np.int64)


def camera_mask(occupied, cameras):
    """Camera visibility (200, 200, 16) bool: the voxels some camera sees on a line of sight that ends on an
    occupied voxel of the grid, up to and including that voxel. ``cameras``: (K (3, 3), cam2ego (4, 4), h, w) each.

    A depth-buffer test on the voxel grid itself. 1) Each camera's buffer: the ray through every pixel centre
    (h x w) is marched through the grid (``observed``) to its first occupied voxel H; the pixel keeps the axis
    ``a`` of the face the ray enters H through, the ray's direction ``s`` (+-1) along it and H's index ``L`` along
    it: the voxel-aligned plane of the first surface it sees. A pixel whose ray leaves the grid without a hit (sky,
    or a surface beyond the grid) sees nothing. 2) Every voxel V that can be seen at all (free, or occupied with a
    free face neighbour) is tested at 9 sample points (centre and corners 1 % inside): a point that projects into
    the image (nearest pixel) passes if V lies in front of the pixel's surface plane (s * V[a] < s * L), or V is an
    occupied voxel of the surface layer itself (V[a] == L) whose face towards the camera is free, i.e. V's face lies
    in the plane the pixel sees and is not covered. The depth tolerance is thus exactly the surface voxel layer,
    measured along the surface normal. A voxel is visible if a sample point passes in some camera, or if the ray
    of a pixel that hits something crosses it (partly visible voxels at outlines).
    Why not a metric tolerance on camera z: on the road at 40 m one pixel row of a 180 x 320 image spans > 4 m of
    depth, so the depth at the pixel centre can't decide for a point elsewhere in the pixel; the plane of the
    first surface can, at any incidence. So free voxels in front of surfaces and the ground layer / the first
    layer of objects are visible out to the grid edge without gaps, object interiors (no free face neighbour) are
    not; only points within half a pixel of a silhouette may be decided by the pixel on its other side.
    """
    ray_o, ray_d = [], []
    for K, c2e, h, w in cameras:
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        d = d / np.linalg.norm(d, axis=1, keepdims=True) @ c2e[:3, :3].T
        ray_o.append(np.broadcast_to(c2e[:3, 3], d.shape))
        ray_d.append(d)
    ray_o, ray_d = np.concatenate(ray_o), np.concatenate(ray_d)
    _, hit_flat, hit_axis = observed(occupied, ray_o, ray_d, first_hits=True)
    hit = hit_flat >= 0
    seen = observed(occupied, ray_o[hit], ray_d[hit])  # again, only the rays that end on an occupied voxel
    # per pixel: axis, direction sign and signed index bound of its surface plane; no hit, or a ray starting
    # inside an occupied voxel (not with this rig): S = 0, B = -1 (no voxel passes)
    inside = hit & (hit_axis < 0)
    a = np.maximum(hit_axis, 0).astype(np.int64)
    hit_idx = np.stack(np.unravel_index(np.maximum(hit_flat, 0), OCC3D_SHAPE), 1)
    n_ray = np.arange(len(a))
    sgn = np.where(hit & ~inside, np.sign(ray_d[n_ray, a]), 0).astype(np.int64)
    bound = np.where(hit & ~inside, sgn * hit_idx[n_ray, a], -1)
    row = 2 * a + (sgn > 0)  # row of _exposed for the pixel's face
    occ = occupied.reshape(-1)
    exposed = _exposed(occupied)
    vis = seen.reshape(-1).copy()
    maybe = ~occ | exposed.any(0)  # voxels that can be seen at all
    ii = np.stack(np.unravel_index(np.arange(vis.size), OCC3D_SHAPE), 1).astype(np.int32)  # (n, 3) indices
    axes = [_axis_centres(n, lo) for n, lo in zip(OCC3D_SHAPE, GMIN)]  # voxel centres per axis
    start = 0
    for K, c2e, h, w in cameras:
        n_pix = h * w
        A, S, B, RW = (x[start:start + n_pix] for x in (a, sgn, bound, row))
        start += n_pix
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        Rt = c2e[:3, :3].T
        o = Rt @ c2e[:3, 3]
        # camera-frame coordinates (x right, y down, z forward) of all voxel centres, separably, float32
        pc = [(Rt[k, 0] * axes[0][:, None, None] + Rt[k, 1] * axes[1][None, :, None] + Rt[k, 2] * axes[2]
               - o[k]).astype(np.float32).reshape(-1) for k in range(3)]
        # keep the voxels whose bounding sphere can reach into the image
        z = pc[2]
        zs = np.maximum(z, 1e-6)
        mu, mv = R_VOXEL * fx / zs + 1, R_VOXEL * fy / zs + 1
        u, v = fx * pc[0] / zs + cx, fy * pc[1] / zs + cy
        keep = (z > -R_VOXEL) & ((z <= R_VOXEL) | ((u > -0.5 - mu) & (u < w - 0.5 + mu) & (v > -0.5 - mv)
                                                   & (v < h - 0.5 + mv)))
        cand = np.nonzero(keep & maybe & ~vis)[0]
        px, py, pz = (c[cand] for c in pc)
        R = c2e[:3, :3].astype(np.float32)
        for off_e, off in zip(SAMPLE_OFFSETS, (SAMPLE_OFFSETS @ c2e[:3, :3]).astype(np.float32)):
            sel, pix = _lookup(px + off[0], py + off[1], pz + off[2], K, h, w)
            vox = cand[sel]
            ap, sp, bp = A[pix], S[pix], B[pix]
            along = sp * ii[vox, ap]
            passed = along < bp  # in front of the pixel's surface plane
            # in its surface layer: the voxel's face on that plane must be uncovered, and seen at the point moved
            # onto it (a point below the road there would project onto road nearer than an occluder)
            tie = np.nonzero((along == bp) & occ[vox])[0]
            tie = tie[exposed[RW[pix[tie]], vox[tie]]]
            ta, st = ap[tie], sp[tie]
            shift = (-0.5 * OCC3D_VOXEL * st - off_e[ta]).astype(np.float32)[:, None] * R[ta]  # camera frame
            k = sel[tie]
            sel2, pix2 = _lookup(px[k] + off[0] + shift[:, 0], py[k] + off[1] + shift[:, 1],
                                 pz[k] + off[2] + shift[:, 2], K, h, w)
            v2, a2 = vox[tie[sel2]], A[pix2]
            same = (a2 == ta[sel2]) & (S[pix2] == st[sel2]) & (B[pix2] == bp[tie[sel2]])
            passed[tie[sel2]] = same | (S[pix2] * ii[v2, a2] < B[pix2])
            vis[vox[passed]] = True
            rest = np.ones(len(cand), bool)
            rest[sel[passed]] = False
            cand, px, py, pz = cand[rest], px[rest], py[rest], pz[rest]
    return vis.reshape(OCC3D_SHAPE)


def lidar_mask(origins, points):
    """LiDAR-observed voxels (200, 200, 16) bool: every voxel a beam passes through or ends in, for beams from
    ``origins`` (list of (3,) sensor positions, current ego frame) to their returned ``points`` (list of (N_i, 3),
    same frame); beams are walked to the point (or out of the grid) whatever they cross, as Occ3D does."""
    mask = np.zeros(OCC3D_SHAPE, bool)
    for o, p in zip(origins, points):
        v = p - o
        dist = np.linalg.norm(v, axis=1)
        keep = dist > 1e-6
        mask |= observed(None, np.asarray(o, np.float64), v[keep] / dist[keep, None], t_max=dist[keep])
    return mask
