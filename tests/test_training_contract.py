"""What one training step of each stage hands on, through train.py on a generated synthetic set: the log row keys
that utils/health.py reads (a key renamed on either side fails here), the pictures, and a checkpoint that keeps
every option but the run's paths and rebuilds its model."""
import ast
import json
from pathlib import Path

import pytest
import torch

import options
import train as train_entry
from rebuild import load_model
from utils import health
from utils.checkpoint import load_checkpoint

TINY = {
    "gsp": ["--stage", "gsp", "--input_size", 64, 96, "--gsp_pose", "net"],
    "gsv": ["--stage", "gsv", "--pose", "gt", "--use_sem", "true", "--input_size", 32, 64, "--render_size", 16, 32,
            "--grid_size", 8, 8, 4, "--contracted", "false", "--encoder_layers", 18, "--encoder_weights", "none",
            "--image_neck", "fpn", "--feat_stride", 8, "--occ_decoder", "residual", "--decoder_blocks", 1,
            "--feat_dim", 8, "--voxel_feat_dim", 4],
}


def keys_read_by_health():
    """The row keys utils/health.py reads in its code: row[...], row.get(...), self._recent(...), frozen(...)."""
    tree = ast.parse(Path(health.__file__).read_text())
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "row":
            keys.add(node.slice.value)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "get" and isinstance(f.value, ast.Name)
                    and f.value.id == "row") or (isinstance(f, ast.Attribute) and f.attr == "_recent") \
                    or (isinstance(f, ast.Name) and f.id == "frozen"):
                keys.add(node.args[0].value)
    return keys


@pytest.fixture(scope="module")
def runs(synth_root, tmp_path_factory, one_thread):
    """Two steps of each stage (the second logged, pictures at every step), logs under one folder."""
    logs = tmp_path_factory.mktemp("contract")
    data = ["--dataroot", synth_root, "--version", "v1.0-synthetic", "--train_split",
            Path(synth_root) / "splits" / "train.txt", "--val_split", Path(synth_root) / "splits" / "val.txt"]
    for stage, argv in TINY.items():
        torch.manual_seed(0)
        train_entry.main([str(a) for a in [*argv, *data, "--exp_name", stage, "--log_dir", logs, "--max_steps", 2,
                                           "--log_every", 1, "--image_every", 1, "--val_every", -1,
                                           "--raster_backend", "torch", "--device", "cpu", "--num_workers", 0,
                                           "--lr_warmup", 0, "--num_epochs", 2]])
    return logs


def test_health_reads_the_keys_it_declares():
    assert keys_read_by_health() == {k for keys in health.STAGE_KEYS.values() for k in keys}


@pytest.mark.parametrize("stage", ["gsp", "gsv"])
def test_each_logged_row_holds_every_key_health_reads(runs, stage):
    rows = [json.loads(line) for line in open(runs / stage / "train_log.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    for row in rows:
        if "loss" in row:
            missing = set(health.STAGE_KEYS[stage]) - set(row)
            assert not missing, f"stage {stage} logs no {sorted(missing)}: utils/health.py reads them"
    assert list((runs / stage / "tb").glob("events.*"))  # scalars and the pictures of both steps


@pytest.mark.parametrize("stage", ["gsp", "gsv"])
def test_a_checkpoint_keeps_no_path_and_rebuilds_its_model(runs, stage):
    path = runs / stage / "ckpt" / "last.pt"
    state = load_checkpoint(path)
    assert state["step"] == 2 and state["opt"]["stage"] == stage
    assert not set(state["opt"]) & options.path_options()
    assert {"dataroot", "log_dir", "train_split", "stage1_ckpt"} <= options.path_options()
    assert state["opt"]["input_size"] == TINY[stage][TINY[stage].index("--input_size") + 1:][:2]
    model = load_model(path, stage=stage)
    weights = {k[7:] if k.startswith("module.") else k: v for k, v in state["model"].items()}
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("stage, later", [("gsp", {"gsp_rot_scale": 1.0, "gsp_pose": "net"}),
                                          ("gsv", {"opacity": "softmax", "depth_background": "none"})])
def test_an_old_checkpoint_with_every_path_still_loads(runs, stage, later, tmp_path):
    """Checkpoints written before kept every path and lack the options added since: they rebuild with the values
    those options had in effect then (CHECKPOINT_DEFAULTS), and their paths still count where a command gives none."""
    from rebuild import saved_options
    state = load_checkpoint(runs / stage / "ckpt" / "last.pt")
    old = {k: v for k, v in state["opt"].items() if k not in later}
    old.update(dataroot="/data/where/it/was", log_dir="logs", stage1_ckpt="logs/s1/ckpt/last.pt")
    torch.save({**state, "opt": old}, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt", stage=stage)
    assert {k: getattr(model.opt, k) for k in later} == later
    assert model.opt.dataroot == "/data/where/it/was"
    assert saved_options({"opt": old}, "old.pt", ["--dataroot", "here"]).dataroot == "here"


def test_the_untrained_checkpoint_is_the_trainers_step_0_and_evaluates(synth_root, tmp_path, one_thread):
    """tools/init_checkpoint writes what the trainer starts from (same seed -> same weights), at step 0, loadable by
    eval.py; it refuses a run folder that already holds training."""
    from tools.init_checkpoint import main as init_main
    data = ["--dataroot", synth_root, "--version", "v1.0-synthetic", "--train_split",
            Path(synth_root) / "splits" / "train.txt", "--val_split", Path(synth_root) / "splits" / "val.txt",
            "--log_dir", tmp_path, "--raster_backend", "torch", "--device", "cpu", "--num_workers", 0]
    argv = [str(a) for a in [*TINY["gsv"], *data]]
    for name in ("a", "b"):
        init_main(argv + ["--exp_name", name])
    a, b = (load_checkpoint(tmp_path / n / "ckpt" / "last.pt") for n in ("a", "b"))
    assert a["step"] == 0 and a["opt"]["stage"] == "gsv"
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    model = load_model(tmp_path / "a" / "ckpt" / "last.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    train_entry.main(argv + ["--exp_name", "a", "--max_steps", "1", "--val_every", "-1", "--image_every", "0"])
    with pytest.raises(SystemExit, match="holds a run at step 1: give the untrained checkpoint its own --exp_name"):
        init_main(argv + ["--exp_name", "a"])
