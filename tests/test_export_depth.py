"""tools/data/export_gt_depth_nusc.py on the real fixture, against nuscenes-devkit's map_pointcloud_to_image."""
import os
import re

import numpy as np
import pytest

from tools.data.export_gt_depth_nusc import export_depth, main, project_to_image


@pytest.fixture(scope="module")
def nusc(nusc_root):
    from nuscenes.nuscenes import NuScenes
    return NuScenes("v1.0-mini", str(nusc_root), verbose=False)


@pytest.fixture(scope="module")
def exported(nusc, nusc_root, tmp_path_factory):
    """(sample record, output folder) after exporting one sample."""
    sample = nusc.sample[12]
    out = tmp_path_factory.mktemp("depth")
    assert export_depth(str(nusc_root), "v1.0-mini", str(out), 80.0, [sample["token"]]) == 1
    return sample, out


def devkit_pixels(nusc, sample, cam, max_depth):
    """{(col, row): nearest depth} from the devkit's projection, and the pixels whose rounding is ambiguous
    (a projection within 0.05 px of a pixel border: the devkit rotates float32 points, we use float64)."""
    pts, depth, im = nusc.explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][cam],
                                                           min_dist=0.1)
    ref, ambiguous = {}, set()
    for x, y, z in zip(pts[0], pts[1], depth):
        if z >= max_depth:
            continue
        cols = {int(np.floor(x + 0.45)), int(np.floor(x + 0.55))}
        rows = {int(np.floor(y + 0.45)), int(np.floor(y + 0.55))}
        if len(cols) > 1 or len(rows) > 1:
            ambiguous.update((c, r) for c in cols for r in rows)
        key = (int(np.round(x)), int(np.round(y)))
        ref[key] = min(z, ref.get(key, np.inf))
    return ref, ambiguous, im.size


@pytest.mark.parametrize("cam", ["CAM_FRONT", "CAM_BACK_LEFT"])
def test_matches_devkit(nusc, exported, cam):
    sample, out = exported
    data = np.load(out / sample["token"] / f"{cam}.npz")
    uv, depth, hw = data["uv"], data["depth"], data["hw"]
    assert uv.dtype == np.int32 and uv.shape == (len(depth), 2) and depth.dtype == np.float32
    ref, ambiguous, (w, h) = devkit_pixels(nusc, sample, cam, 80.0)
    assert tuple(hw) == (h, w) == (900, 1600)
    ours = {(int(c), int(r)): z for (c, r), z in zip(uv, depth)}
    assert len(ours) == len(uv) > 1000  # one point per pixel
    assert depth.min() > 0.1 and depth.max() < 80.0
    # the devkit keeps points strictly inside (1, W - 1) x (1, H - 1), we keep every in-image pixel: compare
    # the pixels that border points cannot reach
    interior = [k for k in ref if 2 <= k[0] < w - 2 and 2 <= k[1] < h - 2]
    compared = [k for k in interior if k not in ambiguous]
    assert len(compared) > 0.7 * len(ref)
    for k in compared:
        assert abs(ours[k] - ref[k]) < 1e-3, k
    extra = [k for k in ours if k not in ref and k not in ambiguous]
    assert all(c <= 1 or c >= w - 2 or r <= 1 or r >= h - 2 for c, r in extra)


def test_max_depth_and_idempotence(nusc_root, exported, tmp_path, capsys):
    sample, out = exported
    path = out / sample["token"] / "CAM_FRONT.npz"
    mtime = os.path.getmtime(path)
    assert export_depth(str(nusc_root), "v1.0-mini", str(out), 80.0, [sample["token"]]) == 0
    assert os.path.getmtime(path) == mtime

    split = tmp_path / "split.txt"
    split.write_text(f"# one sample\n{sample['token']}\n")
    main(["--dataroot", str(nusc_root), "--version", "v1.0-mini", "--out", str(tmp_path / "near"),
          "--max_depth", "20", "--split", str(split)])
    assert "wrote depth of 1 samples" in capsys.readouterr().out
    near = np.load(tmp_path / "near" / sample["token"] / "CAM_FRONT.npz")
    full = np.load(path)
    assert near["depth"].max() < 20.0 and (full["depth"] >= 20).sum() > 0
    np.testing.assert_array_equal(np.sort(full["depth"][full["depth"] < 20]), np.sort(near["depth"]))


def test_nearest_point_wins():
    points = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 3.0], [0.001, 0.0, 4.0], [0.0, 0.0, 0.05], [0.0, 0.0, 90.0],
                       [100.0, 0.0, 10.0]])
    K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    uv, depth = project_to_image(points, np.eye(4), K, (80, 100), 80.0)
    np.testing.assert_array_equal(uv, [[50, 40]])
    np.testing.assert_array_equal(depth, [3.0])


def test_missing_and_corrupt_lidar(nusc, nusc_root, tmp_path):
    sample = nusc.sample[3]
    name = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]
    root = tmp_path / "root"
    for dirpath, _, files in os.walk(nusc_root):
        rel = os.path.relpath(dirpath, nusc_root)
        os.makedirs(root / rel, exist_ok=True)
        for f in files:
            if os.path.join(rel, f) != name:
                os.symlink(os.path.join(dirpath, f), root / rel / f)
    with pytest.raises(FileNotFoundError, match="LiDAR file missing: .*" + re.escape(os.path.basename(name))):
        export_depth(str(root), "v1.0-mini", str(tmp_path / "out"), 80.0, [sample["token"]])
    np.zeros(7, np.float32).tofile(root / name)
    with pytest.raises(ValueError, match="not a multiple of 5"):
        export_depth(str(root), "v1.0-mini", str(tmp_path / "out"), 80.0, [sample["token"]])
