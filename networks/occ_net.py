"""OccNet: 6 images -> voxel feature volume -> semantic occupancy logits.

ResNet features of three stages are fused into one map at stride ``feat_stride``; every voxel centre (ego
frame) is projected into every camera and the feature map sampled bilinearly there; the volume holds the mean
over the cameras that see the voxel plus the fraction of cameras that do. A light 3D CNN of residual blocks
decodes logits (B, C+1, X, Y, Z) whose last channel is "free".

Voxel layout (``VoxelGrid``): the volume covers ``real_size`` uniformly. With ``contracted``, x and y are
contracted instead: the box ``real_size`` keeps a uniform share ``contract_ratio`` of the voxels of each of these
axes and the rest cover, per axis, the distance from the box edge out to ``contract_outer`` metres from the box
centre, with voxel size growing like the inverse-distance contraction of mip-NeRF 360:
    u = (x - centre) / half_width,  s = ratio * u                                      for |u| <= 1,
    s = sign(u) (ratio + (1 - ratio) (1 - 1/|u|) / (1 - half_width/outer))              for |u| > 1,
so |x - centre| = outer lands on s = +-1. z is never contracted. ``s`` is the grid_sample coordinate
(align_corners=False): voxel i of n has its centre at s = (2i + 1)/n - 1.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.resnet_encoder import ResnetEncoder
from utils.constants import NUM_SEM_CLASSES
from utils.precision import full_precision


def semantic_classes(opt):
    """Number of semantic classes C before the free channel: ``num_classes``, else 17 with use_sem, else 1."""
    return opt.num_classes or (NUM_SEM_CLASSES if opt.use_sem else 1)


class VoxelGrid:
    """Maps metric ego points to normalised grid coordinates in [-1, 1] and back (see the module docstring)."""

    def __init__(self, shape, real_size, contracted=False, contract_outer=100.0, contract_ratio=0.8):
        self.shape = tuple(int(n) for n in shape)
        lo = torch.tensor(real_size[0::2], dtype=torch.float32)
        hi = torch.tensor(real_size[1::2], dtype=torch.float32)
        self.centre, self.half = (lo + hi) / 2, (hi - lo) / 2
        self.contracted = contracted
        self.ratio = contract_ratio
        self.outer = contract_outer
        if contracted and not (0 < contract_ratio < 1 and contract_outer > self.half[:2].max()):
            raise ValueError("contracted grid needs 0 < contract_ratio < 1 and contract_outer beyond real_size")

    @classmethod
    def from_opt(cls, opt):
        return cls(opt.grid_size, opt.real_size, opt.contracted, opt.contract_outer, opt.contract_ratio)

    def _contract_xy(self, u, half):
        a = u.abs().clamp(min=1.0)
        outer = (self.ratio + (1 - self.ratio) * (1 - 1 / a) / (1 - half / self.outer)) * u.sign()
        return torch.where(u.abs() <= 1, self.ratio * u, outer)

    def _expand_xy(self, s, half):
        t = ((s.abs() - self.ratio) / (1 - self.ratio)).clamp(0, 1 - 1e-6) * (1 - half / self.outer)
        return torch.where(s.abs() <= self.ratio, s / self.ratio, s.sign() / (1 - t))

    def normalise(self, pts):
        """pts (..., 3) metric ego -> (..., 3) grid coordinates, x y z order, inside the volume when in [-1, 1]."""
        u = (pts - self.centre.to(pts)) / self.half.to(pts)
        if not self.contracted:
            return u
        xy = [self._contract_xy(u[..., i], self.half[i].item()) for i in range(2)]
        return torch.stack(xy + [u[..., 2]], -1)

    def denormalise(self, s):
        """Inverse of ``normalise`` for s (..., 3) in [-1, 1]."""
        if self.contracted:
            xy = [self._expand_xy(s[..., i], self.half[i].item()) for i in range(2)]
            s = torch.stack(xy + [s[..., 2]], -1)
        return s * self.half.to(s) + self.centre.to(s)

    def centres(self, device=None):
        """Metric ego coordinates of the voxel centres, (X, Y, Z, 3)."""
        axes = [(2 * torch.arange(n, device=device, dtype=torch.float32) + 1) / n - 1 for n in self.shape]
        return self.denormalise(torch.stack(torch.meshgrid(*axes, indexing="ij"), -1))


@full_precision
def lift_features(feats, K, cam2ego, pts, image_size, min_depth=0.1):
    """Average image features over the cameras that see each point.

    feats (B, N_cam, C, h, w) at any stride of an image of ``image_size`` (H, W) whose intrinsics are K
    (B, N_cam, 3, 3); cam2ego (B, N_cam, 4, 4); pts (P, 3) ego points. Returns (B, C + 1, P): mean feature and the
    fraction of cameras that see the point (in front of the camera by ``min_depth`` and inside the image). One
    grid_sample per camera keeps memory at O(B C P).
    """
    B, n_cam, C = feats.shape[:3]
    H, W = image_size
    ego2cam = torch.linalg.inv(cam2ego)
    pts_h = torch.cat([pts, torch.ones_like(pts[:, :1])], 1).t()  # (4, P)
    acc = feats.new_zeros(B, C, pts.shape[0])
    count = feats.new_zeros(B, 1, pts.shape[0])
    for i in range(n_cam):
        cam = (ego2cam[:, i, :3] @ pts_h)  # (B, 3, P)
        z = cam[:, 2:3]
        uv = (K[:, i] @ cam)[:, :2] / z.clamp(min=1e-6)
        grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], -1)  # (B, P, 2)
        visible = (z[:, 0] > min_depth) & (grid.abs() <= 1).all(-1)
        grid = torch.where(visible[..., None], grid, torch.full_like(grid, -2.0))  # off the map: zeros
        acc = acc + F.grid_sample(feats[:, i], grid[:, None], align_corners=False)[:, :, 0]
        count = count + visible[:, None].to(acc)
    return torch.cat([acc / count.clamp(min=1), count / n_cam], 1)


class ResBlock3d(nn.Module):
    """Two 3x3x3 convolutions with group norm and a skip connection."""

    def __init__(self, ch):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(ch, ch, 3, padding=1, bias=False), nn.GroupNorm(min(8, ch), ch), nn.ReLU(inplace=True),
            nn.Conv3d(ch, ch, 3, padding=1, bias=False), nn.GroupNorm(min(8, ch), ch))

    def forward(self, x):
        return F.relu(x + self.body(x))


class OccNet(nn.Module):
    """forward(imgs (B, 6, 3, H, W), K (B, 6, 3, 3), cam2ego (B, 6, 4, 4)) -> dict(
        logits (B, C + 1, X, Y, Z): C = num_classes semantic logits, last channel free,
        scale (B, 1, X, Y, Z) raw Gaussian scale, only when ``gs_scale_learn``)."""

    INIT_OPACITY = 0.1  # the free-class bias starts every voxel at this occupancy probability

    def __init__(self, opt):
        super().__init__()
        self.grid = VoxelGrid.from_opt(opt)
        self.min_depth = opt.min_depth
        self.feat_stride = opt.feat_stride
        self.encoder = ResnetEncoder(opt.encoder_layers, opt.encoder_weights)
        f, v = opt.feat_dim, opt.voxel_feat_dim
        self.lateral = nn.ModuleList(nn.Conv2d(c, f, 1) for c in self.encoder.num_ch_enc[2:])
        self.fuse = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(
            nn.Conv3d(f + 1, v, 3, padding=1, bias=False), nn.GroupNorm(min(8, v), v), nn.ReLU(inplace=True),
            *[ResBlock3d(v) for _ in range(opt.decoder_blocks)])
        n_cls = semantic_classes(opt)
        self.head = nn.Conv3d(v, n_cls + 1, 1)
        with torch.no_grad():
            p = self.INIT_OPACITY
            self.head.bias.zero_()
            self.head.bias[-1] = torch.log(torch.tensor((1 - p) * n_cls / p))
        self.scale_head = nn.Conv3d(v, 1, 1) if opt.gs_scale_learn else None
        self.register_buffer("centres", self.grid.centres(), persistent=False)

    def image_features(self, imgs):
        """imgs (N, 3, H, W) -> fused features (N, feat_dim, H / feat_stride, W / feat_stride)."""
        feats = self.encoder(imgs)[2:]
        size = (imgs.shape[-2] // self.feat_stride, imgs.shape[-1] // self.feat_stride)
        fused = sum(F.interpolate(lat(x), size=size, mode="bilinear", align_corners=False)
                    for lat, x in zip(self.lateral, feats))
        return self.fuse(fused)

    def forward(self, imgs, K, cam2ego):
        B, n_cam, _, H, W = imgs.shape
        feats = self.image_features(imgs.flatten(0, 1))
        feats = feats.view(B, n_cam, *feats.shape[1:])
        vol = lift_features(feats, K, cam2ego, self.centres.view(-1, 3), (H, W), self.min_depth)
        x = self.decoder(vol.view(B, -1, *self.grid.shape))
        out = {"logits": self.head(x)}
        if self.scale_head is not None:
            out["scale"] = self.scale_head(x)
        return out
