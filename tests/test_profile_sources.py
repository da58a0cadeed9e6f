"""tools/bench/profile.py's device time by the line of this repository: the operators of a profiled step are filed
under the line that called them, their backward under the line of their forward (on the CPU: CPU time)."""
import torch

from tools.bench.profile import CallSites, profile_sources, source_times
from utils.losses import photometric_error


def _step(batch):
    pred, target = batch
    loss = photometric_error(pred, target).mean()
    loss.backward()
    return loss


def test_operators_are_filed_under_the_calling_line_and_their_backward_under_its_forward():
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 48, 64, requires_grad=True), torch.rand(2, 3, 48, 64))
    lines = profile_sources(_step, batch, torch.device("cpu"))
    pools = [k for k in lines if k.endswith("aten::avg_pool2d")]
    assert pools and all(k.startswith("utils/losses.py(") for k in pools)  # SSIM's pooling, by its line
    back = [k for k in lines if "(backward)" in k]
    assert len(back) >= 5 and all(k.startswith("utils/losses.py(") for k in back)
    assert sum(v for k, v in lines.items() if k.startswith("utils/losses.py(")) > 0.5 * sum(lines.values())


def test_call_sites_name_the_line_without_the_python_tracer():
    """The ranges of CallSites alone (a profile without with_stack, as the GPU machine's tracer left the operators)
    still give each operator its line."""
    from torch.profiler import ProfilerActivity, profile
    x = torch.rand(2, 3, 48, 64, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof, CallSites():
        _step((x, torch.rand(2, 3, 48, 64)))
    lines = source_times(prof.events(), cuda=False)
    assert any(k.startswith("utils/losses.py(") and k.endswith("aten::avg_pool2d") for k in lines)
    # the line is the calling line, not the function's first line (what the tracer's frames give)
    called = {int(k.split("(")[1].split(")")[0]) for k in lines if k.startswith("utils/losses.py(")}
    src = open("utils/losses.py").read().splitlines()
    assert all("def " not in src[n - 1] for n in called)


def test_shapes_name_each_operators_inputs():
    """With ``shapes`` the second table keys each line's operator by its input shapes too (what a copy copies)."""
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 48, 64, requires_grad=True), torch.rand(2, 3, 48, 64))
    by_line, by_shape = profile_sources(_step, batch, torch.device("cpu"), shapes=True)
    pools = [k for k in by_shape if " aten::avg_pool2d " in k]
    assert pools and all(k.startswith("utils/losses.py(") and k.endswith("[[2, 3, 50, 66]]") for k in pools)  # padded by 1
    assert all("[[" not in k for k in by_line)


def test_range_annotations_are_not_counted_as_kernels():
    """On CUDA a record_function range also shows as a device event (is_user_annotation) spanning its kernels:
    the families and the busy sum count the kernels only, else each stage's time would come twice (seen: 38 of
    105.6 ms of "busy" per step were the stage ranges, one H100)."""
    from types import SimpleNamespace as E
    from tools.bench.profile import kernel_entries
    kernel = E(key="sm90_xmma_fprop", device_type="DeviceType.CUDA", is_user_annotation=False,
               self_cpu_time_total=0, self_device_time_total=4000)
    stage_range = E(key="stage::3D CNN", device_type="DeviceType.CUDA", is_user_annotation=True,
                    self_cpu_time_total=0, self_device_time_total=6000)
    op = E(key="aten::convolution", device_type="DeviceType.CPU", is_user_annotation=False,
           self_cpu_time_total=50, self_device_time_total=0)
    assert kernel_entries([kernel, stage_range, op], cuda=True) == [kernel]
    assert kernel_entries([kernel, stage_range, op], cuda=False) == [op]


def test_compiled_losses_run_eagerly_in_the_source_profile():
    """Under CallSites (a TorchFunctionMode) dynamo would break a compiled function's graph at every operator and
    recompile it to its limit: profile_sources runs compiled functions eagerly (no new graph), and afterwards the
    compiled loss is used as before."""
    from torch._dynamo.utils import counters
    from utils import losses
    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 16, 20, requires_grad=True), torch.rand(2, 3, 16, 20))
    try:
        losses.compile_losses(True)
        _step(batch)
        graphs = counters["stats"]["unique_graphs"]
        lines = profile_sources(_step, batch, torch.device("cpu"))
        assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled under the mode
        assert any(k.startswith("utils/losses.py(") and k.endswith("aten::avg_pool2d") for k in lines)  # eager lines
        calls = counters["stats"]["calls_captured"]
        _step(batch)
        assert counters["stats"]["unique_graphs"] == graphs and counters["stats"]["calls_captured"] == calls
    finally:
        losses.compile_losses(False)
