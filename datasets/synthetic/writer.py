"""Writing a synthetic set in the nuScenes layout: deterministic tokens, the 13 tables, byte-stable files.

The devkit loads any table folder name (``NuScenes('v1.0-synthetic', root)``); it needs every log to have a map
record whose ``filename`` is an existing image (read lazily as a 0.1 m / pixel mask). Each scene gets its own log
and a map PNG of its driveable surface in global coordinates (origin at the image's bottom-left corner).
Timeline of a scene with S sweeps per keyframe: camera frames f = 0, 1, ... at f * SAMPLE_DT / (S + 1) seconds
(12 Hz for S = 5, as nuScenes); every (S + 1)-th is a keyframe = a sample (2 Hz), with the LiDAR sweep. As in
nuScenes, a sweep's ``sample_token`` is the next sample's and its file lies under ``sweeps/<CHANNEL>/``.
"""
import hashlib
import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
from pyquaternion import Quaternion

from utils.constants import CAMS
from utils.geometry import pose_matrix
from datasets.synthetic import rig
from datasets.synthetic.scene import ATTRIBUTES, CATEGORIES, SAMPLE_DT

VERSION = "v1.0-synthetic"
CHANNELS = CAMS + ["LIDAR_TOP"]
T0_US = 1_700_000_000_000_000  # timestamp of the first sample of scene 0 (microseconds)
MAP_RES = 0.1
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]
ANNOTATION_RANGE = 50.0


def token(*key):
    """32-hex token, a hash of ``key`` (so equal inputs give equal tokens)."""
    return hashlib.md5("/".join(map(str, key)).encode()).hexdigest()


def scene_name(i):
    return f"synth-{i:04d}"


def log_name(seed, i):
    return f"synth-s{seed}-{i:04d}"


def sample_token(seed, scene, k):
    return token(seed, "sample", scene, k)


def frame_time(f, sweeps):
    """Seconds from the first sample to camera frame ``f`` with ``sweeps`` sweeps between keyframes (keyframes at
    exactly k * SAMPLE_DT, so their poses equal ``World.ego2global``)."""
    k, j = divmod(f, sweeps + 1)
    return k * SAMPLE_DT + j * SAMPLE_DT / (sweeps + 1)


def timestamp(scene, f, sweeps):
    """Microseconds of camera frame ``f`` of ``scene``."""
    return T0_US + scene * 10 ** 9 + int(round(frame_time(f, sweeps) * 1e6))


def data_filename(seed, scene, f, channel, sweeps):
    """Path of a sensor file of camera frame ``f`` relative to the dataroot, nuScenes style (keyframes under
    samples/, sweeps under sweeps/)."""
    ext = "pcd.bin" if channel == "LIDAR_TOP" else "jpg"
    folder = "samples" if f % (sweeps + 1) == 0 else "sweeps"
    return f"{folder}/{channel}/{log_name(seed, scene)}__{channel}__{timestamp(scene, f, sweeps)}.{ext}"


def save_npz(path, **arrays):
    """``np.savez_compressed`` with fixed zip timestamps, so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                        compress_type=zipfile.ZIP_DEFLATED)


def write_map(path, world):
    """Binary PNG (255 = driveable) of the road, 0.1 m / pixel, covering the scene's primitives."""
    road = world.road
    ext = np.maximum(world.center[:, :2].max(0), world.ego2global[:, :2, 3].max(0)) + 60.0
    w, h = (ext / MAP_RES).astype(int)
    s_ego = road.to_sd(world.ego2global[:, 0, 3], world.ego2global[:, 1, 3])[0]
    s = np.arange(s_ego.min() - 150.0, s_ego.max() + 150.0, 1.0)
    left, right = road.point(s, np.full_like(s, road.half_width)), road.point(s, np.full_like(s, -road.half_width))
    poly = np.concatenate([left, right[::-1]]) / MAP_RES
    poly[:, 1] = h - poly[:, 1]
    img = np.zeros((h, w), np.uint8)
    cv2.fillPoly(img, [np.round(poly).astype(np.int32)], 255)
    cv2.imwrite(str(path), img)


def _quat(R):
    return list(Quaternion(matrix=R, atol=1e-6).elements)


def _yaw_quat(yaw):
    return list(Quaternion(axis=[0, 0, 1], angle=float(yaw)).elements)


def _chain(records):
    """Link a list of records (in time order) through their prev / next fields."""
    for a, b in zip(records[:-1], records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]
    return records


def build_tables(seed, worlds, stats, img_hw, sweeps=0):
    """All 13 tables of the set. ``stats[scene][k]``: the per-sample dict of ``frame.render_frame`` (visible,
    crossed, lidar_pts), used for the annotations' visibility and point counts; ``sweeps``: camera sweeps between
    two keyframes."""
    h, w = img_hw
    sensors = [dict(token=token("sensor", c), channel=c, modality="lidar" if c == "LIDAR_TOP" else "camera")
               for c in CHANNELS]
    calib = []
    for c in CHANNELS:
        T = rig.lidar2ego() if c == "LIDAR_TOP" else pose_matrix(*rig.CAMERA_RIG[c][:2])
        K = [] if c == "LIDAR_TOP" else rig.intrinsics(h, w, c).tolist()
        calib.append(dict(token=token(seed, "calib", c), sensor_token=token("sensor", c),
                          translation=T[:3, 3].tolist(), rotation=_quat(T[:3, :3]), camera_intrinsic=K))
    categories = [dict(token=token("category", n), name=n, description=f"synthetic {n}")
                  for n in CATEGORIES.values()]
    attributes = [dict(token=token("attribute", n), name=n, description=f"synthetic {n}")
                  for n in sorted(set(ATTRIBUTES.values()))]
    t = dict(sensor=sensors, calibrated_sensor=calib, category=categories, attribute=attributes,
             visibility=[dict(token=k, level=v, description=f"visible fraction of the object {v} %")
                         for k, v in VISIBILITY],
             log=[], map=[], scene=[], sample=[], sample_data=[], ego_pose=[], instance=[], sample_annotation=[])
    for i, world in enumerate(worlds):
        log_tok = token(seed, "log", i)
        t["log"].append(dict(token=log_tok, logfile=log_name(seed, i), vehicle="synth", date_captured="2026-01-01",
                             location="synthetic-town"))
        t["map"].append(dict(token=token(seed, "map", i), log_tokens=[log_tok], category="semantic_prior",
                             filename=f"maps/{token(seed, 'map', i)}.png"))
        n_key = len(world.ego2global)
        samples = [dict(token=sample_token(seed, i, k), timestamp=timestamp(i, k * (sweeps + 1), sweeps), prev="",
                        next="", scene_token=token(seed, "scene", i)) for k in range(n_key)]
        t["sample"] += _chain(samples)
        t["scene"].append(dict(token=token(seed, "scene", i), log_token=log_tok, nbr_samples=len(samples),
                               first_sample_token=samples[0]["token"], last_sample_token=samples[-1]["token"],
                               name=scene_name(i),
                               description=f"synthetic street, {world.speed:.1f} m/s, curvature "
                                           f"{world.road.kappa:.4f} 1/m, static world"))
        frames = range((n_key - 1) * (sweeps + 1) + 1)
        poses = world.ego_pose([frame_time(f, sweeps) for f in frames])
        for c, cal in zip(CHANNELS, calib):
            recs = []
            for f, E in zip(frames, poses):
                if c == "LIDAR_TOP" and f % (sweeps + 1):
                    continue  # LiDAR at the keyframes only
                tok, ts = token(seed, "sample_data", i, f, c), timestamp(i, f, sweeps)
                t["ego_pose"].append(dict(token=tok, timestamp=ts, rotation=_quat(E[:3, :3]),
                                          translation=E[:3, 3].tolist()))
                recs.append(dict(token=tok, sample_token=samples[-(-f // (sweeps + 1))]["token"], ego_pose_token=tok,
                                 calibrated_sensor_token=cal["token"], timestamp=ts,
                                 fileformat="pcd" if c == "LIDAR_TOP" else "jpg",
                                 is_key_frame=f % (sweeps + 1) == 0,
                                 height=0 if c == "LIDAR_TOP" else h, width=0 if c == "LIDAR_TOP" else w,
                                 filename=data_filename(seed, i, f, c, sweeps), prev="", next=""))
            t["sample_data"] += _chain(recs)
        _annotations(t, seed, i, world, stats[i], samples)
    return t


def _annotations(t, seed, i, world, stats, samples):
    """Boxes of the annotated objects near the ego that some sensor sees, one instance per object."""
    for obj in world.instances:
        if obj["cls"] not in CATEGORIES:
            continue
        anns = []
        for k, st in enumerate(stats):
            dist = np.linalg.norm(obj["center"][:2] - world.ego2global[k, :2, 3])
            vis, n_pts = st["visible"].get(obj["id"], 0), st["lidar_pts"].get(obj["id"], 0)
            if dist > ANNOTATION_RANGE or vis + n_pts == 0:
                continue
            frac = vis / max(st["crossed"].get(obj["id"], 1), 1)
            attr = ATTRIBUTES.get(obj["cls"])
            anns.append(dict(token=token(seed, "ann", i, obj["id"], k), sample_token=samples[k]["token"],
                             instance_token=token(seed, "instance", i, obj["id"]),
                             visibility_token=VISIBILITY[int(np.searchsorted([0.4, 0.6, 0.8], frac, "right"))][0],
                             attribute_tokens=[token("attribute", attr)] if attr else [],
                             translation=obj["center"].tolist(), size=obj["size"].tolist(),
                             rotation=_yaw_quat(obj["yaw"]), prev="", next="", num_lidar_pts=int(n_pts),
                             num_radar_pts=0))
        if anns:
            t["sample_annotation"] += _chain(anns)
            t["instance"].append(dict(token=token(seed, "instance", i, obj["id"]),
                                      category_token=token("category", CATEGORIES[obj["cls"]]),
                                      nbr_annotations=len(anns), first_annotation_token=anns[0]["token"],
                                      last_annotation_token=anns[-1]["token"]))


def write_tables(root, tables):
    """One JSON file per table under <root>/v1.0-synthetic/."""
    d = Path(root) / VERSION
    d.mkdir(parents=True, exist_ok=True)
    for name, recs in tables.items():
        (d / f"{name}.json").write_text(json.dumps(recs, indent=0))
