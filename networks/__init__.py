"""Models. ``build_model(opt)`` composes stage 1 (GSP) or stage 2 (GSV), as ``opt.stage`` says, with its criterion."""


def build_model(opt):
    if opt.stage == "gsp":
        from networks.gsp_loss import GSPLoss
        from networks.gsp_model import GSPModel
        return GSPModel(opt, criterion=GSPLoss(opt))
    if opt.stage == "gsv":
        from networks.gsv_model import GSVModel
        return GSVModel(opt)
    raise ValueError(f"unknown --stage {opt.stage!r} (expected gsp or gsv)")
