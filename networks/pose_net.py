"""Stage-1 pose network: one ego motion per frame pair, seen through all 6 cameras at once."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.resnet_encoder import ResnetEncoder, resolve_weights
from utils.constants import NUM_CAMS
from utils.geometry import axis_angle_to_matrix


class PoseNet(nn.Module):
    """Ego motion from the current to an adjacent frame of the 6 surround cameras.

    Every camera's (current, adjacent) pair goes through a shared ResNet with a 6-channel input. The per-camera
    features are squeezed by a 1x1 convolution and CONCATENATED in camera order (not pooled): the same image
    motion means a different ego motion in the front and in the back camera, so the fusion must know which
    camera each feature comes from. Two 3x3 convolutions and a spatial mean give 6 raw numbers: the axis-angle
    rotation is ``rot_scale`` x the first three (radians), the translation the last three (metres). The last
    layer starts at zero, so the initial motion is exactly the identity.

    Why ``rot_scale`` (0.01, as monodepth2 and the authors' pose decoder): Adam moves every raw output by about
    the same amount per step, so the outputs must be in units where the motion of one frame is of similar size.
    A frame's rotation is ~0.004 rad and its translation ~1 m; in raw radians the rotation moved ~100x too fast
    next to the translation (measured on exact synthetic depth, pose net alone: rotation error 5-17 degrees for
    ~800 steps and translation scale 0.24-0.31; with 0.01: scale 1.06 within 100 steps). The translation stays in
    metres because the depth is metric. Checkpoints from before this option load with 1.0
    (gsp_model.CHECKPOINT_DEFAULTS).

    forward(first (B, 6, 3, H, W), second (B, 6, 3, H, W)) -> T_ego (B, 4, 4): maps points in the ego frame of
    first to the ego frame of second. GSPModel passes the earlier frame first (see GSPModel.ego_motion).
    """

    nhwc_ok = False  # its fusion reshapes the features with ``view``: its encoder keeps the default layout

    def __init__(self, opt):
        super().__init__()
        weights = resolve_weights(opt.gsp_pretrained, opt.gsp_pose_layers, "--gsp_pretrained")
        self.encoder = ResnetEncoder(opt.gsp_pose_layers, weights, num_input_images=2)
        self.squeeze = nn.Conv2d(self.encoder.num_ch_enc[-1], 64, 1)
        self.fuse = nn.Sequential(
            nn.Conv2d(64 * NUM_CAMS, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(256, 6, 1)
        self.rot_scale = opt.gsp_rot_scale
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, first, second):
        b, n = first.shape[:2]
        x = torch.cat([first, second], 2).flatten(0, 1)  # (B*6, 6, H, W)
        f = F.relu(self.squeeze(self.encoder(x)[-1]))  # (B*6, 64, h, w)
        f = f.view(b, n * f.shape[1], *f.shape[2:])  # cameras side by side in the channels
        motion = self.out(self.fuse(f)).mean((2, 3))  # (B, 6)
        return axis_angle_to_matrix(self.rot_scale * motion[:, :3], motion[:, 3:])
