"""Colour augmentation: only the networks' copy changes, one jitter per sample for all its cameras and frames."""
import torch

from utils.augment import color_jitter


def test_jitter_is_per_sample_shared_by_cameras_and_frames_and_leaves_the_input_alone():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 1, 3, 8, 12).expand(4, 3, 6, 3, 8, 12).clone()  # every camera / frame the same image
    orig = base.clone()
    out = color_jitter(base, p=1.0, generator=g)
    assert torch.equal(base, orig)  # the losses' images are untouched
    assert out.shape == base.shape and out.min() >= 0 and out.max() <= 1
    for b in range(4):  # within a sample every camera and frame got the same jitter
        assert torch.allclose(out[b], out[b, :1, :1].expand_as(out[b]))
    assert not torch.allclose(out[0], out[1])  # samples differ
    assert (out - base).abs().mean() > 1e-3
    assert torch.equal(color_jitter(base, p=0.0, generator=g), base)  # p = 0: no change


def test_stage1_networks_see_the_augmented_copy_and_the_losses_the_originals(monkeypatch):
    from networks import gsp_loss
    from test_gsp import make_model, ring_batch
    model = make_model("--use_gsp", "false")
    batch = ring_batch()
    batch["imgs_net"] = 1 - batch["imgs"]
    seen = {}
    real = model.depth_outputs
    monkeypatch.setattr(model, "depth_outputs", lambda cur: seen.setdefault("depth", cur) is not None and real(cur))
    monkeypatch.setattr(gsp_loss, "temporal_loss",
                        lambda target, *a, **k: (seen.setdefault("target", target).mean(), {"mask": target > 0}))
    model(batch)
    assert torch.equal(seen["depth"], batch["imgs_net"][:, 1])
    assert torch.equal(seen["target"], batch["imgs"][:, 1].flatten(0, 1))
