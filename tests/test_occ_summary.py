"""tools/occ_summary.py: a run folder and one of its eval folders each give a row with their own numbers."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics(folder, miou, step):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"step": step, "scalars": {"occ/mIoU*": miou, "occ/IoU": 2 * miou, "depth/abs_rel": 0.2,
                                             "occ/as_read_mIoU*": miou - 2, "occ/as_read_IoU": 2 * miou - 1}}, f)


def test_run_and_eval_folder_rows(tmp_path):
    run = tmp_path / "gd-a"
    _metrics(str(run / "eval"), 12.5, 100)
    _metrics(str(run / "eval-train"), 30.25, 100)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "s.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "occ_summary.py"), str(run),
                        str(run / "eval-train"), str(tmp_path / "empty"), "--json", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = {x["run"]: x for x in json.load(open(out))}
    assert set(rows) == {"gd-a", "gd-a/eval-train"}
    assert rows["gd-a"]["mIoU*"] == 12.5 and rows["gd-a/eval-train"]["mIoU*"] == 30.25
    assert rows["gd-a/eval-train"]["geo_IoU"] == 60.5
    assert "| gd-a/eval-train | 100 | 30.25 | 60.50 |" in r.stdout
    assert rows["gd-a"]["as_read_mIoU*"] == 10.5 and "| 28.25 / 59.50 |" in r.stdout
