"""Models. ``build_model(opt)`` composes the model of ``opt.stage`` with what it trains with."""


def build_model(opt, load_stage1=None):
    """Stage 1 (``--stage gsp``): GSPModel with its criterion GSPLoss. Stage 2 (``--stage gsv``): GSVModel with its
    criterion GSVLoss and the pose source of ``--pose`` (networks/pose_source.py), each built here and passed in.

    load_stage1: ``(path, device) -> stage-1 model`` (``rebuild.load_stage1``), how ``--pose stage1`` reads the
    frozen pose net of ``--stage1_ckpt``; without it such a stage-2 model has no pose source and predicts
    (evaluation, pictures) but does not train.
    """
    if opt.stage == "gsp":
        from networks.gsp_loss import GSPLoss
        from networks.gsp_model import GSPModel
        return GSPModel(opt, criterion=GSPLoss(opt))
    if opt.stage == "gsv":
        from networks.gsv_loss import GSVLoss
        from networks.gsv_model import GSVModel
        from networks.occ_net import semantic_classes
        from networks.pose_source import build_pose_source
        return GSVModel(opt, criterion=GSVLoss(opt, semantic_classes(opt)),
                        pose_source=build_pose_source(opt, load_stage1))
    raise ValueError(f"unknown --stage {opt.stage!r} (expected gsp or gsv)")
