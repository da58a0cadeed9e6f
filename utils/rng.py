"""The state of every random number generator a training step draws from, to store in a checkpoint and restore, so
that a resumed run repeats the uninterrupted one: python ``random``, numpy, torch on the CPU and on the process's
CUDA device, and any extra ``torch.Generator`` (e.g. the trainer's colour-augmentation generator)."""
import random

import numpy as np
import torch


def rng_state(generators=None, device=None):
    """A picklable snapshot; ``generators``: {name: torch.Generator} captured too; ``device``: the CUDA device whose
    generator is captured (only that one: other GPUs are left alone)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generators": {k: g.get_state() for k, g in (generators or {}).items()}}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, generators=None, device=None):
    """Restore a :func:`rng_state` snapshot. Returns the names of the parts that could not be restored."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    lost = []
    for k, g in (generators or {}).items():
        if k in state.get("generators", {}):
            g.set_state(state["generators"][k].cpu())
        else:
            lost.append(k)
    if device is not None and torch.device(device).type == "cuda":
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"].cpu(), device)
        else:
            lost.append("cuda")
    return lost
