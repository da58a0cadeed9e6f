"""Train stage 1 (``--stage gsp``) or stage 2 (``--stage gsv``).

    python train.py --config configs/nusc-gsv.txt [--key value ...]
    torchrun --nproc_per_node 8 train.py --config configs/nusc-gsv.txt        # DDP, also multi-node

Outputs go to <log_dir>/<exp_name>/: options.txt, ckpt/last.pt (resumed automatically), tb/ (tensorboard),
val_step*.json. ``python train.py --help`` lists every option.
"""
import json
import os
import sys

from options import parse_args
from trainer import Trainer
from utils import dist
from utils.errors import UserError, message


def main(argv=None):
    """Bad input (options, data, device, rasteriser) ends with ``error: <what and the fix>``, no traceback."""
    try:
        trainer = Trainer(parse_args(argv))
        metrics = trainer.train()
    except UserError as e:
        sys.exit(f"error: {message(e)}")
    if metrics is not None and dist.is_main():
        with open(os.path.join(trainer.run_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    dist.cleanup()


if __name__ == "__main__":
    main()
