"""The authors' model options (issue 12): ResNet-101 from a local ImageNet file, their contraction of all axes,
the far-Gaussian scale growth, class-weighted semantic cross-entropy, the 10x decoder learning rate, old
checkpoints, SyncBN conversion and configs/nusc-gsv.txt."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision import models

import networks.resnet_encoder as resnet_encoder
import options
from networks import build_model
from networks.gsv_loss import AUTHORS_CLASS_FREQUENCIES
from networks.gsv_model import GSVModel, logits_to_occ3d, occ3d_centres
from networks.occ_net import OccNet
from networks.resnet_encoder import ResnetEncoder
from networks.voxel_gaussians import gaussian_scales
from networks.voxel_grid import VoxelGrid
from utils.constants import OCC3D_RANGE
from utils.losses import semantic_ce

REAL = (-40, 40, -40, 40, -1, 5.4)
AUTHORS_TINY = ["--stage", "gsv", "--pose", "gt", "--encoder_layers", "18", "--encoder_weights", "none",
                "--grid_size", "16", "16", "8", "--input_size", "64", "96", "--render_size", "16", "24",
                "--use_sem", "true", "--raster_backend", "torch"]


pytestmark = pytest.mark.usefixtures("one_thread")


def their_world2contracted(x, lo, hi, ratio):
    """The authors' formula, in their own form (utils/vox.py): scaled by t, contracted, divided by t + 1."""
    t = ratio / (1 - ratio)
    a = (2 * (x - lo) / (hi - lo) - 1) * t
    c = torch.where(a.abs() <= t, a, a.sign() * (1.0 + t - 1.0 / (a.abs() + 1 - t)))
    return c / (t + 1)


def test_resnet101_channels_stages_and_local_imagenet_file(tmp_path, monkeypatch):
    enc = ResnetEncoder(101, None, num_stages=4)
    assert enc.num_ch_enc == [64, 256, 512, 1024] and not hasattr(enc.net, "layer4")
    feats = enc(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 256, 512, 1024] and feats[-1].shape[-1] == 4  # stride 16
    # never downloaded: a missing file names itself and where to get it
    monkeypatch.setattr(resnet_encoder, "REPO", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"resnet101-63fe2227\.pth.*download\.pytorch\.org/models/"
                                                r"resnet101-63fe2227\.pth.*--encoder_weights none"):
        GSVModel(options.parse_args([*AUTHORS_TINY, "--encoder_layers", "101", "--encoder_weights", "imagenet"]))
    # found in ckpts/: loaded (a torchvision-format file; the classifier is left out)
    ref = models.resnet18(weights=None)
    (tmp_path / "ckpts").mkdir()
    torch.save(ref.state_dict(), tmp_path / "ckpts" / resnet_encoder.WEIGHT_FILES[18])
    net = OccNet(options.parse_args([*AUTHORS_TINY, "--encoder_weights", "imagenet"]))
    assert torch.equal(net.encoder.net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)


def test_authors_contraction_of_all_axes():
    n = (300, 300, 24)
    grid = VoxelGrid(n, REAL, True, contract_ratio=2 / 3, contract_mode="xyz")
    lo, hi = torch.tensor(REAL[0::2]), torch.tensor(REAL[1::2])
    pts = torch.tensor([[0.0, 0.0, 2.2], [39.0, -20.0, 5.4], [55.0, 300.0, -30.0], [-1e4, 1e3, 80.0]])
    c = their_world2contracted(pts, lo, hi, 2 / 3)  # their coordinate, indexed with align_corners=True
    idx = (c + 1) * (torch.tensor(n) - 1) / 2
    s = grid.normalise(pts)
    torch.testing.assert_close(s, (2 * idx + 1) / torch.tensor(n) - 1, rtol=0, atol=1e-6)  # the same voxel index
    assert (s.abs() < 1).all()  # infinite range: 10 km away is still inside, on every axis
    torch.testing.assert_close(grid.denormalise(s), pts, rtol=1e-4, atol=1e-3)
    centres = grid.centres()
    inside = (centres.abs() <= torch.tensor([40.0, 40.0, 99.0])).all(-1) & (centres[..., 2] >= -1) & (
        centres[..., 2] <= 5.4)
    assert inside.sum() == 200 * 200 * 16  # the box holds the Occ3D count of voxels ...
    dx = centres[1:, 0, 0, 0] - centres[:-1, 0, 0, 0]
    assert dx[100:199].min() == pytest.approx(80 * 1.5 / 299, rel=1e-4)  # ... of about 0.4 m (their spacing)
    assert (dx > 0).all() and math.isfinite(centres.abs().max())
    # their outermost voxels sit at index 0.5 / n - 1.5 (x, y) and 0.05 / n - 1.05 (z), far but finite
    assert 1000 < centres[0, 150, 12, 0].abs() < 5000 and centres[0, 150, 12, 0] < 0
    assert centres[150, 150, -1, 2] > 100


def test_xyz_readout_and_far_scale_follow_the_contraction():
    grid = VoxelGrid((48, 48, 16), REAL, True, contract_ratio=2 / 3, contract_mode="xyz")
    cls = torch.where(grid.centres()[..., 0] > 0, 4, 11)
    occ = logits_to_occ3d(F.one_hot(cls, 18).permute(3, 0, 1, 2)[None].float(), grid)[0]
    x = occ3d_centres()[..., 0]
    assert torch.all(occ[x > 2.5] == 4) and torch.all(occ[x < -2.5] == 11)  # and nothing read as free
    opt = options.parse_args(AUTHORS_TINY + ["--gs_scale", "0.2"])
    up = torch.tensor([[0.0, 0.0, 70.0], [0.0, 59.0, 0.0], [50.0, 50.0, 0.0]])  # 3D distance 70, 59, 70.7 m
    assert gaussian_scales(up, None, opt).tolist() == pytest.approx([0.8, 0.2, 0.8])  # x4 beyond 60 m, in 3D
    opt.contract_mode = "xy"  # this project's contraction: horizontal distance
    assert gaussian_scales(up, None, opt).tolist() == pytest.approx([0.2, 0.2, 0.8])
    opt.contracted = False
    assert gaussian_scales(up, None, opt).tolist() == pytest.approx([0.2, 0.2, 0.2])


def test_weighted_semantic_ce_is_the_authors_criterion():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 17, 5, 6, generator=g, requires_grad=True)
    labels = torch.randint(0, 17, (2, 5, 6), generator=g)
    labels[0, 0] = 255
    opt = options.parse_args(AUTHORS_TINY)
    w = build_model(opt).criterion.sem_weight
    freq = torch.tensor(AUTHORS_CLASS_FREQUENCIES, dtype=torch.float64)
    ref = torch.where(freq > 0, 1 / freq.sqrt(), torch.zeros_like(freq))
    torch.testing.assert_close(w, (ref / ref.mean())[:17].float())  # their runner: 1/sqrt(f), 0 -> 0, / mean
    assert w[0] == 0 and w[12] == 0 and w[2] > w[11]  # others, other_flat carry no weight; rare bicycle > road
    ce = semantic_ce(logits, labels, weight=w)
    theirs = torch.nn.CrossEntropyLoss(weight=w, ignore_index=255, reduction="mean")(logits, labels)
    torch.testing.assert_close(ce, theirs)
    assert not torch.allclose(ce, semantic_ce(logits, labels))
    zero = semantic_ce(logits, torch.zeros_like(labels), weight=w)  # only zero-weight labels: 0, with a gradient
    zero.backward()
    assert zero.item() == 0 and logits.grad is not None
    assert build_model(options.parse_args(AUTHORS_TINY + ["--sem_class_weights", "none"])).criterion.sem_weight is None


def test_decoder_learning_rate_groups():
    net = OccNet(options.parse_args(AUTHORS_TINY))
    groups = net.param_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    names = {id(p): n for n, p in net.named_parameters()}
    first = {names[id(p)].split(".")[0] for p in groups[0]["params"]}
    second = {names[id(p)].split(".")[0] for p in groups[1]["params"]}
    assert first == {"encoder", "neck"} and second == {"decoder", "head"}  # as their encoder / VolumeDecoder
    assert sum(len(g["params"]) for g in groups) == len(names)
    one = OccNet(options.parse_args(AUTHORS_TINY + ["--decoder_lr_mult", "1"])).param_groups()
    assert len(one) == 1 and len(one[0]["params"]) == len(names)


def test_modules_convert_to_syncbn_and_the_hourglass_needs_multiples_of_4():
    net = OccNet(options.parse_args(AUTHORS_TINY))
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert n_bn > 40 and sum(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.modules()) == n_bn
    with pytest.raises(ValueError, match="divisible by 4"):
        net.decoder(torch.zeros(1, 64, 8, 8, 6))
    with pytest.raises(ValueError, match="--feat_stride 4"):
        OccNet(options.parse_args(AUTHORS_TINY + ["--feat_stride", "8"]))


def test_old_checkpoints_rebuild_the_network_they_were_trained_with():
    new = vars(options.parse_args(AUTHORS_TINY))
    old = {k: v for k, v in new.items() if k not in ("contract_mode", "image_neck", "lift_visibility",
                                                     "occ_decoder", "decoder_lr_mult", "sem_class_weights")}
    old["contracted"] = True
    opt = options.merge_checkpoint_options(old, argv=[])
    assert (opt.contract_mode, opt.image_neck, opt.lift_visibility, opt.occ_decoder, opt.decoder_lr_mult,
            opt.sem_class_weights) == ("xy", "fpn", True, "residual", 1.0, "none")
    new["encoder_weights"] = "imagenet"  # the weights come from the checkpoint, no ImageNet file is needed,
    for argv in ([], ["--config", "configs/nusc-gsv.txt"]):  # even when the eval command's config names one
        assert options.merge_checkpoint_options(new, argv=argv).encoder_weights == "none"


def test_nusc_config_is_the_authors_settings():
    opt = options.parse_args(["--config", "configs/nusc-gsv.txt"])
    assert opt.grid_size == [300, 300, 24] and list(opt.real_size) == [-40, 40, -40, 40, -1, 5.4]
    assert (opt.contracted, opt.contract_mode, opt.contract_ratio) == (True, "xyz", 0.66667)
    assert (opt.encoder_layers, opt.encoder_weights, opt.image_neck, opt.feat_stride, opt.feat_dim) == (
        101, "imagenet", "upconcat", 4, 64)
    assert (opt.occ_decoder, opt.voxel_feat_dim, opt.lift_visibility, opt.decoder_lr_mult) == (
        "hourglass", 32, False, 10.0)
    assert (opt.gs_scale, opt.w_sem, opt.sem_class_weights, opt.lr, opt.num_epochs) == (
        0.2, 0.02, "inv_sqrt_freq", 1e-4, 12)
    assert opt.input_size == [384, 640] and opt.render_size == [180, 320] and OCC3D_RANGE[3] == 40
