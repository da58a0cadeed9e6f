"""Write train / val split files (sample tokens, one per line) from scene names.

Default: nuscenes-devkit's official scene lists (train / val for v1.0-trainval, mini_train / mini_val for
v1.0-mini, or the "train" / "val" lists of a custom ``<dataroot>/<version>/splits.json``). ``--val_fraction``
makes a custom split instead: the last scenes (in name order) go to val; with a single scene, the last samples.

    python tools/make_split.py --dataroot data/nuscenes --version v1.0-trainval
    python tools/make_split.py --dataroot data/synthetic --version v1.0-synthetic --val_fraction 0.2
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from datasets.nuscenes_dataset import load_tables, scene_samples  # noqa: E402

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
    if val_fraction is None:
        train, val = set(official[0]), set(official[1])
        return [t for t, s in samples if s in train], [t for t, s in samples if s in val]
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"--val_fraction must be in [0, 1], got {val_fraction}")
    if len(present) == 1:
        n_val = math.ceil(val_fraction * len(samples))
        return [t for t, _ in samples[:len(samples) - n_val]], [t for t, _ in samples[len(samples) - n_val:]]
    val_scenes = set(present[len(present) - math.ceil(val_fraction * len(present)):])
    return [t for t, s in samples if s not in val_scenes], [t for t, s in samples if s in val_scenes]


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
    p.add_argument("--out_dir", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "datasets", "splits"), help="where the split files go")
    p.add_argument("--name", default=None, help="file prefix: <out_dir>/<name>_train.txt (default: the version)")
    args = p.parse_args(argv)

    samples = scene_samples(load_tables(args.dataroot, args.version, ("scene", "sample")))
    official = None if args.val_fraction is not None else official_scenes(args.dataroot, args.version)
    train, val = split_samples(samples, args.scenes, args.val_fraction, official)
    how = f"val_fraction {args.val_fraction}" if args.val_fraction is not None else "official scene lists"
    for split, tokens in (("train", train), ("val", val)):
        path = os.path.join(args.out_dir, f"{args.name or args.version}_{split}.txt")
        write_tokens(path, tokens, f"{split} samples of {args.version} ({how}), tools/make_split.py")
        print(f"{split}: {len(tokens)} samples -> {path}")
    left = sum(1 for _, s in samples if args.scenes is None or s in args.scenes) - len(train) - len(val)
    if left:
        print(f"left out: {left} samples of scenes in neither list")


if __name__ == "__main__":
    main()
