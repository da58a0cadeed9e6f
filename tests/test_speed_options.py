"""The stage-2 speed options of issue 20 compute the same function as the default path: values and gradients.

group norm (networks/fast_norm.py), lifting by gather (networks/lift_gather.py), sum_i w_i z_i^2 from shared moment
channels (utils/rasterizer.py), a channels_last_3d 3D CNN, and all of them together in the training step.
"""
import math

import warnings

import pytest
import torch

import networks.fast_norm as fast_norm
from networks.fast_norm import (FusedBatchNorm3d, FusedGroupNorm, GemmBatchNorm3d, GemmGroupNorm, ParallelGroupNorm,
                                convert_batch_norm, group_norm)
from networks.lift_gather import lift_features_gather
from networks.occ_net import VoxelGrid, lift_features
from utils.rasterizer import rasterize
from tests.test_gsv_model import make_batch, ring_rig, tiny_opt


pytestmark = pytest.mark.usefixtures("one_thread")  # (tests/conftest.py)


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


@pytest.fixture
def small_chunks(monkeypatch):
    """gemm sums over chunks of 64 voxels: the test volumes then have several whole chunks and a rest."""
    monkeypatch.setattr(fast_norm, "GEMM_CHUNK", 64)


@pytest.mark.parametrize("cls", [ParallelGroupNorm, GemmGroupNorm])
@pytest.mark.parametrize("dtype, fmt, tol", [(torch.float64, torch.contiguous_format, 1e-12),
                                             (torch.float32, torch.contiguous_format, 1e-5),
                                             (torch.float32, torch.channels_last_3d, 1e-5),
                                             (torch.bfloat16, torch.channels_last_3d, 1e-2)])
def test_group_norm_matches_torch(dtype, fmt, tol, cls, small_chunks):
    """Output, input / weight / bias gradients against nn.GroupNorm in float64 on the same (rounded) input; the
    volume has a mean of 5 standard deviations (the variance is E[x^2] - mean^2); the layout is kept."""
    g = torch.Generator().manual_seed(1)
    ref = torch.nn.GroupNorm(4, 16).double()
    with torch.no_grad():
        ref.weight.copy_(torch.randn(16, generator=g, dtype=torch.float64))
        ref.bias.copy_(torch.randn(16, generator=g, dtype=torch.float64))
    new = cls(4, 16).to(torch.float64 if dtype == torch.float64 else torch.float32)
    new.load_state_dict(ref.state_dict())
    x = (torch.randn(2, 16, 9, 7, 5, generator=g) * 3 + 15).to(dtype).contiguous(memory_format=fmt)
    dy = torch.randn(x.shape, generator=g).to(dtype)
    xr, x = x.double().requires_grad_(), x.requires_grad_()
    (ref(xr) * dy.double()).sum().backward()
    y = new(x)
    (y * dy).sum().backward()
    assert y.dtype == dtype and y.is_contiguous(memory_format=fmt) and x.grad.is_contiguous(memory_format=fmt)
    assert rel(y, ref(xr)) < tol and rel(x.grad, xr.grad) < tol
    assert rel(new.weight.grad, ref.weight.grad) < tol and rel(new.bias.grad, ref.bias.grad) < tol


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last_3d])
def test_gemm_sums_are_the_sums(fmt, small_chunks):
    """channel_sums_gemm: sum u and sum u v per (sample, channel) of volumes with 4 whole chunks and a rest of 59
    voxels, also when v comes in the other layout (a gradient may)."""
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 5, 7, 9, 5, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    v = torch.randn(2, 5, 7, 9, 5, generator=g, dtype=torch.float64)
    s1, s2 = fast_norm.channel_sums_gemm(u, v)
    assert s1.shape == (2, 5) and s1.dtype == torch.float64
    assert torch.allclose(s1, u.sum((2, 3, 4)), atol=1e-12) and torch.allclose(s2, (u * v).sum((2, 3, 4)), atol=1e-12)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_gemm_batch_norm_matches_torch(fmt, momentum, small_chunks):
    """GemmBatchNorm3d against nn.BatchNorm3d (float64) over two training steps: output, gradients of input, weight
    and bias, the running statistics (momentum and cumulative), then eval mode; the state dicts are alike."""
    g = torch.Generator().manual_seed(2)
    ref = torch.nn.BatchNorm3d(6, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        ref.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    new = GemmBatchNorm3d(6, momentum=momentum).double()
    new.load_state_dict(ref.state_dict())
    for step in range(2):
        x = (torch.randn(2, 6, 6, 7, 5, generator=g, dtype=torch.float64) * 2 + 10 * step - 3)
        x = x.contiguous(memory_format=fmt)
        dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
        xr, xn = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref.zero_grad(), new.zero_grad()
        yr, yn = ref(xr), new(xn)
        (yr * dy).sum().backward()
        (yn * dy).sum().backward()
        assert yn.is_contiguous(memory_format=fmt) and xn.grad.is_contiguous(memory_format=fmt)
        assert rel(yn, yr) < 1e-12 and rel(xn.grad, xr.grad) < 1e-12
        assert rel(new.weight.grad, ref.weight.grad) < 1e-12 and rel(new.bias.grad, ref.bias.grad) < 1e-12
    for k, v in ref.state_dict().items():
        assert torch.allclose(new.state_dict()[k].double(), v.double(), atol=1e-12), k
    ref.eval(), new.eval()
    x = torch.randn(1, 6, 3, 4, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(new(x), ref(x), atol=1e-12)
    w = ref.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: fast_norm._BatchNormTrain.apply(x, w, None, 1e-5)[0],
                                    (x.requires_grad_(), w))


def test_convert_batch_norm_keeps_the_network():
    """The authors' hourglass trunk with --batch_norm_impl gemm: every BatchNorm3d converted, the same state dict keys,
    the same logits in training mode as torch's batch norm (float64, CPU)."""
    from networks.hourglass3d import HourglassTrunk
    torch.manual_seed(0)
    ref = HourglassTrunk(5, 4).double()
    new = HourglassTrunk(5, 4).double()
    new.load_state_dict(ref.state_dict())
    convert_batch_norm(new, "gemm")
    assert all(type(m) is not torch.nn.BatchNorm3d for m in new.modules())
    assert sum(isinstance(m, GemmBatchNorm3d) for m in new.modules()) == 22  # the trunk's (the head has 5 more)
    assert new.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(1, 5, 8, 8, 4, dtype=torch.float64)
    assert rel(new(x), ref(x)) < 1e-10
    assert convert_batch_norm(ref, "torch") is ref and type(ref.stem[0][1]) is torch.nn.BatchNorm3d
    with pytest.raises(ValueError, match="batch norm implementation"):
        convert_batch_norm(ref, "fast")


def test_group_norm_without_affine_and_gradcheck():
    x = torch.randn(1, 6, 3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.allclose(group_norm(x, 3), torch.nn.functional.group_norm(x, 3), atol=1e-12)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: group_norm(x, 3, w, b), (x, w, b))
    with pytest.raises(ValueError, match="groups"):
        group_norm(x, 4)


def lift_inputs(dtype=torch.float64):
    """2 samples (the second with other intrinsics), 6 ring cameras, a 24 x 24 x 6 grid around them."""
    K, cam2ego = ring_rig(64, 112)
    K2 = K.clone()
    K2[:, :, :2] *= 1.2
    K, cam2ego = torch.cat([K, K2]).to(dtype), torch.cat([cam2ego, cam2ego]).to(dtype)
    pts = VoxelGrid((24, 24, 6), [-10, 10, -10, 10, -1, 3]).centres().view(-1, 3).to(dtype)
    feats = torch.randn(2, 6, 8, 16, 28, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return feats, K, cam2ego, pts


@pytest.mark.parametrize("visibility", [True, False])
def test_lift_gather_matches_grid_sample(visibility):
    feats, K, cam2ego, pts = lift_inputs()
    a_in, b_in = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    a = lift_features(a_in, K, cam2ego, pts, (64, 112))
    assert (a[:, -1] > 0).float().mean() > 0.5  # most points are seen
    a = a if visibility else a[:, :-1]
    b = lift_features_gather(b_in, K, cam2ego, pts, (64, 112), visibility=visibility)
    assert b.shape == a.shape
    assert (a - b).abs().max() < 1e-12
    dy = torch.randn(a.shape, dtype=a.dtype)
    (a * dy).sum().backward()
    (b * dy).sum().backward()
    assert rel(b_in.grad, a_in.grad) < 1e-12
    vol = b.view(2, -1, 24, 24, 6)
    assert vol.is_contiguous(memory_format=torch.channels_last_3d) or visibility


def test_lift_gather_in_the_features_dtype():
    """--lift_dtype features: the gather in bf16 gives the float32 volume to bf16 rounding (and its gradient),
    in bf16 and channels-last, with the geometry still float32 (a bf16 matmul of the rig would move the bilinear
    corners by pixels); feature maps in bf16 as autocast hands them over."""
    feats, K, cam2ego, pts = lift_inputs(torch.float32)
    f32_in = feats.clone().requires_grad_()
    bf_in = feats.bfloat16().requires_grad_()
    a = lift_features_gather(f32_in, K, cam2ego, pts, (64, 112))
    b = lift_features_gather(bf_in, K, cam2ego, pts, (64, 112), dtype=torch.bfloat16)
    assert a.dtype == torch.float32 and b.dtype == torch.bfloat16 and b.shape == a.shape
    assert b.view(2, -1, 24, 24, 6).is_contiguous(memory_format=torch.channels_last_3d)
    assert rel(b.float(), a) < 8e-3  # bf16: 8 mantissa bits on the features, the weights and the sums
    assert torch.equal(b[:, -1].float() > 0, a[:, -1] > 0)  # the same cameras see the same points
    dy = torch.randn(a.shape, generator=torch.Generator().manual_seed(5))
    (a * dy).sum().backward()
    (b.float() * dy).sum().backward()
    assert bf_in.grad.dtype == torch.bfloat16 and rel(bf_in.grad.float(), f32_in.grad) < 1e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # geometry: float32 under autocast too
        c = lift_features_gather(bf_in, K, cam2ego, pts, (64, 112), dtype=torch.bfloat16)
    assert torch.equal(c, b)


def test_lift_dtype_option_in_a_training_step():
    """GSVModel under bf16 autocast (CPU) with --lift_dtype features: the 3D CNN gets a bf16 volume, and the first
    step's loss is the float32 lift's to 1e-3 (the issue's bar for a speed option)."""
    from networks.gsv_model import GSVModel
    losses, seen = [], []
    for dtype in ("float32", "features"):
        torch.manual_seed(0)
        model = GSVModel(speed_opts("--lift_dtype", dtype, all=True)).train()
        model.occ_net.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].dtype))  # (split)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = model(make_batch())
        losses.append(loss.detach().float())
    assert seen == [torch.float32, torch.bfloat16]
    assert rel(losses[1], losses[0]) < 1e-3, losses


def render_inputs(dtype, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 3 + torch.tensor([0.0, 0.0, 12.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.3 + 0.1
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.8 + 0.1
    feats = torch.randn(n, 5, generator=g, dtype=dtype)
    vm = torch.eye(4, dtype=dtype).repeat(3, 1, 1)
    for c in range(3):
        a = 0.4 * c
        vm[c, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
        vm[c, :3, 3] = torch.tensor([0.5 * c, -0.2, 1.0 * c])
    K = torch.tensor([[40.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]], dtype=dtype).repeat(3, 1, 1)
    return means, quats, scales, opac, feats, vm, K


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_zsq_moments_match_per_camera(dtype, tol):
    """sum_i w_i z_i^2 and the gradients w.r.t. opacities and features: moments == per-camera copies."""
    means, quats, scales, opac, feats, vm, K = render_inputs(dtype)
    out = {}
    for mode in ("per_camera", "moments"):
        o, f = opac.clone().requires_grad_(), feats.clone().requires_grad_()
        r = rasterize(means, quats, scales, o, f, vm, K, 64, 48, backend="torch", zsq=mode)
        (r["zsq"].sum() * 1e-3 + r["features"].sum() + r["depth"].sum()).backward()
        out[mode] = [r["zsq"], r["features"], r["depth"], o.grad, f.grad]
    assert out["moments"][0].shape == (3, 1, 48, 64) and out["moments"][0].max() > 100  # z ~ 10 m: z^2 ~ 100
    for a, b in zip(out["per_camera"], out["moments"]):
        assert rel(b, a) < tol


def test_gsplat_padding_is_folded_into_the_zsq_concatenation(monkeypatch):
    """The zero channels that gsplat would append (its kernels take 1-5, 8, 9, 16, 17, 32, 33, ... channels, the depth
    included) are written by the features' concatenation instead: the counts, and a render with the padding is the
    one without (values and gradients), in both zsq modes."""
    import utils.rasterizer as rz
    assert [rz.gsplat_padding(d) for d in (28, 31, 32, 15, 16, 17, 3, 5, 64)] == [3, 0, 0, 0, 0, 14, 0, 2, 0]
    means, quats, scales, opac, feats, vm, K = render_inputs(torch.float64)
    rendered, torch_backend = [], rz._rasterize_torch
    monkeypatch.setattr(rz, "_rasterize_torch", lambda *a: rendered.append(a[4].shape[-1]) or torch_backend(*a))
    for mode in ("per_camera", "moments"):
        got = []
        for pad in (0, 3):
            monkeypatch.setattr(rz, "_padding_for", lambda backend, d, pad=pad: pad)
            o, f = opac.clone().requires_grad_(), feats.clone().requires_grad_()
            r = rasterize(means, quats, scales, o, f, vm, K, 64, 48, backend="torch", zsq=mode)
            assert r["features"].shape[1] == feats.shape[1] and r["zsq"].shape[1] == 1
            (r["zsq"].sum() * 1e-3 + r["features"].sum() + r["depth"].sum()).backward()
            got.append([r["zsq"], r["features"], r["depth"], o.grad, f.grad])
        for a, b in zip(*got):
            assert rel(b, a) < 1e-12
    extra = {"per_camera": 1, "moments": 9}
    d = feats.shape[1]
    assert rendered == [d + extra["per_camera"], d + extra["per_camera"] + 3, d + 9, d + 9 + 3]  # the zeros rendered


def test_zsq_is_float32_under_autocast():
    """Under bf16 autocast z^2 is still float32: before, the z of the per-camera copies came out of a bf16 matmul and
    z^2 was stored in the features' bf16 (an error of ~2 z dz = 2.5 m^2 at 20 m, far above a surface's Var(z))."""
    means, quats, scales, opac, feats, vm, K = render_inputs(torch.float32)
    means = means + torch.tensor([0.0, 0.0, 10.0])  # z ~ 20 m
    ref = rasterize(means, quats, scales, opac, feats, vm, K, 64, 48, backend="torch", zsq="per_camera")["zsq"]
    for mode in ("per_camera", "moments"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            r = rasterize(means, quats, scales, opac, feats.bfloat16(), vm, K, 64, 48, backend="torch", zsq=mode)
        assert r["zsq"].dtype == torch.float32 and rel(r["zsq"], ref) < 1e-5


def speed_opts(*extra, **flags):
    """tiny_opt with the speed options set (all of them with all=True, else the old path; norms="gemm": the group and the
    batch norms with their sums as matrix products; "fused": both through networks/norm_kernels.py, which on the CPU
    fall back to the torch operators: the options' plumbing)."""
    on, norms = flags.get("all", False), flags.get("norms", "parallel")
    if not on:  # the old path (the norms' defaults are the fused ones since 2026-12-06)
        return tiny_opt(*extra, "--group_norm_impl", "torch", "--batch_norm_impl", "torch", "--lift_impl",
                        "grid_sample", "--raster_zsq", "per_camera", "--split_lift_conv", "false")
    args = ["--group_norm_impl", norms, "--lift_impl", "gather", "--raster_zsq", "moments",
            "--batch_norm_impl", norms if norms in ("gemm", "fused") else "torch"]
    return tiny_opt(*extra, *args)


def to_channels_last_3d(net):
    """What utils.speed.prepare_model does with --channels_last_3d on CUDA, here on the CPU."""
    net.volume_format = torch.channels_last_3d
    for part in (net.decoder, net.head):
        part.to(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("norms", ["parallel", "gemm", "fused"])
@pytest.mark.parametrize("net", ["residual", "hourglass"])
def test_training_step_with_every_option_matches(net, norms):
    """The first training step of GSVModel (this project's residual decoder with group norm and the visibility
    channel, or the authors' hourglass with batch norm): loss, every parameter gradient and the batch-norm running
    statistics of the default path and of every speed option together (parallel group norm, gather lifting,
    channels_last_3d, zsq moments); torch rasteriser, float32."""
    from networks.gsv_model import GSVModel
    extra = [] if net == "residual" else ["--occ_decoder", "hourglass", "--lift_visibility", "false",
                                          "--grid_size", "24", "24", "8"]
    results = []
    for on in (False, True):
        torch.manual_seed(0)
        model = GSVModel(speed_opts(*extra, all=on, norms=norms)).train()
        kinds = {"gemm": (GemmBatchNorm3d, GemmGroupNorm), "fused": (FusedBatchNorm3d, FusedGroupNorm)}
        made = [m for m in model.modules() if type(m) in kinds.get(norms, ())]
        assert len(made) == (0 if not on or norms == "parallel" else 27 if net == "hourglass" else 3)  # 1 block
        if on:
            to_channels_last_3d(model.occ_net)
        loss, logs, _ = model(make_batch())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, {k: v.clone() for k, v in model.state_dict().items()}, logs))
    (l0, g0, s0, logs0), (l1, g1, s1, logs1) = results
    assert "loss_dist" in logs0 and rel(logs1["loss_dist"], logs0["loss_dist"]) < 1e-4
    assert rel(l1, l0) < 1e-5, (l0, l1)
    assert set(g1) == set(g0) and len(g0) > 10
    worst = max((rel(g1[n], g0[n]), n) for n in g0 if g0[n].norm() > 0)
    assert worst[0] < 1e-3, worst
    for k in s0:  # running statistics of the batch norms (and every weight, untouched by the step)
        if s0[k].is_floating_point():
            assert rel(s1[k], s0[k]) < 1e-4, k


@pytest.mark.parametrize("lift", ["gather", "grid_sample"])
@pytest.mark.parametrize("batch", [1, 2])
def test_channels_last_volume_has_the_strides_pytorch_reads(lift, batch):
    """The lifted volume the 3D CNN's first convolution gets under channels_last_3d is channels-last by PyTorch's
    own guess (suggest_memory_format, what cuDNN's backward goes by), the size-1 batch's stride included: a (1, C,
    P) gather viewed straight as (1, C, X, Y, Z) had its batch stride equal to its last one, read as NCDHW, and the
    backward converted the whole input and gradient (5.5 ms a step, one H100). Same values as the plain view."""
    from torch._prims_common import suggest_memory_format
    from networks.occ_net import OccNet, as_volume
    x = torch.randn(batch, 5, 4 * 3 * 2)
    for fmt in (torch.contiguous_format, torch.channels_last_3d):
        v = as_volume(x, (4, 3, 2), fmt)
        assert torch.equal(v, x.view(batch, 5, 4, 3, 2)) and suggest_memory_format(v) == fmt
    gathered = x.transpose(1, 2).contiguous().transpose(1, 2)  # the gather's memory: (B, P, C)
    v = as_volume(gathered, (4, 3, 2), torch.channels_last_3d)
    assert v.data_ptr() == gathered.data_ptr() and suggest_memory_format(v) == torch.channels_last_3d
    opt = tiny_opt("--lift_impl", lift)
    net = OccNet(opt).train()
    to_channels_last_3d(net)
    seen = []
    net.decoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    b = make_batch()
    imgs, K, cam2ego = (t.expand(batch, *t.shape[1:]) for t in (b["imgs"][:, 1], b["K"], b["cam2ego"]))
    net(imgs, K, cam2ego)
    assert isinstance(seen[0], tuple) and [t.shape[1] for t in seen[0]] == [16, 1]  # --split_lift_conv
    for part in seen[0]:  # (the visibility's one channel too: its stride is the canonical 1, not P)
        assert part.shape[0] == batch and suggest_memory_format(part) == torch.channels_last_3d
        assert part.stride()[1] == 1 and part.stride()[0] == part[0].numel()


def test_split_conv_is_the_convolution_of_the_concatenation():
    """SplitConv3d: the same parameters and state as nn.Conv3d; given (main, extra) it returns the convolution of
    their concatenation, with the same gradients for the weight and for main; a wrong split is refused by name."""
    from networks.occ_net import SplitConv3d
    torch.manual_seed(0)
    split = SplitConv3d(9, 4, 3, split=8, padding=1, bias=False).double()
    plain = torch.nn.Conv3d(9, 4, 3, padding=1, bias=False).double()
    assert split.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(split.state_dict())
    main = torch.randn(2, 8, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    extra = torch.rand(2, 1, 5, 4, 3, dtype=torch.float64)
    g = torch.randn(2, 4, 5, 4, 3, dtype=torch.float64)
    y = split((main, extra))
    ref = plain(torch.cat([main, extra], 1))
    assert torch.allclose(y, ref, rtol=1e-12, atol=1e-12) and torch.equal(split(torch.cat([main, extra], 1)), ref)
    gm, gw = torch.autograd.grad(y, (main, split.weight), g)
    rm, rw = torch.autograd.grad(ref, (main, plain.weight), g)
    assert torch.allclose(gm, rm, rtol=1e-12, atol=1e-12) and torch.allclose(gw, rw, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="8 \\+ 1"):
        split((main[:, :7], torch.cat([main[:, 7:], extra], 1)))
    with pytest.raises(ValueError, match="split 9"):
        SplitConv3d(9, 4, 3, split=9)


@pytest.mark.parametrize("lift", ["gather", "grid_sample"])
@pytest.mark.parametrize("geometry", ["none", "depth"])
def test_split_lift_conv_same_network_output(lift, geometry):
    """--split_lift_conv true (the lifted features and the other channels as two volumes) against false: the same
    logits, and the same gradients of every parameter (float64)."""
    from networks.occ_net import OccNet, SplitConv3d
    b = make_batch()
    outs = []
    for on in (False, True):
        torch.manual_seed(0)
        net = OccNet(tiny_opt("--lift_impl", lift, "--lift_geometry", geometry, "--split_lift_conv", str(on))).double()
        assert isinstance(net.decoder[0], SplitConv3d) and net.split_lift_conv == on
        seen = []
        net.decoder[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
        out = net(b["imgs"][:, 1].double(), b["K"].double(), b["cam2ego"].double())
        assert isinstance(seen[0], tuple) == on
        out["logits"].square().mean().backward()
        outs.append((out["logits"].detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = outs
    assert torch.allclose(l1, l0, rtol=1e-10, atol=1e-12)
    assert g0.keys() == g1.keys() and all(torch.allclose(g1[n], g0[n], rtol=1e-8, atol=1e-12) for n in g0)


def test_channels_last_logits_give_the_same_gaussians():
    """On CUDA a channels_last_3d 3D CNN returns NDHWC logits (the CPU's convolutions return NCDHW, so the step test
    above does not see them): opacity and the voxel Gaussians read the same values from them."""
    from networks.voxel_gaussians import voxel_opacity, voxels_to_gaussians
    opt = tiny_opt()
    logits = torch.randn(2, 18, 6, 5, 4, generator=torch.Generator().manual_seed(3))
    cl = logits.contiguous(memory_format=torch.channels_last_3d)
    centres = VoxelGrid((6, 5, 4), [-3, 3, -3, 3, -1, 1]).centres()
    for mode in ("softmax", "sigmoid"):  # softmax along the contiguous axis: the same to float32 rounding
        assert torch.allclose(voxel_opacity(cl, mode), voxel_opacity(logits, mode), rtol=1e-6, atol=1e-7)
    a, b = (voxels_to_gaussians(x, centres, opt) for x in (logits, cl))
    for ga, gb in zip(a, b):
        assert all(torch.allclose(ga[k], gb[k], rtol=1e-6, atol=1e-7) for k in ga if k != "index")
        assert torch.equal(ga["index"], gb["index"])


def test_fused_optimizer_same_update():
    """--fused_optimizer: AdamW's fused kernel (CUDA only in the trainer; the same class on the CPU here) moves the
    parameters as the default one."""
    from types import SimpleNamespace
    from utils.speed import make_optimizer
    g = torch.Generator().manual_seed(4)
    params = [torch.randn(5, 3, generator=g), torch.randn(7, generator=g)]
    grads = [torch.randn(p.shape, generator=g) for p in params]
    out = []
    for fused in (False, True):
        ps = [p.clone().requires_grad_() for p in params]
        opt = SimpleNamespace(lr=1e-3, weight_decay=0.01, fused_optimizer=fused)
        optim = make_optimizer([{"params": ps}], opt, torch.device("cpu"))
        if fused:  # make_optimizer fuses on CUDA only: the fused kernel itself, on the CPU
            optim = torch.optim.AdamW([{"params": ps}], lr=1e-3, weight_decay=0.01, fused=True)
        for _ in range(3):
            for p, gr in zip(ps, grads):
                p.grad = gr.clone()
            optim.step()
        out.append(ps)
    for a, b in zip(*out):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_compiled_losses_are_the_same_function():
    """--compile_loss: the photometric error (SSIM + L1) and the smoothness through torch.compile give the eager
    values and gradients (float32, CPU inductor), and compile_losses(False) restores the eager functions."""
    from utils import losses
    torch.manual_seed(0)
    pred = torch.rand(2, 3, 12, 20, requires_grad=True)
    target = torch.rand(2, 3, 12, 20)
    disp = torch.rand(2, 1, 12, 20, requires_grad=True)

    def run():
        e = losses.photometric_error(pred, target)
        s = losses.smoothness_loss(disp, target)
        g = torch.autograd.grad(e.square().sum() + s, (pred, disp))
        return e.detach(), s.detach(), g
    e0, s0, g0 = run()
    try:
        losses.compile_losses(True)
        assert losses.losses_compiled()
        e1, s1, g1 = run()
    finally:
        losses.compile_losses(False)
    assert not losses.losses_compiled()
    torch.testing.assert_close(e1, e0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1, s0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compile_loss_auto_is_stage_2_only():
    """--compile_loss auto (the default): compiled for stage 2, where four runs each way left the held-out occupancy
    as it was, eager for stage 1 (not measured there); true / false decide for either stage."""
    from tests.test_gsv_model import tiny_opt
    from utils.speed import option_on
    opt = tiny_opt()
    assert opt.compile_loss == "auto" and opt.stage == "gsv" and option_on(opt, "compile_loss") is True
    assert option_on(tiny_opt("--compile_loss", "false"), "compile_loss") is False
    opt.stage = "gsp"
    assert option_on(opt, "compile_loss") is False
    opt.compile_loss = True
    assert option_on(opt, "compile_loss") is True


def test_compiled_losses_fall_back_to_eager_with_a_warning(monkeypatch):
    """Where torch.compile fails (no compiler, an unsupported setup), the loss warns once naming --compile_loss and
    gives the eager values from then on; an error of the inputs still raises."""
    from utils import losses

    def broken_compile(fn, **kw):
        def call(*a):
            raise RuntimeError("inductor: no C++ compiler found\nmore detail")
        return call
    monkeypatch.setattr(torch, "compile", broken_compile)
    pred, target = torch.rand(1, 3, 8, 10), torch.rand(1, 3, 8, 10)
    want = losses.photometric_error(pred, target)
    try:
        losses.compile_losses(True)
        assert losses.losses_compiled()
        with pytest.warns(UserWarning, match=r"--compile_loss: torch.compile of the photometric loss failed "
                                             r"\(RuntimeError: inductor: no C\+\+ compiler found\)"):
            got = losses.photometric_error(pred, target)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once: the next call goes straight to the eager function
            torch.testing.assert_close(losses.photometric_error(pred, target), want, rtol=0, atol=0)
        with pytest.warns(UserWarning, match="smoothness"), pytest.raises(RuntimeError):
            losses.smoothness_loss(torch.rand(2, 1, 8, 10), torch.rand(3, 3, 8, 10))  # 2 disparities, 3 images
    finally:
        losses.compile_losses(False)


def test_photometric_errors_of_all_sources_in_one_call_equal_one_call_each():
    """utils.losses.photometric_errors (the reprojection loss's warped and identity errors in one call, the images
    stacked along the batch) gives exactly the errors of one photometric_error call per image."""
    from utils import losses
    torch.manual_seed(0)
    target = torch.rand(3, 3, 20, 24)
    images = [torch.rand(3, 3, 20, 24) for _ in range(4)]
    want = torch.cat([losses.photometric_error(x, target) for x in images], 1)
    got = losses.photometric_errors(target, images)
    assert got.shape == (3, 4, 20, 24)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)


def test_temporal_loss_with_its_sources_warped_together_equals_one_warp_each():
    """utils.losses.temporal_loss warps all its sources in one call; the loss, its maps and the depth's gradient equal
    those of one warp per source (the reference below is the loss as it was written before)."""
    from utils import losses
    from utils.geometry import warp
    torch.manual_seed(0)
    N, H, W = 2, 16, 24
    target = torch.rand(N, 3, H, W)
    sources = [torch.rand(N, 3, H, W) for _ in range(2)]
    depth = (torch.rand(N, 1, H, W) * 10 + 1).requires_grad_(True)
    K = torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]).expand(N, 3, 3)
    T = []
    for k in range(2):
        t = torch.eye(4).repeat(N, 1, 1)
        t[:, 0, 3], t[:, 2, 3] = 0.1 * (k + 1), (-0.3) ** (k + 1)
        T.append(t)
    torch.manual_seed(1)
    loss, maps = losses.temporal_loss(target, sources, depth, K, T)
    g = torch.autograd.grad(loss, depth)[0]
    warped, ok = zip(*[warp(src, depth, K, t) for src, t in zip(sources, T)])
    torch.manual_seed(1)
    ref, ref_maps = losses.reprojection_loss(target, list(warped), sources, list(ok))
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-7)
    torch.testing.assert_close(g, torch.autograd.grad(ref, depth)[0], rtol=1e-6, atol=1e-9)
    for k in ("reproj", "identity", "mask"):
        assert torch.equal(maps[k], ref_maps[k]), k


def test_voxel_gaussians_gather_rows_with_a_cheap_backward():
    """voxels_to_gaussians takes the kept voxels' rows with index_select: the Gaussians and every gradient are those
    of plain indexing (x[index]), and the graph has no IndexBackward (an accumulating index_put that sorts all the
    indices: 3.2 ms a step at the paper's grid on an H100) but IndexSelectBackward (an index_add)."""
    from networks.voxel_gaussians import voxels_to_gaussians
    opt = tiny_opt("--gs_scale_learn", "true", "--gs_scale_axes", "3", "--gs_offset", "0.5")
    g = torch.Generator().manual_seed(7)
    grid = (6, 5, 4)
    logits = torch.randn(2, 5, *grid, generator=g, dtype=torch.float64)
    logits[:, -1] += 12 * (torch.rand(2, *grid, generator=g) > 0.5)  # about half the voxels below 1/255: culled
    raw_scale = torch.randn(2, 3, *grid, generator=g, dtype=torch.float64)
    raw_offset = torch.randn(2, 3, *grid, generator=g, dtype=torch.float64)
    centres = VoxelGrid(grid, [-3, 3, -3, 3, -1, 1]).centres().double()
    ins = [t.clone().requires_grad_() for t in (logits, raw_scale, raw_offset)]
    out = voxels_to_gaussians(ins[0], centres, opt, raw_scale=ins[1], raw_offset=ins[2])
    assert 0 < len(out[0]["index"]) < logits[0, 0].numel()  # some culled, some kept
    names, stack = set(), [out[0]["features"].grad_fn, out[0]["opacities"].grad_fn, out[0]["scales"].grad_fn,
                             out[0]["means"].grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and type(fn).__name__ not in names:
            names.add(type(fn).__name__)
            stack += [f for f, _ in fn.next_functions]
    assert "IndexSelectBackward0" in names and "IndexBackward0" not in names, names
    ws = [{k: torch.randn(o[k].shape, generator=g, dtype=torch.float64)
           for k in ("features", "opacities", "scales", "means")} for o in out]
    sum((o[k] * w[k]).sum() for o, w in zip(out, ws) for k in w).backward()
    # the reference: the same quantities by plain indexing
    refs = [t.clone().requires_grad_() for t in (logits, raw_scale, raw_offset)]
    from networks.voxel_gaussians import gaussian_scales, offset_metres, voxel_opacity
    total = 0
    for b, (o, w) in enumerate(zip(out, ws)):
        i = o["index"]
        lg, op = refs[0][b].flatten(1).t(), voxel_opacity(refs[0], opt.opacity)[b].flatten()
        ref = {"features": lg[i, :-1], "opacities": op[i],
               "scales": gaussian_scales(centres.view(-1, 3)[i], refs[1][b].flatten(1).t()[i], opt),
               "means": centres.view(-1, 3)[i] + offset_metres(refs[2][b].flatten(1).t()[i], opt)}
        for k in w:
            assert torch.allclose(o[k], ref[k], rtol=0, atol=1e-12), k
            total = total + (ref[k] * w[k]).sum()
    total.backward()
    for a, r in zip(ins, refs):
        assert torch.allclose(a.grad, r.grad, rtol=0, atol=1e-12)


def test_compiled_losses_trace_without_graph_breaks():
    """tools/diagnostics/compile_breaks: the compiled photometric error and smoothness trace whole (a break would
    run a piece eagerly: slower, and not what the occupancy check of --compile_loss measured), with either SSIM
    pool option (on the CPU the pool kernels step aside as they do under compile on CUDA)."""
    from tools.diagnostics.compile_breaks import compiled_loss_breaks
    for pool in ("fused", "torch"):
        out = compiled_loss_breaks(torch.device("cpu"), 2, (12, 20), pool)
        assert out["graph_breaks"] == {} and out["graphs"] >= 2, out
