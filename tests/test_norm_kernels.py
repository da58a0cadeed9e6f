"""--group_norm_impl fused / --batch_norm_impl fused: the Triton kernels of networks/norm_kernels.py compute what
torch's norms compute (values and gradients, both layouts, float32 and bf16). Without a GPU they run in Triton's
interpreter (TRITON_INTERPRET=1, read when the kernels are defined: hence a fresh process); where Triton is
missing the tests skip and the fused norms fall back to the torch operators (checked here too)."""
import textwrap

import pytest
import torch

from networks import norm_kernels
from networks.fast_norm import FusedBatchNorm3d, FusedGroupNorm, convert_batch_norm, make_group_norm
from tests.triton_interpreter import run_interpreted

SCRIPT = textwrap.dedent("""
    import json, torch
    from networks import norm_kernels as nk
    from networks.fast_norm import FusedBatchNorm3d, FusedGroupNorm

    def rel(a, b):
        a, b = a.detach().double(), b.detach().double()
        return float((a - b).norm() / b.norm().clamp(min=1e-30))

    g = torch.Generator().manual_seed(0)
    out = {}
    for fmt_name, fmt in (("ncdhw", torch.contiguous_format), ("ndhwc", torch.channels_last_3d)):
        # the kernels alone: 37 channels (two channel chunks, the second partial), 1100 voxels (3 blocks, a rest)
        u = torch.randn(2, 37, 10, 11, 10, generator=g).contiguous(memory_format=fmt)
        v = torch.randn(u.shape, generator=g).contiguous(memory_format=fmt)
        a, b, k = (torch.randn(2, 37, generator=g) for _ in range(3))
        s1, s2 = nk.channel_moments(u, v)
        q1, q2 = nk.channel_moments(u)
        e = lambda t: t[..., None, None, None]
        y1 = nk.channel_affine(u, a, b)
        y2 = nk.channel_affine2(u, v, a, k, b)
        out[fmt_name + " kernels"] = [rel(s1, u.double().sum((2, 3, 4))), rel(s2, (u.double() * v).sum((2, 3, 4))),
                                      rel(q2, (u.double() ** 2).sum((2, 3, 4))), rel(y1, e(a) * u + e(b)),
                                      rel(y2, e(a) * u + e(k) * v + e(b)),
                                      float(y1.is_contiguous(memory_format=fmt) and y2.is_contiguous(memory_format=fmt))]
        for dtype in (torch.float32, torch.bfloat16):
            for name, ref, new in (("group", torch.nn.GroupNorm(4, 16), FusedGroupNorm(4, 16)),
                                   ("batch", torch.nn.BatchNorm3d(16), FusedBatchNorm3d(16))):
                with torch.no_grad():
                    ref.weight.copy_(torch.randn(16, generator=g)); ref.bias.copy_(torch.randn(16, generator=g))
                ref = ref.double()
                new.load_state_dict(ref.state_dict())
                x = (torch.randn(2, 16, 9, 7, 5, generator=g) * 3 + 15).to(dtype).contiguous(memory_format=fmt)
                dy = torch.randn(x.shape, generator=g).to(dtype)
                xr, x = x.double().requires_grad_(), x.requires_grad_()
                yr = ref(xr)
                (yr * dy.double()).sum().backward()
                y = new(x)
                (y * dy).sum().backward()
                r = [rel(y, yr), rel(x.grad, xr.grad), rel(new.weight.grad, ref.weight.grad),
                     rel(new.bias.grad, ref.bias.grad),
                     float(y.dtype == dtype and y.is_contiguous(memory_format=fmt)
                           and x.grad.is_contiguous(memory_format=fmt))]
                if name == "batch":
                    r += [rel(new.running_mean, ref.running_mean), rel(new.running_var, ref.running_var)]
                out[f"{fmt_name} {name} {str(dtype)[6:]}"] = r
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.skipif(not norm_kernels.available(), reason="triton is not installed")
def test_fused_norms_match_torch_in_the_interpreter():
    out = run_interpreted(SCRIPT)
    assert len(out) == 10
    for key, vals in out.items():
        if key.endswith("kernels"):
            *errs, layout_kept = vals
            assert layout_kept == 1.0, key
            assert max(errs) < 1e-6, (key, errs)  # float32 sums and products of float32 values
            continue
        # bf16: the output and gradient rounded once to bf16 (the interpreter truncates: 2^-8 relative at most)
        tol = 1e-5 if "float32" in key else 1e-2
        assert vals[4] == 1.0, key  # dtype and layout kept
        assert max(vals[:4]) < tol, (key, vals)
        if "batch" in key:
            assert max(vals[5:]) < 1e-5, (key, vals)


def test_fused_falls_back_to_torch_operators_on_the_cpu():
    """Outside CUDA (and the interpreter) the fused norms are the parallel ones: the same function as torch's."""
    torch.manual_seed(0)
    ref = torch.nn.GroupNorm(2, 6).double()
    new = make_group_norm(2, 6, "fused").double()
    assert isinstance(new, FusedGroupNorm)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(1, 6, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(new(x), ref(x), atol=1e-12)
    bn = torch.nn.Sequential(torch.nn.BatchNorm3d(6))
    convert_batch_norm(bn, "fused")
    assert type(bn[0]) is FusedBatchNorm3d
    ref_bn = torch.nn.BatchNorm3d(6).double()
    assert torch.allclose(bn.double()(x), ref_bn(x), atol=1e-10)


def test_kernels_refuse_other_layouts():
    if not norm_kernels.available():
        pytest.skip("triton is not installed")
    x = torch.randn(1, 4, 3, 5, 6).permute(0, 1, 3, 2, 4)  # neither contiguous nor channels_last_3d
    assert norm_kernels.volume_layout(x) is None
    with pytest.raises(ValueError, match="contiguous or channels_last_3d"):
        norm_kernels.channel_moments(x)


def test_graph_options_keep_the_cpu_step_eager():
    """--graph_encoder / --graph_volume act on CUDA training steps only: on the CPU prepare_model leaves the model as
    it is, the forward is image_features' / volume_outputs' own, and the autocast of the step keeps its cache unless
    an option is set."""
    from networks.occ_net import OccNet
    from tests.test_gsv_model import tiny_opt
    from utils.speed import autocast_cache, prepare_model
    opt = tiny_opt("--graph_encoder", "true", "--graph_volume", "true")
    assert opt.graph_encoder is True and opt.graph_volume is True and autocast_cache(opt) is False
    off = ("--graph_encoder", "false")  # (on by default since 2026-12-06)
    assert tiny_opt().graph_encoder is True and autocast_cache(tiny_opt()) is False
    assert autocast_cache(tiny_opt(*off)) is True and autocast_cache(tiny_opt(*off, "--graph_volume", "true")) is False
    net = OccNet(opt).train()
    assert prepare_model(net, opt, torch.device("cpu")) == [] and not net.graph_encoder and not net.graph_volume
    net.graph_encoder = net.graph_volume = True  # as prepare_model sets them on CUDA: CPU tensors stay eager
    x = torch.randn(2, 3, 32, 48)
    assert torch.equal(net.features_step(x), net.image_features(x)) and net._graphs == {}
    vol = _decoder_input(net)
    a, b = net.volume_step(vol), net.volume_outputs(vol)
    assert list(a) == list(b) == net.volume_output_names() and all(torch.equal(a[k], b[k]) for k in a)
    assert net._graphs == {} and not any(k.startswith("_graphs") for k in net.state_dict())


def _decoder_input(net):
    """A random volume of the shape the 3D CNN takes (channels from its first convolution)."""
    conv = next(m for m in net.decoder.modules() if isinstance(m, torch.nn.Conv3d))
    return torch.randn(1, conv.in_channels, *net.grid.shape)


def test_graph_capture_keeps_batch_norm_statistics_and_names_its_option(monkeypatch):
    """What OccNet does around torch.cuda.make_graphed_callables, on the CPU with a stand-in for it: the part handed
    over holds exactly the 3D CNN's and heads' parameters and gives the dict back in volume_output_names' order; the
    batch-norm statistics are as before the capture's warm-up passes; one capture serves the later steps of that
    input shape; a failed capture says which option to turn off."""
    import networks.occ_net as occ_net
    from tests.test_gsv_model import tiny_opt
    net = occ_net.OccNet(tiny_opt("--occ_decoder", "hourglass", "--grid_size", "16", "16", "8",
                                "--gs_scale_learn", "true")).train()
    captured = []

    def fake_capture(part, args, allow_unused_input=False):  # warm-up passes (moving the statistics), "capture"
        assert not allow_unused_input  # (every input of a network part is used)
        for _ in range(3):
            part(*args)
        captured.append(part)
        return part
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_capture)
    monkeypatch.setattr(occ_net, "_graphable", lambda enabled, n, x: enabled)
    net.graph_volume = True
    vol = _decoder_input(net)
    stats = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("decoder.") and "num_batches" in k}
    assert stats, "the hourglass has batch norms"
    with torch.no_grad():
        out = net.volume_step(vol)
    assert len(captured) == 1 and list(out) == net.volume_output_names() == ["logits", "scale"]
    want = {id(p) for name in ("decoder", "head", "scale_head", "offset_head") if getattr(net, name, None) is not None
            for p in getattr(net, name).parameters()}
    assert {id(p) for p in captured[0].parameters()} == want  # exactly those (an unused one fails a real capture)
    now = net.state_dict()
    # three warm-up passes undone, the step's own pass (the stand-in runs the part eagerly) counted once
    assert all(int(now[k]) == int(stats[k]) + 1 for k in stats)
    with torch.no_grad():
        net.volume_step(vol)
    assert len(captured) == 1  # the same input shape: no second capture

    monkeypatch.setattr(torch.cuda, "make_graphed_callables",
                        lambda part, args, **kw: (_ for _ in ()).throw(RuntimeError("x")))
    net._graphs.clear()
    with pytest.raises(RuntimeError, match="--graph_volume: capturing the CUDA graph failed"):
        net.volume_step(vol)


def test_graph_capture_of_a_split_volume_and_the_stream_warning(monkeypatch):
    """This project's 3D CNN takes (features, visibility) apart (--split_lift_conv): the capture gets both as its
    inputs and the graphed step returns the eager outputs; after a capture the AccumulateGrad stream-mismatch warning
    stays off (the capture's warm-up made the parameters' nodes on its side stream), after a failed one it is on."""
    import networks.occ_net as occ_net
    from tests.test_gsv_model import tiny_opt
    net = occ_net.OccNet(tiny_opt()).train()
    assert isinstance(net.decoder[0], occ_net.SplitConv3d) and net.split_lift_conv
    flags, captured = [], []
    monkeypatch.setattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", flags.append,
                        raising=False)

    def fake_capture(part, args, allow_unused_input=False):
        captured.append(len(args))
        return part
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_capture)
    monkeypatch.setattr(occ_net, "_graphable", lambda enabled, n, x: enabled)
    net.graph_volume = True
    conv = net.decoder[0]
    vol = (torch.randn(1, conv.split, *net.grid.shape), torch.rand(1, conv.in_channels - conv.split, *net.grid.shape))
    with torch.no_grad():
        eager = net.volume_outputs(vol)
        out = net.volume_step(vol)
    assert captured == [2] and flags == [False]
    assert list(out) == list(eager) and all(torch.equal(out[k], eager[k]) for k in out)
    monkeypatch.setattr(torch.cuda, "make_graphed_callables",
                        lambda part, args, **kw: (_ for _ in ()).throw(RuntimeError("x")))
    net._graphs.clear()
    with pytest.raises(RuntimeError, match="--graph_volume"):
        net.volume_step(vol)
    assert flags == [False, False, True]


def test_graph_volume_auto_follows_the_decoder(capsys):
    """--graph_volume auto (the default) graphs the authors' hourglass (measured 11-17 % a step) and not this project's
    residual 3D CNN (no gain); true / false decide for either; anything else is refused naming the choices. Under
    auto the autocast cache is off exactly when a graph is on."""
    from tests.test_gsv_model import tiny_opt
    from utils.speed import autocast_cache, option_on
    enc_off = ("--graph_encoder", "false")
    hour, res = ("--occ_decoder", "hourglass"), ("--occ_decoder", "residual")
    assert tiny_opt().graph_volume == "auto"
    assert option_on(tiny_opt(*hour), "graph_volume") is True and option_on(tiny_opt(*res), "graph_volume") is False
    assert autocast_cache(tiny_opt(*enc_off, *hour)) is False and autocast_cache(tiny_opt(*enc_off, *res)) is True
    assert option_on(tiny_opt(*hour, "--graph_volume", "false"), "graph_volume") is False
    assert option_on(tiny_opt(*res, "--graph_volume", "true"), "graph_volume") is True
    assert option_on(tiny_opt(*res, "--graph_volume", "AUTO"), "graph_volume") is False
    with pytest.raises(SystemExit):
        tiny_opt("--graph_volume", "maybe")
    assert "expected auto, true or false, got 'maybe'" in capsys.readouterr().err


def test_graphs_are_single_process_only():
    """Under DDP (world > 1) the trainer turns the CUDA graph options off and says so; one process keeps them."""
    from tests.test_gsv_model import tiny_opt
    from utils.speed import autocast_cache, graphs_off_for_processes
    opt = tiny_opt("--graph_volume", "true")
    assert graphs_off_for_processes(opt, 1) == [] and opt.graph_encoder and opt.graph_volume
    said = graphs_off_for_processes(opt, 2)
    assert said == ["--graph_encoder off (2 processes)", "--graph_volume off (2 processes)"]
    assert not opt.graph_encoder and not opt.graph_volume and autocast_cache(opt) is True
    auto = tiny_opt("--occ_decoder", "hourglass")  # --graph_volume auto: on for the hourglass, so turned off too
    assert graphs_off_for_processes(auto, 2)[-1] == "--graph_volume off (2 processes)" and auto.graph_volume is False
