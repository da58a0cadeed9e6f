"""The training loop shared by stage 1 (GSP) and stage 2 (GSV).

One process or torchrun (DDP, one or several nodes; SyncBatchNorm across GPUs); AMP (bf16 / fp16); tqdm
progress; tensorboardX scalars and images, the same scalars in ``<run>/train_log.jsonl`` with the throughput
(steps/s, data-wait time, peak GPU memory); checkpoints written atomically every ``save_every`` steps and at the
end, resumed automatically from ``<run>/ckpt/last.pt`` at the exact position in the epoch (the batches consumed
are stored, so a batch skipped by the guard that skips non-finite losses does not shift it); periodic
validation with the metrics of ``eval.py`` on a validation set built once. A run killed by SIGTERM / Ctrl-C saves
a checkpoint first.

Data path: the training set leaves out the evaluation-only labels (dense LiDAR depth, Occ3D volumes) and hands
over uint8 images (float on the GPU); one DataLoader with persistent workers and prefetching lives for the whole
run; the speed options of ``utils/speed.py`` apply on CUDA.
"""
import json
import math
import os
import signal
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from datasets import EVAL_ONLY_KEYS, build_dataset, collate
from datasets.sampler import EpochSampler
from networks import build_model
from options import ConfigError, dump_options
from utils import dist
from utils.augment import color_jitter
from utils.batch import to_device
from utils.health import TrainingHealth
from utils.checkpoint import load_checkpoint, load_weights, save_checkpoint, strip_module_prefix
from utils.speed import prepare_model
from utils.throughput import Throughput, timed_batches


def check_options(opt):
    """Stop before any work, with the fix, when the options cannot work (ConfigError)."""
    if opt.stage == "gsv" and opt.pose == "stage1":
        if not opt.stage1_ckpt:
            raise ConfigError(
                "stage 2 with --pose stage1 (the default) needs --stage1_ckpt PATH, a stage-1 checkpoint. Start from "
                "a config instead: `sh run_gs_occ.sh` trains stage 1 then stage 2 and evaluates; `python train.py "
                "--config configs/quick-gsp.txt` trains stage 1 alone; `--pose gt` uses the recorded ego poses "
                "(an ablation). `python train.py --help` lists every option")
        if not os.path.isfile(opt.stage1_ckpt):
            raise ConfigError(f"--stage1_ckpt {opt.stage1_ckpt} not found: train stage 1 and its refine phase first "
                              "(sh run_gs_occ.sh does both), or use --pose gt")
    if opt.load_weights and not os.path.isfile(opt.load_weights):
        raise ConfigError(f"--load_weights {opt.load_weights} not found")


def param_groups(params):
    """``model.trainable_parameters()`` -> optimiser groups, each with an ``lr_scale`` (its lr = lr_scale x the
    scheduled lr). Takes parameters (one group, lr_scale 1) or dicts(params=[...], lr_scale=float); parameters
    that need no gradient are left out, and so are groups left empty."""
    items = list(params)
    if items and not isinstance(items[0], dict):
        items = [{"params": items}]
    groups = []
    for g in items:
        ps = [p for p in g["params"] if p.requires_grad]
        if ps:
            groups.append({**g, "params": ps, "lr_scale": float(g.get("lr_scale", 1.0))})
    return groups


def make_loader(dataset, sampler, opt, device):
    """The training DataLoader, made once a run: its workers persist across epochs (``sampler.set_epoch`` changes
    the order), each prepares ``prefetch_factor`` batches ahead, batches come in pinned memory on CUDA."""
    workers = opt.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=opt.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=opt.prefetch_factor if workers > 0 else None)


class Trainer:
    def __init__(self, opt):
        check_options(opt)
        self.opt = opt
        self.rank, self.world, self.device = dist.init_distributed(opt.device)
        torch.manual_seed(opt.seed + self.rank)
        np.random.seed(opt.seed + self.rank)
        self.train_set = self._dataset("train")  # before anything slow: bad data paths fail at once
        self.val_set = None  # built at the first validation, then kept
        if len(self.train_set) < self.world * opt.batch_size:
            raise ConfigError(f"the train split has {len(self.train_set)} samples: fewer than one batch of "
                              f"--batch_size {opt.batch_size} per process ({self.world})")
        self.run_dir = os.path.join(opt.log_dir, opt.exp_name)
        self.ckpt_dir = os.path.join(self.run_dir, "ckpt")
        if dist.is_main():
            os.makedirs(self.ckpt_dir, exist_ok=True)
            dump_options(opt, os.path.join(self.run_dir, "options.txt"))

        self.model = build_model(opt).to(self.device)
        if opt.load_weights:
            load_weights(self.model, opt.load_weights, log=print if dist.is_main() else lambda msg: None)
        self._speed_up()
        groups = param_groups(self.model.trainable_parameters())
        if not groups:
            raise RuntimeError("the model has no trainable parameters for this phase")
        self.optimizer = torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
        self.ddp = self.world > 1
        self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                       find_unused_parameters=True) if self.ddp else self.model

        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opt.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            if dist.is_main():
                print(f"--amp {opt.amp} needs CUDA: training in float32 on {self.device}")
            self.amp_dtype = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.sampler = EpochSampler(len(self.train_set), self.rank, self.world, opt.seed)
        self.steps_per_epoch = self.sampler.per_rank() // opt.batch_size
        self.total_steps = opt.num_epochs * self.steps_per_epoch
        if opt.max_steps > 0:
            self.total_steps = min(self.total_steps, opt.max_steps)
        self.milestones = [int(f * self.total_steps) for f in opt.lr_milestones]

        self.step, self.epoch, self.epoch_batches = 0, 0, 0  # epoch_batches: batches of this epoch consumed
        self.aug_generator = torch.Generator().manual_seed(opt.seed * 1000003 + self.rank)
        self.health = TrainingHealth(after=opt.lr_warmup)  # reads the logged rows, warns when a run has failed
        self.writer = None
        if dist.is_main():
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"))
        self.stop_signal = None
        self._resume()

    def _speed_up(self):
        """SyncBatchNorm under DDP on GPUs, then the speed options (utils/speed.py); says what it did."""
        self.model, n_bn = dist.sync_batchnorm(self.model, self.world, self.device, self.opt.sync_bn)
        done = prepare_model(self.model, self.opt, self.device)
        if n_bn:
            done.append(f"SyncBatchNorm ({n_bn} layers, {self.world} processes)")
        if done and dist.is_main():
            print(f"[speed] {'; '.join(done)}")

    def _dataset(self, split):
        """Training: without the evaluation-only labels, uint8 images; validation: every label, as eval.py."""
        train = split == "train"
        return build_dataset(self.opt, split, eval_labels=not train, uint8_images=train)

    # ---------------------------------------------------------------- checkpoints
    def _state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "epoch_batches": self.epoch_batches, "world": self.world, "batch_size": self.opt.batch_size,
                "opt": vars(self.opt)}

    def save(self, name="last.pt"):
        if dist.is_main():
            save_checkpoint(self._state(), os.path.join(self.ckpt_dir, name))

    def _resume(self):
        path = os.path.join(self.ckpt_dir, "last.pt")
        if not (self.opt.resume and os.path.isfile(path)):
            return
        state = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(strip_module_prefix(state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        # Checkpoints from before the position was stored: derived from the step count (exact without NaN skips).
        self.epoch_batches = state.get("epoch_batches", self.step - self.epoch * self.steps_per_epoch)
        same_split = (state.get("world", self.world), state.get("batch_size", self.opt.batch_size)) == \
            (self.world, self.opt.batch_size)
        if not (same_split and 0 <= self.epoch_batches <= self.steps_per_epoch):
            if dist.is_main():
                print(f"resume: the position in epoch {self.epoch} cannot be restored (another number of processes or "
                      f"batch size, or an old checkpoint after a skipped step): the epoch restarts")
            self.epoch_batches = 0
        if dist.is_main():
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.epoch_batches})")

    # ---------------------------------------------------------------- loop
    def lr_factor(self, step):
        """Multiplier of every parameter group's base lr at ``step``: linear warm-up, then / 10 per milestone."""
        warm = min(1.0, (step + 1) / self.opt.lr_warmup) if self.opt.lr_warmup > 0 else 1.0
        return warm * 0.1 ** sum(step >= m for m in self.milestones)

    def lr_at(self, step):
        return self.opt.lr * self.lr_factor(step)

    def _on_signal(self, signum, frame):
        self.stop_signal = signum

    def train(self):
        opt = self.opt
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        t0 = time.time()
        nan_run = 0
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not dist.is_main(), desc=f"train {opt.stage}",
                   dynamic_ncols=True)
        loader = make_loader(self.train_set, self.sampler, opt, self.device)
        self.perf = Throughput(self.device)
        try:
            while self.step < self.total_steps and self.epoch < opt.num_epochs and self.stop_signal is None:
                self.sampler.set_epoch(self.epoch, skip=self.epoch_batches * opt.batch_size)
                for batch in timed_batches(loader, self.perf.waited):
                    self.epoch_batches += 1  # consumed, whatever the NaN guard does with it
                    if self.epoch_batches == self.steps_per_epoch:
                        self.epoch, self.epoch_batches = self.epoch + 1, 0
                    nan_run = self._train_step(batch, nan_run, bar)
                    if self.step >= self.total_steps or self.stop_signal is not None:
                        break
                    if opt.max_minutes > 0 and (time.time() - t0) / 60 > opt.max_minutes:
                        if dist.is_main():
                            print(f"\n--max_minutes {opt.max_minutes} reached at step {self.step}")
                        self.total_steps = self.step
                        break
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.save()
        if self.stop_signal is not None:
            if dist.is_main():
                print(f"stopped by signal {self.stop_signal} at step {self.step}; checkpoint saved, rerun to resume")
            return None
        metrics = self.validate() if opt.val_every >= 0 else None
        if self.writer:
            self.writer.close()
        return metrics

    def _train_step(self, batch, nan_run, bar):
        opt = self.opt
        self.perf.stepped()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)  # each group's own multiple of the schedule
        batch = to_device(batch, self.device, skip=EVAL_ONLY_KEYS)
        if opt.color_aug > 0 and "imgs" in batch:
            batch["imgs_net"] = color_jitter(batch["imgs"], opt.color_aug, self.aug_generator)
        self.net.train()
        if hasattr(self.model, "set_step"):  # schedules inside the criterion
            self.model.set_step(self.step)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss, logs, outputs = self.net(batch)
        finite = torch.tensor(float(torch.isfinite(loss).all()), device=self.device)
        if dist.all_reduce_sum(finite).item() < self.world:
            self.optimizer.zero_grad(set_to_none=True)
            nan_run += 1
            if dist.is_main():
                tqdm.write(f"step {self.step}: non-finite loss ({ {k: float(v) for k, v in logs.items()} }), "
                           f"step skipped ({nan_run} in a row)")
            if nan_run > opt.max_nan_skips:
                self.save("nan_abort.pt")
                raise FloatingPointError(f"{nan_run} non-finite losses in a row at step {self.step}; state saved to "
                                         f"{self.ckpt_dir}/nan_abort.pt (last good: last.pt)")
            return nan_run
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if opt.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), opt.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        bar.update(1)
        if dist.is_main():
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.step % opt.log_every == 0 or self.step == 1:
                self.writer.add_scalar("train/loss", loss.item(), self.step)
                self.writer.add_scalar("train/lr", self.lr_at(self.step), self.step)
                row = {"step": self.step, "epoch": self.epoch, "loss": loss.item(), "lr": self.lr_at(self.step)}
                for k, v in logs.items():
                    row[k] = float(v)
                    self.writer.add_scalar(f"train/{k}", row[k], self.step)
                self._log_throughput(row)
                rows = [row] + [{"step": self.step, "warning": kind, "message": msg}
                                for kind, msg in self.health.check(row)]
                for r in rows[1:]:
                    tqdm.write(f"[health] step {self.step}: {r['message']}")
                    self.writer.add_text("health", r["message"], self.step)
                with open(os.path.join(self.run_dir, "train_log.jsonl"), "a") as f:  # the same, for plain plots
                    f.writelines(json.dumps(r) + "\n" for r in rows)
            if opt.image_every > 0 and self.step % opt.image_every == 0:
                with torch.no_grad():
                    for k, img in self.model.visualise(batch, outputs).items():
                        self.writer.add_image(f"train/{k}", img, self.step)
        if self.step % opt.save_every == 0:
            self.save()
        if opt.val_every > 0 and self.step % opt.val_every == 0 and self.step < self.total_steps:
            self.validate()
        return 0

    def _log_throughput(self, row):
        """Adds steps/s, data wait, peak memory (this process) and the samples seen (all processes) to ``row``."""
        perf = self.perf.report()
        perf["samples"] = self.step * self.opt.batch_size * self.world
        for k, v in perf.items():
            self.writer.add_scalar(f"perf/{k}", v, self.step)
        row.update(perf)

    def validate(self):
        from eval import evaluate
        if self.val_set is None:
            self.val_set = self._dataset("val")
        metrics = evaluate(self.model, self.val_set, self.opt, self.device)
        if dist.is_main():
            for k, v in metrics.get("scalars", {}).items():
                if v is not None and math.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, self.step)
            with open(os.path.join(self.run_dir, f"val_step{self.step:07d}.json"), "w") as f:
                json.dump(metrics, f, indent=1)
            print(metrics.get("text", ""))
        return metrics
