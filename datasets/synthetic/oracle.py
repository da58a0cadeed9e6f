"""Exact images, depth and ego motion of a synthetic scene, for oracle experiments and tests.

Freeze one part of a model to the truth and see whether the other learns: these functions give the truth
(dense camera-z depth from the ray caster, the recorded ego motion) without writing a dataset to disk.
"""
import numpy as np
import torch

from datasets.synthetic import rig
from datasets.synthetic.frame import MAX_RANGE, cast_cameras
from datasets.synthetic.scene import SAMPLE_DT, make_scene
from datasets.synthetic.texture import shade
from utils.constants import CAMS


def render_rgbd(world, ego2global, h, w, with_cls=False):
    """Images (6, 3, h, w) in [0, 1] and camera-z depth (6, 1, h, w) metres (sky: MAX_RANGE) of one ego pose; with
    ``with_cls`` also the 2D class of each pixel (6, h, w) int64 (255 = sky)."""
    imgs, depths, cls = [], [], []
    for K, rays, d, hit in cast_cameras(world, ego2global, h, w):
        imgs.append(shade(hit, d, world, 1.0 / K[0, 0]).reshape(h, w, 3).transpose(2, 0, 1))
        t = np.where(np.isfinite(hit["t"]), hit["t"], MAX_RANGE)
        depths.append((t * rays[:, 2]).reshape(1, h, w))
        cls.append(hit["cls"].reshape(h, w))
    out = (torch.tensor(np.stack(imgs), dtype=torch.float32), torch.tensor(np.stack(depths), dtype=torch.float32))
    return out + (torch.tensor(np.stack(cls).astype(np.int64)),) if with_cls else out


def rig_tensors(h, w):
    """K (6, 3, 3) at image size h x w and cam2ego (6, 4, 4) of the synthetic rig (scene-0916's calibration)."""
    K = torch.tensor(np.stack([rig.intrinsics(h, w, c) for c in CAMS]), dtype=torch.float32)
    return K, torch.tensor(np.stack(rig.cam2ego()), dtype=torch.float32)


def ego_motion(ego2global, cur, other):
    """(4, 4) float32 motion mapping points in the ego frame of frame ``cur`` to that of frame ``other``.

    Computed in float64 from the global poses (hundreds of metres from the origin) before the cast."""
    return torch.tensor(np.linalg.inv(ego2global[other]) @ ego2global[cur], dtype=torch.float32)


def scene_clip(seed, scene, num_frames, h, w, dt=None):
    """Frames of one synthetic scene ``dt`` seconds apart (default: its samples, SAMPLE_DT; 1/12 for camera
    sweeps): dict imgs (F, 6, 3, h, w), depth (F, 6, 1, h, w), cls (F, 6, h, w) int64 2D class (255 = sky),
    ego2global (F, 4, 4) float64, K (6, 3, 3), cam2ego (6, 4, 4)."""
    samples = num_frames if dt is None else int(np.ceil((num_frames - 1) * dt / SAMPLE_DT)) + 1  # the road to cover
    world = make_scene(seed, scene, samples)
    ego2global = world.ego2global if dt is None else world.ego_pose(np.arange(num_frames) * dt)
    imgs, depth, cls = zip(*[render_rgbd(world, ego2global[k], h, w, with_cls=True) for k in range(num_frames)])
    K, cam2ego = rig_tensors(h, w)
    return dict(imgs=torch.stack(imgs), depth=torch.stack(depth), cls=torch.stack(cls), ego2global=ego2global, K=K,
                cam2ego=cam2ego)
