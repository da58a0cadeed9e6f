"""The synthetic Occ3D labels follow Occ3D's rules and its vertical convention: the road in layer 0 as in the real
sample, occupied where sensors hit a surface, mask_lidar from the rays to the returned points of the scene's
accumulated sweeps, mask_camera inside mask_lidar and without sky (docs/occ3d_convention.md)."""
from pathlib import Path

import numpy as np

from conftest import SYNTH_FRAMES as FRAMES, SYNTH_SEED as SEED
from datasets.synthetic import frame, occupancy, rig, visibility, writer
from datasets.synthetic.frame import MASK_HW
from datasets.synthetic.raycast import cast, cull
from datasets.synthetic.scene import BOX, ELLIPSOID, make_scene
from utils.constants import CAMS, FREE_ID, OCC3D_LABEL_RANGE, OCC3D_SHAPE, OCC3D_VOXEL

K_TEST = 1  # the middle sample of scene 0


def _labels(root, scene, k):
    lab = np.load(Path(root) / "gts" / writer.scene_name(scene) / writer.sample_token(SEED, scene, k) / "labels.npz")
    return lab["semantics"], lab["mask_lidar"].astype(bool), lab["mask_camera"].astype(bool)


def _voxel(p):
    """Occ3D label index of ego-frame points (N, 3)."""
    return np.floor((p - np.array(OCC3D_LABEL_RANGE[:3])) / OCC3D_VOXEL).astype(int)


def _inside(idx):
    return ((idx >= 0) & (idx < np.array(OCC3D_SHAPE))).all(-1)


def _centres(idx):
    return np.array(OCC3D_LABEL_RANGE[:3]) + (idx + 0.5) * OCC3D_VOXEL


def test_ground_in_layer_0_like_the_real_labels(synth_root):
    """Layer 0 holds the road surface (ego z = 0), as in the released Occ3D-nuScenes labels; cars start in it."""
    for k in range(FRAMES):
        sem = _labels(synth_root, 0, k)[0]
        for c in (11, 13, 14):  # driveable_surface, sidewalk, terrain
            z = np.nonzero(sem == c)[2]
            assert len(z) > 100 and (z == 0).all(), (c, np.bincount(z))
        assert (sem[98:108, 99:101, 0] == 11).all() and (sem[98:108, 99:101, 1:] == FREE_ID).all()  # under the ego
        assert np.bincount(np.nonzero(sem == 4)[2], minlength=16)[[0, 4]].min() > 0  # cars: layers 0 (wheels) - 4
    assert _voxel(np.zeros((1, 3)))[0, 2] == 0


def test_real_sample_convention(occ3d_label):
    """The evidence in the real sample: road in layer 0 only, sidewalk in 0-1, cars from layer 0, and
    mask_camera inside mask_lidar."""
    lab = np.load(occ3d_label)
    sem, cam, lidar = lab["semantics"], lab["mask_camera"].astype(bool), lab["mask_lidar"].astype(bool)
    assert (np.nonzero(sem == 11)[2] == 0).all() and set(np.nonzero(sem == 13)[2]) == {0, 1}
    assert np.nonzero(sem == 4)[2].min() == 0 and not (cam & ~lidar).any()
    assert abs((sem[cam] == FREE_ID).mean() - 0.473) < 1e-3


def _lidar_returns(world, k):
    """Origins and returned points (current ego frame) of the LiDAR sweeps of all samples of the scene."""
    return zip(*[frame.lidar_in_ego(world, pose, world.ego2global[k]) for pose in world.ego2global])


def test_occupied_where_sensors_hit(synth_root):
    """Every LiDAR return and camera hit lands in an occupied voxel (thin slivers of surfaces included)."""
    world = make_scene(SEED, 0, FRAMES)
    sem = _labels(synth_root, 0, K_TEST)[0]
    E = world.ego2global[K_TEST]
    _, pts = frame.lidar_in_ego(world, E, E)
    hits = [pts]
    g2e = np.linalg.inv(E)
    for _, _, _, hit in frame.cast_cameras(world, E, 45, 80):
        p = hit["point"][np.isfinite(hit["t"])]
        hits.append(p @ g2e[:3, :3].T + g2e[:3, 3])
    for p in hits:
        idx = _voxel(p)
        idx = idx[_inside(idx)]
        assert len(idx) > 1000 and (sem[tuple(idx.T)] != FREE_ID).mean() > 0.9995


def test_overlap_is_exact():
    """The box / ellipsoid vs voxel test against dense sampling of random voxels: no overlap is missed, and the
    extra ones are slivers thinner than the sampling."""
    rng = np.random.default_rng(0)
    g = (np.arange(24) + 0.5) / 24 * OCC3D_VOXEL - OCC3D_VOXEL / 2
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    for kind in (BOX, ELLIPSOID):
        missed = extra = 0
        for _ in range(20):
            yaw, half = rng.uniform(-np.pi, np.pi), rng.uniform(0.05, 1.0, 3)
            c, s = np.cos(yaw), np.sin(yaw)
            R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            centres = rng.uniform(-1.5, 1.5, (50, 3))  # voxel centres relative to the primitive, ego axes
            exact = occupancy._overlap(kind, centres @ R.T, half, c, s)
            local = (centres[:, None] + grid) @ R.T
            inside = (np.abs(local) <= half).all(-1) if kind == BOX else ((local / half) ** 2).sum(-1) <= 1
            missed += (inside.any(1) & ~exact).sum()
            extra += (exact & ~inside.any(1)).sum()
        assert missed == 0 and extra < 20, (kind, extra)


def test_ray_walk_to_points():
    """observed(None, ..., t_max): every voxel a segment passes (checked by 2 mm steps) and none beyond its end."""
    rng = np.random.default_rng(1)
    o = np.array([0.94, 0.0, 1.84])
    p = o + rng.normal(size=(100, 3)) * [15.0, 15.0, 1.5]
    v = p - o
    dist = np.linalg.norm(v, axis=1)
    walked = visibility.observed(None, o, v / dist[:, None], t_max=dist)
    t = np.arange(0.0, 1.0 + 1e-9, 0.002 / dist.max())
    idx = _voxel((o + t[:, None, None] * v[None]).reshape(-1, 3))
    ref = np.zeros(OCC3D_SHAPE, bool)
    ref[tuple(idx[_inside(idx)].T)] = True
    assert (walked >= ref).all() and (walked & ~ref).sum() < 0.01 * ref.sum()
    end = visibility.observed(None, o, np.array([[1.0, 0.0, 0.0]]), t_max=np.array([2.0]))  # x 0.94 -> 2.94 m
    assert end[102:108, 100, 5].all() and end.sum() == 6


def test_mask_lidar_from_returns_over_the_scene(synth_root):
    """mask_lidar = the voxels that rays to the RETURNED points of all the scene's sweeps pass or end in (walked
    through occupied voxels too); beams without a return observe nothing; other sweeps add to the current one."""
    world = make_scene(SEED, 0, FRAMES)
    sem, lidar, _ = _labels(synth_root, 0, K_TEST)
    origins, points = _lidar_returns(world, K_TEST)
    assert np.array_equal(lidar, visibility.lidar_mask(origins, points))
    for p in points:  # every voxel holding a return of any sweep
        idx = _voxel(p)
        assert lidar[tuple(idx[_inside(idx)].T)].all()
    current = visibility.lidar_mask(origins[K_TEST:K_TEST + 1], points[K_TEST:K_TEST + 1])
    assert (lidar & ~current).sum() > 1000 and not (current & ~lidar).any()
    # the beams of the current sweep that return nothing (sky): what they alone cross is not observed
    l2e, E = rig.lidar2ego(), world.ego2global[K_TEST]
    beams = frame.lidar_rays()[0]
    l2g = E @ l2e
    prims = cull(world, l2g[:3, 3], frame.LIDAR_RANGE)
    sky = ~np.isfinite(cast(world, l2g[:3, 3], beams @ l2g[:3, :3].T, frame.LIDAR_RANGE, prims)["t"])
    through_sky = visibility.observed(None, l2e[:3, 3], beams[sky] @ l2e[:3, :3].T)
    assert sky.sum() > 1000 and (through_sky & ~lidar).sum() > 1000
    assert (sem[lidar] == FREE_ID).any() and (sem[lidar] != FREE_ID).any()


def _free_line_of_sight(sem, origin, target, step=0.05):
    """Whether the ray from origin through target, on to the grid edge, crosses no occupied voxel."""
    d = (target - origin) / np.linalg.norm(target - origin)
    idx = _voxel(origin + np.arange(0.0, 120.0, step)[:, None] * d)
    idx = idx[_inside(idx)]
    return not (sem[tuple(idx.T)] != FREE_ID).any()


def _blocked(occ, origin, targets, step=0.01):
    """(N,) whether the segments from origin to targets (N, 3) cross an occupied voxel before their last 2 cm."""
    v = targets - origin
    n = np.linalg.norm(v, axis=1)
    t = np.arange(0.0, n.max(), step)
    idx = _voxel(origin + (t[None, :, None] / n[:, None, None]) * v[:, None])
    ok = _inside(idx) & (t[None] < n[:, None] - 0.02)
    return (ok & occ[tuple(np.where(ok[..., None], idx, 0).transpose(2, 0, 1))]).any(1)


def test_mask_camera_inside_lidar_and_no_sky(synth_root):
    """mask_camera lies inside mask_lidar (as in the real labels) and holds no free voxel whose every line of sight
    (from each camera through its centre and corners) runs into the sky; free air in front of surfaces is in it."""
    sem, lidar, cam = _labels(synth_root, 0, K_TEST)
    assert not (cam & ~lidar).any() and cam.sum() > 5000
    ahead = _voxel(np.array([[6.0, 0.2, 1.0]]))[0]  # free air in front of the ego: road behind it
    assert sem[tuple(ahead)] == FREE_ID and cam[tuple(ahead)]
    # sky: free voxels whose lines of sight (through centre and corners) pass even the occupied voxels grown by one
    # voxel (the mask decides a point by the nearest of 180 x 320 pixels, up to half a pixel off the exact line)
    occ = np.pad(sem != FREE_ID, 1)
    grown = np.zeros(sem.shape, bool)
    for shift in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T:
        grown |= np.roll(occ, tuple(shift), axis=(0, 1, 2))[1:-1, 1:-1, 1:-1]
    grown = np.where(grown, 0, FREE_ID)
    rng = np.random.default_rng(2)
    high = np.argwhere((sem == FREE_ID) & (np.arange(16) >= 12))
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T * 0.5 * OCC3D_VOXEL
    sky = []
    for v in high[rng.choice(len(high), 400, replace=False)]:
        pts = _centres(v) + np.concatenate([np.zeros((1, 3)), corners])
        if all(_free_line_of_sight(grown, c2e[:3, 3], p) for c2e in rig.cam2ego() for p in pts):
            sky.append(v)
    assert len(sky) > 20 and not cam[tuple(np.array(sky).T)].any()


def test_camera_mask_box_on_ground():
    """camera_mask on a hand-made grid: the ground layer 0 and a solid box ahead of CAM_FRONT."""
    occ = np.zeros(OCC3D_SHAPE, bool)
    occ[:, :, 0] = True
    occ[150:160, 95:105, 1:8] = True  # x 20-24 m, y -2..2 m, z 0.2-3 m
    cams = [(rig.intrinsics(*MASK_HW, c), c2e, *MASK_HW) for c, c2e in zip(CAMS, rig.cam2ego())]
    vis = visibility.camera_mask(occ, cams)
    assert vis[116:150, 97:103, 0:4].all()  # road and low air from 6.4 m (CAM_FRONT's lowest ray) up to the box
    assert vis[140:150, 97:103, 4:7].all() and not vis[116:120, 97:103, 8:].any()  # above the box: sky behind
    assert vis[160:200, 80:120, 0].any() and not vis[162:200, 98:102, 0].any()  # its ground shadow is hidden
    assert vis[150, 96:104, 1:7].all() and not vis[151:160, 96:104, 1:7].any()  # front face seen, inside not
    assert vis[175:200, 70:80, 0].all()  # far road beside the shadow: dense out to the grid edge
    assert not vis[150:160, 95:105, 10:].any()  # air above the box with only sky behind it
    # partly visible voxels at the shadow's outline: centre hidden behind the box, a corner seen on a line of sight
    # that goes on down to the road inside the grid
    o = cams[0][1][:3, 3]
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T * 0.49 * OCC3D_VOXEL
    near_edge = np.argwhere(~occ[160:185, 88:112, 1:4]) + [160, 88, 1]
    near_edge = near_edge[np.abs(near_edge[:, 1] - 99.5) > 4]
    hidden = near_edge[_blocked(occ, o, _centres(near_edge))]
    pts = (_centres(hidden)[:, None] + corners).reshape(-1, 3)
    road = o + (pts - o) * ((o[2] - 0.2) / (o[2] - pts[:, 2]))[:, None]  # where the line reaches the road top
    seen = (~_blocked(occ, o, pts) & (np.abs(road[:, :2]) < 39.8).all(1)).reshape(len(hidden), 8)
    outline = hidden[seen.any(1)]
    assert len(outline) > 5 and vis[tuple(outline.T)].mean() > 0.9, (len(outline), vis[tuple(outline.T)].mean())
    # the voxels the buffer's rays cross, where they end on something, are a subset
    d = np.concatenate([frame.pixel_rays(K, *MASK_HW) @ e[:3, :3].T for K, e, _, _ in cams])
    o = np.concatenate([np.broadcast_to(e[:3, 3], (MASK_HW[0] * MASK_HW[1], 3)) for _, e, _, _ in cams])
    _, hit, _ = visibility.observed(occ, o, d, first_hits=True)
    crossed = visibility.observed(occ, o[hit >= 0], d[hit >= 0])
    assert (vis | ~crossed).all() and vis.sum() > crossed.sum()
