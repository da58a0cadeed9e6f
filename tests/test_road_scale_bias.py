"""tools/diagnostics/road_scale_bias.py on a generated synthetic street: with the recorded motion the road's least
error lies at scale ~1; with the translation's heading turned 30 deg it lies elsewhere (shorter, pooled over the
four synthetic keyframe items of docs/results/runs/2026-12-06/stage1-road-scale-cpu; on this one item longer) and the
curve says less."""
import json

from tools.diagnostics import road_scale_bias


def test_a_turned_heading_biases_the_road_scale_low(synth_root, tmp_path, one_thread):
    out = tmp_path / "rsb"
    road_scale_bias.main(["--dataroot", str(synth_root), "--version", "v1.0-synthetic", "--sem_root", "sem",
                          "--val_split", str(synth_root / "splits" / "val.txt"), "--samples", "1",
                          "--size", "90", "160", "--out_dir", str(out)])
    rows = {(r["change"], r["degrees"]): r for r in json.loads((out / "road_scale_bias.json").read_text())["rows"]}
    right, turned = rows[("heading", 0.0)], rows[("heading", 30.0)]
    assert 0.93 <= right["pooled_scale"] <= 1.075, right
    assert abs(turned["pooled_scale"] - 1) > 0.1 and turned["contrast"] < right["contrast"]
    assert "| heading | 30 |" in (out / "road_scale_bias.md").read_text()
