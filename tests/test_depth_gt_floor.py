"""tools/diagnostics/depth_gt_floor: the exact camera depth of a synthetic set scores near zero against its own LiDAR
depth files, and the tool notices when the world it renders is not the set's (a wrong --seed)."""
import json

import pytest

from tests.conftest import SYNTH_SEED
from tools.data.export_gt_depth_nusc import export_depth
from tools.diagnostics import depth_gt_floor

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


@pytest.fixture(scope="module")
def synth_with_depth(synth_root):
    val = (synth_root / "splits" / "val.txt").read_text().split()
    export_depth(str(synth_root), "v1.0-synthetic", str(synth_root / "depth_gt"), tokens=val)
    return synth_root


def run(root, tmp_path, seed):
    out = tmp_path / f"floor{seed}"
    depth_gt_floor.main(["--dataroot", str(root), "--split", "val", "--size", "45", "80", "--seed", str(seed),
                         "--out", str(out)])
    return json.loads(out.with_suffix(".json").read_text())


def test_exact_depth_scores_near_zero_and_a_wrong_world_does_not(synth_with_depth, tmp_path):
    res = run(synth_with_depth, tmp_path, SYNTH_SEED)
    assert res["samples"] == 3 and res["grid_hw"] == [90, 160]
    grid, size = res["exact_at_grid"], res["exact_at_size"]
    assert 0.0 < grid["abs_rel"] < 0.08, grid  # only the LiDAR's parallax and the pixel snapping are left
    assert grid["abs_rel"] <= size["abs_rel"] < 0.15, (grid, size)  # the resize blurs the edges: never better
    assert all(0.0 <= v < 0.2 for v in res["hidden_share"].values()), res["hidden_share"]
    assert set(res["streets"]) == {"synth-0001"}
    wrong = run(synth_with_depth, tmp_path, SYNTH_SEED + 1)  # another street: the depth no longer matches
    assert wrong["exact_at_grid"]["abs_rel"] > 0.3, wrong["exact_at_grid"]
