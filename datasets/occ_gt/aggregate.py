"""A scene's LiDAR in one frame: static points in the world, box points in their box, per instance.

Every LiDAR frame's points, less those of the ego car (``EGO_BOX``), go to the world frame through the ego poses;
points inside an annotated box of their frame (enlarged by ``BOX_MARGIN``, not below its bottom) go to that box's
frame instead. nuScenes ego poses carry no height (translation z = 0 on every frame), so on a slope the frames'
ground surfaces land metres apart ("ground stratification", a known issue of Occ3D); ``vertical_offsets`` puts
each frame at the height where its ground meets the ground of the frames before it (docs/occ_gt.md).
"""
from dataclasses import dataclass

import numpy as np

from datasets.nuscenes_dataset import read_lidar

# ego-frame points of the ego car itself (nuScenes' Renault Zoe: 4.1 x 1.7 x 1.6 m, rear axle at x = 0, the roof
# rack and the LiDAR up to 1.9 m), dropped
EGO_BOX = np.array([[-1.0, -1.1, -0.5], [3.6, 1.1, 2.2]])
BOX_MARGIN = 0.1  # metres added to a box's length, width and top when collecting its points
BOX_LOW, LOW_MARGIN = 0.2, 0.02  # metres: the bottom band of a box gets a smaller margin (ground beside the box)
ALIGN_CELL, ALIGN_RANGE, ALIGN_PREV, ALIGN_MIN_CELLS = 2.0, 30.0, 3, 10  # see vertical_offsets


@dataclass
class Aggregate:
    """A scene's points: ``static`` (N, 3) world - ``origin`` float32 with their frame index ``static_frame``;
    ``objects`` {instance: dict(cls, points (M, 3) float32 in the box frame, frame (M,), sensor (F, 3) the LiDAR
    position of each frame in the box frame of that frame, NaN where unannotated)}; ``sensors`` (F, 3) LiDAR
    positions (world - origin, NaN for frames not read); ``boxes`` [frame] {instance: (box2world (4, 4), size)};
    ``ego2world`` (F, 4, 4) ego poses (world - origin), heights included; ``dz`` (F,) the heights added."""
    origin: np.ndarray
    sensors: np.ndarray
    static: np.ndarray
    static_frame: np.ndarray
    objects: dict
    boxes: list
    ego2world: np.ndarray
    dz: np.ndarray
    ego_points: int  # points dropped as the ego car's


def _local(T, p):
    """Points ``p`` (N, 3) in the frame of the 4x4 frame->world transform ``T``."""
    return (p - T[:3, 3]) @ T[:3, :3]


def in_box(local, size, margin=BOX_MARGIN):
    """(N,) bool: box-frame points inside a box of ``size`` (w, l, h) enlarged by ``margin`` on its sides and top;
    not below its bottom, and in its lowest ``BOX_LOW`` m enlarged by ``LOW_MARGIN`` only, so the ground around
    and under it stays static."""
    half = np.asarray(size)[[1, 0, 2]] / 2
    low = local[:, 2] < -half[2] + BOX_LOW
    side = np.where(low, min(margin, LOW_MARGIN), margin)[:, None]
    return ((np.abs(local[:, :2]) <= half[:2] + side).all(1) & (local[:, 2] >= -half[2])
            & (local[:, 2] <= half[2] + margin))


def _cell_minima(p, sensor, cell=ALIGN_CELL, reach=ALIGN_RANGE):
    """{(i, j): lowest z} of world points ``p`` in ``cell`` m columns within ``reach`` m of ``sensor`` (x, y)."""
    p = p[np.hypot(*(p[:, :2] - sensor[:2]).T) < reach]
    if not len(p):
        return {}
    key = np.floor(p[:, :2] / cell).astype(np.int64)
    order = np.lexsort((p[:, 2], key[:, 1], key[:, 0]))
    key, z = key[order], p[order, 2]
    first = np.ones(len(key), bool)
    first[1:] = (key[1:] != key[:-1]).any(1)
    return dict(zip(map(tuple, key[first]), z[first]))


def vertical_offsets(lows, prev=ALIGN_PREV, min_cells=ALIGN_MIN_CELLS):
    """(F,) heights to add to the frames: frame j gets the median, over the columns it shares with the (up to
    ``prev``) frames before it, of their lowest point (already offset) minus its own; fewer than ``min_cells``
    shared columns: the offset of the frame before. ``lows``: per frame the ``_cell_minima`` (None: not read)."""
    dz = np.zeros(len(lows))
    done = []
    for j, low in enumerate(lows):
        if low is None:
            continue
        diffs = [lows[i][c] + dz[i] - z for i in done[-prev:] for c, z in low.items() if c in lows[i]]
        dz[j] = np.median(diffs) if len(diffs) >= min_cells else (dz[done[-1]] if done else 0.0)
        done.append(j)
    return dz


def aggregate(scene, frames=None, margin=BOX_MARGIN, ego_box=EGO_BOX, align=True, progress=None):
    """The ``Aggregate`` of a ``datasets.occ_gt.scene.Scene``: the LiDAR of every frame, or of the frame indices
    ``frames`` (each file is read once); ``align``: correct the frames' heights (``vertical_offsets``)."""
    origin = scene.frames[0].ego2global[:3, 3].copy()
    n = len(scene.frames)
    use = range(n) if frames is None else sorted(set(frames))
    ego2world = np.stack([f.ego2global for f in scene.frames])
    ego2world[:, :3, 3] -= origin
    points, lows, ego_points = [None] * n, [None] * n, 0
    for j in progress(use) if progress else use:
        fr = scene.frames[j]
        p = read_lidar(fr.path).astype(np.float64) @ fr.lidar2ego[:3, :3].T + fr.lidar2ego[:3, 3]
        ego = ((p >= ego_box[0]) & (p <= ego_box[1])).all(1)
        ego_points += int(ego.sum())
        points[j] = p[~ego]
        if align:
            w = points[j] @ ego2world[j, :3, :3].T + ego2world[j, :3, 3]
            inside = np.zeros(len(w), bool)
            for box in fr.boxes:  # static points only
                B = box.box2global.copy()
                B[:3, 3] -= origin
                near = np.abs(w - B[:3, 3]).max(1) <= np.linalg.norm(box.size) / 2 + margin
                inside[near] |= in_box(_local(B, w[near]), box.size, margin)
            lows[j] = _cell_minima(w[~inside], ego2world[j, :3, 3])
    dz = vertical_offsets(lows) if align else np.zeros(n)
    ego2world[:, 2, 3] += dz
    sensors = np.full((n, 3), np.nan)
    static, static_frame, objects, boxes = [], [], {}, []
    for j, fr in enumerate(scene.frames):
        boxes.append({})
        for box in fr.boxes:
            B = box.box2global.copy()
            B[:3, 3] -= origin
            B[2, 3] += dz[j]
            boxes[j][box.instance] = (B, box.size)
            objects.setdefault(box.instance, dict(cls=box.cls, points=[np.zeros((0, 3), np.float32)],
                                                  frame=[np.zeros(0, np.int32)], sensor=np.full((n, 3), np.nan)))
    for j in use:
        E = ego2world[j]
        p = points[j] @ E[:3, :3].T + E[:3, 3]
        sensors[j] = E[:3, :3] @ scene.frames[j].lidar2ego[:3, 3] + E[:3, 3]
        free = np.ones(len(p), bool)
        for box in scene.frames[j].boxes:
            B, size = boxes[j][box.instance]
            idx = np.nonzero(free & (np.abs(p - B[:3, 3]).max(1) <= np.linalg.norm(size) / 2 + margin))[0]
            local = _local(B, p[idx])
            inside = in_box(local, size, margin)
            ob = objects[box.instance]
            ob["sensor"][j] = _local(B, sensors[j][None])[0]
            ob["points"].append(local[inside].astype(np.float32))
            ob["frame"].append(np.full(int(inside.sum()), j, np.int32))
            free[idx[inside]] = False
        static.append(p[free].astype(np.float32))
        static_frame.append(np.full(int(free.sum()), j, np.int32))
    for ob in objects.values():
        ob["points"], ob["frame"] = np.concatenate(ob["points"]), np.concatenate(ob["frame"])
    return Aggregate(origin, sensors, np.concatenate(static), np.concatenate(static_frame), objects, boxes,
                     ego2world, dz, ego_points)
