"""Where stage 2 gets the camera motion of its temporal loss: recorded ego poses or the frozen stage-1 pose net.

A pose source is a callable ``source(batch) -> T (B, 2, 6, 4, 4)``: per camera, current camera -> previous (0) /
next (1) camera of the same sensor, the ``T_tgt2src`` of ``utils.geometry.warp``; with the near neighbours of
``--near_stride`` (batch frames 3 / 4) T is (B, 4, 6, 4, 4), those two following. Built once by the caller
(``build_pose_source``, called by ``networks.build_model``) and handed to the model, so a test can swap it without
checkpoints on disk.

``--stage1_poses FILE`` (written by ``tools/export_stage1_poses.py``): the stage-1 motion of every sample, predicted
once by the frozen stage-1 net; stage 2 then needs no stage-1 checkpoint (and loads no stage-1 model) for the
samples the file holds. The same motion as ``--stage1_ckpt`` gives (the net sees the same unaugmented images).
"""
import os

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

    def __init__(self, ckpt, load, cache=False, poses=None, poses_path=None):
        if not ckpt and poses is None:
            raise ValueError("--pose stage1 needs --stage1_ckpt PATH (a stage-1 checkpoint) or --stage1_poses PATH "
                             "(tools/export_stage1_poses.py); or use --pose gt")
        self.ckpt, self.load, self.poses_path = ckpt, load, poses_path
        self.model = None
        self.cache = {} if cache or poses is not None else None
        if poses is not None:
            self.cache.update(poses)

    def __call__(self, batch):
        if batch["imgs"].shape[1] > 3:  # the near neighbours (--near_stride): frames 3 / 4, predicted as a pair
            near = dict(batch, imgs=batch["imgs"][:, NEAR_FRAMES], ego2global=batch["ego2global"][:, NEAR_FRAMES])
            if batch.get("token") is not None:
                near["token"] = [f"{t}#near" for t in batch["token"]]
            far = dict(batch, imgs=batch["imgs"][:, :3], ego2global=batch["ego2global"][:, :3])
            return torch.cat([self(far), self(near)], 1)
        cam2ego = batch["cam2ego"]
        tokens = batch.get("token") if self.cache is not None else None
        if tokens is not None and all(t in self.cache for t in tokens):
            poses = torch.stack([self.cache[t] for t in tokens]).to(cam2ego.device)
        else:
            if self.model is None:
                if self.poses_path and not (self.ckpt and os.path.isfile(self.ckpt)):
                    missing = [t for t in (tokens or ["<a batch without sample tokens>"]) if t not in self.cache]
                    raise ValueError(f"--stage1_poses {self.poses_path} has no motion for sample {missing[0]}, and no "
                                     f"--stage1_ckpt is here to predict it ({self.ckpt or 'none given'}): export the "
                                     "motion of this split too (tools/export_stage1_poses.py --splits ...)")
                self.model = self.load(self.ckpt, cam2ego.device).requires_grad_(False)
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
        path = getattr(opt, "stage1_poses", None)
        if path:
            return Stage1Poses(opt.stage1_ckpt, load_stage1, poses=load_stage1_poses(path, opt), poses_path=path)
        return Stage1Poses(opt.stage1_ckpt, load_stage1, cache=len(set(getattr(opt, "frame_stride", [1]))) == 1)
    raise ValueError(f"unknown --pose {opt.pose!r} (expected gt or stage1)")


POSES_FORMAT = "gaussianocc-stage1-poses"
NEIGHBOUR_OPTIONS = ("adjacent", "frame_stride", "near_stride")  # which frames a sample's neighbours are


def neighbour_options(opt):
    """The options that decide which frames each sample's neighbours are: a poses file holds the motion to those."""
    return {k: getattr(opt, k, None) for k in NEIGHBOUR_OPTIONS}


def save_stage1_poses(path, poses, opt, stage1_ckpt):
    """Write ``poses`` ({sample token: (2, 4, 4) ego motion}) for ``--stage1_poses``, atomically."""
    tmp = f"{path}.tmp"
    torch.save({"format": POSES_FORMAT, "version": 1, "stage1_ckpt": str(stage1_ckpt),
                "neighbours": neighbour_options(opt), "poses": {t: p.float().cpu() for t, p in poses.items()}}, tmp)
    os.replace(tmp, path)


def load_stage1_poses(path, opt=None):
    """{sample token: (2, 4, 4) ego motion} of a ``--stage1_poses`` file; ValueError naming the file when it is not
    one, or when ``opt``'s neighbours (--adjacent, --frame_stride, --near_stride) are not the ones it was made for."""
    if not os.path.isfile(path):
        raise ValueError(f"--stage1_poses {path} not found (tools/export_stage1_poses.py writes it)")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"--stage1_poses {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict) or d.get("format") != POSES_FORMAT:
        raise ValueError(f"--stage1_poses {path} is not a stage-1 poses file (tools/export_stage1_poses.py writes one)")
    if opt is not None:
        if len(set(getattr(opt, "frame_stride", [1]))) > 1:
            raise ValueError(f"--stage1_poses {path}: a random --frame_stride {opt.frame_stride} gives each sample "
                             "other neighbours at every step; a poses file holds one motion per sample")
        mine = neighbour_options(opt)
        for k, v in d["neighbours"].items():
            if k in mine and mine[k] != v:
                raise ValueError(f"--stage1_poses {path} was exported with --{k} {v}, this run has --{k} {mine[k]}: "
                                 "export it again with this run's options")
    return d["poses"]
