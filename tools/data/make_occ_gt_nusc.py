"""Occ3D-format occupancy labels from the LiDAR and boxes of any nuScenes-layout scene (docs/occ_gt.md).

Writes ``<out>/<scene>/<sample_token>/labels.npz`` (``semantics``, ``mask_lidar``, ``mask_camera``: (200, 200, 16)
uint8, 0.4 m voxels, layer 0 = the road surface as the released Occ3D-nuScenes labels, 17 = free) for every
keyframe, and ``<out>/occ_gt_info.json`` (the classes the labels can give, the settings and per-keyframe
density statistics), which eval.py reads to say which classes are meaningful. Relative --out paths are resolved
against --dataroot, like --occ_root.

    python -m tools.data.make_occ_gt_nusc --dataroot ../shared/fixtures/nuscenes-scene-0916 --version v1.0-mini \\
        --out $PWD/data/occ_gt_scene-0916
    python eval.py --config configs/fixture-gsv.txt --ckpt CKPT --occ_root $PWD/data/occ_gt_scene-0916 \\
        --eval_occ true --eval_rayiou true
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per worker process
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from datasets.nuscenes_dataset import resolve  # noqa: E402
from datasets.occ_gt import aggregate, labels  # noqa: E402
from datasets.occ_gt.scene import CATEGORY_CLASS, SWEEP_MODES, read_scene, read_tables  # noqa: E402
from datasets.synthetic.writer import save_npz  # noqa: E402
from utils.cli import str2bool  # noqa: E402
from utils.constants import OCC_CLASSES  # noqa: E402
from utils.errors import UserError, message  # noqa: E402

INFO = "occ_gt_info.json"
GROUND_FILL = 1.2  # metres, see labels.fill_ground and docs/occ_gt.md
# classes the labels can give: the box classes, and the two static ones of the ground / non-ground split
BOX_CLASSES = sorted({c for _, c in CATEGORY_CLASS} | {0})
STATIC_CLASSES = (labels.DRIVEABLE, labels.MANMADE)
_JOB = {}


def _keyframe(ki):
    lab, stats = labels.keyframe_labels(_JOB["agg"], _JOB["scene"], ki, ground_fill=_JOB["ground_fill"])
    kf = _JOB["scene"].keyframes[ki]
    folder = os.path.join(_JOB["out"], _JOB["scene"].name, kf.token)
    os.makedirs(folder, exist_ok=True)
    save_npz(os.path.join(folder, "labels.npz"), **lab)
    return ki, stats


def keyframe_window(scene, keys, window):
    """Frame indices of the LiDAR frames within ``window`` keyframes of the keyframes ``keys`` (None: all)."""
    if window is None:
        return None
    bounds = [kf.frame for kf in scene.keyframes] + [len(scene.frames)]
    out = set()
    for k in keys:
        lo, hi = max(0, k - window), min(len(scene.keyframes) - 1, k + window)
        out.update(range(bounds[lo], bounds[hi + 1]))
    return sorted(out)


def make_labels(dataroot, version, out, scenes=None, keyframes=None, sweeps="auto", ground_fill=GROUND_FILL,
                window=None, align=True, workers=1, progress=True, command=None):
    """Write the labels; returns the info dict (also written to ``<out>/occ_gt_info.json``)."""
    t0 = time.time()
    tables = read_tables(dataroot, version)
    records = sorted(tables["scene"].values(), key=lambda s: s["name"])
    if scenes:
        unknown = sorted(set(scenes) - {s["name"] for s in records})
        if unknown:
            raise UserError(f"--scenes {unknown} not in {os.path.join(dataroot, version, 'scene.json')} "
                            f"(it has {[s['name'] for s in records][:10]})")
        records = [s for s in records if s["name"] in scenes]
    info = dict(command=command,
                method="LiDAR aggregated over the scene, boxes re-placed per keyframe (docs/occ_gt.md)",
                dataroot=os.path.abspath(dataroot), version=version, sweeps=sweeps, ground_fill_m=ground_fill,
                window=window, align_heights=align, box_margin_m=aggregate.BOX_MARGIN,
                ego_box=aggregate.EGO_BOX.tolist(),
                classes=[OCC_CLASSES[c] for c in BOX_CLASSES + list(STATIC_CLASSES)],
                box_classes=[OCC_CLASSES[c] for c in BOX_CLASSES],
                static_classes={"driveable_surface": "ground points (height map), every ground type",
                                "manmade": "every other static point (buildings, vegetation, poles, ...)"},
                scenes={})
    os.makedirs(out, exist_ok=True)
    for rec in records:
        t1 = time.time()
        scene = read_scene(tables, dataroot, rec, sweeps)
        keys = list(range(len(scene.keyframes))) if keyframes is None else [k for k in keyframes
                                                                             if k < len(scene.keyframes)]
        bar = (lambda it: tqdm(it, desc=f"{scene.name} LiDAR", unit="frame")) if progress else None
        agg = aggregate.aggregate(scene, keyframe_window(scene, keys, window), align=align, progress=bar)
        t_agg = time.time() - t1
        _JOB.update(agg=agg, scene=scene, out=out, ground_fill=ground_fill)
        stats = [None] * len(scene.keyframes)
        with (mp.get_context("fork").Pool(workers) if workers > 1 else _Serial()) as pool:
            for ki, st in tqdm(pool.imap_unordered(_keyframe, keys), total=len(keys), disable=not progress,
                               desc=f"{scene.name} labels", unit="keyframe"):
                stats[ki] = st
        done = [s for s in stats if s is not None]
        info["scenes"][scene.name] = dict(
            lidar=scene.sweeps_note, frames_aggregated=len(scene.frames) if window is None else
            len(keyframe_window(scene, keys, window)), keyframes=len(done), ego_points_dropped=agg.ego_points,
            seconds_aggregate=round(t_agg, 1), seconds=round(time.time() - t1, 1),
            mean={k: float(np.mean([s[k] for s in done])) for k in done[0]} if done else {},
            per_keyframe={scene.keyframes[i].token: s for i, s in enumerate(stats) if s is not None})
        print(f"[occ_gt] {scene.name}: {len(done)} keyframes from {scene.sweeps_note} in "
              f"{time.time() - t1:.0f} s")
    info["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(out, INFO), "w") as f:
        json.dump(info, f, indent=1)
    return info


class _Serial:
    """Stands in for a process pool with one worker."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataroot", required=True, help="nuScenes-layout root (tables in <dataroot>/<version>/)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-trainval, v1.0-mini")
    p.add_argument("--out", default="occ_gt_lidar",
                   help="output folder <out>/<scene>/<token>/labels.npz (relative: resolved against --dataroot)")
    p.add_argument("--scenes", nargs="*", default=None, help="scene names (default: every scene of the tables)")
    p.add_argument("--keyframes", type=int, nargs="*", default=None,
                   help="indices of the keyframes to label within each scene (default: all)")
    p.add_argument("--sweeps", default="auto", choices=SWEEP_MODES,
                   help="aggregate the LiDAR sweeps between keyframes too: auto = when the tables list them and "
                        "their files exist")
    p.add_argument("--ground_fill", type=float, default=GROUND_FILL,
                   help="densify the ground: columns within this many metres of ground points get a "
                        "driveable_surface voxel at the nearest ground layer (0: off)")
    p.add_argument("--window", type=int, default=None,
                   help="aggregate only the LiDAR within this many keyframes of each labelled keyframe (default: "
                        "the whole scene, as Occ3D)")
    p.add_argument("--align_heights", type=str2bool, default=True,
                   help="give each LiDAR frame the height where its ground meets the previous frames' ground "
                        "(nuScenes ego poses have z = 0; without it sloped scenes stack the ground in layers)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for the keyframes (on a 2-core machine 2 were slower than 1)")
    a = p.parse_args(argv)
    out = resolve(a.dataroot, a.out)
    try:
        info = make_labels(a.dataroot, a.version, out, a.scenes, a.keyframes, a.sweeps, a.ground_fill, a.window,
                           a.align_heights, a.workers, command="python -m tools.data.make_occ_gt_nusc " + " ".join(
                               sys.argv[1:] if argv is None else argv))
    except UserError as e:
        sys.exit(f"error: {message(e)}")
    print(f"wrote labels of {sum(s['keyframes'] for s in info['scenes'].values())} keyframes to {out} in "
          f"{info['seconds']:.0f} s ({os.path.join(out, INFO)})")


if __name__ == "__main__":
    main()
