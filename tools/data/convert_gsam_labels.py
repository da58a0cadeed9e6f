"""Convert the release's Grounded-SAM pseudo-labels (``*_mask.bin``) to this project's PNG layout.

Reads ``<dataroot>/<src>/<image path without .jpg>_mask.bin`` (int8 Grounded-SAM ids, one per pixel of the original
image; their folder is ``nuscenes_semantic``) for the 6 keyframe cameras of every sample (or of a split file), maps
the ids to Occ3D classes as the release does (sky -> 255 ignore here: datasets/pseudo_labels.py says why) and
writes ``<dataroot>/<out>/<sample_token>/<CAM>.png`` (uint8, original size), the files ``--sem_format png`` reads.

    python -m tools.data.convert_gsam_labels --dataroot data/nuscenes --src nuscenes_semantic --out sem
"""
import argparse
import os

from PIL import Image
from tqdm import tqdm

from datasets.nuscenes_dataset import image_hw, load_tables, read_split, resolve, sample_sensor_data
from datasets.pseudo_labels import gsam_path, read_gsam_bin
from utils.constants import CAMS


def convert(dataroot, version, src, out, split=None, overwrite=False):
    """Write the PNG of every camera of every sample; returns the number of files written."""
    src, out = resolve(dataroot, src), resolve(dataroot, out)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"Grounded-SAM folder not found: {src} (the release keeps them in "
                                "<dataroot>/nuscenes_semantic)")
    tables = load_tables(dataroot, version, ("sample", "sample_data", "calibrated_sensor", "sensor"))
    cams = sample_sensor_data(tables, CAMS)
    tokens = read_split(split) if split else sorted(cams)
    written = 0
    for token in tqdm(tokens, desc="convert", dynamic_ncols=True):
        if token not in cams:
            raise ValueError(f"sample {token} (of {split}) has no keyframe camera data in {version}")
        for cam in CAMS:
            path = os.path.join(out, token, cam + ".png")
            if os.path.isfile(path) and not overwrite:
                continue
            sd = cams[token][cam]
            labels = read_gsam_bin(gsam_path(src, sd["filename"]), image_hw(dataroot, sd))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(labels).save(path)
            written += 1
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataroot", required=True, help="nuScenes root (tables in <dataroot>/<version>/)")
    p.add_argument("--version", default="v1.0-trainval", help="table folder")
    p.add_argument("--src", default="nuscenes_semantic", help="folder of the *_mask.bin files (relative to dataroot)")
    p.add_argument("--out", default="sem", help="output folder of <token>/<CAM>.png (relative to dataroot)")
    p.add_argument("--split", default=None, help="convert only the sample tokens of this split file")
    p.add_argument("--overwrite", action="store_true", help="rewrite PNG files that already exist")
    args = p.parse_args(argv)
    n = convert(args.dataroot, args.version, args.src, args.out, args.split, args.overwrite)
    print(f"{n} label files written to {resolve(args.dataroot, args.out)}")


if __name__ == "__main__":
    main()
