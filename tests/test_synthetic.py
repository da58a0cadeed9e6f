"""The synthetic nuScenes-format set: devkit loading with the 12 Hz camera sweep chain, determinism, 2D semantics,
LiDAR, rig, images, and the loader's temporal neighbours on it (the Occ3D label rules: test_synthetic_labels.py)."""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SYNTH_FRAMES as FRAMES, SYNTH_HW as HW, SYNTH_SEED as SEED, SYNTH_SWEEPS as SWEEPS
from datasets import options as data_options
from datasets.nuscenes_dataset import NuScenesDataset
from datasets.synthetic import rig, writer
from datasets.synthetic.generate import render_job
from datasets.synthetic.scene import SAMPLE_DT, make_scene
from utils.constants import CAMS, FREE_ID, IGNORE_ID, OCC3D_LABEL_RANGE, OCC3D_VOXEL

N_CAM = (FRAMES - 1) * (SWEEPS + 1) + 1  # camera frames per scene


@pytest.fixture(scope="module")
def nusc(synth_root):
    from nuscenes.nuscenes import NuScenes
    return NuScenes(writer.VERSION, str(synth_root), verbose=False)


def _labels(root, scene, k):
    return np.load(Path(root) / "gts" / writer.scene_name(scene) / writer.sample_token(SEED, scene, k) / "labels.npz")


def _voxel(p):
    """Occ3D label index of ego-frame points (N, 3)."""
    return np.floor((p - np.array(OCC3D_LABEL_RANGE[:3])) / OCC3D_VOXEL).astype(int)


def _chain(nusc, sd):
    out = [sd]
    while out[-1]["next"]:
        out.append(nusc.get("sample_data", out[-1]["next"]))
    return out


def test_devkit_loads_the_sweep_chain(synth_root, nusc):
    """nuscenes-devkit loads the set: per scene 3 samples, 13 camera frames per camera 1/12 s apart linked by
    prev / next with is_key_frame on every 6th, LiDAR at the keyframes only; sweeps belong to the next sample."""
    assert len(nusc.table_names) == 13 and len(nusc.scene) == 2 and len(nusc.sample) == 2 * FRAMES
    assert len(nusc.sample_data) == len(nusc.ego_pose) == 2 * (N_CAM * 6 + FRAMES)
    assert len(nusc.sample_annotation) > 0 and len(nusc.instance) > 0
    samples = [nusc.get("sample", nusc.scene[0]["first_sample_token"])]
    while samples[-1]["next"]:
        samples.append(nusc.get("sample", samples[-1]["next"]))
    assert set(samples[0]["data"]) == set(CAMS + ["LIDAR_TOP"])
    for cam in CAMS:
        chain = _chain(nusc, nusc.get("sample_data", samples[0]["data"][cam]))
        assert chain[0]["prev"] == "" and len(chain) == N_CAM
        assert [r["is_key_frame"] for r in chain] == [f % (SWEEPS + 1) == 0 for f in range(N_CAM)]
        assert [r["token"] for r in chain[::SWEEPS + 1]] == [s["data"][cam] for s in samples]
        dt = np.diff([r["timestamp"] for r in chain])
        assert np.all(np.abs(dt - 1e6 * SAMPLE_DT / (SWEEPS + 1)) <= 1)
        assert [r["sample_token"] for r in chain[1:SWEEPS + 2]] == [samples[1]["token"]] * (SWEEPS + 1)
        assert all(r["filename"].startswith("samples/" if r["is_key_frame"] else "sweeps/") for r in chain)
        assert all((Path(synth_root) / r["filename"]).is_file() for r in chain)
    lidar = _chain(nusc, nusc.get("sample_data", samples[0]["data"]["LIDAR_TOP"]))
    assert len(lidar) == FRAMES and all(r["is_key_frame"] for r in lidar)
    sd = nusc.get("sample_data", samples[0]["data"]["CAM_FRONT"])
    assert Image.open(Path(synth_root) / sd["filename"]).size == (HW[1], HW[0])
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    np.testing.assert_allclose(cs["camera_intrinsic"], rig.intrinsics(*HW, "CAM_FRONT"))
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    assert pose["translation"][2] == 0.0 and pose["timestamp"] == sd["timestamp"]
    sweep = _chain(nusc, sd)[2]
    assert len(nusc.get_boxes(sweep["token"])) == len(samples[1]["anns"])  # boxes interpolated to the sweep
    train = (Path(synth_root) / "splits" / "train.txt").read_text().split()
    val = (Path(synth_root) / "splits" / "val.txt").read_text().split()
    assert len(train) == len(val) == FRAMES and val[0] == nusc.scene[1]["first_sample_token"]


@pytest.mark.parametrize("sweeps", [0, 2])
def test_timeline_options(sweeps):
    """--sweeps_per_keyframe S: S camera frames between samples 0.5 s apart (S = 0: keyframes only); keyframe poses
    equal the world's sample poses exactly."""
    world = make_scene(SEED, 0, FRAMES)
    stats = [[dict(visible={}, crossed={}, lidar_pts={})] * FRAMES]
    t = writer.build_tables(SEED, [world], stats, HW, sweeps)
    n_cam = (FRAMES - 1) * (sweeps + 1) + 1
    assert len(t["sample_data"]) == len(t["ego_pose"]) == 6 * n_cam + FRAMES
    assert sum(not r["is_key_frame"] for r in t["sample_data"]) == 6 * (n_cam - FRAMES)
    assert all(r["filename"].startswith("samples/") == r["is_key_frame"] for r in t["sample_data"])
    assert np.allclose(np.diff([s["timestamp"] for s in t["sample"]]), 1e6 * SAMPLE_DT)
    front = [r for r in t["sample_data"] if r["filename"].split("/")[1] == "CAM_FRONT" and r["is_key_frame"]]
    poses = {p["token"]: p for p in t["ego_pose"]}
    for r, E in zip(front, world.ego2global):
        assert poses[r["ego_pose_token"]]["translation"] == E[:3, 3].tolist()


def test_deterministic(synth_root, tmp_path):
    """Same seed: identical bytes (rendering a sweep and a keyframe again, alone, reproduces their files)."""
    for folder in ("samples", "sweeps"):
        for c in writer.CHANNELS:
            (tmp_path / folder / c).mkdir(parents=True)
    files = []
    for f in (1, SWEEPS + 1):  # a sweep, then the second keyframe with its labels
        render_job((str(tmp_path), SEED, 0, f, FRAMES, SWEEPS, HW))
        files += [writer.data_filename(SEED, 0, f, c, SWEEPS) for c in CAMS]
    tok = writer.sample_token(SEED, 0, 1)
    files += [writer.data_filename(SEED, 0, SWEEPS + 1, "LIDAR_TOP", SWEEPS)]
    files += [f"sem/{tok}/{c}.png" for c in CAMS] + [f"gts/{writer.scene_name(0)}/{tok}/labels.npz"]
    for f in files:
        assert (Path(synth_root) / f).read_bytes() == (tmp_path / f).read_bytes(), f


def test_images_textured_and_moving(synth_root):
    """Textured images; a sweep 1/12 s later differs a little, the next keyframe (0.5 s) more."""
    a = [np.asarray(Image.open(Path(synth_root) / writer.data_filename(SEED, 0, f, "CAM_FRONT", SWEEPS))
                    .convert("L"), float) for f in (0, 1, SWEEPS + 1)]
    grad = np.abs(np.diff(a[0], axis=1)).mean() + np.abs(np.diff(a[0], axis=0)).mean()
    assert grad > 3.0, grad
    ground = a[0][HW[0] * 2 // 3:]  # the road ahead carries texture, not a flat colour
    assert np.abs(np.diff(ground, axis=1)).mean() > 0.5
    assert 0.3 < np.abs(a[0] - a[1]).mean() < np.abs(a[0] - a[2]).mean()


def test_semantic_maps_match_labels(synth_root, nusc):
    """The first occupied voxel along a pixel's ray carries the pixel's 2D class in a large majority (the rest:
    0.4 m voxels around class borders; a voxel that a surface only clips is occupied, so rays graze voxels of
    objects they pass: tools/diagnostics/synthetic_label_check.py measures 97 % agreement where the first voxel is at the
    surface)."""
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    lab = _labels(synth_root, 0, 0)["semantics"]
    agree = total = 0
    for c, c2e in zip(CAMS, rig.cam2ego()):
        sem2d = np.array(Image.open(Path(synth_root) / "sem" / sample["token"] / f"{c}.png"))
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
    assert total > 1000 and agree / total > 0.8, agree / total


def test_lidar_on_surfaces(synth_root, nusc):
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pts = np.fromfile(Path(synth_root) / sd["filename"], dtype=np.float32).reshape(-1, 5)
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


def _opt(root, **kw):
    p = argparse.ArgumentParser()
    data_options.add_args(p)
    opt = p.parse_args(["--dataroot", str(root), "--version", writer.VERSION, "--input_size", "48", "80",
                        "--val_split", str(Path(root) / "splits" / "val.txt")])
    for k, v in kw.items():
        setattr(opt, k, v)
    return opt


def test_loader_takes_the_sweeps(synth_root, capsys):
    """Default --adjacent auto: the 12 Hz sweeps (logged); the neighbours' poses are the recorded ones, 1/12 s of
    motion away (keyframes: 0.5 s)."""
    world = make_scene(SEED, 1, FRAMES)
    ds = NuScenesDataset(_opt(synth_root), "val")
    assert ds.adjacent == "sweep" and "adjacent camera sweeps" in capsys.readouterr().out
    assert [m["token"] for m in ds.samples] == [writer.sample_token(SEED, 1, k) for k in range(FRAMES)]
    E = ds[1]["ego2global"].double().numpy()  # sample 1 of the validation scene
    dt = SAMPLE_DT / (SWEEPS + 1)
    truth = world.ego_pose([SAMPLE_DT - dt, SAMPLE_DT, SAMPLE_DT + dt])
    for c in range(len(CAMS)):
        np.testing.assert_allclose(E[:, c], truth, atol=1e-4)
    step = np.linalg.norm(E[1, 0, :3, 3] - E[0, 0, :3, 3])
    assert step == pytest.approx(world.speed * dt, rel=1e-4) and 0.3 < step < 0.7
    key = NuScenesDataset(_opt(synth_root, adjacent="keyframe"), "val")[1]["ego2global"].double().numpy()
    assert np.linalg.norm(key[1, 0, :3, 3] - key[0, 0, :3, 3]) == pytest.approx(world.speed * SAMPLE_DT, rel=1e-4)
    first = ds.samples[0]  # the first sample has no earlier sweep
    assert not first["prev"] and first["next"]


def test_frame_stride_and_items_on_the_sweeps(synth_root):
    """--frame_stride N: neighbours N sweeps away on both sides; LO HI: one stride per training item, drawn anew at
    every read within what both chains reach, evaluation takes LO; --train_sweeps: the sweeps between keyframes are
    training items too (stage 1 has no labels to need)."""
    speed = {writer.scene_name(i): make_scene(SEED, i, FRAMES).speed for i in range(2)}
    step = SAMPLE_DT / (SWEEPS + 1)

    def strides(item):  # sweeps between current and previous / next frame, from the recorded poses
        E = item["ego2global"][:, 0].double()
        d = [float((E[a, :3, 3] - E[1, :3, 3]).norm()) / (speed[item["scene"]] * step) for a in (0, 2)]
        return [round(x, 3) for x in d]

    assert strides(NuScenesDataset(_opt(synth_root, frame_stride=[3]), "val")[1]) == [3, 3]
    assert strides(NuScenesDataset(_opt(synth_root, frame_stride=[2, 6]), "val")[1]) == [2, 2]
    train = NuScenesDataset(_opt(synth_root, frame_stride=[1, 6], train_sweeps=True), "train", eval_labels=False)
    assert len(train) == 2 * (N_CAM - 2)  # every camera frame with an earlier and a later one, both scenes
    drawn = {}
    for i in (0, 5, len(train) // 2 - 1):  # the first sweep, a middle one and the last before the end
        drawn[i] = {tuple(strides(train[i])) for _ in range(12)}
    assert all(a == b and a == int(a) for d in drawn.values() for a, b in d)
    assert {a for a, _ in drawn[0]} == {1} and {a for a, _ in drawn[len(train) // 2 - 1]} == {1}  # chain ends
    assert len(drawn[5]) > 2 and max(a for a, _ in drawn[5]) <= 6
    with pytest.raises(Exception, match="--train_sweeps"):  # stage 2 trains the labels: keyframes only
        NuScenesDataset(_opt(synth_root, train_sweeps=True, use_sem=True, stage="gsv"), "train", eval_labels=False)
    # stage 1 with labels (its road term, --ground_mode road): a sweep's item says it has none
    sem = NuScenesDataset(_opt(synth_root, train_sweeps=True, use_sem=True, stage="gsp", sem_root="sem",
                               render_size=[24, 40]), "train", eval_labels=False)
    kinds = {"#sweep" in m["token"]: i for i, m in enumerate(sem.samples)}
    assert set(kinds) == {True, False}
    assert (sem[kinds[True]]["sem"] == IGNORE_ID).all() and sem[kinds[True]]["sem"].shape == (len(CAMS), 24, 40)
    assert (sem[kinds[False]]["sem"] < IGNORE_ID).float().mean() > 0.5  # a keyframe's own labels


def test_loader_falls_back_without_sweep_files(synth_root, tmp_path, capsys):
    """Tables that list sweeps whose files are missing (nuScenes without its sweeps/ folder): keyframes."""
    for name in os.listdir(synth_root):
        if name != "sweeps":
            os.symlink(Path(synth_root) / name, tmp_path / name)
    ds = NuScenesDataset(_opt(tmp_path), "val")
    assert ds.adjacent == "keyframe" and "files are absent" in capsys.readouterr().out
    E = ds[1]["ego2global"]
    assert torch.linalg.norm(E[1, 0, :3, 3] - E[0, 0, :3, 3]) > 1.5


def test_the_preview_needs_no_nuscenes_devkit(synth_root, tmp_path, monkeypatch):
    """run_gs_occ.sh writes the preview with whatever Python it was given (GSOCC_PYTHON): no devkit import."""
    import sys

    import numpy as np
    from PIL import Image

    from datasets.synthetic.preview import save_preview
    monkeypatch.setitem(sys.modules, "nuscenes", None)  # any `import nuscenes` now fails
    save_preview(synth_root, tmp_path / "p.png")
    img = np.array(Image.open(tmp_path / "p.png"))
    assert img.ndim == 3 and img.shape[0] == 4 * 90 and img.shape[1] > 3 * 160  # 2 rows of images + 2 of labels, BEV
    assert img[:90, :160].std() > 5  # a camera image, not a blank


def test_adjacent_keyframe_labels_for_the_extra_views(synth_root):
    """--w_extra_sem: each item also holds the previous / next keyframe's own 2D labels (``sem_adj``); 255 where the
    neighbour has none (a camera sweep, or no neighbour at the end of the scene)."""
    kw = dict(use_sem=True, sem_root="sem", w_extra_sem=0.5)
    key = NuScenesDataset(_opt(synth_root, adjacent="keyframe", **kw), "val")
    items = [key[i] for i in range(FRAMES)]
    mid = items[1]
    assert mid["sem_adj"].shape == (2,) + tuple(mid["sem"].shape)
    assert torch.equal(mid["sem_adj"][0], items[0]["sem"]) and torch.equal(mid["sem_adj"][1], items[2]["sem"])
    assert not torch.equal(items[0]["sem"], items[2]["sem"])  # (the check can fail: the frames differ)
    assert (items[0]["sem_adj"][0] == 255).all() and torch.equal(items[0]["sem_adj"][1], mid["sem"])
    sweep = NuScenesDataset(_opt(synth_root, adjacent="sweep", **kw), "val")[1]
    assert (sweep["sem_adj"] == 255).all()  # sweeps have no labels
    assert "sem_adj" not in NuScenesDataset(_opt(synth_root, adjacent="keyframe", use_sem=True, sem_root="sem"),
                                            "val")[1]


def test_near_neighbours_as_two_more_frames(synth_root):
    """--near_stride N: frames 3 / 4 are the neighbours N steps away, frames 0 / 2 those of --frame_stride (here the
    keyframes 0.5 s away through the sweep chain and the sweeps 1/12 s away)."""
    world = make_scene(SEED, 1, FRAMES)
    item = NuScenesDataset(_opt(synth_root, adjacent="sweep", frame_stride=[SWEEPS + 1], near_stride=1), "val")[1]
    assert item["imgs"].shape[0] == 5 and item["ego2global"].shape[:2] == (5, len(CAMS))
    E = item["ego2global"][:, 0].double().numpy()
    dt = SAMPLE_DT / (SWEEPS + 1)
    truth = world.ego_pose([0.0, SAMPLE_DT, 2 * SAMPLE_DT, SAMPLE_DT - dt, SAMPLE_DT + dt])
    np.testing.assert_allclose(E, truth, atol=1e-4)
    plain = NuScenesDataset(_opt(synth_root, adjacent="sweep", frame_stride=[SWEEPS + 1]), "val")[1]
    assert plain["imgs"].shape[0] == 3 and torch.equal(plain["imgs"], item["imgs"][:3])
    with pytest.raises(Exception, match="--near_stride"):
        NuScenesDataset(_opt(synth_root, adjacent="sweep", frame_stride=[2], near_stride=2), "val")
