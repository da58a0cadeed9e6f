"""Speed settings of the training step that leave the results as they are (options of the "speed" group).

* ``cudnn_benchmark``: cuDNN times its convolution algorithms once per input shape and keeps the fastest (the
  shapes are fixed in this project, so the first steps pay for it once); the default heuristic can be far off
  for the 3D decoder's convolutions at 300x300x24.
* ``channels_last``: the 2D ResNet encoders keep their activations NHWC, the layout tensor cores read directly.
  Not the stage-1 pose net, whose fusion reshapes its features with ``view`` (needs the default layout).
* ``compile``: ``torch.compile`` on each trainable sub-network (off by default: compile time, and a gain that
  has to be measured first; ``tools/bench_render.py --step_compare`` does).
All three act on CUDA only; on the CPU the model is returned untouched.
"""
import torch

from utils.cli import str2bool


def add_args(parser):
    g = parser.add_argument_group("speed", "training-step speed on CUDA, results unchanged (utils/speed.py)")
    g.add_argument("--cudnn_benchmark", type=str2bool, default=True,
                   help="let cuDNN pick the fastest convolution algorithms for the fixed input shapes")
    g.add_argument("--channels_last", type=str2bool, default=True,
                   help="NHWC activations in the 2D ResNet encoders (not the stage-1 pose net)")
    g.add_argument("--compile", type=str2bool, default=False,
                   help="torch.compile each trainable sub-network (experimental: measure it first)")
    g.add_argument("--prefetch_factor", type=int, default=4,
                   help="batches each data loader worker prepares ahead")


def channels_last_modules(model):
    """The modules of ``model`` that may run channels-last (``nhwc_ok = True``: the ResNet encoders), leaving out
    those inside a module that needs the default layout (``nhwc_ok = False``: the stage-1 pose net)."""
    skip = {id(m) for p in model.modules() if getattr(p, "nhwc_ok", None) is False for m in p.modules()}
    return [m for m in model.modules() if getattr(m, "nhwc_ok", None) is True and id(m) not in skip]


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
    if opt.compile:
        names = [n for n, m in model.named_children() if any(p.requires_grad for p in m.parameters())]
        for n in names:
            getattr(model, n).compile()  # in place: state_dict keys stay the same
        done.append(f"torch.compile ({', '.join(names)})")
    return done
