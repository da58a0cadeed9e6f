"""Occ3D voxel semantics computed exactly from the synthetic geometry.

Grid: (200, 200, 16) voxels of 0.4 m over ``OCC3D_LABEL_RANGE`` in the current ego frame, i.e. x, y in [-40, 40] m
and z in [-0.2, 6.2] m: layer 0 holds the road surface (ego z = 0), as in the released Occ3D-nuScenes labels
(docs/occ3d_convention.md). Rule, as Occ3D's (a voxel is occupied when it holds surface points): a voxel is
occupied if a surface passes through it or it lies inside an object, i.e. if it overlaps a primitive (exact
box / ellipsoid vs voxel test) or holds the ground surface (road z = 0, sidewalk / terrain / other_flat z = 0.15,
and the kerb face between). Every LiDAR or camera hit therefore lands in an occupied voxel, thin slivers included.
Class: objects before the ground (a car's bottom and the road in one voxel: car, as in the real labels); among
objects the class with the most of the voxel's 3 x 3 x 3 sub-points inside it, then (a sliver that holds no
sub-point) the lowest class id that overlaps; the ground's class is the majority of its 3 x 3 sub-columns.
"""
import numpy as np

from utils.constants import FREE_ID, NUM_SEM_CLASSES, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL
from datasets.synthetic.scene import BOX

SUB = 3
GMIN, GMAX = np.array(OCC3D_LABEL_RANGE[:3]), np.array(OCC3D_LABEL_RANGE[3:])
SHAPE = np.array(OCC3D_SHAPE)
HALF = OCC3D_VOXEL / 2
EPS = 1e-6  # metres: a surface that lies on a voxel face (e.g. a car roof at z = 1.0 m) occupies both voxels
SUB_WEIGHT = 64  # counts: 64 per sub-point inside an object, 1 per overlapping primitive without a sub-point


def _axis(n, lo, sub=SUB):
    """Sub-point coordinates along one axis: (n * sub,) voxel by voxel."""
    return lo + (np.arange(n * sub) + 0.5) * OCC3D_VOXEL / sub


def _ground(world, ego2global):
    """(200, 200, 16) uint8 ground class of the voxels that hold the ground surface (255: none)."""
    X, Y, Z = OCC3D_SHAPE
    x, y = np.meshgrid(_axis(X, GMIN[0]), _axis(Y, GMIN[1]), indexing="ij")
    gx = ego2global[0, 0] * x + ego2global[0, 1] * y + ego2global[0, 3]
    gy = ego2global[1, 0] * x + ego2global[1, 1] * y + ego2global[1, 3]
    cls, h = world.road.ground(gx, gy)
    by_column = lambda a: a.reshape(X, SUB, Y, SUB).transpose(0, 2, 1, 3).reshape(X, Y, SUB * SUB)  # noqa: E731
    z = by_column(h - ego2global[2, 3] - GMIN[2])
    cls = by_column(cls)
    votes = np.stack([(cls == c).sum(-1) for c in range(NUM_SEM_CLASSES)], -1)
    column_cls = votes.argmax(-1).astype(np.uint8)  # ties: lowest id
    # a kerb face spans the layers between its foot and its top
    lo = np.floor((z.min(-1) - EPS) / OCC3D_VOXEL).astype(np.int64)
    hi = np.floor((z.max(-1) + EPS) / OCC3D_VOXEL).astype(np.int64)
    k = np.arange(Z)
    out = np.where((k >= lo[..., None]) & (k <= hi[..., None]), column_cls[..., None], 255)
    return out.astype(np.uint8)


def _overlap(kind, local, half, cos, sin):
    """Whether voxels overlap a primitive, exactly. ``local`` (N, 3): voxel centres in the primitive frame;
    ``cos``, ``sin``: of the yaw that turns ego vectors into it (local = R(yaw) ego); ``half``: box half sizes or
    ellipsoid radii (3,)."""
    # the voxel's footprint in the primitive frame: a square of half size HALF, its edges along ego x and y
    ex, ey = HALF * np.array([cos, sin]), HALF * np.array([-sin, cos])
    if kind == BOX:  # separating axes: the box's x and y, the voxel's x and y (z is shared)
        r = HALF * (abs(cos) + abs(sin)) + EPS
        ok = (np.abs(local[:, 0]) <= half[0] + r) & (np.abs(local[:, 1]) <= half[1] + r)
        cx, cy = local[:, 0] * cos + local[:, 1] * sin, -local[:, 0] * sin + local[:, 1] * cos  # in ego axes
        ok &= np.abs(cx) <= HALF + half[0] * abs(cos) + half[1] * abs(sin) + EPS
        ok &= np.abs(cy) <= HALF + half[0] * abs(sin) + half[1] * abs(cos) + EPS
        return ok & (np.abs(local[:, 2]) <= half[2] + HALF + EPS)
    # ellipsoid: scaled to the unit ball the footprint is a parallelogram; squared distance of the origin to it
    q, u, v = local[:, :2] / half[:2], ex / half[:2], ey / half[:2]
    det = u[0] * v[1] - u[1] * v[0]
    a = (-q[:, 0] * v[1] + q[:, 1] * v[0]) / det  # origin = q + a u + b v
    b = (q[:, 0] * u[1] - q[:, 1] * u[0]) / det
    d2 = np.where((np.abs(a) <= 1) & (np.abs(b) <= 1), 0.0, np.inf)
    for p0, e in ((q - u - v, 2 * u), (q - u - v, 2 * v), (q + u + v, -2 * u), (q + u + v, -2 * v)):
        t = np.clip(-(p0 @ e) / (e @ e), 0, 1)
        d2 = np.minimum(d2, ((p0 + t[:, None] * e) ** 2).sum(1))
    dz = np.maximum(np.abs(local[:, 2]) - HALF, 0) / half[2]
    return d2 + dz ** 2 <= 1.0 + 2 * EPS / half.min()


def _prim_counts(world, i, g2e, counts):
    """Add primitive ``i`` to ``counts`` (X, Y, Z, C): SUB_WEIGHT per sub-point inside it, and 1 for each voxel it
    overlaps without holding a sub-point."""
    c, s = np.cos(world.yaw[i]), np.sin(world.yaw[i])
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # primitive -> global
    half = world.half[i]
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T * half
    ego = (corners @ rot.T + world.center[i]) @ g2e[:3, :3].T + g2e[:3, 3]
    lo = np.clip(np.floor((ego.min(0) - GMIN - EPS) / OCC3D_VOXEL).astype(int), 0, SHAPE)
    hi = np.clip(np.floor((ego.max(0) - GMIN + EPS) / OCC3D_VOXEL).astype(int) + 1, 0, SHAPE)
    n = hi - lo
    if (n <= 0).any():
        return
    e2l = rot.T @ np.linalg.inv(g2e[:3, :3])  # ego -> primitive frame (rotation part, a yaw)
    centre = world.center[i] @ g2e[:3, :3].T + g2e[:3, 3]
    axes = [_axis(n[k], GMIN[k] + lo[k] * OCC3D_VOXEL) for k in range(3)]
    local = (np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3) - centre) @ e2l.T
    if world.kind[i] == BOX:
        inside = (np.abs(local) <= half).all(1)
    else:
        inside = ((local / half) ** 2).sum(1) <= 1.0
    inside = inside.reshape(n[0], SUB, n[1], SUB, n[2], SUB).sum((1, 3, 5), dtype=np.uint16)
    centres = [GMIN[k] + (lo[k] + np.arange(n[k]) + 0.5) * OCC3D_VOXEL for k in range(3)]
    vc = (np.stack(np.meshgrid(*centres, indexing="ij"), -1).reshape(-1, 3) - centre) @ e2l.T
    touch = _overlap(world.kind[i], vc, half, e2l[0, 0], e2l[1, 0]).reshape(n)
    add = np.where(inside > 0, inside * SUB_WEIGHT, touch).astype(np.uint16)
    counts[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2], world.cls[i]] += add


def semantics(world, ego2global):
    """(200, 200, 16) uint8 Occ3D class ids (17 = free) of the world around the ego pose ``ego2global``."""
    counts = np.zeros(tuple(OCC3D_SHAPE) + (NUM_SEM_CLASSES,), dtype=np.uint16)
    g2e = np.linalg.inv(ego2global)
    centre = world.center @ g2e[:3, :3].T + g2e[:3, 3]
    near = (np.abs(centre[:, :2]) < 40 + world.radius[:, None]).all(1)
    near &= (centre[:, 2] + world.radius > GMIN[2]) & (centre[:, 2] - world.radius < GMAX[2])
    for i in np.nonzero(near)[0]:
        _prim_counts(world, i, g2e, counts)
    labels = counts.argmax(-1).astype(np.uint8)  # ties: lowest id
    objects = counts.max(-1) > 0
    ground = _ground(world, ego2global)
    labels[~objects] = np.where(ground[~objects] != 255, ground[~objects], FREE_ID)
    return labels
