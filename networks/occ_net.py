"""OccNet: 6 images -> voxel feature volume -> semantic occupancy logits.

Image features (``image_neck``): ``fpn`` (this project's) sums 1x1 projections of ResNet stages 3-5 at
``feat_stride`` and applies one 3x3 convolution; ``upconcat`` (the authors', networks/image_neck.py) fuses stages
3-4 into one map at stride 4. Every voxel centre (ego frame, ``VoxelGrid`` of networks/voxel_grid.py: uniform or
contracted) is projected into every camera and the feature map sampled bilinearly there; the volume holds the mean
over the cameras that see the voxel, plus (``lift_visibility``) the fraction of cameras that do, plus
(``lift_geometry``) where the voxel lies along those cameras' rays (without it the lifted feature is the same all
along a camera ray, and only the 3D CNN's context can say where on the ray a surface is). A 3D CNN
(``occ_decoder``: this project's ``residual`` blocks with group norm, or the authors' ``hourglass``,
networks/hourglass3d.py) decodes logits (B, C+1, X, Y, Z) whose last channel is "free".
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from options import above, at_least, str2bool, within
from networks.fast_norm import convert_batch_norm, make_group_norm
from networks.hourglass3d import HourglassTrunk, hourglass_head
from networks.image_neck import UpConcatNeck
from networks.lift_gather import _visible_pairs, lift_features_gather
from networks.resnet_encoder import ResnetEncoder, resolve_weights
from networks.voxel_grid import CONTRACT_MODES, VoxelGrid  # noqa: F401  (VoxelGrid: imported from here too)
from utils.constants import NUM_SEM_CLASSES
from utils.cuda_graphs import MAX_GRAPHS, capture, graph_key, graphable, parts
from utils.geometry import inv
from utils.precision import full_precision
from utils.speed import stage

# What a checkpoint written before an option existed was trained with (options.merge_checkpoint_options).
CHECKPOINT_DEFAULTS = {"contract_mode": "xy", "image_neck": "fpn", "lift_visibility": True,
                       "occ_decoder": "residual", "decoder_lr_mult": 1.0, "lift_geometry": "none"}
# A model rebuilt from a checkpoint takes its weights from there, not from an ImageNet file.
REBUILD_OVERRIDES = {"encoder_weights": "none"}


OPTION_RANGES = {"grid_size": at_least(1), "feat_dim": at_least(1), "voxel_feat_dim": at_least(1),
                 "decoder_blocks": at_least(0), "decoder_lr_mult": above(0), "contract_outer": above(0),
                 "contract_ratio": within(0.01, 1), "gs_offset": within(0, 1), "depth_bins": at_least(2)}
LIFT_GEOMETRY = ("none", "depth", "bins")


def add_args(parser):
    g = parser.add_argument_group(
        "stage 2 network (OccNet)", "images -> voxel logits; defaults are the authors' configs/nusc-sem-gs.txt "
        "(see README, 'The authors' options')")
    g.add_argument("--grid_size", type=int, nargs=3, default=[300, 300, 24], metavar=("X", "Y", "Z"),
                   help="voxels of the predicted volume (paper: 300 300 24 over real_size; on a CPU use e.g. "
                        "48 48 8)")
    g.add_argument("--real_size", type=float, nargs=6, default=[-40.0, 40.0, -40.0, 40.0, -1.0, 5.4],
                   metavar=("XMIN", "XMAX", "YMIN", "YMAX", "ZMIN", "ZMAX"),
                   help="metric extent of the volume in the ego frame; with --contracted the uniform inner box")
    g.add_argument("--contracted", type=str2bool, default=True,
                   help="contracted coordinates beyond real_size (see --contract_mode, networks/voxel_grid.py); "
                        "off: the volume covers real_size uniformly")
    g.add_argument("--contract_mode", type=str, default="xyz", choices=CONTRACT_MODES,
                   help="xyz: the authors' contraction of all three axes to an infinite range (their "
                        "world2contracted); xy: this project's, x and y only, out to --contract_outer")
    g.add_argument("--contract_outer", type=float, default=100.0,
                   help="contract_mode xy: outer range, metres from the centre of real_size along x and y")
    g.add_argument("--contract_ratio", type=float, default=0.66667,
                   help="contracted grid: share of the voxels of each contracted axis spent uniformly inside "
                        "real_size (authors: 0.66667)")
    g.add_argument("--encoder_layers", type=int, default=101, choices=[18, 34, 50, 101],
                   help="image encoder ResNet depth (authors: 101)")
    g.add_argument("--encoder_weights", type=str, default="imagenet",
                   help="imagenet: torchvision's ImageNet file of that ResNet (e.g. resnet101-63fe2227.pth) from "
                        "ckpts/ or torch hub's cache, never downloaded, an error names the file and its URL when "
                        "missing; imagenet_if_present: that file when it is there, else a random init (said in "
                        "the log); or a path to such a file; none: random init")
    g.add_argument("--image_neck", type=str, default="upconcat", choices=["upconcat", "fpn"],
                   help="upconcat: the authors' (ResNet stages 3-4 fused to one map at stride 4, needs "
                        "--feat_stride 4); fpn: this project's (stages 3-5 summed at --feat_stride)")
    g.add_argument("--feat_stride", type=int, default=4, choices=[4, 8, 16],
                   help="stride of the image feature map that is lifted to the voxels")
    g.add_argument("--feat_dim", type=int, default=64, help="channels of the lifted image features")
    g.add_argument("--lift_visibility", type=str2bool, default=False,
                   help="append the fraction of cameras that see each voxel to its lifted features (this "
                        "project's; the authors lift the mean feature only)")
    g.add_argument("--lift_geometry", type=str, default="none", choices=LIFT_GEOMETRY,
                   help="what each voxel learns of its place on the rays that see it: none (the authors'); depth: "
                        "+ 2 channels, its mean log depth in the cameras that see it and its height; bins: depth + "
                        "a distribution over --depth_bins depths per image pixel (a 1x1 head on the image "
                        "features, learnt through the renders) read at the voxel's depth in each camera")
    g.add_argument("--depth_bins", type=int, default=48,
                   help="--lift_geometry bins: log-spaced depth bins over --depth_bins_range")
    g.add_argument("--depth_bins_range", type=float, nargs=2, default=[1.0, 60.0], metavar=("NEAR", "FAR"),
                   help="--lift_geometry depth / bins: metres mapped to -1 / 1 in the depth channel and covered by "
                        "the bins (a depth beyond them reads the first / last bin)")
    g.add_argument("--occ_decoder", type=str, default="hourglass", choices=["hourglass", "residual"],
                   help="3D CNN: hourglass = the authors' (3 stacked hourglasses, batch norm, grid axes "
                        "divisible by 4); residual = this project's (--decoder_blocks blocks, group norm)")
    g.add_argument("--voxel_feat_dim", type=int, default=32,
                   help="channels of the 3D decoder (authors: 2 x con_channel = 32)")
    g.add_argument("--decoder_blocks", type=int, default=2, help="occ_decoder residual: 3x3x3 residual blocks")
    g.add_argument("--init_opacity", type=float, default=0.1,
                   help="the free logit's bias starts every voxel at this opacity (the authors' last batch norm "
                        "starts it near 0.5 with a spread)")
    g.add_argument("--decoder_lr_mult", type=float, default=10.0,
                   help="learning rate of the 3D decoder and heads = lr x this (authors: de_lr 1e-3 = 10 x the "
                        "encoder's 1e-4); the image encoder and neck train at lr")


def encoder_weights(opt):
    """--encoder_weights -> ResnetEncoder's ``weights`` argument (``resnet_encoder.resolve_weights``: True = look up
    the ImageNet file; with ``imagenet_if_present`` its path when it is found, else None: a random init, said in
    one line)."""
    return resolve_weights(opt.encoder_weights, opt.encoder_layers, "--encoder_weights")


def semantic_classes(opt):
    """Number of semantic classes C before the free channel: ``num_classes``, else 17 with use_sem, else 1."""
    return opt.num_classes or (NUM_SEM_CLASSES if opt.use_sem else 1)


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
    ego2cam = inv(cam2ego)
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


@full_precision
def voxel_geometry(K, cam2ego, pts, image_size, min_depth, depth_range, prob=None):
    """Where each point lies along the rays of the cameras that see it.

    K (B, N_cam, 3, 3) at ``image_size`` (H, W), cam2ego (B, N_cam, 4, 4), pts (P, 3) ego points, depth_range (near,
    far) metres. Returns (B, 1 or 2, P): the mean over the cameras that see the point (as lift_features: in front by
    ``min_depth``, inside the image) of its log depth in that camera mapped to [-1, 1] over depth_range (0 where no
    camera sees it), and with ``prob`` (B, N_cam, D, h, w), a distribution over D log-spaced depths of
    depth_range per pixel of a map of any size, the mean of that camera's probability of the point's depth bin at
    its pixel (trilinear in pixel and log depth; beyond depth_range the first / last bin)."""
    lo, hi = math.log(depth_range[0]), math.log(depth_range[1])
    gx, gy, visible, z = _visible_pairs(K, cam2ego, pts, image_size, min_depth, with_depth=True)  # (B, P, N_cam)
    visible = visible.to(z)
    gz = 2 * (torch.log(z.clamp(min=min_depth)) - lo) / (hi - lo) - 1  # log depth over depth_range -> [-1, 1]
    out = [(visible * gz).sum(-1)]
    if prob is not None:
        p = 0
        for i in range(K.shape[1]):
            grid = torch.stack([gx[..., i], gy[..., i], gz[..., i]], -1)[:, None, None]  # (B, 1, 1, P, 3): u v bin
            p = p + visible[..., i] * F.grid_sample(prob[:, i, None].float(), grid, mode="bilinear",
                                                    padding_mode="border", align_corners=False)[:, 0, 0, 0]
        out.append(p)
    count = visible.sum(-1)
    return torch.stack(out, 1) / count.clamp(min=1)[:, None]


def as_volume(x, shape, memory_format=torch.contiguous_format):
    """(B, C, P) -> (B, C, *shape) in ``memory_format``, copying only when x's memory is not already in that order.

    channels_last_3d comes as a permuted view of a (B, *shape, C) tensor, so that every stride (the size-1 batch's
    too) is the one PyTorch's layout guess (``suggest_memory_format``) expects: a (1, C, P) gather viewed straight
    as (1, C, X, Y, Z) is dense channels-last but its batch stride equals its last one, PyTorch then guesses
    NCDHW, and cuDNN's backward of the first convolution converts the whole input and output gradient to NCDHW
    and back (5.5 ms a step for 65 channels at 300 x 300 x 24, one H100; tools/diagnostics/conv_grad_layouts.py)."""
    B, C = x.shape[:2]
    if memory_format == torch.channels_last_3d:
        v = x.transpose(1, 2).reshape(B, *shape, C).permute(0, 4, 1, 2, 3).contiguous(memory_format=memory_format)
        X, Y, Z = shape
        if v.stride() != (X * Y * Z * C, 1, Y * Z * C, Z * C, C):
            # a size-1 axis kept an odd stride from the views (the 1-channel visibility's channel stride is P): the
            # guess reads NCDHW and cuDNN's backward converts the output gradient (1.5 ms, one H100); a copy with
            # the canonical strides (the memory order is already right)
            v = v.clone(memory_format=memory_format)
        return v
    return x.reshape(B, C, *shape).contiguous(memory_format=memory_format)


class SplitConv3d(nn.Conv3d):
    """nn.Conv3d (the same parameters and state) that also takes its input as two parts, ``(main, extra)``: the
    first ``split`` input channels and the rest, each a volume of its own; by linearity the result is the
    convolution of their concatenation, computed as conv(main, W[:, :split]) + conv(extra, W[:, split:]).

    For the lifted volume of 64 feature channels and the visibility channel: cuDNN's kernels for 65 input channels
    are slow (forward + backward at 300 x 300 x 24, float32 volume under bf16 autocast, one H100: 8.3 ms for 65
    channels, 3.9 ms for 64, 5.2 ms split; the 1-channel part needs no input gradient). The speed benchmark's
    components table times both (tools/bench/components.py conv_cases)."""

    def __init__(self, in_channels, out_channels, kernel_size, split, **kw):
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        if not 0 < split < in_channels:
            raise ValueError(f"SplitConv3d: split {split} must lie in (0, {in_channels})")
        self.split = split

    def forward(self, x):
        if isinstance(x, torch.Tensor):
            return super().forward(x)
        main, extra = x
        if main.shape[1] != self.split or main.shape[1] + extra.shape[1] != self.in_channels:
            raise ValueError(f"SplitConv3d: parts of {main.shape[1]} + {extra.shape[1]} channels, expected "
                             f"{self.split} + {self.in_channels - self.split}")
        w = self.weight
        y = self._conv_forward(main, w[:, :self.split], self.bias)
        return y + self._conv_forward(extra, w[:, self.split:], None)


class ResBlock3d(nn.Module):
    """Two 3x3x3 convolutions with group norm and a skip connection (``norm``: networks/fast_norm.py's impl)."""

    def __init__(self, ch, norm="torch"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(ch, ch, 3, padding=1, bias=False), make_group_norm(min(8, ch), ch, norm), nn.ReLU(inplace=True),
            nn.Conv3d(ch, ch, 3, padding=1, bias=False), make_group_norm(min(8, ch), ch, norm))

    def forward(self, x):
        return F.relu(x + self.body(x))


class _Part(nn.Module):
    """Some of an OccNet's submodules and the function of them that a step runs, as one module for
    make_graphed_callables (its parameters are exactly those the function uses). With ``names`` the function's
    dict comes back as the tuple of those of its values (a graph's outputs are tensors)."""

    def __init__(self, net, modules, fn, names=None):
        super().__init__()
        for name in modules:
            if getattr(net, name, None) is not None:
                setattr(self, name, getattr(net, name))
        self.fn, self.names = fn, names

    def forward(self, *x):
        out = self.fn(x[0] if len(x) == 1 else x)
        return out if self.names is None else tuple(out[n] for n in self.names)


def _graphable(enabled, net, x):
    return enabled and graphable(net, x)


class OccNet(nn.Module):
    """forward(imgs (B, 6, 3, H, W), K (B, 6, 3, 3), cam2ego (B, 6, 4, 4)) -> dict(
        logits (B, C + 1, X, Y, Z): C = num_classes semantic logits, last channel free,
        scale (B, 1 or 3, X, Y, Z) raw Gaussian scale (one, or one per grid axis: ``gs_scale_axes``), only when
        ``gs_scale_learn``), offset (B, 3, X, Y, Z) raw mean offset, only when ``gs_offset`` > 0)."""


    def __init__(self, opt):
        super().__init__()
        self.grid = VoxelGrid.from_opt(opt)
        self.min_depth = opt.min_depth
        self.feat_stride = opt.feat_stride
        self.neck_type = opt.image_neck
        self.lift_visibility = opt.lift_visibility
        self.lift_impl = opt.lift_impl  # grid_sample (lift_features) or gather (networks/lift_gather.py)
        self.lift_dtype = getattr(opt, "lift_dtype", "float32")  # the gather's dtype (float32 or the features')
        self.volume_format = torch.contiguous_format  # the 3D CNN's layout; utils/speed.py may set channels_last_3d
        self.graph_encoder = False  # --graph_encoder (utils/speed.py): the 2D part's training step as CUDA graphs
        self.graph_volume = False  # --graph_volume (utils/speed.py): the 3D CNN's training step as CUDA graphs
        self._graphs = {}  # option -> {graph_key: graphed part} (not submodules: no state of their own)
        self.decoder_lr_mult = opt.decoder_lr_mult
        f, v = opt.feat_dim, opt.voxel_feat_dim
        if opt.image_neck == "upconcat":
            if opt.feat_stride != 4:
                raise ValueError(f"--image_neck upconcat lifts features at stride 4: set --feat_stride 4 (got "
                                 f"{opt.feat_stride}) or use --image_neck fpn")
            self.encoder = ResnetEncoder(opt.encoder_layers, encoder_weights(opt), num_stages=4)
            self.neck = UpConcatNeck(*self.encoder.num_ch_enc[2:4], f)
        else:
            self.encoder = ResnetEncoder(opt.encoder_layers, encoder_weights(opt))
            self.lateral = nn.ModuleList(nn.Conv2d(c, f, 1) for c in self.encoder.num_ch_enc[2:])
            self.fuse = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(inplace=True))
        self.lift_geometry = getattr(opt, "lift_geometry", "none")
        self.depth_range = tuple(getattr(opt, "depth_bins_range", (1.0, 60.0)))
        if not 0 < self.depth_range[0] < self.depth_range[1]:
            raise ValueError(f"--depth_bins_range {self.depth_range}: needs 0 < NEAR < FAR")
        self.depth_head = nn.Conv2d(f, opt.depth_bins, 1) if self.lift_geometry == "bins" else None
        lifted = f + int(opt.lift_visibility) + {"none": 0, "depth": 2, "bins": 3}[self.lift_geometry]
        n_cls = semantic_classes(opt)
        self.split_lift_conv = False  # (--split_lift_conv: the residual decoder's first convolution, below)
        if opt.occ_decoder == "hourglass":
            bn = getattr(opt, "batch_norm_impl", "torch")
            self.decoder = convert_batch_norm(HourglassTrunk(lifted, v), bn)
            self.head = convert_batch_norm(hourglass_head(v, n_cls + 1), bn)
            logit_bias = self.head[-1][1].bias  # the last batch norm's shift
        else:
            norm = opt.group_norm_impl
            first = (SplitConv3d(lifted, v, 3, split=f, padding=1, bias=False) if lifted > f else
                     nn.Conv3d(lifted, v, 3, padding=1, bias=False))
            self.split_lift_conv = isinstance(first, SplitConv3d) and getattr(opt, "split_lift_conv", False)
            self.decoder = nn.Sequential(
                first, make_group_norm(min(8, v), v, norm),
                nn.ReLU(inplace=True), *[ResBlock3d(v, norm) for _ in range(opt.decoder_blocks)])
            self.head = nn.Conv3d(v, n_cls + 1, 1)
            logit_bias = self.head.bias
        with torch.no_grad():  # the free logit's bias that gives opacity --init_opacity under opt.opacity
            p = opt.init_opacity
            logit_bias.zero_()
            logit_bias[-1] = torch.log(torch.tensor((1 - p) / p * (n_cls if opt.opacity == "softmax" else 1)))
        self.scale_head = None
        if opt.gs_scale_learn:
            axes = getattr(opt, "gs_scale_axes", 1)
            self.scale_head = nn.Conv3d(v, axes, 1)
            if axes == 3:  # every axis starts at --gs_scale: gs_scale_max sigmoid(bias) = gs_scale
                if not 0 < opt.gs_scale < opt.gs_scale_max:
                    raise ValueError(f"--gs_scale_axes 3 starts at --gs_scale {opt.gs_scale}, which must lie in "
                                     f"(0, --gs_scale_max {opt.gs_scale_max})")
                with torch.no_grad():
                    self.scale_head.weight.normal_(0, 1e-3)
                    self.scale_head.bias.fill_(math.log(opt.gs_scale / (opt.gs_scale_max - opt.gs_scale)))
        self.offset_head = None
        if getattr(opt, "gs_offset", 0) > 0:  # starts at the voxel centres (tanh(0) = 0)
            if opt.contracted:
                raise ValueError("--gs_offset works on uniform grids only: set --contracted false or --gs_offset 0")
            self.offset_head = nn.Conv3d(v, 3, 1)
            nn.init.zeros_(self.offset_head.weight)
            nn.init.zeros_(self.offset_head.bias)
        self.register_buffer("centres", self.grid.centres(), persistent=False)
        z = self.centres.reshape(-1, 3)[:, 2]  # the height channel of lift_geometry: the grid's z range to [-1, 1]
        self.register_buffer("height", ((z - z.min()) / (z.max() - z.min()).clamp(min=1e-6) * 2 - 1)
                             .view(1, 1, -1), persistent=False)

    def param_groups(self):
        """Optimiser groups: the 2D part (encoder, neck) at the base lr, the 3D part (decoder, heads) at
        ``decoder_lr_mult`` x lr (one group when that is 1). Each group: dict(params=[...], lr_scale=float)."""
        two_d = [p for n, p in self.named_parameters()
                 if n.split(".")[0] in ("encoder", "neck", "lateral", "fuse", "depth_head")]
        ids = {id(p) for p in two_d}
        three_d = [p for p in self.parameters() if id(p) not in ids]
        if self.decoder_lr_mult == 1:
            return [{"params": two_d + three_d, "lr_scale": 1.0}]
        return [{"params": two_d, "lr_scale": 1.0}, {"params": three_d, "lr_scale": float(self.decoder_lr_mult)}]

    def image_features(self, imgs):
        """imgs (N, 3, H, W) -> features (N, feat_dim, H / feat_stride, W / feat_stride)."""
        feats = self.encoder(imgs)
        if self.neck_type == "upconcat":
            return self.neck(feats[2], feats[3])
        size = (imgs.shape[-2] // self.feat_stride, imgs.shape[-1] // self.feat_stride)
        fused = sum(F.interpolate(lat(x), size=size, mode="bilinear", align_corners=False)
                    for lat, x in zip(self.lateral, feats[2:]))
        return self.fuse(fused)

    def features_step(self, imgs):
        """image_features, through a CUDA graph of its forward and backward (torch.cuda.make_graphed_callables)
        when ``graph_encoder`` is set and this is a CUDA training step: the ResNet's ~500 kernels a pass are then one
        launch each way, so the GPU stops waiting for the host to issue them (the step's image encoder took 11 ms of
        host time for 4 ms of GPU time, one H100). One graph per input shape, dtype and autocast dtype, at most
        two (then eager); the batch-norm statistics are kept as they were before the capture's warm-up passes."""
        fn = self._graph("--graph_encoder", self.graph_encoder, imgs,
                         lambda: _Part(self, ("encoder", "neck", "lateral", "fuse"), self.image_features))
        return self.image_features(imgs) if fn is None else fn(imgs)

    def volume_output_names(self):
        return ["logits"] + ["scale"] * (self.scale_head is not None) + ["offset"] * (self.offset_head is not None)

    # the modules volume_outputs runs (those that exist): the 3D CNN's part of the step (channels_last_3d, graphs)
    VOLUME_PARTS = ("decoder", "head", "scale_head", "offset_head")

    def volume_outputs(self, vol):
        """The 3D CNN and its heads: {"logits", and "scale" / "offset" when those heads exist}. vol: the lifted
        volume, or its (features, the other channels) with --split_lift_conv (the decoder's first SplitConv3d)."""
        x = self.decoder(vol)
        out = {"logits": self.head(x)}
        if self.scale_head is not None:
            out["scale"] = self.scale_head(x)
        if self.offset_head is not None:
            out["offset"] = self.offset_head(x)
        return out

    def volume_step(self, vol):
        """volume_outputs, through a CUDA graph of its forward and backward when ``graph_volume`` is set and this is
        a CUDA training step (the grid is fixed, so is the volume's shape): the authors' hourglass with the fused
        norms took 23 ms of host time for 13 ms of GPU time a forward, about as long again a backward (one H100).
        As features_step; the activations stay in the graph's own memory between steps."""
        fn = self._graph("--graph_volume", self.graph_volume, vol,
                         lambda: _Part(self, self.VOLUME_PARTS, self.volume_outputs, self.volume_output_names()))
        return self.volume_outputs(vol) if fn is None else dict(zip(fn.names, fn(*parts(vol))))

    def _graph(self, flag, enabled, x, make_part):
        """The graphed part (``make_part()``) for input x, captured on first use; None (run eagerly) unless
        ``enabled`` and x is a CUDA training step's input, or once MAX_GRAPHS of this part exist (other shapes)."""
        if not _graphable(enabled, self, x):
            return None
        table = self._graphs.setdefault(flag, {})
        key = graph_key(x)
        if key not in table:
            if len(table) >= MAX_GRAPHS:
                return None
            table[key] = capture(make_part(), x, flag)
        return table[key]

    def forward(self, imgs, K, cam2ego):
        B, n_cam, _, H, W = imgs.shape
        with stage("image encoder"):
            feats = self.features_step(imgs.flatten(0, 1))
            feats = feats.view(B, n_cam, *feats.shape[1:])
        pts = self.centres.view(-1, 3)
        split = self.split_lift_conv  # the features and the other lifted channels as two volumes
        with stage("lifting"):
            if self.lift_impl == "gather":
                dtype = feats.dtype if self.lift_dtype == "features" else None
                vol = lift_features_gather(feats, K, cam2ego, pts, (H, W), self.min_depth, self.lift_visibility, dtype,
                                           split=split)
            else:
                vol = lift_features(feats, K, cam2ego, pts, (H, W), self.min_depth)
                if split:
                    vol = (vol[:, :-1], vol[:, -1:] if self.lift_visibility else None)
                elif not self.lift_visibility:
                    vol = vol[:, :-1]
            if self.lift_geometry != "none":
                prob = None
                if self.depth_head is not None:
                    logits = self.depth_head(feats.flatten(0, 1)).float()
                    prob = torch.softmax(logits, 1).view(B, n_cam, *logits.shape[1:])
                geo = voxel_geometry(K, cam2ego, pts, (H, W), self.min_depth, self.depth_range, prob)
                rest = [vol[1] if split else vol, geo, self.height.expand(B, 1, -1)]
                dt = rest[0].dtype if rest[0] is not None else vol[0].dtype
                rest = torch.cat([t.to(dt) for t in rest if t is not None], 1)
                vol = (vol[0], rest) if split else rest
        with stage("3D CNN"):
            vol = (as_volume(vol, self.grid.shape, self.volume_format) if isinstance(vol, torch.Tensor) else
                   tuple(as_volume(t, self.grid.shape, self.volume_format) for t in vol))
            out = self.volume_step(vol)
        return out
