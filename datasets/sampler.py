"""The training sampler: a seeded shuffle per epoch, split over ranks, resumable in the middle of an epoch."""
import torch


class EpochSampler(torch.utils.data.Sampler):
    """Seeded shuffle per epoch, split over ranks (drop_last), able to skip the first ``skip`` items on resume.

    The order depends only on (seed, epoch), so a run resumed with ``set_epoch(epoch, skip)`` sees exactly the
    items the interrupted one had not consumed yet (the trainer stores the batches consumed in the checkpoint).
    """

    def __init__(self, n, rank=0, world=1, seed=0, shuffle=True):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        if not 0 <= skip <= self.per_rank():
            raise ValueError(f"cannot skip {skip} of the {self.per_rank()} items of a rank's epoch")
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
