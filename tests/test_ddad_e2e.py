"""DDAD end to end on the real DGP fixture through the entry points, in process and at tiny sizes: LiDAR depth
export -> stage 1 (GSP) -> stage 2 (GSV, camera motion from the stage-1 pose net) -> eval.py (skipped when the
fixture is absent). The self-occlusion masks must reach both stages' losses."""
import json
import math
import sys

import pytest

import eval as eval_entry
import train as train_entry
from networks.gsp_model import GSPModel
from networks.gsv_model import GSVModel
from tools.data import export_gt_depth_ddad


def spy(monkeypatch, cls):
    """Record the (batch, logs) of every training forward of ``cls``."""
    calls, forward = [], cls.forward

    def recording(self, batch):
        loss, logs, outputs = forward(self, batch)
        calls.append((batch, logs))
        return loss, logs, outputs

    monkeypatch.setattr(cls, "forward", recording)
    return calls


def run(monkeypatch, main, *args):
    monkeypatch.setattr(sys, "argv", ["prog", *map(str, args)])
    main()


@pytest.mark.filterwarnings("ignore:DDAD. scene scene_01 skipped")
def test_ddad_export_train_both_stages_and_eval(ddad_root, tmp_path, monkeypatch):
    depth, logs = tmp_path / "depth", tmp_path / "logs"
    export_gt_depth_ddad.main(["--dataroot", str(ddad_root), "--out", str(depth)])
    assert len(list(depth.glob("scene_02_000*/CAM_*.npz"))) == 18  # scene_01 (3 cameras) is skipped

    data = ["--dataroot", ddad_root, "--depth_root", depth, "--ddad_mask_dir", ddad_root / "masks"]
    common = [*data, "--max_steps", 1, "--input_size", 64, 96, "--render_size", 32, 48, "--log_dir", logs, "--num_workers", 0, "--device", "cpu",
              "--val_every", -1, "--raster_backend", "torch"]
    gsp_calls = spy(monkeypatch, GSPModel)
    run(monkeypatch, train_entry.main, "--config", "configs/ddad-gsp.txt", *common, "--exp_name", "gsp",
        "--gsp_pretrained", "false")  # (the config asks for ImageNet files; none travels with the tests)
    gsp_ckpt = logs / "gsp" / "ckpt" / "last.pt"
    assert gsp_ckpt.is_file()

    gsv_calls = spy(monkeypatch, GSVModel)
    run(monkeypatch, train_entry.main, "--config", "configs/ddad-gsv.txt", *common, "--exp_name", "gsv",
        "--stage1_ckpt", gsp_ckpt, "--grid_size", 40, 40, 8, "--encoder_layers", 18,
        "--feat_dim", 16, "--voxel_feat_dim", 8, "--decoder_blocks", 1, "--encoder_weights", "none")
    gsv_ckpt = logs / "gsv" / "ckpt" / "last.pt"
    assert gsv_ckpt.is_file()

    # the self-occlusion masks reached both losses: CAMERA_01 sees everything, the others lose 3-40 % to the car
    for calls in (gsp_calls, gsv_calls):
        assert len(calls) == 1 and calls[0][0]["mask"].shape == (1, 6, 32, 48)
        assert 0.6 < calls[0][1]["mask_visible"].item() < 0.97

    run(monkeypatch, eval_entry.main, "--ckpt", gsv_ckpt, *data, "--out_dir", tmp_path / "eval", "--num_workers", 0,
        "--device", "cpu")  # a checkpoint keeps no paths: the data options come from the command
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["samples"]["depth"] == 3  # the val split: scene_02's 3 samples
    assert math.isfinite(metrics["scalars"]["depth/abs_rel"]) and metrics["scalars"]["depth/abs_rel"] > 0
