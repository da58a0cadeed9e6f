"""The training loop shared by stage 1 (GSP) and stage 2 (GSV).

One process or torchrun (DDP, one or several nodes); AMP (bf16 / fp16); tqdm progress; tensorboardX scalars and
images; checkpoints written atomically every ``save_every`` steps and at the end, resumed automatically from
``<run>/ckpt/last.pt``; a guard that skips non-finite losses and stops with an error after too many in a row;
periodic validation with the metrics of ``eval.py``. A run killed by SIGTERM / Ctrl-C saves a checkpoint first.
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

from datasets import build_dataset, collate
from networks import build_model
from options import dump_options
from utils import dist
from utils.batch import to_device
from utils.health import TrainingHealth
from utils.checkpoint import load_checkpoint, load_weights, save_checkpoint, strip_module_prefix


class EpochSampler(torch.utils.data.Sampler):
    """Seeded shuffle per epoch, split over ranks (drop_last), able to skip the first ``skip`` items on resume."""

    def __init__(self, n, rank=0, world=1, seed=0, shuffle=True):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        self.epoch, self.skip = epoch, skip

    def per_rank(self):
        return self.n // self.world

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        mine = order[self.rank::self.world][: self.per_rank()]
        return iter(mine[self.skip:])

    def __len__(self):
        return self.per_rank() - self.skip


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


class Trainer:
    def __init__(self, opt):
        self.opt = opt
        self.rank, self.world, self.device = dist.init_distributed(opt.device)
        torch.manual_seed(opt.seed + self.rank)
        np.random.seed(opt.seed + self.rank)
        self.run_dir = os.path.join(opt.log_dir, opt.exp_name)
        self.ckpt_dir = os.path.join(self.run_dir, "ckpt")
        if dist.is_main():
            os.makedirs(self.ckpt_dir, exist_ok=True)
            dump_options(opt, os.path.join(self.run_dir, "options.txt"))

        self.model = build_model(opt).to(self.device)
        if opt.load_weights:
            load_weights(self.model, opt.load_weights, log=print if dist.is_main() else lambda msg: None)
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

        self.train_set = build_dataset(opt, "train")
        if len(self.train_set) < self.world * opt.batch_size:
            raise RuntimeError(f"the train split has {len(self.train_set)} samples: fewer than one batch per process")
        self.sampler = EpochSampler(len(self.train_set), self.rank, self.world, opt.seed)
        self.steps_per_epoch = self.sampler.per_rank() // opt.batch_size
        self.total_steps = opt.num_epochs * self.steps_per_epoch
        if opt.max_steps > 0:
            self.total_steps = min(self.total_steps, opt.max_steps)
        self.milestones = [int(f * self.total_steps) for f in opt.lr_milestones]

        self.step, self.epoch = 0, 0
        self.health = TrainingHealth(after=opt.lr_warmup)  # reads the logged rows, warns when a run has failed
        self.writer = None
        if dist.is_main():
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"))
        self.stop_signal = None
        self._resume()

    # ---------------------------------------------------------------- checkpoints
    def _state(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
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
        if dist.is_main():
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch})")

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
        try:
            while self.step < self.total_steps and self.stop_signal is None:
                done_in_epoch = self.step - self.epoch * self.steps_per_epoch
                self.sampler.set_epoch(self.epoch, skip=done_in_epoch * opt.batch_size)
                loader = torch.utils.data.DataLoader(
                    self.train_set, batch_size=opt.batch_size, sampler=self.sampler, num_workers=opt.num_workers,
                    collate_fn=collate, drop_last=True, pin_memory=self.device.type == "cuda",
                    persistent_workers=False)
                for batch in loader:
                    nan_run = self._train_step(batch, nan_run, bar)
                    if self.step >= self.total_steps or self.stop_signal is not None:
                        break
                    if opt.max_minutes > 0 and (time.time() - t0) / 60 > opt.max_minutes:
                        if dist.is_main():
                            print(f"\n--max_minutes {opt.max_minutes} reached at step {self.step}")
                        self.total_steps = self.step
                        break
                else:
                    self.epoch += 1
                    self.save()
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
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)  # each group's own multiple of the schedule
        batch = to_device(batch, self.device)
        self.net.train()
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

    def validate(self):
        from eval import evaluate
        val_set = build_dataset(self.opt, "val")
        metrics = evaluate(self.model, val_set, self.opt, self.device)
        if dist.is_main():
            for k, v in metrics.get("scalars", {}).items():
                if v is not None and math.isfinite(v):
                    self.writer.add_scalar(f"val/{k}", v, self.step)
            with open(os.path.join(self.run_dir, f"val_step{self.step:07d}.json"), "w") as f:
                json.dump(metrics, f, indent=1)
            print(metrics.get("text", ""))
        return metrics
