"""Occupancy metrics (utils/occ_metrics.py): confusion matrix IoUs and RayIoU."""
import math

import numpy as np
import pytest
import torch

from utils.constants import FREE_ID
from utils.occ_metrics import OccEvaluator, RayIoU, first_hits, lidar_ray_directions, radial_shift

# Hand-made voxels:  car   car   car   free  barr. barr. others o_flat free  free   free
GT = np.array([4, 4, 4, 17, 1, 1, 0, 12, 17, 17, 17])
PRED = np.array([4, 4, 17, 4, 1, 17, 1, 17, 17, 12, 2])


def test_ious_hand_computed():
    ev = OccEvaluator(use_mask=False)
    ev.update(PRED, GT)
    s = ev.summary()
    iou = s["IoU"]
    assert iou["car"] == pytest.approx(100 * 2 / 4)  # TP 2, FN 1, FP 1
    assert iou["barrier"] == pytest.approx(100 * 1 / 3)  # TP 1, FN 1, FP 1 (the "others" voxel)
    assert iou["others"] == 0 and iou["other_flat"] == 0  # in GT, never right
    assert iou["bicycle"] == 0  # predicted, absent from GT: counts as 0
    assert math.isnan(iou["bus"])  # absent from both: left out of the means
    assert s["mIoU"] == pytest.approx((0 + 100 / 3 + 0 + 50 + 0) / 5)
    assert s["mIoU_star"] == pytest.approx((100 / 3 + 0 + 50) / 3)  # without others and other_flat
    # occupied in both: voxels 0, 1, 4, 6; occupied in either: 0-7, 9, 10
    assert s["geo_IoU"] == pytest.approx(100 * 4 / 10)
    assert s["num_voxels"] == 11 and ev.hist.dtype == torch.int64
    assert "| **mIoU*** | 27.78 |" in ev.table()


def test_mask_camera_and_ignore_label():
    mask = np.ones_like(GT)
    mask[2:4] = 0  # hide the car FN and the car FP
    ev = OccEvaluator()
    ev.update(PRED, GT, mask)
    assert ev.summary()["IoU"]["car"] == 100 and ev.summary()["num_voxels"] == 9
    with pytest.raises(ValueError, match="mask_camera"):
        ev.update(PRED, GT)
    ignored = OccEvaluator(use_mask=False)
    ignored.update(PRED, np.where(GT == 4, 255, GT))  # 255 voxels are not evaluated
    assert ignored.summary()["IoU"]["car"] == 0 and ignored.summary()["num_voxels"] == 8  # only the car FP left


def test_merge_equals_one_evaluator():
    rng = np.random.default_rng(0)
    preds, gts, masks = rng.integers(0, 18, (3, 2, 50)), rng.integers(0, 18, (3, 2, 50)), rng.integers(0, 2, (3, 2, 50))
    whole, a, b = OccEvaluator(), OccEvaluator(), OccEvaluator()
    whole.update(preds, gts, masks)
    a.update(preds[:1], gts[:1], masks[:1])
    for i in (1, 2):
        b.update(preds[i], gts[i], masks[i])
    a.merge(b)
    assert (a.hist == whole.hist).all() and a.summary()["mIoU"] == whole.summary()["mIoU"]


def test_real_sample_voxel_metrics(occ3d_label):
    label = np.load(occ3d_label)
    gt, mask = label["semantics"], label["mask_camera"]
    present = set(np.unique(gt[mask > 0]).tolist()) - {FREE_ID}
    same = OccEvaluator()
    same.update(gt, gt, mask)
    s = same.summary()
    for c, (name, v) in enumerate(s["IoU"].items()):
        assert v == 100 if c in present else math.isnan(v), name
    assert s["mIoU"] == 100 and s["geo_IoU"] == 100 and s["num_voxels"] == int((mask > 0).sum())
    empty = OccEvaluator()
    empty.update(np.full_like(gt, FREE_ID), gt, mask)
    s = empty.summary()
    assert all(s["IoU"][name] == 0 for c, name in enumerate(s["IoU"]) if c in present)
    assert s["mIoU"] == 0 and s["geo_IoU"] == 0


def test_ray_directions():
    d = lidar_ray_directions()
    assert d.shape == (39 * 360, 3)
    assert np.allclose(np.linalg.norm(d, axis=1), 1)
    pitch = np.arcsin(d[::360, 2])
    assert pitch[0] == pytest.approx(-math.pi / 4) and pitch[9] == pytest.approx(-(math.pi / 2 - math.atan(10)))
    assert 0.21 <= pitch[-1] < 0.21 + (pitch[9] - pitch[8])


def test_first_hits_hand_computed():
    vol = np.full((2, 5, 3, 3), FREE_ID)
    vol[0, 3, 1, 1] = 4  # volume 0: a car three voxels ahead
    vol[1, 1, 1, 1] = 11  # volume 1: road in the next voxel
    dirs = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0.6, 0.8, 0]])
    dist, cls = first_hits(vol, (0.5, 1.5, 1.5), dirs, grid_range=(0, 0, 0, 5, 3, 3))
    assert cls.tolist() == [[4, FREE_ID, FREE_ID, FREE_ID], [11, FREE_ID, FREE_ID, FREE_ID]]
    # distance to where the ray leaves the hit voxel, or the grid
    assert dist == pytest.approx(np.array([[3.5, 0.5, 1.5, 1.5 / 0.8], [1.5, 0.5, 1.5, 1.5 / 0.8]]))
    with pytest.raises(ValueError, match="outside"):
        first_hits(vol, (-1, 1, 1), dirs, grid_range=(0, 0, 0, 5, 3, 3))


def test_first_hits_match_dense_marching():
    rng = np.random.default_rng(1)
    vol = np.where(rng.random((1, 8, 7, 6)) < 0.08, rng.integers(0, 17, (1, 8, 7, 6)), FREE_ID)
    origin = np.array([3.3, 2.6, 2.1])
    dirs = rng.normal(size=(200, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dist, cls = first_hits(vol, origin, dirs, grid_range=(0, 0, 0, 8, 7, 6))
    t = np.arange(0, 15, 1e-3)
    for r in range(len(dirs)):
        vox = np.floor(origin + t[:, None] * dirs[r]).astype(int)
        inside = np.all((vox >= 0) & (vox < [8, 7, 6]), 1)
        lab = np.full(len(t), -1)
        lab[inside] = vol[0][tuple(vox[inside].T)]
        stop = np.flatnonzero((lab != FREE_ID))[0]  # first occupied sample, or first one outside
        if lab[stop] == -1:
            assert cls[0, r] == FREE_ID and dist[0, r] == pytest.approx(t[stop], abs=2e-3)
        else:
            leave = stop + np.flatnonzero(np.any(vox[stop:] != vox[stop], 1))[0]
            assert cls[0, r] == lab[stop] and dist[0, r] == pytest.approx(t[leave], abs=2e-3)


def _toy_scene():
    """10x3x3 unit voxels, origin in voxel (0,1,1); rays +x, +y, +z, -z."""
    gt = np.full((10, 3, 3), FREE_ID)
    pred = gt.copy()
    gt[5, 1, 1], pred[7, 1, 1] = 4, 4  # car at 5.5 m in GT, 7.5 m predicted: error 2 m
    gt[0, 1, 0] = pred[0, 1, 0] = 11  # road below, exact
    gt[0, 1, 2], pred[0, 1, 2] = 16, 15  # vegetation above, predicted manmade
    pred[0, 2, 1] = 4  # a car where the GT ray finds nothing: that ray is not evaluated
    ray = RayIoU(grid_range=(0, 0, 0, 10, 3, 3), directions=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]])
    return ray, pred, gt


def test_rayiou_hand_computed():
    ray, pred, gt = _toy_scene()
    ray.update(pred, gt, origins=[(0.5, 1.5, 1.5)])
    s = ray.summary()
    assert s["IoU@1"]["car"] == 0 and s["IoU@2"]["car"] == 0 and s["IoU@4"]["car"] == 100  # |error| < d
    assert s["IoU@1"]["driveable_surface"] == 100 and s["IoU@1"]["vegetation"] == 0
    assert s["IoU@1"]["manmade"] == 0 and math.isnan(s["IoU@1"]["bus"])
    assert (s["RayIoU@1"], s["RayIoU@2"], s["RayIoU@4"]) == pytest.approx((25, 25, 50))
    assert s["RayIoU"] == pytest.approx(100 / 3)
    assert "| **mean** | 25.00 | 25.00 | 50.00 |" in ray.table()


def test_rayiou_mask_and_ignore_ids_free_voxels():
    ray, pred, gt = _toy_scene()
    mask = np.ones_like(gt)
    mask[5:] = 0  # both cars gone: the +x ray finds nothing in the GT and is dropped
    ray.update(pred, gt, origins=[(0.5, 1.5, 1.5)], mask=mask)
    s = ray.summary()
    assert math.isnan(s["IoU@4"]["car"]) and s["RayIoU@4"] == pytest.approx(100 / 3)
    ray, pred, gt = _toy_scene()
    pred[7, 1, 1] = 255  # an ignore id is free: the predicted car disappears
    ray.update(pred, gt, origins=[(0.5, 1.5, 1.5)])
    assert ray.summary()["IoU@4"]["car"] == 0 and ray.pred_count[4] == 0


def test_rayiou_real_sample(occ3d_label):
    gt = np.load(occ3d_label)["semantics"]
    same = RayIoU()
    same.update(gt, gt)
    assert same.summary()["RayIoU"] == 100
    empty = RayIoU()
    empty.update(np.full_like(gt, FREE_ID), gt)
    assert empty.summary()["RayIoU"] == 0
    lifted = np.full_like(gt, FREE_ID)
    lifted[:, :, 1:] = gt[:, :, :-1]  # everything one voxel (0.4 m) higher
    shifted = RayIoU()
    shifted.update(lifted, gt, origins=[(0.943713, 0.0, 1.84023), (10.0, 5.0, 1.84023)])
    s = shifted.summary()
    assert 0 < s["RayIoU@1"] < s["RayIoU@2"] <= s["RayIoU@4"] < 100


def test_voxel_walk_visits_the_voxels_of_a_ray_and_breaks_corner_ties_in_its_order():
    """One ray from a voxel centre through the corner (1, 1, 1) of unit voxels: xyz steps x first, zyx z first;
    both reach the diagonal voxel after three steps at distances sqrt(3)/2 each time (a corner)."""
    from utils.voxel_walk import VoxelWalk
    d = np.array([[1.0, 1.0, 1.0]]) / np.sqrt(3)
    strides = np.array([100, 10, 1])
    for tie, first in (("xyz", 100), ("zyx", 1)):
        w = VoxelWalk([0.5, 0.5, 0.5], d, [0.0, 0.0, 0.0], 1.0, strides, tie=tie)
        assert w.flat[0] == 0 and np.isclose(w.exit_distance()[0], np.sqrt(3) / 2)
        flats = []
        for _ in range(3):
            w.advance(w.axis())
            flats.append(int(w.flat[0]))
        assert flats[0] == first and flats[-1] == 111
    w = VoxelWalk([0.5, 0.5, 0.5], np.array([[1.0, 0, 0], [0, -1.0, 0]]), [0, 0, 0], 1.0, strides)
    w.advance(w.axis())
    assert w.flat.tolist() == [100, -10] and w.exit_distance().tolist() == [1.5, 1.5]
    (kept,) = w.keep(np.array([False, True]), np.array([7, 8]))
    assert w.ray.tolist() == [1] and kept.tolist() == [8]


def test_radial_shift_moves_a_volume_along_the_rays_from_the_ego():
    gt = np.full((200, 200, 16), FREE_ID, dtype=np.uint8)
    gt[150, 90:110, 2:6] = 15  # a wall 20 m ahead (x), facing the ego
    gt[90:110, 40, 2:6] = 1  # a wall 24 m to the right (y < 0)
    early = np.full_like(gt, FREE_ID)  # the same walls one voxel nearer to the ego
    early[149, 90:110, 2:6] = 15
    early[90:110, 41, 2:6] = 1
    assert np.array_equal(radial_shift(early, 1), gt)
    assert np.array_equal(radial_shift(gt, -1), early)
    assert np.array_equal(radial_shift(gt, 0), gt)
    edge = np.full_like(gt, FREE_ID)
    edge[199, 100, 0] = 11
    assert (radial_shift(edge, 1) == FREE_ID).all()  # moved out of the grid: gone
    assert radial_shift(edge, -1)[198, 100, 0] == 11
