"""Vectorised CPU ray casting against a synthetic world: the ground height field and the primitives.

``cast`` returns, for every ray, the distance ``t`` to the first surface (inf for none), its Occ3D class (255
for none), instance and primitive index (-1 for the ground or none), material, unit normal, and the local
coordinates (primitive frame for objects, road coordinates (s, d, z) for the ground) textures are drawn in.
"""
import numpy as np

from datasets.synthetic.road import DRIVEABLE, KERB_HEIGHT, OTHER_FLAT, SIDEWALK, TERRAIN
from datasets.synthetic.scene import BOX, M_GRAVEL, M_ROAD, M_SIDEWALK, M_TERRAIN

GROUND_MATERIAL = {DRIVEABLE: M_ROAD, OTHER_FLAT: M_GRAVEL, SIDEWALK: M_SIDEWALK, TERRAIN: M_TERRAIN}
EPS = 1e-4


def cull(world, origin, max_dist, forward=None, half_fov=None):
    """Indices of primitives within ``max_dist`` of ``origin`` and, if given, inside a view cone."""
    v = world.center - origin
    dist = np.linalg.norm(v, axis=1)
    r = world.radius
    keep = dist - r < max_dist
    if forward is not None:
        ang = np.arccos(np.clip(v @ forward / np.maximum(dist, 1e-6), -1, 1))
        keep &= (dist <= r) | (ang < half_fov + np.arcsin(np.clip(r / np.maximum(dist, 1e-6), 0, 1)))
    return np.nonzero(keep)[0]


def _ground(road, o, d, tmax):
    """Hits on the ground: the raised plane (sidewalk / terrain), the road plane, or the kerb face between."""
    n = len(d)
    out_t, normal = np.full(n, np.inf), np.tile([0.0, 0.0, 1.0], (n, 1))
    down = d[:, 2] < -1e-6
    dz = np.where(down, d[:, 2], -1.0)
    t_top, t_bot = (KERB_HEIGHT - o[:, 2]) / dz, -o[:, 2] / dz
    raised = lambda t: road.ground(o[:, 0] + t * d[:, 0], o[:, 1] + t * d[:, 1])[1] > 0  # noqa: E731
    top, bot = raised(t_top), raised(t_bot)
    hit_top, hit_bot = down & top, down & ~top & ~bot
    out_t[hit_top], out_t[hit_bot] = t_top[hit_top], t_bot[hit_bot]
    kerb = down & ~top & bot
    if kerb.any():  # bisection for the crossing of the kerb line between the two planes
        lo, hi, ok, dk = t_top[kerb], t_bot[kerb], o[kerb], d[kerb]
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            r = road.ground(ok[:, 0] + mid * dk[:, 0], ok[:, 1] + mid * dk[:, 1])[1] > 0
            hi, lo = np.where(r, mid, hi), np.where(r, lo, mid)
        out_t[kerb] = hi
        p = ok + hi[:, None] * dk
        s, lat = road.to_sd(p[:, 0], p[:, 1])
        phi = road.frame(s)[1]
        side = -np.sign(lat)[:, None]
        normal[kerb] = side * np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], -1)
    out_t[out_t > tmax] = np.inf
    p = o + np.where(np.isfinite(out_t), out_t, 0.0)[:, None] * d
    cls, _ = road.ground(p[:, 0], p[:, 1])
    if kerb.any():
        cls[kerb & np.isfinite(out_t)] = SIDEWALK
    s, lat = road.to_sd(p[:, 0], p[:, 1])
    return out_t, cls, normal, np.stack([s, lat, p[:, 2]], -1)


def _prim_hit(kind, center, half, yaw, o, d):
    """Entry distance (inf if missed), local hit point and global normal of rays against one primitive."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # global -> primitive frame
    lo, ld = (o - center) @ rot.T, d @ rot.T
    if kind == BOX:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(ld) < 1e-12, 1e-12, ld)
            t1, t2 = (-half - lo) * inv, (half - lo) * inv
        tn, tf = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = tn.argmax(1)
        t_in, t_out = tn.max(1), tf.min(1)
        t = np.where((t_in <= t_out) & (t_in > EPS), t_in, np.inf)
        nl = np.zeros_like(ld)
        nl[np.arange(len(ld)), axis] = -np.sign(ld[np.arange(len(ld)), axis])
    else:
        so, sd = lo / half, ld / half
        a, b, cc = (sd * sd).sum(1), (so * sd).sum(1), (so * so).sum(1) - 1.0
        disc = b * b - a * cc
        t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
        t = np.where(t > EPS, t, np.inf)
        nl = (lo + np.where(np.isfinite(t), t, 0)[:, None] * ld) / half ** 2
        nl /= np.linalg.norm(nl, axis=1, keepdims=True) + 1e-12
    local = lo + np.where(np.isfinite(t), t, 0)[:, None] * ld
    return t, local, nl @ rot


def cast(world, o, d, tmax, prims=None):
    """First hits of rays ``o + t d`` (one origin o (3,), unit d (N, 3)) with t <= tmax; ``prims`` limits the
    primitives tested (e.g. ``cull``'s output). ``any_hits`` maps each instance hit by some ray to the number of
    rays that cross it at all (visible or hidden), for visibility ratios."""
    o = np.asarray(o, dtype=np.float64)
    t, cls, normal, local = _ground(world.road, np.broadcast_to(o, d.shape), d, tmax)
    material = np.array([GROUND_MATERIAL.get(int(c), M_TERRAIN) for c in range(256)])[cls]
    inst, prim = np.full(len(d), -1), np.full(len(d), -1)
    prims = range(len(world.kind)) if prims is None else prims
    crossed = {}
    for i in prims:
        w, r = world.center[i] - o, world.radius[i]
        proj = d @ w
        near = np.nonzero((proj > -r) & (w @ w - proj ** 2 <= r * r))[0]  # rays through the bounding sphere
        if not len(near):
            continue
        ti, li, ni = _prim_hit(world.kind[i], world.center[i], world.half[i], world.yaw[i], o[None], d[near])
        k = world.inst[i]
        if k not in crossed:
            crossed[k] = np.zeros(len(d), dtype=bool)
        crossed[k][near[ti <= tmax]] = True
        closer = ti < t[near]
        sel = near[closer]
        t[sel], normal[sel], local[sel] = ti[closer], ni[closer], li[closer]
        cls[sel], inst[sel], material[sel], prim[sel] = world.cls[i], k, world.material[i], i
    miss = ~np.isfinite(t)
    cls[miss], material[miss] = 255, -1
    return dict(t=t, cls=cls, inst=inst, prim=prim, material=material, normal=normal, local=local,
                point=o + np.where(miss, 0, t)[:, None] * d,
                any_hits={k: int(v.sum()) for k, v in crossed.items() if v.any()})
