"""utils/pred_io.py (eval.py --save_pred) and tools/diagnostics/occ_errors.py: where a volume is wrong."""
import os

import numpy as np
import pytest
import torch

from eval import evaluate
from options import parse_args
from tools.diagnostics import occ_errors
from utils.constants import FREE_ID
from utils.occ_metrics import radial_shift
from utils.pred_io import MIN_OPACITY, decode_opacity, encode_opacity, load_prediction, save_prediction


def _street():
    """A road layer (class 11) and a wall (class 15, x index 150, 3 m high) in front of the ego; the cameras see
    everything up to the wall and the wall itself."""
    gt = np.full((200, 200, 16), FREE_ID, dtype=np.uint8)
    gt[:, :, 0] = 11
    gt[150, :, 1:8] = 15
    cam = np.zeros_like(gt)
    cam[:151] = 1
    return gt, cam, np.ones_like(gt)


def test_opacity_code_keeps_low_opacities_and_drops_noise():
    o = np.array([0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 0.5, 0.9, 1.0], dtype=np.float32)
    d = decode_opacity(encode_opacity(o))
    assert d[0] == 0 and d[1] == 0  # below MIN_OPACITY: nothing
    kept = o >= MIN_OPACITY
    assert np.all(np.abs(d[kept] - o[kept]) <= 0.0041 * np.sqrt(o[kept]) + 1e-6)  # 1/255 of sqrt: relative
    assert abs(d[-1] - 1.0) < 1e-6 and np.all(np.diff(d) >= 0)


def test_prediction_file_round_trip(tmp_path):
    gt, _, _ = _street()
    op = np.where(gt != FREE_ID, 0.8, 0.001).astype(np.float32)
    sem = np.where(gt != FREE_ID, gt, 3).astype(np.uint8)
    path = save_prediction(str(tmp_path), "tok", "scene-1", op, sem, gt, threshold=0.25)
    assert os.path.basename(path) == "tok.npz" and not [p for p in os.listdir(tmp_path) if "tmp" in p]
    r = load_prediction(path)
    assert np.array_equal(r["occupancy"], gt) and r["scene"] == "scene-1" and r["token"] == "tok"
    assert r["threshold"] == pytest.approx(0.25) and np.allclose(r["opacity"][gt != FREE_ID], 0.8, atol=0.005)
    assert np.all(r["sem"][gt == FREE_ID] == 255) and np.array_equal(r["sem"][gt != FREE_ID], gt[gt != FREE_ID])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a prediction"):
        load_prediction(str(tmp_path / "bad.npz"))


def test_error_breakdown_tells_a_shifted_surface_from_phantoms():
    gt, cam, lidar = _street()
    mask = (cam > 0) & (lidar > 0)
    exact, front, phantom = occ_errors.ErrorStats(), occ_errors.ErrorStats(), occ_errors.ErrorStats()
    exact.update(gt, gt, mask)
    front.update(radial_shift(gt, -1), gt, mask)  # the wall drawn one voxel nearer the ego
    ph = gt.copy()
    ph[60:70, 95:105, 9:14] = 4  # a block floating in free space, > 5 voxels from any surface
    phantom.update(ph, gt, mask)
    e, f, p = exact.summary(), front.summary(), phantom.summary()
    assert e["geo_IoU"] == 100 and e["geo_IoU_tol1"] == pytest.approx(100) and e["first_hit_offset_median_m"] == 0
    assert f["geo_IoU"] < 95 and f["geo_IoU_tol1"] == pytest.approx(100)  # imprecise, not missing
    assert f["fp_share_by_distance"]["1"] == 100 and f["first_hit_offset_median_m"] == pytest.approx(-0.4, abs=0.11)
    assert f["by_class"]["manmade"]["recall"] < 100 and f["by_class"]["manmade"]["recall_tol1"] == 100
    assert p["precision_tol2"] < 100 and p["fp_share_by_distance"][">5"] > 50  # phantoms stay wrong with tolerance
    assert p["recall"] == 100 and p["by_class"]["manmade"]["right_class_of_found"] == 100
    lid = occ_errors.ErrorStats()
    lidded = gt.copy()
    lidded[:, :, 13][gt[:, :, 13] == FREE_ID] = 15  # a ceiling over the whole street at 5.0-5.4 m
    lid.update(lidded, gt, mask)
    layers = lid.summary()["far_read_occupied_by_layer"]
    assert layers[13] == 100 and max(layers[3:13]) == 0 and np.isnan(layers[0])  # the ground has no far voxel


class _Volume(torch.nn.Module):
    """A stage-2 model stand-in whose opacity is the labels' occupancy."""

    def predict(self, batch, depth=True, occupancy=True, calibrate=False):
        sem = batch["occ_semantics"]
        return {"occupancy": sem.clone(), "occ_opacity": (sem != FREE_ID).float() * 0.7,
                "occ_sem": torch.where(sem != FREE_ID, sem, torch.zeros_like(sem))}


def test_eval_writes_the_volumes_and_occ_errors_reads_them(tmp_path):
    gt, cam, lidar = _street()
    item = {"occ_semantics": torch.from_numpy(gt), "occ_mask_camera": torch.from_numpy(cam),
            "occ_mask_lidar": torch.from_numpy(lidar), "token": "t0", "scene": "s0", "imgs": torch.zeros(1)}
    opt = parse_args(["--stage", "gsv", "--num_workers", "0", "--device", "cpu", "--eval_rayiou", "false",
                      "--save_pred", str(tmp_path / "pred")])
    res = evaluate(_Volume(), [item], opt, "cpu")
    assert res["scalars"]["occ/IoU"] == 100
    saved = load_prediction(str(tmp_path / "pred" / "t0.npz"))
    assert np.array_equal(saved["occupancy"], gt) and np.isnan(saved["threshold"])
    labels = tmp_path / "gts" / "s0" / "t0"
    labels.mkdir(parents=True)
    np.savez(labels / "labels.npz", semantics=gt, mask_camera=cam, mask_lidar=lidar)
    out = occ_errors.main(["--occ_root", str(tmp_path / "gts"), "--pred", str(tmp_path / "pred"),
                           "--names", "run", "--readout", "threshold", "--threshold", "0.5",
                           "--out", str(tmp_path / "err.md")])
    assert out["run"]["geo_IoU"] == 100 and (tmp_path / "err.json").exists()
    with pytest.raises(SystemExit, match="no labels for t0"):
        occ_errors.main(["--occ_root", str(tmp_path / "nowhere"), "--pred", str(tmp_path / "pred")])


def test_prediction_figure_draws_labels_and_each_run(tmp_path):
    from tools.diagnostics.occ_pred_figure import figure
    gt, cam, lidar = _street()
    item = {"imgs": torch.rand(3, 6, 3, 36, 64), "occ_semantics": torch.from_numpy(gt),
            "occ_mask_camera": torch.from_numpy(cam), "scene": "s0", "token": "t0"}
    lid = gt.copy()
    lid[:, :, 13] = 15
    save_prediction(str(tmp_path / "a"), "t0", "s0", (lid != FREE_ID).astype(np.float32), lid, lid)
    small = dict(view_hw=(60, 100))
    seen = figure([item], [0], [str(tmp_path / "a")], ["lid"], "camera", **small)
    whole = figure([item], [0], [str(tmp_path / "a")], ["lid"], "none", **small)
    assert seen.dtype == np.uint8 and seen.ndim == 3 and seen.shape == whole.shape
    assert not np.array_equal(seen, whole)  # the lid outside mask_camera shows only in the whole read-out
    with pytest.raises(SystemExit, match="has no volume of sample 0"):
        figure([dict(item, token="t1")], [0], [str(tmp_path / "a")], ["lid"], **small)
