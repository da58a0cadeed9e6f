"""The benchmark's inputs: the nuScenes scene-0916 camera rig, a synthetic street scene as an Occ3D label
volume, its logits with chosen opacities, and smooth random images / a training batch at any size."""
import math

import numpy as np
import torch

from datasets.synthetic import rig
from utils.constants import CAMS, FREE_ID, NUM_SEM_CLASSES, OCC3D_RANGE
from utils.geometry import inverse_rigid, scale_intrinsics


def rig_cameras(h, w, device):
    """The scene-0916 rig at h x w: viewmats (6, 4, 4) ego -> camera, Ks (6, 3, 3), cam2ego (6, 4, 4)."""
    K_full = torch.tensor(np.stack([rig.intrinsics(*rig.NUSC_IMG_HW, c) for c in CAMS]), dtype=torch.float32)
    Ks = scale_intrinsics(K_full, w / rig.NUSC_IMG_HW[1], h / rig.NUSC_IMG_HW[0])
    cam2ego = torch.tensor(rig.cam2ego(), dtype=torch.float32)
    return inverse_rigid(cam2ego).to(device), Ks.to(device), cam2ego.to(device)


class _Filler:
    """Writes axis-aligned metric boxes into a label volume (X, Y, Z): a voxel belongs to a box when its centre
    lies inside; a box thinner than a voxel still takes one voxel (like Occ3D's any-sub-point rule)."""

    def __init__(self, labels):
        self.labels = labels
        self.lo = OCC3D_RANGE[:3]
        self.size = [(OCC3D_RANGE[3 + i] - OCC3D_RANGE[i]) / n for i, n in enumerate(labels.shape)]

    def _range(self, a, b, axis):
        n = self.labels.shape[axis]
        i0 = math.ceil((a - self.lo[axis]) / self.size[axis] - 0.5)
        i1 = max(math.ceil((b - self.lo[axis]) / self.size[axis] - 0.5), i0 + 1)
        return min(max(i0, 0), n), min(max(i1, 0), n)

    def box(self, cx, cy, z0, lx, ly, lz, cls):
        (x0, x1), (y0, y1) = self._range(cx - lx / 2, cx + lx / 2, 0), self._range(cy - ly / 2, cy + ly / 2, 1)
        z0_, z1_ = self._range(z0, z0 + lz, 2)
        self.labels[x0:x1, y0:y1, z0_:z1_] = cls


def scene_labels(X, Y, Z, seed=0):
    """A street scene as Occ3D class ids (X, Y, Z) uint8 (17 = free); the same metric scene at every grid.

    Ego frame, z = 0 on the road: one ground layer (the one holding z = -0.05 m; road |y| < 7 m and a crossing
    road at x in [18, 28] m, sidewalk 7-10 m, terrain beyond), cars / trucks / a bus in 4 lanes, pedestrians,
    cones and barriers, trees along the kerbs, hollow buildings from |y| = 11 m on.
    """
    labels = torch.full((X, Y, Z), FREE_ID, dtype=torch.uint8)
    f = _Filler(labels)
    rng = np.random.default_rng(seed)
    xc = OCC3D_RANGE[0] + (torch.arange(X) + 0.5) * f.size[0]
    yc = OCC3D_RANGE[1] + (torch.arange(Y) + 0.5) * f.size[1]
    ay = yc.abs()[None].expand(X, Y)
    ground = torch.where(ay < 7, 11, torch.where(ay < 10, 13, 14))
    ground[(xc >= 18) & (xc < 28)] = 11
    kg = int((-0.05 - OCC3D_RANGE[2]) // f.size[2])
    labels[:, :, kg] = ground.to(torch.uint8)
    for lane_y in (-5.5, -2.0, 2.0, 5.5):  # vehicles
        x = -40 + rng.uniform(0, 6)
        while x < 40:
            r = rng.uniform()
            L, W, H, cls = ((rng.uniform(4, 5), rng.uniform(1.8, 2.0), rng.uniform(1.4, 1.7), 4) if r < 0.85 else
                            (rng.uniform(7, 9), 2.4, rng.uniform(2.8, 3.4), 10) if r < 0.95 else (11.0, 2.5, 3.2, 3))
            cx = x + L / 2
            if not (abs(cx) < 6 and abs(lane_y) < 3) and not 17 < cx < 29:  # keep the ego's spot and the crossing
                f.box(cx, lane_y + rng.uniform(-0.3, 0.3), 0.0, L, W, H, cls)
            x += L + rng.uniform(3, 15)
    for side in (-1, 1):
        for x in np.arange(-38, 38, 11.0):  # trees: trunk and crown
            x = x + rng.uniform(-2, 2)
            if 16 < x < 30:
                continue
            f.box(x, side * 9.5, 0.0, 0.4, 0.4, 2.5, 16)
            d = rng.uniform(2.5, 3.5)
            f.box(x, side * 9.5, 2.2, d, d, rng.uniform(2.0, 3.0), 16)
        for _ in range(6):  # pedestrians, cones, barriers on the sidewalk
            x, y = rng.uniform(-38, 38), side * rng.uniform(7.3, 9.0)
            kind = rng.integers(3)
            if kind == 0:
                f.box(x, y, 0.0, 0.6, 0.6, 1.75, 7)
            elif kind == 1:
                f.box(x, side * 7.2, 0.0, 0.4, 0.4, 0.7, 8)
            else:
                f.box(x, side * 7.2, 0.0, 2.0, 0.5, 1.0, 1)
        x = -40 + rng.uniform(0, 4)
        while x < 40:  # buildings
            L, D, H = rng.uniform(8, 18), rng.uniform(4, 7), rng.uniform(3.5, 7.0)
            cx = x + L / 2
            if not 15 < cx < 31:  # a shell: 0.5 m walls and roof (what LiDAR-made labels hold), floor slab
                f.box(cx, side * (11 + D / 2), 0.0, L, D, H, 15)
                f.box(cx, side * (11 + D / 2), 0.5, L - 1.0, D - 1.0, H - 1.0, FREE_ID)
            x += L + rng.uniform(4, 10)
    return labels


def scene_logits(labels, seed=0, device="cpu"):
    """Class ids (X, Y, Z) -> logits (18, X, Y, Z) float32 with a chosen opacity 1 - p(free) per voxel.

    Occupied voxels: opacity U(0.7, 0.999), semantic logits favour the class. Free voxels: opacity 1e-3 (pruned
    from the Gaussians, faint for the volume renderer), except 25 % of those next to an object (U(0.02, 0.3),
    an undecided margin) and 0.1 % floaters anywhere (U(0.01, 0.5)).
    """
    g = torch.Generator().manual_seed(seed)
    labels = labels.long()
    X, Y, Z = labels.shape
    occ = labels != FREE_ID
    opacity = torch.full(labels.shape, 1e-3)
    opacity[occ] = 0.7 + 0.299 * torch.rand(int(occ.sum()), generator=g)
    near_obj = torch.nn.functional.max_pool3d(occ.float()[None, None], 3, 1, 1)[0, 0].bool() & ~occ
    margin = near_obj & (torch.rand(labels.shape, generator=g) < 0.25)
    opacity[margin] = 0.02 + 0.28 * torch.rand(int(margin.sum()), generator=g)
    floaters = ~occ & (torch.rand(labels.shape, generator=g) < 1e-3)
    opacity[floaters] = 0.01 + 0.49 * torch.rand(int(floaters.sum()), generator=g)
    sem = 0.5 * torch.randn(NUM_SEM_CLASSES, X, Y, Z, generator=g)
    cls = torch.where(occ, labels, torch.randint(0, NUM_SEM_CLASSES, labels.shape, generator=g))
    sem.scatter_add_(0, cls[None], torch.full((1, X, Y, Z), 4.0))
    # p(free) = sigmoid(l_free - logsumexp(sem)) = 1 - opacity
    free = torch.logit(1 - opacity) + torch.logsumexp(sem, 0)
    logits = torch.cat([sem, free[None]], 0).to(device)
    return logits, {"occupied_fraction": float(occ.float().mean()),
                    "gaussian_candidates": int((opacity >= 1 / 255).sum())}


def smooth_images(shape, gen, device):
    """Random images with some structure: a low-resolution random field upsampled, plus fine noise, in [0, 1]."""
    *lead, c, h, w = shape
    n = int(np.prod(lead))
    low = torch.rand(n, c, max(h // 16, 2), max(w // 16, 2), generator=gen)
    img = torch.nn.functional.interpolate(low, (h, w), mode="bicubic", align_corners=False)
    img = (img + 0.05 * torch.randn(n, c, h, w, generator=gen)).clamp(0, 1)
    return img.view(*shape).to(device)


def train_batch(opt, device, seed):
    """One plausible sample: smooth random images, the rig at the input size, ego poses 1 m apart along x."""
    g = torch.Generator().manual_seed(seed)
    H, W = opt.input_size
    h, w = opt.render_size
    _, K, cam2ego = rig_cameras(H, W, device)
    e2g = torch.eye(4).repeat(3, 6, 1, 1)
    e2g[0, :, 0, 3], e2g[2, :, 0, 3] = -1.0, 1.0
    return {"imgs": smooth_images((1, 3, 6, 3, H, W), g, device), "K": K[None], "cam2ego": cam2ego[None],
            "ego2global": e2g[None].to(device),
            "sem": torch.randint(0, NUM_SEM_CLASSES, (1, 6, h, w), generator=g).to(device)}
