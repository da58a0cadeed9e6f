"""The label-free calibrated read-out (utils/occ_readout.py): the threshold follows the volume's own opacity scale."""
import numpy as np
import pytest
import torch

from networks.gsv_model import GSVModel, occ3d_centres, occ3d_readout, readout_classes
from test_gsv_model import make_batch, ring_rig, tiny_opt
from utils.constants import FREE_ID, OCC3D_SHAPE
from utils.geometry import inverse_rigid
from utils.occ_readout import CANDIDATES, consistent_threshold, first_hits
from utils.rasterizer import rasterize

pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def street(surface, haze, seed=0):
    """Occ3D opacity volume (200, 200, 16) and its occupied set: a ground layer around the ego car and a wall 8 m in
    front, both at opacity ``surface`` (x a 10 % jitter); a haze of free voxels at opacity ``haze`` (3 % of the free
    voxels over the ground, below 3 m, none next to the cameras), 0.002 elsewhere."""
    c = occ3d_centres()
    x, y, z = c[..., 0], c[..., 1], c[..., 2]
    ground = (z.abs() < 0.2) & (x.abs() < 20) & (y.abs() < 20)
    wall = (x > 8.0) & (x < 8.8) & (y.abs() < 4) & (z > 0.2) & (z < 2.6)
    occ = ground | wall
    g = torch.Generator().manual_seed(seed)
    air = ~occ & (x.abs() < 20) & (y.abs() < 20) & (z > 0.2) & (z < 3) & (x.hypot(y) > 3)
    air &= torch.rand(OCC3D_SHAPE, generator=g) < 0.03
    o = torch.full(OCC3D_SHAPE, 0.002)
    o[occ] = surface * (1 + 0.1 * (2 * torch.rand(int(occ.sum()), generator=g) - 1))
    o[air] = haze
    return o, occ


def render(o, K, cam2ego, w=56, h=32, scale=0.15):
    keep = o.reshape(-1) >= 1 / 255
    means = occ3d_centres().reshape(-1, 3)[keep]
    quats = torch.zeros(len(means), 4)
    quats[:, 0] = 1
    return rasterize(means, quats, torch.full((len(means), 3), scale), o.reshape(-1)[keep], None,
                     inverse_rigid(cam2ego), K, w, h, near=0.1, backend="torch")


@pytest.mark.parametrize("surface,haze", [(0.9, 0.3), (0.25, 0.08)])
def test_the_threshold_follows_the_opacity_scale_of_the_volume(surface, haze):
    """A crisp and a faint volume of the same street: each gets a threshold above its haze and below its surfaces,
    so both read out exactly the occupied voxels; the fixed 0.5 (about what the argmax does) loses the faint one."""
    K, cam2ego = ring_rig(32, 56, f=25.0)
    K, cam2ego = K[0], cam2ego[0]
    o, occ = street(surface, haze)
    r = render(o, K, cam2ego)
    t, err, rays = consistent_threshold(o, r["depth"], r["alpha"], K, cam2ego, stride=1)
    assert rays > 1000 and err < 0.3
    assert haze < t < 0.9 * surface, (t, err)
    assert torch.equal(o > t, occ)
    if surface < 0.5:
        assert not (o > 0.5).any()


def test_first_hits_are_the_centres_of_the_first_voxels_above_each_threshold():
    """One ray of the FRONT camera of the ring rig (1 m forward at 1.5 m height, level) along the x axis: the first
    voxel above t sits where the constructed volume puts it, the ray's last sample where no voxel is above t."""
    K, cam2ego = ring_rig(32, 56, f=25.0)
    K, cam2ego = K[0, :1], cam2ego[0, :1]
    c = occ3d_centres()
    o = torch.zeros(OCC3D_SHAPE)
    layer = (c[0, 0, :, 2] - 1.5).abs().argmin()  # the layer of the ray's height (1.4 to 1.8 m)
    ix = lambda x: int((c[:, 0, 0, 0] - x).abs().argmin())  # noqa: E731
    o[ix(5.0), 100, layer] = 0.3  # centres at x = 5.0 and 9.0 m, y = 0.2 m
    o[ix(9.0), 100, layer] = 0.8
    depth = torch.full((1, 32, 56), float("nan"))
    depth[0, 15, 27] = 8.2  # the optical axis once cx, cy = 27, 15 (pixel centres at integers)
    K = K.clone()
    K[0, 0, 2], K[0, 1, 2] = 27.0, 15.0
    hits, surface = first_hits(o, depth, K, cam2ego, candidates=(0.1, 0.5, 0.9), stride=1)
    assert hits.shape == (1, 3) and surface.tolist() == [pytest.approx(8.2)]
    # camera z of the voxel centres: 5 - 1 and 9 - 1 m (the camera sits 1 m forward)
    assert hits[0, 0].item() == pytest.approx(4.0, abs=1e-4) and hits[0, 1].item() == pytest.approx(8.0, abs=1e-4)
    assert hits[0, 2].item() > 8.2 * 1.4  # beyond every voxel: the end of the sampled range (1.5 x the surface)


def test_the_model_reads_out_at_its_calibrated_threshold_and_eval_reports_it():
    from eval import evaluate
    torch.manual_seed(0)
    model = GSVModel(tiny_opt("--occ_readout", "calibrated")).eval()
    batch = make_batch()
    pred = model.predict(batch)
    t = float(pred["occ_threshold"][0])
    assert t in CANDIDATES
    want = torch.where(pred["occ_opacity"] > t, pred["occ_sem"], torch.full_like(pred["occ_sem"], FREE_ID))
    assert torch.equal(pred["occupancy"].long(), want)
    # without a render the fixed --occ_threshold decides, as --occ_readout opacity
    fixed = model.readout(model.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"]))
    assert "occ_threshold" not in fixed
    assert torch.equal(fixed["occupancy"].long(), torch.where(fixed["occ_opacity"] > 0.5, fixed["occ_sem"],
                                                              torch.full_like(fixed["occ_sem"], FREE_ID)))
    # the trainer's picture: without a render the fixed threshold, as above; with the step's render (forward's
    # outputs) the calibrated read-out of that render
    logits = model.occ_net(batch["imgs"][:, 1], batch["K"], batch["cam2ego"])["logits"]
    assert torch.equal(model.occupancy(logits), fixed["occupancy"])
    r = model.render(batch)
    render = {"depth_acc": r["depth_acc"][:, :, 0], "alpha": r["alpha"][:, :, 0], "K": r["K"]}
    assert torch.equal(model.occupancy(r["logits"], render, batch["cam2ego"]), pred["occupancy"])
    # eval scores the calibrated read-out beside the default one (argmax here), from the same forward
    model = GSVModel(tiny_opt("--occ_readout", "argmax")).eval()
    item = {k: v[0] for k, v in batch.items() if k != "sem"}
    gt = torch.full(OCC3D_SHAPE, FREE_ID, dtype=torch.uint8)
    gt[90:110, 90:110, 0] = 11
    item.update(depth_gt=torch.full((6, 32, 56), 5.0), token="t", scene="s", occ_semantics=gt,
                occ_mask_camera=torch.ones(OCC3D_SHAPE, dtype=torch.uint8),
                occ_mask_lidar=torch.ones(OCC3D_SHAPE, dtype=torch.uint8))
    out = evaluate(model, [item], tiny_opt("--num_workers", "0", "--eval_rayiou", "false"), torch.device("cpu"))
    cal = out["occupancy_calibrated"]
    pred = model.predict({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, calibrate=True)
    ro = {"opacity": pred["occ_opacity"], "sem": pred["occ_sem"], "inside": torch.ones_like(pred["occ_sem"]).bool(),
          "num_semantic": 17}
    assert torch.equal(pred["occupancy_calibrated"], readout_classes(ro, "opacity", float(pred["occ_threshold"][0])))
    assert cal["mean_threshold"] == pytest.approx(float(pred["occ_threshold"][0]))
    assert out["scalars"]["occ/calibrated_IoU"] == pytest.approx(cal["geo_IoU"])
    assert "Read-out calibrated without labels" in out["text"]


def test_the_default_read_out_is_the_calibrated_one_with_the_authors_argmax_beside(monkeypatch):
    """--occ_readout defaults to calibrated (measured: docs/results/runs/2026-12-02/occ-round6); eval's headline
    occupancy is that read-out, and the authors' argmax is scored beside it from the same forward. A faint ground
    (class 11 at opacity 0.3, everything else 0.002) is read out by the calibrated threshold, while the argmax gives
    it to the free channel (0.7 > 0.3)."""
    from eval import evaluate
    from utils.occ_metrics import OccEvaluator
    # (3.3 m voxels; the ground as read: this ground of two label layers is what the threshold decides)
    opt = tiny_opt("--num_workers", "0", "--eval_rayiou", "false", "--gs_scale", "1.2", "--occ_thin_ground", "false")
    assert opt.occ_readout == "calibrated"
    model = GSVModel(opt).eval()
    X, Y, Z = model.occ_net.grid.shape
    o = torch.full((X, Y, Z), 0.002)
    o[:, :, 1] = 0.3  # the second layer of the tiny grid (0.07 to 1.13 m): the ground
    logits = torch.full((1, 18, X, Y, Z), -20.0)
    logits[0, 11], logits[0, 17] = o.log(), (1 - o).log()
    monkeypatch.setattr(model.occ_net, "forward", lambda imgs, K, cam2ego: {"logits": logits.clone()})
    batch = make_batch()
    item = {k: v[0] for k, v in batch.items() if k != "sem"}
    gt = torch.full(OCC3D_SHAPE, FREE_ID, dtype=torch.uint8)
    gt[:, :, 1:3] = 11  # the Occ3D layers inside that ground layer (0.2 to 1.0 m)
    ones = torch.ones(OCC3D_SHAPE, dtype=torch.uint8)
    item.update(depth_gt=torch.full((6, 32, 56), 5.0), token="t", scene="s", occ_semantics=gt, occ_mask_camera=ones,
                occ_mask_lidar=ones)
    out = evaluate(model, [item], opt, torch.device("cpu"))
    pred = model.predict({k: v[None] for k, v in item.items() if torch.is_tensor(v)})
    assert torch.equal(pred["occupancy"], pred["occupancy_calibrated"])
    assert float(pred["occ_threshold"][0]) < 0.3
    ro = occ3d_readout(logits, model.occ_net.grid, opt.opacity, opt.occ_label_zmin)
    assert torch.equal(pred["occupancy_argmax"], readout_classes(ro, "argmax", opacity=opt.opacity))
    assert (pred["occupancy_argmax"] == FREE_ID).all()  # the authors' read-out loses the faint ground
    ev_cal, ev_arg = OccEvaluator(), OccEvaluator()
    ev_cal.update(pred["occupancy"][0].numpy(), gt.numpy(), ones.numpy())
    ev_arg.update(pred["occupancy_argmax"][0].numpy(), gt.numpy(), ones.numpy())
    assert out["scalars"]["occ/IoU"] == pytest.approx(ev_cal.summary()["geo_IoU"]) == \
        pytest.approx(out["scalars"]["occ/calibrated_IoU"])
    assert out["scalars"]["occ/IoU"] > 90  # the faint ground is read out
    assert out["scalars"]["occ/argmax_IoU"] == ev_arg.summary()["geo_IoU"] == 0
    assert out["occupancy_argmax"]["mIoU_star"] == pytest.approx(ev_arg.summary()["mIoU_star"])
    assert "Read-out argmax over the C+1 channels" in out["text"]


def test_thin_ground_keeps_the_most_opaque_ground_voxel_of_each_column():
    from utils.occ_readout import thin_ground
    occ = torch.full((2, 3, 3, 6), FREE_ID, dtype=torch.uint8)
    op = torch.zeros(occ.shape)
    occ[0, 0, 0, :3] = torch.tensor([11, 14, 14], dtype=torch.uint8)  # road under a thick terrain slab
    op[0, 0, 0, :3] = torch.tensor([0.9, 0.5, 0.3])
    occ[0, 1, 1, 1:4] = torch.tensor([13, 15, 15], dtype=torch.uint8)  # a sidewalk one layer up under a wall
    op[0, 1, 1, 1:4] = 0.4
    occ[1, 2, 2, 0:2] = 11
    op[1, 2, 2, 0:2] = torch.tensor([0.2, 0.6])  # the upper one is the more opaque
    out = thin_ground(occ, op)
    want = occ.clone()
    want[0, 0, 0, 1:3] = FREE_ID
    want[1, 2, 2, 0] = FREE_ID
    assert torch.equal(out, want)  # walls, free voxels and single ground voxels untouched


def test_thin_ground_is_what_real_occ3d_labels_are_in_most_columns(occ3d_label):
    """The real Occ3D-nuScenes sample: one ground voxel in 94.5 % of its ground columns (thin_ground's docstring);
    the labels thinned lose those in the other 5.5 %, nothing else."""
    from utils.occ_readout import GROUND_IDS, thin_ground
    gt = torch.from_numpy(np.load(occ3d_label)["semantics"])
    ground = torch.isin(gt.long(), torch.tensor(GROUND_IDS))
    per_col = ground.sum(-1)
    assert (per_col == 1).sum() / (per_col > 0).sum() == pytest.approx(0.945, abs=0.001)
    thin = thin_ground(gt, (gt != FREE_ID).float())
    lost = (thin != gt)
    assert int(lost.sum()) == int((per_col - 1).clamp(min=0).sum()) and bool(ground[lost].all())


def test_eval_scores_the_thin_ground_read_out_beside_the_default():
    from eval import evaluate
    from utils.occ_readout import thin_ground
    torch.manual_seed(0)
    batch = make_batch()
    item = {k: v[0] for k, v in batch.items() if k != "sem"}
    gt = torch.full(OCC3D_SHAPE, FREE_ID, dtype=torch.uint8)
    gt[90:110, 90:110, 0] = 11
    item.update(token="t", scene="s", occ_semantics=gt, occ_mask_camera=torch.ones(OCC3D_SHAPE, dtype=torch.uint8),
                occ_mask_lidar=torch.ones(OCC3D_SHAPE, dtype=torch.uint8))
    for thin in ("false", "true"):
        model = GSVModel(tiny_opt("--occ_thin_ground", thin)).eval()
        pred = model.predict({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, depth=False)
        base = pred["occupancy_calibrated"]  # the default read-out before the ground is thinned
        assert torch.equal(pred["occupancy_thin"], thin_ground(base, pred["occ_opacity"]))
        assert torch.equal(pred["occupancy"], pred["occupancy_thin"] if thin == "true" else base)
        assert torch.equal(pred["occupancy_as_read"], base)
        out = evaluate(model, [item], tiny_opt("--num_workers", "0", "--eval_rayiou", "false", "--eval_depth",
                                               "false", "--occ_thin_ground", thin), torch.device("cpu"))
        sc = out["scalars"]
        assert "occ/thin_ground_IoU" in sc and f"--occ_thin_ground {thin}" in out["text"]
        # the read-out scored is the thin one or the one as read, and the other is reported beside it
        assert sc["occ/IoU"] == sc["occ/thin_ground_IoU" if thin == "true" else "occ/as_read_IoU"]
        assert sc["occ/mIoU*"] == sc["occ/thin_ground_mIoU*" if thin == "true" else "occ/as_read_mIoU*"]


def test_thin_ground_is_the_default_read_out():
    assert tiny_opt().occ_thin_ground is True
