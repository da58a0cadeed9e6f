"""The authors' 3D decoder: a stem, three stacked hourglasses (PSMNet's cost-volume regulariser) and a deep head.

The layout and the arithmetic follow the S3DCNN of their networks/_3DCNN.py as their occupancy decoder uses it
(``aggregation 3dcnn``, ``upsample false``, ``last_free true``), so their weights load by a name mapping
(utils/authors_ckpt.py). With c = ``width`` channels (their 2 x con_channel = 32):

  stem:  conv-bn-relu (in -> c), conv-bn-relu                         x0 = stem(v)
  res:   conv-bn-relu, conv-bn                                        x0 = res(x0) + x0
  three hourglasses, each (x, skip_in, skip_mid) -> (out, mid, up):
      a   = relu(conv-bn stride 2 (c -> 2c)); mid = conv-bn(a) (+ skip_mid of the previous glass), relu
      b   = conv-bn-relu stride 2 (mid); b = conv-bn-relu(b)
      up  = relu(deconv-bn x2 (b) + (skip_in if given, else mid));  out = deconv-bn x2 (up) (2c -> c)
    out1 = hg1(x0) + x0;  out2 = hg2(out1, mid1, up1) + x0;  out3 = hg3(out2, mid1, up2)
  head:  4 x conv-bn-relu, conv-bn (c -> out)                          logits = head(out3)

All convolutions are 3x3x3 without bias; every norm is a BatchNorm3d (torch.nn.SyncBatchNorm.convert_sync_batchnorm
turns them into SyncBN under DDP). Each axis of the volume must be divisible by 4 (two stride-2 levels).
Initialisation as theirs: convolutions N(0, 2 / (27 out_channels)), batch norms weight 1, bias 0; transposed
convolutions keep PyTorch's default.
"""
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, stride=1):
    """3x3x3 convolution (no bias) + BatchNorm3d."""
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout))


def conv_bn_relu(cin, cout, stride=1):
    return nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True))


def deconv_bn(cin, cout):
    """x2 upsampling by a 3x3x3 transposed convolution (no bias) + BatchNorm3d."""
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm3d(cout))


class Hourglass3d(nn.Module):
    """Two stride-2 levels down (c -> 2c) and back up; see the module docstring for the skips."""

    def __init__(self, c):
        super().__init__()
        self.down1 = conv_bn_relu(c, 2 * c, stride=2)
        self.mid = conv_bn(2 * c, 2 * c)
        self.down2 = conv_bn_relu(2 * c, 2 * c, stride=2)
        self.bottom = conv_bn_relu(2 * c, 2 * c)
        self.up1 = deconv_bn(2 * c, 2 * c)
        self.up2 = deconv_bn(2 * c, c)

    def forward(self, x, skip_in=None, skip_mid=None):
        mid = self.mid(self.down1(x))
        mid = F.relu(mid if skip_mid is None else mid + skip_mid)
        b = self.bottom(self.down2(mid))
        up = F.relu(self.up1(b) + (mid if skip_in is None else skip_in))
        return self.up2(up), mid, up


class HourglassTrunk(nn.Module):
    """forward(v (B, in_ch, X, Y, Z)) -> features (B, width, X, Y, Z); X, Y, Z divisible by 4."""

    def __init__(self, in_ch, width):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(in_ch, width), conv_bn_relu(width, width))
        self.res = nn.Sequential(conv_bn_relu(width, width), conv_bn(width, width))
        self.glasses = nn.ModuleList(Hourglass3d(width) for _ in range(3))
        init_like_authors(self)

    def forward(self, v):
        if any(n % 4 for n in v.shape[2:]):
            raise ValueError(f"--occ_decoder hourglass needs every grid_size axis divisible by 4, got "
                             f"{tuple(v.shape[2:])}")
        x0 = self.stem(v)
        x0 = self.res(x0) + x0
        out1, mid1, up1 = self.glasses[0](x0)
        out1 = out1 + x0
        out2, _, up2 = self.glasses[1](out1, mid1, up1)
        out2 = out2 + x0
        out3, _, _ = self.glasses[2](out2, mid1, up2)
        return out3


def hourglass_head(width, out_ch):
    """Their classification head: 4 x conv-bn-relu and a last conv-bn, whose batch-norm bias is the logit bias."""
    head = nn.Sequential(*[conv_bn_relu(width, width) for _ in range(4)], conv_bn(width, out_ch))
    init_like_authors(head)
    return head


def init_like_authors(module):
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # N(0, 2 / (27 cout))
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
