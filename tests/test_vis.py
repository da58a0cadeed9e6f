"""Pictures: colour maps, mosaics, BEV and 3D occupancy views, the visualize tool and the video writer."""
import time

import cv2
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

import options
from gen_scene_video import make_videos
from utils.constants import CAMS, FREE_ID, OCC3D_SHAPE, OCC_COLORS
from utils.vis import (bev_image, chase_camera, compose, depth_to_color, logits_to_color, mosaic, render_voxels,
                       semantic_to_color)

CAR, PED, ROAD = 4, 7, 11


def free_grid():
    return np.full(OCC3D_SHAPE, FREE_ID, np.uint8)


def test_depth_colours_inverse_depth():
    depth = np.array([[0.0, 2.0, 10.0, 50.0]], np.float32)
    rgb = depth_to_color(depth)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all()  # no depth: black
    brightness = rgb[0, 1:].astype(int).sum(1)
    assert brightness[0] > brightness[1] > brightness[2]  # near is bright
    assert (depth_to_color(torch.zeros(3, 5)) == 0).all()


def test_semantic_colours():
    labels = np.array([[CAR, PED], [FREE_ID, 255]])
    rgb = semantic_to_color(labels)
    assert tuple(rgb[0, 0]) == OCC_COLORS[CAR] and tuple(rgb[0, 1]) == OCC_COLORS[PED]
    assert tuple(rgb[1, 0]) == (255, 255, 255) and tuple(rgb[1, 1]) == (0, 0, 0)
    logits = torch.zeros(17, 2, 3)
    logits[ROAD] = 5.0
    logits[CAR, 0, 0] = 9.0
    out = logits_to_color(logits, alpha=torch.tensor([[1.0, 1, 1], [1, 1, 0.1]]))
    assert tuple(out[0, 0]) == OCC_COLORS[CAR] and tuple(out[1, 1]) == OCC_COLORS[ROAD] and (out[1, 2] == 0).all()


def test_mosaic_layout():
    images = [np.full((4, 6, 3), 10 * i, np.uint8) for i in range(6)]
    m = mosaic(images)
    assert m.shape == (8, 18, 3)
    # FRONT_LEFT FRONT FRONT_RIGHT / BACK_LEFT BACK BACK_RIGHT
    expected = [["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"], ["CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]]
    for r, row in enumerate(expected):
        for c, name in enumerate(row):
            assert m[r * 4 + 2, c * 6 + 3, 0] == 10 * CAMS.index(name)
    float_chw = [torch.full((3, 4, 6), 1.0) for _ in range(6)]
    assert (mosaic(float_chw) == 255).all()
    with pytest.raises(ValueError, match="6 images"):
        mosaic(images[:5])


def test_bev_of_hand_made_grid():
    occ = free_grid()
    occ[:, :, 0] = ROAD
    occ[150, 100, 0:5] = CAR  # 20 m ahead, on the axis: the car is above the road
    occ[100, 180, 2] = PED  # 32 m to the left
    bev = bev_image(occ)
    assert bev.shape == (200, 200, 3)
    assert tuple(bev[199 - 150, 199 - 100]) == OCC_COLORS[CAR]  # forward is up
    assert tuple(bev[99, 199 - 180]) == OCC_COLORS[PED]  # left is left
    assert tuple(bev[10, 10]) == OCC_COLORS[ROAD]
    assert (bev_image(free_grid()) == bev_image(free_grid())[0, 0]).all()


def test_voxel_view_single_voxel_and_empty():
    K, view = chase_camera(320, 180)
    empty = render_voxels(free_grid(), 320, 180, ego_box=False)
    assert (empty == empty[0, 0]).all()
    occ = free_grid()
    occ[120, 100, 3] = PED  # centre (8.2, 0.2, 1.2) m in the ego frame (label voxel k at z = 0.4 k)
    img = render_voxels(occ, 320, 180, ego_box=False)
    centre = view[:3, :3] @ np.array([8.2, 0.2, 1.2]) + view[:3, 3]
    u, v = (K @ centre)[:2] / centre[2]
    drawn = np.argwhere((img != empty).any(2))
    assert len(drawn) > 4
    assert np.abs(drawn.mean(0) - [v, u]).max() < 3  # drawn around the projected centre
    r, g, b = img[int(round(v)), int(round(u))].astype(int)
    assert r > 100 and g < 30 and b < 30  # pedestrian red, shaded


def test_voxel_view_speed():
    rng = np.random.default_rng(0)
    occ = free_grid()
    occ[:, :, 0] = ROAD
    occ[rng.random(OCC3D_SHAPE) < 0.02] = CAR
    start = time.perf_counter()
    img = render_voxels(occ)
    assert img.shape == (360, 640, 3)
    assert time.perf_counter() - start < 4.0  # ~0.5 s unloaded; generous for a busy CI machine


def test_compose_sizes():
    a = np.zeros((10, 30, 3), np.uint8)
    b = np.zeros((20, 20, 3), np.uint8)
    out = compose([[a], [b, b]], pad=2)
    assert out.shape[1] == 30 and out.dtype == np.uint8


def test_video_round_trip(tmp_path):
    scene = tmp_path / "scene-x"
    scene.mkdir()
    for i in range(5):
        imageio.imwrite(scene / f"{i:04d}_frame.png", np.full((61, 81, 3), 40 * i, np.uint8))
    mp4, gif = make_videos(str(scene), fps=5)
    cap = cv2.VideoCapture(mp4)
    frames = []
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        frames.append(fr)
    assert len(frames) == 5 and frames[0].shape == (60, 80, 3)
    assert abs(int(frames[3].mean()) - 120) < 6  # right order and colour
    assert len(imageio.mimread(gif)) == 5
    with pytest.raises(FileNotFoundError, match="_occ.png"):
        make_videos(str(scene), sem_only=True)


def test_visualize_tool_with_checkpoint(nusc_root, tmp_path):
    """A random stage-2 model on the real nuScenes fixture: every picture is written, of the right size."""
    from networks.gsv_model import GSVModel
    from tools.visualize import main

    opt = options.parse_args(["--stage", "gsv", "--pose", "gt", "--grid_size", "20", "20", "4",
                              "--encoder_layers", "18", "--num_classes", "17", "--input_size", "32", "64",
                              "--render_size", "24", "40", "--raster_backend", "torch", "--feat_dim", "8",
                              "--voxel_feat_dim", "8", "--decoder_blocks", "1", "--encoder_weights", "none"])
    ckpt = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save({"model": GSVModel(opt).state_dict(), "opt": vars(opt)}, ckpt)
    main(["--ckpt", str(ckpt), "--dataroot", str(nusc_root), "--version", "v1.0-mini", "--max_frames", "1",
          "--view_size", "90", "160", "--out_dir", str(tmp_path / "vis"), "--scenes", "scene-0916"])
    out = tmp_path / "vis" / "scene-0916"
    shapes = {p.name: imageio.imread(p).shape for p in out.iterdir()}
    assert shapes["0000_inputs.png"] == shapes["0000_depth.png"] == shapes["0000_sem.png"] == (48, 120, 3)
    assert shapes["0000_occ.png"] == (90, 160, 3) and shapes["0000_frame.png"][1] == 120


def test_visualize_gt_only(nusc_root, occ3d_label, tmp_path):
    """--gt_only: no checkpoint, the inputs and the 3D view of the Occ3D labels (a real label file stands in for
    the first sample's)."""
    from datasets import build_dataset
    from tools.visualize import main

    argv = ["--dataroot", str(nusc_root), "--version", "v1.0-mini", "--input_size", "36", "64",
            "--render_size", "18", "32"]
    first = build_dataset(options.parse_args(argv), "val").samples[0]
    label = tmp_path / "gts" / first["scene"] / first["token"] / "labels.npz"
    label.parent.mkdir(parents=True)
    label.symlink_to(occ3d_label)
    main(["--gt_only", *argv, "--occ_root", str(tmp_path / "gts"), "--max_frames", "1", "--view_size", "90", "160",
          "--out_dir", str(tmp_path / "vis")])
    out = tmp_path / "vis" / first["scene"]
    assert sorted(p.name for p in out.iterdir()) == ["0000_frame.png", "0000_inputs.png", "0000_occ_gt.png"]
    view = imageio.imread(out / "0000_occ_gt.png")
    near_road = np.abs(view.astype(int) - OCC_COLORS[ROAD]).max(2) < 90  # magenta road, shaded and outlined
    road = near_road.mean()
    assert view.shape == (90, 160, 3) and road > 0.05
