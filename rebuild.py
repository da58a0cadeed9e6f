"""Models rebuilt from their checkpoints: stage 2's frozen stage-1 pose net, eval.py, tools/visualize.py.

A checkpoint keeps what rebuilds its model: the run's options (not its paths, ``options.checkpoint_options``) and
the weights. Rebuilding merges those options with today's (``options.merge_checkpoint_options``: an option newer
than the checkpoint takes the value it had in effect before, this command's explicit options win, no ImageNet file
is read), composes the model (``networks.build_model``) and loads every weight. This is the one module below the
entry points that imports both ``options`` and ``networks``.
"""
from networks import build_model
from options import merge_checkpoint_options
from utils.checkpoint import STAGE_NAMES, load_checkpoint, load_model_state, require_stage
from utils.errors import BadCheckpoint


def saved_options(state, path, argv=None, fresh=()):
    """The options of checkpoint ``state`` (read from ``path``) under those that ``argv`` (default: sys.argv) sets
    explicitly; options in ``fresh`` take today's defaults whatever the run had."""
    if not isinstance(state.get("opt"), dict):
        raise BadCheckpoint(f"checkpoint {path} has no 'opt' entry: cannot rebuild its model")
    return merge_checkpoint_options(state["opt"], argv, fresh=fresh)


def load_model(path, device="cpu", stage=None, argv=()):
    """The model of checkpoint ``path`` on ``device`` in eval mode, every weight loaded; it predicts (no pose
    source). ``stage``: the stage the checkpoint must be of ("gsp" / "gsv"), ``argv``: options of this command."""
    state = load_checkpoint(path, map_location=device)
    opt = saved_options(state, path, list(argv))
    if stage is not None:
        require_stage(state, path, stage, "checkpoint", f"pass the checkpoint of a {STAGE_NAMES[stage]} run")
        opt.stage = stage  # a checkpoint that does not say its stage is taken for the one asked for
    model = build_model(opt)
    load_model_state(model, state, path)
    return model.to(device).eval()


def load_stage1(path, device="cpu"):
    """The frozen stage-1 model of ``--stage1_ckpt`` (the ``load_stage1`` of ``networks.build_model``)."""
    return load_model(path, device, stage="gsp").requires_grad_(False)
