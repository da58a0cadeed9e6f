"""tools/diagnostics/gsp_landscape_real.py: the dense depth marched through occupancy labels, and the cross-view error
after brightness matching."""
import numpy as np
import pytest
import torch

from tools.diagnostics.gsp_landscape_real import affine_loss, occupancy_depth
from utils.constants import FREE_ID, OCC3D_LABEL_RANGE
from utils.losses import photometric_error


def _front_camera(h=9, w=15, f=10.0):
    K = torch.tensor([[[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]])
    c2e = torch.eye(4)[None].clone()
    c2e[0, :3, :3] = torch.tensor([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])  # camera z along ego +x, y down
    c2e[0, :3, 3] = torch.tensor([0.0, 0.0, 1.5])
    return K, c2e


def test_occupancy_depth_finds_the_front_face_of_a_wall():
    labels = np.full((200, 200, 16), FREE_ID, np.uint8)
    labels[125:, :, :] = 15  # voxels from x = -40 + 0.4 * 125 = 10 m on: a wall 10 m ahead
    K, c2e = _front_camera()
    d = occupancy_depth(labels, K, c2e, (9, 15), step=0.02)
    assert d.shape == (1, 9, 15)
    assert abs(float(d[0, 4, 7]) - 10.0) < 0.03  # the centre pixel: camera z = distance to the face
    assert torch.all((d[0, :5] - 10.0).abs() < 0.05)  # a plane facing the camera: the same z in every pixel ...
    assert torch.all(d[0, 7:] == 0)  # ... whose ray meets it inside the grid; lower rays leave it below the road
    labels[:] = FREE_ID
    assert torch.all(occupancy_depth(labels, K, c2e, (9, 15)) == 0)  # nothing met: no depth
    assert OCC3D_LABEL_RANGE[2] == -0.2  # the grid the labels of make_occ_gt_nusc.py use


def test_affine_loss_ignores_a_camera_pair_brightness_difference():
    g = torch.Generator().manual_seed(0)
    render = torch.rand(2, 2, 3, 16, 16, generator=g)
    target = 0.6 * render + 0.3  # another exposure, the same picture
    mask = torch.ones(2, 2, 1, 16, 16)
    plain = float(photometric_error(render.flatten(0, 1), target.flatten(0, 1)).mean())
    assert plain > 0.04 and affine_loss(render, target, mask) < 1e-3
    other = torch.rand(2, 2, 3, 16, 16, generator=g)  # a different picture stays different
    assert affine_loss(other, target, mask) > 0.05


def test_lidar_depth_keeps_the_nearest_point_of_each_pixel_and_the_check_reads_ratios():
    from tools.diagnostics.gsp_landscape_real import lidar_check, lidar_depth
    lidar = torch.zeros(1, 8, 8)
    lidar[0, 0, 0], lidar[0, 0, 1], lidar[0, 5, 6] = 10.0, 7.0, 20.0  # two points on pixel (0, 0) of a 4 x 4 grid
    d = lidar_depth(lidar, (4, 4))
    assert float(d[0, 0, 0]) == 7.0 and float(d[0, 2, 3]) == 20.0 and int((d > 0).sum()) == 2
    chk = lidar_check(torch.full((1, 4, 4), 8.0), lidar, (4, 4))
    assert chk["lidar_points"] == 3 and abs(chk["median_ratio"] - 8.0 / 10.0) < 1e-6


def test_model_depth_is_the_stage_1_depth_at_the_landscape_size():
    """--depth_source model: a stage-1 model's depth of the current frame, predicted at the model's input size and
    resized through the inverse depth; at the model's own size it is predict_depth itself."""
    from networks.gsp_model import GSPModel
    from options import parse_args
    from tools.diagnostics.gsp_landscape_real import model_depth
    torch.manual_seed(0)
    model = GSPModel(parse_args(["--stage", "gsp", "--gsp_pretrained", "false", "--raster_backend", "torch",
                                 "--input_size", "64", "96"])).eval()
    imgs = torch.rand(3, 6, 3, 90, 160)
    d = model_depth(model, imgs, (45, 80))
    assert d.shape == (6, 45, 80) and bool((d > 0).all()) and bool(torch.isfinite(d).all())
    same = model_depth(model, torch.nn.functional.interpolate(imgs.flatten(0, 1), (64, 96)).unflatten(0, (3, 6)),
                       (64, 96))
    ref = model.predict_depth({"imgs": torch.nn.functional.interpolate(imgs.flatten(0, 1), (64, 96))
                               .unflatten(0, (3, 6))[None]})[0]
    torch.testing.assert_close(same, ref, rtol=1e-4, atol=1e-4)
    assert float((d.mean() / ref.mean() - 1).abs()) < 0.5  # the same depth, resized


def test_model_source_and_ckpt_go_together():
    from tools.diagnostics.gsp_landscape_real import main
    with pytest.raises(SystemExit):
        main(["--dataroot", "nowhere", "--depth_source", "model"])
    with pytest.raises(SystemExit):
        main(["--dataroot", "nowhere", "--ckpt", "x.pt"])


def test_photo_evidence_finds_the_depth_of_a_textured_wall():
    """tools/diagnostics/photo_evidence_real.pixel_scale_argmin: a textured wall 10 m ahead, seen from 1 m further
    back in the source: every pixel's photometric error is smallest at s = 1 (the depth it was made with), and
    summarise reads the spread."""
    import torch.nn.functional as F
    from tools.diagnostics.photo_evidence_real import SCALES, pixel_scale_argmin, summarise
    from utils.geometry import warp
    g = torch.Generator().manual_seed(0)
    h, w = 24, 40
    K = torch.tensor([[[30.0, 0, (w - 1) / 2], [0, 30.0, (h - 1) / 2], [0, 0, 1.0]]])
    source = F.interpolate(torch.rand(1, 3, 12, 20, generator=g), (h, w), mode="bilinear", align_corners=False)
    depth = torch.full((1, 1, h, w), 10.0)
    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = 1.0  # target camera -> source camera: the source stands 1 m behind
    target, _ = warp(source, depth, K, T)
    s_star, valid = pixel_scale_argmin(target, [source], depth, K, [T])
    assert s_star.shape == valid.shape == (1, h, w) and valid.float().mean() > 0.5
    st = summarise(s_star[valid].numpy())
    assert st["median_s"] == pytest.approx(1.0) and st["within_5pct"] > 0.9 and st["at_grid_end"] < 0.05
    assert 1.0 in [round(s, 6) for s in SCALES]
    assert summarise(np.array([]))["points"] == 0


def test_ground_plane_depth_of_road_points_is_their_depth():
    """tools/diagnostics/ground_plane_real: LiDAR points on a flat road 1.5 m below a forward camera have ego height 0
    and the plane z = 0 gives each its own camera depth; a point on a wall above the road does not match."""
    from tools.diagnostics.ground_plane_real import ego_heights, plane_depth_at
    K, c2e = _front_camera(h=90, w=150, f=100.0)
    vv = torch.tensor([60, 70, 85, 20])  # rows below the horizon (row 44.5) ... and one above it
    uu = torch.tensor([75, 30, 120, 75])
    ray_down = (vv.double() - (90 - 1) / 2) / 100.0  # camera y per unit depth (y down): height drop per metre
    z = torch.where(vv > 45, 1.5 / ray_down, torch.full_like(ray_down, 12.0)).float()  # road: z * y = 1.5 m below
    h, plane = ego_heights(z, vv, uu, K[0], c2e[0]), plane_depth_at(vv, uu, K[0], c2e[0], (90, 150), ground_z=0.0)
    assert torch.allclose(h[:3], torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(plane[:3], z[:3].double(), rtol=1e-6)
    assert float(h[3]) > 1.5 and torch.isinf(plane[3])  # above the horizon: the ray never meets the road
