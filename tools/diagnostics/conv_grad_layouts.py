"""The memory layouts a stage-2 training step hands each 3D convolution: input, output and their gradients.

    python -m tools.diagnostics.conv_grad_layouts --net project                  # CUDA, paper sizes, the defaults
    python -m tools.diagnostics.conv_grad_layouts --net project --quick --device cpu

A channels-last convolution whose gradient arrives in the other layout (or whose input gradient leaves in it) makes
PyTorch copy the whole volume to convert it; PyTorch goes by its own guess of a tensor's layout from its strides
(``suggest_memory_format``), which can read a dense channels-last volume as NCDHW (a size-1 axis with an odd
stride: the gather's volume did, 5.5 ms a step, until networks/occ_net.as_volume). This runs the benchmark's step
(tools/bench: the same model, batch and speed options; ``--set k=v`` overrides an option) with hooks on every 3D
convolution and prints, per convolution, each tensor's layout ("NDHWC", "NCDHW" or its strides), dtype, shape and
PyTorch's guess, for the input(s), the output, both gradients and what the backward saved; with ``--copies N``
also every copy of a tensor of at least N elements in that step (torch.profiler), with the chain of operators that
asked for it and its device time.
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
    if t.is_contiguous():
        both = t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d)
        return "NCDHW (both)" if both else "NCDHW"
    return f"strides {tuple(t.stride())}"


def describe(t):
    """layout, dtype, shape, and PyTorch's own guess of the layout (what cuDNN's backward goes by)."""
    try:
        from torch._prims_common import suggest_memory_format
        guess = {torch.channels_last_3d: "NDHWC", torch.contiguous_format: "NCDHW"}.get(suggest_memory_format(t), "?")
    except Exception:  # noqa: BLE001 (a private helper; the layout alone then)
        guess = "?"
    return f"{layout(t)} {str(t.dtype).replace('torch.', '')} {list(t.shape)} (suggests {guess})"


def watch(model):
    """Hooks on every Conv3d / ConvTranspose3d of ``model``: returns the list the rows go to (name, what,
    description)."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            continue

        def hook(mod, inp, out, name=name):
            parts = inp[0] if isinstance(inp[0], (tuple, list)) else (inp[0],)  # SplitConv3d: (main, extra)
            tags = [""] if len(parts) == 1 else [f"[{i}]" for i in range(len(parts))]
            for tag, x in zip(tags, parts):
                rows.append((name, f"input{tag}", describe(x)))
            rows.append((name, "output", describe(out)))
            for tag, node in zip(tags, conv_nodes(out.grad_fn)):  # what each backward reads (after autocast's casts)
                for what in ("input", "weight"):
                    saved = getattr(node, f"_saved_{what}", None)
                    if isinstance(saved, torch.Tensor):
                        rows.append((name, f"saved {what}{tag}", describe(saved)))
            for tag, x in zip(tags, parts):
                if x.requires_grad:
                    x.register_hook(lambda g, tag=tag: rows.append((name, f"input grad{tag}", describe(g))))
            if out.requires_grad:
                out.register_hook(lambda g: rows.append((name, "output grad", describe(g))))
        m.register_forward_hook(hook)
    return rows


def conv_nodes(node, depth=3):
    """The ConvolutionBackward nodes at most ``depth`` steps up the autograd graph from ``node`` (a convolution's
    own output: itself; a SplitConv3d's sum: its two), in the order of their inputs."""
    if node is None or depth == 0:
        return []
    if node.name().startswith("ConvolutionBackward"):
        return [node]
    return [c for nxt, _ in node.next_functions for c in conv_nodes(nxt, depth - 1)]


def copy_chains(prof, min_numel):
    """(device ms, shapes, "op < parent < ...") of each aten::copy_ in ``prof`` whose first input has at least
    ``min_numel`` elements, largest first."""
    out = []
    for e in prof.events():
        if e.name != "aten::copy_" or not e.input_shapes or not e.input_shapes[0]:
            continue
        numel = 1
        for d in e.input_shapes[0]:
            numel *= d
        if numel < min_numel:
            continue
        chain, p = [], e.cpu_parent
        while p is not None and len(chain) < 8:
            chain.append(p.name)
            p = p.cpu_parent
        ms = (e.device_time_total if e.device_type.name == "CPU" and e.device_time_total else e.cpu_time_total) / 1e3
        out.append((ms, e.input_shapes[:2], " < ".join(chain) or "(top level)"))
    return sorted(out, key=lambda r: -r[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", choices=sorted(NETS), default="project")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="the benchmark's small model and grid (its own network: --net applies at the paper sizes)")
    p.add_argument("--set", nargs="*", default=[], metavar="OPTION=VALUE", help="speed options over the defaults")
    p.add_argument("--first", type=int, default=3, help="how many convolutions to print (in forward order)")
    p.add_argument("--copies", type=float, default=0, metavar="N",
                   help="also list the step's copies of tensors of at least N elements and who made them (0: no)")
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
    if a.copies:
        acts = [torch.profiler.ProfilerActivity.CPU] + [torch.profiler.ProfilerActivity.CUDA] * (device.type == "cuda")
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            step(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
        chains = copy_chains(prof, a.copies)
    else:
        step(batch)
    names = list(dict.fromkeys(r[0] for r in rows))[:a.first]
    print(f"[conv_grad_layouts] {a.net} on {device}, speed options applied: {'; '.join(applied) or '-'}")
    for n in names:
        for name, what, desc in rows:
            if name == n:
                print(f"{name:24s} {what:12s} {desc}")
    # (a tensor dense in both orders, one channel or size-1 kernels, has no layout to misread)
    misread = [(name, what) for name, what, desc in rows
               if (desc.startswith("NDHWC") and "suggests NCDHW" in desc)
               or (desc.startswith("NCDHW") and "suggests NDHWC" in desc and "both" not in desc)]
    print(f"[conv_grad_layouts] tensors whose layout PyTorch's guess misreads (all convolutions): {len(misread)}"
          + "".join(f"\n  {n} {w}" for n, w in dict.fromkeys(misread)))
    if a.copies:
        print(f"[conv_grad_layouts] copies of >= {a.copies:g} elements: device ms, shapes, made by")
        for ms, shapes, chain in chains:
            print(f"{ms:8.3f}  {shapes}  {chain}")
    return rows


if __name__ == "__main__":
    main()
