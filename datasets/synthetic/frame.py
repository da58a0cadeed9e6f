"""Everything the sensors of one synthetic frame record: 6 images, 2D semantics, a LiDAR sweep, Occ3D labels.

Pixel convention: OpenCV, the ray of pixel column u, row v goes through (u, v) with the intrinsics scaled to
the image size (``rig.intrinsics``), i.e. integer pixel coordinates are pixel centres.
"""
import numpy as np

from utils.constants import CAMS, FREE_ID
from datasets.synthetic import occupancy, rig, visibility
from datasets.synthetic.raycast import cast, cull
from datasets.synthetic.texture import shade

MAX_RANGE = 200.0  # camera rays: beyond this is sky
MASK_HW = (180, 320)  # depth buffer of each camera for mask_camera (1/5 of 900 x 1600), see camera_mask
LIDAR_BEAMS, LIDAR_ELEV, LIDAR_AZ_STEP, LIDAR_RANGE = 32, (-30.0, 10.0), 0.4, 70.0
# LiDAR intensity (0-255) per material, scaled by the incidence cosine
REFLECTIVITY = np.array([12, 25, 20, 18, 30, 35, 60, 8, 15, 20, 25, 90, 70, 55])


def pixel_rays(K, h, w):
    """Unit ray directions (h * w, 3) in the camera frame through the pixel centres (u, v)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def lidar_rays():
    """Unit directions (32 * 900, 3) in the LIDAR_TOP frame, beam-major, and the ring index of each."""
    el = np.radians(np.linspace(*LIDAR_ELEV, LIDAR_BEAMS))
    az = np.radians(np.arange(0, 360, LIDAR_AZ_STEP))
    el_g, az_g = np.meshgrid(el, az, indexing="ij")
    d = np.stack([np.cos(el_g) * np.cos(az_g), np.cos(el_g) * np.sin(az_g), np.sin(el_g)], -1).reshape(-1, 3)
    return d, np.repeat(np.arange(LIDAR_BEAMS), len(az))


def cast_cameras(world, ego2global, h, w):
    """Ray-cast the 6 cameras of one ego pose. Yields, per camera in CAMS order, (K (3, 3), unit rays in the
    camera frame (h * w, 3), the same rays in the global frame, the ``cast`` hit record)."""
    for cam, c2e in zip(CAMS, rig.cam2ego()):
        K = rig.intrinsics(h, w, cam)
        c2g = ego2global @ c2e
        rays = pixel_rays(K, h, w)
        d = rays @ c2g[:3, :3].T
        half_fov = np.arctan(np.hypot(w, h) / K[0, 0]) + 0.05
        prims = cull(world, c2g[:3, 3], MAX_RANGE, c2g[:3, 2], half_fov)
        yield K, rays, d, cast(world, c2g[:3, 3], d, MAX_RANGE, prims)


def render_cameras(world, ego2global, h, w):
    """Images (6, h, w, 3) uint8, semantics (6, h, w) uint8 (255 = sky) and per-instance pixel counts
    (visible, crossed) summed over the cameras."""
    imgs, sems, visible, crossed = [], [], {}, {}
    for K, _, d, hit in cast_cameras(world, ego2global, h, w):
        imgs.append(np.round(shade(hit, d, world, 1.0 / K[0, 0]) * 255).astype(np.uint8).reshape(h, w, 3))
        sems.append(hit["cls"].reshape(h, w))
        for k, n in zip(*np.unique(hit["inst"][hit["inst"] >= 0], return_counts=True)):
            visible[int(k)] = visible.get(int(k), 0) + int(n)
        for k, n in hit["any_hits"].items():
            crossed[int(k)] = crossed.get(int(k), 0) + n
    return np.stack(imgs), np.stack(sems), visible, crossed


def render_lidar(world, ego2global):
    """LiDAR points (N, 5) float32 x, y, z, intensity, ring in the LIDAR_TOP frame and the instance of each."""
    l2g = ego2global @ rig.lidar2ego()
    d_l, ring = lidar_rays()
    d = d_l @ l2g[:3, :3].T
    hit = cast(world, l2g[:3, 3], d, LIDAR_RANGE, cull(world, l2g[:3, 3], LIDAR_RANGE))
    ok = np.isfinite(hit["t"])
    cos = np.abs((hit["normal"][ok] * d[ok]).sum(1))
    intensity = np.round(REFLECTIVITY[hit["material"][ok]] * (0.3 + 0.7 * cos))
    pts = np.concatenate([hit["t"][ok, None] * d_l[ok], intensity[:, None], ring[ok, None]], 1)
    return pts.astype(np.float32), hit["inst"][ok]


def lidar_in_ego(world, sensor_pose, ego2global):
    """The LiDAR sweep taken at ego pose ``sensor_pose`` in the ego frame of ``ego2global``: (origin (3,),
    returned points (N, 3))."""
    pts = render_lidar(world, sensor_pose)[0][:, :3].astype(np.float64)
    T = np.linalg.inv(ego2global) @ sensor_pose @ rig.lidar2ego()
    return T[:3, 3], pts @ T[:3, :3].T + T[:3, 3]


def occ3d_labels(world, k):
    """Occ3D ``semantics``, ``mask_lidar``, ``mask_camera`` (200, 200, 16) uint8 of sample ``k``. mask_lidar
    accumulates the LiDAR sweeps of all the scene's samples whose sensor lies over the grid (|x|, |y| < 40 m in the
    current ego frame), as Occ3D accumulates a scene's sweeps; mask_camera is the part of it the cameras see."""
    ego = world.ego2global[k]
    sem = occupancy.semantics(world, ego)
    origins, points = [], []
    for pose in world.ego2global:
        o = (np.linalg.inv(ego) @ pose @ rig.lidar2ego())[:3, 3]
        if (np.abs(o[:2]) < visibility.GMAX[:2]).all():
            o, p = lidar_in_ego(world, pose, ego)
            origins.append(o)
            points.append(p)
    mask_lidar = visibility.lidar_mask(origins, points)
    cams = [(rig.intrinsics(*MASK_HW, cam), c2e, *MASK_HW) for cam, c2e in zip(CAMS, rig.cam2ego())]
    mask_camera = visibility.camera_mask(sem != FREE_ID, cams) & mask_lidar
    return dict(semantics=sem, mask_lidar=mask_lidar.astype(np.uint8), mask_camera=mask_camera.astype(np.uint8))


def render_frame(world, ego2global, h, w, keyframe):
    """Sensor data of one frame at image size h x w: ``imgs``, and for a keyframe also ``sems``, LiDAR
    ``points`` and the per-instance pixel / point counts the annotations need."""
    imgs, sems, visible, crossed = render_cameras(world, ego2global, h, w)
    if not keyframe:
        return dict(imgs=imgs)
    points, point_inst = render_lidar(world, ego2global)
    return dict(imgs=imgs, sems=sems, points=points, visible=visible, crossed=crossed,
                lidar_pts=dict(zip(*[a.tolist() for a in np.unique(point_inst[point_inst >= 0],
                                                                   return_counts=True)])))
