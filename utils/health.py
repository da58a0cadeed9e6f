"""Reads the training log as a reviewer would and says when a run has failed although it still runs.

``TrainingHealth.check(row)`` takes each logged row (the dict written to train_log.jsonl) and returns the
warnings it triggers, each once per kind:
  * ``depth_frozen``: the logged mean depth has not changed (relative 1e-4) over ``window`` logged rows: the
    network output no longer changes (a stage-2 collapse ends like this);
  * ``depth_collapsed``: the median rendered / predicted depth is below ``min_depth`` metres: the scene has
    fallen onto the cameras;
  * ``automask_empty``: the auto-mask keeps fewer than ``min_kept`` of the pixels over ``window`` rows: almost no
    warp beats "no motion", the temporal loss has no gradient;
  * ``translation_zero`` (stage 1): the predicted ego translation stays below ``min_translation`` metres per
    frame pair over ``window`` rows after the lr warm-up;
  * ``loss_flat``: the loss has not changed (relative 1e-6) over ``window`` rows;
  * ``fog`` (stage 2): over ``window`` rows, more than ``max_faint`` of the rendered alpha is carried by faint
    Gaussians (``faint_alpha_share``, networks/gsv_loss.fog_stats): the rendered depth is the expectation over a
    volume of faint Gaussians and the volume holds no occupancy, however good the depth looks;
  * ``volume_empty`` (stage 2): the mean voxel opacity stays below ``min_opacity`` over ``window`` rows: fewer than
    1 voxel in 200 is occupied (the authors' entropy from an initial opacity of 0.1 ends there: 0.002-0.005).
Rows logged during the lr warm-up (``after`` steps) are judged for ``depth_collapsed`` only (the others are
expected early). Keys missing from a row are skipped, so the keys below are a contract with the trainer and the
models' logs (tests/test_training_contract.py trains each stage a step and checks them).
"""

# The keys of a logged row these checks read, per stage (``step`` and ``loss`` come from the trainer).
STAGE_KEYS = {
    "gsp": ("step", "loss", "mean_depth", "automask_kept", "ego_translation"),
    "gsv": ("step", "loss", "depth_p50", "mean_depth", "automask_kept", "faint_alpha_share", "seen_opacity",
            "mean_opacity"),
}


class TrainingHealth:
    def __init__(self, window=5, after=0, min_depth=1.0, min_kept=0.02, min_translation=0.05, max_faint=0.5,
                 min_opacity=0.005):
        self.window, self.after, self.max_faint, self.min_opacity = window, after, max_faint, min_opacity
        self.min_depth, self.min_kept, self.min_translation = min_depth, min_kept, min_translation
        self.history = []
        self.raised = set()

    def _recent(self, key):
        vals = [r[key] for r in self.history[-self.window:] if key in r]
        return vals if len(vals) == self.window else None

    def check(self, row):
        """row: dict with 'step' and logged scalars. Returns a list of (kind, message) raised by this row."""
        self.history.append(row)
        found = []
        depth = row.get("depth_p50", row.get("mean_depth"))
        if depth is not None and depth < self.min_depth:  # a failure at any step, warm-up or not
            found.append(("depth_collapsed", f"the median depth is {depth:.3f} m: the scene has fallen onto the "
                                             "cameras (stage 2: see --depth_background in networks/gsv_model.py)"))
        if row.get("step", 0) <= self.after:
            return self._new(found)

        def frozen(key, tol):
            v = self._recent(key)
            return v is not None and max(v) - min(v) <= tol * max(abs(x) for x in v)

        if frozen("mean_depth", 1e-4):
            found.append(("depth_frozen", f"the mean depth has stayed at {row['mean_depth']:.4f} m for {self.window} "
                                          "logged steps: the network output no longer changes"))
        kept = self._recent("automask_kept")
        if kept is not None and max(kept) < self.min_kept:
            found.append(("automask_empty", f"the auto-mask keeps {max(kept):.4f} of the pixels or fewer: almost no "
                                            "warp beats no motion, the temporal loss has no gradient"))
        trans = self._recent("ego_translation")
        if trans is not None and max(trans) < self.min_translation:
            found.append(("translation_zero", f"the predicted ego translation stays below {self.min_translation} m "
                                              "per frame pair: the pose net has settled on no motion"))
        faint = self._recent("faint_alpha_share")
        if faint is not None and min(faint) > self.max_faint:
            found.append(("fog", f"{min(faint):.0%} or more of the rendered alpha comes from Gaussians of opacity below "
                                 f"0.1 (seen opacity {row.get('seen_opacity', float('nan')):.3f}): the volume is a fog "
                                 "that renders a depth but holds no occupancy"))
        opacity = self._recent("mean_opacity")
        if opacity is not None and max(opacity) < self.min_opacity:
            found.append(("volume_empty", f"the mean voxel opacity stays below {self.min_opacity} ({max(opacity):.4f}): "
                                          "almost every voxel is free, the volume holds no occupancy"))
        if frozen("loss", 1e-6):
            found.append(("loss_flat", f"the loss has stayed at {row['loss']:.6f} for {self.window} logged steps"))
        return self._new(found)

    def _new(self, found):
        """The warnings of ``found`` not raised before (each kind once)."""
        new = [(k, m) for k, m in found if k not in self.raised]
        self.raised.update(k for k, _ in new)
        return new
