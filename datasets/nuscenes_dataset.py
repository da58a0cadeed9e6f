"""nuScenes surround-view samples: 6 cameras at the previous, current and next frame.

The tables are read directly from ``<dataroot>/<version>/*.json`` (only the six this loader needs, so a custom
version such as ``v1.0-synthetic`` does not need annotation tables). Everything an item needs except the pixels
is computed once in ``__init__``; ``__getitem__`` only reads files.
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datasets.options import trains_on_depth
from datasets.checks import check_intrinsics, check_occ_labels, check_pose, check_split
from datasets.pseudo_labels import SEM_FORMATS, gsam_path, read_gsam_bin, read_png_label, resize_labels
from utils.geometry import pose_matrix, scale_intrinsics
from utils.constants import CAMS, IGNORE_ID, SKY_ID
from utils.errors import BadData, MissingFile, UnreadableFile
from utils.occ_metrics import sparseocc_origins

MAX_RAY_ORIGINS = 8  # SparseOcc's RayIoU casts from up to 8 LiDAR origins a sample

# Fields this code reads from each table.
TABLE_FIELDS = {
    "scene": ("token", "name", "first_sample_token"),
    "sample": ("token", "next", "scene_token"),
    "sample_data": ("token", "sample_token", "ego_pose_token", "calibrated_sensor_token", "filename",
                     "prev", "next", "is_key_frame"),
    "calibrated_sensor": ("token", "sensor_token", "translation", "rotation", "camera_intrinsic"),
    "ego_pose": ("token", "translation", "rotation"),
    "sensor": ("token", "channel"),
}


def load_tables(dataroot, version, names=tuple(TABLE_FIELDS), fields=None):
    """Read nuScenes tables into ``{table: {token: record}}``, checking that every needed field is present
    (``TABLE_FIELDS``, and ``fields`` ``{table: (field, ...)}`` for tables this loader does not read)."""
    fields = {**TABLE_FIELDS, **(fields or {})}
    if not os.path.isdir(dataroot):
        raise MissingFile(f"nuScenes --dataroot not found: {dataroot}")
    table_root = os.path.join(dataroot, version)
    if not os.path.isdir(table_root):
        present = sorted(d for d in os.listdir(dataroot) if os.path.isdir(os.path.join(dataroot, d))
                         and os.path.isfile(os.path.join(dataroot, d, "sample.json")))
        raise MissingFile(f"nuScenes table folder not found: {table_root} (versions under {dataroot}: "
                          f"{present or 'none'})")
    tables = {}
    for name in names:
        path = os.path.join(table_root, name + ".json")
        if not os.path.isfile(path):
            raise MissingFile(f"nuScenes table missing: {path}")
        try:
            with open(path) as f:
                records = json.load(f)
        except json.JSONDecodeError as e:
            raise BadData(f"nuScenes table {path} is not valid JSON: {e}") from None
        for field in fields.get(name, ("token",)):
            bad = next((r for r in records if field not in r), None)
            if bad is not None:
                raise BadData(f"nuScenes table {path}: record {bad.get('token', bad)} has no field '{field}'")
        tables[name] = {r["token"]: r for r in records}
    return tables


def get(tables, name, token, referrer):
    """One record of table ``name``; a clear error naming the referrer when the token is dangling."""
    try:
        return tables[name][token]
    except KeyError:
        raise BadData(f"nuScenes table {name}.json has no record '{token}' (referenced by {referrer})") from None


def sensor_pose(tables, sd):
    """(sensor -> ego, ego -> global) 4x4 float64 of one sample_data record."""
    cs = get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], f"sample_data {sd['token']}")
    pose = get(tables, "ego_pose", sd["ego_pose_token"], f"sample_data {sd['token']}")
    return pose_matrix(cs["translation"], cs["rotation"]), pose_matrix(pose["translation"], pose["rotation"])


def read_lidar(path):
    """(N, 3) float32 points of a nuScenes ``.pcd.bin`` (x, y, z, intensity, ring index per point) in the
    LiDAR frame."""
    if not os.path.isfile(path):
        raise MissingFile(f"LiDAR file missing: {path}")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 5:
        raise BadData(f"LiDAR file {path}: {raw.size} floats, not a multiple of 5 (x, y, z, intensity, ring)")
    return raw.reshape(-1, 5)[:, :3]


def image_hw(dataroot, sd):
    """(H, W) of a camera image: from the table, or from the file header when the table has no size."""
    if sd.get("height") and sd.get("width"):
        return int(sd["height"]), int(sd["width"])
    path = os.path.join(dataroot, sd["filename"])
    if not os.path.isfile(path):
        raise MissingFile(f"image missing (needed for its size): {path}")
    with Image.open(path) as img:
        return img.size[1], img.size[0]


def channel_of_calibration(tables):
    """``{calibrated_sensor token: channel}``."""
    out = {}
    for cs in tables["calibrated_sensor"].values():
        sensor = get(tables, "sensor", cs["sensor_token"], f"calibrated_sensor {cs['token']}")
        out[cs["token"]] = sensor["channel"]
    return out


def resolve_adjacent(mode, tables):
    """The temporal neighbours to use, ``("keyframe" | "sweep", reason)``. ``auto``: the camera sweeps when the
    tables list non-keyframe camera sample_data, else the keyframes (whether the sweep files exist is checked
    per neighbour frame: ``SweepFiles``)."""
    if mode != "auto":
        return mode, f"--adjacent {mode}"
    channel = channel_of_calibration(tables)
    n = sum(1 for sd in tables["sample_data"].values()
            if not sd["is_key_frame"] and channel.get(sd["calibrated_sensor_token"]) in CAMS)
    if not n:
        return "keyframe", "the tables hold camera keyframes only"
    return "sweep", f"{n} camera sweeps in the tables"


def chain_step(tables, sd, direction, keyframes_only):
    """The sample_data before / after ``sd`` in its sensor's chain (``direction`` "prev" / "next"); with
    ``keyframes_only`` the nearest keyframe that way. None at the end of the chain."""
    nxt = sd[direction]
    while nxt:
        sd = get(tables, "sample_data", nxt, f"sample_data {sd['token']}.{direction}")
        if sd["is_key_frame"] or not keyframes_only:
            return sd
        nxt = sd[direction]
    return None


class SweepFiles:
    """Which camera sweep files the neighbour frames need exist (each checked once), and how many neighbour frames
    (6 cameras of one sample, before or after it) fall back to the adjacent keyframes for a missing one."""

    def __init__(self, dataroot):
        self.dataroot, self.exists, self.frames, self.fallbacks = dataroot, {}, 0, 0

    def missing_in(self, frame):
        """Sweep files of ``frame`` (6 sample_data records or None) that are not on disk."""
        out = []
        for sd in frame:
            if sd is not None and not sd["is_key_frame"]:
                name = sd["filename"]
                if name not in self.exists:
                    self.exists[name] = os.path.isfile(os.path.join(self.dataroot, name))
                if not self.exists[name]:
                    out.append(name)
        return out

    def missing(self):
        return sorted(name for name, ok in self.exists.items() if not ok)


def sample_sensor_data(tables, channels):
    """``{sample_token: {channel: sample_data record}}`` of the keyframe data of the given channels."""
    channel_of_cs = channel_of_calibration(tables)
    out = {}
    for sd in tables["sample_data"].values():
        if not sd["is_key_frame"]:
            continue
        if sd["calibrated_sensor_token"] not in channel_of_cs:
            get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], f"sample_data {sd['token']}")  # raises
        channel = channel_of_cs[sd["calibrated_sensor_token"]]
        if channel in channels:
            out.setdefault(sd["sample_token"], {})[channel] = sd
    return out


def scene_samples(tables):
    """``[(sample_token, scene_name)]`` of every sample, scene by scene in temporal order."""
    out = []
    for scene in tables["scene"].values():
        token = scene["first_sample_token"]
        referrer = f"scene {scene['name']}"
        while token:
            sample = get(tables, "sample", token, referrer)
            out.append((token, scene["name"]))
            referrer, token = f"sample {token}", sample["next"]
    return out


def scene_ray_origins(tables, samples, lidar_data, table_root=""):
    """``{sample_token: (K, 3) float32}``: the RayIoU origins of every sample (``utils.occ_metrics.
    sparseocc_origins``) from the LIDAR_TOP keyframes of its scene. ``samples``: ``[(token, scene)]`` of whole
    scenes in time order; ``lidar_data``: ``{sample_token: {"LIDAR_TOP": sample_data}}``. Scenes with a keyframe
    without LIDAR_TOP data get no entry. The LiDAR calibration and poses are checked (errors name ``table_root``)."""
    scenes = {}
    for token, scene in samples:
        scenes.setdefault(scene, []).append(token)
    out = {}
    for tokens in scenes.values():
        if any("LIDAR_TOP" not in lidar_data.get(t, {}) for t in tokens):
            continue
        lidar2ego, lidar2global = [], []
        for t in tokens:
            sd = lidar_data[t]["LIDAR_TOP"]
            cs = get(tables, "calibrated_sensor", sd["calibrated_sensor_token"], f"sample_data {sd['token']}")
            pose = get(tables, "ego_pose", sd["ego_pose_token"], f"sample_data {sd['token']}")
            for name, record in (("calibrated_sensor", cs), ("ego_pose", pose)):
                where = f"{os.path.join(table_root, name)}.json record {record['token']} (LIDAR_TOP, RayIoU origins)"
                check_pose(record["translation"], record["rotation"], where)
            lidar2ego.append(pose_matrix(cs["translation"], cs["rotation"]))
            lidar2global.append(pose_matrix(pose["translation"], pose["rotation"]) @ lidar2ego[-1])
        for i, t in enumerate(tokens):
            out[t] = sparseocc_origins(np.stack(lidar2global), i, lidar2ego[i], MAX_RAY_ORIGINS).astype(np.float32)
    return out


def sweeps_after(tables, cams):
    """``[{cam: sample_data}]``: the camera sweeps after the keyframe data ``cams`` ({cam: sample_data}) up to the
    next keyframe, the j-th entry holding the j-th sweep of every camera, as far as all cameras have one."""
    out, cur = [], dict(cams)
    while True:
        nxt = {}
        for cam in CAMS:
            token = cur.get(cam, {}).get("next")
            if not token:
                return out
            sd = get(tables, "sample_data", token, f"sample_data {cur[cam]['token']}.next")
            if sd["is_key_frame"]:
                return out
            nxt[cam] = sd
        out.append(nxt)
        cur = nxt


def stride_range(frame_stride):
    """``--frame_stride`` (one or two positive ints) -> (lo, hi)."""
    v = [int(x) for x in frame_stride]
    if len(v) not in (1, 2) or min(v) < 1 or v[-1] < v[0]:
        raise BadData(f"--frame_stride takes one stride or a range LO HI of positive ints with LO <= HI, got {v}")
    return v[0], v[-1]


def read_split(path):
    """Sample tokens of a split file: one per line, '#' starts a comment. A bare name is looked up in
    datasets/splits/ when it does not exist as given."""
    if not os.path.isfile(path):
        alt = os.path.join(os.path.dirname(__file__), "splits", path)
        if not os.path.isfile(alt):
            raise MissingFile(f"split file not found: {path} (nor {alt})")
        path = alt
    with open(path) as f:
        tokens = [line.split("#", 1)[0].strip() for line in f]
    return check_split([t for t in tokens if t], path)


def resolve(dataroot, path):
    """``path`` made absolute against ``dataroot`` (None stays None)."""
    return None if path is None else os.path.join(dataroot, os.path.expanduser(path))


def load_image(path, size_hw, uint8=False):
    """RGB image resized to ``size_hw`` -> ((3, H, W) float in [0, 1], or uint8 0-255 with ``uint8``, original
    (h, w)). The float image is exactly the uint8 one divided by 255."""
    if not os.path.isfile(path):
        raise MissingFile(f"image missing: {path}")
    try:
        with Image.open(path) as img:
            w0, h0 = img.size
            img.draft("RGB", (size_hw[1], size_hw[0]))  # JPEG: decode at a reduced scale when that is enough
            img = img.convert("RGB").resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    except OSError as e:
        raise UnreadableFile(f"cannot read image {path}: {e}") from None
    if uint8:
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1), (h0, w0)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1), (h0, w0)


def load_npz(path, keys, what):
    """Arrays ``keys`` of an npz file, with clear errors for a missing, unreadable (e.g. truncated) file or key."""
    if not os.path.isfile(path):
        raise MissingFile(f"{what} missing: {path}")
    try:
        with np.load(path) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise BadData(f"{what} {path} lacks {missing} (has {data.files})")
            return [data[k] for k in keys]
    except BadData:
        raise
    except Exception as e:  # zipfile.BadZipFile, EOFError, zlib.error, ValueError (pickled data), ...
        raise UnreadableFile(f"cannot read {what} {path} ({type(e).__name__}: {e}): the file is truncated or not "
                             f"an npz; copy or export it again") from None


class NuScenesDataset(Dataset):
    """Surround-view items as described in docs/ARCHITECTURE.md (``imgs``, ``K``, ``cam2ego``, ``ego2global``,
    optional ``sem``, ``occ_*`` and ``ray_origins`` (with ``occ_root``), ``depth_gt``, plus ``token`` and
    ``scene``).

    ``eval_labels=False`` (training) leaves out the evaluation-only labels (``EVAL_ONLY_KEYS``: the dense LiDAR
    depth, ~35 MB a sample at 1600x900, the Occ3D volumes and ray origins); their folders are still checked.
    ``uint8_images=True`` returns ``imgs`` as uint8 0-255 (4x less to move between processes and to the GPU;
    ``utils.batch.to_device`` turns them into the same float images there).

    Temporal neighbours follow each camera's sample_data chain: with ``opt.adjacent == "keyframe"`` the chain is
    walked to the previous / next keyframe (= the previous / next sample's image of that camera), with "sweep" the
    directly adjacent image is taken (on nuScenes the 12 Hz camera sweep, ~0.08 s away, as the authors' loader);
    "auto" (default) takes the sweeps when the data has them (``resolve_adjacent``) and says which in the log.
    ``opt.frame_stride`` takes the neighbours that many steps along the chain; a range LO HI draws the stride per
    training item (the same for both neighbours), evaluation uses LO.
    """

    stride_range, random_stride = (1, 1), False  # --frame_stride (subclasses without it: the adjacent frames)
    sem_adjacent = False  # the neighbours' 2D labels too (--w_extra_sem; nuScenes-format keyframes only)
    near_stride = 0  # two more neighbours (--near_stride; nuScenes format only)

    def __init__(self, opt, split, eval_labels=True, uint8_images=False):
        if split not in ("train", "val"):
            raise BadData(f"split must be train or val, got {split!r}")
        self.dataroot = opt.dataroot
        self.input_size = tuple(opt.input_size)
        self.render_size = tuple(opt.render_size)
        self.eval_labels, self.uint8_images = eval_labels, uint8_images
        # LiDAR depth: for the depth metrics (not with --eval_depth false) or a criterion trained on it
        self.load_depth = (eval_labels and getattr(opt, "eval_depth", True)) or trains_on_depth(opt)
        tables = load_tables(opt.dataroot, opt.version)  # first: a wrong --dataroot is reported as such
        self.sem_root = resolve(opt.dataroot, opt.sem_root) if opt.use_sem else None
        # the 2D labels of the previous / next keyframe too (their rendered semantics, --w_extra_sem)
        self.sem_adjacent = self.sem_root is not None and getattr(opt, "w_extra_sem", 0) > 0
        self.sem_format = opt.sem_format
        self.sem_extra_ids = (getattr(opt, "sky_id", SKY_ID), IGNORE_ID)  # ids a PNG label may hold besides the classes
        if self.sem_format not in SEM_FORMATS:
            raise BadData(f"--sem_format must be one of {SEM_FORMATS}, got {self.sem_format!r}")
        self.occ_root = resolve(opt.dataroot, opt.occ_root)
        self.depth_root = resolve(opt.dataroot, opt.depth_root)
        for name, root in (("sem_root", self.sem_root), ("occ_root", self.occ_root),
                           ("depth_root", self.depth_root)):
            if root is not None and not os.path.isdir(root):
                raise MissingFile(f"--{name} folder not found: {root}")

        samples = scene_samples(tables)
        sensor_data = sample_sensor_data(tables, CAMS + ["LIDAR_TOP"])
        table_root = os.path.join(opt.dataroot, opt.version)
        self.ray_origins = (scene_ray_origins(tables, samples, sensor_data, table_root)
                            if self.occ_root is not None and eval_labels else {})
        split_file = opt.train_split if split == "train" else opt.val_split
        if split_file is not None:
            scene_of = dict(samples)
            tokens = read_split(split_file)
            unknown = [t for t in tokens if t not in scene_of]
            if unknown:
                raise BadData(f"split file {split_file}: {len(unknown)} tokens are not samples of "
                              f"{opt.version}, e.g. {unknown[:3]}")
            samples = [(t, scene_of[t]) for t in tokens]

        self.adjacent, why = resolve_adjacent(opt.adjacent, tables)
        sweep_files = SweepFiles(opt.dataroot) if self.adjacent == "sweep" else None
        checked = set()  # calibration / ego pose records already checked
        self.stride_range = stride_range(opt.frame_stride)
        self.random_stride = split == "train" and self.stride_range[1] > self.stride_range[0]
        self.near_stride = int(getattr(opt, "near_stride", 0) or 0)
        if self.near_stride and not 0 < self.near_stride < self.stride_range[0]:
            raise BadData(f"--near_stride {self.near_stride}: must be 0 or between 1 and --frame_stride - 1 "
                          f"({self.stride_range[0]} here)")
        train_sweeps = split == "train" and opt.train_sweeps and self.adjacent == "sweep"
        if train_sweeps and (eval_labels or (opt.use_sem and getattr(opt, "stage", "gsv") != "gsp")):
            raise BadData("--train_sweeps: camera sweeps have no labels; use it in stage 1 only (--stage gsp, where "
                          "the sweeps' items carry all-ignore 2D labels with --use_sem)")
        self.samples = []
        for token, scene in samples:
            centres = [(token, sensor_data.get(token, {}))]
            if train_sweeps:  # the sweeps up to the next keyframe, as far as all 6 cameras have one on disk
                centres += [(f"{token}#sweep{j + 1}", cams) for j, cams in enumerate(sweeps_after(tables,
                                                                                                 centres[0][1]))
                            if not sweep_files.missing_in(list(cams.values()))]
            for name, cams in centres:
                meta = self._sample_meta(tables, {name: cams}, name, self.adjacent == "keyframe",
                                         self.stride_range[1] if self.random_stride else self.stride_range[0],
                                         table_root, sweep_files, checked)
                lo = self.stride_range[0]
                if split == "train" and opt.require_adjacent and min(len(meta["prev"]), len(meta["next"])) < lo:
                    continue
                meta["scene"] = scene
                self.samples.append(meta)
        warning = self._check_sweeps(sweep_files, opt.adjacent) if sweep_files else ""
        if sweep_files and sweep_files.exists and len(sweep_files.missing()) == len(sweep_files.exists):
            self.adjacent = "keyframe"  # every neighbour frame fell back
            why = f"the tables list camera sweeps but their files are absent (e.g. {sweep_files.missing()[0]})"
            warning = ""
        print(f"[data] {opt.version} {split}: temporal neighbours = adjacent "
              f"{'camera sweeps' if self.adjacent == 'sweep' else 'keyframes'} ({why})" + warning)
        if self.stride_range != (1, 1):
            print(f"[data] {split}: neighbours {self.stride_range[0]}" + (f" to {self.stride_range[1]} (drawn per "
                  "sample)" if self.random_stride else "") + " steps along each camera's chain (--frame_stride)")
        if self.near_stride:
            print(f"[data] {split}: also the neighbours {self.near_stride} steps away (--near_stride): 4 sources")
        if train_sweeps:
            print(f"[data] train: {len(self.samples)} items centred on keyframes and camera sweeps (--train_sweeps)")

    @staticmethod
    def _check_sweeps(sweeps, asked):
        """Missing sweep files: an error with ``--adjacent sweep``, a warning that counts them with ``auto``."""
        missing = sweeps.missing()
        if not missing:
            return ""
        what = (f"{len(missing)} of the {len(sweeps.exists)} camera sweep files the neighbour frames use are missing "
                f"(e.g. {missing[0]})")
        if asked == "sweep":
            raise MissingFile(f"--adjacent sweep: {what}: restore them, or use --adjacent auto (keyframe neighbours "
                              "where a sweep is missing) or --adjacent keyframe")
        return (f"\n[data] warning: {what}: {sweeps.fallbacks} of {sweeps.frames} neighbour frames use the adjacent "
                "keyframes instead (0.5 s away on nuScenes instead of ~0.08 s)")

    @staticmethod
    def _sample_meta(tables, cam_data, token, keyframes_only, max_stride=1, table_root="", sweeps=None, checked=None):
        """Files and poses of one sample: ``cur`` / ``prev`` / ``next``, each a list of frames (``prev`` / ``next``:
        1, 2, ... ``max_stride`` steps away along every camera's chain, as far as all 6 chains reach), a frame being
        ``(files [cam], ego2global (6, 4, 4))``; ``cam2ego`` (6, 4, 4), ``K`` (6, 3, 3) at the original image size.
        With ``sweeps`` (SweepFiles) a first neighbour frame with a missing sweep file is replaced by the adjacent
        keyframes of its 6 cameras (and no further stride is taken that way); a later one ends the chain there.
        Calibration and poses are checked (datasets/checks.py) once each (``checked``: set of the tokens done)."""
        cams = cam_data.get(token, {})
        missing = [c for c in CAMS if c not in cams]
        if missing:
            raise BadData(f"sample {token} has no keyframe sample_data for {missing}")
        checked = set() if checked is None else checked
        current = [cams[cam] for cam in CAMS]

        def ego_pose(sd):
            pose = get(tables, "ego_pose", sd["ego_pose_token"], f"sample_data {sd['token']}")
            if pose["token"] not in checked:
                check_pose(pose["translation"], pose["rotation"], f"{table_root}/ego_pose.json record {pose['token']}")
                checked.add(pose["token"])
            return pose_matrix(pose["translation"], pose["rotation"])

        def frame(sds):
            return [sd["filename"] for sd in sds], np.stack([ego_pose(sd) for sd in sds]).astype(np.float32)

        def times(sds):  # each camera's capture time, microseconds (the 6 cameras of a frame fire one after another)
            return np.array([sd.get("timestamp", 0) for sd in sds], np.int64)

        def sample_of(sds):  # the sample whose keyframe images these are (its 2D labels), else None
            tokens = {sd.get("sample_token") for sd in sds}
            return tokens.pop() if len(tokens) == 1 and all(sd.get("is_key_frame") for sd in sds) else None

        cam2ego = np.zeros((len(CAMS), 4, 4), np.float32)
        K = np.zeros((len(CAMS), 3, 3), np.float32)
        for c, cam in enumerate(CAMS):
            cur = current[c]
            cs = get(tables, "calibrated_sensor", cur["calibrated_sensor_token"], f"sample_data {cur['token']}")
            if cs["token"] not in checked:
                where = f"{table_root}/calibrated_sensor.json record {cs['token']} ({cam})"
                check_intrinsics(cs["camera_intrinsic"], where)
                check_pose(cs["translation"], cs["rotation"], where)
                checked.add(cs["token"])
            cam2ego[c] = pose_matrix(cs["translation"], cs["rotation"])
            K[c] = cs["camera_intrinsic"]
        out = dict(token=token, cur=frame(current), cur_t=times(current), cam2ego=cam2ego, K=K)
        for direction in ("prev", "next"):
            frames, sds, samples, stamps = [], current, [], []
            while len(frames) < max_stride:
                nxt = [chain_step(tables, sd, direction, keyframes_only) for sd in sds]
                if any(sd is None for sd in nxt):  # as far as all 6 chains reach
                    break
                if sweeps is not None and not keyframes_only:
                    sweeps.frames += not frames
                    if sweeps.missing_in(nxt):
                        if frames:
                            break
                        sweeps.fallbacks += 1
                        nxt = [chain_step(tables, sd, direction, True) for sd in sds]
                        if not any(sd is None for sd in nxt):
                            frames.append(frame(nxt))
                            samples.append(sample_of(nxt))
                            stamps.append(times(nxt))
                        break
                frames.append(frame(nxt))
                samples.append(sample_of(nxt))
                stamps.append(times(nxt))
                sds = nxt
            out[direction] = frames
            out[direction + "_samples"] = samples
            out[direction + "_t"] = stamps
        return out

    def _stride(self, m):
        """Steps to the previous / next frame of sample ``m``: training with ``--frame_stride LO HI`` draws one
        in LO..HI (as far as both chains reach) per call, otherwise LO; 0 where the chain ends before LO (the
        current frame stands in)."""
        lo, hi = self.stride_range
        reach = min(len(m["prev"]), len(m["next"]))
        if self.random_stride and reach > lo:
            return int(torch.randint(lo, min(hi, reach) + 1, ()))
        return lo

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        m = self.samples[index]
        K = torch.from_numpy(m["K"].copy())
        sizes = []  # original (h, w) of the current images
        s = self._stride(m)
        n = self.near_stride  # frames 3 / 4: the near neighbours (--near_stride)
        steps = [(s, "prev"), (0, "cur"), (s, "next")] + ([(n, "prev"), (n, "next")] if n else [])
        # (files, ego2global) and capture times of each frame; the current one where a chain has no neighbour
        picked = [(m[d][k - 1], m[d + "_t"][k - 1]) if d != "cur" and 0 < k <= len(m[d]) else (m["cur"], m["cur_t"])
                  for k, d in steps]
        frames = [f for f, _ in picked]
        imgs = torch.zeros((len(frames), len(CAMS), 3) + self.input_size,
                           dtype=torch.uint8 if self.uint8_images else None)
        for f, (files, _) in enumerate(frames):
            for c in range(len(CAMS)):
                imgs[f, c], (h0, w0) = load_image(os.path.join(self.dataroot, files[c]), self.input_size,
                                                  self.uint8_images)
                if f == 1:  # pixel centres at integer coordinates, as in utils.geometry
                    K[c] = scale_intrinsics(K[c], self.input_size[1] / w0, self.input_size[0] / h0)
                    sizes.append((h0, w0))
        item = dict(imgs=imgs, K=K, cam2ego=torch.from_numpy(m["cam2ego"]),
                    ego2global=torch.from_numpy(np.stack([e for _, e in frames])), token=m["token"], scene=m["scene"])
        stamps = np.stack([t for _, t in picked])  # (F, 6) microseconds
        # seconds from the current frame's mean capture time (float32 keeps microseconds at this range)
        item["cam_time"] = torch.from_numpy(((stamps - stamps[1].mean()) * 1e-6).astype(np.float32))
        if self.sem_root is not None and "#sweep" in m["token"]:  # a camera sweep (--train_sweeps): no labels
            item["sem"] = torch.full((len(CAMS),) + self.render_size, IGNORE_ID, dtype=torch.int64)
        elif self.sem_root is not None:
            item["sem"] = torch.stack([resize_labels(self._read_sem(m, c, sizes[c]), self.render_size)
                                       for c in range(len(CAMS))])
        if self.sem_adjacent:  # (2, 6, h, w): the previous / next keyframe's labels, 255 where it has none
            adj = torch.full((2, len(CAMS)) + self.render_size, 255, dtype=item["sem"].dtype)
            for k, d in enumerate(("prev", "next")):
                token = m[d + "_samples"][s - 1] if 0 < s <= len(m[d]) else None
                if token is not None:
                    other = dict(m, token=token, cur=m[d][s - 1])
                    adj[k] = torch.stack([resize_labels(self._read_sem(other, c, sizes[c]), self.render_size)
                                          for c in range(len(CAMS))])
            item["sem_adj"] = adj
        if self.occ_root is not None and self.eval_labels:
            path = os.path.join(self.occ_root, m["scene"], m["token"], "labels.npz")
            keys = ("semantics", "mask_camera", "mask_lidar")
            arrays = load_npz(path, keys, "Occ3D labels")
            check_occ_labels(arrays, path)
            for key, arr in zip(keys, arrays):
                item["occ_" + key] = torch.from_numpy(arr.astype(np.uint8))
            if m["token"] in self.ray_origins:  # (MAX_RAY_ORIGINS, 3), NaN rows pad
                origins = torch.full((MAX_RAY_ORIGINS, 3), float("nan"))
                found = torch.from_numpy(self.ray_origins[m["token"]])
                origins[:len(found)] = found
                item["ray_origins"] = origins
        if self.depth_root is not None and self.load_depth:
            item["depth_gt"] = torch.stack([self._load_depth(os.path.join(self.depth_root, m["token"], cam + ".npz"))
                                            for cam in CAMS])
        return item

    def _read_sem(self, m, c, image_hw):
        """(h, w) uint8 Occ3D ids of camera ``c`` of sample ``m`` (datasets/pseudo_labels.py formats)."""
        if self.sem_format == "png":
            return read_png_label(os.path.join(self.sem_root, m["token"], CAMS[c] + ".png"), self.sem_extra_ids)
        return read_gsam_bin(self._gsam_file(m, c), image_hw)

    def _gsam_file(self, m, c):
        """Grounded-SAM file of camera ``c`` of sample ``m`` in the release's nuScenes layout."""
        return gsam_path(self.sem_root, m["cur"][0][c])

    @staticmethod
    def _load_depth(path):
        """(h, w) float32 dense LiDAR depth at the original image size, 0 where there is no point."""
        uv, depth, hw = load_npz(path, ("uv", "depth", "hw"), "LiDAR depth")
        out = np.zeros(tuple(int(s) for s in hw), np.float32)
        out[uv[:, 1], uv[:, 0]] = depth
        return torch.from_numpy(out)
