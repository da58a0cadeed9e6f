"""tools/diagnostics/occ_supervised.py: the label oracle's loss, read-out and sampling."""
import torch

from networks.voxel_grid import VoxelGrid
from tools.diagnostics.occ_supervised import occ3d_logits, predict_classes, supervised_loss
from utils.constants import FREE_ID


def test_loss_counts_the_seen_voxels_only_and_free_is_the_last_channel():
    sem = torch.full((1, 200, 200, 16), FREE_ID, dtype=torch.uint8)
    sem[0, :, :, 0] = 11  # a road layer
    mask = torch.zeros_like(sem)
    mask[0, :100] = 1  # half the volume seen
    right = torch.full((1, 18, 200, 200, 16), -10.0)
    right[:, 17] = 10  # free everywhere ...
    right[:, 17, :, :, 0] = -10
    right[:, 11, :, :, 0] = 10  # ... but the road
    assert supervised_loss(right, sem, mask) < 1e-6
    assert torch.equal(predict_classes(right), sem)
    wrong_unseen = right.clone()
    wrong_unseen[:, 11, 100:] = 20  # wrong only where no camera sees: not counted
    assert supervised_loss(wrong_unseen, sem, mask) < 1e-6
    wrong_seen = right.clone()
    wrong_seen[:, 11, :50] = 20
    assert supervised_loss(wrong_seen, sem, mask) > 1.0


def test_logits_on_the_occ3d_grid_are_read_at_their_own_voxels():
    grid = VoxelGrid([200, 200, 16], [-40, 40, -40, 40, -0.2, 6.2], contracted=False)  # the labels' range
    logits = torch.randn(1, 3, 200, 200, 16)
    assert torch.allclose(occ3d_logits(logits, grid), logits, atol=1e-3)  # float32 centres: ~1e-4 at worst
