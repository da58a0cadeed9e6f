"""The training-log reader: each failure pattern of a run is named once, healthy rows raise nothing."""
from utils.health import TrainingHealth


def feed(health, rows):
    out = []
    for r in rows:
        out += [k for k, _ in health.check(r)]
    return out


def test_a_healthy_run_raises_nothing():
    h = TrainingHealth(window=3)
    rows = [dict(step=10 * i, loss=0.2 - 0.01 * i, mean_depth=10 + i, depth_p50=8.0 + i, automask_kept=0.6,
                 ego_translation=1.2) for i in range(10)]
    assert feed(h, rows) == []


def test_the_collapsed_stage2_run_of_issue_11_is_named():
    """The log of the real-fixture run that collapsed: depth 0.2967 m from step 20 on, loss repeating."""
    h = TrainingHealth(window=3)
    rows = [dict(step=1, loss=0.31, mean_depth=1.55, automask_kept=0.4)]
    rows += [dict(step=20 * i, loss=0.1734, mean_depth=0.2967, automask_kept=0.10) for i in range(1, 6)]
    kinds = feed(h, rows)
    assert kinds == ["depth_collapsed", "depth_frozen", "loss_flat"]  # each once, in the order they appear


def test_stage1_translation_near_zero_and_an_empty_automask_after_warmup_only():
    h = TrainingHealth(window=3, after=100)
    early = [dict(step=s, loss=0.1 + s * 1e-3, mean_depth=10 + s, ego_translation=0.0, automask_kept=0.0)
             for s in (20, 40, 60, 80, 100)]
    assert feed(h, early) == []  # no motion and an empty auto-mask are expected during the warm-up
    assert feed(TrainingHealth(window=3, after=100), [dict(step=20, loss=0.2, depth_p50=0.3)]) == ["depth_collapsed"]
    late = [dict(step=s, loss=0.1 + s * 1e-3, mean_depth=10 + s, ego_translation=0.01, automask_kept=0.005)
            for s in (120, 140, 160)]
    assert sorted(feed(h, late)) == ["automask_empty", "translation_zero"]


def test_a_fog_is_named_and_a_crisp_volume_is_not():
    """Stage 2: most of the alpha carried by Gaussians of opacity < 0.1 (the fog the default criterion made on the
    synthetic set, median voxel opacity 0.002) is a failure even while the depth and the loss keep moving."""
    fog = [dict(step=s, loss=0.2 - s * 1e-4, mean_depth=10 + 0.01 * s, faint_alpha_share=0.93, seen_opacity=0.02)
           for s in (20, 40, 60)]
    assert feed(TrainingHealth(window=3), fog) == ["fog"]
    crisp = [dict(r, faint_alpha_share=0.12, seen_opacity=0.8) for r in fog]
    assert feed(TrainingHealth(window=3), crisp) == []
    assert feed(TrainingHealth(window=3, after=100), fog) == []  # judged after the warm-up only


def test_an_empty_volume_is_named():
    """The authors' entropy from opacity 0.1 (measured: mean voxel opacity 0.0025 at step 620 of the synthetic run,
    docs/results/runs/2026-12-02/occ-round1) leaves a volume that is almost all free."""
    rows = [dict(step=s, loss=0.03 - s * 1e-5, mean_depth=15 + 0.1 * s, mean_opacity=0.0025, faint_alpha_share=0.15)
            for s in (560, 580, 600)]
    assert feed(TrainingHealth(window=3), rows) == ["volume_empty"]
    assert feed(TrainingHealth(window=3), [dict(r, mean_opacity=0.36) for r in rows]) == []
