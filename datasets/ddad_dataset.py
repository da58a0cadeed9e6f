"""DDAD in TRI's DGP scene format, read straight from its JSON files (no `dgp` library).

Layout under ``opt.dataroot``: a dataset JSON (``ddad.json`` in the release, ``scene_dataset_v1.0.json`` in
DGP's test data) whose ``scene_splits`` ("0" train, "1" val, "2" test) list scene JSON files; next to each scene
JSON: ``calibration/<key>.json``, ``rgb/CAMERA_xx/<ts>.jpg`` and ``point_cloud/LIDAR/<ts>.npz``.

Conventions, checked on the data (see tests/test_ddad.py):
  * calibration ``extrinsics[i]`` is the pose of sensor i in the vehicle frame (sensor -> vehicle, x forward,
    y left, z up, origin on the ground); the LIDAR's is the identity, so its points are vehicle coordinates.
  * each datum's ``pose`` is the pose of that sensor in the world at its own timestamp (sensor -> world), so
    ``ego2global = pose @ inv(extrinsics)``.
  * the camera frame is OpenCV (x right, y down, z forward), like nuScenes.
  * ring order (``DDAD_CAMS``, same sense as ``utils.constants.CAMS``) from the extrinsic yaws: CAMERA_01
    front (+4 deg), 06 front-right (-53), 08 back-right (-125), 09 back (-179), 07 back-left (+124),
    05 front-left (+52).

Files this project writes or reads per camera (exported LiDAR depth, 2D semantic labels) are named by ring
position like nuScenes (``<token>/CAM_FRONT.npz`` holds CAMERA_01, see ``RING_NAME``), so that one format serves
both datasets. A scene without all six cameras is skipped with a warning naming it and the missing cameras
(DGP's own test scenes have three); a split left with no sample is an error. Self-occlusion masks
(``<ddad_mask_dir>/01.png`` ..., 255 = visible) come back as ``mask`` (6, h, w) float {0, 1} at the render size.
"""
import json
import os
import warnings

import numpy as np
import torch
from PIL import Image

from datasets.options import trains_on_depth
from datasets.checks import check_intrinsics, check_pose
from datasets.nuscenes_dataset import NuScenesDataset, read_split, resolve
from utils.constants import CAMS
from utils.geometry import pose_matrix
from utils.errors import BadData, MissingFile

DDAD_CAMS = ["CAMERA_01", "CAMERA_06", "CAMERA_08", "CAMERA_09", "CAMERA_07", "CAMERA_05"]
RING_NAME = dict(zip(DDAD_CAMS, CAMS))  # DDAD camera -> ring-position name used in file names
LIDAR = "LIDAR"
DATASET_JSONS = ("ddad.json", "scene_dataset_v1.0.json")
SPLIT_IDS = {"train": "0", "val": "1", "test": "2"}


def _read_json(path, what):
    if not os.path.isfile(path):
        raise MissingFile(f"DDAD: {what} not found: {path}")
    with open(path) as f:
        return json.load(f)


def _field(d, key, where):
    if key not in d:
        raise BadData(f"DDAD: field '{key}' missing in {where}")
    return d[key]


def pose_to_matrix(pose):
    """DGP pose {rotation: {qw, qx, qy, qz}, translation: {x, y, z}} -> 4x4 float64."""
    q, t = pose["rotation"], pose["translation"]
    return pose_matrix([t["x"], t["y"], t["z"]], [q["qw"], q["qx"], q["qy"], q["qz"]])


def checked_pose(pose, where):
    """``pose_to_matrix`` of a pose whose values are checked first (finite, unit quaternion)."""
    try:
        q, t = pose["rotation"], pose["translation"]
        values = [q["qw"], q["qx"], q["qy"], q["qz"]], [t["x"], t["y"], t["z"]]
    except (KeyError, TypeError):
        raise BadData(f"DDAD: {where}: pose {pose!r} lacks rotation qw qx qy qz or translation x y z") from None
    check_pose(values[1], values[0], where)
    return pose_to_matrix(pose)


def intrinsics_to_matrix(intr):
    """DGP pinhole intrinsics {fx, fy, cx, cy, skew} -> 3x3."""
    return np.array([[intr["fx"], intr.get("skew", 0.0), intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]])


def find_dataset_json(root):
    """Absolute path of the dataset JSON inside ``root`` (or of ``root`` itself when it is a JSON file)."""
    if os.path.isfile(root):
        return os.path.abspath(root)
    if not os.path.isdir(root):
        raise MissingFile(f"DDAD: --dataroot not found: {root} (the folder of ddad.json)")
    for name in DATASET_JSONS:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.abspath(os.path.join(root, name))
    raise MissingFile(f"DDAD: no dataset JSON ({' or '.join(DATASET_JSONS)}) in {root}")


def split_scene_files(ds_json, split):
    """Absolute paths of the scene JSONs of ``split`` ("train", "val", "test") in a dataset JSON."""
    splits = _field(_read_json(ds_json, "dataset JSON"), "scene_splits", ds_json)
    files = _field(_field(splits, SPLIT_IDS[split], f"{ds_json} scene_splits"), "filenames", ds_json)
    return [os.path.join(os.path.dirname(ds_json), f) for f in files]


def load_scene(scene_json):
    """Parse one scene: calibration and, per sample (sorted by time), each sensor's file and pose.

    Returns dict(name (the scene folder), calib={sensor: (K 3x3, sensor2vehicle 4x4)},
    frames=[{sensor: dict(file, pose sensor2world 4x4)}]).
    """
    scene = _read_json(scene_json, "scene JSON")
    scene_dir = os.path.dirname(scene_json)
    name = os.path.basename(scene_dir)
    datums = {d["key"]: d for d in _field(scene, "data", scene_json)}
    samples = sorted(_field(scene, "samples", scene_json), key=lambda s: s["id"]["timestamp"])
    if not samples:
        raise BadData(f"DDAD: scene {name} has no samples ({scene_json})")
    calib_keys = {s["calibration_key"] for s in samples}
    if len(calib_keys) != 1:
        raise BadData(f"DDAD: scene {name} uses several calibrations {sorted(calib_keys)}")
    calib_path = os.path.join(scene_dir, "calibration", calib_keys.pop() + ".json")
    cal = _read_json(calib_path, f"calibration of scene {name}")
    calib = {n: (intrinsics_to_matrix(i), checked_pose(e, f"{calib_path} extrinsics of {n}")) for n, i, e in
             zip(*(_field(cal, k, calib_path) for k in ("names", "intrinsics", "extrinsics")))}
    frames = []
    for s in samples:
        frame = {}
        for key in s["datum_keys"]:
            if key not in datums:
                raise BadData(f"DDAD: scene {name}: datum {key} listed in a sample but not in 'data'")
            d = datums[key]
            value = next(iter(d["datum"].values()))
            frame[d["id"]["name"]] = dict(file=os.path.join(scene_dir, value["filename"]),
                                          pose=checked_pose(value["pose"], f"{scene_json} datum {key}"))
        frames.append(frame)
    return dict(name=name, calib=calib, frames=frames, calib_path=calib_path)


def sample_token(scene_name, index):
    """Token of sample ``index`` (time order) of a scene: DDAD has none of its own."""
    return f"{scene_name}_{index:04d}"


def _existing(path):
    if not os.path.isfile(path):
        raise MissingFile(f"DDAD: file not found: {path}")
    return path


def load_masks(mask_dir, size_hw):
    """(6, h, w) float {0, 1} self-occlusion masks in ``DDAD_CAMS`` order (1 = the scene is visible)."""
    out = []
    for cam in DDAD_CAMS:
        path = _existing(os.path.join(mask_dir, cam[-2:] + ".png"))
        with Image.open(path) as m:
            m = m.convert("L").resize((size_hw[1], size_hw[0]), Image.NEAREST)
        out.append(torch.from_numpy((np.asarray(m) > 127).astype(np.float32)))
    return torch.stack(out)


class DDADDataset(NuScenesDataset):
    """DDAD samples with their previous / next sample, in the item format of docs/ARCHITECTURE.md, plus
    ``mask`` (6, h, w) when masks are found. Cameras come in ``DDAD_CAMS`` order, tokens are
    ``<scene>_<sample index>`` (``sample_token``).

    ``eval_labels`` and ``uint8_images`` as in NuScenesDataset.
    Options: dataroot (folder of the dataset JSON, or the JSON itself), input_size, render_size, train_split /
    val_split (token files), require_adjacent, use_sem / sem_root, depth_root (files of
    tools/data/export_gt_depth_ddad.py; unset: no depth_gt), ddad_mask_dir (unset: ``<root>/masks`` when present).
    Reuses the nuScenes item reader: only the metadata differs.
    """

    def __init__(self, opt, split, eval_labels=True, uint8_images=False):
        if split not in SPLIT_IDS:
            raise BadData(f"DDAD: unknown split {split!r} (expected one of {sorted(SPLIT_IDS)})")
        ds_json = find_dataset_json(opt.dataroot)
        root = self.dataroot = os.path.dirname(ds_json)
        self.input_size = tuple(opt.input_size)
        self.render_size = tuple(opt.render_size)
        self.eval_labels, self.uint8_images = eval_labels, uint8_images
        # LiDAR depth: for the depth metrics (not with --eval_depth false) or a criterion trained on it
        self.load_depth = (eval_labels and getattr(opt, "eval_depth", True)) or trains_on_depth(opt)
        self.sem_root = resolve(root, opt.sem_root) if opt.use_sem else None
        if getattr(opt, "near_stride", 0):
            raise BadData("--near_stride: the DDAD loader takes the adjacent frames only (like --frame_stride); use 0")
        if self.sem_root is not None and getattr(opt, "w_extra_sem", 0) > 0:
            raise BadData("--w_extra_sem: the DDAD loader has no labels of the neighbouring frames; use 0 on DDAD")
        self.sem_format = opt.sem_format
        self.occ_root = None
        self.depth_root = resolve(root, opt.depth_root)
        mask_dir = resolve(root, opt.ddad_mask_dir or "masks")
        if opt.ddad_mask_dir and not os.path.isdir(mask_dir):
            raise MissingFile(f"DDAD: --ddad_mask_dir folder not found: {mask_dir}")
        self.masks = load_masks(mask_dir, self.render_size) if os.path.isdir(mask_dir) else None

        split_file = opt.train_split if split == "train" else opt.val_split
        wanted = set(read_split(split_file)) if split_file else None
        self.samples = []
        for path in split_scene_files(ds_json, split):
            scene = load_scene(path)
            missing = [c for c in DDAD_CAMS + [LIDAR]
                       if c not in scene["calib"] or any(c not in fr for fr in scene["frames"])]
            if missing:
                warnings.warn(f"DDAD: scene {scene['name']} skipped, it lacks {', '.join(missing)}")
                continue
            for c in DDAD_CAMS:
                check_intrinsics(scene["calib"][c][0], f"DDAD: {scene['calib_path']} intrinsics of {c}")
            for i in range(len(scene["frames"])):
                meta = self._sample_meta(scene, i)
                adjacent = meta["prev"] and meta["next"]
                if split == "train" and opt.require_adjacent and not adjacent:
                    continue
                if wanted is None or meta["token"] in wanted:
                    self.samples.append(meta)
        if not self.samples:
            raise BadData(f"DDAD: no usable sample in split '{split}' of {ds_json} (every scene needs "
                          f"{', '.join(DDAD_CAMS)} and LIDAR)")

    @staticmethod
    def _sample_meta(scene, i):
        """Files and poses of sample ``i`` of a scene, in the layout NuScenesDataset.__getitem__ reads."""
        frames = scene["frames"]
        cam2ego = np.stack([scene["calib"][c][1] for c in DDAD_CAMS])

        def frame(f):  # (files [cam], ego2global (6, 4, 4))
            return ([frames[f][c]["file"] for c in DDAD_CAMS],
                    np.stack([frames[f][c]["pose"] @ np.linalg.inv(scene["calib"][c][1])
                              for c in DDAD_CAMS]).astype(np.float32))
        prev, nxt = [frame(i - 1)] if i > 0 else [], [frame(i + 1)] if i < len(frames) - 1 else []
        same = np.zeros(len(DDAD_CAMS), np.int64)  # the six cameras of a DDAD sample share one timestamp (its JSON)
        return dict(token=sample_token(scene["name"], i), scene=scene["name"], cur=frame(i), prev=prev, next=nxt,
                    cur_t=same, prev_t=[same] * len(prev), next_t=[same] * len(nxt),
                    K=np.stack([scene["calib"][c][0] for c in DDAD_CAMS]).astype(np.float32),
                    cam2ego=cam2ego.astype(np.float32))

    def _gsam_file(self, m, c):
        """The release's DDAD layout of Grounded-SAM files: <sem_root>/<scene>/<CAMERA_xx>/<image name>_mask.bin."""
        name = os.path.splitext(os.path.basename(m["cur"][0][c]))[0]
        return os.path.join(self.sem_root, m["scene"], DDAD_CAMS[c], name + "_mask.bin")

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if self.masks is not None:
            item["mask"] = self.masks.clone()
        return item
