"""tools/diagnostics/road_motion_real.py on a generated synthetic street, where the motion is known: the road's own
pixels warped through the plane put the translation's scale near 1 and the error rises on both sides."""
import json

from tools.diagnostics import road_motion_real


def test_the_road_says_the_recorded_motion_on_a_synthetic_street(synth_root, tmp_path, one_thread):
    out = tmp_path / "rm"
    road_motion_real.main(["--dataroot", str(synth_root), "--version", "v1.0-synthetic", "--sem_root", "sem",
                           "--val_split", str(synth_root / "splits" / "val.txt"), "--samples", "1",
                           "--size", "90", "160", "--out_dir", str(out)])
    res = json.loads((out / "road_motion.json").read_text())
    pooled = res["pooled"]
    assert len(res["per_camera_image"]) >= 3  # cameras that see enough road
    assert 0.93 <= pooled["s_min"] <= 1.075, pooled["s_min"]
    assert pooled["rise_at_0.8"] > 0.02 and pooled["rise_at_1.25"] > 0.02
    assert "s_min" in (out / "road_motion.md").read_text()
