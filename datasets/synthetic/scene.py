"""Procedural layout of one synthetic scene in global coordinates: road, objects, sun and the ego trajectory.

Everything is static (no moving objects), so a world point looks the same in every frame apart from shading
by view-independent Lambertian light: the photometric assumption of self-supervised depth holds exactly.
Objects are unions of yaw-rotated boxes and ellipsoids ("primitives") that sit on the ground; each primitive
carries an Occ3D class id, an instance id, a material (see ``texture.py``) and a base colour.
"""
from dataclasses import dataclass

import numpy as np

from datasets.synthetic.road import Road

SAMPLE_DT = 0.5  # seconds between samples (keyframes, 2 Hz as in nuScenes): 2-4 m of motion at 4-8 m/s
CAMERA_HZ = 12  # camera frame rate with the default 5 sweeps between keyframes, as in nuScenes
EGO_LANE_D = -1.75  # the ego drives in the right-hand lane
BOX, ELLIPSOID = 0, 1
# materials
(M_ROAD, M_SIDEWALK, M_TERRAIN, M_GRAVEL, M_BRICK, M_PLASTER, M_CAR, M_GLASS, M_FOLIAGE, M_BARK, M_PERSON,
 M_BARRIER, M_CONE, M_METAL) = range(14)

# nuScenes category and attribute of each annotated object class
CATEGORIES = {1: "movable_object.barrier", 2: "vehicle.bicycle", 3: "vehicle.bus.rigid", 4: "vehicle.car",
              6: "vehicle.motorcycle", 7: "human.pedestrian.adult", 8: "movable_object.trafficcone",
              10: "vehicle.truck"}
ATTRIBUTES = {2: "cycle.without_rider", 3: "vehicle.parked", 4: "vehicle.parked", 6: "cycle.without_rider",
              7: "pedestrian.standing", 10: "vehicle.parked"}


@dataclass
class World:
    """One scene: road, primitives (arrays of length M), annotated instances, sun and ego poses."""
    road: Road
    kind: np.ndarray  # (M,) BOX or ELLIPSOID
    center: np.ndarray  # (M, 3) global
    half: np.ndarray  # (M, 3) half sizes (boxes) or radii (ellipsoids), in the primitive frame
    yaw: np.ndarray  # (M,)
    cls: np.ndarray  # (M,) Occ3D class
    inst: np.ndarray  # (M,) instance id
    material: np.ndarray  # (M,)
    color: np.ndarray  # (M, 3) base colour in [0, 1]
    instances: list  # dicts: id, cls, center, size (w, l, h), yaw
    sun: np.ndarray  # (3,) unit vector towards the sun
    ego2global: np.ndarray  # (F, 4, 4) at the samples (keyframes), SAMPLE_DT apart
    speed: float  # m/s along the right lane, from t = 0 at the first sample

    def ego_pose(self, t):
        """(len(t), 4, 4) ego -> global poses at times ``t`` (seconds after the first sample), float64."""
        return _ego_poses(self.road, self.speed * np.asarray(t, dtype=np.float64))

    @property
    def radius(self):
        """Bounding-sphere radius of every primitive."""
        return np.linalg.norm(self.half, axis=1)


class _Builder:
    """Collects primitives and instances while the layout is drawn."""

    def __init__(self, road):
        self.road, self.prims, self.instances = road, [], []
        self.kerbside = {-1: [], 1: []}  # claimed s-intervals of the parking strip on each side

    def claim(self, side, s0, s1):
        """Reserve [s0, s1] of the parking strip on ``side``; False if it overlaps an earlier claim."""
        if any(a < s1 and s0 < b for a, b in self.kerbside[side]):
            return False
        self.kerbside[side].append((s0, s1))
        return True

    def add(self, cls, parts, size, s, d, yaw_offset=0.0):
        """One object at road coordinates (s, d): ``parts`` = (kind, local centre, half, material, colour) with
        local centres in the object frame (x forward along the road, z up from the local ground)."""
        (x, y), phi = self.road.point(s, d), float(self.road.frame(s)[1])
        yaw = phi + yaw_offset
        z0 = float(self.road.ground(np.array([x]), np.array([y]))[1][0])
        c, sn = np.cos(yaw), np.sin(yaw)
        inst = len(self.instances)
        for kind, lc, half, mat, col in parts:
            g = np.array([x + c * lc[0] - sn * lc[1], y + sn * lc[0] + c * lc[1], z0 + lc[2]])
            self.prims.append((kind, g, np.asarray(half, float), yaw, cls, inst, mat, np.asarray(col, float)))
        self.instances.append(dict(id=inst, cls=cls, center=np.array([x, y, z0 + size[2] / 2]),
                                   size=np.asarray(size, float), yaw=yaw))


def _car(rng):
    l, w = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    col = rng.choice([[0.75, 0.1, 0.1], [0.1, 0.2, 0.6], [0.85, 0.85, 0.85], [0.15, 0.15, 0.15],
                      [0.5, 0.5, 0.55], [0.1, 0.45, 0.3], [0.9, 0.7, 0.2]]) * rng.uniform(0.85, 1.1)
    parts = [(BOX, (0, 0, 0.575), (l / 2, w / 2, 0.425), M_CAR, col),  # body 0.15-1.0 m: 0.15 m clearance
             (BOX, (-0.1 * l, 0, 1.25), (0.28 * l, 0.45 * w, 0.25), M_GLASS, col)]
    return 4, parts, (w, l, 1.5)


def _truck(rng):
    l, w = rng.uniform(6.5, 8.5), 2.4
    col = rng.choice([[0.9, 0.9, 0.88], [0.2, 0.3, 0.7], [0.7, 0.2, 0.15]])
    parts = [(BOX, (0.5 * l - 1.0, 0, 1.325), (1.0, w / 2, 1.175), M_GLASS, col),
             (BOX, (-1.0, 0, 1.775), (0.5 * l - 1.0, w / 2, 1.625), M_METAL, col * 0.9)]
    return 10, parts, (w, l, 3.4)


def _bus(rng):
    l, w = rng.uniform(10.5, 12.5), 2.55
    col = rng.choice([[0.85, 0.15, 0.1], [0.95, 0.75, 0.1], [0.2, 0.45, 0.8]])
    return 3, [(BOX, (0, 0, 1.775), (l / 2, w / 2, 1.625), M_METAL, col)], (w, l, 3.4)


def _person(rng):
    col = rng.uniform(0.1, 0.8, 3)
    parts = [(ELLIPSOID, (0, 0, 0.78), (0.2, 0.28, 0.78), M_PERSON, col),
             (ELLIPSOID, (0, 0, 1.62), (0.12, 0.12, 0.14), M_PERSON, (0.8, 0.6, 0.5))]
    return 7, parts, (0.6, 0.5, 1.76)


def _tree(rng):
    h, r = rng.uniform(2.0, 3.2), rng.uniform(1.3, 2.4)
    green = np.array([0.2, 0.45, 0.15]) * rng.uniform(0.7, 1.2)
    parts = [(BOX, (0, 0, h / 2), (0.16, 0.16, h / 2), M_BARK, (0.35, 0.25, 0.15)),
             (ELLIPSOID, (0, 0, h + 0.6 * r), (r, r, 0.9 * r), M_FOLIAGE, green)]
    return 16, parts, (2 * r, 2 * r, h + 1.5 * r)


def _hedge(rng):
    l = rng.uniform(3.0, 8.0)
    green = np.array([0.18, 0.38, 0.12]) * rng.uniform(0.8, 1.2)
    return 16, [(BOX, (0, 0, 0.5), (l / 2, 0.4, 0.5), M_FOLIAGE, green)], (0.8, l, 1.0)


def _buildings(b, rng, side, s_lo, s_hi, d_in):
    """A row of buildings on one side (side = +1 left, -1 right) starting at lateral offset d_in."""
    s = s_lo + rng.uniform(0, 6)
    while s < s_hi:
        l, depth, h = rng.uniform(8, 22), rng.uniform(8, 14), rng.uniform(4, 16)
        setback = rng.uniform(1.0, 6.0)
        mat = M_BRICK if rng.random() < 0.5 else M_PLASTER
        col = (np.array([0.62, 0.3, 0.22]) if mat == M_BRICK else rng.uniform(0.55, 0.9, 3)) * rng.uniform(0.8, 1.1)
        b.add(15, [(BOX, (0, 0, h / 2), (l / 2, depth / 2, h / 2), mat, col)], (depth, l, h),
              s + l / 2, side * (d_in + setback + depth / 2))
        s += l + rng.uniform(1.0, 7.0)


def _row(b, rng, make, side, d, s_lo, s_hi, gap, p, yaw=0.0, avoid=(), kerbside=False):
    """Objects from ``make`` every ~gap metres along s at lateral offset side * d, each with probability p
    (``kerbside``: in the parking strip, skipping places already taken)."""
    s = s_lo + rng.uniform(0, gap)
    while s < s_hi:
        cls, parts, size = make(rng)
        ok = rng.random() < p and not any(a0 < s < a1 for a0, a1 in avoid)
        if ok and (not kerbside or b.claim(side, s - size[1] / 2 - 0.5, s + size[1] / 2 + 0.5)):
            b.add(cls, parts, size, s, side * d, yaw + rng.normal(0, 0.03))
        s += max(gap, size[1] + 1.0) * rng.uniform(0.8, 1.3)


def _ego_poses(road, s):
    """(N, 4, 4) ego -> global poses in the right lane at arc lengths ``s`` (N,)."""
    ego = np.tile(np.eye(4), (len(s), 1, 1))
    ego[:, :2, 3] = road.point(s, np.full(len(s), EGO_LANE_D))
    phi = road.frame(s)[1]
    ego[:, 0, 0], ego[:, 0, 1], ego[:, 1, 0], ego[:, 1, 1] = np.cos(phi), -np.sin(phi), np.sin(phi), np.cos(phi)
    return ego


def make_scene(seed, scene_idx, num_frames, dt=SAMPLE_DT):
    """The deterministic world of scene ``scene_idx`` of a set with seed ``seed``: ``num_frames`` samples ``dt``
    seconds apart (sweeps in between come from ``World.ego_pose``)."""
    rng = np.random.default_rng([seed, scene_idx])
    speed = rng.uniform(4.0, 8.0)
    s_end = speed * dt * (num_frames - 1)
    kappa = 0.0 if rng.random() < 0.5 else rng.choice([-1, 1]) * rng.uniform(1 / 400, 1 / 150)
    half_width, sidewalk = rng.uniform(5.5, 7.0), rng.uniform(2.0, 4.0)
    s_lo, s_hi = -55.0, s_end + 55.0
    patches = []  # other_flat lots in the terrain strip: (s0, s1, d0, d1)
    for s0, side in zip(rng.uniform(s_lo, s_hi, 2), rng.choice([-1, 1], 2)):
        if rng.random() < 0.6:
            d0, d1 = sorted([side * (half_width + sidewalk), side * (half_width + sidewalk + 6)])
            patches.append((s0, s0 + rng.uniform(8, 20), d0, d1))
    road = Road((0.0, 0.0), rng.uniform(-np.pi, np.pi), kappa, half_width, sidewalk, patches)
    pts = road.point(np.linspace(s_lo - 60, s_hi + 60, 50), np.zeros(50))
    road.p0 = 80.0 - pts.min(0)  # global coordinates positive, so the map image starts at 0
    b = _Builder(road)
    edge = half_width + sidewalk
    _small_objects(b, rng, half_width, s_lo, s_hi)
    for side in (-1, 1):
        _buildings(b, rng, side, s_lo, s_hi, edge)
        _row(b, rng, _tree, side, edge - 0.7, s_lo, s_hi, 9.0, 0.75)
        _row(b, rng, _hedge, side, edge + 0.6, s_lo, s_hi, 12.0, 0.3)
        if rng.random() < 0.5:
            _row(b, rng, _truck if rng.random() < 0.5 else _bus, side, half_width - 1.35, s_lo, s_hi, 30, 0.5,
                 kerbside=True)
        _row(b, rng, _car, side, half_width - 1.2, s_lo, s_hi, 5.5, 0.55, kerbside=True)
        _row(b, rng, _person, side, half_width + rng.uniform(0.6, sidewalk - 1.2), s_lo, s_hi, 10.0, 0.35,
             yaw=side * np.pi / 2)
    # stopped traffic: oncoming lane, and the ego lane only well before / after the ego's path
    _row(b, rng, _car, 1, -EGO_LANE_D, s_lo, s_hi, 14.0, 0.4, yaw=np.pi)
    _row(b, rng, _car, -1, -EGO_LANE_D, s_lo, s_hi, 16.0, 0.5, avoid=[(-8.0, s_end + 9.0)])
    ego = _ego_poses(road, np.arange(num_frames) * speed * dt)
    az, el = rng.uniform(-np.pi, np.pi), rng.uniform(np.radians(30), np.radians(60))
    sun = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
    cols = list(zip(*b.prims))
    return World(road, np.array(cols[0]), np.array(cols[1]), np.array(cols[2]), np.array(cols[3]),
                 np.array(cols[4], np.uint8), np.array(cols[5]), np.array(cols[6]), np.array(cols[7]),
                 b.instances, sun, ego, speed)


def _small_objects(b, rng, half_width, s_lo, s_hi):
    """Barriers and traffic cones in short lines at the road edge, bicycles and motorcycles parked."""
    for _ in range(rng.integers(1, 3)):
        side, s0, n = rng.choice([-1, 1]), rng.uniform(s_lo, s_hi), rng.integers(2, 6)
        barrier = rng.random() < 0.5
        if not b.claim(side, s0 - 1.0, s0 + 2.0 * n):
            continue
        for k in range(n):
            if barrier:
                b.add(1, [(BOX, (0, 0, 0.45), (0.95, 0.2, 0.45), M_BARRIER, (0.95, 0.45, 0.1))], (0.4, 1.9, 0.9),
                      s0 + 2.0 * k, side * (half_width - 0.4))
            else:  # a tall ellipsoid half sunk into the ground reads as a cone
                b.add(8, [(ELLIPSOID, (0, 0, 0.0), (0.2, 0.2, 0.7), M_CONE, (1.0, 0.4, 0.05))], (0.4, 0.4, 0.7),
                      s0 + 1.5 * k, side * (half_width - 0.5))
    for _ in range(rng.integers(1, 4)):
        side, s0 = rng.choice([-1, 1]), rng.uniform(s_lo, s_hi)
        if rng.random() < 0.6:
            b.add(2, [(BOX, (0, 0, 0.5), (0.85, 0.2, 0.5), M_METAL, rng.uniform(0.1, 0.9, 3))], (0.4, 1.7, 1.0),
                  s0, side * (half_width + 0.6), yaw_offset=np.pi / 2)
        elif b.claim(side, s0 - 1.5, s0 + 1.5):
            b.add(6, [(BOX, (0, 0, 0.6), (1.0, 0.35, 0.6), M_METAL, rng.uniform(0.1, 0.6, 3))], (0.7, 2.0, 1.2),
                  s0, side * (half_width - 0.8))
