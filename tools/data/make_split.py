"""Write train / val split files (sample tokens, one per line) from scene names.

Default: nuscenes-devkit's official scene lists (train / val for v1.0-trainval, mini_train / mini_val for
v1.0-mini, or the "train" / "val" lists of a custom ``<dataroot>/<version>/splits.json``). ``--val_fraction``
makes a custom split instead: the last scenes (in name order) go to val; with a single scene, the last samples.
``--train_min_motion M`` drops static training samples: those whose CAM_FRONT moved less than M metres (ego pose
translation) to its previous or to its next image (a missing neighbour counts as no motion).

The authors' lists (their datasets/nusc/{train,val}.txt, taken unchanged from SurroundDepth): val.txt has the
6019 samples of the official val scenes (the official split gives exactly these); train.txt has 20096 of the
28130 official train samples, "static frames filtered out: translation to the previous or the next frame below
0.1 m" (SurroundDepth's authors). ``--train_min_motion 0.1`` applies that rule as described; that it gives their
20096 samples has not been checked (needs the v1.0-trainval tables):

    python -m tools.data.make_split --dataroot data/nuscenes --version v1.0-trainval
    python -m tools.data.make_split --dataroot data/nuscenes --version v1.0-trainval --name gaussianocc --train_min_motion 0.1
    python -m tools.data.make_split --dataroot data/synthetic --version v1.0-synthetic --val_fraction 0.2
"""
import argparse
import json
import math
import os

from datasets.nuscenes_dataset import get, load_tables, sample_sensor_data, scene_samples
from tools import REPO

OFFICIAL = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val")}


def official_scenes(dataroot, version):
    """(train scene names, val scene names) of the devkit's split for this version."""
    if version in OFFICIAL:
        from nuscenes.utils.splits import create_splits_scenes
        splits = create_splits_scenes()
        return tuple(splits[name] for name in OFFICIAL[version])
    path = os.path.join(dataroot, version, "splits.json")
    if not os.path.isfile(path):
        raise ValueError(f"no official split for version {version} (known: {sorted(OFFICIAL)}) and no {path}; "
                         "pass --val_fraction for a custom split")
    with open(path) as f:
        splits = json.load(f)
    missing = [k for k in ("train", "val") if k not in splits]
    if missing:
        raise ValueError(f"{path} has no {missing} list of scene names")
    return splits["train"], splits["val"]


def split_samples(samples, scenes=None, val_fraction=None, official=None):
    """Divide ``[(token, scene)]`` into (train tokens, val tokens).

    scenes: keep only these scene names; val_fraction: custom split (see module doc); official: (train scene
    names, val scene names), used when val_fraction is None.
    """
    present = sorted({s for _, s in samples})
    if scenes is not None:
        unknown = sorted(set(scenes) - set(present))
        if unknown:
            more = ", ..." if len(present) > 10 else ""
            raise ValueError(f"scenes not in the tables: {unknown} (present: {', '.join(present[:10])}{more})")
        present = sorted(set(scenes))
        samples = [(t, s) for t, s in samples if s in scenes]
    if val_fraction is None:  # in the order of the official scene lists, time order within a scene
        lists = [{s: i for i, s in enumerate(names)} for names in official]
        return tuple([t for t, s in sorted((ts for ts in samples if ts[1] in rank), key=lambda ts: rank[ts[1]])]
                     for rank in lists)
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"--val_fraction must be in [0, 1], got {val_fraction}")
    if len(present) == 1:
        n_val = math.ceil(val_fraction * len(samples))
        return [t for t, _ in samples[:len(samples) - n_val]], [t for t, _ in samples[len(samples) - n_val:]]
    val_scenes = set(present[len(present) - math.ceil(val_fraction * len(present)):])
    return [t for t, s in samples if s not in val_scenes], [t for t, s in samples if s in val_scenes]


def camera_motion(tables, tokens, channel="CAM_FRONT"):
    """``{token: (metres to the previous image, metres to the next image)}`` of ``channel``'s ego poses (the
    directly adjacent sample_data: a sweep where the tables have them); 0 where there is no neighbour."""
    data = sample_sensor_data(tables, (channel,))
    out = {}
    for t in tokens:
        if channel not in data.get(t, {}):
            raise ValueError(f"sample {t} has no keyframe {channel} sample_data")
        sd = data[t][channel]
        here = get(tables, "ego_pose", sd["ego_pose_token"], f"sample_data {sd['token']}")["translation"]
        moved = []
        for direction in ("prev", "next"):
            if not sd[direction]:
                moved.append(0.0)
                continue
            nb = get(tables, "sample_data", sd[direction], f"sample_data {sd['token']}.{direction}")
            there = get(tables, "ego_pose", nb["ego_pose_token"], f"sample_data {nb['token']}")["translation"]
            moved.append(float(sum((a - b) ** 2 for a, b in zip(here, there)) ** 0.5))
        out[t] = tuple(moved)
    return out


def drop_static(tables, tokens, min_motion):
    """``tokens`` without the samples whose CAM_FRONT moved less than ``min_motion`` m to either neighbour."""
    motion = camera_motion(tables, tokens)
    return [t for t in tokens if min(motion[t]) >= min_motion]


def write_tokens(path, tokens, header):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# {header}\n")
        f.writelines(t + "\n" for t in tokens)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True, help="nuScenes root (tables in <dataroot>/<version>/)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder, e.g. v1.0-trainval, v1.0-mini")
    p.add_argument("--scenes", nargs="+", default=None, help="use only these scene names (default: all)")
    p.add_argument("--val_fraction", type=float, default=None,
                   help="custom split: fraction of the scenes (of the samples, for one scene) that go to val")
    p.add_argument("--train_min_motion", type=float, default=None,
                   help="drop training samples whose CAM_FRONT moved less than this (m) to its previous or next "
                        "image (SurroundDepth's rule behind the authors' train list: 0.1)")
    p.add_argument("--out_dir", default=os.path.join(REPO, "datasets", "splits"), help="where the split files go")
    p.add_argument("--name", default=None, help="file prefix: <out_dir>/<name>_train.txt (default: the version)")
    args = p.parse_args(argv)

    names = ("scene", "sample") if args.train_min_motion is None else \
        ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor")
    tables = load_tables(args.dataroot, args.version, names)
    samples = scene_samples(tables)
    official = None if args.val_fraction is not None else official_scenes(args.dataroot, args.version)
    train, val = split_samples(samples, args.scenes, args.val_fraction, official)
    how = f"val_fraction {args.val_fraction}" if args.val_fraction is not None else "official scene lists"
    left = sum(1 for _, s in samples if args.scenes is None or s in args.scenes) - len(train) - len(val)
    if args.train_min_motion is not None:
        kept = drop_static(tables, train, args.train_min_motion)
        print(f"train: {len(train) - len(kept)} static samples dropped (CAM_FRONT motion < "
              f"{args.train_min_motion} m to a neighbour)")
        train, how = kept, how + f", train_min_motion {args.train_min_motion}"
    for split, tokens in (("train", train), ("val", val)):
        path = os.path.join(args.out_dir, f"{args.name or args.version}_{split}.txt")
        write_tokens(path, tokens, f"{split} samples of {args.version} ({how}), tools/data/make_split.py")
        print(f"{split}: {len(tokens)} samples -> {path}")
    if left:
        print(f"left out: {left} samples of scenes in neither list")


if __name__ == "__main__":
    main()
