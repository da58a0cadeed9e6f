"""One nuScenes-layout scene as the label maker needs it: its LiDAR frames (keyframes, and the sweeps between them
where the tables list them) with poses and boxes, and its keyframes' cameras.

Read from the tables directly with ``datasets.nuscenes_dataset``'s helpers (no devkit). Boxes of a keyframe are
its ``sample_annotation`` records; boxes of a sweep are interpolated between the two keyframes around it (position
linearly, rotation by slerp; an instance annotated at only one of them keeps that box), as nuscenes-devkit does.
"""
import os
from dataclasses import dataclass, field

import numpy as np
from pyquaternion import Quaternion

from datasets.nuscenes_dataset import (TABLE_FIELDS, get, image_hw, load_tables, sample_sensor_data,
                                       sensor_pose)
from utils.constants import CAMS
from utils.errors import BadData
from utils.geometry import pose_matrix

TABLES = tuple(TABLE_FIELDS) + ("sample_annotation", "instance", "category")
FIELDS = {
    "sample_data": TABLE_FIELDS["sample_data"] + ("timestamp",),
    "sample_annotation": ("token", "sample_token", "instance_token", "translation", "size", "rotation"),
    "instance": ("token", "category_token"),
    "category": ("token", "name"),
}
# nuScenes category -> Occ3D class id (the category or a sub-category of it); any other category (animal, debris,
# pushable_pullable, bicycle_rack, personal_mobility, stroller, wheelchair, emergency vehicles) -> 0, others
CATEGORY_CLASS = (("movable_object.barrier", 1), ("vehicle.bicycle", 2), ("vehicle.bus", 3), ("vehicle.car", 4),
                  ("vehicle.construction", 5), ("vehicle.motorcycle", 6), ("human.pedestrian.adult", 7),
                  ("human.pedestrian.child", 7), ("human.pedestrian.construction_worker", 7),
                  ("human.pedestrian.police_officer", 7), ("movable_object.trafficcone", 8),
                  ("vehicle.trailer", 9), ("vehicle.truck", 10))
SWEEP_MODES = ("auto", "true", "false")


def occ_class(category):
    """Occ3D class id of a nuScenes category name (0 = others for unmapped categories)."""
    return next((c for name, c in CATEGORY_CLASS if category == name or category.startswith(name + ".")), 0)


@dataclass
class Box:
    instance: str
    cls: int  # Occ3D class id
    box2global: np.ndarray  # (4, 4): box frame (x along the length, y along the width, z up, origin at the centre)
    size: np.ndarray  # (3,) w, l, h in metres (nuScenes order: extents along box y, x, z)


@dataclass
class Frame:
    path: str  # LiDAR file
    lidar2ego: np.ndarray
    ego2global: np.ndarray
    time: float  # seconds
    sample: str  # sample token of a keyframe, "" for a sweep
    boxes: list = field(default_factory=list)


@dataclass
class Keyframe:
    token: str
    frame: int  # index into Scene.frames
    cameras: list  # (K (3, 3) at h x w, cam2global (4, 4), h, w) per camera in CAMS order


@dataclass
class Scene:
    name: str
    frames: list  # in time order
    keyframes: list
    sweeps_note: str  # which LiDAR frames were used, and why


def read_tables(dataroot, version):
    """The tables the label maker reads, fields checked (a missing table or field: one clear error)."""
    return load_tables(dataroot, version, TABLES, FIELDS)


def _boxes(tables, sample_token, by_sample):
    out = []
    for ann in by_sample.get(sample_token, []):
        inst = get(tables, "instance", ann["instance_token"], f"sample_annotation {ann['token']}")
        cat = get(tables, "category", inst["category_token"], f"instance {inst['token']}")
        out.append(Box(ann["instance_token"], occ_class(cat["name"]), pose_matrix(ann["translation"], ann["rotation"]),
                       np.asarray(ann["size"], np.float64)))
    return out


def interpolate_boxes(a, b, ta, tb, t):
    """Boxes at time ``t`` between the boxes ``a`` (time ``ta``) and ``b`` (time ``tb``): an instance in both is
    interpolated (translation linearly, rotation by slerp), one in either only keeps its box."""
    w = 0.0 if tb <= ta else float(np.clip((t - ta) / (tb - ta), 0, 1))
    later = {x.instance: x for x in b}
    out = []
    for x in a:
        y = later.pop(x.instance, None)
        if y is None:
            out.append(x)
            continue
        q = Quaternion.slerp(Quaternion(matrix=x.box2global[:3, :3], atol=1e-6),
                             Quaternion(matrix=y.box2global[:3, :3], atol=1e-6), w)
        T = (1 - w) * x.box2global[:3, 3] + w * y.box2global[:3, 3]
        out.append(Box(x.instance, x.cls, pose_matrix(T, q.elements), x.size))
    return out + list(later.values())


def _sweeps_between(tables, sd, stop):
    """LiDAR sweep records after keyframe record ``sd`` up to (not including) keyframe record ``stop``; None
    when the chain leaves the tables (sweeps not listed)."""
    out, tok = [], sd["next"]
    while tok and tok != stop["token"]:
        rec = tables["sample_data"].get(tok)
        if rec is None:
            return None
        out.append(rec)
        tok = rec["next"]
    return out if tok == stop["token"] else None


def read_scene(tables, dataroot, scene, sweeps="auto"):
    """The ``Scene`` of scene record ``scene``. ``sweeps``: "true" uses the LiDAR sweeps between keyframes (a
    missing file is an error when it is read), "false" the keyframes only, "auto" the sweeps when the tables list
    them and the first one's file exists."""
    if sweeps not in SWEEP_MODES:
        raise BadData(f"--sweeps must be one of {SWEEP_MODES}, got {sweeps!r}")
    samples, token = [], scene["first_sample_token"]
    while token:
        samples.append(get(tables, "sample", token, f"scene {scene['name']}"))
        token = samples[-1]["next"]
    data = sample_sensor_data(tables, CAMS + ["LIDAR_TOP"])
    by_sample = {}
    for ann in tables["sample_annotation"].values():
        by_sample.setdefault(ann["sample_token"], []).append(ann)
    keys = []
    for s in samples:
        missing = [c for c in CAMS + ["LIDAR_TOP"] if c not in data.get(s["token"], {})]
        if missing:
            raise BadData(f"sample {s['token']} of {scene['name']} has no keyframe sample_data for {missing}")
        keys.append(data[s["token"]]["LIDAR_TOP"])
    between = [_sweeps_between(tables, a, b) for a, b in zip(keys[:-1], keys[1:])]
    listed = [r for part in between if part for r in part]
    use = sweeps == "true" or (sweeps == "auto" and listed and os.path.isfile(os.path.join(dataroot,
                                                                                          listed[0]["filename"])))
    note = (f"{len(keys)} keyframes + {len(listed)} sweeps" if use and listed else f"{len(keys)} keyframes only ("
            + ("--sweeps false" if sweeps == "false" else "the tables list no LiDAR sweeps" if not listed else
               f"the tables list {len(listed)} LiDAR sweeps, their files are absent, e.g. "
               f"{os.path.join(dataroot, listed[0]['filename'])}") + ")")
    frames, keyframes = [], []

    def frame(sd, sample, boxes):
        lidar2ego, ego2global = sensor_pose(tables, sd)
        return Frame(os.path.join(dataroot, sd["filename"]), lidar2ego, ego2global, sd["timestamp"] * 1e-6, sample,
                     boxes)

    key_boxes = [_boxes(tables, s["token"], by_sample) for s in samples]
    for i, (s, sd) in enumerate(zip(samples, keys)):
        cams = []
        for cam in CAMS:
            csd = data[s["token"]][cam]
            cam2ego, ego2global = sensor_pose(tables, csd)
            K = get(tables, "calibrated_sensor", csd["calibrated_sensor_token"], f"sample_data {csd['token']}")
            if np.shape(K["camera_intrinsic"]) != (3, 3):
                raise BadData(f"calibrated_sensor {K['token']} ({cam}): camera_intrinsic is not 3x3")
            cams.append((np.asarray(K["camera_intrinsic"], np.float64), ego2global @ cam2ego,
                         *image_hw(dataroot, csd)))
        keyframes.append(Keyframe(s["token"], len(frames), cams))
        frames.append(frame(sd, s["token"], key_boxes[i]))
        if use and i + 1 < len(keys) and between[i]:
            ta, tb = sd["timestamp"] * 1e-6, keys[i + 1]["timestamp"] * 1e-6
            for rec in between[i]:
                t = rec["timestamp"] * 1e-6
                frames.append(frame(rec, "", interpolate_boxes(key_boxes[i], key_boxes[i + 1], ta, tb, t)))
    return Scene(scene["name"], frames, keyframes, note)
