"""--w_depth_oracle (a diagnostic that trains stage 2 on the LiDAR depth): the term is the AbsRel of the rendered
depth at the LiDAR points, its gradient reaches the network, the training set loads depth_gt only with it on."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import options
from datasets.nuscenes_dataset import CAMS, NuScenesDataset
from networks.gsv_loss import depth_oracle_loss
from networks.gsv_model import GSVModel
from tests.test_gsv_model import make_batch, tiny_opt
from tests.test_hostile_input import overlay, train_sample

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def test_the_term_is_the_abs_rel_at_the_lidar_points():
    depth = torch.full((1, 6, 1, 4, 8), 10.0, requires_grad=True)
    gt = torch.zeros(1, 6, 8, 16)
    gt[:, :, 2, 3], gt[:, :, 5, 11] = 10.0, 5.0  # one point where the render is right, one where it is 2x
    loss = depth_oracle_loss(depth, gt, max_depth=80.0)
    assert loss.item() == pytest.approx(0.5)  # (0 + 1) / 2
    loss.backward()
    assert depth.grad.abs().sum() > 0
    assert depth_oracle_loss(depth, torch.zeros_like(gt), 80.0).item() == 0.0  # no point: 0, still a graph
    gt[:, :, 5, 11] = 100.0  # beyond max_depth: not a point
    assert depth_oracle_loss(depth, gt, 80.0).item() == pytest.approx(0.0)


def test_the_oracle_term_trains_the_network_and_is_off_by_default():
    batch = make_batch()
    batch["depth_gt"] = torch.zeros(1, 6, 64, 112)
    batch["depth_gt"][:, :, ::7, ::5] = 6.0
    model = GSVModel(tiny_opt("--w_depth_oracle", "2"))
    loss, logs, _ = model(batch)
    assert "loss_depth_oracle" in logs and torch.isfinite(logs["loss_depth_oracle"]) and logs["loss_depth_oracle"] > 0
    loss.backward()
    grads = [p.grad for p in model.occ_net.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    off = GSVModel(tiny_opt())
    _, logs_off, _ = off(batch)
    assert "loss_depth_oracle" not in logs_off
    del batch["depth_gt"]
    with pytest.raises(ValueError, match="holds no depth_gt"):
        model(batch)


def test_the_training_set_loads_lidar_depth_only_for_the_oracle(synth_root, tmp_path):
    root = overlay(synth_root, tmp_path / "data")
    sample = train_sample(synth_root)
    (root / "depth_gt" / sample["token"]).mkdir(parents=True)
    for cam in CAMS:
        np.savez(root / "depth_gt" / sample["token"] / f"{cam}.npz", uv=np.array([[3, 2], [10, 7]]),
                 depth=np.array([4.0, 9.5], np.float32), hw=np.array([90, 160]))
    base = ["--dataroot", str(root), "--version", "v1.0-synthetic", "--train_split",
            str(root / "splits" / "train.txt"), "--depth_root", "depth_gt"]
    on = NuScenesDataset(options.parse_args(base + ["--w_depth_oracle", "1"]), "train", eval_labels=False)[0]
    assert on["depth_gt"].shape == (6, 90, 160)
    assert on["depth_gt"][0, 2, 3] == 4.0 and on["depth_gt"][5, 7, 10] == 9.5 and (on["depth_gt"] > 0).sum() == 12
    off = NuScenesDataset(options.parse_args(base), "train", eval_labels=False)[0]
    assert "depth_gt" not in off


def test_the_oracle_without_lidar_depth_is_refused(synth_root, tmp_path):
    import train as train_entry
    from tests.test_hostile_input import gsv_argv, run_main
    msg = run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "logs", "--w_depth_oracle", 1))
    assert msg == "error: --w_depth_oracle needs --depth_root (the LiDAR depth maps it trains on)"
