"""DDAD loader and LiDAR depth export on the real DGP scene fixture (skipped when absent)."""
import os
import shutil

import numpy as np
import pytest
from scipy.spatial import cKDTree

import options
from datasets.ddad_dataset import DDAD_CAMS, LIDAR, DDADDataset, load_scene, split_scene_files
from tools.data.export_gt_depth_ddad import export_depth, lidar_to_camera, load_lidar

INPUT = ["96", "160"]
RENDER = ["48", "80"]


def make_opt(root, *extra):
    return options.parse_args(["--dataset", "ddad", "--dataroot", str(root), "--input_size", *INPUT,
                               "--render_size", *RENDER, *extra])


@pytest.fixture(scope="module")
def scene(ddad_root):
    return load_scene(split_scene_files(str(ddad_root / "scene_dataset_v1.0.json"), "val")[1])


@pytest.fixture(scope="module")
def depth_dir(ddad_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddad_depth")
    with pytest.warns(match="scene_01"):
        assert export_depth(str(ddad_root), str(out), splits=["val"]) == 3
    return out


def test_items_shapes_and_values(ddad_root, depth_dir):
    with pytest.warns(UserWarning, match=r"scene_01 skipped.*CAMERA_08, CAMERA_09, CAMERA_07"):
        train = DDADDataset(make_opt(ddad_root), "train")
    assert len(train) == 1  # 3 frames, only the middle one has both neighbours
    with pytest.warns(UserWarning):
        val = DDADDataset(make_opt(ddad_root, "--depth_root", str(depth_dir)), "val")
    assert len(val) == 3 and [m["token"] for m in val.samples] == [f"scene_02_000{i}" for i in range(3)]
    item = val[0]
    assert item["imgs"].shape == (3, 6, 3, 96, 160) and 0 <= item["imgs"].min() and item["imgs"].max() <= 1
    # no previous frame: the current one stands in; the next one differs
    assert (item["imgs"][0] == item["imgs"][1]).all() and not (item["imgs"][2] == item["imgs"][1]).all()
    assert item["K"].shape == (6, 3, 3) and item["cam2ego"].shape == (6, 4, 4)
    assert item["ego2global"].shape == (3, 6, 4, 4) and item["depth_gt"].shape == (6, 1216, 1936)
    # CAMERA_01 intrinsics (fx 2181.53, cy 615.96 at 1936 x 1216) rescaled to the input size, pixel centres at
    # integer coordinates
    assert item["K"][0, 0, 0].item() == pytest.approx(2181.530254 * 160 / 1936, rel=1e-5)
    assert item["K"][0, 1, 2].item() == pytest.approx((615.956788 + 0.5) * 96 / 1216 - 0.5, rel=1e-5)
    # ego poses of one frame agree across cameras (same car, timestamps a few ms apart)
    t = item["ego2global"][1, :, :3, 3]
    assert (t - t[0]).norm(dim=1).max() < 0.05
    # one timestamp per sample: no capture-time offsets
    assert (item["cam_time"].numpy() == 0).all() and item["cam_time"].shape == (3, 6)
    # masks: CAMERA_01 sees everything, the others lose part of the image to the car body
    mask = item["mask"]
    assert mask.shape == (6, 48, 80) and mask[0].min() == 1
    assert all(0.6 < mask[i].mean() < 0.97 for i in range(1, 6))


def test_ring_order_from_extrinsics(scene):
    """Optical axes turn clockwise (decreasing yaw) around the ring, starting near straight ahead."""
    yaws = []
    for cam in DDAD_CAMS:
        axis = scene["calib"][cam][1][:3, 2]
        yaws.append(np.degrees(np.arctan2(axis[1], axis[0])))
    unwrapped = np.degrees(np.unwrap(np.radians(yaws)))
    assert abs(unwrapped[0]) < 10
    assert (np.diff(unwrapped) < -30).all() and unwrapped[0] - unwrapped[-1] < 360
    # OpenCV camera frame: image x points right (-y of the car), image y down (-z) for the front camera
    R = scene["calib"]["CAMERA_01"][1][:3, :3]
    assert R[1, 0] < -0.99 and R[2, 1] < -0.99


def test_lidar_depth_lands_on_pixels_and_backprojects(scene, depth_dir):
    frame = scene["frames"][1]
    tree = cKDTree(load_lidar(frame[LIDAR]["file"]))
    for cam, ring in zip(DDAD_CAMS, ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                                     "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]):
        z = np.load(depth_dir / "scene_02_0001" / f"{ring}.npz")
        uv, depth, hw = z["uv"], z["depth"], z["hw"]
        assert tuple(hw) == (1216, 1936) and len(depth) > 3000
        assert (depth > 0.1).all() and (depth < 200).all()
        assert (uv >= 0).all() and (uv[:, 0] < 1936).all() and (uv[:, 1] < 1216).all()
        assert len(np.unique(uv[:, 1] * 1936 + uv[:, 0])) == len(uv)  # one point per pixel
        # back-project each pixel at its depth into the LIDAR frame: a LiDAR point lies within the pixel
        K = scene["calib"][cam][0]
        cam_pts = np.linalg.inv(K) @ np.vstack([uv.T, np.ones(len(uv))]) * depth
        T = np.linalg.inv(lidar_to_camera(frame, cam))
        back = (T[:3, :3] @ cam_pts).T + T[:3, 3]
        dist, _ = tree.query(back)
        tol = 0.71 * depth / K[0, 0] + 1e-4  # half a pixel diagonal at that depth
        assert (dist <= tol).all(), cam


def _copy_fixture(src, dst):
    """Symlinked copy of the fixture, so tests can delete single files."""
    for dirpath, _, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        os.makedirs(dst / rel, exist_ok=True)
        for f in files:
            os.symlink(os.path.join(dirpath, f), dst / rel / f)
    return dst


@pytest.mark.filterwarnings("ignore:DDAD")
def test_clear_errors(ddad_root, tmp_path):
    root = _copy_fixture(ddad_root, tmp_path / "ddad")
    image = next((root / "scene_02" / "rgb" / "CAMERA_09").iterdir())
    image.unlink()
    with pytest.warns(UserWarning):
        ds = DDADDataset(make_opt(root), "val")
    with pytest.raises(FileNotFoundError, match=str(image.name)):
        ds[1]  # uses all three frames
    calib = next((root / "scene_02" / "calibration").iterdir())
    calib.unlink()
    with pytest.raises(FileNotFoundError, match=r"calibration of scene scene_02.*" + calib.stem):
        DDADDataset(make_opt(root), "val")
    shutil.rmtree(root / "scene_01")
    with pytest.raises(FileNotFoundError, match=r"scene JSON not found.*scene_01"):
        DDADDataset(make_opt(root), "val")
    (root / "scene_dataset_v1.0.json").unlink()
    with pytest.raises(FileNotFoundError, match="no dataset JSON"):
        DDADDataset(make_opt(root), "val")


def test_options_it_cannot_serve_are_refused_by_name(ddad_root):
    with pytest.raises(Exception, match="--near_stride"):
        DDADDataset(make_opt(ddad_root, "--near_stride", "1", "--frame_stride", "2"), "val")
    with pytest.raises(Exception, match="--w_extra_sem"):
        DDADDataset(make_opt(ddad_root, "--use_sem", "true", "--w_extra_views", "1", "--w_extra_sem", "0.1"), "val")
