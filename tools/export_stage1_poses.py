"""The stage-1 ego motion of every stage-2 training sample, predicted once by the frozen stage-1 net, into one file.

    python -m tools.export_stage1_poses --config configs/synthetic-gsv.txt \
        --stage1_ckpt logs/synthetic-gsp-refine/ckpt/last.pt --out logs/stage1_poses.pt [--splits train val]
    python train.py --config configs/synthetic-gsv.txt --pose stage1 --stage1_poses logs/stage1_poses.pt

Takes train.py's options of the stage-2 run (its data, input size, neighbours, --amp) and runs the pose source of
``--pose stage1`` (networks/pose_source.Stage1Poses) over each split's samples as the trainer feeds them (uint8
images made float on the device, no colour augmentation, under the run's autocast), so the file holds the motion
stage 2 would compute itself. Why: stage 2 then needs neither the stage-1 checkpoint (51 MB of pose net, more with
the depth net) nor the stage-1 model in memory, and a stage-2 run on another machine needs only this small file
(tools/run_benchmarks.sh gpu-default-s2 carries it from one device call to the next). A random --frame_stride
(other neighbours at every step) is refused.

Samples go through in batches of --export_batch (default 8; the run's own --batch_size is for training): the motion
by image alignment (--gsp_pose net_solve) is ~110 small Adam steps per solve, bound by kernel launches, so a batch of
8 costs about what one sample does (measured on one H200: 1 s per sample at batch 1, 72 samples took 75 s and ran
past a device call's deadline). Each sample's motion is its own (the solve's parameters and error are per sample).
"""
import argparse
import sys

import torch
from tqdm import tqdm

from datasets import EVAL_ONLY_KEYS, build_dataset, collate
from networks.pose_source import Stage1Poses, save_stage1_poses
from options import parse_args
from rebuild import load_stage1
from utils.batch import to_device
from utils.errors import UserError, message


def export(opt, splits, out, device=None, progress=True, batch_size=8):
    """{token: (2, 4, 4)} of every sample of ``splits`` (near neighbours under ``<token>#near``), written to ``out``."""
    if opt.stage != "gsv" or opt.pose != "stage1" or not opt.stage1_ckpt:
        raise UserError("export_stage1_poses needs stage-2 options with --pose stage1 --stage1_ckpt PATH")
    if len(set(opt.frame_stride)) > 1:
        raise UserError(f"--frame_stride {opt.frame_stride}: a random stride gives each sample other neighbours at "
                        "every step; a poses file holds one motion per sample")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() and opt.device != "cpu" else "cpu"))
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp) if device.type == "cuda" else None
    source = Stage1Poses(opt.stage1_ckpt, load_stage1, cache=True)
    for split in splits:
        dataset = build_dataset(opt, split, eval_labels=False, uint8_images=True)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=opt.num_workers,
                                             collate_fn=collate, shuffle=False)
        for batch in tqdm(loader, desc=f"stage-1 motion, {split}", disable=not progress):
            batch = to_device(batch, device, skip=EVAL_ONLY_KEYS)
            if batch.get("token") is None:
                raise UserError(f"the {split} samples carry no sample token: a poses file cannot name them")
            with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                source(batch)
    save_stage1_poses(out, source.cache, opt, opt.stage1_ckpt)
    return source.cache


def main(argv=None):
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", required=True, help="the poses file to write")
    p.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val"],
                   help="whose samples (stage 2 trains on train; val only when it validates with a temporal loss)")
    p.add_argument("--export_batch", type=int, default=8, help="samples per batch (see the module docstring)")
    own, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        if own.export_batch < 1:
            raise UserError(f"--export_batch {own.export_batch}: needs at least 1")
        poses = export(parse_args(rest), own.splits, own.out, batch_size=own.export_batch)
    except (UserError, ValueError) as e:
        sys.exit(f"error: {message(e)}")
    print(f"stage-1 motion of {len(poses)} samples ({', '.join(own.splits)}) written to {own.out}")


if __name__ == "__main__":
    main()
