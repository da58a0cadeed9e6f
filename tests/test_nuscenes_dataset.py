"""NuScenesDataset, collate and make_split on the real scene-0916 fixture, checked against nuscenes-devkit."""
import argparse
import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import build_dataset, collate
from datasets import options as data_options
from datasets.nuscenes_dataset import NuScenesDataset
from utils.constants import CAMS

H, W = 96, 160  # small input size keeps the tests fast


def make_opt(root, **kw):
    p = argparse.ArgumentParser()
    data_options.add_args(p)
    opt = p.parse_args(["--dataroot", str(root), "--version", "v1.0-mini", "--input_size", str(H), str(W)])
    for k, v in kw.items():
        setattr(opt, k, v)
    return opt


def mirror(src, dst, drop=()):
    """dst: the tree of src as symlinks, without the relative paths in ``drop``."""
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in files:
            if os.path.join(rel, f) not in {os.path.normpath(d) for d in drop}:
                os.symlink(os.path.join(dirpath, f), os.path.join(dst, rel, f))


def write_split(path, tokens):
    path.write_text("# test split\n" + "".join(f"{t}  # comment\n" for t in tokens) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def nusc(nusc_root):
    from nuscenes.nuscenes import NuScenes
    return NuScenes("v1.0-mini", str(nusc_root), verbose=False)


@pytest.fixture(scope="module")
def tokens(nusc):
    """Sample tokens of scene-0916 in temporal order."""
    out, tok = [], nusc.scene[0]["first_sample_token"]
    while tok:
        out.append(tok)
        tok = nusc.get("sample", tok)["next"]
    return out


@pytest.fixture(scope="module")
def val_set(nusc_root):
    return NuScenesDataset(make_opt(nusc_root), "val")


def cam_data(nusc, token, cam):
    return nusc.get("sample_data", nusc.get("sample", token)["data"][cam])


def devkit_pose(record):
    from nuscenes.utils.geometry_utils import transform_matrix
    from pyquaternion import Quaternion
    return transform_matrix(record["translation"], Quaternion(record["rotation"]))


def test_item_shapes_and_dtypes(val_set, tokens):
    assert len(val_set) == 41
    item = val_set[3]
    assert item["imgs"].shape == (3, 6, 3, H, W) and item["imgs"].dtype == torch.float32
    assert item["K"].shape == (6, 3, 3) and item["cam2ego"].shape == (6, 4, 4)
    assert item["ego2global"].shape == (3, 6, 4, 4)
    assert all(item[k].dtype == torch.float32 for k in ("K", "cam2ego", "ego2global"))
    assert item["token"] == tokens[3] and item["scene"] == "scene-0916"
    assert 0.0 <= item["imgs"].min() and item["imgs"].max() <= 1.0
    assert not any(k in item for k in ("sem", "depth_gt", "occ_semantics"))


def test_image_content(val_set, nusc, nusc_root, tokens):
    """The current CAM_BACK image is that sample's file, RGB, resized as a whole."""
    item = val_set[3]
    path = os.path.join(nusc_root, cam_data(nusc, tokens[3], "CAM_BACK")["filename"])
    ref = cv2.resize(cv2.imread(path)[:, :, ::-1], (W, H), interpolation=cv2.INTER_AREA) / 255.0
    ours = item["imgs"][1, CAMS.index("CAM_BACK")].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).mean() < 0.02
    other = item["imgs"][1, CAMS.index("CAM_FRONT")].permute(1, 2, 0).numpy()
    assert np.abs(other - ref).mean() > 0.05


def test_intrinsics_scaled(val_set, nusc, tokens):
    item = val_set[0]
    for c, cam in enumerate(CAMS):
        sd = cam_data(nusc, tokens[0], cam)
        K = np.array(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
        sx, sy = W / sd["width"], H / sd["height"]
        # resizing maps a pixel-centre coordinate x (centres at integers) to (x + 0.5) * s - 0.5
        expected = np.diag([sx, sy, 1.0]) @ K
        expected[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        expected[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        np.testing.assert_allclose(item["K"][c].numpy(), expected, rtol=1e-6, atol=1e-4)


def test_extrinsics_and_neighbour_poses(val_set, nusc, tokens):
    """cam2ego from calibrated_sensor; ego2global from each camera's own ego_pose at prev / current / next."""
    i = 10
    item = val_set[i]
    for c, cam in enumerate(CAMS):
        sd = cam_data(nusc, tokens[i], cam)
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        np.testing.assert_allclose(item["cam2ego"][c].numpy(), devkit_pose(cs), atol=1e-6)
        for f, tok in enumerate(tokens[i - 1:i + 2]):
            pose = nusc.get("ego_pose", cam_data(nusc, tok, cam)["ego_pose_token"])
            np.testing.assert_allclose(item["ego2global"][f, c].numpy(), devkit_pose(pose), rtol=1e-6, atol=2e-3)
    # cameras fire at different times, so their poses differ; the frames are ~0.5 s apart
    assert not torch.allclose(item["ego2global"][1, 0], item["ego2global"][1, 3])
    assert torch.dist(item["ego2global"][0, 0, :3, 3], item["ego2global"][1, 0, :3, 3]) > 0.1


def test_val_missing_neighbour_is_current(val_set):
    first, last = val_set[0], val_set[len(val_set) - 1]
    assert torch.equal(first["imgs"][0], first["imgs"][1]) and not torch.equal(first["imgs"][2], first["imgs"][1])
    assert torch.equal(first["ego2global"][0], first["ego2global"][1])
    assert torch.equal(last["imgs"][2], last["imgs"][1]) and torch.equal(last["ego2global"][2], last["ego2global"][1])


def test_require_adjacent_drops_first_and_last(nusc_root, tokens):
    train = build_dataset(make_opt(nusc_root), "train")
    assert [m["token"] for m in train.samples] == tokens[1:-1]
    assert len(build_dataset(make_opt(nusc_root, require_adjacent=False), "train")) == 41


def test_sweep_mode_on_keyframes_only(nusc_root, val_set, capsys):
    """Without sweeps in the tables the adjacent sweep is the adjacent keyframe, and the default (auto) says it
    takes the keyframes."""
    sweep = NuScenesDataset(make_opt(nusc_root, adjacent="sweep"), "val")
    def files(m):
        return [[f for f, _ in m[d]] for d in ("prev", "next")], m["cur"][0]
    assert [files(m) for m in sweep.samples] == [files(m) for m in val_set.samples]
    assert val_set.adjacent == "keyframe" and sweep.adjacent == "sweep"
    NuScenesDataset(make_opt(nusc_root), "val")
    assert "adjacent keyframes (the tables hold camera keyframes only)" in capsys.readouterr().out


def test_split_file_and_collate(nusc_root, tokens, tmp_path):
    split = write_split(tmp_path / "val.txt", [tokens[7], tokens[2]])
    ds = build_dataset(make_opt(nusc_root, val_split=split), "val")
    batch = collate([ds[0], ds[1]])
    assert batch["token"] == [tokens[7], tokens[2]] and batch["scene"] == ["scene-0916"] * 2
    assert batch["imgs"].shape == (2, 3, 6, 3, H, W) and batch["ego2global"].shape == (2, 3, 6, 4, 4)
    assert torch.equal(batch["K"][1], ds[1]["K"])
    bad = write_split(tmp_path / "bad.txt", [tokens[0], "f" * 32])
    with pytest.raises(ValueError, match="bad.txt: 1 tokens are not samples"):
        build_dataset(make_opt(nusc_root, val_split=bad), "val")
    with pytest.raises(ValueError, match="lack 'imgs'"):
        collate([{"imgs": torch.zeros(1)}, {"token": "x"}])


def test_optional_labels(nusc_root, tokens, occ3d_label, tmp_path):
    from tools.data.export_gt_depth_nusc import export_depth
    tok = tokens[4]
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 17, size=(900, 1600), dtype=np.uint8)  # Occ3D classes (17, free, is no 2D label)
    os.makedirs(tmp_path / "sem" / tok)
    for cam in CAMS:
        Image.fromarray(labels).save(tmp_path / "sem" / tok / f"{cam}.png")
    os.makedirs(tmp_path / "occ" / "scene-0916" / tok)
    shutil.copy(occ3d_label, tmp_path / "occ" / "scene-0916" / tok / "labels.npz")
    export_depth(str(nusc_root), "v1.0-mini", str(tmp_path / "depth"), 80.0, [tok])

    opt = make_opt(nusc_root, val_split=write_split(tmp_path / "s.txt", [tok]), use_sem=True,
                   sem_root=str(tmp_path / "sem"), occ_root=str(tmp_path / "occ"), depth_root=str(tmp_path / "depth"))
    item = NuScenesDataset(opt, "val")[0]
    assert item["sem"].shape == (6, 180, 320) and item["sem"].dtype == torch.int64
    np.testing.assert_array_equal(item["sem"][2].numpy(), np.asarray(Image.fromarray(labels).resize((320, 180),
                                                                                         Image.NEAREST)))
    ref = np.load(occ3d_label)
    for key in ("semantics", "mask_camera", "mask_lidar"):
        assert item["occ_" + key].shape == (200, 200, 16) and item["occ_" + key].dtype == torch.uint8
        np.testing.assert_array_equal(item["occ_" + key].numpy(), ref[key])
    assert item["ray_origins"].shape == (8, 3) and not item["ray_origins"].isnan().all(1).any()  # 8 here
    assert item["depth_gt"].shape == (6, 900, 1600)
    d = np.load(tmp_path / "depth" / tok / "CAM_BACK.npz")
    dense = item["depth_gt"][CAMS.index("CAM_BACK")].numpy()
    assert (dense > 0).sum() == len(d["depth"]) > 1000
    np.testing.assert_array_equal(dense[d["uv"][:, 1], d["uv"][:, 0]], d["depth"])
    # --eval_depth false: no LiDAR depth is read (a split whose depth was never exported evaluates its occupancy)
    shutil.rmtree(tmp_path / "depth" / tok)
    os.makedirs(tmp_path / "depth" / tok)
    item = NuScenesDataset(make_opt(nusc_root, val_split=str(tmp_path / "s.txt"), occ_root=str(tmp_path / "occ"),
                                    depth_root=str(tmp_path / "depth"), eval_depth=False), "val")[0]
    assert "depth_gt" not in item and "occ_semantics" in item


def test_make_split(nusc_root, tokens, tmp_path, capsys):
    from tools.data.make_split import main
    main(["--dataroot", str(nusc_root), "--version", "v1.0-mini", "--out_dir", str(tmp_path)])
    assert "train: 0 samples" in capsys.readouterr().out  # scene-0916 is in the devkit's mini_val
    val = (tmp_path / "v1.0-mini_val.txt").read_text().split("\n")
    assert val[0].startswith("#") and val[1:-1] == tokens
    main(["--dataroot", str(nusc_root), "--version", "v1.0-mini", "--out_dir", str(tmp_path), "--name", "c",
          "--val_fraction", "0.25"])
    ds = NuScenesDataset(make_opt(nusc_root, val_split=str(tmp_path / "c_val.txt")), "val")
    assert [m["token"] for m in ds.samples] == tokens[30:]
    with pytest.raises(ValueError, match="scene-0001"):
        main(["--dataroot", str(nusc_root), "--version", "v1.0-mini", "--scenes", "scene-0001"])


# ---- clear errors on bad input ----

def test_wrong_dataroot(tmp_path, nusc_root):
    with pytest.raises(FileNotFoundError, match="dataroot not found"):
        NuScenesDataset(make_opt(tmp_path / "nope"), "val")
    with pytest.raises(FileNotFoundError, match=r"v1.0-trainval \(versions under .*'v1.0-mini'"):
        NuScenesDataset(make_opt(nusc_root, version="v1.0-trainval"), "val")
    with pytest.raises(FileNotFoundError, match="--depth_root folder not found"):
        NuScenesDataset(make_opt(nusc_root, depth_root="no_depth"), "val")


def test_missing_table_or_field(nusc_root, tmp_path):
    shutil.copytree(nusc_root / "v1.0-mini", tmp_path / "v1.0-mini")
    os.chmod(tmp_path / "v1.0-mini", 0o755)
    os.remove(tmp_path / "v1.0-mini" / "ego_pose.json")
    with pytest.raises(FileNotFoundError, match="table missing: .*ego_pose.json"):
        NuScenesDataset(make_opt(tmp_path), "val")
    shutil.copy(nusc_root / "v1.0-mini" / "ego_pose.json", tmp_path / "v1.0-mini")
    path = tmp_path / "v1.0-mini" / "sample_data.json"
    os.chmod(path, 0o644)
    records = json.loads(path.read_text())
    del records[5]["ego_pose_token"]
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=f"sample_data.json: record {records[5]['token']} has no field "
                                         "'ego_pose_token'"):
        NuScenesDataset(make_opt(tmp_path), "val")


def test_missing_and_corrupt_image(nusc_root, nusc, tokens, tmp_path):
    name = cam_data(nusc, tokens[2], "CAM_FRONT_LEFT")["filename"]
    mirror(nusc_root, tmp_path, drop=[name])
    ds = NuScenesDataset(make_opt(tmp_path), "val")
    with pytest.raises(FileNotFoundError, match="image missing: .*" + re.escape(os.path.basename(name))):
        ds[2]
    (tmp_path / name).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(OSError, match="cannot read image .*" + re.escape(os.path.basename(name))):
        ds[2]
    assert ds[5]["token"] == tokens[5]  # samples that do not use the file still load


def test_truncated_occ3d_labels_name_the_file(nusc_root, tokens, occ3d_label, tmp_path):
    """A labels.npz cut short (an interrupted copy): one message naming the file, also from a DataLoader
    worker (where it used to be a bare BadZipFile traceback)."""
    from utils.errors import UnreadableFile, message
    path = tmp_path / "gts" / "scene-0916" / tokens[0] / "labels.npz"
    path.parent.mkdir(parents=True)
    data = occ3d_label.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = NuScenesDataset(make_opt(nusc_root, occ_root=str(tmp_path / "gts")), "val")
    with pytest.raises(UnreadableFile, match=re.escape(str(path)) + ".*truncated"):
        ds[0]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [0]), num_workers=1, collate_fn=collate)
    with pytest.raises(UnreadableFile) as err:
        next(iter(loader))
    assert message(err.value).startswith(f"cannot read Occ3D labels {path} (BadZipFile")


def test_training_items_leave_out_eval_labels_and_carry_uint8_images(nusc_root, tmp_path):
    from datasets import EVAL_ONLY_KEYS
    from utils.batch import to_device
    (tmp_path / "depth").mkdir()  # exists but empty: reading any depth file would fail
    opt = make_opt(nusc_root, depth_root=str(tmp_path / "depth"))
    val = NuScenesDataset(opt, "val")
    with pytest.raises(FileNotFoundError, match="LiDAR depth missing"):
        val[3]
    train = NuScenesDataset(opt, "val", eval_labels=False, uint8_images=True)
    item = train[3]
    assert not set(EVAL_ONLY_KEYS) & set(item) and item["imgs"].dtype == torch.uint8
    floats = NuScenesDataset(make_opt(nusc_root), "val")[3]["imgs"]
    assert torch.equal(to_device({"imgs": item["imgs"]}, torch.device("cpu"))["imgs"], floats)
