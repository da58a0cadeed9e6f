"""Command-line options and config files.

Every option has one definition with a help text: ``python train.py --help`` prints them all, grouped by the
module that owns them. A config file (``--config configs/x.txt``) holds ``key = value`` lines (``#`` starts a
comment, lists are space separated, booleans are true/false); the command line overrides the file. An unknown
key or a value of the wrong type in a file is an error naming the file, the line (and the closest known key); a
bad value on the command line is one line without the usage; a value out of its range (``OPTION_RANGES`` here and
in the modules that own options) is an error naming the option and where it was set.
"""
import argparse
import difflib
import functools
import importlib
import math
import os
import shlex
import sys

from utils.cli import above, at_least, str2bool, within  # noqa: F401  (networks/occ_net.py imports them from here)
from utils.errors import ConfigError

# Modules that own options; each defines ``add_args(parser)``, and may define CHECKPOINT_DEFAULTS (the value an
# option had in effect before it existed, for checkpoints that predate it) and REBUILD_OVERRIDES (values that always
# hold when a model is rebuilt from a checkpoint, e.g. no ImageNet file: the weights come from the checkpoint).
OPTION_MODULES = [
    "datasets.options",
    "networks.occ_net",
    "networks.gsv_model",
    "networks.gsv_loss",
    "networks.gsp_model",
    "networks.gsp_loss",
    "utils.raster_backend",
    "utils.speed",
]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (what is wrong, where the options are listed), not the usage dump."""

    def error(self, message):
        self.exit(2, f"error: {message} (`{self.prog} --help` lists every option)\n")


# Ranges: option -> (test of one value, what it must be). Modules that own options may define OPTION_RANGES too.
OPTION_RANGES = {
    "num_workers": at_least(0), "batch_size": at_least(1), "lr": above(0), "weight_decay": at_least(0),
    "num_epochs": at_least(1), "max_steps": at_least(0), "max_minutes": at_least(0), "color_aug": within(0, 1),
    "lr_warmup": at_least(0), "lr_milestones": within(0, 1), "grad_clip": at_least(0), "log_every": at_least(1),
    "image_every": at_least(0), "save_every": at_least(1), "val_every": at_least(-1), "max_nan_skips": at_least(0),
    "min_depth_eval": above(0), "max_depth_eval": above(0), "eval_max_samples": at_least(0),
}
# Rules over several values: (option, test of the whole options, what it must be).
RULES = [
    ("max_depth_eval", lambda o: o.min_depth_eval < o.max_depth_eval, "above --min_depth_eval"),
    ("real_size", lambda o: all(o.real_size[i] < o.real_size[i + 1] for i in (0, 2, 4)),
     "XMIN XMAX YMIN YMAX ZMIN ZMAX with each minimum below its maximum"),
    ("input_size", lambda o: o.stage != "gsp" or min(o.input_size) > 32,
     "above 32 (each value) for stage 1: its encoders downsample 32 times"),
    ("w_sky", lambda o: o.w_sky <= 0 or o.use_sem, "0 unless --use_sem true (it reads the sky of the 2D labels)"),
    ("ground_mode", lambda o: o.ground_mode == "hinge" or o.use_sem,
     "hinge unless --use_sem true (road and road_hinge read the road's pixels from the 2D labels)"),
    ("ground_scale_only", lambda o: not (o.ground_scale_only and o.ground_shape_only),
     "false with --ground_shape_only true (one detaches the scale, the other the shape: nothing would be left)"),
    ("w_extra_sem", lambda o: o.w_extra_sem <= 0 or (o.w_extra_views > 0 and o.use_sem),
     "0 unless --w_extra_views > 0 and --use_sem true (it scores the previous / next frame's rendered semantics)"),
]
# The evaluation protocol: eval.py uses their defaults unless its own command line (or --config) sets them, whatever
# the evaluated run was trained (and validated) with.
PROTOCOL_OPTIONS = ("occ_eval_mask", "rayiou_origins")


def add_base_args(p):
    g = p.add_argument_group("run")
    g.add_argument("--config", type=str, metavar="PATH", default=None, help="config file of `key = value` lines (see configs/)")
    g.add_argument("--stage", type=str, default="gsv", choices=["gsp", "gsv"],
                   help="gsp: stage 1 (depth + metric-scale pose, no GT pose); gsv: stage 2 (voxel Gaussians)")
    g.add_argument("--exp_name", type=str, default="debug", help="run name; outputs go to <log_dir>/<exp_name>")
    g.add_argument("--log_dir", type=str, metavar="PATH", default="logs", help="root folder of runs (checkpoints, tensorboard)")
    g.add_argument("--device", type=str, default="auto",
                   help="auto, cpu, cuda or cuda:N (one process); under torchrun process i takes GPU LOCAL_RANK i "
                        "of CUDA_VISIBLE_DEVICES")
    g.add_argument("--share_gpu", type=str2bool, default=False,
                   help="under torchrun, more processes than GPUs: process i on GPU i mod the GPUs seen, gloo "
                        "instead of NCCL, no SyncBatchNorm (to exercise the multi-process path on one GPU, not faster)")
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
                   help="fractions of the total steps at which the lr is divided by 10; with --max_minutes also of the "
                        "minutes (whichever comes first), so a run the clock ends still gets its decay")
    g.add_argument("--grad_clip", type=float, default=5.0, help="clip gradient norm (0 = off)")
    g.add_argument("--amp", type=str, default="none", choices=["none", "bf16", "fp16"],
                   help="automatic mixed precision (CUDA only)")
    g.add_argument("--log_every", type=int, default=20, help="scalar logging period, steps")
    g.add_argument("--image_every", type=int, default=200, help="image logging period, steps (0 = never)")
    g.add_argument("--save_every", type=int, default=500, help="checkpoint period, steps (also at epoch end)")
    g.add_argument("--val_every", type=int, default=0,
                   help="validation period, steps (0 = at the end only, -1 = never)")
    g.add_argument("--resume", type=str2bool, default=True,
                   help="resume from <run>/ckpt/last.pt when it exists")
    g.add_argument("--load_weights", type=str, metavar="PATH", default=None, help="initialise model weights from a checkpoint")
    g.add_argument("--max_nan_skips", type=int, default=20,
                   help="non-finite losses in a row that are skipped before training stops with an error")
    g.add_argument("--sync_bn", type=str2bool, default=True,
                   help="under DDP on GPUs, BatchNorm statistics over the batch of all processes (SyncBatchNorm)")

    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_depth", type=str2bool, default=True,
                   help="depth metrics against LiDAR (false: the loader reads no LiDAR depth at all)")
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
    g.add_argument("--ckpt", type=str, metavar="PATH", default=None, help="checkpoint to evaluate / visualise")
    g.add_argument("--out_dir", type=str, metavar="PATH", default=None, help="where eval/vis write their files")
    g.add_argument("--save_pred", type=str, metavar="DIR", default=None,
                   help="eval, stage 2: also write each evaluated sample's predicted volume to DIR/<token>.npz "
                        "(opacity, semantic argmax, read-out; utils/pred_io.py) for tools/diagnostics/occ_errors.py")


def build_parser(description="GaussianOcc"):
    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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


TYPE_NAMES = {int: "an integer", float: "a number", str2bool: "true or false"}


def _check_values(action, tokens):
    """Why the value tokens of one config line do not fit ``action`` (count, type, choices), or None."""
    n = action.nargs
    counts = {None: (1, 1), "?": (0, 1), "*": (0, math.inf), "+": (1, math.inf)}
    lo, hi = counts.get(n, (n, n)) if not isinstance(n, int) else (n, n)
    if not lo <= len(tokens) <= hi:
        return f"expected {'a value' if hi == 1 else f'{lo} values' if lo == hi else 'values'}, got {len(tokens)}"
    for t in tokens:
        try:
            v = action.type(t) if action.type else t
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            return f"expected {TYPE_NAMES.get(action.type, action.type.__name__)}, got {t!r}"
        if action.choices is not None and v not in action.choices:
            return f"expected one of {', '.join(map(str, action.choices))}, got {t!r}"
    return None


def read_config(path, parser, origins=None):
    """Turn a config file into argv tokens, checking every key and value; ``origins`` (a dict) receives
    ``{key: "path:line"}``."""
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
            if origins is not None:
                origins[key] = f"{path}:{lineno}"
            argv.append("--" + key)
            if keys[key].nargs == 0:  # store_true style flags
                try:
                    if not str2bool(val):
                        argv.pop()
                except argparse.ArgumentTypeError as e:
                    raise ConfigError(f"{path}:{lineno}: {key} = {val}: {e}") from None
                continue
            try:
                tokens = shlex.split(val)
            except ValueError as e:
                raise ConfigError(f"{path}:{lineno}: {key} = {val}: {e}") from None
            bad = _check_values(keys[key], tokens)
            if bad:
                raise ConfigError(f"{path}:{lineno}: {key} = {val}: {bad}")
            argv.extend(tokens)
    return argv


def option_ranges():
    """Every option's range: this module's OPTION_RANGES and those of the OPTION_MODULES."""
    ranges = dict(OPTION_RANGES)
    for name in OPTION_MODULES:
        ranges.update(getattr(importlib.import_module(name), "OPTION_RANGES", {}))
    return ranges


def _where(key, origins, cli):
    if any(t == f"--{key}" or t.startswith(f"--{key}=") for t in cli) or key not in origins:
        return "on the command line"
    return f"in {origins[key]}"


def check_ranges(opt, origins=None, cli=()):
    """ConfigError for the first option whose value is out of its range or not finite, naming the option, its
    value and where it was set (the config file and line, or the command line)."""
    origins = origins or {}
    for key, (ok, must) in option_ranges().items():
        value = getattr(opt, key, None)
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and ok(v) for v in values):
            shown = " ".join(map(str, values))
            each = "each value " if isinstance(value, (list, tuple)) else ""
            raise ConfigError(f"--{key} {shown} {_where(key, origins, cli)}: {each}must be {must}")
    for key, ok, must in RULES:
        try:
            good = ok(opt)
        except (AttributeError, TypeError):  # a parser without that option (tools with their own parsers)
            continue
        if not good:
            value = getattr(opt, key)
            shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            raise ConfigError(f"--{key} {shown} {_where(key, origins, cli)}: must be {must}")


def parse_args(argv=None, description="GaussianOcc"):
    """Options of the command line ``argv`` (default sys.argv) over those of its --config file, checked."""
    parser = build_parser(description)
    cli = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(cli)
    origins = {}
    cfg_argv = read_config(pre.config, parser, origins) if pre.config else []
    # config first, command line second: later tokens win in argparse.
    opt = parser.parse_args(cfg_argv + cli)
    check_ranges(opt, origins, cli)
    return opt


@functools.lru_cache(maxsize=None)
def path_options():
    """The options that name a file or folder of the run (``metavar="PATH"``: data, splits, checkpoints, logs)."""
    return frozenset(a.dest for a in build_parser()._actions if a.metavar == "PATH")


def checkpoint_options(opt):
    """What a checkpoint keeps of the options ``opt`` (a dict): every option but the run's paths
    (``path_options``), so that the checkpoint rebuilds its model anywhere; eval.py and tools/visualize.py take the
    data paths from their own command line or --config."""
    return {k: v for k, v in vars(opt).items() if k not in path_options()}


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
    parser = build_parser()
    cli = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(cli)
    cfg_argv = read_config(pre.config, parser) if pre.config else []
    for a in parser._actions:
        a.default = argparse.SUPPRESS
    return vars(parser.parse_args(cfg_argv + cli))


def merge_checkpoint_options(saved, argv=None, fresh=()):
    """Options of a saved run (the model it was trained with), overridden by what this command sets explicitly.

    Options that did not exist when the checkpoint was written take the value they had in effect before
    (a module's CHECKPOINT_DEFAULTS), else their current defaults; options in ``fresh`` take their defaults
    whatever the run had (eval.py: the evaluation protocol, ``PROTOCOL_OPTIONS``). A module's REBUILD_OVERRIDES
    apply last (e.g. no ImageNet file is read, even when the config names one: the weights come from the
    checkpoint).
    """
    opt = build_parser().parse_args([])
    known = vars(opt)
    modules = [importlib.import_module(name) for name in OPTION_MODULES]
    for m in modules:
        for k, v in getattr(m, "CHECKPOINT_DEFAULTS", {}).items():
            setattr(opt, k, v)
    for k, v in saved.items():
        if k in known and k not in fresh:
            setattr(opt, k, v)
    for k, v in explicit_options(argv).items():
        setattr(opt, k, v)
    for m in modules:
        for k, v in getattr(m, "REBUILD_OVERRIDES", {}).items():
            setattr(opt, k, v)
    return opt
