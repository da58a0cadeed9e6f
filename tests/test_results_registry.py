"""docs/results/summary.json: every headline number names its command, machine, commit and date, and equals the
value in the results file it was read from (tools/record_result.py writes them; nobody types them)."""
import json
import os

import pytest

from tools.record_result import record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = os.path.join(ROOT, "docs", "results", "summary.json")


def test_every_entry_is_complete_and_matches_its_file():
    with open(SUMMARY) as f:
        entries = json.load(f)
    assert entries
    for key, e in entries.items():
        assert {"value", "command", "machine", "commit", "date", "file"} <= set(e), key
        assert len(e["date"]) == 10 and e["command"] and e["machine"] and e["commit"], key
        path = os.path.join(ROOT, e["file"])
        assert os.path.exists(path), (key, e["file"])
        with open(path) as f:
            scalars = json.load(f)["scalars"]
        numbers = [v for v in scalars.values() if isinstance(v, (int, float))]
        assert any(e["value"] == pytest.approx(v * s, abs=1e-4) for v in numbers for s in (1.0, 0.01)), \
            (key, e["value"])


def test_record_reads_the_value_from_the_file_and_replaces_the_key(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"scalars": {"occ/mIoU*": 20.69754, "occ/opacity_AUC": 87.5}}))
    summary = tmp_path / "docs" / "results" / "summary.json"
    summary.parent.mkdir(parents=True)
    record("k", str(metrics), "occ/opacity_AUC", "cmd", "machine", "abc123", scale=0.01, date="2026-12-02",
           summary=str(summary))
    record("k", str(metrics), "occ/mIoU*", "cmd2", "machine", "abc123", date="2026-12-02", summary=str(summary))
    got = json.loads(summary.read_text())
    assert list(got) == ["k"] and got["k"]["value"] == 20.6975 and got["k"]["command"] == "cmd2"
    with pytest.raises(SystemExit, match="no scalar 'occ/RayIoU'"):
        record("k", str(metrics), "occ/RayIoU", "cmd", "m", "c", summary=str(summary))


def test_a_gpu_default_folder_records_every_key_it_holds(tmp_path):
    from tools.record_result import record_gpu_default
    run = tmp_path / "gd"
    (run / "runs" / "gd-gtpose-default").mkdir(parents=True)
    (run / "runs" / "gd-gtpose-default" / "metrics.json").write_text(
        json.dumps({"scalars": {"occ/mIoU*": 19.8348, "occ/IoU": 38.02, "occ/opacity_AUC": 85.82}}))
    (run / "stage1").mkdir()
    (run / "stage1" / "summary.json").write_text(json.dumps({"scalars": {"stage1_heldout_scale_max_dev": 0.0375,
                                                                         "stage1_heldout_abs_rel": 0.2514}}))
    summary = tmp_path / "docs" / "results" / "summary.json"
    summary.parent.mkdir(parents=True)
    got = record_gpu_default(str(run), "cmd", "m", "c", date="2026-12-02", summary=str(summary))
    assert sorted(got) == ["stage1_heldout_abs_rel", "stage1_heldout_scale_max_dev", "synthetic_gsv_gtpose_geo_iou",
                           "synthetic_gsv_gtpose_miou_star", "synthetic_occ_auc"]
    assert got["synthetic_occ_auc"]["value"] == 0.8582 and got["stage1_heldout_abs_rel"]["value"] == 0.2514
