"""The untrained network as a checkpoint (step 0, the seed's initial weights): the baseline a trained one must beat.

    python -m tools.init_checkpoint --config configs/fixture-gsv.txt --exp_name fixture-untrained [--key value ...]
    python eval.py --config configs/fixture-gsv.txt --ckpt logs/fixture-untrained/ckpt/last.pt

Takes train.py's options and writes <log_dir>/<exp_name>/ckpt/last.pt exactly as the trainer would before its first
step (the same model construction, seed and checkpoint format), without loading any data for training.
"""
import sys

from options import parse_args
from trainer import Trainer
from utils import run_lock
from utils.errors import UserError, message


def main(argv=None):
    try:
        trainer = Trainer(parse_args(argv))
        if trainer.step != 0:
            raise UserError(f"{trainer.run_dir} holds a run at step {trainer.step}: give the untrained checkpoint "
                            "its own --exp_name (or --resume false)")
        trainer.save()
        run_lock.release(trainer.run_dir)
    except UserError as e:
        sys.exit(f"error: {message(e)}")
    print(f"untrained checkpoint (step 0) written to {trainer.ckpt_dir}/last.pt")


if __name__ == "__main__":
    main()
