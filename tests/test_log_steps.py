"""The criterion's log-only statistics (depth quantiles, fog statistics) are computed on the steps that are logged
only; the loss is the same either way, and the logged rows still carry them."""
import json

import pytest
import torch

import train as train_entry
from networks.gsv_model import GSVModel
from tests.test_gsv_model import make_batch, tiny_opt
from tests.test_hostile_input import gsv_argv

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def test_the_loss_is_the_same_without_the_log_only_statistics():
    torch.manual_seed(0)
    model = GSVModel(tiny_opt())
    batch = make_batch()
    model.set_step(5, log=True)
    torch.manual_seed(1)  # (the auto-mask's tie-breaking noise)
    loss_a, logs_a, _ = model(batch)
    model.set_step(5, log=False)
    torch.manual_seed(1)
    loss_b, logs_b, _ = model(batch)
    assert torch.equal(loss_a, loss_b)
    only_logged = set(logs_a) - set(logs_b)
    assert {"mean_depth", "depth_p50", "seen_opacity", "faint_alpha_share"} <= only_logged
    assert {"loss", "loss_reproj", "automask_kept"} <= set(logs_b)


def test_logged_rows_keep_every_statistic(synth_root, tmp_path):
    train_entry.main([str(a) for a in gsv_argv(synth_root, tmp_path, "--exp_name", "r", "--max_steps", 4,
                                               "--log_every", 2)])
    rows = [json.loads(line) for line in open(tmp_path / "r" / "train_log.jsonl")]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 4]
    for r in steps:
        assert {"mean_depth", "depth_p90", "seen_opacity", "loss_reproj"} <= set(r)
