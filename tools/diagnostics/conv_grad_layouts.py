"""The memory layouts a stage-2 training step hands each 3D convolution: input, output and their gradients.

    python -m tools.diagnostics.conv_grad_layouts --net project                  # CUDA, paper sizes, the defaults
    python -m tools.diagnostics.conv_grad_layouts --net project --quick --device cpu

A channels-last convolution whose gradient arrives in the other layout (or whose input gradient leaves in it) makes
PyTorch copy the whole volume to convert it; the speed benchmark's profile by input shapes shows two such copies in
the backward of this project's first 3D convolution (docs/speed.md). This runs the benchmark's step (tools/bench:
the same model, batch and speed options; ``--set k=v`` overrides an option) with hooks on every Conv3d and prints,
per convolution, each tensor's layout ("NDHWC", "NCDHW" or its strides), dtype and shape.
"""
import argparse

import torch

from tools.bench.harness import make_train_step
from tools.bench.scene import train_batch
from tools.bench.speed_compare import NETS, build_model, step_options
from utils.speed import prepare_model


def layout(t):
    """"NDHWC" / "NCDHW" (dense in that order), else the strides."""
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous():
        return "NDHWC"
    return "NCDHW" if t.is_contiguous() else f"strides {tuple(t.stride())}"


def describe(t):
    return f"{layout(t)} {str(t.dtype).replace('torch.', '')} {list(t.shape)}"


def watch(model):
    """Hooks on every Conv3d of ``model``: returns the list the rows go to (name, what, description)."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, torch.nn.Conv3d):
            continue

        def hook(mod, inp, out, name=name):
            rows.append((name, "input", describe(inp[0])))
            rows.append((name, "output", describe(out)))
            if inp[0].requires_grad:
                inp[0].register_hook(lambda g: rows.append((name, "input grad", describe(g))))
            if out.requires_grad:
                out.register_hook(lambda g: rows.append((name, "output grad", describe(g))))
        m.register_forward_hook(hook)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", choices=sorted(NETS), default="project")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="the benchmark's small model and grid (its own network: --net applies at the paper sizes)")
    p.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="speed options over the defaults")
    p.add_argument("--first", type=int, default=3, help="how many convolutions to print (in forward order)")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    bad = [kv for kv in a.set if "=" not in kv]
    if bad:
        raise SystemExit(f"--set: expected OPTION=VALUE, got {bad[0]!r}")
    settings = dict(kv.split("=", 1) for kv in a.set)
    opt = step_options("quick" if a.quick else a.net, settings, device, 0)
    model = build_model(opt, device, 0, None)
    applied = prepare_model(model, opt, device)
    step = make_train_step(model, opt, device)
    batch = train_batch(opt, device, 0)
    step(batch)  # the first step captures the CUDA graphs and picks cuDNN's algorithms
    rows = watch(model)
    step(batch)
    names = list(dict.fromkeys(r[0] for r in rows))[:a.first]
    print(f"[conv_grad_layouts] {a.net} on {device}, speed options applied: {'; '.join(applied) or '-'}")
    for n in names:
        for name, what, desc in rows:
            if name == n:
                print(f"{name:24s} {what:12s} {desc}")
    return rows


if __name__ == "__main__":
    main()
