"""Ego motion from depth and images by direct photometric alignment: the motion is measured, not remembered.

Given the current images of the 6 cameras, their metric depth and the images of an adjacent frame, the ego motion
is the rigid transform that best warps the adjacent images onto the current ones (the temporal photometric error
of stage 1, SSIM + L1). Its scale is the depth's scale: with stage 1's metric depth (GSP) it is metric on any
street and at any frame spacing, because nothing in it is learnt per street.

Search, coarse to fine over an image pyramid:
  1. candidates: straight forward / backward motions along the ego x axis (0 and +-``T_MIN`` ... ``T_MAX`` metres,
     geometric steps, and optionally an initial guess such as the pose net's) are scored at the coarsest level; the
     best one starts the refinement. A car moves along x; this puts the start inside the photometric basin
     whatever the spacing (0.08 s sweeps or 0.5 s keyframes).
  2. refinement: Adam on 6 parameters (axis-angle rotation in 0.01 rad, translation in metres, composed with the
     start) at each level of the pyramid.
Pixels whose warp leaves the adjacent image count with their unwarped (identity) error, so the motion cannot lower
the error by pushing pixels out of view.
"""
import torch
import torch.nn.functional as F

from utils.geometry import axis_angle_to_matrix, ego_motion_to_cam, scale_intrinsics, warp
from utils.losses import photometric_error

T_MIN, T_MAX, T_STEP = 0.05, 16.0, 1.15  # metres: forward candidates T_MIN * T_STEP^k up to T_MAX
LEVELS = ((8, 40, 0.05), (4, 40, 0.02), (2, 30, 0.005))  # (downsampling factor, Adam iterations, lr)
TRAIN_LEVELS = ((8, 20, 0.05), (4, 20, 0.01))  # inside a training step: cheaper, 1/4 resolution at most
CHUNK = 32  # candidates scored in one call


def forward_candidates(device=None):
    """(C,) signed translations along ego x, metres: 0 and +-T_MIN ... T_MAX in geometric steps."""
    t, c = T_MIN, []
    while t <= T_MAX:
        c.append(t)
        t *= T_STEP
    c = torch.tensor(c, device=device)
    return torch.cat([c.new_zeros(1), c, -c])


def _level(cur, adj, depth, K, mask, factor):
    """(cur, adj, depth, K, identity error, weight) at 1 / ``factor`` of the size: images, depth and mask
    (B*6, ., h, w) (area; depth through its inverse), K (B*6,3,3), the photometric error of the unwarped adjacent
    images (B*6,1,h,w)."""
    cur, adj, depth, K, mask = (x.flatten(0, 1) for x in (cur, adj, depth, K, mask))
    if factor != 1:
        h, w = cur.shape[-2] // factor, cur.shape[-1] // factor
        K = scale_intrinsics(K, w / cur.shape[-1], h / cur.shape[-2])
        down = lambda x: F.interpolate(x, (h, w), mode="area")  # noqa: E731
        cur, adj, depth, mask = down(cur), down(adj), 1.0 / down(1.0 / depth.clamp(min=1e-3)), down(mask)
    return cur, adj, depth, K, photometric_error(adj, cur), mask


def alignment_error(T_ego, cur, adj, depth, K, identity, weight, cam2ego):
    """Mean photometric error (B,) of the adjacent images warped into the current ones through ego motion T_ego.

    T_ego (B,4,4) current ego -> adjacent ego; cur, adj (B*6,3,h,w); depth (B*6,1,h,w); K (B*6,3,3); identity
    (B*6,1,h,w) the error without warping, taken where the warp leaves the adjacent image; weight (B*6,1,h,w) of
    each pixel (0 on the ego car's body); cam2ego (B,6,4,4).
    """
    b = T_ego.shape[0]
    T_cam = ego_motion_to_cam(T_ego, cam2ego).flatten(0, 1)
    warped, ok = warp(adj, depth, K, T_cam)
    err = torch.where(ok, photometric_error(warped, cur), identity) * weight
    return err.view(b, -1).sum(1) / weight.view(b, -1).sum(1).clamp(min=1e-6)


def _translation(t):
    """(N,) translations along ego x -> (N,4,4) transforms."""
    T = torch.eye(4, device=t.device).repeat(len(t), 1, 1)
    T[:, 0, 3] = t
    return T


def _candidate_errors(cand, level, cam2ego):
    """alignment_error of C candidate motions per sample in one call: cand (B,C,4,4) -> (B,C)."""
    b, c = cand.shape[:2]
    rep = lambda x: x.view(b, 1, -1, *x.shape[1:]).expand(-1, c, *[-1] * x.dim()).flatten(0, 2)  # noqa: E731
    return alignment_error(cand.flatten(0, 1), *[rep(x) for x in level],
                           cam2ego[:, None].expand(-1, c, -1, -1, -1).flatten(0, 1)).view(b, c)


def solve_ego_motion(cur, adj, depth, K, cam2ego, init=None, levels=LEVELS, candidates=True, mask=None):
    """Ego motion current -> adjacent frame (B,4,4) that best aligns ``adj`` onto ``cur`` given ``depth``.

    cur, adj (B,6,3,H,W) images in [0,1]; depth (B,6,1,H,W) metres of the current images; K (B,6,3,3) at H x W;
    cam2ego (B,6,4,4). init: optional (B,4,4) guess (e.g. the pose net's), scored with the forward candidates
    (``candidates=False``: the refinement starts from init, or the identity). mask: optional (B,6,1,H,W) {0, 1},
    0 = left out (the ego car's body on DDAD). Runs with gradients off for the inputs; the result is detached.
    See the module docstring.
    """
    mask = torch.ones_like(depth) if mask is None else mask
    with torch.autocast(cur.device.type, enabled=False):  # float32 throughout, also inside an AMP region
        return _solve(cur, adj, depth, K, cam2ego, init, levels, candidates, mask)


def _solve(cur, adj, depth, K, cam2ego, init, levels, candidates, mask):
    b = cur.shape[0]
    cur, adj, depth, K, cam2ego, mask = (x.detach().float() for x in (cur, adj, depth, K, cam2ego, mask))
    start = torch.eye(4, device=cur.device).repeat(b, 1, 1) if init is None else init.detach().float()
    if candidates:
        coarse = _level(cur, adj, depth, K, mask, levels[0][0])
        cand = _translation(forward_candidates(cur.device))  # (C,4,4)
        if init is not None:
            cand = torch.cat([cand[None].expand(b, -1, -1, -1), start[:, None]], 1)  # (B,C+1,4,4)
        else:
            cand = cand[None].expand(b, -1, -1, -1)
        with torch.no_grad():
            err = torch.cat([_candidate_errors(c, coarse, cam2ego) for c in cand.split(CHUNK, 1)], 1)  # (B,C)
        start = cand[torch.arange(b), err.argmin(1)]
    params = torch.zeros(b, 6, device=cur.device, requires_grad=True)
    with torch.enable_grad():
        for factor, iters, lr in levels:
            data = _level(cur, adj, depth, K, mask, factor)
            optim = torch.optim.Adam([params], lr=lr)
            for _ in range(iters):
                T = axis_angle_to_matrix(0.01 * params[:, :3], params[:, 3:]) @ start
                loss = alignment_error(T, *data, cam2ego).sum()
                optim.zero_grad()
                loss.backward()
                optim.step()
    with torch.no_grad():
        return axis_angle_to_matrix(0.01 * params[:, :3], params[:, 3:]) @ start
