"""Where stage 2 gets the camera motion of its temporal loss: recorded ego poses or the frozen stage-1 pose net.

A pose source is a callable ``source(batch) -> T (B, 2, 6, 4, 4)``: per camera, current camera -> previous (0) /
next (1) camera of the same sensor, the ``T_tgt2src`` of ``utils.geometry.warp``; with the near neighbours of
``--near_stride`` (batch frames 3 / 4) T is (B, 4, 6, 4, 4), those two following. Built once by the caller
(``build_pose_source``, called by ``networks.build_model``) and handed to the model, so a test can swap it without
checkpoints on disk.
"""
import torch

from utils.constants import NEAR_FRAMES
from utils.geometry import ego_motion_to_cam, rel_cam_pose


class RecordedPoses:
    """The dataset's ego poses (``--pose gt``): for ablations, or to isolate stage 2 from stage 1."""

    def __call__(self, batch):
        cam2ego, e2g = batch["cam2ego"], batch["ego2global"]
        return torch.stack([rel_cam_pose(cam2ego, e2g[:, 1], e2g[:, k]) for k in range(e2g.shape[1]) if k != 1], 1)


class Stage1Poses:
    """The frozen stage-1 pose net of a GSP checkpoint (``--pose stage1``: the method, no ground-truth pose).

    ``load(path, device)`` rebuilds the stage-1 model of a checkpoint (``rebuild.load_stage1``); it runs at the first
    call, on the device of the batch, and the model never enters the stage-2 state dict (this is not an
    nn.Module), so evaluation and visualisation of a stage-2 checkpoint do not need it.
    With ``cache`` (the neighbours of a sample are always the same frames) the ego motion of every sample token is
    kept after its first batch: a stage-1 model that measures the motion by image alignment (``--gsp_pose
    net_solve``) then costs its iterations once per sample, not once per step.
    """

    def __init__(self, ckpt, load, cache=False):
        if not ckpt:
            raise ValueError("--pose stage1 needs --stage1_ckpt PATH (a stage-1 checkpoint); or use --pose gt")
        self.ckpt, self.load = ckpt, load
        self.model = None
        self.cache = {} if cache else None

    def __call__(self, batch):
        if batch["imgs"].shape[1] > 3:  # the near neighbours (--near_stride): frames 3 / 4, predicted as a pair
            near = dict(batch, imgs=batch["imgs"][:, NEAR_FRAMES], ego2global=batch["ego2global"][:, NEAR_FRAMES])
            if batch.get("token") is not None:
                near["token"] = [f"{t}#near" for t in batch["token"]]
            far = dict(batch, imgs=batch["imgs"][:, :3], ego2global=batch["ego2global"][:, :3])
            return torch.cat([self(far), self(near)], 1)
        cam2ego = batch["cam2ego"]
        if self.model is None:
            self.model = self.load(self.ckpt, cam2ego.device).requires_grad_(False)
        tokens = batch.get("token") if self.cache is not None else None
        if tokens is not None and all(t in self.cache for t in tokens):
            poses = torch.stack([self.cache[t] for t in tokens]).to(cam2ego.device)
        else:
            poses = self.model.predict_pose(batch)  # (B, 2, 4, 4) ego motion current -> previous / next
            if tokens is not None:
                self.cache.update(zip(tokens, poses.detach().cpu()))
        return torch.stack([ego_motion_to_cam(poses[:, k], cam2ego) for k in range(2)], 1)


def build_pose_source(opt, load_stage1=None):
    """The pose source that ``opt.pose`` names; None for ``--pose stage1`` without ``load_stage1`` (see
    ``Stage1Poses``): such a model predicts but does not train."""
    if opt.pose == "gt":
        return RecordedPoses()
    if opt.pose == "stage1":  # one stride: each sample's neighbours are fixed frames, their motion can be kept
        if load_stage1 is None:
            return None
        return Stage1Poses(opt.stage1_ckpt, load_stage1, cache=len(set(getattr(opt, "frame_stride", [1]))) == 1)
    raise ValueError(f"unknown --pose {opt.pose!r} (expected gt or stage1)")
