"""The authors' released weights, mapped by name (utils/authors_ckpt.py, tools/data/convert_authors_ckpt.py).

Their files cannot be downloaded here, so the modules below rebuild THEIR layout (module names, nesting, shapes
and forward arithmetic as read in GANWANSHUI/GaussianOcc networks/resnet_encoder.py Encoder_res101,
networks/_3DCNN.py S3DCNN, networks/occupancy_decoder.py VolumeDecoder, networks/pose_decoder.py) in a few
lines of our own; their state dicts then go through the converter and our modules must compute the same thing.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models

from networks.gsv_model import GSVModel
from networks.occ_net import OccNet
from options import parse_args
from test_authors_options import AUTHORS_TINY
from tools.data.convert_authors_ckpt import convert
from utils.authors_ckpt import map_authors_state


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- their layout, rebuilt
def cb(cin, cout, stride=1):  # their convbn_3d
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout))


def cbr(cin, cout, stride=1):  # Sequential(convbn_3d, activate_fun)
    return nn.Sequential(cb(cin, cout, stride), nn.ReLU())


def deconv(cin, cout):
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 3, padding=1, output_padding=1, stride=2, bias=False),
                         nn.BatchNorm3d(cout))


class TheirHourglass(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = cbr(c, 2 * c, 2), cb(2 * c, 2 * c)
        self.conv3, self.conv4 = cbr(2 * c, 2 * c, 2), cbr(2 * c, 2 * c)
        self.conv5, self.conv6 = deconv(2 * c, 2 * c), deconv(2 * c, c)

    def forward(self, x, presqu, postsqu):
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre + postsqu) if postsqu is not None else F.relu(pre)
        out = self.conv4(self.conv3(pre))
        post = F.relu(self.conv5(out) + (presqu if presqu is not None else pre))
        return self.conv6(post), pre, post


class TheirS3DCNN(nn.Module):
    def __init__(self, cin=64, planes=16, n_sem=18):
        super().__init__()
        c = 2 * planes
        self.dres0 = nn.Sequential(cb(cin, c), nn.ReLU(), cb(c, c), nn.ReLU())
        self.dres1 = nn.Sequential(cb(c, c), nn.ReLU(), cb(c, c))
        self.dres2, self.dres3, self.dres4 = TheirHourglass(c), TheirHourglass(c), TheirHourglass(c)
        tail = [m for _ in range(4) for m in (cb(c, c), nn.ReLU())]
        self.classif3 = nn.Sequential(*tail, cb(c, 1))
        self.classif_semantic = nn.Sequential(*[m for _ in range(4) for m in (cb(c, c), nn.ReLU())], cb(c, n_sem))

    def forward(self, x):  # use_semantic, last_free: only the semantic head
        c0 = self.dres0(x)
        c0 = self.dres1(c0) + c0
        o1, pre1, post1 = self.dres2(c0, None, None)
        o1 = o1 + c0
        o2, _, post2 = self.dres3(o1, pre1, post1)
        o2 = o2 + c0
        o3, _, _ = self.dres4(o2, pre1, post2)
        return self.classif_semantic(o3)


class TheirVolumeDecoder(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self._3DCNN = TheirS3DCNN(**kw)
        for name in ("xyz_min", "xyz_max", "Zval", "scene_centroid"):
            self.register_buffer(name, torch.zeros(3))


def up_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout), nn.ReLU())


class TheirEncoder(nn.Module):
    """Encoder_res101 over any torchvision ResNet (their upsampling_layer / Upsampling_4 / depth_layer)."""

    def __init__(self, resnet, C=64):
        super().__init__()
        self.backbone = nn.Sequential(*list(resnet.children())[:-4])
        self.layer3 = resnet.layer3
        c8, c16 = self.layer3[0].conv1.in_channels, self.layer3[-1].bn1.num_features * (
            4 if isinstance(self.layer3[0], models.resnet.Bottleneck) else 1)
        self.upsampling_layer = nn.Module()
        self.upsampling_layer.conv = up_block(c8 + c16, 512)
        self.Upsampling_4 = nn.Module()
        self.Upsampling_4.conv = up_block(512, 256)
        self.depth_layer = nn.Conv2d(256, C, 1)

    def forward(self, x):
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x1 = self.backbone((x - mean) / std)
        x2 = F.interpolate(self.layer3(x1), scale_factor=2, mode="bilinear", align_corners=False)
        x3 = self.upsampling_layer.conv(torch.cat([x1, x2], 1))
        x4 = self.Upsampling_4.conv(F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False))
        return self.depth_layer(x4)


def randomise(module, seed):
    """Random weights AND batch-norm statistics, eval mode: a mapping that mixes up two layers cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5 if "running_var" in name
                        else torch.randn(t.shape, generator=g) * (0.1 if t.dim() > 1 else 0.5))
    return module.eval()


def flat(prefix, module):
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- tests
def test_their_3d_cnn_maps_onto_the_hourglass_and_computes_the_same():
    theirs = randomise(TheirVolumeDecoder(cin=64, planes=16, n_sem=18), 1)
    net = OccNet(parse_args(AUTHORS_TINY)).eval()
    ours_3d = {k for k in net.state_dict() if k.startswith(("decoder.", "head."))}
    # the converter targets GSVModel (occ_net. prefix): every 3D tensor of ours is loaded, nothing unexpected
    rep = map_authors_state(flat("depth", theirs), {f"occ_net.{k}": v for k, v in net.state_dict().items()}, "gsv")
    assert not rep.unexpected and not rep.mismatched
    assert {o[len("occ_net."):] for _, o in rep.loaded} == ours_3d
    assert sum(1 for k, _ in rep.skipped if "classif3" in k) == 5 * 6  # their unused geometry head: 5 conv + bn
    assert sum(1 for k, _ in rep.skipped if k in ("depth.xyz_min", "depth.Zval")) == 2
    net.load_state_dict({k[len("occ_net."):]: v for k, v in rep.state.items()}, strict=False)
    v = torch.randn(1, 64, 8, 8, 4)
    with torch.no_grad():
        ours = net.head(net.decoder(v))
        ref = theirs._3DCNN(v)
    assert ours.shape == (1, 18, 8, 8, 4)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_their_image_encoder_maps_onto_resnet_and_neck_and_computes_the_same():
    theirs = randomise(TheirEncoder(models.resnet18(weights=None)), 2)
    model = GSVModel(parse_args(AUTHORS_TINY)).eval()
    state = {**flat("encoder", theirs), "encoder.height": 384, "encoder.width": 640}
    rep = map_authors_state(state, model.state_dict(), "gsv")
    assert not rep.unexpected and not rep.mismatched
    assert {k for k, _ in rep.skipped} == {"encoder.height", "encoder.width"}
    ours_2d = {k for k in model.state_dict() if k.startswith(("occ_net.encoder.", "occ_net.neck."))}
    assert {o for _, o in rep.loaded} == ours_2d  # the whole 2D part, nothing of layer4 (not built)
    model.load_state_dict(rep.state, strict=False)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.occ_net.image_features(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_their_full_size_stage2_checkpoint_covers_the_nusc_config_model():
    """Names and shapes at their real size: ResNet-101, 64 lifted channels, 32-channel hourglass, 18 outputs."""
    opt_argv = ["--config", "configs/nusc-gsv.txt", "--encoder_weights", "none", "--grid_size", "16", "16", "8"]
    model = GSVModel(parse_args(opt_argv))
    theirs = {**flat("encoder", TheirEncoder(models.resnet101(weights=None))), "encoder.height": 384,
              "encoder.width": 640, **flat("depth", TheirVolumeDecoder(cin=64, planes=16, n_sem=18))}
    rep = map_authors_state(theirs, model.state_dict(), "gsv")
    assert rep.complete, rep.text()
    assert len(rep.loaded) == len(model.state_dict())


def test_stage1_pose_encoder_maps_and_the_differing_decoder_is_reported():
    enc = models.resnet34(weights=None)
    enc.conv1 = nn.Conv2d(6, 64, 7, 2, 3, bias=False)  # their ResNetMultiImageInput, 2 images
    dec = {"net.0.weight": (256, 512, 1, 1), "net.0.bias": (256,), "net.1.weight": (256, 256, 3, 3),
           "net.1.bias": (256,), "net.2.weight": (256, 256, 3, 3), "net.2.bias": (256,),
           "net.3.weight": (12, 256, 1, 1), "net.3.bias": (12,), "refine_mlp.0.weight": (256, 1286),
           "finial_conv.weight": (128, 256, 1, 1)}
    theirs = {**{f"pose_encoder.encoder.{k}": v for k, v in enc.state_dict().items()},
              **{f"pose.{k}": torch.zeros(s) for k, s in dec.items()}}
    model = build_gsp("--gsp_pose_layers", "34")
    rep = map_authors_state(theirs, model.state_dict(), "gsp")
    ours_enc = {k for k in model.state_dict() if k.startswith("pose.encoder.")}
    assert ours_enc <= {o for _, o in rep.loaded}  # the whole pose ResNet
    mism = {o: (a, b) for _, o, a, b in rep.mismatched}
    assert mism["pose.out.weight"] == ((12, 256, 1, 1), (6, 256, 1, 1))
    assert "pose.squeeze.weight" in mism and not rep.unexpected
    assert {k for k, _ in rep.skipped} == {"pose_encoder.encoder.fc.weight", "pose_encoder.encoder.fc.bias",
                                           "pose.refine_mlp.0.weight", "pose.finial_conv.weight"}
    assert any(k.startswith("depth.") for k in rep.missing) and not rep.complete  # no stage-1 depth released


def build_gsp(*extra):
    from networks.gsp_model import GSPModel
    return GSPModel(parse_args(["--stage", "gsp", "--gsp_pretrained", "false", *extra]))


def test_convert_tool_writes_a_checkpoint_eval_rebuilds(tmp_path):
    src = tmp_path / "nusc-sem-gs"
    src.mkdir()
    enc = randomise(TheirEncoder(models.resnet18(weights=None)), 3)
    torch.save({**enc.state_dict(), "height": 384, "width": 640}, src / "encoder.pth")
    torch.save(randomise(TheirVolumeDecoder(), 4).state_dict(), src / "depth.pth")
    out = tmp_path / "converted.pt"
    rep, _ = convert(str(src), AUTHORS_TINY, str(out))
    assert rep.complete and out.is_file()

    from options import merge_checkpoint_options
    from utils.checkpoint import load_checkpoint
    state = load_checkpoint(str(out))
    opt = merge_checkpoint_options(state["opt"], argv=[])
    model = GSVModel(opt)
    model.load_state_dict(state["model"])  # strict: the written checkpoint is complete
    assert torch.equal(model.occ_net.neck.out.weight, enc.depth_layer.weight)

    # a folder that does not cover the model is not written without --allow_partial
    (src / "depth.pth").unlink()
    with pytest.raises(SystemExit, match="incomplete"):
        convert(str(src), AUTHORS_TINY, str(tmp_path / "partial.pt"))
    assert not (tmp_path / "partial.pt").exists()
    with pytest.raises(FileNotFoundError, match="encoder.pth and depth.pth"):
        convert(str(tmp_path / "nowhere"), AUTHORS_TINY)
