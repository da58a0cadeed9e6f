"""``train.py`` with a toy model and toy data, for the fault tests that need a real process (a kill, a signal, two
runs at once, a full disk): ``python tests/toy_train.py [train.py options]``.

The model fits y = sum(x) and adds to its loss a draw of every random generator a training step may use (python,
numpy, torch, and the colour jitter of the trainer's own generator through ``imgs_net``), so a resumed run repeats
the uninterrupted one only if every random state is restored. Test-only knobs (environment): TOY_STEP_SECONDS
(sleep in each forward), TOY_FAIL_AT (the forward of that call number raises RuntimeError), TOY_DISK_FULL_AFTER
(checkpoint writes that succeed before the next one meets a full disk).
"""
import errno
import io
import os
import random
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


class ToyData(torch.utils.data.Dataset):
    """8 items of 4 numbers and a tiny uint8 image set (3 frames, 6 cameras, 3 x 8 x 8)."""

    def __init__(self, opt=None, split="train", eval_labels=True, uint8_images=False):
        self.split = split

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, generator=g), "imgs": torch.randint(0, 256, (3, 6, 3, 8, 8), generator=g,
                                                                         dtype=torch.uint8), "token": f"t{i}"}


class ToyModel(torch.nn.Module):
    def __init__(self, opt=None):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.calls = 0
        self.fail_at = int(os.environ.get("TOY_FAIL_AT", "-1"))
        self.sleep = float(os.environ.get("TOY_STEP_SECONDS", "0"))

    def trainable_parameters(self):
        return self.parameters()

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"toy failure in call {self.calls}")
        time.sleep(self.sleep)
        x = batch["x"]
        noise = torch.randn(()) + float(np.random.rand()) + random.random()
        jitter = batch.get("imgs_net", batch["imgs"]).mean() - batch["imgs"].mean()
        loss = ((self.lin(x)[:, 0] - x.sum(1)) ** 2).mean() + 1e-2 * noise + jitter
        return loss, {"noise": noise.detach()}, {}


class FullDisk(io.RawIOBase):
    """A file that takes ``budget`` bytes, then fails as a full disk does."""

    def __init__(self, f, budget):
        self.f, self.budget = f, budget

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(b)
        return self.f.write(b)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        super().close()


def install():
    import trainer
    from utils import checkpoint
    trainer.build_model = ToyModel
    trainer.build_dataset = ToyData
    if "TOY_DISK_FULL_AFTER" in os.environ:
        left = [int(os.environ["TOY_DISK_FULL_AFTER"])]
        real = checkpoint._open_for_writing

        def writer(fd):
            left[0] -= 1
            return real(fd) if left[0] >= 0 else FullDisk(real(fd), 1000)
        checkpoint._open_for_writing = writer


if __name__ == "__main__":
    install()
    import train
    train.main()
