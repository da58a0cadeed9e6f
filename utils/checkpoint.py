"""Checkpoints written atomically (a killed run never leaves a half-written file) and read with clear errors."""
import os
import tempfile

import torch


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by :func:`save_checkpoint`; the error names the file when it is missing or bad."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise RuntimeError(f"{path} is not a GaussianOcc checkpoint (no 'model' entry)")
    return state


def strip_module_prefix(state_dict):
    """Accept weights saved from a DistributedDataParallel-wrapped model."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def load_weights(model, path, log=print):
    """Initialise ``model`` from the weights of checkpoint ``path`` (``--load_weights``), matching by name.

    Keys with equal names but different shapes stop with an error that names each key and both shapes; keys
    the model has and the file lacks (missing) or the file has and the model lacks (unexpected) are loaded around
    and reported by name through ``log``. Returns (missing, unexpected) lists of key names.
    """
    weights = strip_module_prefix(load_checkpoint(path)["model"])
    own = model.state_dict()
    clash = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in weights.items()
             if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if clash:
        raise ValueError(f"--load_weights {path}: {len(clash)} parameters have other shapes than this model "
                         "(were the model options the same?):\n  " + "\n  ".join(clash))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    log(f"loaded weights from {path}: {len(weights) - len(unexpected)} tensors, {len(missing)} missing, "
        f"{len(unexpected)} unexpected keys")
    for name, keys in (("missing (left as initialised)", missing), ("unexpected (ignored)", unexpected)):
        if keys:
            log(f"  {name}: " + ", ".join(keys))
    return list(missing), list(unexpected)
