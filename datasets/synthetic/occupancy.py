"""Occ3D labels computed from the synthetic geometry: voxel semantics and the camera / LiDAR visibility masks.

Voxel rule: each 0.4 m voxel of the (200, 200, 16) grid over [-40, 40] x [-40, 40] x [-1, 5.4] m in the current
ego frame (z = 0 on the road) is sampled at 3 x 3 x 3 sub-points. A sub-point is solid if it lies inside a
primitive or below the ground surface (road z = 0, sidewalk / terrain / other_flat z = 0.15). A voxel is occupied
if any sub-point is solid; its class is the most frequent class among its solid sub-points (ties: lowest id).
So the ground is solid from -1 m up to the layer that contains its surface ([-0.2, 0.2] m, layer 2), and the
top solid layer is the one the sensors see. ``observed`` marks the voxels that rays cross up to and including
the first occupied one (a 3D DDA walk), which is how ``mask_lidar`` is made (LiDAR is sparse by nature).
``mask_camera`` (``camera_mask``) is dense: a depth-buffer test of every voxel against each camera's first
surfaces, since the camera rays of a finite image get sparser than the voxels on the road beyond ~20 m.
"""
import numpy as np

from utils.constants import FREE_ID, NUM_SEM_CLASSES, OCC3D_RANGE, OCC3D_SHAPE, OCC3D_VOXEL
from datasets.synthetic.scene import BOX

SUB = 3
GMIN, GMAX = np.array(OCC3D_RANGE[:3]), np.array(OCC3D_RANGE[3:])
SHAPE = np.array(OCC3D_SHAPE)
R_VOXEL = OCC3D_VOXEL * np.sqrt(3) / 2  # half diagonal of a voxel


def _axis(n, lo, sub=SUB):
    """Sub-point coordinates along one axis: (n * sub,) voxel by voxel."""
    return lo + (np.arange(n * sub) + 0.5) * OCC3D_VOXEL / sub


def _ground_counts(world, ego2global, counts):
    """Add the ground's solid sub-points (below the surface height) to ``counts`` (X, Y, Z, C)."""
    X, Y, Z = OCC3D_SHAPE
    x, y = np.meshgrid(_axis(X, GMIN[0]), _axis(Y, GMIN[1]), indexing="ij")
    gx = ego2global[0, 0] * x + ego2global[0, 1] * y + ego2global[0, 3]
    gy = ego2global[1, 0] * x + ego2global[1, 1] * y + ego2global[1, 3]
    cls, h = world.road.ground(gx, gy)
    h = h - ego2global[2, 3]
    z = _axis(Z, GMIN[2])
    top = int(np.ceil((h.max() - GMIN[2]) / OCC3D_VOXEL)) * SUB  # sub-layers that can be below the surface
    below = z[None, None, :top] < h[..., None]
    for c in np.unique(cls):
        solid = below & (cls == c)[..., None]
        counts[:, :, :top // SUB, c] += solid.reshape(X, SUB, Y, SUB, -1, SUB).sum((1, 3, 5), dtype=np.uint16)


def _prim_counts(world, i, g2e, counts):
    """Add the sub-points of the voxels around primitive ``i`` that lie inside it to ``counts``."""
    c, s = np.cos(world.yaw[i]), np.sin(world.yaw[i])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # primitive -> global
    half = world.half[i]
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * half
    ego = (corners @ rot.T + world.center[i]) @ g2e[:3, :3].T + g2e[:3, 3]
    lo = np.clip(np.floor((ego.min(0) - GMIN) / OCC3D_VOXEL).astype(int), 0, SHAPE)
    hi = np.clip(np.floor((ego.max(0) - GMIN) / OCC3D_VOXEL).astype(int) + 1, 0, SHAPE)
    n = hi - lo
    if (n <= 0).any():
        return
    axes = [_axis(n[k], GMIN[k] + lo[k] * OCC3D_VOXEL) for k in range(3)]
    p = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    e2l = rot.T @ np.linalg.inv(g2e[:3, :3])  # ego -> primitive frame (rotation part)
    local = (p - (world.center[i] @ g2e[:3, :3].T + g2e[:3, 3])) @ e2l.T
    if world.kind[i] == BOX:
        inside = (np.abs(local) <= half).all(1)
    else:
        inside = ((local / half) ** 2).sum(1) <= 1.0
    inside = inside.reshape(n[0], SUB, n[1], SUB, n[2], SUB).sum((1, 3, 5), dtype=np.uint16)
    counts[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], world.cls[i]] += inside


def semantics(world, ego2global):
    """(200, 200, 16) uint8 Occ3D class ids (17 = free) of the world around the ego pose ``ego2global``."""
    counts = np.zeros(tuple(OCC3D_SHAPE) + (NUM_SEM_CLASSES,), dtype=np.uint16)
    _ground_counts(world, ego2global, counts)
    g2e = np.linalg.inv(ego2global)
    centre = world.center @ g2e[:3, :3].T + g2e[:3, 3]
    near = (np.abs(centre[:, :2]) < 40 + world.radius[:, None]).all(1)
    near &= (centre[:, 2] + world.radius > GMIN[2]) & (centre[:, 2] - world.radius < OCC3D_RANGE[5])
    for i in np.nonzero(near)[0]:
        _prim_counts(world, i, g2e, counts)
    labels = counts.argmax(-1).astype(np.uint8)
    labels[counts.max(-1) == 0] = FREE_ID
    return labels


def _exit_distance(o, d):
    """Distance along each ray from its origin (inside the grid) to where it leaves the grid."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (GMAX - o) / d, np.where(d < 0, (GMIN - o) / d, np.inf))
    return t.min(1)


def observed(occupied, origins, dirs, first_hits=False):
    """Voxels crossed by rays (origins (N, 3) inside the grid, unit dirs (N, 3), ego frame) up to and including
    the first occupied voxel, as a bool grid. A vectorised 3D DDA (Amanatides & Woo) over all rays at once.
    With ``first_hits``, also the flat index of each ray's first occupied voxel (-1: none, the ray leaves the grid)
    and the axis (0, 1, 2) of the face it enters that voxel through (-1: none, or the ray starts inside it)."""
    occ = occupied.reshape(-1)
    seen = np.zeros(occ.shape, dtype=bool)
    o = np.broadcast_to(origins, dirs.shape)
    hit_flat, hit_axis = np.full(len(dirs), -1, np.int64), np.full(len(dirs), -1, np.int8)
    idx = np.floor((o - GMIN) / OCC3D_VOXEL).astype(np.int64)
    ok = ((idx >= 0) & (idx < SHAPE)).all(1)
    ray, idx, d, o = np.nonzero(ok)[0], idx[ok], dirs[ok], o[ok]
    strides = np.array([SHAPE[1] * SHAPE[2], SHAPE[2], 1])
    flat = (idx * strides).sum(1)
    axis = np.full(len(flat), -1, np.int8)  # axis of the last step (the face the ray entered through)
    t_exit = _exit_distance(o, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(d != 0, OCC3D_VOXEL / np.abs(d), np.inf)  # ray length across one voxel, per axis
        nxt = np.where(d != 0, ((idx + (d > 0)) * OCC3D_VOXEL + GMIN - o) / d, np.inf)  # next boundary, per axis
    step = np.where(d > 0, strides, -strides)
    (tx, ty, tz), (dx, dy, dz), (sx, sy, sz) = nxt.T.copy(), delta.T.copy(), step.T.copy()
    while len(flat):
        seen[flat] = True
        stop = occ[flat]
        if first_hits and stop.any():
            hit_flat[ray[stop]], hit_axis[ray[stop]] = flat[stop], axis[stop]
        t_leave = np.minimum(np.minimum(tx, ty), tz)
        mx = tx == t_leave  # the axis whose boundary comes first (ties: x, then y)
        my = ~mx & (ty == t_leave)
        mz = ~mx & ~my
        go = np.nonzero(~stop & (t_leave < t_exit - 1e-6))[0]
        flat = flat + np.where(mx, sx, np.where(my, sy, sz))
        if first_hits:
            axis = np.where(mx, 0, np.where(my, 1, 2)).astype(np.int8)[go]
            ray = ray[go]
        tx, ty, tz = np.where(mx, tx + dx, tx), np.where(my, ty + dy, ty), np.where(mz, tz + dz, tz)
        flat, t_exit, tx, ty, tz, dx, dy, dz, sx, sy, sz = (
            a[go] for a in (flat, t_exit, tx, ty, tz, dx, dy, dz, sx, sy, sz))
    seen = seen.reshape(OCC3D_SHAPE)
    return (seen, hit_flat, hit_axis) if first_hits else seen


# sample points of a voxel for the camera test: its centre and its 8 corners pulled 10 % of a voxel inwards
SAMPLE_OFFSETS = np.concatenate([np.zeros((1, 3)), 0.4 * OCC3D_VOXEL * np.array(
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
    """Camera visibility mask (200, 200, 16) bool: the voxels some camera sees, i.e. that lie in front of or at
    the first occupied voxel along a line of sight. ``cameras``: (K (3, 3), cam2ego (4, 4), h, w) per camera.

    A depth-buffer test on the voxel grid itself. 1) Each camera's buffer: the ray through every pixel centre
    (h x w) is marched through the grid (``observed``) to its first occupied voxel H; the pixel keeps the axis
    ``a`` of the face the ray enters H through, the ray's direction ``s`` (+-1) along it and H's index ``L`` along
    it: the voxel-aligned plane of the first surface it sees. 2) Every voxel V that can be seen at all (free, or
    occupied with a free face neighbour) is tested at 9 sample points (centre and corners 10 % inside): a point
    that projects into the image (nearest pixel) passes if the pixel's ray leaves the grid without a hit, or if
    V lies in front of the pixel's surface plane (s * V[a] < s * L), or V is an occupied voxel of the surface layer
    itself (V[a] == L) whose face towards the camera is free, i.e. V's face lies in the plane the pixel sees and is
    not covered. The depth tolerance is thus exactly the surface voxel layer, measured along the surface normal.
    A voxel is visible if a sample point passes in some camera, or if a pixel ray crosses it (the marched voxels).
    Why not a metric tolerance on camera z: on the road at 40 m one pixel row of a 180 x 320 image spans > 4 m of
    depth, so the depth at the pixel centre can't decide for a point elsewhere in the pixel; the plane of the
    first surface can, at any incidence. So free voxels in front of surfaces and the top ground layer / the first
    layer of objects are visible out to the grid edge without gaps, buried ground layers and object interiors
    (no free face neighbour) are not; only points within half a pixel of a silhouette may be decided by the pixel
    on its other side.
    """
    ray_o, ray_d = [], []
    for K, c2e, h, w in cameras:
        v, u = np.mgrid[0:h, 0:w].astype(np.float64)
        d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
        d = d / np.linalg.norm(d, axis=1, keepdims=True) @ c2e[:3, :3].T
        ray_o.append(np.broadcast_to(c2e[:3, 3], d.shape))
        ray_d.append(d)
    ray_d = np.concatenate(ray_d)
    seen, hit_flat, hit_axis = observed(occupied, np.concatenate(ray_o), ray_d, first_hits=True)
    # per pixel: axis, direction sign and signed index bound of its surface plane; no hit: S = 0, B = 1 (every
    # voxel in front); a ray starting inside an occupied voxel (not with this rig): S = 0, B = -1 (none)
    hit, inside = hit_flat >= 0, (hit_flat >= 0) & (hit_axis < 0)
    a = np.maximum(hit_axis, 0).astype(np.int64)
    hit_idx = np.stack(np.unravel_index(np.maximum(hit_flat, 0), OCC3D_SHAPE), 1)
    n_ray = np.arange(len(a))
    sgn = np.where(hit & ~inside, np.sign(ray_d[n_ray, a]), 0).astype(np.int64)
    bound = np.where(hit, np.where(inside, -1, sgn * hit_idx[n_ray, a]), 1)
    row = 2 * a + (sgn > 0)  # row of _exposed for the pixel's face
    occ = occupied.reshape(-1)
    exposed = _exposed(occupied)
    vis = seen.reshape(-1).copy()
    maybe = ~occ | exposed.any(0)  # voxels that can be seen at all
    ii = np.stack(np.unravel_index(np.arange(vis.size), OCC3D_SHAPE), 1).astype(np.int32)  # (n, 3) indices
    axes = [_axis(n, lo, 1) for n, lo in zip(OCC3D_SHAPE, GMIN)]  # voxel centres per axis
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
