"""Stage-1 depth network: ResNet encoder + U-Net decoder -> multi-scale disparity and per-pixel Gaussian scale."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.resnet_encoder import ResnetEncoder, resolve_weights

NUM_SCALES = 4  # outputs at 1, 1/2, 1/4, 1/8 of the input resolution
# Depth the disparity heads start at, metres. Cross-view (GSP) supervision needs the pixel Gaussians of one camera
# to land in its neighbours, which only happens beyond a few metres; at sigmoid(0) = 0.5 the depth would be
# about 2 min_depth, and since the temporal loss cannot change the scale, the GSP term might never get a signal.
INIT_DEPTH = 10.0


def disp_to_depth(disp, min_depth, max_depth):
    """Sigmoid output in [0, 1] -> depth in [min_depth, max_depth], linear in inverse depth."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return 1.0 / (min_disp + (max_disp - min_disp) * disp)


class ConvBlock(nn.Module):
    """3x3 convolution (reflection padded) + ELU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        return F.elu(self.conv(x))


def head(in_ch, bias=0.0):
    """3x3 convolution to one channel, reflection padded, with its bias set to ``bias`` (sigmoid by the caller)."""
    conv = nn.Conv2d(in_ch, 1, 3, padding=1, padding_mode="reflect")
    nn.init.constant_(conv.bias, bias)
    return conv


def depth_to_logit(depth, min_depth, max_depth):
    """Inverse of sigmoid + ``disp_to_depth``, for a python float."""
    disp = (1.0 / depth - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)
    return math.log(disp / (1.0 - disp))


class DepthNet(nn.Module):
    """Monocular depth for every camera image, plus the size of the Gaussian each pixel becomes in GSP.

    Input: images (N, 3, H, W) in [0, 1] (H, W divisible by 8 for the scales below to be exact). Output dict:
      ("disp", s)  (N, 1, H/2^s, W/2^s) sigmoid disparity, s in 0..3 (-> depth with ``disp_to_depth``)
      "gs_scale"   (N, 1, H, W) Gaussian scale, metres: sigmoid * ``gsp_scale_max``; with
                   ``gsp_scale_relative`` it is a fraction of the pixel's depth instead (metres = value * depth).
    """

    def __init__(self, opt):
        super().__init__()
        self.scale_max = opt.gsp_scale_max
        weights = resolve_weights(opt.gsp_pretrained, opt.gsp_depth_layers, "--gsp_pretrained")
        self.encoder = ResnetEncoder(opt.gsp_depth_layers, weights)
        enc = list(self.encoder.num_ch_enc)  # e.g. [64, 64, 128, 256, 512]
        dec = [16, 32, 64, 128, 256]
        self.up_in = nn.ModuleList()
        self.up_out = nn.ModuleList()
        for k in range(5):  # k = 4 (coarsest) ... 0, built in increasing k for indexing
            in_ch = enc[-1] if k == 4 else dec[k + 1]
            self.up_in.append(ConvBlock(in_ch, dec[k]))
            skip = enc[k - 1] if k > 0 else 0
            self.up_out.append(ConvBlock(dec[k] + skip, dec[k]))
        init = depth_to_logit(INIT_DEPTH, opt.min_depth, opt.max_depth)
        self.disp_heads = nn.ModuleList(head(dec[s], init) for s in range(NUM_SCALES))
        self.scale_head = head(dec[0])

    def forward(self, img):
        feats = self.encoder(img)  # 5 maps at 1/2 ... 1/32
        out = {}
        x = feats[-1]
        for k in range(4, -1, -1):  # upsample to the skip's size (x2, or less where the size was odd), then fuse
            size = feats[k - 1].shape[-2:] if k > 0 else img.shape[-2:]
            x = F.interpolate(self.up_in[k](x), size=size, mode="nearest")
            if k > 0:
                x = torch.cat([x, feats[k - 1]], 1)
            x = self.up_out[k](x)
            if k < NUM_SCALES:
                out[("disp", k)] = torch.sigmoid(self.disp_heads[k](x).float())  # fp32 under autocast too
        out["gs_scale"] = torch.sigmoid(self.scale_head(x).float()) * self.scale_max
        return out
