"""Stage 2 (GSV): OccNet, lifting, voxel Gaussians, occupancy read-out and the training step, on tiny configs."""
import math

import numpy as np
import pytest
import torch

from networks import build_model
from networks.gsv_loss import GSVLoss
from networks.gsv_model import GSVModel, logits_to_occ3d, occ3d_centres
from networks.occ_net import OccNet, VoxelGrid, lift_features, voxel_geometry
from networks.resnet_encoder import ResnetEncoder
from networks.voxel_gaussians import MIN_OPACITY, voxels_to_gaussians
from options import parse_args
from rebuild import load_stage1
from utils.constants import FREE_ID, OCC3D_SHAPE
from utils.errors import ConfigError
from utils.geometry import inverse_rigid
from utils.rasterizer import rasterize
from utils.vis import training_pictures

# This project's network (the defaults are the authors', tested in tests/test_authors_options.py): 2.5x faster.
OURS_NET = ["--encoder_weights", "none", "--image_neck", "fpn", "--feat_stride", "8", "--lift_visibility", "true",
            "--occ_decoder", "residual", "--contracted", "false", "--sem_class_weights", "none"]
TINY = ["--stage", "gsv", "--pose", "gt", "--encoder_layers", "18", "--grid_size", "24", "24", "6",
        "--feat_dim", "16", "--voxel_feat_dim", "8", "--decoder_blocks", "1", "--input_size", "64", "112",
        "--render_size", "32", "56", "--raster_backend", "torch", "--use_sem", "true", *OURS_NET]


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def tiny_opt(*extra):
    return parse_args(TINY + list(extra))


def ring_rig(H=64, W=112, f=50.0):
    """K (1, 6, 3, 3) and cam2ego (1, 6, 4, 4): 6 cameras 1 m out from the ego origin at 1.5 m height, each
    looking outwards along its own yaw (0, -60, ..., -300 degrees: FRONT, FRONT_RIGHT, ... in ring order)."""
    K = torch.tensor([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    cams = []
    for i in range(6):
        yaw = -i * math.pi / 3
        fwd = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
        T = torch.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = right, torch.tensor([0.0, 0.0, -1.0]), fwd
        T[:3, 3] = fwd + torch.tensor([0.0, 0.0, 1.5])
        cams.append(T)
    return K.expand(1, 6, 3, 3).clone(), torch.stack(cams)[None]


def make_batch(H=64, W=112, h=32, w=56, seed=0):
    """One sample: textured current images, prev = next = current, identity ego poses, 2D labels: one class
    per camera above the horizon, driveable surface (11) below."""
    g = torch.Generator().manual_seed(seed)
    K, cam2ego = ring_rig(H, W)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = torch.stack([torch.sin(20 * xx) * 0.5 + 0.5, torch.cos(14 * yy) * 0.5 + 0.5, xx * yy])
    cur = (base + 0.2 * torch.rand(6, 3, H, W, generator=g)).clamp(0, 1)
    sem = torch.arange(6).view(1, 6, 1, 1).repeat(1, 1, h, w)
    sem[:, :, h // 2:] = 11
    return {"imgs": cur[None, None].expand(1, 3, 6, 3, H, W).clone(), "K": K, "cam2ego": cam2ego,
            "ego2global": torch.eye(4).expand(1, 3, 6, 4, 4).clone(), "sem": sem}


def test_occnet_output_shapes():
    torch.manual_seed(0)
    opt = tiny_opt("--gs_scale_learn", "true")
    batch = make_batch()
    out = OccNet(opt)(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
    assert out["logits"].shape == (1, 18, 24, 24, 6)
    assert out["scale"].shape == (1, 1, 24, 24, 6)
    assert OccNet(tiny_opt("--use_sem", "false"))(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])[
        "logits"].shape == (1, 2, 24, 24, 6)


def test_resnet_encoder_loads_local_weights(tmp_path):
    from torchvision.models import resnet18
    ref = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = ResnetEncoder(18, str(path), num_input_images=2)
    assert torch.allclose(enc.net.conv1.weight, ref.conv1.weight.repeat(1, 2, 1, 1) / 2)
    assert torch.equal(enc.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        ResnetEncoder(18, str(tmp_path / "missing.pth"))


def test_imagenet_if_present_uses_the_file_when_found_and_a_random_init_otherwise(tmp_path, monkeypatch, capsys):
    import networks.occ_net as occ_net_mod
    import networks.resnet_encoder as enc_mod
    from torchvision.models import resnet18
    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    opt = tiny_opt("--encoder_weights", "imagenet_if_present")

    def missing(n):
        raise FileNotFoundError(f"no ResNet-{n}")

    monkeypatch.setattr(enc_mod, "find_weights", missing)
    assert occ_net_mod.encoder_weights(opt) is None
    assert "random init" in capsys.readouterr().out
    monkeypatch.setattr(enc_mod, "find_weights", lambda n: str(tmp_path / "r18.pth"))
    assert occ_net_mod.encoder_weights(opt) == str(tmp_path / "r18.pth")
    net = OccNet(opt)
    assert torch.equal(net.encoder.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_lifting_samples_where_the_camera_looks():
    K, cam2ego = ring_rig()
    stride = 8
    h, w = 64 // stride, 112 // stride
    # channel 0 = feature-map column, channel 1 = feature-map row, in every camera
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    feats = torch.stack([u, v])[None, None].expand(1, 6, 2, h, w).contiguous()
    # 10 m ahead of the FRONT camera, 1 m to its right, 0.5 m up; the ego origin (behind every camera)
    pts = torch.tensor([[11.0, -1.0, 2.0], [0.0, 0.0, 1.5]])
    out = lift_features(feats, K, cam2ego, pts, (64, 112))
    u_img, v_img = 50 * 1.0 / 10 + 55.5, 50 * -0.5 / 10 + 31.5  # FRONT camera: x right = -y ego, y down = -z
    expect = torch.tensor([(u_img + 0.5) / stride - 0.5, (v_img + 0.5) / stride - 0.5])
    assert out[0, 2, 0] == pytest.approx(1 / 6)  # seen by FRONT only: outside its neighbours' images
    assert torch.allclose(out[0, :2, 0], expect, atol=1e-4)
    assert out[0, 2, 1] == 0 and torch.all(out[0, :2, 1] == 0)


def test_voxel_geometry_gives_the_depth_along_the_ray_and_the_depth_bin_probability():
    K, cam2ego = ring_rig()
    lo, hi, D = 1.0, 64.0, 6  # bins centred at 2^(0.5 + k) m
    # on the FRONT camera's axis (camera at x = 1 m) at 2^1.5 and 2^3.5 m; behind every camera (the ego origin)
    pts = torch.tensor([[1 + 2 ** 1.5, 0.0, 1.5], [1 + 2 ** 3.5, 0.0, 1.5], [0.0, 0.0, 1.5]])
    geo = voxel_geometry(K, cam2ego, pts, (64, 112), 0.1, (lo, hi))
    assert geo.shape == (1, 1, 3)
    assert geo[0, 0, 0] == pytest.approx(2 * 1.5 / 6 - 1, abs=1e-5)  # log2 depth 1.5 of 0..6 -> [-1, 1]
    assert geo[0, 0, 1] == pytest.approx(2 * 3.5 / 6 - 1, abs=1e-5)
    assert geo[0, 0, 2] == 0  # no camera sees it
    prob = torch.zeros(1, 6, D, 8, 14)
    prob[:, :, 3] = 1  # every pixel of every camera: surface in bin 3 (8 .. 16 m, centre 2^3.5)
    geo = voxel_geometry(K, cam2ego, pts, (64, 112), 0.1, (lo, hi), prob)
    assert geo.shape == (1, 2, 3)
    assert geo[0, 1, 1] == pytest.approx(1.0, abs=1e-4) and geo[0, 1, 0] == pytest.approx(0.0, abs=1e-4)
    assert geo[0, 1, 2] == 0
    half = 1 + 2 ** 3.0  # half way (in log depth) between the centres of bins 2 and 3
    geo = voxel_geometry(K, cam2ego, torch.tensor([[half, 0.0, 1.5]]), (64, 112), 0.1, (lo, hi), prob)
    assert geo[0, 1, 0] == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("mode,extra", [("depth", 2), ("bins", 3)])
def test_lift_geometry_channels_reach_the_decoder_and_the_depth_head_learns(mode, extra):
    torch.manual_seed(0)
    batch = make_batch()
    base = OccNet(tiny_opt())
    net = OccNet(tiny_opt("--lift_geometry", mode, "--depth_bins", "8"))
    assert net.decoder[0].in_channels == base.decoder[0].in_channels + extra
    out = net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
    assert out["logits"].shape == (1, 18, 24, 24, 6)
    out["logits"][:, -1].mean().backward()
    w = net.decoder[0].weight.grad[:, -extra:]  # the geometry channels are read
    assert w.abs().sum() > 0
    if mode == "bins":
        assert net.depth_head.weight.grad.abs().sum() > 0
        two_d = {id(p) for p in net.param_groups()[0]["params"]}
        assert id(net.depth_head.weight) in two_d
    else:
        assert net.depth_head is None


def test_voxel_grid_uniform_and_contracted():
    grid = VoxelGrid((4, 2, 2), (-40, 40, -40, 40, -1, 5.4))
    c = grid.centres()
    assert torch.allclose(c[:, 0, 0, 0], torch.tensor([-30.0, -10.0, 10.0, 30.0]))
    assert torch.allclose(c[0, :, 0, 1], torch.tensor([-20.0, 20.0]))
    cg = VoxelGrid((10, 10, 2), (-40, 40, -40, 40, -1, 5.4), True, 100.0, 0.8, "xy")
    s = cg.normalise(torch.tensor([[40.0, -100.0, 5.4], [20.0, 0.0, -1.0], [60.0, 70.0, 2.2]]))
    assert torch.allclose(s[:2], torch.tensor([[0.8, -1.0, 1.0], [0.4, 0.0, -1.0]]), atol=1e-6)
    assert 0.8 < s[2, 0] < s[2, 1] < 1.0
    pts = cg.centres().view(-1, 3)
    assert torch.allclose(cg.denormalise(cg.normalise(pts)), pts, atol=1e-3)
    assert 50 < pts[:, 0].max() < 100  # the outermost of 10 voxels is centred at 57 m


def test_voxels_to_gaussians_opacity_scale_and_pruning():
    opt = tiny_opt("--opacity", "sigmoid")
    logits = torch.zeros(1, 18, 2, 1, 1)
    logits[0, 3, 0] = 2.0  # voxel 0: occupied-ish
    logits[0, 17, 1] = 20.0  # voxel 1: free, opacity 17 / (17 + e^20) < 1/255 -> pruned
    centres = torch.tensor([[5.0, 0.0, 1.0], [6.0, 0.0, 1.0]])
    g = voxels_to_gaussians(logits, centres, tiny_opt("--opacity", "softmax"))[0]
    p = torch.softmax(logits[0, :, 0, 0, 0], 0)
    assert g["index"].tolist() == [0] and 17 / (17 + math.exp(20)) < MIN_OPACITY
    assert g["opacities"][0] == pytest.approx(1 - p[17].item(), rel=1e-6)
    # the authors': 1 - sigmoid(free logit), the semantic logits do not change it
    g = voxels_to_gaussians(logits, centres, opt)[0]
    assert g["index"].tolist() == [0] and g["opacities"][0] == pytest.approx(0.5)
    assert torch.equal(g["features"][0], logits[0, :17, 0, 0, 0])
    assert torch.all(g["scales"] == 0.1) and g["quats"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert torch.equal(g["means"], centres[:1])

    # behind-all-cameras cull: the ego origin is behind all 6 ring cameras, 5 m ahead is in front of FRONT
    _, cam2ego = ring_rig()
    both = torch.zeros(1, 18, 2, 1, 1)
    g = voxels_to_gaussians(both, torch.tensor([[0.0, 0.0, 1.5], [5.0, 0.0, 1.5]]), opt,
                            viewmats=inverse_rigid(cam2ego), near=0.1)[0]
    assert g["index"].tolist() == [1]

    # learnt scale: smooth clamp at gs_scale_max; contracted: x4 beyond 60 m, x8 beyond 80 m
    opt = tiny_opt("--gs_scale_learn", "true", "--contracted", "true", "--contract_mode", "xy")
    far = torch.tensor([[10.0, 0.0, 0.0], [50.0, 40.0, 0.0], [90.0, 0.0, 0.0]])
    raw = torch.tensor([0.0, 0.0, 50.0]).view(1, 1, 3, 1, 1)
    g = voxels_to_gaussians(torch.zeros(1, 18, 3, 1, 1), far, opt, raw_scale=raw)[0]
    assert torch.allclose(g["scales"][:, 0], torch.tensor([0.06, 0.24, 0.96]))


def test_occupancy_readout_reproduces_aligned_labels(occ3d_label):
    """A volume aligned with the label voxels (z in [-0.2, 6.2]: layer 0 holds the road) reads back exactly; a
    volume over the documented range [-1, 5.4] reads back exactly with --occ_label_zmin -1 (the authors' read-out)."""
    labels = torch.from_numpy(np.load(occ3d_label)["semantics"]).long()
    logits = torch.nn.functional.one_hot(labels, 18).permute(3, 0, 1, 2)[None].float() * 10
    assert torch.equal(logits_to_occ3d(logits, VoxelGrid(OCC3D_SHAPE, (-40, 40, -40, 40, -0.2, 6.2)))[0].long(), labels)
    documented = VoxelGrid(OCC3D_SHAPE, (-40, 40, -40, 40, -1, 5.4))
    assert torch.equal(logits_to_occ3d(logits, documented, zmin=-1.0)[0].long(), labels)
    # the default read-out of that volume: label layer k is read 0.8 m higher, at the volume's layer k + 2
    shifted = logits_to_occ3d(logits, documented)[0].long()
    assert torch.equal(shifted[:, :, :14], labels[:, :, 2:]) and (shifted[:, :, 14:] == FREE_ID).all()


def test_occupancy_readout_hand_set_and_contracted():
    # uniform Occ3D-aligned grid: a car (4) at voxel (120, 90, 3), everything else free
    logits = torch.zeros(1, 18, *OCC3D_SHAPE)
    logits[0, 17] = 5.0
    logits[0, 4, 120, 90, 3] = 20.0
    occ = logits_to_occ3d(logits, VoxelGrid(OCC3D_SHAPE, (-40, 40, -40, 40, -1, 5.4)), zmin=-1.0)
    assert occ.dtype == torch.uint8 and occ[0, 120, 90, 3] == 4 and (occ == FREE_ID).sum() == 200 * 200 * 16 - 1
    assert occ3d_centres()[0, 0, :, 2].tolist() == pytest.approx([0.4 * k for k in range(16)])  # label layer k
    # contracted grid, one class per half space x > 0 (car, 4) / x < 0 (road, 11), read at the Occ3D centres
    grid = VoxelGrid((60, 60, 16), (-40, 40, -40, 40, -1, 5.4), True, 100.0, 0.8, "xy")
    cls = torch.where(grid.centres()[..., 0] > 0, 4, 11)
    logits = torch.nn.functional.one_hot(cls, 18).permute(3, 0, 1, 2)[None].float()
    occ = logits_to_occ3d(logits, grid)[0]
    x, z = occ3d_centres()[..., 0], occ3d_centres()[..., 2]
    assert torch.all(occ[(x > 1) & (z < 5.4)] == 4) and torch.all(occ[(x < -1) & (z < 5.4)] == 11)
    assert torch.all(occ[z > 5.4] == FREE_ID)  # label layers 14-15 (5.6, 6.0 m) lie above this volume
    # voxels outside a smaller volume are free
    small = VoxelGrid((10, 10, 4), (-10, 10, -10, 10, -1, 5.4))
    occ = logits_to_occ3d(torch.zeros(1, 2, 10, 10, 4), small)[0]
    assert occ[0, 0, 0] == FREE_ID and occ[100, 100, 5] == 0


def test_pose_flags_parse():
    assert tiny_opt().pose == "gt"
    opt = parse_args(TINY + ["--pose", "stage1", "--stage1_ckpt", "ckpts/gsp.pt"])
    assert opt.pose == "stage1" and opt.stage1_ckpt == "ckpts/gsp.pt"
    with pytest.raises(SystemExit):
        parse_args(TINY + ["--pose", "learned"])
    with pytest.raises(ValueError, match="stage1_ckpt"):
        build_model(parse_args(TINY + ["--pose", "stage1"]), load_stage1=load_stage1)


def test_stage1_pose_from_checkpoint(tmp_path):
    from networks.gsp_model import GSPModel
    from utils.checkpoint import save_checkpoint
    gsp_opt = parse_args(["--stage", "gsp", "--gsp_pretrained", "false", "--raster_backend", "torch",
                          "--gsp_pose", "net"])  # the pose net's own motion (the default measures it)
    save_checkpoint({"model": GSPModel(gsp_opt).state_dict(), "opt": vars(gsp_opt)}, str(tmp_path / "gsp.pt"))
    model = build_model(tiny_opt("--pose", "stage1", "--stage1_ckpt", str(tmp_path / "gsp.pt")), load_stage1)
    T = model.pose_source(make_batch())
    assert T.shape == (1, 2, 6, 4, 4)
    assert torch.allclose(T, torch.eye(4).expand_as(T), atol=1e-5)  # an untrained pose net starts at identity
    assert not any("pose" in k for k in model.state_dict())  # the stage-1 weights stay out of stage 2's


def test_pose_source_can_be_swapped_without_checkpoints():
    """The model takes any callable pose source; the criterion warps with exactly what it returns."""
    calls = []
    batch = make_batch()

    def still(b):
        calls.append(b)
        return torch.eye(4).expand(1, 2, 6, 4, 4)

    opt = tiny_opt("--pose", "stage1", "--stage1_ckpt", "nowhere.pt")
    model = GSVModel(opt, criterion=GSVLoss(opt, 17), pose_source=still)
    batch["imgs"][:, 0] = (batch["imgs"][:, 0] + 0.1).clamp(0, 1)  # the previous frame is brighter
    loss, logs, _ = model(batch)
    assert calls == [batch] and torch.isfinite(loss)
    # no motion: every warp lands inside its source and is that source, so the per-pixel minimum picks the
    # unchanged next frame: about zero error
    assert logs["warp_valid"] == 1.0 and abs(logs["loss_reproj"]) < 1e-4


def test_forward_backward_gradients_and_outputs():
    torch.manual_seed(0)
    model = build_model(tiny_opt())
    batch = make_batch()
    batch["ego2global"][:, 0, :, 0, 3] = -0.5  # the car moved 0.5 m forward between frames
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    loss, logs, out = model(batch)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    enc = model.occ_net.encoder.net.conv1.weight.grad
    dec = model.occ_net.decoder[0].weight.grad
    assert enc is not None and enc.abs().sum() > 0 and dec.abs().sum() > 0
    assert set(logs) >= {"loss", "loss_reproj", "loss_smooth", "loss_entropy", "loss_sem", "num_gaussians"}
    assert out["depth"].shape == (1, 6, 32, 56) and out["logits"].shape == (1, 18, 24, 24, 6)
    vis = training_pictures(batch, out, model.occupancy(out["logits"][:1])[0])
    assert vis["depth"].shape == (3, 64, 168) and vis["semantics"].shape == (3, 64, 168)
    assert vis["occ_bev"].shape == (3, 200, 200) and vis["occ_bev"].dtype == np.uint8
    assert model.predict_depth(batch).shape == (1, 6, 32, 56)


def test_volume_render_type_trains_the_same_volume():
    torch.manual_seed(0)
    model = build_model(tiny_opt("--render_type", "volume", "--input_size", "32", "56", "--render_size", "8", "14"))
    loss, logs, out = model(make_batch(32, 56, 8, 14))
    loss.backward()
    assert torch.isfinite(loss) and model.occ_net.head.weight.grad.abs().sum() > 0
    assert out["depth"].shape == (1, 6, 8, 14) and 0 < out["alpha"].mean() <= 1


def room_batch(H=32, W=56, h=16, w=28, step=0.3):
    """Consistent images of a textured box room (walls at +-5 m, floor at 0 m) rendered with the rasteriser from
    the ring rig at ego x = -step (prev), 0 (current), +step (next); 2D labels as in ``make_batch``."""
    K, cam2ego = ring_rig(H, W, f=25.0)
    s, zs = torch.arange(-5, 5.01, 0.25), torch.arange(0.0, 3.01, 0.25)
    a, b = torch.meshgrid(s, zs, indexing="ij")
    walls = [torch.stack([torch.full_like(a, c), a, b], -1) for c in (-5.0, 5.0)]
    walls += [torch.stack([a, torch.full_like(a, c), b], -1) for c in (-5.0, 5.0)]
    fx, fy = torch.meshgrid(s, s, indexing="ij")
    pts = torch.cat([p.reshape(-1, 3) for p in walls + [torch.stack([fx, fy, torch.zeros_like(fx)], -1)]])
    col = torch.stack([torch.sin(3 * pts[:, 0] + pts[:, 2]), torch.cos(2 * pts[:, 1] - pts[:, 2]),
                       torch.sin(pts.sum(1))], 1) * 0.4 + 0.5
    n = len(pts)
    e2g = torch.eye(4).repeat(1, 3, 6, 1, 1)
    e2g[:, 0, :, 0, 3], e2g[:, 2, :, 0, 3] = -step, step
    imgs = [rasterize(pts, torch.tensor([1.0, 0, 0, 0]).expand(n, 4), torch.full((n, 3), 0.15), torch.ones(n),
                      col, inverse_rigid(e2g[0, f] @ cam2ego[0]), K[0], W, H, backend="torch")["features"]
            for f in range(3)]
    batch = make_batch(H, W, h, w)
    batch.update(imgs=torch.stack(imgs)[None].clamp(0, 1), K=K, cam2ego=cam2ego, ego2global=e2g)
    return batch


def test_overfit_one_batch_lowers_the_loss():
    torch.manual_seed(0)
    opt = tiny_opt("--input_size", "32", "56", "--render_size", "16", "28", "--real_size", "-6", "6", "-6", "6",
                   "-1", "3", "--grid_size", "16", "16", "6", "--gs_scale", "0.3")
    model = build_model(opt)
    batch = room_batch(step=1.0)
    optim = torch.optim.Adam(model.trainable_parameters(), lr=5e-3)
    losses, reproj, kept = [], [], []
    for _ in range(15):
        loss, logs, _ = model(batch)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        reproj.append(logs["loss_reproj"].item())
        kept.append(logs["automask_kept"].item())
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    # the rendered depth explains the motion: the loss over ALL pixels falls and the warp beats "no motion" on
    # most pixels (a 0.3 m step moves the 16x28 render by < 1 px: there no warp beats no motion, nothing is learnt)
    assert np.mean(reproj[-3:]) < 0.6 * np.mean(reproj[:3]), reproj
    assert kept[-1] > 0.7, kept


def test_self_occlusion_mask_leaves_pixels_out_of_the_losses():
    """A mask of zeros over the right half: image content and labels there no longer change the losses."""
    from utils.geometry import rescale_K_to
    model = build_model(tiny_opt())
    batch = make_batch()
    batch["imgs"][:, ::2] = (batch["imgs"][:, ::2] + 0.3 * torch.rand(1, 2, 6, 3, 64, 112)).clamp(0, 1)
    batch["ego2global"][:, 0, :, 0, 3] = -0.5  # the car moves 0.5 m forward: warps shift by < 2 render pixels
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    h, w = 32, 56
    # the render is fixed (10 m everywhere) so that only the images and labels change between calls
    fixed = {"logits": torch.zeros(1, 18, 24, 24, 6), "num_gaussians": torch.tensor(0.0),
             "K": rescale_K_to(batch["K"], (64, 112), (h, w)), "depth": torch.full((1, 6, 1, h, w), 10.0),
             "alpha": torch.full((1, 6, 1, h, w), 0.5), "sem": torch.randn(1, 6, 17, h, w),
             "opacity": torch.full((1, 24, 24, 6), 0.5)}
    model.render = lambda _: fixed
    mask = torch.ones(1, 6, h, w)
    mask[..., w // 2:] = 0
    changed = dict(batch, imgs=batch["imgs"].clone(), sem=batch["sem"].clone())
    changed["imgs"][..., 2 * (w // 2 + 4):] = torch.rand_like(changed["imgs"][..., 2 * (w // 2 + 4):])
    changed["sem"][..., w // 2:] = 3  # 4 px margin above: warping (< 2 px) and SSIM's 3x3 window

    def losses(b, m):
        torch.manual_seed(0)  # the auto-masking tie-break noise
        logs = model(b if m is None else dict(b, mask=m))[1]
        return logs["loss_reproj"].item(), logs["loss_sem"].item()

    masked = losses(batch, mask)
    assert min(masked) > 0.01 and losses(changed, mask) == pytest.approx(masked, rel=1e-6)
    reproj, sem = losses(batch, None)
    reproj_changed, sem_changed = losses(changed, None)
    assert abs(reproj_changed - reproj) > 1e-3 and abs(sem_changed - sem) > 1e-3
    # a mask at another size is resized (nearest) to the render size
    big = mask.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert losses(changed, big) == pytest.approx(masked, rel=1e-6)


def test_evaluation_runs_the_network_once_per_sample():
    from eval import evaluate
    torch.manual_seed(0)
    model = GSVModel(tiny_opt()).eval()
    calls = []
    model.occ_net.register_forward_hook(lambda *a: calls.append(1))
    batch = make_batch()
    item = {k: v[0] for k, v in batch.items() if k != "sem"}
    item.update(depth_gt=torch.full((6, 32, 56), 5.0), token="t", scene="s",
                occ_semantics=torch.full(OCC3D_SHAPE, FREE_ID, dtype=torch.uint8),
                occ_mask_camera=torch.ones(OCC3D_SHAPE, dtype=torch.uint8),
                occ_mask_lidar=torch.ones(OCC3D_SHAPE, dtype=torch.uint8))
    opt = tiny_opt("--num_workers", "0", "--eval_rayiou", "false")
    out = evaluate(model, [item, item], opt, torch.device("cpu"))
    assert len(calls) == 2 and out["samples"] == {"depth": 2, "occ": 2}  # depth and occupancy from one forward
    assert set(out["occupancy_shifted"]) == {"-1", "1"} and "moved along the horizontal rays" in out["text"]
    pred = model.predict(batch)
    assert torch.equal(pred["occupancy"], model.predict_occupancy(batch))
    assert torch.equal(pred["depth"], model.predict_depth(batch))


def test_a_transparent_ray_reads_as_far_with_the_depth_background():
    """Every voxel free: with --depth_background far each ray ends at max_depth (sky), without it at 0 m, which
    the clamp of the losses turns into min_depth: the scene on the cameras (the collapse of issue 11)."""
    batch = make_batch()
    for background, want in (("far", 80.0), ("none", 0.0)):
        model = GSVModel(tiny_opt("--depth_background", background))
        logits = torch.zeros(1, 18, 24, 24, 6)
        logits[:, -1] = 20.0  # free everywhere: opacity 1 - sigmoid(20) < 1/255, every Gaussian pruned
        model.occ_net.forward = lambda *a: {"logits": logits}
        r = model.render(batch)
        assert r["num_gaussians"] == 0 and torch.all(r["alpha"] == 0)
        torch.testing.assert_close(r["depth"], torch.full_like(r["depth"], want))


def test_occupancy_readout_without_semantics_follows_the_rendered_opacity():
    """C = 1 with sigmoid opacity: only the free channel is rendered, so it alone decides (opacity >= 0.5 ->
    class 0), whatever the other channel holds; with semantics the authors' argmax over C + 1 channels."""
    grid = VoxelGrid(OCC3D_SHAPE, (-40, 40, -40, 40, -1, 5.4))
    logits = torch.zeros(1, 2, 200, 200, 16)
    logits[:, 0] = 5.0  # the unrendered channel would win an argmax everywhere
    logits[:, 1, :100] = 1.0  # free (opacity 0.27) in the back half, occupied (opacity 0.73) in the front half
    logits[:, 1, 100:] = -1.0
    occ = logits_to_occ3d(logits, grid, "sigmoid", zmin=-0.8)[0]
    assert (occ[:100] == FREE_ID).all() and (occ[101:] == 0).all()
    sem = torch.zeros(1, 18, 200, 200, 16)
    sem[:, 4], sem[:, 17, :100] = 1.0, 2.0
    occ = logits_to_occ3d(sem, grid, "sigmoid", zmin=-0.8)[0]
    assert (occ[:99] == FREE_ID).all() and (occ[101:] == 4).all()


def test_per_axis_scales_start_at_gs_scale_and_learn_each_axis():
    """--gs_scale_axes 3: the scale head gives one raw scale per grid axis, every axis starts at --gs_scale, the
    Gaussians are axis-aligned ellipsoids of those scales (x4 beyond 60 m on a contracted grid), and the render's
    depth loss reaches each axis's raw scale; a start at or above the cap is refused by name."""
    torch.manual_seed(0)
    opt = tiny_opt("--gs_scale_learn", "true", "--gs_scale_axes", "3", "--gs_scale", "0.9", "--gs_scale_max", "1.8")
    model = GSVModel(opt)
    batch = make_batch()
    out = model.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
    assert out["scale"].shape == (1, 3, 24, 24, 6)
    g = voxels_to_gaussians(out["logits"], model.occ_net.centres, opt, out["scale"])[0]
    assert g["scales"].shape == (len(g["means"]), 3)
    assert torch.allclose(g["scales"], torch.full_like(g["scales"], 0.9), atol=0.01)  # (weights ~1e-3 at the start)
    raw = torch.tensor([[0.0, 2.0], [0.0, -2.0], [0.0, 0.0]]).view(1, 3, 2, 1, 1)  # two voxels, 3 axes
    two = voxels_to_gaussians(torch.zeros(1, 18, 2, 1, 1), torch.tensor([[10.0, 0, 0], [70.0, 0, 0]]),
                              tiny_opt("--gs_scale_learn", "true", "--gs_scale_axes", "3", "--gs_scale", "0.05",
                                       "--gs_scale_max", "0.2", "--contracted", "true", "--contract_mode", "xy"),
                              raw_scale=raw)[0]
    s = torch.sigmoid(torch.tensor(2.0)).item()
    assert torch.allclose(two["scales"], torch.tensor([[0.1, 0.1, 0.1], [0.8 * s, 0.8 * (1 - s), 0.4]]))
    r = model.render(batch)
    r["depth"].mean().backward()
    grad = model.occ_net.scale_head.weight.grad
    assert grad.shape[0] == 3 and (grad.abs().sum((1, 2, 3, 4)) > 0).all()
    with pytest.raises(ValueError, match="--gs_scale_axes 3 starts at --gs_scale 0.2, which must lie in"):
        GSVModel(tiny_opt("--gs_scale_learn", "true", "--gs_scale_axes", "3", "--gs_scale", "0.2",
                          "--gs_scale_max", "0.2"))


def test_mean_offsets_start_at_the_voxel_centres_and_stay_inside_the_voxel():
    """--gs_offset F: the offset head starts at zero (the Gaussians at the voxel centres, as without it), a raw offset
    r moves a mean by F x voxel x tanh(r) per axis, the render's loss reaches the head, and a contracted grid (voxels
    of varying size) is refused by name."""
    torch.manual_seed(0)
    opt = tiny_opt("--gs_offset", "0.5")
    model = GSVModel(opt)
    batch = make_batch()
    out = model.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])
    assert out["offset"].shape == (1, 3, 24, 24, 6) and not out["offset"].any()
    g = voxels_to_gaussians(out["logits"], model.occ_net.centres, opt, raw_offset=out["offset"])[0]
    assert torch.equal(g["means"], model.occ_net.centres.reshape(-1, 3)[g["index"]])
    raw = torch.tensor([[100.0], [-100.0], [0.5]]).view(1, 3, 1, 1, 1)
    one = voxels_to_gaussians(torch.zeros(1, 18, 1, 1, 1), torch.tensor([[1.0, 2.0, 3.0]]), opt, raw_offset=raw)[0]
    voxel = torch.tensor([80 / 24, 80 / 24, 6.4 / 6])  # real_size / grid_size of the tiny config
    assert torch.allclose(one["means"][0], torch.tensor([1.0, 2.0, 3.0]) + 0.5 * voxel * torch.tensor(
        [1.0, -1.0, math.tanh(0.5)]))
    r = model.render(batch)
    r["depth"].mean().backward()
    assert model.occ_net.offset_head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="--gs_offset works on uniform grids only"):
        GSVModel(tiny_opt("--gs_offset", "0.5", "--contracted", "true"))


def test_sky_pixels_are_trained_transparent_and_left_out_of_the_semantics():
    """--w_sky: -log(1 - alpha) on the pixels labelled --sky_id; those pixels never reach the cross-entropy (254, the
    Grounded-SAM sky, would be an unknown class there)."""
    from networks.gsv_loss import sky_loss
    alpha = torch.tensor([[0.0, 0.5], [0.9, 1.0]])
    sky = torch.tensor([[True, True], [False, False]])
    assert sky_loss(alpha, sky) == pytest.approx(-math.log(0.5) / 2, rel=1e-5)
    assert sky_loss(alpha, torch.zeros_like(sky)) == 0
    assert torch.isfinite(sky_loss(torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool)))  # clamped below 1
    torch.manual_seed(0)
    batch = make_batch()
    batch["sem"][:, :, :4] = 254  # the top rows are sky
    ignored = dict(batch, sem=batch["sem"].masked_fill(batch["sem"] == 254, 255))
    model = build_model(tiny_opt())
    torch.manual_seed(1)
    _, logs0, _ = model(ignored)
    torch.manual_seed(1)
    _, logs1, _ = model(batch)
    assert "loss_sky" not in logs1 and logs1["loss_sem"] == pytest.approx(float(logs0["loss_sem"]), rel=1e-5)
    model = build_model(tiny_opt("--w_sky", "1"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    T = torch.eye(4).expand(1, 2, 6, 4, 4)
    sky_losses = []
    for _ in range(8):  # the sky term alone empties the sky rays
        terms, logs = model.criterion.terms(model.render(batch), batch, T)
        sky_losses.append(float(logs["loss_sky"]))
        opt.zero_grad()
        terms["sky"].backward()
        opt.step()
    first, last = sky_losses[0], sky_losses[-1]
    assert first > 0 and last < 0.5 * first, sky_losses
    with pytest.raises(ConfigError, match="--w_sky 1.0 on the command line: must be 0 unless --use_sem true"):
        tiny_opt("--w_sky", "1", "--use_sem", "false")


def test_metric_depth_spread_is_rendered_and_trained_without_the_relative_one():
    torch.manual_seed(0)
    model = build_model(tiny_opt("--w_dist", "0", "--w_dist_metric", "0.01"))
    loss, logs, _ = model(make_batch())
    assert "loss_dist" not in logs and float(logs["loss_dist_metric"]) > 0 and torch.isfinite(loss)
    loss.backward()
    assert model.occ_net.decoder[0].weight.grad.abs().sum() > 0


def test_photometric_loss_at_the_input_resolution():
    """--photo_res input (the authors'): the rendered depth upsampled to the input images; without motion every warp
    is its own source (about zero error), and the loss trains the volume."""
    torch.manual_seed(0)
    opt = tiny_opt("--photo_res", "input")
    still = lambda b: torch.eye(4).expand(1, 2, 6, 4, 4)  # noqa: E731
    model = GSVModel(opt, criterion=GSVLoss(opt, 17), pose_source=still)
    batch = make_batch()
    batch["imgs"][:, 0] = (batch["imgs"][:, 0] + 0.1).clamp(0, 1)
    loss, logs, _ = model(batch)
    assert logs["warp_valid"] == 1.0 and abs(logs["loss_reproj"]) < 1e-4 and torch.isfinite(loss)
    batch = make_batch()
    batch["ego2global"][:, 0, :, 0, 3] = -0.5
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    batch["imgs"][:, 0] = batch["imgs"][:, 1].roll(3, -1)  # the neighbours differ from the current images
    batch["imgs"][:, 2] = batch["imgs"][:, 1].roll(-3, -1)
    reproj = {}
    for res in ("render", "input"):
        torch.manual_seed(0)
        model = build_model(tiny_opt("--photo_res", res))
        loss, logs, _ = model(batch)
        loss.backward()
        reproj[res] = float(logs["loss_reproj"])
        assert reproj[res] > 0 and model.occ_net.decoder[0].weight.grad.abs().sum() > 0
    assert batch["imgs"].shape[-2:] != tuple(opt.render_size) and reproj["input"] != pytest.approx(reproj["render"])
