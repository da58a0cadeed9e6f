"""Train stage 1 (``--stage gsp``) or stage 2 (``--stage gsv``).

    python train.py --config configs/nusc-gsv.txt [--key value ...]
    torchrun --nproc_per_node 8 train.py --config configs/nusc-gsv.txt        # DDP, also multi-node

Outputs go to <log_dir>/<exp_name>/: options.txt, ckpt/last.pt (resumed automatically; the one before it is
ckpt/prev.pt), tb/ (tensorboard), train_log.jsonl, val_step*.json, run.lock (one live run per folder).
``python train.py --help`` lists every option.
"""
import json
import os
import sys

from options import parse_args
from trainer import Trainer
from utils import dist
from utils.errors import UserError, disk_full_cause, message


def main(argv=None):
    """Bad input (options, data, checkpoints, device, rasteriser), a full disk, a second run in the same folder and
    a run of non-finite losses end with ``error: <what> <where>: <fix>``, no traceback (docs/bad_input.md)."""
    try:
        trainer = Trainer(parse_args(argv))
        metrics = trainer.train()
    except (UserError, FloatingPointError) as e:
        sys.exit(f"error: {message(e)}")
    except OSError as e:  # a log or tensorboard write on a full disk (checkpoints raise DiskFull themselves)
        full = disk_full_cause(e)
        if full is None:
            raise
        sys.exit(f"error: disk full writing {full.filename or 'the run folder'} ({full.strerror}): free space, then "
                 "rerun the same command to resume from the last checkpoint")
    if metrics is not None and dist.is_main():
        with open(os.path.join(trainer.run_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    dist.cleanup()


if __name__ == "__main__":
    main()
