"""networks/loss_graph.py (--graph_loss): what GSVLoss does around torch.cuda.make_graphed_callables, on the CPU with
a stand-in for it (a real capture needs a GPU: tools/bench_render.py --speed_compare's "defaults +graphed loss")."""
import pytest
import torch

from networks import build_model, loss_graph
from tests.test_gsv_model import make_batch, tiny_opt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def captured(monkeypatch):
    """make_graphed_callables replaced by its warm-up passes and the function itself; the CPU counts as CUDA."""
    calls = []

    def fake_capture(fn, sample, allow_unused_input=False):
        assert allow_unused_input  # (inputs the terms read but do not differentiate through, e.g. the alpha's)
        assert all(isinstance(t, torch.Tensor) for t in sample)
        state = torch.get_rng_state()  # (the automask's tie-breaking noise: the real call draws what eager would)
        for _ in range(3):
            fn(*sample)
        torch.set_rng_state(state)
        calls.append(sample)
        return fn
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_capture)
    monkeypatch.setattr(loss_graph, "graphable", lambda loss, T: loss.training and torch.is_grad_enabled())
    return calls


def _moving_batch():
    batch = make_batch()
    batch["ego2global"][:, 0, :, 0, 3] = -0.5  # the car moved 0.5 m forward between frames
    batch["ego2global"][:, 2, :, 0, 3] = 0.5
    return batch


def _step(model, batch, step, graph, log=False):
    model.criterion.graph = graph
    model.set_step(step, log=log)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(100 + step)
    loss, logs, _ = model(batch)
    loss.backward()
    return loss.detach(), logs, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_graphed_terms_are_the_eager_ones(captured):
    """Steps with --graph_loss give the eager loss, logs and gradients: the first such step runs eagerly and notes
    what the terms read, the next captures once, the later ones reuse it; the step-dependent entropy weight is
    applied outside the graph; a step that logs runs eagerly with its log-only statistics."""
    torch.manual_seed(0)
    model = build_model(tiny_opt("--w_entropy", "0.1", "--entropy_schedule", "0", "4")).train()
    batch = _moving_batch()
    for step in range(4):
        ref = _step(model, batch, step, graph=False)
        got = _step(model, batch, step, graph=True)
        assert got[0] == pytest.approx(float(ref[0]), rel=1e-6), step
        assert set(got[1]) == set(ref[1]) and "mean_depth" not in got[1]
        for k in ref[1]:
            assert float(got[1][k]) == pytest.approx(float(ref[1][k]), rel=1e-6, abs=1e-9), (step, k)
        assert set(got[2]) == set(ref[2])
        for n, g in ref[2].items():
            torch.testing.assert_close(got[2][n], g, rtol=1e-5, atol=1e-7, msg=lambda m: f"{step} {n}: {m}")
    assert len(captured) == 1, "one capture for the steps of one signature"
    r_keys, b_keys = model.criterion._graphs["plan"]
    assert {"depth", "alpha", "sem", "opacity"} <= set(r_keys) and "logits" not in r_keys  # (no --w_tv)
    assert {"imgs", "sem"} <= set(b_keys) and "ego2global" not in b_keys  # (the motion comes as T)
    # the entropy ramp (0.25, 0.5, 0.75, 1 over steps 0-3) is applied to the graph's raw term outside it
    logged = _step(model, batch, 4, graph=True, log=True)
    assert "mean_depth" in logged[1] and len(captured) == 1


def test_terms_that_read_a_nested_render_stay_eager(captured):
    """With the extra views the render holds a dict of the other frames' renders: the terms stay eager, said once."""
    torch.manual_seed(0)
    model = build_model(tiny_opt("--w_extra_views", "0.5")).train()
    batch = _moving_batch()
    with pytest.warns(UserWarning, match="--graph_loss: .* stay eager"):
        _step(model, batch, 0, graph=True)
    assert model.criterion._graphs["plan"] is None
    ref = _step(model, batch, 1, graph=False)
    got = _step(model, batch, 1, graph=True)
    assert got[0] == pytest.approx(float(ref[0]), rel=1e-6) and captured == []


def test_a_failed_capture_names_the_option(monkeypatch):
    def broken(fn, sample, allow_unused_input=False):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", broken)
    monkeypatch.setattr(loss_graph, "graphable", lambda loss, T: True)
    torch.manual_seed(0)
    model = build_model(tiny_opt()).train()
    batch = _moving_batch()
    _step(model, batch, 0, graph=True)  # eager: notes the inputs
    with pytest.raises(RuntimeError, match="--graph_loss: capturing the CUDA graph failed .* without --graph_loss"):
        _step(model, batch, 1, graph=True)
