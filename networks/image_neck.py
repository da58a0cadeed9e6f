"""The authors' image neck (their Encoder_res101 after the ResNet): strides 8 and 16 -> one map at stride 4.

  up16 = bilinear x2 of the stride-16 map (ResNet layer3) to the stride-8 map's size (layer2)
  x8   = block(concat[layer2, up16])            block = 2 x (3x3 conv without bias, InstanceNorm, ReLU)
  x4   = block(bilinear x2 of x8)               512 channels at stride 8, 256 at stride 4 (theirs, fixed)
  out  = 1x1 conv (with bias) to ``out_ch``     their 64 channels (``input_channel``)

The instance norms have no parameters (affine off, as theirs), so a ResNet's BatchNorms are the only ones
SyncBN conversion touches. Layer4 of the ResNet is not used (``ResnetEncoder(num_stages=4)``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

MID_CH = (512, 256)  # channels after the stride-8 and the stride-4 block


def conv_in_block(cin, cout):
    """2 x (3x3 conv without bias, InstanceNorm without parameters, ReLU)."""
    return nn.Sequential(*[m for a, b in ((cin, cout), (cout, cout)) for m in (
        nn.Conv2d(a, b, 3, padding=1, bias=False), nn.InstanceNorm2d(b), nn.ReLU(inplace=True))])


class UpConcatNeck(nn.Module):
    """forward(c8 (N, ch8, h8, w8), c16 (N, ch16, h16, w16)) -> (N, out_ch, 2 h8, 2 w8) at stride 4."""

    def __init__(self, ch8, ch16, out_ch):
        super().__init__()
        self.block8 = conv_in_block(ch8 + ch16, MID_CH[0])
        self.block4 = conv_in_block(MID_CH[0], MID_CH[1])
        self.out = nn.Conv2d(MID_CH[1], out_ch, 1)

    def forward(self, c8, c16):
        up = F.interpolate(c16, size=c8.shape[-2:], mode="bilinear", align_corners=False)
        x = self.block8(torch.cat([c8, up], 1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.block4(x))
