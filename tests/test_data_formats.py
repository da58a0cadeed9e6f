"""Data a user of the original release already has: Grounded-SAM ``*_mask.bin`` pseudo-labels (reader and PNG
converter) and the train split rule behind their nuScenes lists (tools/data/make_split.py --train_min_motion)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.nuscenes_dataset import NuScenesDataset
from datasets.pseudo_labels import GSAM_TO_OCC, read_gsam_bin, read_png_label, resize_labels
from tests.test_nuscenes_dataset import make_opt
from utils.constants import CAMS, OCC_CLASSES, SKY_ID
from utils.errors import BadData


def test_gsam_ids_map_to_occ3d_classes_as_the_release(tmp_path):
    # Grounded-SAM ids 0..16 -> Occ3D: nothing -> others, sedan -> car, ..., sky -> SKY_ID (254) here
    expected = ["others", "car", "driveable_surface", "bus", "truck", "terrain", "vegetation", "sidewalk", "bicycle",
                "barrier", "pedestrian", "manmade", "motorcycle", "construction_vehicle", "trailer", "traffic_cone"]
    assert [OCC_CLASSES[c] for c in GSAM_TO_OCC[:16]] == expected and GSAM_TO_OCC[16] == SKY_ID == 254
    ids = np.arange(17 * 3, dtype=np.int8).reshape(3, 17) % 17
    path = tmp_path / "x_mask.bin"
    ids.tofile(path)
    labels = read_gsam_bin(path, (3, 17))
    assert labels.dtype == np.uint8 and labels[1, 1] == OCC_CLASSES.index("car") and (labels[:, 16] == SKY_ID).all()
    with pytest.raises(ValueError, match=r"51 bytes, expected 4 x 17 = 68"):
        read_gsam_bin(path, (4, 17))
    np.array([1, -3, 40], np.int8).tofile(path)
    with pytest.raises(ValueError, match=r"ids outside 0..16: \[-3, 40\]"):
        read_gsam_bin(path, (1, 3))
    with pytest.raises(FileNotFoundError, match="Grounded-SAM label missing"):
        read_gsam_bin(tmp_path / "none_mask.bin", (1, 3))
    small = resize_labels(np.array([[1, 2], [3, 4]], np.uint8), (4, 4))
    assert small.dtype == torch.int64 and small[3, 0] == 3 and small[0, 3] == 2


def _write_gsam_sample(nusc_root, tmp_path, token):
    """The release's files for the 6 cameras of ``token``: <tmp>/nuscenes_semantic/samples/CAM_X/<name>_mask.bin
    at 900 x 1600, camera c painted with Grounded-SAM id c + 1 above row 450 and 2 (highway) below, sky at the top."""
    from nuscenes.nuscenes import NuScenes
    nusc = NuScenes("v1.0-mini", str(nusc_root), verbose=False)
    for c, cam in enumerate(CAMS):
        sd = nusc.get("sample_data", nusc.get("sample", token)["data"][cam])
        ids = np.full((900, 1600), c + 1, np.int8)
        ids[450:] = 2
        ids[:100] = 16
        path = tmp_path / "nuscenes_semantic" / (sd["filename"][:-4] + "_mask.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        ids.tofile(path)


def test_dataset_reads_gsam_files_and_the_converter_gives_the_same_pngs(nusc_root, tmp_path):
    from tools.data.convert_gsam_labels import convert
    ds0 = NuScenesDataset(make_opt(nusc_root), "val")
    token = ds0.samples[3]["token"]
    _write_gsam_sample(nusc_root, tmp_path, token)
    opt = make_opt(nusc_root, use_sem=True, sem_format="gsam_bin", sem_root=str(tmp_path / "nuscenes_semantic"))
    ds = NuScenesDataset(opt, "val")
    sem = ds[3]["sem"]
    assert sem.shape == (6, 180, 320) and sem.dtype == torch.int64
    for c in range(6):
        top, sky = sem[c, 50], sem[c, 5]  # render rows are original rows / 5
        assert (top == GSAM_TO_OCC[c + 1]).all() and (sem[c, 150] == OCC_CLASSES.index("driveable_surface")).all()
        assert (sky == SKY_ID).all()
    split = tmp_path / "one.txt"
    split.write_text(token + "\n")
    assert convert(str(nusc_root), "v1.0-mini", str(tmp_path / "nuscenes_semantic"), str(tmp_path / "png"),
                   str(split)) == 6
    png = NuScenesDataset(make_opt(nusc_root, use_sem=True, sem_root=str(tmp_path / "png")), "val")
    assert torch.equal(png[3]["sem"], sem)
    with pytest.raises(FileNotFoundError, match="Grounded-SAM label missing: .*_mask.bin"):
        ds[4]


def test_train_min_motion_drops_static_samples(nusc_root, tmp_path, capsys):
    """scene-0916 made into a train scene; the kept samples against the ego poses read with nuscenes-devkit."""
    from nuscenes.nuscenes import NuScenes
    from tools.data.make_split import drop_static, main
    from datasets.nuscenes_dataset import load_tables, scene_samples
    nusc = NuScenes("v1.0-mini", str(nusc_root), verbose=False)
    tables = load_tables(str(nusc_root), "v1.0-mini")
    tokens = [t for t, _ in scene_samples(tables)]

    def moved(token):
        sd = nusc.get("sample_data", nusc.get("sample", token)["data"]["CAM_FRONT"])
        here = np.array(nusc.get("ego_pose", sd["ego_pose_token"])["translation"])
        return min(np.linalg.norm(here - nusc.get("ego_pose", nusc.get("sample_data", sd[d])["ego_pose_token"])
                                  ["translation"]) if sd[d] else 0.0 for d in ("prev", "next"))

    for threshold in (0.1, 1.8):
        kept = drop_static(tables, tokens, threshold)
        assert kept == [t for t in tokens if moved(t) >= threshold]
    assert drop_static(tables, tokens, 0.1) == tokens[1:-1]  # only the ends, which lack a neighbour
    assert 3 < len(tokens) - len(drop_static(tables, tokens, 1.8)) < 20
    (tmp_path / "tables").mkdir()
    for f in (nusc_root / "v1.0-mini").iterdir():
        (tmp_path / "tables" / f.name).symlink_to(f)
    (tmp_path / "tables" / "splits.json").write_text('{"train": ["scene-0916"], "val": []}')
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "v1.0-x").symlink_to(tmp_path / "tables")
    main(["--dataroot", str(tmp_path / "root"), "--version", "v1.0-x", "--out_dir", str(tmp_path),
          "--train_min_motion", "0.1"])
    assert "train: 2 static samples dropped" in capsys.readouterr().out
    assert (tmp_path / "v1.0-x_train.txt").read_text().split("\n")[1:-1] == tokens[1:-1]


def test_ddad_gsam_files_in_the_release_layout(ddad_root, tmp_path):
    """DDAD: <sem_root>/<scene>/<CAMERA_xx>/<image name>_mask.bin at the original image size."""
    import warnings
    from datasets.ddad_dataset import DDAD_CAMS, DDADDataset
    from tests.test_ddad import make_opt as ddad_opt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = DDADDataset(ddad_opt(ddad_root, "--use_sem", "true", "--sem_format", "gsam_bin", "--sem_root",
                                  str(tmp_path)), "val")
    m = ds.samples[0]
    for c, cam in enumerate(DDAD_CAMS):
        path = ds._gsam_file(m, c)
        name = m["cur"][0][c].replace("\\", "/").split("/")[-1].rsplit(".", 1)[0]
        assert path == str(tmp_path / m["scene"] / cam / (name + "_mask.bin"))
        with Image.open(ddad_root / m["cur"][0][c]) as img:
            w, h = img.size
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.full((h, w), 6, np.int8).tofile(path)
    assert (ds[0]["sem"] == OCC_CLASSES.index("vegetation")).all()  # tree -> vegetation


def test_png_labels_with_ids_outside_the_classes_are_refused_naming_the_file(tmp_path):
    """A PNG label may hold Occ3D classes 0..16, sky and ignore; any other id is an error that names the file (the
    cross-entropy on the GPU no longer checks: that would wait for the GPU every step)."""
    ok = np.array([[0, 16, 254, 255]], np.uint8)
    Image.fromarray(ok).save(tmp_path / "ok.png")
    assert np.array_equal(read_png_label(str(tmp_path / "ok.png")), ok)
    Image.fromarray(np.array([[0, 17, 40, 255]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(BadData, match=r"bad\.png: ids \[17, 40\]"):
        read_png_label(str(tmp_path / "bad.png"))
    assert read_png_label(str(tmp_path / "bad.png"), extra_ids=(17, 40, 255)).shape == (1, 4)  # e.g. --sky_id 17
