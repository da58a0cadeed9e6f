"""Occ3D labels computed from the synthetic geometry: voxel semantics and the camera / LiDAR visibility masks.

Voxel rule: each 0.4 m voxel of the (200, 200, 16) grid over [-40, 40] x [-40, 40] x [-1, 5.4] m in the current
ego frame (z = 0 on the road) is sampled at 3 x 3 x 3 sub-points. A sub-point is solid if it lies inside a
primitive or below the ground surface (road z = 0, sidewalk / terrain / other_flat z = 0.15). A voxel is occupied
if any sub-point is solid; its class is the most frequent class among its solid sub-points (ties: lowest id).
So the ground is solid from -1 m up to the layer that contains its surface ([-0.2, 0.2] m, layer 2), and the
top solid layer is the one the sensors see. ``observed`` marks the voxels that rays cross up to and including
the first occupied one (a 3D DDA walk), which is how ``mask_camera`` and ``mask_lidar`` are made.
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


def observed(occupied, origins, dirs):
    """Voxels crossed by rays (origins (N, 3) inside the grid, unit dirs (N, 3), ego frame) up to and including
    the first occupied voxel, as a bool grid. A vectorised 3D DDA (Amanatides & Woo) over all rays at once."""
    occ = occupied.reshape(-1)
    seen = np.zeros(occ.shape, dtype=bool)
    o = np.broadcast_to(origins, dirs.shape)
    idx = np.floor((o - GMIN) / OCC3D_VOXEL).astype(np.int64)
    ok = ((idx >= 0) & (idx < SHAPE)).all(1)
    idx, d, o = idx[ok], dirs[ok], o[ok]
    strides = np.array([SHAPE[1] * SHAPE[2], SHAPE[2], 1])
    flat = (idx * strides).sum(1)
    t_exit = _exit_distance(o, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(d != 0, OCC3D_VOXEL / np.abs(d), np.inf)  # ray length across one voxel, per axis
        nxt = np.where(d != 0, ((idx + (d > 0)) * OCC3D_VOXEL + GMIN - o) / d, np.inf)  # next boundary, per axis
    step = np.where(d > 0, strides, -strides)
    (tx, ty, tz), (dx, dy, dz), (sx, sy, sz) = nxt.T.copy(), delta.T.copy(), step.T.copy()
    while len(flat):
        seen[flat] = True
        mx = (tx <= ty) & (tx <= tz)
        my = ~mx & (ty <= tz)
        mz = ~mx & ~my
        t_leave = np.where(mx, tx, np.where(my, ty, tz))
        go = ~occ[flat] & (t_leave < t_exit - 1e-6)
        flat = flat + np.where(mx, sx, np.where(my, sy, sz))
        tx, ty, tz = np.where(mx, tx + dx, tx), np.where(my, ty + dy, ty), np.where(mz, tz + dz, tz)
        flat, t_exit, tx, ty, tz, dx, dy, dz, sx, sy, sz = (
            a[go] for a in (flat, t_exit, tx, ty, tz, dx, dy, dz, sx, sy, sz))
    return seen.reshape(OCC3D_SHAPE)
