"""Training-step parts as CUDA graphs (torch.cuda.make_graphed_callables), shared by the graphed parts of stage 2:
the image encoder and the 3D CNN (networks/occ_net.py, --graph_encoder / --graph_volume) and the loss terms
(networks/loss_graph.py, --graph_loss). One graph per input signature (``graph_key``), at most ``MAX_GRAPHS`` a
part; ``capture`` makes one and names the option that asked when it cannot."""
import torch
import torch.nn as nn

MAX_GRAPHS = 2  # per part (an epoch's last, smaller batch makes a second shape); more shapes run eagerly


def parts(x):
    """A part's input, a tensor or a tuple of them (a split volume, the loss's tensors), as a tuple."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def graphable(module, x):
    """Whether a call of ``module`` on ``x`` (a tensor or a tuple of them) may use a graph: a CUDA training step that
    builds a backward."""
    return all(t.is_cuda for t in parts(x)) and module.training and torch.is_grad_enabled()


def graph_key(x):
    """What a CUDA graph of a part is specific to: the input's shapes, dtypes and need of a gradient, and the
    autocast dtype."""
    amp = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    return tuple((tuple(t.shape), t.dtype, t.requires_grad) for t in parts(x)), amp


def capture(part, sample, flag, allow_unused=False):
    """make_graphed_callables over ``part`` (a module, or a function of tensors) with ``sample`` (a tensor or a tuple
    of them) as its input (requiring grad as the real input will); a module's warm-up passes leave its batch-norm
    buffers as they were. ``allow_unused``: inputs that need a gradient but get none are allowed (the loss's).
    ``flag``: the option that asked, for the error.

    The capture's warm-up runs on a side stream and makes the parameters' AccumulateGrad nodes there; most likely the
    graph's static outputs keep those nodes alive, so every later backward feeds them from the default stream, and torch
    warns once about that mismatch (seen in both trainings of 2026-12-06's split-occupancy-check, at their first
    step: after the capture, not during it). The engine orders the two streams itself; the warning stays off once
    this process has captured a graph."""
    buffers = list(part.buffers()) if isinstance(part, nn.Module) else []
    saved = [b.detach().clone() for b in buffers]
    quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", lambda on: None)
    quiet(False)
    try:
        graphed = torch.cuda.make_graphed_callables(
            part, tuple(t.detach().requires_grad_(t.requires_grad) for t in parts(sample)),
            allow_unused_input=allow_unused)
    except RuntimeError as err:
        quiet(True)  # no graph: nothing to explain the mismatch
        raise RuntimeError(f"{flag}: capturing the CUDA graph failed ({err}); train without {flag}") from err
    with torch.no_grad():
        for b, v in zip(buffers, saved):
            b.copy_(v)
    return graphed
