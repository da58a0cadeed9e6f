"""Occupancy health: what tells a volume that holds occupancy from a fog that only renders a depth.

With labels: the opacity AUC of occupied against free voxels, opacity quantiles per class and the read-out over
thresholds (utils/occ_metrics.OpacityStats). Without labels: the fog statistics of a render
(networks/gsv_loss.fog_stats) and the depth spread along the rays (the distortion term).
"""
import numpy as np
import pytest
import torch

from networks.gsv_loss import depth_spread, fog_stats
from networks.gsv_model import occ3d_readout, readout_classes
from networks.voxel_grid import VoxelGrid
from utils.constants import FREE_ID, OCC3D_SHAPE
from utils.occ_metrics import OccEvaluator, OpacityStats
from utils.rasterizer import rasterize


def _pairwise_auc(pos, neg):
    """Exact P(pos > neg) + 0.5 P(pos == neg) by brute force."""
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def test_opacity_auc_quantiles_and_threshold_readouts_on_a_constructed_volume():
    rng = np.random.default_rng(0)
    gt = np.full((20, 20, 4), FREE_ID, np.int64)
    gt[:, :5] = 4      # car
    gt[:, 5:8] = 11    # road
    occ = gt != FREE_ID
    # occupied voxels: opacity around 0.7, free around 0.2, overlapping tails; bins of 1/200 never split them
    opacity = np.where(occ, rng.uniform(0.4, 1.0, gt.shape), rng.uniform(0.0, 0.5, gt.shape))
    opacity = np.round(opacity * 200 - 0.5) / 200 + 0.0025  # bin centres: the histogram AUC is exact
    sem = np.where(gt == FREE_ID, 4, gt)  # the semantic argmax: right on occupied voxels
    mask = np.ones_like(gt)
    mask[:, 18:] = 0  # left out
    ev = OpacityStats(thresholds=(0.3, 0.45, 0.6))
    ev.update(torch.from_numpy(opacity), torch.from_numpy(sem), torch.from_numpy(gt), torch.from_numpy(mask))
    s = ev.summary()
    keep = mask > 0
    assert s["auc"] == pytest.approx(_pairwise_auc(opacity[keep & occ], opacity[keep & ~occ]), abs=1e-12)
    assert 0.85 < s["auc"] < 1.0
    assert s["quantiles"]["car"][1] == pytest.approx(np.median(opacity[gt == 4]), abs=0.01)
    assert s["quantiles"]["free"][1] == pytest.approx(np.median(opacity[keep & ~occ]), abs=0.01)
    for row in s["thresholds"]:  # each threshold's numbers = the plain evaluator on that read-out
        ref = OccEvaluator()
        ref.update(np.where(opacity > row["t"], sem, FREE_ID), gt, mask)
        assert row["geo_IoU"] == pytest.approx(ref.summary()["geo_IoU"])
        assert row["mIoU_star"] == pytest.approx(ref.summary()["mIoU_star"])
    assert s["best"]["t"] == 0.45  # between the two modes
    a, b = OpacityStats(), OpacityStats()  # accumulators add up across ranks / shards
    a.update(opacity[:10], sem[:10], gt[:10], mask[:10])
    b.update(opacity[10:], sem[10:], gt[10:], mask[10:])
    a.merge(b)
    assert a.summary()["auc"] == pytest.approx(s["auc"]) and torch.equal(a.hist, ev.hist)


def test_readout_by_opacity_threshold_and_the_authors_argmax():
    grid = VoxelGrid(OCC3D_SHAPE, (-40, 40, -40, 40, -0.2, 6.2))
    logits = torch.zeros(1, 18, *OCC3D_SHAPE)
    logits[0, 4] = 1.0                    # car is the semantic argmax everywhere
    logits[0, 17, :100] = 2.0             # back half: free logit 2 -> sigmoid opacity 0.12
    logits[0, 17, 100:] = -1.0            # front half: opacity 0.73
    ro = occ3d_readout(logits, grid, "sigmoid")
    assert ro["opacity"][0, 150, 100, 3] == pytest.approx(1 - torch.sigmoid(torch.tensor(-1.0)).item(), abs=1e-5)
    by_opacity = readout_classes(ro, "opacity", 0.5, "sigmoid")[0]
    assert (by_opacity[:99] == FREE_ID).all() and (by_opacity[101:] == 4).all()
    assert (readout_classes(ro, "opacity", 0.05, "sigmoid")[0] == 4).all()  # a lower threshold takes the back too
    argmax = readout_classes(ro, "argmax", 0.5, "sigmoid")[0]  # compares the free logit with the car logit
    assert (argmax[:99] == FREE_ID).all() and (argmax[101:] == 4).all()
    with pytest.raises(ValueError, match="occ_readout"):
        readout_classes(ro, "median", 0.5, "sigmoid")


def _render(opacity, depths, h=8, w=8):
    """One camera looking down +z at a stack of large Gaussians at ``depths`` (all of one opacity)."""
    n = len(depths)
    means = torch.tensor([[0.0, 0.0, d] for d in depths])
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4)
    scales = torch.tensor([[0.5 * d, 0.5 * d, 0.1] for d in depths])  # each covers the whole image
    o = torch.full((n,), opacity)
    feats = torch.stack([o, (o < 0.1).float()], 1)
    K = torch.tensor([[[4.0, 0, 3.5], [0, 4.0, 3.5], [0, 0, 1]]])
    z = means[:, 2]
    r = rasterize(means, quats, scales, o, torch.cat([feats, (z * z)[:, None]], 1), torch.eye(4)[None], K, w, h,
                  backend="torch")
    f = r["features"]
    return {"alpha": r["alpha"][None], "seen_opacity": f[None, :, 0:1], "faint_alpha": f[None, :, 1:2],
            "depth": r["depth"][None], "zsq": f[None, :, 2:3]}


def test_fog_statistics_and_depth_spread_tell_a_surface_from_a_fog():
    surface = _render(0.95, [10.0])
    fog = _render(0.03, [float(d) for d in range(2, 60)])
    s, f = fog_stats(surface), fog_stats(fog)
    assert s["seen_opacity"] > 0.9 and s["faint_alpha_share"] == 0 and s["voxels_to_half"] == pytest.approx(1.0)
    assert f["seen_opacity"] == pytest.approx(0.03, rel=0.05) and f["faint_alpha_share"] == pytest.approx(1.0)
    assert f["voxels_to_half"] == pytest.approx(np.log(0.5) / np.log(1 - 0.03), rel=0.05)  # ~23 Gaussians
    spread = lambda r: float(depth_spread(r["depth"], r["zsq"], r["alpha"]))  # noqa: E731
    assert spread(surface) == pytest.approx(0.0, abs=1e-4)
    assert spread(fog) > 0.15  # weights over 2..60 m
    transparent = _render(0.0, [10.0])
    assert spread(transparent) == 0.0 and fog_stats(transparent)["seen_opacity"] == 0


def test_metric_depth_spread_does_not_fade_with_range():
    """--w_dist_metric: the same slab of weights costs the same near and far (in voxels^2), where the relative spread
    of --w_dist falls with the square of the range."""
    from networks.gsv_loss import depth_spread_metric
    near = _render(0.3, [9.0, 9.4, 9.8, 10.2, 10.6])  # a 2 m slab of semi-transparent layers at 10 m ...
    far = _render(0.3, [29.0, 29.4, 29.8, 30.2, 30.6])  # ... and at 30 m
    metric = lambda r: float(depth_spread_metric(r["depth"], r["zsq"], r["alpha"], 0.4))  # noqa: E731
    rel = lambda r: float(depth_spread(r["depth"], r["zsq"], r["alpha"]))  # noqa: E731
    assert metric(near) == pytest.approx(metric(far), rel=0.05) and metric(near) > 0.5
    assert rel(far) < rel(near) / 5
    assert metric(_render(0.95, [10.0])) < 0.05 * metric(near) and metric(_render(0.0, [10.0])) == 0.0
