"""ResNet image encoder returning the features of every stage.

ImageNet normalisation happens here, so callers pass RGB images in [0, 1]. Pretrained weights are never
downloaded: ``weights`` is the path of a torchvision ImageNet checkpoint, ``True`` to look for the torchvision
file (e.g. ``resnet18-f37072fd.pth``) in ``ckpts/`` or in torch hub's cache, or None / False for a random init.
The files are torchvision's IMAGENET1K_V1 weights (what ``pretrained=True`` loaded in the authors' torchvision):
``WEIGHTS_URL + WEIGHT_FILES[n]``.
"""
import os

import torch
import torch.nn as nn
from torchvision import models

RESNETS = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50, 101: models.resnet101}
WEIGHT_FILES = {18: "resnet18-f37072fd.pth", 34: "resnet34-b627a593.pth", 50: "resnet50-0676ba61.pth",
                101: "resnet101-63fe2227.pth"}
WEIGHTS_URL = "https://download.pytorch.org/models/"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_weights(num_layers):
    """Path of the torchvision ImageNet checkpoint of ResNet-``num_layers`` in ckpts/ or torch hub's cache."""
    name = WEIGHT_FILES[num_layers]
    places = [os.path.join(REPO, "ckpts", name), os.path.join(torch.hub.get_dir(), "checkpoints", name)]
    for p in places:
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"ImageNet weights {name} (ResNet-{num_layers}) not found in {' or '.join(places)}; nothing is downloaded "
        f"here: fetch {WEIGHTS_URL}{name} on a machine with internet access and copy it to ckpts/{name}, or pass "
        f"its path, or turn pretrained weights off (stage 2: --encoder_weights none)")


def resolve_weights(spec, num_layers, flag):
    """An option naming the ImageNet weights of a ResNet-``num_layers`` -> ``ResnetEncoder``'s ``weights``:
    none / false / None -> None (random init); imagenet / true -> True (the file is looked up, an error names it
    when missing); imagenet_if_present / if_present -> its path when found, else None, said in one line that names
    ``flag``; anything else is a path."""
    if spec is None or spec is False or str(spec).strip().lower() in ("none", "", "false", "0", "no", "off"):
        return None
    s = str(spec).strip().lower()
    if spec is True or s in ("imagenet", "true", "1", "yes", "on"):
        return True
    if s in ("imagenet_if_present", "if_present"):
        try:
            path = find_weights(num_layers)
        except FileNotFoundError:
            print(f"[encoder] no ImageNet file of ResNet-{num_layers} in ckpts/ or torch hub's cache: random init "
                  f"({flag} {spec})")
            return None
        print(f"[encoder] ImageNet weights {path} ({flag} {spec})")
        return path
    return spec


def load_imagenet_weights(net, path, num_input_images=1):
    """Load a torchvision ResNet state dict from ``path`` into ``net`` (the classifier is left out).

    With several input images the first convolution's weights are tiled and divided by their number, so the
    response to identical images matches the single-image network.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ImageNet weights not found: {path} (nothing is downloaded; the torchvision files "
                                f"are at {WEIGHTS_URL}<name>, e.g. {WEIGHTS_URL}{WEIGHT_FILES[50]})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
    if "conv1.weight" in state:
        state["conv1.weight"] = state["conv1.weight"].repeat(1, num_input_images, 1, 1) / num_input_images
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not match the ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}")


class ResnetEncoder(nn.Module):
    """ResNet-18/34/50/101 backbone over ``num_input_images`` RGB images stacked along the channels.

    forward(x (B, 3 * num_input_images, H, W) in [0, 1]) -> list of ``num_stages`` (<= 5) feature maps at strides
    2, 4, 8, 16, 32 with ``self.num_ch_enc`` channels (64, 64, 128, 256, 512 for 18/34; x4 after the stem for
    50/101). With ``num_stages`` < 5 the unused last stages are not built (no parameters, no compute).
    """

    nhwc_ok = True  # may keep its activations channels-last (utils/speed.py)

    def __init__(self, num_layers=18, weights=None, num_input_images=1, num_stages=5):
        super().__init__()
        if num_layers not in RESNETS:
            raise ValueError(f"encoder layers must be one of {sorted(RESNETS)}, got {num_layers}")
        net = RESNETS[num_layers](weights=None)
        if num_input_images != 1:
            net.conv1 = nn.Conv2d(3 * num_input_images, 64, 7, stride=2, padding=3, bias=False)
        if weights is True:
            weights = find_weights(num_layers)
        if weights:
            load_imagenet_weights(net, weights, num_input_images)
        del net.fc, net.avgpool
        if not 2 <= num_stages <= 5:
            raise ValueError(f"num_stages must be in 2..5, got {num_stages}")
        self.layers = ["layer1", "layer2", "layer3", "layer4"][:num_stages - 1]
        for name in ["layer2", "layer3", "layer4"][num_stages - 2:]:
            delattr(net, name)
        self.net = net
        expansion = 4 if num_layers >= 50 else 1
        self.num_ch_enc = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion][:num_stages]
        mean = torch.tensor(IMAGENET_MEAN * num_input_images).view(1, -1, 1, 1)
        std = torch.tensor(IMAGENET_STD * num_input_images).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x):
        n = self.net
        x = n.relu(n.bn1(n.conv1((x - self.mean) / self.std)))
        feats = [x]
        x = n.maxpool(x)
        for name in self.layers:
            x = getattr(n, name)(x)
            feats.append(x)
        return feats
