"""Hostile input and faults (issue 19, docs/bad_input.md): every bad case ends in one clear line that names the
file or option, nothing is lost, nothing is silently wrong.

Each case runs through an entry point: ``train.main`` / ``eval.main`` / ``tools.visualize.main`` in this process
(fast), or a real process where the case needs one (kill -9, SIGTERM, two runs at once, a full disk, run_vis.sh).
Data: the generated synthetic set of conftest (``synth_root``), seen through a folder of symlinks in which only
the files a case breaks are real copies; models: a tiny stage-2 network, or the toy model of tests/toy_train.py
that draws from every random generator (a resumed run repeats the uninterrupted one only if each is restored).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import eval as eval_entry
import options
import train as train_entry
import trainer as trainer_mod
from tests import toy_train
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.errors import DiskFull

REPO = Path(__file__).resolve().parents[1]
TOY = [sys.executable, str(REPO / "tests" / "toy_train.py")]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------- helpers

def run_main(main, argv):
    """The ``error:`` line an entry point exits with (fails the test when it exits 0)."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in argv])
    return str(stop.value.code)


def overlay(src, dst, edit=(), remove=()):
    """Dataset ``src`` seen from ``dst`` through symlinks; the paths in ``edit`` are real copies (to be broken),
    those in ``remove`` are absent. Returns ``dst``."""
    edit, remove = {Path(p) for p in edit}, {Path(p) for p in remove}

    def mirror(rel):
        s, d = Path(src) / rel, Path(dst) / rel
        if rel in remove:
            return
        if rel in edit:
            shutil.copy(s, d)
        elif any(rel in p.parents for p in edit | remove):
            d.mkdir(parents=True, exist_ok=True)
            for child in s.iterdir():
                mirror(rel / child.name)
        else:
            d.symlink_to(s)

    mirror(Path("."))
    return Path(dst)


def gsv_argv(root, logs, *extra):
    """A tiny stage-2 run on the synthetic set (recorded poses, 8 x 8 x 4 voxels, 32 x 64 inputs)."""
    return ["--stage", "gsv", "--pose", "gt", "--dataroot", root, "--version", "v1.0-synthetic",
            "--train_split", Path(root) / "splits" / "train.txt", "--val_split", Path(root) / "splits" / "val.txt",
            "--occ_root", "gts", "--use_sem", "true", "--input_size", 32, 64, "--render_size", 16, 32,
            "--grid_size", 8, 8, 4, "--contracted", "false", "--encoder_layers", 18, "--encoder_weights", "none",
            "--image_neck", "fpn", "--feat_stride", 8, "--occ_decoder", "residual", "--decoder_blocks", 1,
            "--feat_dim", 8, "--voxel_feat_dim", 4, "--raster_backend", "torch", "--device", "cpu",
            "--num_workers", 0, "--log_dir", logs, "--val_every", -1, "--image_every", 0, "--log_every", 1,
            "--lr_warmup", 0, "--num_epochs", 100, "--eval_rayiou", "false", *extra]


def toy_argv(logs, name, *extra):
    return ["--log_dir", logs, "--exp_name", name, "--device", "cpu", "--pose", "gt", "--batch_size", 2,
            "--num_epochs", 10, "--log_every", 1, "--val_every", -1, "--image_every", 0, "--lr", 1e-2,
            "--color_aug", 0.5, *extra]


def rows(run_dir):
    return [json.loads(line) for line in open(Path(run_dir) / "train_log.jsonl")]


def losses(run_dir):
    return {r["step"]: r["loss"] for r in rows(run_dir) if "loss" in r}


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture
def toy(monkeypatch):
    """train.main in this process trains the toy model on toy data."""
    monkeypatch.setattr(trainer_mod, "build_model", toy_train.ToyModel)
    monkeypatch.setattr(trainer_mod, "build_dataset", toy_train.ToyData)


@pytest.fixture(scope="module")
def toy_reference(tmp_path_factory):
    """Losses of an uninterrupted 12-step toy run (what every interrupted run must repeat)."""
    logs = tmp_path_factory.mktemp("toy_ref")
    mp = pytest.MonkeyPatch()
    mp.setattr(trainer_mod, "build_model", toy_train.ToyModel)
    mp.setattr(trainer_mod, "build_dataset", toy_train.ToyData)
    try:
        train_entry.main([str(a) for a in toy_argv(logs, "full", "--max_steps", 12, "--num_workers", 0)])
    finally:
        mp.undo()
    return losses(logs / "full")


@pytest.fixture(scope="module")
def ckpts(synth_root, tmp_path_factory):
    """Checkpoints of a tiny stage-2 model (trained with --occ_eval_mask camera) and of a stage-1 model."""
    from networks.gsp_model import GSPModel
    from networks.gsv_model import GSVModel
    out = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    gsv = options.parse_args([str(a) for a in gsv_argv(synth_root, out, "--occ_eval_mask", "camera")])
    save_checkpoint({"model": GSVModel(gsv).state_dict(), "opt": vars(gsv), "step": 1}, out / "gsv.pt")
    gsp = options.parse_args(["--stage", "gsp", "--gsp_pretrained", "false", "--input_size", "48", "64"])
    save_checkpoint({"model": GSPModel(gsp).state_dict(), "opt": vars(gsp), "step": 1}, out / "gsp.pt")
    return {"gsv": out / "gsv.pt", "gsp": out / "gsp.pt"}


def eval_argv(ckpt, out, *extra):
    return ["--ckpt", ckpt, "--out_dir", out, "--num_workers", 0, "--device", "cpu", "--eval_rayiou", "false",
            *extra]


def first_val_sample(root):
    from datasets.nuscenes_dataset import NuScenesDataset
    opt = options.parse_args(["--dataroot", str(root), "--version", "v1.0-synthetic", "--val_split",
                              str(Path(root) / "splits" / "val.txt"), "--adjacent", "keyframe"])
    return NuScenesDataset(opt, "val").samples[0]


def train_sample(root, adjacent="auto"):
    """The one training sample of the synthetic set (the first and last of its scene lack a neighbour)."""
    from datasets.nuscenes_dataset import NuScenesDataset
    opt = options.parse_args(["--dataroot", str(root), "--version", "v1.0-synthetic", "--train_split",
                              str(Path(root) / "splits" / "train.txt"), "--adjacent", adjacent])
    ds = NuScenesDataset(opt, "train")
    assert len(ds) == 1
    return ds.samples[0]


# ---------------------------------------------------------------- data at the edges

def test_one_missing_sweep_falls_back_for_its_frame_only_and_is_counted(synth_root, tmp_path, capsys):
    sample = train_sample(synth_root)
    gone = sample["prev"][0][0][3]  # the previous sweep of CAM_BACK
    assert gone.startswith("sweeps/")
    root = overlay(synth_root, tmp_path / "data", remove=[gone])
    train_entry.main([str(a) for a in gsv_argv(root, tmp_path / "logs", "--max_steps", 1)])
    out = capsys.readouterr().out
    assert "temporal neighbours = adjacent camera sweeps" in out
    assert (f"[data] warning: 1 of the 24 camera sweep files the neighbour frames use are missing (e.g. {gone}): "
            "1 of 4 neighbour frames use the adjacent keyframes instead (0.5 s away") in out  # 3 samples, 2 ends
    fallback = train_sample(root)
    capsys.readouterr()
    assert all(f.startswith("samples/") for f in fallback["prev"][0][0])  # that frame: keyframes, all 6 cameras
    assert fallback["next"][0][0] == sample["next"][0][0]  # the next frame keeps its sweeps
    step = [np.linalg.norm(m["cur"][1][0, :3, 3] - m["prev"][0][1][0, :3, 3]) for m in (sample, fallback)]
    assert step[1] == pytest.approx(6 * step[0], rel=1e-3)  # 0.5 s instead of 1/12 s
    assert load_checkpoint(tmp_path / "logs" / "debug" / "ckpt" / "last.pt")["step"] == 1
    msg = run_main(train_entry.main, gsv_argv(root, tmp_path / "logs2", "--adjacent", "sweep"))
    assert msg.startswith(f"error: --adjacent sweep: 1 of the 24 camera sweep files the neighbour frames use are "
                          f"missing (e.g. {gone}): restore them, or use --adjacent auto")


@pytest.mark.parametrize("fx, shown", [(0.0, "fx = 0, fy = 126.642"), (float("nan"), "non-finite values")])
def test_a_bad_focal_length_is_refused_by_train_and_eval(synth_root, ckpts, tmp_path, fx, shown):
    table = Path("v1.0-synthetic") / "calibrated_sensor.json"
    root = overlay(synth_root, tmp_path / "data", edit=[table])
    records = json.loads((root / table).read_text())
    sensors = {r["token"]: r["channel"] for r in json.loads((root / "v1.0-synthetic" / "sensor.json").read_text())}
    cam = next(r for r in records if sensors[r["sensor_token"]] == "CAM_FRONT")
    cam["camera_intrinsic"][0][0] = fx
    (root / table).write_text(json.dumps(records))
    where = f"error: {root / table} record {cam['token']} (CAM_FRONT): "
    for msg in (run_main(train_entry.main, gsv_argv(root, tmp_path / "logs")),
                run_main(eval_entry.main, eval_argv(ckpts["gsv"], tmp_path / "eval", "--dataroot", root))):
        assert msg.startswith(where) and shown in msg and msg.endswith("fix the calibration table")
    assert not (tmp_path / "eval").exists() and not (tmp_path / "logs").exists()


def test_an_ego_pose_that_is_not_a_rotation_is_refused(synth_root, tmp_path):
    table = Path("v1.0-synthetic") / "ego_pose.json"
    root = overlay(synth_root, tmp_path / "data", edit=[table])
    front = train_sample(synth_root)["cur"][0][0]
    sd = next(r for r in json.loads((root / "v1.0-synthetic" / "sample_data.json").read_text())
              if r["filename"] == front)
    records = json.loads((root / table).read_text())
    pose = next(r for r in records if r["token"] == sd["ego_pose_token"])
    pose["rotation"] = [0.0, 0.0, 0.0, 0.0]
    (root / table).write_text(json.dumps(records))
    msg = run_main(train_entry.main, gsv_argv(root, tmp_path / "logs"))
    assert msg == (f"error: {root / table} record {pose['token']}: rotation [0.0, 0.0, 0.0, 0.0] has norm 0, not a "
                   "unit quaternion (w x y z): fix the table")


@pytest.mark.parametrize("case", ["transposed", "shape", "float", "ids"])
def test_occ3d_labels_of_the_wrong_layout_are_refused_with_the_file(synth_root, ckpts, tmp_path, case):
    m = first_val_sample(synth_root)
    rel = Path("gts") / m["scene"] / m["token"] / "labels.npz"
    root = overlay(synth_root, tmp_path / "data", edit=[rel])
    with np.load(root / rel) as z:
        arrays = {k: z[k] for k in z.files}
    if case == "transposed":
        arrays["semantics"] = arrays["semantics"].transpose(2, 0, 1)
    elif case == "shape":
        arrays["mask_camera"] = arrays["mask_camera"][:100]
    elif case == "float":
        arrays["semantics"] = arrays["semantics"].astype(np.float32)
    else:
        arrays["semantics"][0, 0, 0] = 40
    np.savez(root / rel, **arrays)
    msg = run_main(eval_entry.main, eval_argv(ckpts["gsv"], tmp_path / "eval", "--dataroot", root))
    expected = {"transposed": "'semantics' has shape (16, 200, 200), expected (200, 200, 16) (transposed?",
                "shape": "'mask_camera' has shape (100, 200, 16), expected (200, 200, 16)",
                "float": "'semantics' is float32, expected uint8",
                "ids": "'semantics' holds values "}[case]
    assert msg.startswith(f"error: Occ3D labels {root / rel}: {expected}")
    assert case != "ids" or msg.endswith("..40, expected 0..17: export the labels again")
    assert not (tmp_path / "eval").exists()  # no metrics over misaligned voxels


def test_an_empty_split_file_is_named_by_train_and_eval(synth_root, ckpts, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# no token yet\n\n")
    want = f"error: split file {empty} lists no sample token (only blank or # comment lines)"
    assert run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "logs", "--train_split", empty)).startswith(want)
    msg = run_main(eval_entry.main, eval_argv(ckpts["gsv"], tmp_path / "eval", "--val_split", empty))
    assert msg.startswith(want) and not (tmp_path / "eval").exists()


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("key, value, must", [
    ("batch_size", "0", "must be at least 1"), ("input_size", "0 0", "each value must be at least 16"),
    ("grid_size", "80 80 0", "each value must be at least 1"), ("num_workers", "-1", "must be at least 0"),
    ("lr", "nan", "must be above 0")])
def test_option_ranges_name_the_option_and_where_it_was_set(tmp_path, key, value, must):
    argv = ["--pose", "gt", "--log_dir", tmp_path]
    msg = run_main(train_entry.main, argv + [f"--{key}", *value.split()])
    assert msg == f"error: --{key} {value} on the command line: {must}"
    cfg = tmp_path / "c.txt"
    cfg.write_text(f"# a config\n{key} = {value}\n")
    assert run_main(train_entry.main, argv + ["--config", cfg]) == f"error: --{key} {value} in {cfg}:2: {must}"
    assert not (tmp_path / "debug").exists()


def test_a_bad_value_type_is_one_line_with_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "c.txt"
    cfg.write_text("lr = 1e-3\ninput_size = 96 wide\n")
    msg = run_main(train_entry.main, ["--config", cfg])
    assert msg == f"error: {cfg}:2: input_size = 96 wide: expected an integer, got 'wide'"
    cfg.write_text("adjacent = sweeps\n")
    assert run_main(train_entry.main, ["--config", cfg]) == \
        f"error: {cfg}:1: adjacent = sweeps: expected one of auto, keyframe, sweep, got 'sweeps'"
    cfg.write_text("grid_size = 80 80\n")
    assert run_main(train_entry.main, ["--config", cfg]) == \
        f"error: {cfg}:1: grid_size = 80 80: expected 3 values, got 2"
    with pytest.raises(SystemExit) as stop:  # on the command line: argparse's message, without the usage dump
        train_entry.main(["--batch_size", "two"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: argument --batch_size: invalid int value: 'two' (`")


def test_config_errors_that_worked_before(tmp_path):
    cfg = tmp_path / "c.txt"
    cfg.write_text("batch_sise = 2\n")
    assert run_main(train_entry.main, ["--config", cfg]) == \
        f"error: {cfg}:1: unknown option 'batch_sise' (did you mean 'batch_size'?)"
    missing = tmp_path / "nope.txt"
    assert run_main(train_entry.main, ["--config", missing]) == f"error: config file not found: {missing}"


# ---------------------------------------------------------------- checkpoints of the wrong stage or model

def test_a_checkpoint_of_the_other_stage_is_named_as_such(synth_root, ckpts, tmp_path):
    gsp, gsv = ckpts["gsp"], ckpts["gsv"]
    msg = run_main(eval_entry.main, eval_argv(gsp, tmp_path / "e1", "--stage", "gsv"))
    assert msg.startswith(f"error: --ckpt {gsp} is a stage-1 (gsp) checkpoint, and this command asks for --stage gsv")
    msg = run_main(eval_entry.main, eval_argv(gsv, tmp_path / "e2", "--stage", "gsp"))
    assert msg.startswith(f"error: --ckpt {gsv} is a stage-2 (gsv) checkpoint, and this command asks for --stage gsp")
    msg = run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "l1", "--pose", "stage1", "--stage1_ckpt", gsv))
    assert msg.startswith(f"error: --stage1_ckpt {gsv} is a stage-2 (gsv) checkpoint where a stage-1 (gsp) one is "
                          "expected: stage 2 takes its camera motion from the stage-1 pose net")
    msg = run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "l2", "--load_weights", gsp))
    assert msg.startswith(f"error: --load_weights {gsp} is a stage-1 (gsp) checkpoint where a stage-2 (gsv) one is "
                          "expected")
    msg = run_main(eval_entry.main, eval_argv(gsv, tmp_path / "e3", "--voxel_feat_dim", 8))
    assert msg.startswith(f"error: checkpoint {gsv} does not fit the model of these options (0 missing, 0 "
                          "unexpected, ") and "leave out the model options given on this command line" in msg
    from tools import visualize
    msg = run_main(visualize.main, ["--ckpt", gsp, "--out_dir", tmp_path / "vis"])
    assert msg == f"error: {gsp} is a stage 'gsp' checkpoint; visualize.py draws stage 2 (gsv)"
    assert not any((tmp_path / d).exists() for d in ("e1", "e2", "e3", "vis", "l1"))


def test_load_weights_with_no_tensor_in_common_stops(tmp_path, toy):
    save_checkpoint({"model": {"other.weight": torch.zeros(2)}}, tmp_path / "w.pt")
    msg = run_main(train_entry.main, toy_argv(tmp_path, "t", "--load_weights", tmp_path / "w.pt"))
    assert msg.startswith(f"error: --load_weights {tmp_path / 'w.pt'}: none of its 1 tensors belongs to this model")
    missing = tmp_path / "none.pt"
    assert run_main(train_entry.main, toy_argv(tmp_path, "t", "--load_weights", missing)) == \
        f"error: --load_weights {missing} not found"


# ---------------------------------------------------------------- evaluation protocol

def test_eval_uses_the_protocol_defaults_unless_asked_and_says_which(ckpts, tmp_path, capsys):
    eval_entry.main([str(a) for a in eval_argv(ckpts["gsv"], tmp_path / "a")])
    out = capsys.readouterr().out
    assert ("[eval] --occ_eval_mask camera_lidar (inside mask_camera AND mask_lidar, the authors' protocol; the "
            "protocol default; the run was trained with camera, pass --occ_eval_mask camera for that)") in out
    assert "--rayiou_origins scene (" in out
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["occ_eval_mask"] == "camera_lidar"
    eval_entry.main([str(a) for a in eval_argv(ckpts["gsv"], tmp_path / "b", "--occ_eval_mask", "camera")])
    assert "[eval] --occ_eval_mask camera (inside mask_camera only; given here)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["occ_eval_mask"] == "camera" and metrics["samples"]["occ"] == 3


def test_data_errors_that_worked_before(synth_root, ckpts, tmp_path):
    m = first_val_sample(synth_root)
    rel = Path("gts") / m["scene"] / m["token"] / "labels.npz"
    root = overlay(synth_root, tmp_path / "data", edit=[rel])
    (root / rel).write_bytes((root / rel).read_bytes()[:500])
    msg = run_main(eval_entry.main, eval_argv(ckpts["gsv"], tmp_path / "eval", "--dataroot", root))
    assert msg.startswith(f"error: cannot read Occ3D labels {root / rel} (BadZipFile")
    missing = tmp_path / "nowhere"
    assert run_main(eval_entry.main, eval_argv(ckpts["gsv"], tmp_path / "eval", "--dataroot", missing)) == \
        f"error: nuScenes --dataroot not found: {missing}"
    msg = run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "logs", "--occ_root", "no_labels"))
    assert msg == f"error: --occ_root folder not found: {synth_root / 'no_labels'}"
    assert run_main(train_entry.main, gsv_argv(synth_root, tmp_path / "logs", "--pose", "stage1", "--stage1_ckpt",
                                               tmp_path / "s1.pt")).startswith(
        f"error: --stage1_ckpt {tmp_path / 's1.pt'} not found: train stage 1 and its refine phase first")


@pytest.mark.parametrize("broken", ["corrupt", "missing"])
def test_a_bad_image_is_named_and_nothing_is_saved_over(synth_root, tmp_path, broken):
    image = train_sample(synth_root)["cur"][0][0]
    root = overlay(synth_root, tmp_path / "data", **({"edit": [image]} if broken == "corrupt" else {"remove": [image]}))
    if broken == "corrupt":
        (root / image).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    msg = run_main(train_entry.main, gsv_argv(root, tmp_path / "logs"))
    want = f"error: cannot read image {root / image}" if broken == "corrupt" else \
        f"error: image missing: {root / image}"
    assert msg.startswith(want)
    assert not (tmp_path / "logs" / "debug" / "ckpt" / "last.pt").exists()  # nothing trained: nothing saved


# ---------------------------------------------------------------- faults in the loop, resume

def test_a_failed_step_saves_the_last_one_and_the_resume_repeats_the_losses(synth_root, tmp_path, monkeypatch,
                                                                             capsys):
    """The real stage-2 model with colour augmentation: an exception in the 2nd step leaves last.pt at step 1
    (save_every is 100), and the resumed run's losses equal the uninterrupted run's to 1e-6."""
    from networks.gsv_model import GSVModel
    base = gsv_argv(synth_root, tmp_path, "--max_steps", 3, "--save_every", 100, "--color_aug", 1.0)
    train_entry.main([str(a) for a in base + ["--exp_name", "full"]])
    forward, calls = GSVModel.forward, []

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return forward(self, batch)

    monkeypatch.setattr(GSVModel, "forward", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        train_entry.main([str(a) for a in base + ["--exp_name", "cut"]])
    path = tmp_path / "cut" / "ckpt" / "last.pt"
    assert f"RuntimeError after step 1: that step is saved to {path}" in capsys.readouterr().err
    assert load_checkpoint(path)["step"] == 1
    monkeypatch.setattr(GSVModel, "forward", forward)
    train_entry.main([str(a) for a in base + ["--exp_name", "cut"]])
    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(full) == sorted(cut) == [1, 2, 3] and [r["step"] for r in rows(tmp_path / "cut")] == [1, 2, 3]
    assert max(abs(full[s] - cut[s]) for s in full) <= 1e-6 and len(set(full.values())) == 3


class NanGradToy(toy_train.ToyModel):
    """A finite loss whose gradient is NaN (d sqrt(u) / du at u = 0, times 0): what passed the loss guard."""

    def forward(self, batch):
        loss, logs, outputs = super().forward(batch)
        return loss + torch.sqrt(self.lin.weight.sum() * 0), logs, outputs


def test_non_finite_gradients_are_skipped_like_non_finite_losses(tmp_path, toy, monkeypatch, capsys):
    monkeypatch.setattr(trainer_mod, "build_model", NanGradToy)
    msg = run_main(train_entry.main, toy_argv(tmp_path, "g", "--max_steps", 4, "--num_workers", 0,
                                              "--max_nan_skips", 2))
    abort = tmp_path / "g" / "ckpt" / "nan_abort.pt"
    assert msg == (f"error: 3 non-finite losses or gradients in a row at step 0; state saved to {abort.parent}/"
                   "nan_abort.pt (last good: last.pt)")
    assert "but non-finite gradients, step skipped (1 in a row)" in capsys.readouterr().out
    assert all(torch.isfinite(v).all() for v in load_checkpoint(abort)["model"].values())


def test_kill_9_resumes_at_the_exact_batch_with_every_random_state(toy_reference, tmp_path):
    """A real process killed with SIGKILL at least two logged steps after a checkpoint (every 3 steps): its lock
    file (a dead PID) does not block the resume, the rows of the steps that run again are replaced, not repeated,
    and the losses are those of the uninterrupted run (DataLoader with 2 workers)."""
    argv = [str(a) for a in toy_argv(tmp_path, "k", "--max_steps", 12, "--save_every", 3, "--num_workers", 2)]
    proc = subprocess.Popen(TOY + argv, env={**ENV, "TOY_STEP_SECONDS": "0.3"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = tmp_path / "k" / "train_log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 5) and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    logged = len(rows(tmp_path / "k"))
    assert proc.returncode == -signal.SIGKILL and 5 <= logged < 12, "killed too late: the test proves nothing"
    saved = load_checkpoint(tmp_path / "k" / "ckpt" / "last.pt")["step"]
    assert saved in (3, 6, 9) and logged >= saved
    assert f"PID {proc.pid} " in (tmp_path / "k" / "run.lock").read_text()
    r = subprocess.run(TOY + argv, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {tmp_path / 'k' / 'ckpt' / 'last.pt'} at step {saved} (epoch {saved // 4}, batch " \
           f"{saved % 4})" in r.stdout
    if logged > saved:  # (almost always: the kill comes 2 steps after the checkpoint at step 3)
        assert f"resume: {logged - saved} rows of {log} after step {saved} dropped (they run again)" in r.stdout
    assert [row["step"] for row in rows(tmp_path / "k")] == list(range(1, 13))
    got = losses(tmp_path / "k")
    assert max(abs(got[s] - toy_reference[s]) for s in toy_reference) <= 1e-6
    assert sorted(p.name for p in (tmp_path / "k" / "ckpt").iterdir()) == ["last.pt", "prev.pt"]


def test_sigterm_saves_and_the_resume_repeats_the_losses(toy_reference, tmp_path):
    argv = [str(a) for a in toy_argv(tmp_path, "s", "--max_steps", 12, "--save_every", 100, "--num_workers", 0)]
    proc = subprocess.Popen(TOY + argv, env={**ENV, "TOY_STEP_SECONDS": "0.3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "s" / "train_log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    step = load_checkpoint(tmp_path / "s" / "ckpt" / "last.pt")["step"]
    assert f"stopped by signal {int(signal.SIGTERM)} at step {step}; checkpoint saved" in out
    assert 3 <= step < 12, "stopped too late: the test proves nothing"
    again = subprocess.run(TOY + argv, env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    got = losses(tmp_path / "s")
    assert sorted(got) == list(range(1, 13)) and max(abs(got[s] - toy_reference[s]) for s in got) <= 1e-6


def test_sigterm_to_the_whole_process_group_with_loader_workers_saves_and_exits_cleanly(tmp_path):
    """A cluster's scancel (or Ctrl-C) signals every process of the job, the DataLoader workers too: the run still
    stops through the trainer (checkpoint saved, exit 0), not by a RuntimeError of a killed worker."""
    argv = [str(a) for a in toy_argv(tmp_path, "g", "--max_steps", 40, "--save_every", 100, "--num_workers", 2)]
    proc = subprocess.Popen(TOY + argv, env={**ENV, "TOY_STEP_SECONDS": "0.3"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = tmp_path / "g" / "train_log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 3) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the process group: the trainer and its 2 loader workers
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "DataLoader worker" not in err and "Traceback" not in err
    step = load_checkpoint(tmp_path / "g" / "ckpt" / "last.pt")["step"]
    assert f"stopped by signal {int(signal.SIGTERM)} at step {step}; checkpoint saved" in out
    assert 3 <= step < 40


def test_two_runs_in_one_folder_the_second_is_refused(tmp_path):
    """The second run stops before it writes anything; the first (then stopped by SIGTERM) keeps its options, its
    log rows (each step once) and its checkpoint."""
    first = [str(a) for a in toy_argv(tmp_path, "same", "--num_epochs", 1000, "--num_workers", 0, "--seed", 1)]
    second = [str(a) for a in toy_argv(tmp_path, "same", "--max_steps", 6, "--num_workers", 0, "--seed", 2)]
    a = subprocess.Popen(TOY + first, env={**ENV, "TOY_STEP_SECONDS": "0.2"}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    log = tmp_path / "same" / "train_log.jsonl"
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    b = subprocess.run(TOY + second, env=ENV, capture_output=True, text=True, timeout=120)
    assert a.poll() is None, "the first run ended before the second started: the test proves nothing"
    a.send_signal(signal.SIGTERM)
    out, err = a.communicate(timeout=60)
    assert b.returncode == 1 and "Traceback" not in b.stderr
    assert last_line(b.stderr).startswith(f"error: run folder {tmp_path / 'same'} is in use by another run (PID "
                                          f"{a.pid} on ")
    assert last_line(b.stderr).endswith("give this run another --exp_name or --log_dir")
    assert a.returncode == 0 and "stopped by signal" in out, err
    assert "seed = 1" in (tmp_path / "same" / "options.txt").read_text()  # the first run's, untouched
    steps = [r["step"] for r in rows(tmp_path / "same")]
    assert steps == list(range(1, len(steps) + 1))
    state = load_checkpoint(tmp_path / "same" / "ckpt" / "last.pt")
    assert state["opt"]["seed"] == 1 and state["step"] == steps[-1]


def test_a_full_disk_while_saving_is_one_line_and_the_previous_checkpoint_survives(tmp_path):
    argv = [str(a) for a in toy_argv(tmp_path, "full", "--max_steps", 6, "--save_every", 2, "--num_workers", 0)]
    r = subprocess.run(TOY + argv, env={**ENV, "TOY_DISK_FULL_AFTER": "1"}, capture_output=True, text=True,
                       timeout=120)
    path = tmp_path / "full" / "ckpt" / "last.pt"
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert last_line(r.stderr) == (f"error: disk full writing checkpoint {path} (No space left on device; the "
                                   "previous checkpoint is kept): free space on that disk, then rerun the same "
                                   "command to resume")
    assert load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left


def test_checkpoint_writer_keeps_prev_and_reports_a_full_disk(tmp_path, monkeypatch):
    from utils import checkpoint
    path = tmp_path / "last.pt"
    for step in (1, 2):
        save_checkpoint({"model": {}, "step": step}, path, keep_previous=True)
    assert load_checkpoint(tmp_path / "prev.pt")["step"] == 1 and load_checkpoint(path)["step"] == 2
    real = checkpoint._open_for_writing
    monkeypatch.setattr(checkpoint, "_open_for_writing", lambda fd: toy_train.FullDisk(real(fd), 100))
    with pytest.raises(DiskFull, match="the previous checkpoint is kept"):
        save_checkpoint({"model": {"w": torch.zeros(1000)}, "step": 3}, path, keep_previous=True)
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "prev.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "prev.pt"]


def test_a_truncated_last_checkpoint_falls_back_to_prev(tmp_path, toy, capsys):
    train_entry.main([str(a) for a in toy_argv(tmp_path, "t", "--max_steps", 4, "--save_every", 2,
                                               "--num_workers", 0)])
    ckpt = tmp_path / "t" / "ckpt"
    data = (ckpt / "last.pt").read_bytes()
    (ckpt / "last.pt").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    train_entry.main([str(a) for a in toy_argv(tmp_path, "t", "--max_steps", 6, "--num_workers", 0)])
    out = capsys.readouterr().out
    assert (f"warning: {ckpt / 'last.pt'} is unreadable (truncated?), kept as last.pt.unreadable: resuming from "
            f"{ckpt / 'prev.pt'} (step 2)") in out
    assert [r["step"] for r in rows(tmp_path / "t")] == list(range(1, 7))  # steps 3 and 4 ran again, logged once
    assert load_checkpoint(ckpt / "last.pt")["step"] == 6 and (ckpt / "last.pt.unreadable").exists()
    (ckpt / "prev.pt").unlink()
    (ckpt / "last.pt").write_bytes(b"truncated")
    msg = run_main(train_entry.main, toy_argv(tmp_path, "t", "--max_steps", 8, "--num_workers", 0))
    assert msg.startswith(f"error: cannot read checkpoint {ckpt / 'last.pt'} (")
    assert msg.endswith("(no prev.pt to fall back on; --resume false starts over)")


def test_run_vis_without_a_checkpoint_says_what_to_set(tmp_path):
    r = subprocess.run(["sh", str(REPO / "run_vis.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**ENV, "GSOCC_PYTHON": sys.executable, "CKPT": ""})
    assert r.returncode == 1 and r.stderr.strip() == "set CKPT to a stage-2 checkpoint, or GT_ONLY=1"


def test_every_default_output_folder_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = ["vis/scene-0916/0000_frame.png", "logs/quick-gsv/ckpt/last.pt", "logs/quick-gsv/run.lock",
               "bench_render/bench_render.md", "bench_step/step.json", "outputs/x.png"]
    r = subprocess.run(["git", "check-ignore", *outputs], cwd=REPO, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(outputs)


def test_a_failing_run_with_loader_workers_exits_instead_of_hanging(synth_root, tmp_path):
    """With 2 DataLoader workers (which ignore SIGTERM so that a process-group signal goes through the trainer), a
    missing image ends the process with its error line; before stop_loader_workers it hung at exit forever."""
    image = train_sample(synth_root)["cur"][0][0]
    root = overlay(synth_root, tmp_path / "data", remove=[image])
    argv = [str(a) for a in gsv_argv(root, tmp_path / "logs", "--num_workers", 2, "--max_steps", 5)]
    try:
        r = subprocess.run([sys.executable, str(REPO / "train.py")] + argv, cwd=REPO, env=ENV, capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("train.py did not exit within 120 s of a missing image (hung on its loader workers)")
    assert r.returncode == 1 and last_line(r.stderr) == f"error: image missing: {root / image}"
