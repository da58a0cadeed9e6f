"""Camera geometry shared by both stages: back-projection, projection, image warping and pose algebra.

Conventions (see docs/ARCHITECTURE.md):
  * camera frame OpenCV (x right, y down, z forward); ego frame x forward, y left, z up; metres.
  * a 4x4 transform ``T_a2b`` maps the coordinates of a point in frame a to its coordinates in frame b:
    ``p_b = T_a2b @ p_a`` (homogeneous column vectors).
  * pixel-centre convention: pixel (row v, column u) covers [u - 0.5, u + 0.5] x [v - 0.5, v + 0.5] and its centre
    has the integer coordinates (u, v), as in OpenCV. An image of width W spans x in [-0.5, W - 0.5].
The tensor functions are differentiable, work on float tensors of any device and run in float32 under autocast
(utils/precision.py); ``pose_matrix`` (numpy, float64) turns the datasets' translation + quaternion records into
4x4 transforms.
"""
import numpy as np
import torch
import torch.nn.functional as F

from utils.precision import full_precision

# Points closer to the image plane than this (in camera z, metres) count as behind the camera.
MIN_Z = 1e-3


def _check(x, name, shape):
    """Raise an error naming ``name`` unless tensor ``x`` matches ``shape``.

    shape: tuple of ints or None (any size); a leading ``...`` allows any number of leading dims.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    tail = shape[1:] if shape[0] is ... else shape
    dims_ok = x.dim() >= len(tail) if shape[0] is ... else x.dim() == len(tail)
    if not dims_ok or any(s is not None and s != d for s, d in zip(tail, x.shape[x.dim() - len(tail):])):
        want = ", ".join("..." if s is ... else "*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape ({want}), got {tuple(x.shape)}")


def pose_matrix(translation, rotation_wxyz):
    """4x4 float64 transform from a translation (3,) and a quaternion (w, x, y, z), normalised here."""
    w, x, y, z = np.asarray(rotation_wxyz, dtype=np.float64) / np.linalg.norm(rotation_wxyz)
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                 [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                 [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = translation
    return T


@full_precision
def inv(M):
    """torch.linalg.inv without its check for singular input, which waits for the GPU (a host-device
    synchronisation on every call): the same inverse; a singular matrix gives inf / nan instead of an error."""
    return torch.linalg.inv_ex(M).inverse


@full_precision
def inverse_rigid(T):
    """Inverse of rigid transforms without a general matrix inverse.

    T: (..., 4, 4) with rotation block R and translation t. Returns (..., 4, 4) [R^T, -R^T t; 0 0 0 1].
    """
    _check(T, "T", (..., 4, 4))
    R_t = T[..., :3, :3].transpose(-1, -2)
    top = torch.cat([R_t, -R_t @ T[..., :3, 3:]], dim=-1)
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], dim=-2)


def pixel_grid(H, W, device=None, dtype=torch.float32):
    """Homogeneous pixel-centre coordinates (3, H*W): rows (u, v, 1), u the column, row-major order."""
    v, u = torch.meshgrid(torch.arange(H, device=device, dtype=dtype),
                          torch.arange(W, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], dim=0)


@full_precision
def ground_plane_depth(K, cam2ego, hw, height=0.0):
    """(N, 1, H, W) the camera depth (z) at which each pixel's ray meets the road plane z_ego = ``height``; inf where
    the ray does not go down to it (the horizon and above). K (N, 3, 3) at the size ``hw`` = (H, W), cam2ego
    (N, 4, 4). On nuScenes' ego frame (origin under the rear axle) the road lies at ~0.08 m, on the synthetic set at
    ~0.05 m (tools/diagnostics/ground_plane_real.py)."""
    H, W = hw
    rays = inv(K) @ pixel_grid(H, W, K.device, K.dtype)  # (N, 3, HW), camera z = 1
    down = (cam2ego[:, 2:3, :3] @ rays)[:, 0]  # (N, HW): ego height change per unit of camera depth
    lam = (height - cam2ego[:, 2:3, 3]) / down
    return torch.where(lam > 0, lam, torch.full_like(lam, float("inf"))).view(-1, 1, H, W)


@full_precision
def backproject(depth, inv_K):
    """Lift every pixel to a 3D point in its camera frame.

    depth: (B, 1, H, W) camera z (not ray length). inv_K: (B, 3, 3) inverse intrinsics.
    Returns (B, 3, H*W) points, pixel order row-major (index = v * W + u).
    """
    _check(depth, "depth", (None, 1, None, None))
    _check(inv_K, "inv_K", (depth.shape[0], 3, 3))
    B, _, H, W = depth.shape
    rays = inv_K @ pixel_grid(H, W, depth.device, depth.dtype)  # (B, 3, H*W), z = 1
    return rays * depth.reshape(B, 1, H * W)


@full_precision
def project(points, K, T=None):
    """Move points by ``T`` and project them with ``K``.

    points: (B, 3, N). K: (B, 3, 3). T: (B, 4, 4) or None (identity).
    Returns pix (B, N, 2) as (u, v) pixel coordinates (pixel-centre convention) and z (B, N), the camera z after
    moving. Points with z <= MIN_Z are behind the camera: their pixels are meaningless (z is clamped to MIN_Z in
    the division) and callers must mask them with ``z > MIN_Z``.
    """
    _check(points, "points", (None, 3, None))
    _check(K, "K", (points.shape[0], 3, 3))
    if T is not None:
        _check(T, "T", (points.shape[0], 4, 4))
        points = T[:, :3, :3] @ points + T[:, :3, 3:]
    cam = K @ points
    z = cam[:, 2]
    pix = cam[:, :2] / z.clamp(min=MIN_Z).unsqueeze(1)
    return pix.transpose(1, 2), z


@full_precision
def warp(img_src, depth_tgt, K, T_tgt2src, K_src=None):
    """Synthesise the target view by sampling the source image at the reprojection of each target pixel.

    img_src: (B, C, Hs, Ws) source image. depth_tgt: (B, 1, H, W) target camera z. K: (B, 3, 3) target
    intrinsics; K_src: (B, 3, 3) source intrinsics (default K, which then must suit the source size).
    T_tgt2src: (B, 4, 4) maps target camera coordinates to source camera coordinates.
    Returns warped (B, C, H, W) (bilinear, border padding) and valid (B, 1, H, W) bool: the point lies in front of
    the source camera and projects inside the source image, x in [-0.5, Ws - 0.5], y in [-0.5, Hs - 0.5].
    Sampling uses grid_sample with align_corners=False, whose normalised -1 / +1 are the outer edges of the
    border pixels, which matches the pixel-centre convention: x_norm = (2 u + 1) / Ws - 1.
    """
    _check(depth_tgt, "depth_tgt", (None, 1, None, None))
    B, _, H, W = depth_tgt.shape
    _check(img_src, "img_src", (B, None, None, None))
    _check(K, "K", (B, 3, 3))
    _check(T_tgt2src, "T_tgt2src", (B, 4, 4))
    K_src = K if K_src is None else K_src
    _check(K_src, "K_src", (B, 3, 3))
    Hs, Ws = img_src.shape[-2:]
    points = backproject(depth_tgt, inv(K))
    pix, z = project(points, K_src, T_tgt2src)
    u, v = pix[..., 0], pix[..., 1]
    valid = (z > MIN_Z) & (u >= -0.5) & (u <= Ws - 0.5) & (v >= -0.5) & (v <= Hs - 0.5)
    grid = torch.stack([(2 * u + 1) / Ws - 1, (2 * v + 1) / Hs - 1], dim=-1).clamp(-2, 2)
    warped = F.grid_sample(img_src, grid.reshape(B, H, W, 2), mode="bilinear", padding_mode="border",
                           align_corners=False)
    return warped, valid.reshape(B, 1, H, W)


@full_precision
def rel_cam_pose(cam2ego, ego2global_tgt, ego2global_src, cam2ego_src=None):
    """Transform from target camera coordinates to source camera coordinates through the world.

    cam2ego: (B, 6, 4, 4) target cameras -> ego. ego2global_tgt / ego2global_src: (B, 6, 4, 4) ego -> world at the
    target / source timestamp (one per camera, each camera has its own timestamp). cam2ego_src: (B, 6, 4, 4) source
    cameras, default cam2ego (same camera, other time: the temporal case). Any matching leading dims work.
    Returns T_tgt2src (B, 6, 4, 4) = inv(cam2ego_src) inv(E_src) E_tgt cam2ego.
    """
    for name, x in (("cam2ego", cam2ego), ("ego2global_tgt", ego2global_tgt), ("ego2global_src", ego2global_src)):
        _check(x, name, (..., 4, 4))
    cam2ego_src = cam2ego if cam2ego_src is None else cam2ego_src
    _check(cam2ego_src, "cam2ego_src", (..., 4, 4))
    return inverse_rigid(cam2ego_src) @ inverse_rigid(ego2global_src) @ ego2global_tgt @ cam2ego


def recorded_ego_motion(ego2global):
    """(B, 3, 6, 4, 4) per-frame ego poses -> (B, 2, 4, 4) float64 ego motion current -> previous (0) / next (1),
    on the CAM_FRONT clock (camera 0), computed in float64 (global coordinates are hundreds of metres)."""
    e = ego2global[:, :, 0].double()
    return torch.stack([inv(e[:, 0]) @ e[:, 1], inv(e[:, 2]) @ e[:, 1]], 1)


@full_precision
def ego_motion_to_cam(T_ego, cam2ego):
    """Express an ego motion in each camera frame.

    T_ego: (B, 4, 4) maps current-ego coordinates to adjacent-ego coordinates (= inv(E_adj) E_cur).
    cam2ego: (B, 6, 4, 4). Returns (B, 6, 4, 4) = inv(cam2ego) T_ego cam2ego, mapping current-camera coordinates
    to adjacent-camera coordinates: the ``T_tgt2src`` of ``warp`` with target = current, source = adjacent.
    """
    _check(T_ego, "T_ego", (None, 4, 4))
    _check(cam2ego, "cam2ego", (T_ego.shape[0], None, 4, 4))
    return inverse_rigid(cam2ego) @ T_ego[:, None] @ cam2ego


@full_precision
def axis_angle_to_matrix(aa, t):
    """Rigid transform [R(aa), t; 0 0 0 1] from an axis-angle vector (Rodrigues) and a translation.

    aa: (B, 3) rotation axis times angle (radians). t: (B, 3). Returns (B, 4, 4) mapping p to R p + t.
    R = I + a [aa]x + b [aa]x^2 with a = sin(th)/th, b = (1 - cos(th))/th^2; near th = 0 their Taylor series are
    used, so values and gradients stay finite at aa = 0.
    """
    _check(aa, "aa", (None, 3))
    _check(t, "t", (aa.shape[0], 3))
    th2 = (aa * aa).sum(-1, keepdim=True)[..., None]  # (B, 1, 1)
    small = th2 < 1e-6
    th = torch.where(small, torch.ones_like(th2), th2).sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / (th * th))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    S = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    R = torch.eye(3, dtype=aa.dtype, device=aa.device) + a * S + b * (S @ S)
    top = torch.cat([R, t[..., None]], dim=-1)
    bottom = torch.zeros_like(top[:, :1])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], dim=1)


@full_precision
def matrix_to_axis_angle(R):
    """(B, 3) axis times angle of rotation matrices R (B, 3, 3), angles below pi (the inverse of the rotation part of
    ``axis_angle_to_matrix``); near 0 a Taylor series keeps it finite."""
    _check(R, "R", (None, 3, 3))
    cos = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    th = torch.acos(cos)
    v = torch.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1) / 2  # sin(th) axis
    small = th < 1e-3
    f = torch.where(small, 1 + th * th / 6, th / torch.where(small, torch.ones_like(th), torch.sin(th)))
    return v * f[:, None]


@full_precision
def capture_synced_cam2ego(cam2ego, motion, cam_time):
    """Each camera where it was when it took its image, in the ego frame of the frame's mean capture time.

    The cameras of a rig that fire one after another (nuScenes: CAM_FRONT_LEFT first, CAM_BACK_LEFT about 42 ms later)
    see the scene from poses the calibration alone does not give: at 10 m/s the ego moves 0.4 m in that time, close to
    the 0.5 m between the two left cameras. The ego motion between frames is taken as constant over the frame
    interval and spread over each camera's time offset (rotation and translation linearly in time).

    cam2ego (B, S, 4, 4); motion (B, 2, 4, 4): current ego -> previous (0) / next (1) ego (what the pose net or the
    recorded poses give); cam_time (B, F, S) seconds from the current frame's mean capture time, frames previous /
    current / next first (``cam_time`` of the nuScenes items). The velocity is the mean of what the previous and the
    next frame give (one alone where the other is the current frame itself, none where neither is: the calibration
    as it is). Returns (B, S, 4, 4).
    """
    _check(cam2ego, "cam2ego", (None, None, 4, 4))
    _check(motion, "motion", (cam2ego.shape[0], None, 4, 4))
    dt = cam_time[:, :3].mean(-1)  # (B, 3): frame times
    vel_r, vel_t, n = 0.0, 0.0, 0.0
    for k, f in ((0, 0), (1, 2)):
        span = dt[:, f] - dt[:, 1]  # signed seconds to that frame
        ok = (span.abs() > 1e-3).to(cam2ego.dtype)
        pose = inverse_rigid(motion[:, k])  # that frame's ego in the current ego frame
        safe = torch.where(ok > 0, span, torch.ones_like(span))
        vel_r = vel_r + ok[:, None] * matrix_to_axis_angle(pose[:, :3, :3]) / safe[:, None]
        vel_t = vel_t + ok[:, None] * pose[:, :3, 3] / safe[:, None]
        n = n + ok
    n = n.clamp(min=1.0)[:, None]
    vel_r, vel_t = vel_r / n, vel_t / n  # (B, 3) radians / s and metres / s, in the current ego frame
    tau = cam_time[:, 1]  # (B, S)
    b, s = tau.shape
    shift = axis_angle_to_matrix((tau[..., None] * vel_r[:, None]).reshape(-1, 3),
                                 (tau[..., None] * vel_t[:, None]).reshape(-1, 3)).reshape(b, s, 4, 4)
    return shift @ cam2ego


def scale_intrinsics(K, sx, sy):
    """Intrinsics of an image resized by ``sx`` in width and ``sy`` in height (new W = sx W, new H = sy H).

    K: (..., 3, 3) torch tensor or numpy array. With the pixel-centre convention the continuous coordinate x maps to
    sx (x + 0.5) - 0.5, so fx' = sx fx (and the skew), cx' = sx (cx + 0.5) - 0.5; likewise for y.
    Returns a new K of the same type; the input is not modified.
    """
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale factors must be positive, got sx={sx}, sy={sy}")
    if tuple(K.shape[-2:]) != (3, 3):
        raise ValueError(f"K must have shape (..., 3, 3), got {tuple(K.shape)}")
    K = K.clone() if torch.is_tensor(K) else K.copy()
    K[..., 0, :] *= sx
    K[..., 1, :] *= sy
    K[..., 0, 2] += 0.5 * sx - 0.5
    K[..., 1, 2] += 0.5 * sy - 0.5
    return K


def rescale_K_to(K, from_hw, to_hw):
    """Intrinsics for resizing an image of size ``from_hw`` = (H, W) to ``to_hw`` = (H', W'); see scale_intrinsics."""
    (h0, w0), (h1, w1) = from_hw, to_hw
    if min(h0, w0, h1, w1) <= 0:
        raise ValueError(f"image sizes must be positive, got from_hw={from_hw}, to_hw={to_hw}")
    return scale_intrinsics(K, w1 / w0, h1 / h0)
