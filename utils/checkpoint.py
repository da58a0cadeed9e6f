"""Checkpoints: written atomically with the previous one kept, read with clear errors, checked against the stage
and the model they are loaded into.

``save_checkpoint(state, path, keep_previous=True)`` (the trainer's ``ckpt/last.pt``) writes a temporary file in
the same folder and fsyncs it, then makes the old file ``prev.pt`` (a hard link: ``last.pt`` never disappears) and
renames the new one onto ``last.pt``. A killed run or a full disk never leaves a half-written ``last.pt``; a full
disk is reported as :class:`DiskFull` (one line) and what was there is kept. ``load_resume_checkpoint`` reads
``last.pt`` and, when it is unreadable (truncated by a copy, a broken disk), falls back to ``prev.pt`` with a
warning. Every error names the file and the fix (``utils.errors.BadCheckpoint``).
"""
import os
import tempfile

import torch

from utils.errors import BadCheckpoint, DiskFull, MissingFile, disk_full_cause

STAGE_NAMES = {"gsp": "stage-1 (gsp)", "gsv": "stage-2 (gsv)"}


def _open_for_writing(fd):
    """The file object checkpoints are written through (tests replace it to simulate a full disk)."""
    return os.fdopen(fd, "wb")


def previous_path(path):
    """Where ``save_checkpoint(..., keep_previous=True)`` keeps the file it replaces: ``last.pt`` -> ``prev.pt``,
    ``x.pt`` -> ``x.prev.pt``."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, "prev.pt" if name == "last.pt" else f"{stem}.prev{ext}")


def _sync_folder(folder):
    """Make the renames in ``folder`` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(state, path, keep_previous=False):
    """Write ``state`` to ``path`` through a temporary file in the same folder and an atomic rename; with
    ``keep_previous`` the file it replaces becomes :func:`previous_path`. Raises DiskFull when space runs out."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    link = tmp + ".prev"
    try:
        with _open_for_writing(fd) as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would make it (mkstemp's file is private)
        if keep_previous and os.path.isfile(path):
            os.link(path, link)  # prev.pt and last.pt are one file until the rename below
            os.replace(link, previous_path(path))
        os.replace(tmp, path)
        _sync_folder(folder)
    except BaseException as e:
        for leftover in (tmp, link):
            if os.path.exists(leftover):
                os.remove(leftover)
        full = disk_full_cause(e)
        if full is not None:
            kept = "the previous checkpoint is kept" if os.path.isfile(path) else "no checkpoint was written"
            raise DiskFull(f"disk full writing checkpoint {path} ({full.strerror}; {kept}): free space on that disk, "
                           "then rerun the same command to resume") from None
        raise


def remove_partial_files(folder):
    """Delete the temporary files a writer killed mid-save left in ``folder`` (call it holding the run's lock).
    Returns their names."""
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.startswith(".tmp_"))
    for n in names:
        os.remove(os.path.join(folder, n))
    return names


def load_checkpoint(path, map_location="cpu", what="checkpoint", mmap=False):
    """Read a checkpoint written by :func:`save_checkpoint`; the error names the file when it is missing or bad.
    ``mmap``: tensors mapped from the file, not read (a quick look at a large file's options)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFile(f"{what} not found: {path}")
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
        except Exception:
            if not mmap:
                raise
            state = torch.load(path, map_location=map_location, weights_only=False)  # e.g. an old file format
    except Exception as e:  # truncated or foreign file
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise BadCheckpoint(f"cannot read {what} {path} ({type(e).__name__}: {reason}): the file is truncated or "
                            "not a checkpoint; copy it again or train it again") from None
    if not isinstance(state, dict) or "model" not in state:
        raise BadCheckpoint(f"{what} {path} is not a GaussianOcc checkpoint (no 'model' entry)")
    return state


def checkpoint_stage(state):
    """The stage ("gsp" / "gsv") a trainer checkpoint was trained for, None when it does not say."""
    opt = state.get("opt")
    return opt.get("stage") if isinstance(opt, dict) else None


def require_stage(state, path, stage, what, fix):
    """Stop with BadCheckpoint when checkpoint ``state`` (read from ``path``, passed as ``what``) is of another
    stage than ``stage``; ``fix`` says what to do instead."""
    got = checkpoint_stage(state)
    if got is not None and got != stage:
        raise BadCheckpoint(f"{what} {path} is a {STAGE_NAMES.get(got, got)} checkpoint where a "
                            f"{STAGE_NAMES.get(stage, stage)} one is expected: {fix}")


def strip_module_prefix(state_dict):
    """Accept weights saved from a DistributedDataParallel-wrapped model."""
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def _shape_clashes(weights, own):
    return [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in weights.items()
            if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]


EVAL_FIX = ("leave out the model options given on this command line or in --config (the checkpoint's own are used), "
            "or pass a checkpoint of this model")


def load_model_state(model, state, path, fix=EVAL_FIX):
    """Load the weights of checkpoint ``state`` (read from ``path``) into ``model``, all of them. A mismatch stops
    with one line: how many keys are missing / unexpected / of another shape, a few by name, and ``fix``."""
    weights = strip_module_prefix(state["model"])
    own = model.state_dict()
    clash = _shape_clashes(weights, own)
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    if clash or missing or unexpected:
        examples = "; ".join((clash + [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in unexpected])[:3])
        raise BadCheckpoint(f"checkpoint {path} does not fit the model of these options ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected, {len(clash)} other shapes; e.g. {examples}): {fix}")
    model.load_state_dict(weights)


def load_weights(model, path, log=print, stage=None):
    """Initialise ``model`` from the weights of checkpoint ``path`` (``--load_weights``), matching by name.

    A checkpoint of another stage than ``stage``, keys with equal names but different shapes, or no key in
    common stop with BadCheckpoint (one line). Keys the model has and the file lacks (missing) or the file has
    and the model lacks (unexpected) are loaded around and reported by name through ``log``. Returns (missing,
    unexpected) lists of key names.
    """
    state = load_checkpoint(path, what="--load_weights")
    if stage is not None:
        require_stage(state, path, stage, "--load_weights",
                      f"this run trains {STAGE_NAMES.get(stage, stage)}; pass a checkpoint of that stage "
                      "(stage 2 reads a stage-1 checkpoint through --stage1_ckpt)")
    weights = strip_module_prefix(state["model"])
    own = model.state_dict()
    clash = _shape_clashes(weights, own)
    if clash:
        raise BadCheckpoint(f"--load_weights {path}: {len(clash)} parameters have other shapes than this model "
                            f"(e.g. {'; '.join(clash[:3])}): were the model options the same?")
    if own and not any(k in own for k in weights):
        raise BadCheckpoint(f"--load_weights {path}: none of its {len(weights)} tensors belongs to this model "
                            f"(e.g. {next(iter(weights), 'none')}): pass a checkpoint of the same model")
    missing, unexpected = model.load_state_dict(weights, strict=False)
    log(f"loaded weights from {path}: {len(weights) - len(unexpected)} tensors, {len(missing)} missing, "
        f"{len(unexpected)} unexpected keys")
    for name, keys in (("missing (left as initialised)", missing), ("unexpected (ignored)", unexpected)):
        if keys:
            log(f"  {name}: " + ", ".join(keys))
    return list(missing), list(unexpected)


def load_resume_checkpoint(path, map_location="cpu", log=print):
    """``(state, file read)`` of the run checkpoint ``path`` (``ckpt/last.pt``), ``(None, None)`` when there is
    none. An unreadable ``last.pt`` is renamed ``last.pt.unreadable`` (so the next save does not make it
    ``prev.pt``) and ``prev.pt`` is read instead, with a warning; when neither is readable, BadCheckpoint."""
    prev = previous_path(path)
    if not os.path.isfile(path):
        if not os.path.isfile(prev):
            return None, None
        log(f"warning: {path} is missing (a run stopped between two renames?): resuming from {prev}")
        return load_checkpoint(prev, map_location, "previous checkpoint"), prev
    try:
        return load_checkpoint(path, map_location), path
    except BadCheckpoint as bad:
        if not os.path.isfile(prev):
            raise BadCheckpoint(f"{bad} (no {os.path.basename(prev)} to fall back on; --resume false starts over)") \
                from None
        try:
            state = load_checkpoint(prev, map_location, "previous checkpoint")
        except BadCheckpoint as bad_prev:
            raise BadCheckpoint(f"{bad}; and {bad_prev} (--resume false starts over)") from None
        os.replace(path, path + ".unreadable")
        log(f"warning: {path} is unreadable (truncated?), kept as {os.path.basename(path)}.unreadable: resuming "
            f"from {prev} (step {state.get('step')})")
        return state, prev
