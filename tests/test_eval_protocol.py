"""The authors' evaluation protocol: mask_camera AND mask_lidar, SparseOcc's RayIoU origins and ray traversal,
the 13-class mIoU, and eval.evaluate wiring them together."""
import math

import numpy as np
import pytest
import torch

from eval import evaluate
from options import parse_args
from utils.constants import FREE_ID
from utils.occ_metrics import NUSC_LIDAR_ORIGIN, OccEvaluator, RayIoU, first_hits, occ_eval_mask, sparseocc_origins


def test_default_protocol_is_the_authors():
    opt = parse_args([])
    assert opt.occ_eval_mask == "camera_lidar" and opt.rayiou_origins == "scene"


def test_eval_masks():
    cam = np.array([1, 1, 0, 0, 1])
    lidar = np.array([1, 0, 1, 0, 1])
    assert occ_eval_mask(cam, lidar).tolist() == [True, False, False, False, True]
    assert occ_eval_mask(cam, lidar, "camera").tolist() == [True, True, False, False, True]
    assert occ_eval_mask(cam, None, "none").all()
    with pytest.raises(ValueError, match="occ_eval_mask"):
        occ_eval_mask(cam, lidar, "lidar")


def test_miou_13_leaves_out_others_bicycle_motorcycle_other_flat():
    gt = np.array([4, 4, 4, 17, 1, 1, 0, 12, 17, 17, 17, 2, 6])
    pred = np.array([4, 4, 17, 4, 1, 17, 1, 17, 17, 12, 2, 17, 6])
    ev = OccEvaluator(use_mask=False)
    ev.update(pred, gt)
    s = ev.summary()
    # car 2/4, barrier 1/3, bicycle 0, motorcycle 100, others 0, other_flat 0; the 13-class mean keeps car, barrier
    assert s["IoU"]["motorcycle"] == 100 and s["IoU"]["bicycle"] == 0
    assert s["mIoU_13"] == pytest.approx((50 + 100 / 3) / 2)
    assert s["mIoU_star"] == pytest.approx((50 + 100 / 3 + 0 + 100) / 4)
    assert "| **mIoU (13 classes)** | 41.67 |" in ev.table()


def test_first_hits_follow_sparseoccs_order_on_exact_ties():
    """A ray through a voxel corner: SparseOcc's traversal steps one axis at a time, y before x, z before both."""
    grid = (0, 0, 0, 3, 3, 3)
    diag = np.array([[1.0, 1.0, 0.0]]) / math.sqrt(2)
    vol = np.full((2, 3, 3, 3), FREE_ID)
    vol[0, 0, 1, 1] = 4  # the y-neighbour of the start voxel: visited at the corner
    vol[1, 1, 0, 1] = 4  # the x-neighbour: stepped over
    dist, cls = first_hits(vol, (0.5, 0.5, 1.5), diag, grid)
    assert cls[:, 0].tolist() == [4, FREE_ID]
    assert dist[0, 0] == pytest.approx(math.sqrt(0.5))  # it leaves that voxel at the same corner
    assert dist[1, 0] == pytest.approx(2.5 * math.sqrt(2))  # through (0,0), (0,1), (1,1), (1,2), (2,2)
    vol = np.full((1, 3, 3, 3), FREE_ID)
    vol[0, 1, 1, 2] = 11  # x-z corner: z steps first
    _, cls = first_hits(vol, (0.5, 1.5, 1.5), np.array([[1.0, 0.0, 1.0]]) / math.sqrt(2), grid)
    assert cls[0, 0] == 11


def _yaw_pose(x, y, yaw):
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:2, 3] = x, y
    return T


def test_sparseocc_origins_hand_computed():
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = 1.0, 0.0, 2.0
    # driving along world y with the ego x axis pointing that way: 10 m apart
    poses = np.stack([_yaw_pose(0, y, math.pi / 2) @ lidar2ego for y in (-10, 0, 10, 38.5, 40)])
    o = sparseocc_origins(poses, 1, lidar2ego)
    # seen from y = 0 the LiDAR at world y lies at ego x = y + 1: y = 38.5 and 40 give 39.5 and 41 >= 39, dropped
    assert o == pytest.approx(np.array([[-9, 0, 2], [1, 0, 2], [11, 0, 2]]))
    # seen from y = 38.5: x = y - 37.5, so y = -10 (x = -47.5) is dropped
    assert sparseocc_origins(poses, 3, lidar2ego)[:, 0] == pytest.approx([-37.5, -27.5, 1.0, 2.5])
    # 20 keyframes 2 m apart, all within 39 m: the ones at round(linspace(0, 19, 8))
    poses = np.stack([_yaw_pose(2.0 * i, 0, 0) @ lidar2ego for i in range(20)])
    o = sparseocc_origins(poses, 10, lidar2ego)
    assert o[:, 0] == pytest.approx(2.0 * np.array([0, 3, 5, 8, 11, 14, 16, 19]) - 20 + 1)


def test_ray_origins_of_the_real_scene_match_sparseoccs_recipe(nusc_root, tmp_path):
    """The dataset's ray_origins on scene-0916, against SparseOcc's recipe written with nuscenes-devkit."""
    from nuscenes.nuscenes import NuScenes
    from pyquaternion import Quaternion

    from tests.test_nuscenes_dataset import make_opt
    from datasets.nuscenes_dataset import NuScenesDataset

    ds = NuScenesDataset(make_opt(nusc_root, occ_root=str(tmp_path)), "val")
    nusc = NuScenes("v1.0-mini", str(nusc_root), verbose=False)

    def mat(rec):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = Quaternion(rec["rotation"]).rotation_matrix, rec["translation"]
        return T

    infos = []
    for s in nusc.sample:  # one scene, in time order
        sd = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        l2e = mat(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
        infos.append((s["token"], s["timestamp"], mat(nusc.get("ego_pose", sd["ego_pose_token"])) @ l2e, l2e))
    infos.sort(key=lambda i: i[1])
    counts = set()
    for ref, (token, _, ref_pose, ref_l2e) in enumerate(infos):
        kept = []
        for k, (_, _, pose, _) in enumerate(infos):
            o = np.zeros(3) if k == ref else (np.linalg.inv(ref_pose) @ pose)[:3, 3]
            o = ref_l2e[:3, :3] @ o + ref_l2e[:3, 3]
            if abs(o[0]) < 39 and abs(o[1]) < 39:
                kept.append(o)
        if len(kept) > 8:
            kept = [kept[i] for i in np.round(np.linspace(0, len(kept) - 1, 8)).astype(int)]
        np.testing.assert_allclose(ds.ray_origins[token], np.array(kept), atol=1e-3)
        counts.add(len(kept))
    assert max(counts) == 8 and min(counts) >= 2  # a moving car: several origins everywhere
    assert ds.ray_origins[infos[0][0]][0] == pytest.approx(NUSC_LIDAR_ORIGIN, abs=1e-5)  # its own LiDAR first


def _street():
    """(200, 200, 16) GT: road layer, a building wall ahead and left, a car; plus masks."""
    gt = np.full((200, 200, 16), FREE_ID, np.uint8)
    gt[:, :, 2] = 11
    gt[150:152, :, 3:10] = 15
    gt[:, 160:162, 3:12] = 15
    gt[110:120, 95:100, 3:5] = 4
    cam = np.zeros_like(gt)
    cam[60:160, 40:160] = 1
    lidar = cam.copy()
    lidar[110:120, 95:100] = 0  # the car is outside mask_lidar
    return gt, cam, lidar


class _Predictor(torch.nn.Module):
    """Stand-in for GSVModel.predict: the GT with the car replaced by a truck and the wall 1 voxel up."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def predict(self, batch, depth=True, occupancy=True, calibrate=False):
        self.calls += 1
        pred = batch["occ_semantics"].clone()
        pred[pred == 4] = 10
        wall = pred == 15
        pred[wall] = FREE_ID
        pred[:, :, :, 1:][wall[:, :, :, :-1]] = 15
        return {"occupancy": pred}


def test_evaluate_uses_the_authors_mask_and_scene_origins():
    gt, cam, lidar = _street()
    origins = torch.full((8, 3), float("nan"))
    origins[:3] = torch.tensor([[0.94, 0.0, 1.84], [-8.0, 0.5, 1.84], [9.0, -0.5, 1.84]])
    item = {"occ_semantics": torch.from_numpy(gt), "occ_mask_camera": torch.from_numpy(cam),
            "occ_mask_lidar": torch.from_numpy(lidar), "ray_origins": origins, "token": "t0", "scene": "s",
            "imgs": torch.zeros(1)}
    model = _Predictor()
    base = ["--stage", "gsv", "--num_workers", "0", "--device", "cpu"]
    res = {m: evaluate(model, [item], parse_args(base + ["--occ_eval_mask", m, "--rayiou_origins", o]), "cpu")
           for m, o in (("camera_lidar", "scene"), ("camera", "fixed"))}
    a, b = res["camera_lidar"], res["camera"]
    assert model.calls == 2  # one predict per sample and run
    assert math.isnan(a["occupancy"]["IoU"]["car"]) and b["occupancy"]["IoU"]["car"] == 0  # car only in the 2nd
    assert math.isnan(a["occupancy"]["IoU"]["truck"]) and b["occupancy"]["IoU"]["truck"] == 0
    assert a["scalars"]["occ/mIoU"] > b["scalars"]["occ/mIoU"] and "occ/mIoU_13" in a["scalars"]
    assert "mask_camera AND mask_lidar" in a["text"] and "--occ_eval_mask camera;" in b["text"]
    assert "--rayiou_origins scene" in a["text"] and a["occ_eval_mask"] == "camera_lidar"
    pred = model.predict({"occ_semantics": torch.from_numpy(gt)[None]})["occupancy"][0].numpy()
    for r, o in ((a, origins[:3]), (b, [NUSC_LIDAR_ORIGIN])):
        direct = RayIoU()
        direct.update(pred, gt, origins=o)
        assert r["rayiou"]["RayIoU"] == pytest.approx(direct.summary()["RayIoU"])
    assert a["rayiou"]["RayIoU"] != pytest.approx(b["rayiou"]["RayIoU"])
    del item["ray_origins"]
    with pytest.raises(ValueError, match="--rayiou_origins fixed"):
        evaluate(model, [item], parse_args(base), "cpu")


def test_real_occ3d_sample_masks(occ3d_label):
    """On the real Occ3D-nuScenes sample every mask_camera voxel is also in mask_lidar (13,246 more are LiDAR-only),
    so there camera_lidar scores the same voxels as camera; on the synthetic set the two differ."""
    label = np.load(occ3d_label)
    cam, lidar = label["mask_camera"], label["mask_lidar"]
    assert cam.dtype == lidar.dtype == np.uint8 and cam.shape == lidar.shape == (200, 200, 16)
    both = occ_eval_mask(cam, lidar)
    assert (both == (cam > 0)).all() and both.sum() == 43355 and (lidar > 0).sum() == 56601
