"""The training loop shared by stage 1 (GSP) and stage 2 (GSV).

One process or torchrun (DDP, one or several nodes; SyncBatchNorm across GPUs); AMP (bf16 / fp16); tqdm
progress; tensorboardX scalars and images, the same scalars in ``<run>/train_log.jsonl`` with the throughput
(steps/s, data-wait time, peak GPU memory); checkpoints written atomically every ``save_every`` steps and at the
end (``ckpt/last.pt``, the one before kept as ``ckpt/prev.pt``), resumed automatically at the exact position in the
epoch (the batches consumed are stored, so a batch skipped by the guard that skips non-finite losses does not shift
it) with every random state, so that a resumed run repeats the uninterrupted one; periodic validation with the
metrics of ``eval.py`` on a validation set built once. A run killed by SIGTERM / Ctrl-C saves a checkpoint first;
an exception in the loop saves the last finished step before it propagates. One live run per run folder
(``utils/run_lock.py``); on resume the log rows of the steps that run again are dropped.

Data path: the training set leaves out the evaluation-only labels (dense LiDAR depth, Occ3D volumes) and hands
over uint8 images (float on the GPU); one DataLoader with persistent workers and prefetching lives for the whole
run; the speed options of ``utils/speed.py`` apply on CUDA.
"""
import json
import math
import os
import random
import signal
import sys
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from datasets import EVAL_ONLY_KEYS, build_dataset, collate
from datasets.options import trains_on_depth
from datasets.sampler import EpochSampler
import networks
from options import checkpoint_options, dump_options
from networks.pose_source import load_stage1_poses
from rebuild import load_stage1
from utils import dist, run_lock
from utils.augment import color_jitter
from utils.batch import to_device
from utils.health import TrainingHealth
from utils.checkpoint import (load_checkpoint, load_model_state, load_resume_checkpoint, load_weights,
                              remove_partial_files, require_stage, save_checkpoint)
from utils.errors import ConfigError, RunBusy, disk_full_cause, message
from utils.rng import rng_state, set_rng_state
from utils.speed import autocast_cache, graphs_off_for_processes, make_optimizer, prepare_model
from utils.throughput import Throughput, timed_batches
from utils.vis import training_pictures


def check_options(opt):
    """Stop before any work, with the fix, when the options cannot work (ConfigError)."""
    if opt.stage == "gsv" and opt.pose == "stage1" and getattr(opt, "stage1_poses", None):
        try:  # readable, and made for this run's neighbours
            load_stage1_poses(opt.stage1_poses, opt)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    # with --stage1_poses the checkpoint is only the fallback for samples the file lacks (a config may name one that
    # is not on this machine)
    if opt.stage == "gsv" and opt.pose == "stage1" and not (opt.stage1_poses and not
                                                            (opt.stage1_ckpt and os.path.isfile(opt.stage1_ckpt))):
        if not opt.stage1_ckpt:
            raise ConfigError(
                "stage 2 with --pose stage1 (the default) needs --stage1_ckpt PATH, a stage-1 checkpoint (or "
                "--stage1_poses PATH, its motion exported by tools/export_stage1_poses.py). Start from "
                "a config instead: `sh run_gs_occ.sh` trains stage 1 then stage 2 and evaluates; `python train.py "
                "--config configs/quick-gsp.txt` trains stage 1 alone; `--pose gt` uses the recorded ego poses "
                "(an ablation). `python train.py --help` lists every option")
        if not os.path.isfile(opt.stage1_ckpt):
            raise ConfigError(f"--stage1_ckpt {opt.stage1_ckpt} not found: train stage 1 and its refine phase first "
                              "(sh run_gs_occ.sh does both), or use --pose gt")
        require_stage(load_checkpoint(opt.stage1_ckpt, what="--stage1_ckpt", mmap=True), opt.stage1_ckpt, "gsp",
                      "--stage1_ckpt", "stage 2 takes its camera motion from the stage-1 pose net (sh run_gs_occ.sh "
                      "passes logs/<stage-1 run>-refine/ckpt/last.pt); a stage-2 checkpoint goes to --load_weights "
                      "or eval.py --ckpt")
    if opt.load_weights and not os.path.isfile(opt.load_weights):
        raise ConfigError(f"--load_weights {opt.load_weights} not found")


def build_model(opt):
    """The model of ``opt`` composed to train (``networks.build_model``; ``--pose stage1`` reads its frozen pose net
    through ``rebuild.load_stage1``)."""
    return networks.build_model(opt, load_stage1=load_stage1)


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


def leave_stop_signals_to_the_trainer(_worker_id):
    """DataLoader workers ignore SIGTERM / SIGINT: a signal sent to the whole process group (a cluster's scancel,
    Ctrl-C, ``kill -- -PGID``) then stops the run through the trainer's handler (save, clean exit) instead of killing
    a worker under it (a RuntimeError mid-step). The workers end with the loader, or when their parent is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_loader_workers(loader):
    """End the persistent workers of ``loader`` now (torch's own shutdown: each worker is told to stop and joined).
    Without it a run that fails hangs at exit: the exception keeps the loader alive past Python's atexit, which
    then stops the workers with SIGTERM, which they ignore (``leave_stop_signals_to_the_trainer``), and joins them."""
    it = getattr(loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    loader._iterator = None


def make_loader(dataset, sampler, opt, device):
    """The training DataLoader, made once a run: its workers persist across epochs (``sampler.set_epoch`` changes
    the order), each prepares ``prefetch_factor`` batches ahead, batches come in pinned memory on CUDA."""
    workers = opt.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=opt.batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        worker_init_fn=leave_stop_signals_to_the_trainer if workers > 0 else None,
        drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=opt.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(opt.seed))  # its own: making it draws nothing from torch's RNG


class Trainer:
    def __init__(self, opt):
        check_options(opt)
        self.opt = opt
        self.rank, self.world, self.device = dist.init_distributed(opt.device, opt.share_gpu)
        random.seed(opt.seed + self.rank)
        torch.manual_seed(opt.seed + self.rank)
        np.random.seed(opt.seed + self.rank)
        oracle = trains_on_depth(opt)
        if oracle and not opt.depth_root:
            raise ConfigError("--w_depth_oracle needs --depth_root (the LiDAR depth maps it trains on)")
        self.skip_keys = tuple(k for k in EVAL_ONLY_KEYS if not (oracle and k == "depth_gt"))
        self.train_set = self._dataset("train")  # before anything slow: bad data paths fail at once
        self.val_set = None  # built at the first validation, then kept
        if len(self.train_set) < self.world * opt.batch_size:
            where = f"split file {opt.train_split}" if opt.train_split else f"every sample of --dataroot {opt.dataroot}"
            raise ConfigError(f"the train split ({where}) has {len(self.train_set)} usable samples: fewer than one "
                              f"batch of --batch_size {opt.batch_size} per process ({self.world}); samples without "
                              "a previous and next frame are left out (--require_adjacent)")
        self.run_dir = os.path.join(opt.log_dir, opt.exp_name)
        self.ckpt_dir = os.path.join(self.run_dir, "ckpt")
        self._lock()  # before anything is written to the run folder
        if dist.is_main():
            os.makedirs(self.ckpt_dir, exist_ok=True)
            dump_options(opt, os.path.join(self.run_dir, "options.txt"))

        self.model = build_model(opt).to(self.device)
        if opt.load_weights:
            load_weights(self.model, opt.load_weights, log=print if dist.is_main() else lambda msg: None,
                         stage=opt.stage)
        self._speed_up()
        groups = param_groups(self.model.trainable_parameters())
        if not groups:
            raise RuntimeError("the model has no trainable parameters for this phase")
        self.optimizer = make_optimizer(groups, opt, self.device)
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
        # lr / 10 at these steps; with --max_minutes a milestone also falls once its fraction of the minutes has
        # passed (_clock), so a run that the clock ends still gets its decay
        self.milestones = [int(f * self.total_steps) for f in opt.lr_milestones]

        self.step, self.epoch, self.epoch_batches = 0, 0, 0  # epoch_batches: batches of this epoch consumed
        self.aug_generator = torch.Generator().manual_seed(opt.seed * 1000003 + self.rank)
        self.health = TrainingHealth(after=opt.lr_warmup)  # reads the logged rows, warns when a run has failed
        self.stop_signal = None
        self._pending = None  # (epoch, epoch_batches, random state) before the batch in flight
        self._saved_at = None  # (step, epoch, epoch_batches) of the last checkpoint written or read
        self._resume()
        self.writer = None
        if dist.is_main():  # a resumed run replaces the events of the steps it runs again
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"),
                                        purge_step=self.step + 1 if self.step else None)

    def _lock(self):
        """One live run per run folder: process 0 takes ``<run>/run.lock``; every process stops when it is taken."""
        busy = None
        if dist.is_main():
            try:
                run_lock.acquire(self.run_dir)
            except RunBusy as e:
                busy = e
        if dist.all_reduce_sum(torch.tensor([float(busy is not None)], device=self.device)).item() > 0:
            raise busy or RunBusy(f"run folder {self.run_dir} is in use by another run (process 0 says which)")

    def _speed_up(self):
        """SyncBatchNorm under DDP on GPUs, then the speed options (utils/speed.py); says what it did."""
        self.model, n_bn = dist.sync_batchnorm(self.model, self.world, self.device,
                                                 self.opt.sync_bn and not self.opt.share_gpu)
        off = graphs_off_for_processes(self.opt, self.world)
        done = prepare_model(self.model, self.opt, self.device) + off
        if n_bn:
            done.append(f"SyncBatchNorm ({n_bn} layers, {self.world} processes)")
        if done and dist.is_main():
            print(f"[speed] {'; '.join(done)}")

    def _dataset(self, split):
        """Training: without the evaluation-only labels, uint8 images; validation: every label, as eval.py."""
        train = split == "train"
        return build_dataset(self.opt, split, eval_labels=not train, uint8_images=train)

    # ---------------------------------------------------------------- checkpoints
    def _generators(self):
        return {"aug": self.aug_generator}

    def _state(self, rngs):
        """The checkpoint; ``rngs``: the random state of each process (index = rank)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.epoch,
                "epoch_batches": self.epoch_batches, "world": self.world, "batch_size": self.opt.batch_size,
                "rng": rngs, "opt": checkpoint_options(self.opt), "milestones": list(self.milestones)}

    def _position(self):
        return self.step, self.epoch, self.epoch_batches

    def save(self, name="last.pt"):
        """Every process calls it (their random states are gathered); process 0 writes ``ckpt/<name>`` (last.pt
        keeps the one before as prev.pt)."""
        if name == "last.pt" and self._position() == self._saved_at:
            return  # nothing happened since the last save (the end of a run right after a periodic save)
        rngs = [rng_state(self._generators(), self.device)]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if dist.is_main():
            save_checkpoint(self._state(rngs), os.path.join(self.ckpt_dir, name), keep_previous=name == "last.pt")
        if name == "last.pt":
            self._saved_at = self._position()  # on every process: they all take the same early return above

    def _save_after_failure(self, err):
        """A step failed: the state of the last finished step goes to last.pt (the batch in flight is given back,
        with the random state from before it), unless that is already saved, nothing was trained yet, the disk is
        full or the weights are not finite. Process 0 only (no collective: the other processes may be gone)."""
        if self._pending is not None:
            self.epoch, self.epoch_batches, rng = self._pending
            self._pending = None
        else:
            rng = rng_state(self._generators(), self.device)
        if (not dist.is_main() or disk_full_cause(err) is not None or self.step == 0
                or self._position() == self._saved_at):
            return
        path = os.path.join(self.ckpt_dir, "last.pt")
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            print(f"the weights are not finite at step {self.step}: not saved ({path} is kept)", file=sys.stderr)
            return
        try:
            save_checkpoint(self._state([rng]), path, keep_previous=True)
            print(f"{type(err).__name__} after step {self.step}: that step is saved to {path}; rerun the same "
                  "command to resume", file=sys.stderr)
        except Exception as e:
            print(f"after the failure the checkpoint could not be saved either ({message(e)})", file=sys.stderr)

    def _resume(self):
        if dist.is_main():
            left = remove_partial_files(self.ckpt_dir)
            if left:
                print(f"removed {len(left)} partial checkpoint files of a run killed while saving ({left[0]})")
        if not self.opt.resume:
            return
        state, path = load_resume_checkpoint(os.path.join(self.ckpt_dir, "last.pt"), self.device,
                                             log=print if dist.is_main() else lambda msg: None)
        if state is None:
            return
        fix = (f"this run folder holds another run: give this one another --exp_name, or --resume false to start "
               f"over there (see {self.run_dir}/options.txt)")
        require_stage(state, path, self.opt.stage, "the run checkpoint", fix)
        load_model_state(self.model, state, path, fix)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        # milestones that the clock made fall before the save stay where they fell
        for i, m in enumerate((state.get("milestones") or [])[:len(self.milestones)]):
            if m <= self.step:
                self.milestones[i] = m
        # Checkpoints from before the position was stored: derived from the step count (exact without NaN skips).
        self.epoch_batches = state.get("epoch_batches", self.step - self.epoch * self.steps_per_epoch)
        same_split = (state.get("world", self.world), state.get("batch_size", self.opt.batch_size)) == \
            (self.world, self.opt.batch_size)
        if not (same_split and 0 <= self.epoch_batches <= self.steps_per_epoch):
            if dist.is_main():
                print(f"resume: the position in epoch {self.epoch} cannot be restored (another number of processes or "
                      f"batch size, or an old checkpoint after a skipped step): the epoch restarts")
            self.epoch_batches = 0
        rngs = state.get("rng") or []
        lost = set_rng_state(rngs[self.rank], self._generators(), self.device) if len(rngs) == self.world else ["all"]
        if lost and dist.is_main():
            print(f"resume: random state not restored ({', '.join(lost)}: an older checkpoint, one saved after a "
                  "failure under DDP, or another number of processes or GPUs): the run goes on, not exactly as an "
                  "uninterrupted one")
        self._saved_at = self._position()
        if dist.is_main():
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.epoch_batches})")
            self._trim_log()

    def _trim_log(self):
        """Drop the rows of train_log.jsonl after the resumed step (those steps run again) and any line cut short
        by a kill, so that the log holds one row per step."""
        path = os.path.join(self.run_dir, "train_log.jsonl")
        if not os.path.isfile(path):
            return
        with open(path) as f:
            lines = f.readlines()
        keep = []
        for line in lines:
            try:
                if json.loads(line)["step"] <= self.step:
                    keep.append(line.rstrip("\n") + "\n")
            except (ValueError, KeyError, TypeError):
                pass
        if keep != lines:
            with open(path + ".tmp", "w") as f:
                f.writelines(keep)
            os.replace(path + ".tmp", path)
            print(f"resume: {len(lines) - len(keep)} rows of {path} after step {self.step} dropped (they run again)")

    # ---------------------------------------------------------------- loop
    def lr_factor(self, step):
        """Multiplier of every parameter group's base lr at ``step``: linear warm-up, then / 10 per milestone."""
        warm = min(1.0, (step + 1) / self.opt.lr_warmup) if self.opt.lr_warmup > 0 else 1.0
        return warm * 0.1 ** sum(step >= m for m in self.milestones)

    def _clock(self, elapsed_min):
        """--max_minutes, after each step: True when the run's minutes are over; each lr milestone fraction f also
        falls at the first step after f x max_minutes of this process's training (whichever of steps and minutes
        comes first). The processes decide together (one may not stop while the others wait for it)."""
        if self.opt.max_minutes <= 0:
            return False
        fr = self.opt.lr_milestones
        flags = [float(elapsed_min > self.opt.max_minutes)] + [float(elapsed_min >= f * self.opt.max_minutes)
                                                                for f in fr]
        if self.world > 1:
            flags = dist.all_reduce_sum(torch.tensor(flags, device=self.device)).tolist()
        for i, f in enumerate(fr):
            if flags[1 + i] > 0 and self.milestones[i] > self.step:
                self.milestones[i] = self.step
                if dist.is_main():
                    tqdm.write(f"lr / 10 from step {self.step}: {f:g} of --max_minutes {self.opt.max_minutes:g} "
                               f"passed before {f:g} of the steps")
        return flags[0] > 0

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
                    self._pending = (self.epoch, self.epoch_batches, rng_state(self._generators(), self.device))
                    self.epoch_batches += 1  # consumed, whatever the NaN guard does with it
                    if self.epoch_batches == self.steps_per_epoch:
                        self.epoch, self.epoch_batches = self.epoch + 1, 0
                    nan_run = self._train_step(batch, nan_run, bar)
                    if self.step >= self.total_steps or self.stop_signal is not None:
                        break
                    if self._clock((time.time() - t0) / 60):  # (its milestones act from the next step)
                        if dist.is_main():
                            print(f"\n--max_minutes {opt.max_minutes} reached at step {self.step}")
                        self.total_steps = self.step
                        break
        except Exception as e:
            self._save_after_failure(e)
            raise
        finally:
            bar.close()
            stop_loader_workers(loader)
            for s, h in old_handlers.items():
                signal.signal(s, h)
        self.save()
        if self.stop_signal is not None:
            if dist.is_main():
                print(f"stopped by signal {self.stop_signal} at step {self.step}; checkpoint saved, rerun to resume")
            run_lock.release(self.run_dir)
            return None
        metrics = self.validate() if opt.val_every >= 0 else None
        if self.writer:
            self.writer.close()
        run_lock.release(self.run_dir)
        return metrics

    def _train_step(self, batch, nan_run, bar):
        opt = self.opt
        self.perf.stepped()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)  # each group's own multiple of the schedule
        batch = to_device(batch, self.device, skip=self.skip_keys)
        if opt.color_aug > 0 and "imgs" in batch:
            batch["imgs_net"] = color_jitter(batch["imgs"], opt.color_aug, self.aug_generator)
        self.net.train()
        log_now = (self.step + 1) % opt.log_every == 0 or self.step == 0  # this step's scalars are written
        if hasattr(self.model, "set_step"):  # schedules inside the criterion; its log-only statistics
            self.model.set_step(self.step, log=log_now)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None, cache_enabled=autocast_cache(opt)):
            loss, logs, outputs = self.net(batch)
        # The backward is queued before the host waits for anything (one wait a step, for the checks below): the GPU
        # runs the forward while the CPU queues the backward. A non-finite loss's NaN gradients are dropped by _skip.
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        checks, clipped = [torch.isfinite(loss).all()], False
        if opt.grad_clip > 0 and not self.scaler.is_enabled():
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), opt.grad_clip)
            checks, clipped = checks + [torch.isfinite(norm)], True
        ok = dist.all_reduce_sum(torch.stack(checks).float()).tolist()  # every process skips together
        if ok[0] < self.world:
            return self._skip(nan_run, f"non-finite loss ({ {k: float(v) for k, v in logs.items()} })")
        if clipped and ok[1] < self.world:
            return self._skip(nan_run, f"finite loss {loss.item():.4g} but non-finite gradients")
        if opt.grad_clip > 0 and self.scaler.is_enabled():  # (fp16: the scaler skips non-finite gradients itself)
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), opt.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self._pending = None  # the step is done: a later failure keeps it
        bar.update(1)
        if dist.is_main():
            if log_now:  # (reading the loss waits for the GPU: only on the steps that log)
                bar.set_postfix(loss=f"{loss.item():.4f}")
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
                for k, img in self._pictures(batch, outputs).items():
                    self.writer.add_image(f"train/{k}", img, self.step)
        if self.step % opt.save_every == 0:
            self.save()
        if opt.val_every > 0 and self.step % opt.val_every == 0 and self.step < self.total_steps:
            self.validate()
        return 0

    @torch.no_grad()
    def _pictures(self, batch, outputs):
        """The pictures of a training step (``utils.vis.training_pictures``); a model that reads occupancy out of its
        logits (stage 2: ``occupancy``, calibrated on the step's own render) adds the top view of the first sample's
        read-out."""
        readout = getattr(self.model, "occupancy", None)
        occ = None
        if readout is not None and "logits" in outputs:
            render = {k: outputs[k][:1] for k in ("depth_acc", "alpha", "K") if k in outputs}
            occ = readout(outputs["logits"][:1], render, batch["cam2ego"][:1])[0]
        return training_pictures(batch, outputs, occ)

    def _skip(self, nan_run, what):
        """A step with a non-finite loss or gradient: no update, its batch counts as consumed. More than
        ``max_nan_skips`` in a row stop the run (FloatingPointError) with the state saved to nan_abort.pt."""
        self._pending = None
        self.optimizer.zero_grad(set_to_none=True)
        nan_run += 1
        if dist.is_main():
            tqdm.write(f"step {self.step}: {what}, step skipped ({nan_run} in a row)")
        if nan_run > self.opt.max_nan_skips:
            self.save("nan_abort.pt")
            raise FloatingPointError(f"{nan_run} non-finite losses or gradients in a row at step {self.step}; state "
                                     f"saved to {self.ckpt_dir}/nan_abort.pt (last good: last.pt)")
        return nan_run

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
