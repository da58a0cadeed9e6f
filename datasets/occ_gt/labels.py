"""Occ3D labels of a scene's keyframes from its aggregated LiDAR and boxes (method: docs/occ_gt.md).

``keyframe_labels``: in the keyframe's ego frame (its LIDAR_TOP ego pose), the static points of
``datasets.occ_gt.aggregate`` and every instance annotated at the keyframe (its points re-placed with the
keyframe's box) are voxelised on the Occ3D label grid (``OCC3D_LABEL_RANGE``: layer 0 holds the road surface). A
voxel with a point is occupied: the box's class where box points fall (objects before the ground), else
driveable_surface where most points are ground points and manmade elsewhere (no LiDAR segmentation: a ground /
non-ground split, ``ground_points``); the ground between LiDAR rings is filled (``fill_ground``). ``mask_lidar``:
the voxels the rays from each frame's LiDAR origin to its points cross or end in (``datasets.synthetic.
visibility``'s traversal); ``mask_camera``: what the keyframe's cameras see of it (``visibility.camera_mask``), as
the synthetic labels.
"""
import numpy as np
from scipy import ndimage

from datasets.synthetic import visibility
from datasets.synthetic.frame import MASK_HW
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL
from utils.geometry import scale_intrinsics

GMIN, GMAX = np.array(OCC3D_LABEL_RANGE[:3]), np.array(OCC3D_LABEL_RANGE[3:])
SHAPE = np.array(OCC3D_SHAPE)
DRIVEABLE, MANMADE = 11, 15
# ground_points: band over the floor, largest step between neighbouring columns, reach of a column without points
# and radius of the seed around the ego (metres)
GROUND_ABOVE, GROUND_STEP, GROUND_BRIDGE, GROUND_SEED = 0.3, 0.3, 6.0, 6.0
FACE_EPS = 1e-4  # metres
MOVED = 0.1  # metres: a box whose sensor-relative position moved more than this counts as a moving object


def voxel_flat(p):
    """(flat voxel index (N,), inside-grid mask (N,), point index (N,)) of ego-frame points ``p`` on the label
    grid. A point within FACE_EPS of a voxel face is listed once for each voxel on either side, as the synthetic
    labels count a surface that lies on a face for both voxels (never happens on real data)."""
    x = (p - GMIN) / OCC3D_VOXEL
    idx = np.floor(x).astype(np.int64)
    on_face = np.abs(x - np.round(x)) < FACE_EPS / OCC3D_VOXEL
    rows, idxs = [np.arange(len(p))], [idx]
    for a in range(3):  # one more copy per face a point lies on (a corner point: up to 8 voxels)
        k = np.nonzero(on_face[:, a])[0]
        for r, i in list(zip(rows, idxs)):
            sel = np.isin(r, k)
            if sel.any():
                other = i[sel].copy()
                other[:, a] = np.round(x[r[sel], a]).astype(np.int64) * 2 - 1 - other[:, a]
                rows.append(r[sel])
                idxs.append(other)
    idx, rows = np.concatenate(idxs), np.concatenate(rows)
    ok = ((idx >= 0) & (idx < SHAPE)).all(1)
    return np.ravel_multi_index(tuple(np.where(ok[:, None], idx, 0).T), OCC3D_SHAPE), ok, rows


def ground_points(p, above=GROUND_ABOVE, step=GROUND_STEP, bridge=GROUND_BRIDGE):
    """(N,) bool: which ego-frame static points ``p`` (N, 3) lie on the ground.

    The floor of each 0.4 m column is its lowest point. Ground columns are those connected to the floor around the
    ego (within
    ``GROUND_SEED`` m, at ego z within 0.5 m of 0) by steps of at most ``step`` m between neighbouring columns, so
    kerbs and ramps stay ground while canopies, roofs and the tops of walls do not; a column without points within
    ``bridge`` m of one takes its floor to carry the connection. Ground points: at most ``above`` m over the floor
    of a ground column."""
    X, Y = OCC3D_SHAPE[:2]
    ij = np.clip(np.floor((p[:, :2] - GMIN[:2]) / OCC3D_VOXEL).astype(np.int64), 0, [X - 1, Y - 1])
    flat = ij[:, 0] * Y + ij[:, 1]
    floor = np.full(X * Y, np.inf)
    np.minimum.at(floor, flat, p[:, 2])
    floor = np.where(np.isfinite(floor), floor, np.nan).reshape(X, Y)
    valid = np.isfinite(floor)
    if not valid.any():
        return np.zeros(len(p), bool)
    dist, near = ndimage.distance_transform_edt(~valid, return_indices=True)
    carry = np.where(dist * OCC3D_VOXEL <= bridge, floor[near[0], near[1]], np.nan)
    ok = np.isfinite(carry)
    cx, cy = np.meshgrid(*[GMIN[a] + (np.arange(n) + 0.5) * OCC3D_VOXEL for a, n in enumerate((X, Y))],
                         indexing="ij")
    reached = ok & (np.hypot(cx, cy) < GROUND_SEED) & (np.abs(carry) < 0.5)
    if not reached.any():
        reached = ok & (np.abs(carry) < 0.5)
    z = np.pad(carry, 1, constant_values=np.nan)
    while True:
        r = np.pad(reached, 1)
        grown = reached.copy()
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nb = (slice(1 + dx, X + 1 + dx), slice(1 + dy, Y + 1 + dy))
            grown |= r[nb] & (np.abs(carry - z[nb]) <= step)
        if (grown == reached).all():
            break
        reached = grown
    ground = (reached & valid).reshape(-1)
    return ground[flat] & (p[:, 2] <= floor.reshape(-1)[flat] + above)


def _object_rays(p, moved, sensor_here, size):
    """Ray origins of an object's points ``p`` (ego frame): the LiDAR position of their frame moved with the box
    (``moved``); for a box that moved (> MOVED), only the last stretch of the ray, half the box diagonal + 1 m,
    is trusted (free space seen around the object, not in the static world it passed)."""
    still = np.linalg.norm(moved - sensor_here, axis=1) <= MOVED
    d = p - moved
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    reach = np.linalg.norm(size) / 2 + 1.0
    return np.where(still[:, None], moved, p - d / np.maximum(dist, 1e-9) * np.minimum(dist, reach)), still


def _footprint(M, size, out):
    """Mark in ``out`` (X, Y) bool the grid columns whose centre lies within half a voxel of the footprint of a
    box of ``size`` (w, l, h) with box -> ego transform ``M``."""
    half = np.asarray(size)[[1, 0]] / 2 + OCC3D_VOXEL / 2
    corners = np.array([[sx * half[0], sy * half[1], 0.0] for sx in (-1, 1) for sy in (-1, 1)]) @ M[:3, :3].T
    lo = np.floor((corners[:, :2].min(0) + M[:2, 3] - GMIN[:2]) / OCC3D_VOXEL).astype(int)
    hi = np.floor((corners[:, :2].max(0) + M[:2, 3] - GMIN[:2]) / OCC3D_VOXEL).astype(int) + 1
    lo, hi = np.clip(lo, 0, SHAPE[:2]), np.clip(hi, 0, SHAPE[:2])
    if (hi <= lo).any():
        return
    cx, cy = np.meshgrid(*[GMIN[a] + (np.arange(lo[a], hi[a]) + 0.5) * OCC3D_VOXEL for a in (0, 1)], indexing="ij")
    c = np.stack([cx - M[0, 3], cy - M[1, 3]], -1)
    local = c @ M[:2, :2]  # ego offset -> box frame (the box's yaw; its tilt is ignored)
    out[lo[0]:hi[0], lo[1]:hi[1]] |= (np.abs(local) <= half).all(-1)


def fill_ground(sem, ground_layer, blocked, radius):
    """Densify the ground in place: every column without an occupied voxel at or below the ground layer of the
    nearest column with ground points, within ``radius`` metres of it and not ``blocked`` (X, Y) (a box
    footprint), gets driveable_surface at that layer. ``ground_layer`` (X, Y): lowest ground layer of each column,
    -1 where it has no ground voxel. Returns the number of voxels filled."""
    has = ground_layer >= 0
    if radius <= 0 or not has.any():
        return 0
    dist, near = ndimage.distance_transform_edt(~has, return_indices=True)
    layer = ground_layer[near[0], near[1]]
    below = np.cumsum(sem != FREE_ID, axis=2) > 0  # (X, Y, Z): an occupied voxel at or below each layer
    free_below = ~np.take_along_axis(below, layer[..., None], 2)[..., 0]
    fill = ~has & ~blocked & (dist * OCC3D_VOXEL <= radius) & free_below
    xs, ys = np.nonzero(fill)
    sem[xs, ys, layer[xs, ys]] = DRIVEABLE
    return len(xs)


def static_voxels(static, min_points=1):
    """Voxelise ego-frame static points (N, 3): (semantics (X * Y * Z,) uint8 with driveable_surface where most of
    a voxel's points are ground points and manmade elsewhere, points per voxel (X * Y * Z,), indices of the points
    inside the grid)."""
    n_vox = int(np.prod(SHAPE))
    flat, ok, rows = voxel_flat(static)
    flat, rows = flat[ok], rows[ok]
    in_grid = np.unique(rows)
    ground = np.zeros(len(static), bool)
    ground[in_grid] = ground_points(static[in_grid])
    total = np.bincount(flat, minlength=n_vox)
    on_ground = np.bincount(flat, weights=ground[rows], minlength=n_vox)
    sem = np.full(n_vox, FREE_ID, np.uint8)
    sem[total >= min_points] = MANMADE
    sem[(total >= min_points) & (2 * on_ground >= total)] = DRIVEABLE
    return sem, total, in_grid


def place_objects(agg, frame, w2e, sensors, over_grid):
    """The instances annotated at ``frame``, their points re-placed with its boxes (ego frame ``w2e``). Returns
    (votes: flat voxel * 32 + class per point, footprint (X, Y) bool of the boxes, rays [(origins, points)], points
    inside the grid)."""
    votes, footprint, rays, n_in = [], np.zeros(OCC3D_SHAPE[:2], bool), [], 0
    for inst, (B, size) in agg.boxes[frame].items():
        ob = agg.objects[inst]
        M = w2e @ B
        _footprint(M, size, footprint)
        if not len(ob["points"]):
            continue
        p = ob["points"].astype(np.float64) @ M[:3, :3].T + M[:3, 3]
        f, ok, rows = voxel_flat(p)
        n_in += len(np.unique(rows[ok]))
        votes.append(f[ok] * 32 + ob["cls"])
        moved = ob["sensor"][ob["frame"]] @ M[:3, :3].T + M[:3, 3]
        o, still = _object_rays(p, moved, sensors[ob["frame"]], size)
        use = ~still | over_grid[ob["frame"]]
        rays.append((o[use], p[use]))
    return votes, footprint, rays, n_in


def _vote(sem, total, votes, min_points):
    """Write the class with most points (ties: lowest id) into the voxels of ``votes`` in place; add the counts."""
    keys, counts = np.unique(np.concatenate(votes), return_counts=True)
    vox, cls = keys // 32, keys % 32
    order = np.lexsort((cls, -counts, vox))
    first = np.unique(vox[order], return_index=True)[1]
    best_vox, best_cls, n = vox[order][first], cls[order][first], np.zeros(len(sem), np.int64)
    np.add.at(n, vox, counts)
    keep = n[best_vox] >= min_points
    sem[best_vox[keep]] = best_cls[keep]
    total += n


def keyframe_labels(agg, scene, ki, min_points=1, ground_fill=0.0, one_ray_per_voxel=False):
    """Occ3D ``semantics``, ``mask_lidar``, ``mask_camera`` (200, 200, 16) uint8 of keyframe ``ki`` and a dict of
    statistics (points per occupied voxel, observed shares). ``ground_fill``: radius (m) of ``fill_ground``;
    ``one_ray_per_voxel``: cast one ray (of the static points) per frame and voxel of the point, ~3x fewer rays
    (the rays to one voxel differ by less than a voxel; measured effect: docs/occ_gt.md)."""
    kf = scene.keyframes[ki]
    w2e = np.linalg.inv(agg.ego2world[kf.frame])
    to_ego = lambda q: q @ w2e[:3, :3].T + w2e[:3, 3]  # noqa: E731
    sensors = to_ego(agg.sensors)
    over_grid = (np.abs(sensors[:, :2]) < GMAX[:2]).all(1) & (sensors[:, 2] > GMIN[2]) & (sensors[:, 2] < GMAX[2])
    static = to_ego(agg.static.astype(np.float64))
    sem, total, in_grid = static_voxels(static, min_points)
    is_ground = (sem == DRIVEABLE).reshape(OCC3D_SHAPE)
    ground_layer = np.where(is_ground.any(2), is_ground.argmax(2), -1)
    use = over_grid[agg.static_frame]
    if one_ray_per_voxel:  # one ray per (frame, voxel of the point), voxels also counted beyond the grid
        vox = np.clip(np.floor((static[use] - GMIN) / OCC3D_VOXEL).astype(np.int64) + 4096, 0, 8191)
        key = ((agg.static_frame[use].astype(np.int64) * 8192 + vox[:, 0]) * 8192 + vox[:, 1]) * 8192 + vox[:, 2]
        use = np.nonzero(use)[0][np.unique(key, return_index=True)[1]]
    votes, footprint, rays, n_obj = place_objects(agg, kf.frame, w2e, sensors, over_grid)
    if votes:
        _vote(sem, total, votes, min_points)
    sem = sem.reshape(OCC3D_SHAPE)
    filled = fill_ground(sem, ground_layer, footprint, ground_fill)
    o, p = (np.concatenate([r[i] for r in rays] + [x]) for i, x in enumerate(
        (sensors[agg.static_frame[use]], static[use])))
    v = p - o
    dist = np.linalg.norm(v, axis=1)
    keep = dist > 1e-6
    mask_lidar = visibility.observed(None, o[keep], v[keep] / dist[keep, None], t_max=dist[keep])
    cams = []
    for K, c2w, h, w in kf.cameras:
        c2w = c2w.copy()
        c2w[:3, 3] -= agg.origin
        c2w[2, 3] += agg.dz[kf.frame]
        cams.append((scale_intrinsics(K, MASK_HW[1] / w, MASK_HW[0] / h), w2e @ c2w, *MASK_HW))
    occupied = sem != FREE_ID
    mask_camera = visibility.camera_mask(occupied, cams) & mask_lidar
    counts = total.reshape(OCC3D_SHAPE)[occupied & (total.reshape(OCC3D_SHAPE) > 0)]
    stats = dict(points_in_grid=len(in_grid) + n_obj, occupied=int(occupied.sum()), ground_filled=filled,
                 points_per_occupied=float(counts.mean()) if len(counts) else 0.0,
                 median_points_per_occupied=float(np.median(counts)) if len(counts) else 0.0,
                 mask_lidar_share=float(mask_lidar.mean()), mask_camera_share=float(mask_camera.mean()),
                 rays=int(keep.sum()), sweeps_over_grid=int(over_grid.sum()))
    return dict(semantics=sem, mask_lidar=mask_lidar.astype(np.uint8),
                mask_camera=mask_camera.astype(np.uint8)), stats
