"""Models. ``build_model(opt)`` picks stage 1 (GSP) or stage 2 (GSV) from ``opt.stage``."""


def build_model(opt):
    if opt.stage == "gsp":
        from networks.gsp_model import GSPModel
        return GSPModel(opt)
    if opt.stage == "gsv":
        from networks.gsv_model import GSVModel
        return GSVModel(opt)
    raise ValueError(f"unknown --stage {opt.stage!r} (expected gsp or gsv)")
