"""The training loop and the options: config files, resume, atomic checkpoints, the NaN guard, the sampler."""
import json
import os

import numpy as np

import pytest
import torch

import options
import trainer as trainer_mod
from utils.checkpoint import load_checkpoint, save_checkpoint


class ToyData(torch.utils.data.Dataset):
    """8 items; like the real training sets, the evaluation-only labels only with ``eval_labels``."""

    def __init__(self, eval_labels=True):
        self.eval_labels = eval_labels

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        item = {"x": torch.randn(4, generator=g), "token": f"t{i}"}
        if self.eval_labels:
            item["depth_gt"] = torch.zeros(2, 3)
        return item


class ToyModel(torch.nn.Module):
    """Fits y = sum(x) with a linear layer; ``nan_steps`` calls return a NaN loss; ``seen`` lists the tokens of
    every batch it was called with."""

    def __init__(self, nan_steps=()):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.calls, self.nan_steps, self.seen = 0, set(nan_steps), []

    def trainable_parameters(self):
        return self.parameters()

    def forward(self, batch):
        assert "depth_gt" not in batch, "evaluation-only labels reached the training step"
        self.seen.append(list(batch["token"]))
        x = batch["x"]
        loss = ((self.lin(x)[:, 0] - x.sum(1)) ** 2).mean()
        if self.calls in self.nan_steps:
            loss = loss * float("nan")
        self.calls += 1
        return loss, {"mse": loss.detach()}, {}


def make_opt(tmp_path, *extra):
    argv = ["--log_dir", str(tmp_path), "--exp_name", "toy", "--num_workers", "0", "--val_every", "-1",
            "--device", "cpu", "--batch_size", "2", "--num_epochs", "10", "--log_every", "1", "--image_every", "0",
            "--lr", "1e-2", "--pose", "gt", *extra]
    return options.parse_args(argv)


@pytest.fixture
def toy(monkeypatch):
    models = []

    def build_model(opt):
        models.append(ToyModel(getattr(opt, "_nan_steps", ())))
        return models[-1]

    monkeypatch.setattr(trainer_mod, "build_model", build_model)
    monkeypatch.setattr(trainer_mod, "build_dataset",
                        lambda opt, split, eval_labels=True, uint8_images=False: ToyData(eval_labels))
    return models


def test_train_then_resume_continues_from_the_checkpoint(tmp_path, toy):
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "5", "--save_every", "100"))
    t.train()
    ckpt = load_checkpoint(os.path.join(tmp_path, "toy", "ckpt", "last.pt"))
    assert ckpt["step"] == 5 and ckpt["epoch"] == 1  # 4 steps an epoch (8 samples, batch 2)
    w5 = ckpt["model"]["lin.weight"].clone()

    t2 = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "9"))
    assert t2.step == 5 and torch.equal(t2.model.lin.weight.detach(), w5)
    t2.train()
    assert t2.step == 9 and toy[-1].calls == 4  # only the 4 missing steps ran
    assert load_checkpoint(os.path.join(tmp_path, "toy", "ckpt", "last.pt"))["step"] == 9
    assert (tmp_path / "toy" / "options.txt").read_text().count("max_steps = 9") == 1


def test_resumed_epoch_sees_the_same_remaining_samples():
    full = trainer_mod.EpochSampler(10, seed=3)
    full.set_epoch(2)
    order = list(full)
    part = trainer_mod.EpochSampler(10, seed=3)
    part.set_epoch(2, skip=4)
    assert list(part) == order[4:] and len(part) == 6
    ranks = [trainer_mod.EpochSampler(10, rank=r, world=3, seed=3) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    seen = [i for s in ranks for i in s]
    assert len(seen) == 9 and len(set(seen)) == 9  # drop_last split, no sample twice


def test_a_nan_loss_is_skipped_without_touching_the_weights(tmp_path, toy):
    opt = make_opt(tmp_path, "--max_steps", "3")
    opt._nan_steps = (1,)
    t = trainer_mod.Trainer(opt)
    t.train()
    assert t.step == 3 and toy[-1].calls == 4  # one call skipped, three optimiser steps
    assert torch.isfinite(t.model.lin.weight).all()


def test_too_many_nans_stop_with_an_error_and_a_saved_state(tmp_path, toy):
    opt = make_opt(tmp_path, "--max_steps", "20", "--max_nan_skips", "2")
    opt._nan_steps = range(100)
    t = trainer_mod.Trainer(opt)
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.train()
    assert os.path.isfile(os.path.join(tmp_path, "toy", "ckpt", "nan_abort.pt"))


def test_lr_drops_at_the_milestones(tmp_path, toy):
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "10", "--lr_milestones", "0.5", "0.8",
                                     "--lr_warmup", "0"))
    assert [t.lr_at(s) for s in (0, 4, 5, 8)] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4])


def test_lr_warms_up_linearly_then_drops(tmp_path, toy):
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "20", "--lr_milestones", "0.5", "--lr_warmup", "4"))
    assert [t.lr_at(s) for s in (0, 1, 3, 9, 10)] == pytest.approx([2.5e-3, 5e-3, 1e-2, 1e-2, 1e-3])


def test_atomic_checkpoint_keeps_the_old_file_when_a_save_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "step": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_config_files(tmp_path):
    cfg = tmp_path / "c.txt"
    cfg.write_text("# comment\nbatch_size = 3   # trailing comment\ninput_size = 64 96\nresume = false\n")
    opt = options.parse_args(["--config", str(cfg), "--batch_size", "5"])
    assert opt.batch_size == 5 and opt.input_size == [64, 96] and opt.resume is False  # CLI wins
    cfg.write_text("batch_size = 3\nbatch_sise = 4\n")
    with pytest.raises(options.ConfigError, match=r"c.txt:2: unknown option 'batch_sise' \(did you mean 'batch_size'\?\)"):
        options.parse_args(["--config", str(cfg)])
    with pytest.raises(options.ConfigError, match="not found"):
        options.parse_args(["--config", str(tmp_path / "missing.txt")])


def test_checkpoint_options_are_merged_with_explicit_ones(tmp_path):
    saved = vars(options.parse_args(["--grid_size", "10", "10", "4", "--lr", "0.5"]))
    saved["removed_option"] = 1
    opt = options.merge_checkpoint_options(saved, ["--lr", "0.25"])
    assert opt.grid_size == [10, 10, 4] and opt.lr == 0.25 and not hasattr(opt, "removed_option")


def test_every_shipped_config_parses():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    names = sorted(os.listdir(root))
    assert len(names) >= 10
    for name in names:
        opt = options.parse_args(["--config", os.path.join(root, name)])
        assert opt.stage in ("gsp", "gsv")


class GroupToy(ToyModel):
    """ToyModel whose bias trains at 10x the scheduled lr (like GSVModel's 3D decoder)."""

    def trainable_parameters(self):
        return [{"params": [self.lin.weight], "lr_scale": 1.0}, {"params": [self.lin.bias], "lr_scale": 10.0}]


def test_parameter_groups_follow_the_schedule_at_their_own_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_mod, "build_model", lambda opt: GroupToy())
    monkeypatch.setattr(trainer_mod, "build_dataset", lambda opt, split, **kw: ToyData())
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "4", "--lr_milestones", "0.5", "--lr_warmup", "0"))
    assert len(t.optimizer.param_groups) == 2
    t.train()
    # the last step (index 3) ran after the milestone at step 2: lr 1e-3, and 10x that for the bias group
    assert [g["lr"] for g in t.optimizer.param_groups] == pytest.approx([1e-3, 1e-2])
    plain = trainer_mod.param_groups(torch.nn.Linear(2, 1).requires_grad_(False).parameters())
    assert plain == []  # nothing trainable: no group (the Trainer then stops with a clear error)


def test_load_weights_names_missing_unexpected_and_mismatched_keys(tmp_path, toy, capsys):
    src = torch.nn.Sequential(torch.nn.Linear(4, 1))
    weights = {"lin.weight": torch.full((1, 4), 0.5), "head.bias": torch.zeros(3)}  # lin.bias missing
    save_checkpoint({"model": weights}, str(tmp_path / "w.pt"))
    t = trainer_mod.Trainer(make_opt(tmp_path, "--load_weights", str(tmp_path / "w.pt")))
    out = capsys.readouterr().out
    assert "1 missing, 1 unexpected" in out and "missing (left as initialised): lin.bias" in out
    assert "unexpected (ignored): head.bias" in out and torch.equal(t.model.lin.weight.detach(), weights["lin.weight"])
    save_checkpoint({"model": {"module.lin.weight": torch.zeros(2, 4), **src.state_dict()}}, str(tmp_path / "b.pt"))
    with pytest.raises(ValueError, match=r"lin.weight: checkpoint \(2, 4\) vs model \(1, 4\)"):
        trainer_mod.Trainer(make_opt(tmp_path, "--load_weights", str(tmp_path / "b.pt")))


def epochs_of(seen, per_epoch=4):
    """The tokens a model saw, grouped by epoch (``per_epoch`` batches each)."""
    flat = [t for batch in seen for t in batch]
    return [sorted(flat[i:i + 2 * per_epoch]) for i in range(0, len(flat), 2 * per_epoch)]


def test_a_skipped_nan_step_does_not_shift_the_epochs(tmp_path, toy):
    """The NaN guard consumes a batch without an optimiser step: the next epoch must still be a whole epoch
    (deriving the position from the step count made it a 1-batch epoch followed by an extra epoch)."""
    opt = make_opt(tmp_path, "--num_epochs", "2")
    opt._nan_steps = (1,)
    t = trainer_mod.Trainer(opt)
    t.train()
    everything = sorted(f"t{i}" for i in range(8))
    assert epochs_of(toy[-1].seen) == [everything, everything]  # two whole epochs, nothing more
    assert t.step == 7 and t.epoch == 2 and toy[-1].calls == 8


def test_resume_after_a_skipped_step_continues_where_the_epoch_stopped(tmp_path, toy):
    opt = make_opt(tmp_path, "--max_steps", "2", "--num_epochs", "2")
    opt._nan_steps = (1,)
    trainer_mod.Trainer(opt).train()  # 3 batches consumed (one NaN), 2 steps
    first = toy[-1].seen
    saved = load_checkpoint(os.path.join(tmp_path, "toy", "ckpt", "last.pt"))
    t2 = trainer_mod.Trainer(make_opt(tmp_path, "--num_epochs", "2"))
    t2.train()
    everything = sorted(f"t{i}" for i in range(8))
    assert epochs_of(first + toy[-1].seen) == [everything, everything]
    assert t2.step == 7 and len(toy[-1].seen) == 5  # the 4th batch of epoch 0, then epoch 1
    assert (saved["step"], saved["epoch"], saved["epoch_batches"]) == (2, 0, 3)


def test_throughput_is_logged(tmp_path, toy):
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "3"))
    t.train()
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "toy", "train_log.jsonl"))]
    rows = [r for r in rows if "warning" not in r]  # the health check may add warning lines
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["steps_per_s"] > 0 and r["data_wait_s"] >= 0 and 0 <= r["data_wait_frac"] <= 1
        assert r["samples"] == 2 * r["step"] and r["time_s"] > 0
    assert rows[-1]["time_s"] >= rows[0]["time_s"]


def test_validation_set_is_built_once(tmp_path, toy, monkeypatch):
    import eval as eval_mod
    built = []
    monkeypatch.setattr(trainer_mod, "build_dataset",
                        lambda opt, split, eval_labels=True, uint8_images=False: built.append(split) or ToyData())
    monkeypatch.setattr(eval_mod, "evaluate", lambda model, ds, opt, device: {"scalars": {}, "text": ""})
    t = trainer_mod.Trainer(make_opt(tmp_path, "--max_steps", "6", "--val_every", "2"))
    t.train()
    assert built == ["train", "val"]  # validations at steps 2 and 4, and at the end: one val set


def test_to_device_drops_eval_labels_and_turns_uint8_images_into_the_same_floats():
    from datasets import EVAL_ONLY_KEYS
    from utils.batch import to_device
    imgs = torch.randint(0, 256, (1, 3, 6, 3, 4, 5), dtype=torch.uint8)
    batch = {"imgs": imgs, "depth_gt": torch.ones(1, 6, 9, 16), "occ_semantics": torch.zeros(1, 2), "token": ["a"]}
    out = to_device(batch, torch.device("cpu"), skip=EVAL_ONLY_KEYS)
    assert set(out) == {"imgs", "token"}
    expected = torch.from_numpy(imgs.numpy().astype(np.float32) / 255.0)  # what the float loader computes
    assert out["imgs"].dtype == torch.float32 and torch.equal(out["imgs"], expected)
