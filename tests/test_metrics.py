"""Depth metrics (utils/metrics.py) and the cross-process reduction of every evaluator."""
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.metrics import DepthEvaluator, compute_depth_errors
from utils.occ_metrics import OccEvaluator, RayIoU


def test_depth_errors_hand_computed():
    gt = np.array([2.0, 6.0, 3.0, 1.9])
    pred = np.array([2.0, 5.0, 4.5, 1.0])  # ratios max(g/p, p/g) = 1, 1.2, 1.5, 1.9
    e = compute_depth_errors(gt, pred)
    assert e["abs_rel"] == pytest.approx((0 + 1 / 6 + 1.5 / 3 + 0.9 / 1.9) / 4)
    assert e["sq_rel"] == pytest.approx((0 + 1 / 6 + 2.25 / 3 + 0.81 / 1.9) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((0 + 1 + 2.25 + 0.81) / 4))
    logs = [0, math.log(1.2), math.log(1.5), math.log(1.9)]
    assert e["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4))
    assert (e["a1"], e["a2"], e["a3"]) == (0.5, 0.75, 1.0)  # thresholds 1.25, 1.5625, 1.953125


def test_range_mask_and_clamp():
    ev = DepthEvaluator(0.1, 80.0, num_cams=1)
    gt = torch.tensor([[[0.0, 0.05, 50.0, 100.0, 20.0]]])  # missing, too near, valid, too far, valid
    pred = torch.tensor([[[7.0, 7.0, 90.0, 7.0, 0.01]]])  # 90 -> 80 and 0.01 -> 0.1 by clamping
    ev.update(pred, gt)
    m = ev.summary()["mean"]
    assert m["abs_rel"] == pytest.approx((30 / 50 + 19.9 / 20) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt((30**2 + 19.9**2) / 2))
    assert (m["a2"], m["a3"]) == (0.0, 0.5)  # ratios 1.6 and 199


def test_prediction_is_resized_to_gt():
    ev = DepthEvaluator(num_cams=1)
    gt = torch.zeros(1, 4, 6)
    gt[0, 0, 0], gt[0, 3, 5] = 4.0, 5.0
    ev.update(torch.full((1, 2, 3), 5.0), gt)  # a constant image stays constant when resized
    assert ev.summary()["mean"]["abs_rel"] == pytest.approx((1 / 4 + 0) / 2)


def test_mean_per_camera_then_over_cameras():
    ev = DepthEvaluator(num_cams=2)
    frame1 = torch.tensor([[[10.0, 10.0, 10.0]], [[10.0, 0.0, 0.0]]])  # cam0: 3 pixels, cam1: 1 pixel
    pred1 = torch.tensor([[[11.0, 11.0, 11.0]], [[15.0, 1.0, 1.0]]])  # abs_rel 0.1 and 0.5
    frame2 = torch.tensor([[[10.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]])  # cam1 has no LiDAR point: not counted
    pred2 = torch.tensor([[[13.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]]])  # abs_rel 0.3
    ev.update(torch.stack([pred1, pred2]), torch.stack([frame1, frame2]))
    s = ev.summary()
    assert s["per_camera"]["cam0"]["abs_rel"] == pytest.approx(0.2)  # frame mean, not pixel mean (0.15)
    assert s["per_camera"]["cam1"]["abs_rel"] == pytest.approx(0.5)
    assert s["mean"]["abs_rel"] == pytest.approx(0.35)
    assert s["num_frames"] == {"cam0": 2, "cam1": 1}
    table = ev.table().splitlines()
    assert len(table) == 2 + 2 + 1 and table[-1].startswith("| **mean** | 0.350 |")


def test_six_cameras_named_and_median_scaling():
    gt = torch.rand(6, 5, 8) * 40 + 1
    ev = DepthEvaluator(median_scaling=True)
    ev.update(gt / 2, gt)
    s = ev.summary()
    assert list(s["per_camera"]) == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                                     "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]
    assert s["median_ratio"]["mean"] == pytest.approx(2.0) and s["median_ratio"]["std"] == pytest.approx(0, abs=1e-6)
    assert s["mean"]["abs_rel"] == pytest.approx(0, abs=1e-6) and s["mean"]["a1"] == 1.0
    plain = DepthEvaluator()
    plain.update(gt / 2, gt)
    assert plain.summary()["mean"]["abs_rel"] == pytest.approx(0.5)


def test_merge_equals_single_evaluator():
    torch.manual_seed(0)
    preds, gts = torch.rand(4, 6, 3, 4) * 50, torch.rand(4, 6, 6, 8) * 90
    whole, a, b = DepthEvaluator(), DepthEvaluator(), DepthEvaluator()
    whole.update(preds, gts)
    a.update(preds[:1], gts[:1])
    b.update(preds[1:], gts[1:])
    a.merge(b.state_dict())
    assert torch.allclose(a.sums, whole.sums) and torch.equal(a.counts, whole.counts)
    assert a.summary()["mean"] == pytest.approx(whole.summary()["mean"])


RAY_GRID = (0.0, 0.0, 0.0, 4.0, 4.0, 4.0)


def _evaluators():
    return DepthEvaluator(num_cams=1), OccEvaluator(use_mask=False), RayIoU(grid_range=RAY_GRID, directions=np.eye(3))


def _fill(evaluators, depth_data, occ_data):
    depth, occ, ray = evaluators
    depth.update(*depth_data)
    occ.update(*occ_data)
    ray.update(*occ_data, origins=[(0.5, 0.5, 0.5)])


def _ddp_worker(rank, tmp, depth_data, occ_data):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=2)
    evaluators = _evaluators()
    _fill(evaluators, depth_data[rank], occ_data[rank])
    for ev in evaluators:
        ev.all_reduce()
    torch.save([ev.state_dict() for ev in evaluators], f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def test_all_reduce_over_two_processes(tmp_path):
    """Each process sees different samples; after all_reduce both hold the sums of a single evaluator."""
    torch.manual_seed(0)
    depth_data = [(torch.rand(1, 2, 3) * 10, torch.rand(1, 2, 3) * 10) for _ in range(2)]
    occ_data = [(torch.randint(0, 18, (4, 4, 4)), torch.randint(0, 18, (4, 4, 4))) for _ in range(2)]
    # fork rather than spawn: the workers need no fresh interpreter, which keeps this test under a second
    mp.start_processes(_ddp_worker, args=(str(tmp_path), depth_data, occ_data), nprocs=2, start_method="fork")
    reference = _evaluators()
    for r in range(2):
        _fill(reference, depth_data[r], occ_data[r])
    assert reference[1].hist.sum() == 2 * 4**3 and reference[2].gt_count.sum() > 0
    for rank in range(2):
        for state, ref in zip(torch.load(tmp_path / f"rank{rank}.pt"), reference):
            for key, value in ref.state_dict().items():
                assert torch.allclose(state[key], value), (rank, key)


def test_depth_error_by_lidar_distance_pools_points_and_merges():
    """AbsRel per distance bin (inside 20 m, 20-40 m, beyond) over the points, exact across merged evaluators."""
    gt = torch.zeros(1, 4, 6)
    pred = torch.zeros(1, 4, 6)
    gt[0, 0, :3], pred[0, 0, :3] = 10.0, 10.0  # 3 exact points at 10 m
    gt[0, 1, :2], pred[0, 1, :2] = 30.0, 33.0  # 2 points at 30 m, 10% off
    gt[0, 2, :1], pred[0, 2, :1] = 50.0, 40.0  # 1 point at 50 m, 20% off
    whole = DepthEvaluator(num_cams=1)
    # the prediction is resized to the LiDAR size (same here), so each point reads its own value
    whole.update(pred, gt)
    s = whole.summary()
    assert s["points_by_range"] == {"0-20m": 3, "20-40m": 2, "40m+": 1}
    assert s["abs_rel_by_range"]["0-20m"] == pytest.approx(0.0)
    assert s["abs_rel_by_range"]["20-40m"] == pytest.approx(0.1)
    assert s["abs_rel_by_range"]["40m+"] == pytest.approx(0.2)
    a, b = DepthEvaluator(num_cams=1), DepthEvaluator(num_cams=1)
    a.update(pred, gt)
    b.update(pred * 1.5, gt)
    a.merge(b)
    assert a.summary()["points_by_range"]["0-20m"] == 6
    assert a.summary()["abs_rel_by_range"]["0-20m"] == pytest.approx(0.25)  # (3 * 0 + 3 * 0.5) / 6
    assert "20-40m 0.100 (33% of points)" in whole.range_line()


def test_abs_rel_by_the_class_of_the_2d_label_at_each_point():
    """Points of a 2x4 LiDAR grid labelled through a 1x2 label map (nearest: the left half class 11, the right half
    class 15); per class the pooled AbsRel, the mean log(pred / gt) and the share of the points; 255 counts nowhere."""
    gt = torch.tensor([[[10.0, 10.0, 10.0, 20.0], [10.0, 0.0, 20.0, 20.0]]])  # one camera, 2 x 4, one point missing
    pred = torch.tensor([[[11.0, 9.0, 10.0, 10.0], [10.0, 5.0, 20.0, 20.0]]])
    labels = torch.tensor([[[11, 15]]])
    ev = DepthEvaluator(num_cams=1)
    ev.update(pred, gt, labels)
    by = ev.summary()["by_class"]
    # class 11: (10 -> 11), (10 -> 9), (10 -> 10); class 15: (10 -> 10), (20 -> 10), (20 -> 20), (20 -> 20)
    assert by["driveable_surface"]["abs_rel"] == pytest.approx((0.1 + 0.1 + 0) / 3)
    assert by["driveable_surface"]["log_bias"] == pytest.approx((math.log(1.1) + math.log(0.9)) / 3)
    assert by["manmade"]["abs_rel"] == pytest.approx(0.5 / 4)
    assert by["manmade"]["log_bias"] == pytest.approx(math.log(0.5) / 4)
    assert by["driveable_surface"]["share"] == pytest.approx(3 / 7)
    assert "manmade 0.125 (bias -0.173, 57%), driveable_surface 0.067" in ev.class_line()
    other = DepthEvaluator(num_cams=1)
    other.update(pred, gt, torch.full((1, 1, 2), 255))
    assert "by_class" not in other.summary() and other.class_line() == ""
    ev.merge(other)  # (as across processes)
    assert ev.summary()["by_class"]["manmade"]["share"] == pytest.approx(4 / 7)
