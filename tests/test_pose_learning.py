"""Stage 1's pose net learns the recorded motion from photometry alone: the oracle test of issue 10.

Exact depth and images of a synthetic street (ray-cast, 12 Hz camera sweeps: 0.62 m and 0.23 degrees of yaw per
frame on a curved road) are given; only the pose net trains, on the temporal photometric loss of
utils/losses.reprojection_loss. With the rotation output in units of 0.01 rad (--gsp_rot_scale 0.01) the learnt
translation is within 5% of the recorded one after 80 CPU steps; in raw radians (the units of the first version)
Adam moves the rotation as fast as the translation and after the same steps the translation is 4x too short
(measured: scale 0.26, rotation error 1.9 degrees, against 1.03 and 0.08 degrees). What it learns is this street's
motion, not a measurement: at 6x the spacing it answers the same (issue 18).
"""
import argparse

import numpy as np
import pytest
import torch

from datasets.synthetic.oracle import ego_motion, scene_clip
from networks.pose_net import PoseNet
from utils.geometry import ego_motion_to_cam, inverse_rigid, warp
from utils.losses import reprojection_loss

FRAMES, H, W, STEPS, LR = 8, 32, 56, 80, 3e-4


@pytest.fixture(scope="module")
def clip():
    return scene_clip(0, 1, FRAMES, H, W, dt=1 / 12)


def train_pose_net(clip, rot_scale):
    """Train a fresh PoseNet on the clip (exact depth); returns it and per pair (k, k+1): (scale, rotation error
    deg)."""
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors on a shared 2-core machine
    net = PoseNet(argparse.Namespace(gsp_pose_layers=18, gsp_pretrained=False, gsp_rot_scale=rot_scale))
    optim = torch.optim.AdamW(net.parameters(), lr=LR)
    imgs, depth, K, c2e = clip["imgs"], clip["depth"], clip["K"], clip["cam2ego"][None]
    rng = np.random.default_rng(0)
    try:
        for step in range(STEPS):
            k = int(rng.integers(1, FRAMES - 1))
            prev, cur, nxt = imgs[[k - 1]], imgs[[k]], imgs[[k + 1]]
            motions = [inverse_rigid(net(prev, cur)), net(cur, nxt)]  # current ego -> previous / next ego
            warped, ok = zip(*[warp(src.flatten(0, 1), depth[k], K, ego_motion_to_cam(m, c2e).flatten(0, 1))
                               for m, src in zip(motions, (prev, nxt))])
            loss, _ = reprojection_loss(cur.flatten(0, 1), list(warped), [prev.flatten(0, 1), nxt.flatten(0, 1)],
                                        list(ok))
            for g in optim.param_groups:  # warm-up, then a tenth of the lr for the last 40%
                g["lr"] = LR * min(1.0, (step + 1) / 30) * (0.1 if step >= 0.6 * STEPS else 1.0)
            optim.zero_grad()
            loss.backward()
            optim.step()
        out = []
        with torch.no_grad():
            for k in range(1, FRAMES - 1):
                pred, true = net(imgs[[k]], imgs[[k + 1]])[0], ego_motion(clip["ego2global"], k, k + 1)
                cos = ((pred[:3, :3].T @ true[:3, :3]).trace() - 1) / 2
                out.append((float(pred[:3, 3].norm() / true[:3, 3].norm()),
                            float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))))
    finally:
        torch.set_num_threads(n)
    return net, np.array(out)


@pytest.fixture(scope="module")
def centiradians(clip):
    return train_pose_net(clip, 0.01)


def test_the_clip_is_a_curved_street_at_sweep_spacing(clip):
    m = ego_motion(clip["ego2global"], 2, 3)
    assert 0.5 < float(m[:3, 3].norm()) < 0.7  # metres per 1/12 s
    assert 0.1 < abs(float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))) < 0.4  # yaw per frame, degrees


def test_pose_net_learns_the_recorded_motion_with_rotation_in_centiradians(centiradians):
    _, res = centiradians
    assert abs(np.median(res[:, 0]) - 1) < 0.05, res
    assert np.median(res[:, 1]) < 0.3, res


def test_in_raw_radians_the_same_training_leaves_the_translation_short(clip):
    _, res = train_pose_net(clip, 1.0)
    assert np.median(res[:, 0]) < 0.6 and np.median(res[:, 1]) > 0.5, res


def test_the_pose_net_gives_its_training_motion_not_the_one_it_sees(clip, centiradians):
    """Issue 18: the same net, shown frames 6 sweeps apart (0.5 s, the keyframe spacing: 6x the motion), answers
    about the motion of one sweep. It learnt this street's speed, it does not measure the image motion; on held-out
    streets it gives its training streets' (docs/results/stage1_heldout.md; utils/pose_solver.py measures it)."""
    net, _ = centiradians
    imgs = clip["imgs"]
    with torch.no_grad():
        far = [float(net(imgs[[k]], imgs[[k + 6]])[0, :3, 3].norm()) for k in (0, 1)]
        near = [float(net(imgs[[k]], imgs[[k + 1]])[0, :3, 3].norm()) for k in (0, 1)]
        true = [float(ego_motion(clip["ego2global"], k, k + 6)[:3, 3].norm()) for k in (0, 1)]
    assert np.mean(far) / np.mean(near) < 1.5 and np.mean(far) / np.mean(true) < 0.3, (far, near, true)
