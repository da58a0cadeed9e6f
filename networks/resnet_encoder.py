"""ResNet image encoder returning the features of every stage.

ImageNet normalisation happens here, so callers pass RGB images in [0, 1]. Pretrained weights are never
downloaded: pass the path of a torchvision ImageNet checkpoint (e.g. ``resnet18-f37072fd.pth``) or nothing for
a random initialisation.
"""
import os

import torch
import torch.nn as nn
from torchvision import models

RESNETS = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_imagenet_weights(net, path):
    """Load a torchvision ResNet state dict from ``path`` into ``net`` (the classifier is left out)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights not found: {path}. Nothing is downloaded: place the torchvision checkpoint "
            f"(e.g. resnet18-f37072fd.pth) there, or leave --encoder_weights empty for a random init.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.get("state_dict", state).items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}")


class ResnetEncoder(nn.Module):
    """ResNet-18/34/50 backbone.

    forward(x (B, 3, H, W) in [0, 1]) -> list of 5 feature maps at strides 2, 4, 8, 16, 32 with
    ``self.num_ch`` channels (64, 64, 128, 256, 512 for 18/34; x4 after the stem for 50).
    """

    def __init__(self, num_layers=18, weights_path=None):
        super().__init__()
        if num_layers not in RESNETS:
            raise ValueError(f"encoder_layers must be one of {sorted(RESNETS)}, got {num_layers}")
        net = RESNETS[num_layers](weights=None)
        if weights_path:
            load_imagenet_weights(net, weights_path)
        del net.fc, net.avgpool
        self.net = net
        expansion = 4 if num_layers == 50 else 1
        self.num_ch = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        n = self.net
        x = n.relu(n.bn1(n.conv1((x - self.mean) / self.std)))
        feats = [x]
        x = n.layer1(n.maxpool(x))
        feats.append(x)
        for layer in (n.layer2, n.layer3, n.layer4):
            x = layer(x)
            feats.append(x)
        return feats
