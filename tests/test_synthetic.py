"""The synthetic nuScenes-format set: devkit loading, determinism, Occ3D labels, masks, 2D semantics, LiDAR, rig."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.constants import CAMS, FREE_ID, OCC3D_RANGE, OCC3D_VOXEL
from datasets.synthetic import occupancy, rig, writer
from datasets.synthetic.frame import MASK_HW
from datasets.synthetic.generate import generate, render_job
from datasets.synthetic.scene import make_scene

SEED, FRAMES, HW = 3, 3, (90, 160)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """1 training scene + 1 validation scene of 3 frames at 90 x 160."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, num_scenes=2, frames_per_scene=FRAMES, img_hw=HW, seed=SEED, val_scenes=1, progress=False)
    return out


@pytest.fixture(scope="module")
def nusc(root):
    from nuscenes.nuscenes import NuScenes
    return NuScenes(writer.VERSION, str(root), verbose=False)


def _labels(root, scene, k):
    return np.load(Path(root) / "gts" / writer.scene_name(scene) / writer.sample_token(SEED, scene, k) / "labels.npz")


def _voxel(p):
    """Occ3D index of ego-frame points (N, 3)."""
    return np.floor((p - np.array(OCC3D_RANGE[:3])) / OCC3D_VOXEL).astype(int)


def test_devkit_loads_all_tables(root, nusc):
    assert len(nusc.table_names) == 13 and len(nusc.scene) == 2 and len(nusc.sample) == 2 * FRAMES
    assert len(nusc.sample_data) == len(nusc.ego_pose) == 2 * FRAMES * 7
    assert len(nusc.sample_annotation) > 0 and len(nusc.instance) > 0
    scene = nusc.scene[0]
    sample = nusc.get("sample", scene["first_sample_token"])
    assert set(sample["data"]) == set(CAMS + ["LIDAR_TOP"])
    sd = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
    chain = [sd]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    assert len(chain) == FRAMES and all(r["is_key_frame"] for r in chain) and chain[1]["prev"] == sd["token"]
    assert Image.open(Path(root) / sd["filename"]).size == (HW[1], HW[0])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    np.testing.assert_allclose(cs["camera_intrinsic"], rig.intrinsics(*HW, "CAM_FRONT"))
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    assert pose["translation"][2] == 0.0 and pose["timestamp"] == sd["timestamp"]
    train = (Path(root) / "splits" / "train.txt").read_text().split()
    val = (Path(root) / "splits" / "val.txt").read_text().split()
    assert len(train) == len(val) == FRAMES and val[0] == nusc.scene[1]["first_sample_token"]
    boxes = nusc.get_boxes(sample["data"]["LIDAR_TOP"])
    assert all(b.name in {"vehicle.car", "vehicle.truck", "vehicle.bus.rigid", "human.pedestrian.adult",
                          "movable_object.barrier", "movable_object.trafficcone", "vehicle.bicycle",
                          "vehicle.motorcycle"} for b in boxes)


def test_deterministic(root, tmp_path):
    """Same seed: identical bytes (rendering a frame again, alone, reproduces its files exactly)."""
    for c in writer.CHANNELS:
        (tmp_path / "samples" / c).mkdir(parents=True)
    render_job((str(tmp_path), SEED, 0, 1, FRAMES, HW))
    tok = writer.sample_token(SEED, 0, 1)
    files = [writer.data_filename(SEED, 0, 1, c) for c in writer.CHANNELS] + [f"sem/{tok}/{c}.png" for c in CAMS]
    files.append(f"gts/{writer.scene_name(0)}/{tok}/labels.npz")
    for f in files:
        assert (Path(root) / f).read_bytes() == (tmp_path / f).read_bytes(), f
    other = np.array(Image.open(Path(root) / writer.data_filename(SEED, 1, 0, "CAM_FRONT")))
    assert not np.array_equal(other, np.array(Image.open(tmp_path / files[0])))


def test_occ3d_labels(root):
    lab = _labels(root, 0, 1)
    sem = lab["semantics"]
    assert sem.shape == (200, 200, 16) and sem.dtype == np.uint8 and set(lab) >= {"mask_camera", "mask_lidar"}
    present = set(np.unique(sem).tolist())
    assert {4, 11, 15, FREE_ID} <= present
    # under the ego: road fills layers 0-2 (up to the surface layer [-0.2, 0.2]), free above
    assert (sem[98:108, 99:101, :3] == 11).all() and (sem[98:108, 99:101, 3:] == FREE_ID).all()
    world = make_scene(SEED, 0, FRAMES)
    g2e = np.linalg.inv(world.ego2global[1])
    checked = 0
    for obj in world.instances:
        c = g2e[:3, :3] @ obj["center"] + g2e[:3, 3]
        if obj["cls"] in (3, 4, 10, 15) and (np.abs(c[:2]) < 38).all():
            c[2] = min(c[2], 4.0)  # tall buildings: a point inside, within the grid
            assert sem[tuple(_voxel(c[None])[0])] == obj["cls"], obj
            checked += 1
    assert checked >= 3


def test_masks(root):
    lab = _labels(root, 0, 1)
    cam, lidar, sem = lab["mask_camera"].astype(bool), lab["mask_lidar"].astype(bool), lab["semantics"]
    assert 0.02 < cam.mean() < 0.6 and 0.02 < lidar.mean() < 0.6
    ahead = _voxel(np.array([[6.0, 0.2, 1.0]]))[0]  # free air in front of the ego, seen by both sensors
    assert sem[tuple(ahead)] == FREE_ID and cam[tuple(ahead)] and lidar[tuple(ahead)]
    road = sem[:, :, 2] == 11
    assert cam[:, :, 2][road].mean() > 0.2 and not cam[:, :, 0][road].any()  # the buried layer is never seen
    assert not cam[:, :, :2].any()  # the ground fills layers 0-2 everywhere: layers 0 and 1 are buried


def _occluded(sem, a, b):
    """Whether the segment from a to b (ego frame) crosses an occupied voxel before its last 2 cm."""
    n = int(np.linalg.norm(b - a) / 0.01) + 2
    t = np.linspace(0.0, 1.0 - 0.02 / np.linalg.norm(b - a), n)
    idx = _voxel(a + t[:, None] * (b - a))
    inside = ((idx >= 0) & (idx < np.array(sem.shape))).all(1)
    return bool((sem[tuple(idx[inside].T)] != FREE_ID).any())


def test_camera_mask_dense(root):
    """Road voxels 8-40 m ahead of CAM_FRONT whose top face the camera sees are all in mask_camera:
    no gaps between the rows of a finite image (the old ray-marched mask had stripes beyond ~20 m)."""
    lab = _labels(root, 0, 1)
    cam, sem = lab["mask_camera"].astype(bool), lab["semantics"]
    origin = rig.cam2ego()[0][:3, 3]
    checked = far = 0
    for y in (-1.0, 0.2, 1.4):
        j = _voxel(np.array([[0.0, y, 0.0]]))[0, 1]
        for i in range(_voxel(np.array([[8.0, 0.0, 0.0]]))[0, 0], 200):  # CAM_FRONT sees the road from 6 m
            if sem[i, j, 2] != 11 or sem[i, j, 3] != FREE_ID:
                continue
            top = np.array([OCC3D_RANGE[0] + (i + 0.5) * OCC3D_VOXEL,
                            OCC3D_RANGE[1] + (j + 0.5) * OCC3D_VOXEL, 0.2])
            if not _occluded(sem, origin, top):
                assert cam[i, j, 2] and cam[i, j, 3], (i, j, top)
                checked += 1
                far += top[0] > 30
    assert checked > 150 and far > 30, (checked, far)


def test_camera_mask_buildings(root):
    """Voxels inside a building, or on its face turned away from the street, are not camera-visible; its street
    face is."""
    lab = _labels(root, 0, 1)
    cam, sem = lab["mask_camera"].astype(bool), lab["semantics"]
    occ = np.pad(sem != FREE_ID, 1, constant_values=True)
    inner = np.ones(sem.shape, bool)
    for a in range(3):
        for s in (-1, 1):
            inner &= np.roll(occ, s, axis=a)[1:-1, 1:-1, 1:-1]
    assert inner[sem == 15].sum() > 100 and not cam[inner].any()
    # building voxels whose only free neighbour is the one away from the street (|y| larger): the back faces
    free = ~occ
    ys = (np.arange(200) + 0.5) * OCC3D_VOXEL + OCC3D_RANGE[1]
    nb = {(a, s): np.roll(free, -s, axis=a)[1:-1, 1:-1, 1:-1] for a in range(3) for s in (-1, 1)}
    away = np.where(ys[None, :, None] > 0, nb[1, 1], nb[1, -1])
    others = sum(nb[k].astype(int) for k in nb) - away
    back = (sem == 15) & away & (others == 0) & (np.abs(ys)[None, :, None] > 6)
    assert back.sum() > 20 and not cam[back].any()
    toward = np.where(ys[None, :, None] > 0, nb[1, -1], nb[1, 1])
    front = (sem == 15) & toward & (np.arange(16) >= 3)
    assert cam[front].mean() > 0.3


def test_camera_mask_box_on_ground():
    """camera_mask on a hand-made grid: flat ground (layers 0-2) and a solid box ahead of CAM_FRONT."""
    occ = np.zeros((200, 200, 16), bool)
    occ[:, :, :3] = True
    occ[150:160, 95:105, 3:10] = True  # x 20-24 m, y -2..2 m, z 0.2-3 m
    cams = [(rig.intrinsics(*MASK_HW, c), c2e, *MASK_HW) for c, c2e in zip(CAMS, rig.cam2ego())]
    vis = occupancy.camera_mask(occ, cams)
    assert vis[vis].size and not vis[:, :, :2].any()
    assert vis[116:150, 97:103, 2:6].all()  # road and air from 6.4 m (CAM_FRONT's lowest ray) up to the box
    assert vis[160:200, 80:120, 2].any() and not vis[162:200, 98:102, 2].any()  # its ground shadow is hidden
    assert vis[150, 96:104, 3:9].all() and not vis[151:160, 96:104, 3:9].any()  # front face seen, inside not
    assert vis[175:200, 70:80, 2].all()  # far road beside the shadow: dense out to the grid edge
    # the voxels the buffer's rays cross are a subset (the old, ray-marched mask)
    d = np.concatenate([_rays(rig.intrinsics(*MASK_HW, c), c2e) for c, c2e in zip(CAMS, rig.cam2ego())])
    o = np.concatenate([np.broadcast_to(c2e[:3, 3], (MASK_HW[0] * MASK_HW[1], 3)) for c2e in rig.cam2ego()])
    crossed = occupancy.observed(occ, o, d)
    assert (vis | ~crossed).all() and vis.sum() > crossed.sum()


def _rays(K, c2e):
    v, u = np.mgrid[0:MASK_HW[0], 0:MASK_HW[1]]
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
    return d / np.linalg.norm(d, axis=1, keepdims=True) @ c2e[:3, :3].T


def test_semantic_maps_match_labels(root, nusc):
    """The first occupied voxel along a pixel's ray carries the pixel's 2D class in a large majority."""
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    lab = _labels(root, 0, 0)["semantics"]
    agree = total = 0
    for c, c2e in zip(CAMS, rig.cam2ego()):
        sem2d = np.array(Image.open(Path(root) / "sem" / sample["token"] / f"{c}.png"))
        K = rig.intrinsics(*HW, c)
        v, u = np.mgrid[1:HW[0]:3, 1:HW[1]:3]
        d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], -1).reshape(-1, 3)
        d = d / np.linalg.norm(d, axis=1, keepdims=True) @ c2e[:3, :3].T
        t = np.arange(0.3, 45.0, 0.04)
        idx = _voxel(c2e[:3, 3] + d[:, None] * t[:, None])
        inside = ((idx >= 0) & (idx < np.array([200, 200, 16]))).all(-1)
        cls = np.where(inside, lab[tuple(np.clip(idx, 0, [199, 199, 15]).transpose(2, 0, 1))], FREE_ID)
        occ = cls != FREE_ID
        hit = occ.any(1)
        first = cls[np.arange(len(d)), occ.argmax(1)]
        pix = sem2d[v.ravel(), u.ravel()]
        ok = hit & (pix != 255)
        agree += (first[ok] == pix[ok]).sum()
        total += ok.sum()
    assert total > 1000 and agree / total > 0.85, agree / total


def test_lidar_on_surfaces(root, nusc):
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pts = np.fromfile(Path(root) / sd["filename"], dtype=np.float32).reshape(-1, 5)
    assert len(pts) > 5000 and set(np.unique(pts[:, 4])) <= set(range(32)) and pts[:, 3].max() <= 255
    assert np.linalg.norm(pts[:, :3], axis=1).max() <= 70.0 + 1e-3
    l2e = rig.lidar2ego()
    ego = pts[:, :3] @ l2e[:3, :3].T + l2e[:3, 3]
    world = make_scene(SEED, 0, FRAMES)
    E = world.ego2global[0]
    g = ego @ E[:3, :3].T + E[:3, 3]
    cls, h = world.road.ground(g[:, 0], g[:, 1])
    low = ego[:, 2] < 0.5
    road = low & (cls == 11)
    assert road.sum() > 1000 and np.mean(np.abs(ego[road, 2]) < 1e-3) > 0.9  # the rest: kerb faces, objects
    raised = low & (cls == 13)
    assert np.median(ego[raised, 2]) == pytest.approx(0.15, abs=1e-3)  # sidewalk top
    assert (ego[:, 2] > -1e-3).all()


def test_rig_matches_fixture(nusc_root):
    d = nusc_root / "v1.0-mini"
    sensors = {s["token"]: s["channel"] for s in json.loads((d / "sensor.json").read_text())}
    for rec in json.loads((d / "calibrated_sensor.json").read_text()):
        ch = sensors[rec["sensor_token"]]
        t, q = rig.LIDAR_RIG if ch == "LIDAR_TOP" else rig.CAMERA_RIG[ch][:2]
        np.testing.assert_allclose(t, rec["translation"], atol=1e-9)
        np.testing.assert_allclose(q, rec["rotation"], atol=1e-12)
        if ch != "LIDAR_TOP":
            np.testing.assert_allclose(rig.intrinsics(900, 1600, ch), rec["camera_intrinsic"], atol=1e-9)


def test_images_textured_and_moving(root):
    a = [np.asarray(Image.open(Path(root) / writer.data_filename(SEED, 0, k, "CAM_FRONT")).convert("L"), float)
         for k in range(2)]
    grad = np.abs(np.diff(a[0], axis=1)).mean() + np.abs(np.diff(a[0], axis=0)).mean()
    assert grad > 3.0, grad
    ground = a[0][HW[0] * 2 // 3:]  # the road ahead carries texture, not a flat colour
    assert np.abs(np.diff(ground, axis=1)).mean() > 0.5
    assert np.abs(a[0] - a[1]).mean() > 2.0
