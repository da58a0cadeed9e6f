"""``--graph_loss``: stage 2's loss terms (``GSVLoss.raw_terms``: the warps, the photometric error with its SSIM,
the automask, the smoothness, the depth spread, the entropy, the semantic cross-entropy) forward and backward as
one CUDA graph each (torch.cuda.make_graphed_callables).

Why. Those terms are ~270 small operators forward and ~330 backward a step, and on one H100 (2026-12-06,
docs/results/runs/2026-12-06/speed-h100-frozen, run2's stage table) the loss's forward took 11.4 ms of host time
for 5.1 ms of device time: the GPU waits for the host to issue them. A graph replays the same kernels, so the terms
and their gradients are the eager ones (the automask's tie-breaking noise aside: a replay draws other random
numbers than the eager step would).

How. The first training step runs eagerly and notes which entries of the render dict and of the batch the terms
read (``_Reader``); a read entry that is not a tensor (the extra views' nested dict) keeps the terms eager for the
run (said once). Later steps hand exactly those tensors and the camera motion to the graph of their shapes (one per
signature, at most ``MAX_GRAPHS``). The weights (the entropy ramp changes with the step) and the log-only
statistics stay outside, so the graph does not depend on the step; the steps that log run eagerly
(``GSVLoss.terms``). CUDA training steps only; elsewhere ``raw_terms`` runs as it is.
"""
import warnings

import torch

from utils.cuda_graphs import MAX_GRAPHS, capture, graph_key, graphable


class _Reader(dict):
    """A dict that notes the keys its user reads (``d[k]``, ``d.get(k)``, ``k in d``)."""

    def __init__(self, d):
        super().__init__(d)
        self.read = set()

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.read.add(k)
        return super().get(k, default)

    def __contains__(self, k):
        self.read.add(k)
        return super().__contains__(k)


def _plan(r, batch):
    """(render keys, batch keys) that the terms read, present and tensors; None when one of them is not a tensor."""
    keys = []
    for d in (r, batch):
        got = sorted(k for k in d.read if dict.__contains__(d, k))
        if any(not torch.is_tensor(dict.__getitem__(d, k)) for k in got):
            return None
        keys.append(tuple(got))
    return tuple(keys)


class _Terms:
    """raw_terms of (render tensors, batch tensors, T) as one function of a tuple of tensors, for
    make_graphed_callables: its outputs are the raw terms, then the logs, each in name order (``names``)."""

    def __init__(self, loss, r_keys, b_keys):
        self.loss, self.r_keys, self.b_keys = loss, r_keys, b_keys
        self.names = None

    def __call__(self, *args):
        nr, nb = len(self.r_keys), len(self.b_keys)
        r, batch = dict(zip(self.r_keys, args[:nr])), dict(zip(self.b_keys, args[nr:nr + nb]))
        raw, logs = self.loss.raw_terms(r, batch, args[nr + nb])
        self.names = (tuple(sorted(raw)), tuple(sorted(logs)))
        return tuple(raw[k] for k in self.names[0]) + tuple(logs[k] for k in self.names[1])


def graphed_raw_terms(loss, r, batch, T):
    """``loss.raw_terms(r, batch, T)``, through the CUDA graph of its inputs' signature where it can (see the
    module docstring); ``loss._graphs`` keeps the plan and the graphs."""
    if not graphable(loss, T):
        return loss.raw_terms(r, batch, T)
    table = loss._graphs
    if "plan" not in table:  # the first step: eager, noting what the terms read
        rr, bb = _Reader(r), _Reader(batch)
        out = loss.raw_terms(rr, bb, T)
        table["plan"] = _plan(rr, bb)
        if table["plan"] is None:
            warnings.warn("--graph_loss: the loss reads entries that are not tensors (the extra views' render): "
                          "its terms stay eager")
        return out
    if table["plan"] is None:
        return loss.raw_terms(r, batch, T)
    r_keys, b_keys = table["plan"]
    if any(k not in r for k in r_keys) or any(k not in batch for k in b_keys):
        return loss.raw_terms(r, batch, T)
    args = tuple(r[k] for k in r_keys) + tuple(batch[k] for k in b_keys) + (T,)
    key = graph_key(args)
    if key not in table:
        if sum(1 for k in table if k != "plan") >= MAX_GRAPHS:
            return loss.raw_terms(r, batch, T)
        terms = _Terms(loss, r_keys, b_keys)
        table[key] = (capture(terms, args, "--graph_loss", allow_unused=True), terms)
    fn, terms = table[key]
    out = fn(*args)
    raw_names, log_names = terms.names
    return dict(zip(raw_names, out[:len(raw_names)])), dict(zip(log_names, out[len(raw_names):]))
