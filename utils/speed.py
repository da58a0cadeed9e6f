"""Speed settings of the training step that leave the results as they are (options of the "speed" group).

* ``cudnn_benchmark``: cuDNN times its convolution algorithms once per input shape and keeps the fastest (the
  shapes are fixed in this project, so the first steps pay for it once); the default heuristic can be far off
  for the 3D decoder's convolutions at 300x300x24.
* ``channels_last``: the 2D ResNet encoders keep their activations NHWC, the layout tensor cores read directly.
  Not the stage-1 pose net, whose fusion reshapes its features with ``view`` (needs the default layout).
* ``compile``: ``torch.compile`` on each trainable sub-network (off by default: compile time, and a gain that
  has to be measured first; ``tools/bench_render.py --step_compare`` does).
These three act on CUDA only; on the CPU the model is returned untouched.

Stage-2 speed options (each a default only once ``tools/bench_render.py --speed_compare`` has measured it faster on
a GPU and, where it rounds differently, the occupancy benchmark no worse; each computes the same function as the old
path, tests/test_speed_options.py and tests/test_norm_kernels.py compare values and gradients):
* ``channels_last_3d`` (CUDA only): the 3D CNN's weights and its input volume NDHWC, so cuDNN's convolutions need
  no layout transposes and batch norm takes PyTorch's channels-last kernels (the contiguous ones reduce each
  channel in one thread block);
* ``group_norm_impl parallel``: the residual decoder's group norms through whole-GPU reductions
  (networks/fast_norm.py); ``gemm``: the same with their sums as matrix products, and ``batch_norm_impl gemm`` the
  authors' batch norms so (measured slower); ``fused`` (both): each statistic pass and each elementwise pass one
  Triton kernel (networks/norm_kernels.py; the torch operators of ``parallel`` where Triton cannot run);
* ``lift_impl gather``: the lifting as one weighted gather, channels-last (networks/lift_gather.py);
  ``lift_dtype features``: that gather and its volume in the features' dtype (bf16 under autocast);
* ``split_lift_conv``: this project's 3D CNN gets the 64 lifted feature channels and the visibility channel as two
  volumes, its first convolution the sum of one over each (cuDNN's kernels for 65 input channels are twice as slow
  as for 64; networks/occ_net.py ``SplitConv3d``);
* ``raster_zsq moments``: sum_i w_i z_i^2 of the depth-spread term from 9 moment channels shared by the cameras
  instead of per-camera copies of every feature (utils/rasterizer.py);
* ``gsplat_packed``, ``gsplat_tile_size``: gsplat's own options (the same render);
* ``graph_encoder``, ``graph_volume``, ``graph_loss``: stage 2's image encoder, its 3D CNN and its loss terms as CUDA
  graphs in training (``graph_volume auto``: on for the authors' hourglass only, ``option_on``; ``graph_loss`` off until
  measured, networks/loss_graph.py);
* ``fused_optimizer``: AdamW's fused CUDA kernel (``make_optimizer``);
* ``ssim_pool_impl fused``: the SSIM's 3x3 means as one Triton kernel a pass (utils/pool_kernels.py), in
  avg_pool2d's order of sums (the same numbers on CUDA);
* ``compile_loss``: the photometric error and the smoothness through torch.compile (utils/losses.py
  ``compile_losses``; 5-6 % faster a step on an H100 with the benchmark's weights frozen; ``auto``: on for stage 2,
  whose occupancy at equal steps it leaves as it is, off for stage 1, ``option_on``).
"""
import argparse

import torch

from utils.cli import str2bool

GROUP_NORM_IMPLS = ("torch", "parallel", "gemm", "fused")  # --group_norm_impl: networks/fast_norm.py implements them
BATCH_NORM_IMPLS = ("torch", "gemm", "fused")  # --batch_norm_impl: the same
STAGE_PREFIX = "stage::"


def stage(name):
    """A named range of the training step (``with stage("3D CNN"): ...``): tools/bench/profile.py attributes the
    device time, the host time and the kernel launches of everything inside it, and of its backward, to ``name``.
    Outside a profiler it costs one dispatcher call (~2 us)."""
    return torch.profiler.record_function(STAGE_PREFIX + name)


def add_args(parser):
    g = parser.add_argument_group("speed", "training-step speed on CUDA, results unchanged (utils/speed.py); the "
                                  "defaults are the fastest measured (docs/speed.md), the old path is "
                                  "--channels_last_3d false --group_norm_impl torch --batch_norm_impl torch "
                                  "--lift_impl grid_sample --raster_zsq per_camera --fused_optimizer false "
                                  "--graph_encoder false --graph_volume false --split_lift_conv false "
                                  "--ssim_pool_impl torch --compile_loss false")
    g.add_argument("--cudnn_benchmark", type=str2bool, default=True,
                   help="let cuDNN pick the fastest convolution algorithms for the fixed input shapes")
    g.add_argument("--channels_last", type=str2bool, default=True,
                   help="NHWC activations in the 2D ResNet encoders (not the stage-1 pose net)")
    g.add_argument("--compile", type=str2bool, default=False,
                   help="torch.compile each trainable sub-network (experimental: measure it first)")
    g.add_argument("--graph_encoder", type=str2bool, default=True,
                   help="stage 2's image encoder (and neck) as CUDA graphs in training (CUDA only; "
                        "networks/occ_net.OccNet.features_step): its ~500 kernels a pass become one launch; autocast "
                        "then runs without its weight cache")
    g.add_argument("--graph_volume", type=auto_bool, default="auto", metavar="{auto,true,false}",
                   help="stage 2's 3D CNN and heads as CUDA graphs in training (CUDA only; networks/occ_net.OccNet."
                        "volume_step): their forward and backward one launch each, what the fused norms' many small "
                        "launches need; the activations stay in the graph's memory; autocast without its weight cache. "
                        "auto: on for the authors' hourglass (--occ_decoder hourglass: 11-17%% faster a step, "
                        "occupancy no worse), off for the residual decoder (no gain measured)")
    g.add_argument("--graph_loss", type=str2bool, default=False,
                   help="stage 2's loss terms (warps, photometric error, smoothness, ...) as CUDA graphs in training "
                        "(CUDA only; networks/loss_graph.py): their ~600 small kernels a step replayed, not issued "
                        "one by one; the steps that log run them eagerly")
    g.add_argument("--prefetch_factor", type=int, default=4,
                   help="batches each data loader worker prepares ahead")
    g.add_argument("--channels_last_3d", type=str2bool, default=True,
                   help="NDHWC weights and volume in the stage-2 3D CNN (CUDA only)")
    g.add_argument("--group_norm_impl", type=str, default="fused", choices=GROUP_NORM_IMPLS,
                   help="residual decoder's group norm: torch (nn.GroupNorm), parallel (networks/fast_norm.py: the "
                        "same function through whole-GPU reductions, any layout, output in the input's dtype) or "
                        "gemm (the same with its sums as tensor-core matrix products) or fused (the same, each pass "
                        "one Triton kernel on CUDA: networks/norm_kernels.py)")
    g.add_argument("--batch_norm_impl", type=str, default="fused", choices=BATCH_NORM_IMPLS,
                   help="the authors' hourglass's batch norms in training: torch (nn.BatchNorm3d) or gemm "
                        "(networks/fast_norm.py: the batch statistics as tensor-core matrix products; same "
                        "parameters, buffers and running statistics) or fused (the same, each pass one Triton "
                        "kernel on CUDA)")
    g.add_argument("--lift_impl", type=str, default="gather", choices=["grid_sample", "gather"],
                   help="stage-2 lifting: grid_sample per camera, or gather (one embedding_bag over a channels-last "
                        "table of the feature maps, the same average; networks/lift_gather.py)")
    g.add_argument("--lift_dtype", type=str, default="float32", choices=["float32", "features"],
                   help="--lift_impl gather's gather and volume: float32, or the image features' own dtype (bf16 "
                        "under --amp bf16: the 3D CNN's first convolution then casts no volume forward and back; "
                        "the geometry stays float32)")
    g.add_argument("--split_lift_conv", type=str2bool, default=True,
                   help="this project's 3D CNN (--occ_decoder residual) takes the lifted features and the other lifted "
                        "channels (visibility, geometry) as two volumes: its first convolution as the sum of one over "
                        "each (networks/occ_net.py SplitConv3d; the same function and weights; cuDNN is slow at 65 "
                        "input channels)")
    g.add_argument("--raster_zsq", type=str, default="moments", choices=["per_camera", "moments"],
                   help="how the render gives sum_i w_i z_i^2 for --w_dist: per_camera copies every feature per "
                        "camera with z^2 appended; moments renders 9 shared moment channels of the Gaussian means "
                        "and combines them per camera (utils/rasterizer.py)")
    g.add_argument("--fused_optimizer", type=str2bool, default=True,
                   help="AdamW's fused kernel on CUDA (one launch per parameter group instead of its foreach "
                        "launches; the same update to float32 rounding)")
    g.add_argument("--compile_loss", type=auto_bool, default="auto",
                   help="torch.compile the per-pixel photometric error (SSIM + L1) and the smoothness (CUDA only; "
                        "the same function, fewer passes and launches; compiles on the first step, falls back to "
                        "eager with a warning where it cannot); auto: on for stage 2 (gsv), where it was measured, "
                        "off for stage 1")
    g.add_argument("--ssim_pool_impl", type=str, default="fused", choices=["torch", "fused"],
                   help="the SSIM's 3x3 means: torch (avg_pool2d) or fused (utils/pool_kernels.py: one Triton kernel "
                        "a pass on CUDA, summing in avg_pool2d's order: the same numbers)")
    g.add_argument("--gsplat_packed", type=str2bool, default=True, help="gsplat's packed mode (the same render)")
    g.add_argument("--gsplat_tile_size", type=int, default=16, choices=[8, 16],
                   help="gsplat's tile size in pixels (the same render)")


def channels_last_modules(model):
    """The modules of ``model`` that may run channels-last (``nhwc_ok = True``: the ResNet encoders), leaving out
    those inside a module that needs the default layout (``nhwc_ok = False``: the stage-1 pose net)."""
    skip = {id(m) for p in model.modules() if getattr(p, "nhwc_ok", None) is False for m in p.modules()}
    return [m for m in model.modules() if getattr(m, "nhwc_ok", None) is True and id(m) not in skip]


def volume_networks(model):
    """The modules of ``model`` whose 3D CNN keeps its layout in ``volume_format`` (stage 2's OccNet)."""
    return [m for m in model.modules() if hasattr(m, "volume_format")]


def prepare_model(model, opt, device):
    """Apply the speed options to ``model`` (already on ``device``); returns a list of what was done."""
    if device.type != "cuda":
        return []
    done = []
    torch.backends.cudnn.benchmark = bool(opt.cudnn_benchmark)
    if opt.cudnn_benchmark:
        done.append("cudnn.benchmark")
    if opt.channels_last:
        mods = channels_last_modules(model)
        for m in mods:
            m.to(memory_format=torch.channels_last)
        done.append(f"channels_last ({len(mods)} encoders)")
    if getattr(opt, "channels_last_3d", False):
        nets = volume_networks(model)
        for net in nets:
            net.volume_format = torch.channels_last_3d
            for name in net.VOLUME_PARTS:
                if getattr(net, name, None) is not None:
                    getattr(net, name).to(memory_format=torch.channels_last_3d)
        done.append(f"channels_last_3d ({len(nets)} 3D CNNs)")
    for flag, what in zip(GRAPH_FLAGS[:2], ("image encoders", "3D CNNs")):
        if option_on(opt, flag):
            nets = volume_networks(model)
            for net in nets:
                setattr(net, flag, True)
            done.append(f"CUDA graphs ({len(nets)} {what})")
    if option_on(opt, "graph_loss"):
        crits = [m for m in model.modules() if hasattr(m, "raw_terms") and hasattr(m, "graph")]
        for c in crits:
            c.graph = True
        done.append(f"CUDA graphs ({len(crits)} losses)")
    from utils.losses import compile_losses, set_ssim_pool
    compile_losses(option_on(opt, "compile_loss"))  # (process-wide: set, or reset to eager, every time)
    ssim_pool = getattr(opt, "ssim_pool_impl", "fused")
    set_ssim_pool(ssim_pool)
    if ssim_pool == "fused":
        done.append("SSIM pool as Triton kernels")
    if option_on(opt, "compile_loss"):
        done.append("torch.compile (photometric error, smoothness)")
    if opt.compile:
        names = [n for n, m in model.named_children() if any(p.requires_grad for p in m.parameters())]
        for n in names:
            getattr(model, n).compile()  # in place: state_dict keys stay the same
        done.append(f"torch.compile ({', '.join(names)})")
    return done


GRAPH_FLAGS = ("graph_encoder", "graph_volume", "graph_loss")


def auto_bool(v):
    """argparse type of an option that is true, false or ``auto`` (decided from other options: ``option_on``)."""
    if str(v).strip().lower() == "auto":
        return "auto"
    try:
        return str2bool(v)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {v!r}") from None


# what ``auto`` means for the options that take it: a rule over the other options
AUTO_RULES = {
    # on for the hourglass 3D CNN (docs/results/runs/2026-12-06/speed-h100-frozen: 0.1098 against 0.1233 s a step;
    # authors-graph-volume-check: it trains as the eager one), off for the residual one (speed-h100-graph-volume:
    # no gain)
    "graph_volume": lambda opt: getattr(opt, "occ_decoder", None) == "hourglass",
    # on for stage 2 (docs/results/runs/2026-12-06/compile-loss-occupancy-noise: four runs each way at equal steps,
    # the held-out occupancy no worse; the step 5-6 % shorter), off for stage 1 (not measured there)
    "compile_loss": lambda opt: getattr(opt, "stage", None) == "gsv",
}


def option_on(opt, flag):
    """Whether ``opt`` turns the speed option ``flag`` on (a CUDA graph flag of GRAPH_FLAGS, compile_loss): true /
    false as given, ``auto`` by the flag's AUTO_RULES entry (off for a flag without one)."""
    v = getattr(opt, flag, False)
    if v == "auto":
        rule = AUTO_RULES.get(flag)
        return bool(rule is not None and rule(opt))
    return bool(v)


def graphs_off_for_processes(opt, world):
    """Turns the CUDA graph options (GRAPH_FLAGS) off in ``opt`` when ``world`` > 1 processes train together (DDP: the
    captures would hold SyncBatchNorm's collectives and meet DDP's gradient hooks; not measured there). Returns what
    it turned off, for the trainer's [speed] line."""
    if world <= 1:
        return []
    off = [f for f in GRAPH_FLAGS if option_on(opt, f)]
    for f in off:
        setattr(opt, f, False)
    return [f"--{f} off ({world} processes)" for f in off]


def autocast_cache(opt):
    """torch.autocast's cache_enabled for a training step: off under any CUDA graph option (GRAPH_FLAGS: CUDA graphs
    cannot capture autocast's weight cache)."""
    return not any(option_on(opt, f) for f in GRAPH_FLAGS)


def make_optimizer(groups, opt, device):
    """The trainer's AdamW over ``groups`` (fused on CUDA with --fused_optimizer)."""
    fused = bool(getattr(opt, "fused_optimizer", False)) and device.type == "cuda"
    return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay, **({"fused": True} if fused else {}))
