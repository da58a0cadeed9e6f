"""Stage 1 (GSP): self-supervised depth and metric-scale ego pose from the 6 surround cameras, no GT pose.

A depth net (per-pixel depth and Gaussian scale, 4 scales) and a pose net (one ego motion per frame pair, shared by
the 6 cameras). The criterion is passed in (``networks/gsp_loss.py``: temporal + smoothness + the GSP cross-view
loss; ``networks.build_model`` composes the two). Phase ``refine`` freezes the pose net (and the criterion drops
the cross-view term).
The motion (``gsp_pose``): the pose net in training; what stage 1 hands out (``predict_pose``) is measured by aligning
the adjacent images through the depth (``utils/pose_solver.py``), since the pose net alone answers the motion of
its training streets whatever it sees (docs/results/stage1_heldout.md).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.depth_net import DepthNet, disp_to_depth
from networks.pose_net import PoseNet
from utils.batch import self_occlusion
from utils.cli import str2bool
from utils.constants import NEAR_FRAMES
from utils.geometry import inverse_rigid, recorded_ego_motion, rescale_K_to
from utils.pose_solver import LEVELS, TRAIN_LEVELS, solve_ego_motion

# What a checkpoint written before an option existed was trained with (options.merge_checkpoint_options).
CHECKPOINT_DEFAULTS = {"gsp_rot_scale": 1.0,  # the pose net's rotation output was in raw radians
                       "gsp_pose": "net"}  # the motion came from the pose net alone
# A model rebuilt from a checkpoint takes its weights from there, not from an ImageNet file.
REBUILD_OVERRIDES = {"gsp_pretrained": False}


def add_args(parser):
    g = parser.add_argument_group("stage 1 (GSP)", "self-supervised depth + metric-scale ego pose (--stage gsp); the "
                                  "losses' options are in the group of networks/gsp_loss.py")
    g.add_argument("--gsp_phase", type=str, default="main", choices=["main", "refine"],
                   help="main: depth + pose + cross-view loss; refine: pose net frozen, cross-view loss off")
    g.add_argument("--min_depth", type=float, default=0.1, help="depth range of the depth net, metres (low)")
    g.add_argument("--max_depth", type=float, default=80.0, help="depth range of the depth net, metres (high)")
    g.add_argument("--gsp_scale_max", type=float, default=0.02,
                   help="cap of the per-pixel Gaussian scale (metres; a fraction of depth with gsp_scale_relative)")
    g.add_argument("--gsp_rot_scale", type=float, default=0.01,
                   help="pose net: rotation (axis-angle, radians) = this x the raw output, translation in metres; "
                        "puts one frame's rotation and translation on similar scales for Adam (networks/pose_net.py)")
    g.add_argument("--gsp_pose", type=str, default="net_solve", choices=["net", "net_solve", "solve"],
                   help="where the ego motion comes from. net: the pose net (training and prediction); net_solve: "
                        "the pose net in training, its motion refined at prediction (eval, stage 2) by aligning the "
                        "adjacent images onto the current ones through the depth net's depth (utils/pose_solver.py); "
                        "solve: that alignment in training and prediction, no pose net. The pose net alone regresses "
                        "the motion it saw on its training streets instead of measuring it "
                        "(docs/results/stage1_heldout.md); the alignment has the depth's scale, metric by GSP")
    g.add_argument("--gsp_depth_layers", type=int, default=18, choices=[18, 34, 50], help="depth net ResNet depth")
    g.add_argument("--gsp_pose_layers", type=int, default=18, choices=[18, 34, 50], help="pose net ResNet depth")
    g.add_argument("--gsp_pretrained", type=pretrained_flag, default=False,
                   help="true: start both encoders from the torchvision ImageNet checkpoints found in ckpts/ or torch "
                        "hub's cache, as the authors' stage 1 (nothing is downloaded; a missing file is an error that "
                        "names it); if_present: those files when they are there, else a random init (said in the "
                        "log); false: random init (the synthetic configs: no ImageNet file travels with the repo)")


def pretrained_flag(v):
    """argparse type of --gsp_pretrained: a boolean, or ``if_present``."""
    if str(v).strip().lower() in ("if_present", "imagenet_if_present"):
        return "if_present"
    return str2bool(v)


class GSPModel(nn.Module):
    """Depth net + pose net, trained by the criterion passed in (``networks/gsp_loss.py``).

    Batch: imgs (B,3,6,3,H,W) prev / current / next (optional imgs_net: the networks' colour-augmented copy), K
    (B,6,3,3) at the input size, cam2ego (B,6,4,4), optional
    mask (B,6,h,w) {0, 1} self-occlusion masks (DDAD, 0 = ego car body), left out of every loss.

    criterion: callable (depth outputs, poses (B,2,4,4), batch) -> (loss, logs, pictures); without one the model
    predicts but does not train.
    """

    def __init__(self, opt, criterion=None):
        super().__init__()
        self.opt = opt
        self.depth = DepthNet(opt)
        self.pose = PoseNet(opt)
        self.criterion = criterion
        if opt.gsp_phase == "refine" or opt.gsp_pose == "solve":
            self.pose.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.opt.gsp_phase == "refine":
            self.pose.eval()  # frozen: batch-norm statistics stay as well
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def depth_outputs(self, cur):
        """cur (B,6,3,H,W) -> DepthNet outputs for the B*6 images (see DepthNet) + "depth" (B*6,1,H,W) metres."""
        out = self.depth(cur.flatten(0, 1))
        out["depth"] = disp_to_depth(out[("disp", 0)], self.opt.min_depth, self.opt.max_depth)
        return out

    def ego_motion(self, imgs):
        """imgs (B,3,6,3,H,W) -> (B,2,4,4): current ego frame -> previous (0) / next (1) ego frame.

        The pose net always sees a pair in time order (earlier, later) and predicts earlier ego -> later ego; the
        previous frame's motion is the inverse of pose(prev, cur). Asked for (cur, prev) and (cur, next) instead,
        the net would have to tell the direction of time from two nearly equal images: its first, constant
        guess is then the average of a forward and a backward motion, zero, and the translation stays near zero
        (measured: scale 0.04 after 3,000 steps). In time order a constant forward motion is already a good guess.
        """
        prev_to_cur = self.pose(imgs[:, 0], imgs[:, 1])
        return torch.stack([inverse_rigid(prev_to_cur), self.pose(imgs[:, 1], imgs[:, 2])], 1)

    def motion(self, imgs, net_imgs, depth, K, cam2ego, valid=None):
        """(B,2,4,4) current ego -> previous / next ego from the source ``gsp_pose`` names (see add_args).

        imgs: (B,3,6,3,H,W) the images the solver aligns, net_imgs: the pose net's input (the same or its colour-
        augmented copy), depth (B,6,1,H,W) of the current images, K (B,6,3,3) at H x W, cam2ego (B,6,4,4), valid:
        optional (B,6,1,H,W) {0, 1} self-occlusion mask (pixels left out of the alignment).
        """
        mode = self.opt.gsp_pose
        if mode == "net" or (mode == "net_solve" and self.training):
            return self.ego_motion(net_imgs)
        b = imgs.shape[0]
        init = self.ego_motion(net_imgs).detach() if mode == "net_solve" else None
        two = lambda x: torch.cat([x, x])  # noqa: E731  previous and next in one solve
        T = solve_ego_motion(two(imgs[:, 1]), torch.cat([imgs[:, 0], imgs[:, 2]]), two(depth), two(K), two(cam2ego),
                             init=None if init is None else torch.cat([init[:, 0], init[:, 1]]),
                             levels=TRAIN_LEVELS if self.training else LEVELS,
                             mask=None if valid is None else two(valid))
        return torch.stack([T[:b], T[b:]], 1)

    def set_step(self, step, log=True):
        """The trainer's step, for the criterion's schedules (--ground_steps)."""
        if self.criterion is not None and hasattr(self.criterion, "set_step"):
            self.criterion.set_step(step, log)

    def forward(self, batch):
        """(loss, logs, outputs): outputs = current depth (B,6,H,W), poses (B,2,4,4) and the criterion's pictures."""
        if self.criterion is None:
            raise ValueError("this GSPModel has no criterion: networks.build_model(opt) composes one that trains")
        imgs, K, cam2ego = batch["imgs"], batch["K"], batch["cam2ego"]
        b, _, n, _, h, w = imgs.shape
        net_imgs = batch.get("imgs_net", imgs)  # the networks' (colour-augmented) copy; the losses use imgs
        out = self.depth_outputs(net_imgs[:, 1])
        depth, occl = out["depth"].detach().unflatten(0, (b, n)), self_occlusion(batch, (h, w))
        poses = self.motion(imgs[:, :3], net_imgs[:, :3], depth, K, cam2ego, occl)
        if imgs.shape[1] > 3:  # the near neighbours of --near_stride (frames 3 / 4): their motion too, (B, 4, 4, 4)
            near = NEAR_FRAMES
            poses = torch.cat([poses, self.motion(imgs[:, near], net_imgs[:, near], depth, K, cam2ego, occl)], 1)
        loss, logs, pictures = self.criterion(out, poses, batch)
        outputs = {"depth": depth[:, :, 0], "poses": poses[:, :2].detach(), **pictures}
        logs["mean_depth"] = outputs["depth"].mean()
        logs["ego_translation"] = poses[:, :2, :3, 3].detach().norm(dim=-1).mean()
        if "ego2global" in batch:  # a diagnostic only: the recorded motion never reaches a loss
            true = recorded_ego_motion(batch["ego2global"][:, :3])[:, :, :3, 3].norm(dim=-1)
            logs["trans_ratio"] = (poses[:, :2, :3, 3].detach().double().norm(dim=-1) / true.clamp(min=1e-3)).mean()
        return loss, logs, outputs

    @torch.no_grad()
    def predict_depth(self, batch):
        """Metric depth (B,6,H,W) of the current images at the input size."""
        imgs = batch["imgs"]
        return self.depth_outputs(imgs[:, 1])["depth"].unflatten(0, (imgs.shape[0], imgs.shape[2]))[:, :, 0]

    @torch.no_grad()
    def predict_pose(self, batch):
        """Ego motion (B,2,4,4) mapping points in the CURRENT ego frame to the PREVIOUS (0) / NEXT (1) ego frame.

        Images of another size (stage 2 reads its own input size) are resized to the stage-1 ``input_size``.
        """
        imgs, K = batch["imgs"], batch.get("K")  # K, cam2ego: only the alignment (gsp_pose net_solve, solve)
        size = tuple(getattr(self.opt, "input_size", imgs.shape[-2:]))
        if tuple(imgs.shape[-2:]) != size:
            K = None if K is None else rescale_K_to(K, imgs.shape[-2:], size)
            imgs = F.interpolate(imgs.flatten(0, 2), size, mode="bilinear", align_corners=False,
                                 antialias=True).unflatten(0, imgs.shape[:3])
        if self.opt.gsp_pose == "net":
            return self.ego_motion(imgs)
        depth = self.depth_outputs(imgs[:, 1])["depth"].unflatten(0, (imgs.shape[0], imgs.shape[2]))
        return self.motion(imgs, imgs, depth, K, batch["cam2ego"], self_occlusion(batch, size))

