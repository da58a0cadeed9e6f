"""Command-line options and config files.

Every option has one definition with a help text: ``python train.py --help`` prints them all, grouped by the
module that owns them. A config file (``--config configs/x.txt``) holds ``key = value`` lines (``#`` starts a
comment, lists are space separated, booleans are true/false); the command line overrides the file. An unknown
key in a file is an error naming the file, the line and the closest known key.
"""
import argparse
import difflib
import importlib
import os
import shlex

from utils.errors import UserError

# Modules that own options; each defines ``add_args(parser)``, and may define CHECKPOINT_DEFAULTS (the value an
# option had in effect before it existed, for checkpoints that predate it) and REBUILD_OVERRIDES (values that always
# hold when a model is rebuilt from a checkpoint, e.g. no ImageNet file: the weights come from the checkpoint).
OPTION_MODULES = [
    "datasets.options",
    "networks.occ_net",
    "networks.gsv_model",
    "networks.gsv_loss",
    "networks.gsp_model",
    "utils.raster_backend",
    "utils.speed",
]


def str2bool(v):
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


class ConfigError(UserError, ValueError):
    """A bad option or config file (train.py / eval.py print it without a traceback)."""


def add_base_args(p):
    g = p.add_argument_group("run")
    g.add_argument("--config", type=str, default=None, help="config file of `key = value` lines (see configs/)")
    g.add_argument("--stage", type=str, default="gsv", choices=["gsp", "gsv"],
                   help="gsp: stage 1 (depth + metric-scale pose, no GT pose); gsv: stage 2 (voxel Gaussians)")
    g.add_argument("--exp_name", type=str, default="debug", help="run name; outputs go to <log_dir>/<exp_name>")
    g.add_argument("--log_dir", type=str, default="logs", help="root folder of runs (checkpoints, tensorboard)")
    g.add_argument("--device", type=str, default="auto",
                   help="auto, cpu, cuda or cuda:N (one process); under torchrun process i takes GPU LOCAL_RANK i "
                        "of CUDA_VISIBLE_DEVICES")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--num_workers", type=int, default=2, help="data loader workers per process")

    g = p.add_argument_group("training")
    g.add_argument("--batch_size", type=int, default=1, help="samples (of 6 cameras each) per process")
    g.add_argument("--lr", type=float, default=1e-4, help="learning rate (AdamW)")
    g.add_argument("--weight_decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--num_epochs", type=int, default=1, help="epochs; training stops at whichever of "
                   "num_epochs / max_steps comes first")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many optimiser steps (0 = no limit)")
    g.add_argument("--max_minutes", type=float, default=0.0, help="stop (with a checkpoint) after this many "
                   "minutes of training (0 = no limit)")
    g.add_argument("--color_aug", type=float, default=0.5,
                   help="probability of a colour jitter (brightness, contrast, saturation 0.2, hue 0.1; one per "
                        "sample) of the networks' input images in training; the losses see the originals "
                        "(monodepth2's and the authors' augmentation; 0 = off)")
    g.add_argument("--lr_warmup", type=int, default=300,
                   help="linear learning-rate warm-up over this many first steps (0 = off): the first Adam steps "
                        "otherwise throw the stage-1 motion far out, where the auto-masked loss has no gradient")
    g.add_argument("--lr_milestones", type=float, nargs="*", default=[0.8],
                   help="fractions of the total steps at which the lr is divided by 10")
    g.add_argument("--grad_clip", type=float, default=5.0, help="clip gradient norm (0 = off)")
    g.add_argument("--amp", type=str, default="none", choices=["none", "bf16", "fp16"],
                   help="automatic mixed precision (CUDA only)")
    g.add_argument("--log_every", type=int, default=20, help="scalar logging period, steps")
    g.add_argument("--image_every", type=int, default=200, help="image logging period, steps (0 = never)")
    g.add_argument("--save_every", type=int, default=500, help="checkpoint period, steps (also at epoch end)")
    g.add_argument("--val_every", type=int, default=0, help="validation period, steps (0 = at the end only)")
    g.add_argument("--resume", type=str2bool, default=True,
                   help="resume from <run>/ckpt/last.pt when it exists")
    g.add_argument("--load_weights", type=str, default=None, help="initialise model weights from a checkpoint")
    g.add_argument("--max_nan_skips", type=int, default=20,
                   help="non-finite losses in a row that are skipped before training stops with an error")
    g.add_argument("--sync_bn", type=str2bool, default=True,
                   help="under DDP on GPUs, BatchNorm statistics over the batch of all processes (SyncBatchNorm)")

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_depth", type=str2bool, default=True, help="depth metrics against LiDAR")
    g.add_argument("--eval_occ", type=str2bool, default=True, help="occupancy metrics against Occ3D labels")
    g.add_argument("--occ_eval_mask", type=str, default="camera_lidar", choices=["camera_lidar", "camera", "none"],
                   help="voxels scored by mIoU / IoU: camera_lidar = mask_camera AND mask_lidar (the authors' "
                        "protocol on Occ3D-nuScenes), camera = mask_camera only (Occ3D's own script), none = all")
    g.add_argument("--eval_rayiou", type=str2bool, default=True, help="also RayIoU (slower)")
    g.add_argument("--rayiou_origins", type=str, default="scene", choices=["scene", "fixed"],
                   help="RayIoU ray origins: scene = SparseOcc's (LiDAR positions of up to 8 keyframes of the "
                        "sample's scene in the current ego frame, |x|,|y| < 39 m; needs LIDAR_TOP in the tables); "
                        "fixed = one nuScenes LiDAR position (0.94, 0, 1.84) m for every sample")
    g.add_argument("--eval_pose", type=str2bool, default=True, help="stage 1: pose against recorded ego poses")
    g.add_argument("--min_depth_eval", type=float, default=0.1, help="depth eval range, metres (low)")
    g.add_argument("--max_depth_eval", type=float, default=80.0, help="depth eval range, metres (high; 200 on DDAD)")
    g.add_argument("--eval_max_samples", type=int, default=0, help="evaluate at most this many samples (0 = all)")
    g.add_argument("--ckpt", type=str, default=None, help="checkpoint to evaluate / visualise")
    g.add_argument("--out_dir", type=str, default=None, help="where eval/vis write their files")


def build_parser(description="GaussianOcc"):
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_base_args(p)
    for name in OPTION_MODULES:
        importlib.import_module(name).add_args(p)
    return p


def _known_keys(parser):
    keys = {}
    for a in parser._actions:
        for s in a.option_strings:
            if s.startswith("--"):
                keys[s[2:]] = a
    return keys


def read_config(path, parser):
    """Turn a config file into argv tokens, checking every key."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    keys = _known_keys(parser)
    argv = []
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if "=" not in line:
                raise ConfigError(f"{path}:{lineno}: expected `key = value`, got {raw.strip()!r}")
            key, val = (s.strip() for s in line.split("=", 1))
            if key == "config":
                raise ConfigError(f"{path}:{lineno}: a config file cannot name another config")
            if key not in keys:
                close = difflib.get_close_matches(key, list(keys), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{path}:{lineno}: unknown option '{key}'{hint}")
            argv.append("--" + key)
            if keys[key].nargs == 0:  # store_true style flags
                if not str2bool(val):
                    argv.pop()
            else:
                argv.extend(shlex.split(val))
    return argv


def parse_args(argv=None, description="GaussianOcc"):
    parser = build_parser(description)
    pre, _ = parser.parse_known_args(argv)
    cfg_argv = read_config(pre.config, parser) if pre.config else []
    # config first, command line second: later tokens win in argparse.
    import sys
    cli = list(sys.argv[1:] if argv is None else argv)
    opt = parser.parse_args(cfg_argv + cli)
    return opt


def dump_options(opt, path):
    """Write the resolved options as a config file that reproduces the run."""
    with open(path, "w") as f:
        for k, v in sorted(vars(opt).items()):
            if k == "config" or v is None:
                continue
            if isinstance(v, (list, tuple)):
                v = " ".join(str(x) for x in v)
            f.write(f"{k} = {v}\n")


def explicit_options(argv=None):
    """The options set explicitly by the command line or its config file (not by defaults), as a dict."""
    import sys
    parser = build_parser()
    cli = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(cli)
    cfg_argv = read_config(pre.config, parser) if pre.config else []
    for a in parser._actions:
        a.default = argparse.SUPPRESS
    return vars(parser.parse_args(cfg_argv + cli))


def merge_checkpoint_options(saved, argv=None):
    """Options of a saved run (the model it was trained with), overridden by what this command sets explicitly.

    Options that did not exist when the checkpoint was written take the value they had in effect before
    (a module's CHECKPOINT_DEFAULTS), else their current defaults. A module's REBUILD_OVERRIDES apply last (e.g.
    no ImageNet file is read, even when the config names one: the weights come from the checkpoint).
    """
    opt = build_parser().parse_args([])
    known = vars(opt)
    modules = [importlib.import_module(name) for name in OPTION_MODULES]
    for m in modules:
        for k, v in getattr(m, "CHECKPOINT_DEFAULTS", {}).items():
            setattr(opt, k, v)
    for k, v in saved.items():
        if k in known:
            setattr(opt, k, v)
    for k, v in explicit_options(argv).items():
        setattr(opt, k, v)
    for m in modules:
        for k, v in getattr(m, "REBUILD_OVERRIDES", {}).items():
            setattr(opt, k, v)
    return opt
