"""tools/stage1_summary.py: the headline keys are the worst street over both spacings of the main variant, the
AbsRel its sweep spacing's, and the depth error by LiDAR distance is shown beside it."""
import json

import pytest

from tools import stage1_summary


def metrics(scales, abs_rel, by_range=None, cams=None, classes=None):
    streets = {f"s{i}": {"scale_median": s, "depth_scale": 1 + (s - 1) / 2, "abs_rel": abs_rel, "ate": 0.1}
               for i, s in enumerate(scales)}
    m = {"step": 7, "streets": streets, "scalars": {"depth/abs_rel": abs_rel}}
    if by_range:
        m["depth"] = {"abs_rel_by_range": by_range}
    if cams:
        m.setdefault("depth", {})["per_camera"] = {c: {"abs_rel": v, "a1": 0.9} for c, v in cams.items()}
    if classes:
        m.setdefault("depth", {})["by_class"] = {c: {"abs_rel": v, "log_bias": 0.1, "share": sh}
                                                 for c, (v, sh) in classes.items()}
    return m


def test_keys_and_table(tmp_path):
    rng = {"0-20m": 0.1, "20-40m": 0.2, "40m+": 0.5}
    cams = {"CAM_FRONT": 0.12, "CAM_FRONT_RIGHT": 0.31}
    classes = {"car": (0.44, 0.13), "manmade": (0.15, 0.43)}
    runs = {("a", "sweep"): metrics([1.01, 0.97], 0.25, rng, cams, classes), ("a", "keyframe"): metrics([1.04, 1.0], 0.3),
            ("b", "sweep"): metrics([1.5], 0.9)}
    s = stage1_summary.summarise(runs, "a")
    assert s["stage1_heldout_scale_max_dev"] == pytest.approx(0.04)
    assert s["stage1_heldout_abs_rel"] == 0.25
    assert s["stage1_heldout_depth_scale_max_dev"] == pytest.approx(0.02)
    assert s["scalars"]["stage1_heldout_scale_max_dev"] == pytest.approx(0.04)
    md = stage1_summary.markdown(s, "a")
    assert "(by LiDAR distance, pooled over points: 0-20m 0.100, 20-40m 0.200, 40m+ 0.500)" in md
    assert "| s1 | 0.985 | 0.250 | 0.970 |" in md
    assert "Depth AbsRel per camera: CAM_FRONT 0.120, CAM_FRONT_RIGHT 0.310" in md
    assert "Depth AbsRel per 2D class, largest share first: manmade 0.150, car 0.440" in md
    assert md.count("per camera") == 1  # only the run that has them
    json.dumps(s)  # (written as JSON)
