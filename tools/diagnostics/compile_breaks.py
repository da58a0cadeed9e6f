"""Graph breaks and graphs of the compiled losses (``--compile_loss``) at the training step's image sizes.

torch.compile splits a function at anything it cannot trace (a host read, an untraceable call) and runs the piece
between eagerly: slower, and not what the occupancy check of the compiled loss measured. This compiles the
photometric error (SSIM + L1, with the SSIM pool of ``--ssim_pool_impl``) and the smoothness as stage 2 does, runs
one forward and backward and prints dynamo's counters: the graph breaks with their reasons (none expected) and the
number of graphs.

  python -m tools.diagnostics.compile_breaks                       # CUDA if present: 24 x 3 x 384 x 640
  python -m tools.diagnostics.compile_breaks --device cpu --size 48 64 --images 2
"""
import argparse
import json

import torch


def compiled_loss_breaks(device, images, size, ssim_pool="fused"):
    """{"graph_breaks": {reason: count}, "graphs": n} of one forward and backward of the compiled losses."""
    from torch._dynamo.utils import counters
    from utils import losses
    torch._dynamo.reset()
    counters.clear()
    h, w = size
    pred = torch.rand(images, 3, h, w, device=device, requires_grad=True)
    target = torch.rand(images, 3, h, w, device=device)
    disp = torch.rand(images, 1, h, w, device=device, requires_grad=True)
    was_compiled, was_pool = losses.losses_compiled(), losses._SSIM_POOL["impl"]  # (process-wide: put back after)
    losses.set_ssim_pool(ssim_pool)
    try:
        losses.compile_losses(True)
        loss = losses.photometric_error(pred, target).mean() + losses.smoothness_loss(disp, target)
        loss.backward()
    finally:
        losses.compile_losses(was_compiled)
        losses.set_ssim_pool(was_pool)
    return {"graph_breaks": dict(counters["graph_break"]), "graphs": counters["stats"]["unique_graphs"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=24, help="images a call (the step's 2 warped + 2 identity x 6)")
    ap.add_argument("--size", type=int, nargs=2, default=(384, 640), metavar=("H", "W"))
    ap.add_argument("--ssim_pool_impl", default="fused", choices=["torch", "fused"])
    a = ap.parse_args(argv)
    out = compiled_loss_breaks(torch.device(a.device), a.images, tuple(a.size), a.ssim_pool_impl)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
