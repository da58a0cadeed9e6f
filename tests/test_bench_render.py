"""tools/bench_render.py: a CPU smoke run of the efficiency benchmark (tiny grid and size, torch backend)."""
import re
import csv
import json
import math

import pytest
import torch

from tools import bench_render
from utils.constants import FREE_ID

GRID, SIZE = "8x100x100", "24x40"  # isotropic 0.8 m voxels; ~18k Gaussians; 6 views of 24x40


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    n = torch.get_num_threads()
    try:
        res = bench_render.main(["--quick", "--device", "cpu", "--grids", GRID, "--sizes", SIZE, "--warmup", "0",
                                 "--repeats", "1", "--threads", "1", "--out_dir", str(out)])
    finally:
        torch.set_num_threads(n)
    return out, res


def test_files_written(result):
    out, res = result
    for ext in ("md", "csv", "json", "png"):
        p = out / f"bench_render.{ext}"
        assert p.is_file() and p.stat().st_size > 0, p
    data = json.loads((out / "bench_render.json").read_text())
    assert {"meta", "render", "train_iter"} <= set(data)
    assert data["meta"]["torch"] == torch.__version__ and data["meta"]["date"]
    with open(out / "bench_render.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(res["render"]) + len(res["train_iter"])


def test_every_variant_has_a_row(result):
    out, res = result
    rows = {(r["grid"], r["size"], r["method"], r["mode"]): r for r in res["render"]}
    for m in bench_render.METHODS:
        for mode in bench_render.MODES:
            r = rows[(GRID, SIZE, m, mode)]
            if m == "gsplat":
                assert r["status"] == "unavailable"
            else:
                assert r["status"] == "ok", r
                assert r["n_runs"] >= 1 and math.isfinite(r["median_s"]) and r["median_s"] > 0
                assert 0 < r["min_s"] <= r["median_s"]
    md = (out / "bench_render.md").read_text()
    for m in bench_render.METHODS:
        assert f"| {GRID} | {SIZE} | {m} |" in md
    assert "unavailable" in md
    train = {r["variant"]: r for r in res["train_iter"]}
    assert train["gs (gsplat)"]["status"] == "unavailable"
    for name in ("volume", "gs (torch)"):
        assert train[name]["status"] == "ok" and train[name]["median_s"] > 0
        assert f"| {name} |" in md


def test_gsv_and_volume_render_the_same_scene(result):
    """Expected depth of the splatted voxel Gaussians vs the ray-marched volume where both are opaque
    (alpha > 0.9). Measured on this scene: 1.6 % median (24x40) and 2.0 % (36x64) at 8x100x100, 1.5 % at
    24x300x300 (45x80); an anisotropic grid (12x60x60) gives ~22 %."""
    _, res = result
    r = next(r for r in res["render"] if r["method"] == "torch" and r["mode"] == "fwd")
    assert r["depth_rel_diff"] is not None and r["depth_rel_diff"] < 0.06, r
    assert r["depth_mask_fraction"] > 0.3


def test_scene_opacity_is_one_minus_p_free():
    labels = bench_render.scene_labels(100, 100, 8)
    occ = labels != FREE_ID
    assert 0.05 < occ.float().mean() < 0.15  # ground layer + objects
    logits, info = bench_render.scene_logits(labels)
    assert logits.shape == (18, 100, 100, 8)
    opacity = 1 - torch.softmax(logits, 0)[-1]
    assert opacity[occ].min() > 0.69 and opacity[~occ].max() < 0.51
    assert info["gaussian_candidates"] == int((opacity >= 1 / 255).sum())


def test_parse_triplets():
    assert bench_render.parse_triplets("24x300x300,16x200x200", 3) == [(24, 300, 300), (16, 200, 200)]
    with pytest.raises(ValueError):
        bench_render.parse_triplets("180x320x1", 2)


def test_step_compare_old_and_new_paths_give_the_same_loss(tmp_path):
    """--step_compare on the CPU: both paths run, the report is written, and the first step's loss is the same
    (on the CPU the new path differs only in the data path: uint8 images, no eval-only labels)."""
    n = torch.get_num_threads()
    try:
        res = bench_render.main(["--step_compare", "--quick", "--device", "cpu", "--warmup", "0", "--step_repeats",
                                 "1", "--step_iters", "2", "--threads", "1", "--out_dir", str(tmp_path)])
    finally:
        torch.set_num_threads(n)
    rows = {r["variant"]: r for r in res["step"]}
    assert set(rows) == {"old", "new"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["new"]["loss_rel_diff"] == 0 and math.isfinite(rows["old"]["loss_first"])
    for r in rows.values():
        assert r["model_s"] > 0 and r["loop_s"] > 0 and r["data_wait_s"] >= 0 and r["epoch_start_s"] >= 0
    md = (tmp_path / "bench_step.md").read_text()
    assert "| old |" in md and "| new |" in md and json.loads((tmp_path / "bench_step.json").read_text())["rows"]


def test_step_compare_networks_parse():
    """The two networks of --step_net: the one issue 5 timed (0.163 s) and today's defaults (the authors')."""
    from options import parse_args
    from tools.bench.harness import PAPER_MODEL
    from tools.bench.step_compare import NETS
    project, authors = (parse_args(["--stage", "gsv", "--pose", "gt", *PAPER_MODEL, *NETS[n]]) for n in ("project",
                                                                                                     "authors"))
    assert (project.encoder_layers, project.image_neck, project.feat_stride, project.occ_decoder) == \
        (50, "fpn", 8, "residual") and project.lift_visibility
    assert (authors.encoder_layers, authors.occ_decoder) == (101, "hourglass")
    assert project.grid_size == authors.grid_size == [300, 300, 24] and project.input_size == [384, 640]


def test_speed_compare_quick_cpu(tmp_path):
    """--speed_compare (issue 20) on the CPU: every variant but torch.compile runs from the old path's weights with the
    same first loss, the components and the profile of old / all are there, and tools/record_result.py reads the
    headline numbers from bench_speed.json."""
    from tools.bench.speed_compare import VARIANTS
    from tools.record_result import record
    n = torch.get_num_threads()
    try:
        res = bench_render.main(["--speed_compare", "--quick", "--device", "cpu", "--warmup", "0", "--step_repeats",
                                 "1", "--threads", "1", "--profile", "--speed_rounds", "2", "--speed_budget", "1200",
                                 "--out_dir", str(tmp_path)])  # (a budget no loaded CI machine reaches: no skips)
    finally:
        torch.set_num_threads(n)
    rows = {r["variant"]: r for r in res["rows"]}
    assert set(rows) == {name for name, s, _, _ in VARIANTS if not s.get("compile")}
    for r in rows.values():
        assert r["status"] == "ok" and r["model_s"] > 0 and r["loss_rel_diff"] < 1e-5, r
        assert r["loss_last_rel_diff"] < 1e-5, r  # (frozen weights: the last timed step sees the first's weights)
    # round 2 timed old, all and the priority-1 variants again; the step is the median of the rounds' medians
    assert len(rows["old"]["round_s"]) == len(rows["defaults -compiled loss"]["round_s"]) == 2
    assert "round_s" not in rows["all +tile 8"]
    assert rows["all"]["model_s"] == pytest.approx(sum(rows["all"]["round_s"]) / 2)
    assert rows["old"]["profile"]["families_ms"]["convolution"] > 0 and rows["all"]["profile"]["busy_ms"] > 0
    stages = rows["all"]["profile"]["stages_ms"]  # every stage of the step, forward and backward, by its range
    for name in ("image encoder", "lifting", "3D CNN", "voxels to Gaussians", "rasteriser", "loss", "optimizer",
                 "image encoder (backward)", "3D CNN (backward)", "loss (backward)"):
        assert stages[name]["host_ms"] > 0 and stages[name]["ops"] > 0, (name, stages)
    assert stages.get("backward, not attributed", {"ops": 0})["ops"] < 0.05 * sum(v["ops"] for v in stages.values())
    sources = rows["all"]["profile"]["sources_ms"]  # the time by the repository's line that made it, backward too
    assert len(sources) == 30 and all(v > 0 for v in sources.values())
    assert any(k.startswith("networks/") for k in sources) and any("(backward)" in k for k in sources), sources
    groups = {c["group"] for c in res["components"] if "error" not in c}
    assert groups == {"ceiling", "norm", "conv", "lift", "loss"}, res["components"]
    # (the bf16 gather of --lift_dtype features is the float32 one to bf16 rounding, no closer: its gradient, summed
    # over the voxels each pixel feeds, 1.1e-2 on the CPU)
    assert all(c.get("grad_rel_diff", 0) < (2e-2 if "bf16" in c["case"] else 1e-5) for c in res["components"])
    assert any("bf16" in c["case"] and c["grad_rel_diff"] > 0 for c in res["components"])
    split = [c for c in res["components"] if c["case"].endswith("split 64 + 1")]  # SplitConv3d against the 65 one
    assert len(split) == 1 and split[0]["out_rel_diff"] < 1e-5 and split[0]["grad_rel_diff"] < 1e-5
    md = (tmp_path / "bench_speed.md").read_text()
    assert res["meta"]["speed_weights"] == "frozen" and "the weights frozen (lr 0" in md
    assert "| quick | all |" in md and "## Components" in md and "busy (sum)" in md and "| 3D CNN (backward) |" in md
    assert "Device time by the line of this repository" in md
    assert (tmp_path / "bench_speed_profile.txt").stat().st_size > 0
    summary = tmp_path / "summary.json"
    for key in ("step_s_quick", "step_s_quick_old"):
        entry = record(key, str(tmp_path / "bench_speed.json"), key, "cmd", "cpu", "abc", summary=str(summary))
        assert entry["value"] == round(res["scalars"][key], 4) > 0


def test_stage_times_attribute_each_backward_to_its_forward_stage():
    """tools/bench/profile.stage_times: the work of a range and the autograd engine's work for the nodes made inside
    it go to that stage (the backward through the autograd sequence numbers), by exact operator counts."""
    from torch.profiler import ProfilerActivity, profile
    from tools.bench.profile import stage_times
    from utils.speed import stage
    x = torch.randn(64, 64, requires_grad=True)
    w = torch.randn(64, 64, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with stage("a"):
            y = torch.tanh(x)  # one node: TanhBackward0
        with stage("b"):
            z = (y @ w).sum()  # two nodes: MmBackward0, SumBackward0
        z.backward()
    st = stage_times(prof.events())
    assert st["a"]["ops"] == 1 and st["b"]["ops"] in (2, 3), st  # tanh; mm, sum (and its fill)
    assert st["a (backward)"]["ops"] >= 1 and st["b (backward)"]["ops"] >= 2, st
    assert "backward, not attributed" not in st and st["gradient accumulation"]["host_ms"] >= 0


def test_component_gradients_come_in_the_outputs_layout():
    """tools/bench/components.py hands each case's backward a gradient in its output's layout (a channels-last
    convolution gets a channels-last gradient, as in the step), so a case times no layout copy the step lacks."""
    from tools.bench.components import _layout
    x = torch.randn(1, 3, 4, 5, 6)
    assert _layout(x) is torch.contiguous_format
    assert _layout(x.contiguous(memory_format=torch.channels_last_3d)) is torch.channels_last_3d
    assert _layout(torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)) is torch.channels_last
    assert _layout(torch.randn(1, 1, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)) is torch.contiguous_format


def test_conv_grad_layouts_reports_each_convolutions_tensors(capsys):
    """tools/diagnostics/conv_grad_layouts.py: per 3D convolution of the benchmark's step, the layout, dtype and shape
    of its input, output, both gradients and what its backward saved, with PyTorch's own guess of each layout (on the
    CPU the speed options stay off: all NCDHW); the first convolution takes the lifted features and the visibility
    apart (--split_lift_conv); --copies lists the step's large copies with the operators that made them."""
    from tools.diagnostics.conv_grad_layouts import layout, main
    rows = main(["--quick", "--device", "cpu", "--first", "1", "--copies", "1e4"])
    first = {what: desc for name, what, desc in rows if name == rows[0][0]}
    assert set(first) == {"input[0]", "input[1]", "output", "input grad[0]", "output grad", "saved input[0]",
                          "saved input[1]", "saved weight[0]", "saved weight[1]"}
    assert all(d.startswith("NCDHW float32 [1, ") and d.endswith("(suggests NCDHW)")
               for w, d in first.items() if "weight" not in w and not w.endswith("[1]"))
    assert first["input[1]"].startswith("NCDHW (both) float32 [1, 1, ")  # one channel: dense in both orders
    assert first["input[0]"].split("[")[1].split(",")[1] == first["input grad[0]"].split("[")[1].split(",")[1]
    out = capsys.readouterr().out
    assert "misreads (all convolutions): 0" in out
    copies = out.split("made by")[1].strip().splitlines()
    bad = [c for c in copies if not re.match(r"^\s*[\d.]+\s+\[\[[\d, ]+\]", c)]
    assert copies and not bad, bad[:3]
    assert any(" < " in c for c in copies)
    assert layout(torch.randn(1, 3, 4, 5, 6).contiguous(memory_format=torch.channels_last_3d)) == "NDHWC"
    assert layout(torch.randn(1, 3, 4, 5, 6).transpose(2, 3)).startswith("strides (")


@pytest.mark.usefixtures("one_thread")
def test_frozen_train_step_repeats_the_same_work():
    """--speed_weights frozen (the default): the timed steps run the whole optimiser step with learning rate 0, so
    the weights and the loss stay exactly as they were; the trained step moves them."""
    from tools.bench.harness import make_train_step
    from tools.bench.scene import train_batch
    from tools.bench.speed_compare import DEFAULTS, build_model, step_options
    dev = torch.device("cpu")
    opt = step_options("quick", DEFAULTS, dev, 0)
    batch = train_batch(opt, dev, 0)
    losses = {}
    for frozen in (True, False):
        model = build_model(opt, dev, 0, None)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        step = make_train_step(model, opt, dev, frozen=frozen)
        losses[frozen] = [step(batch)[0] for _ in range(2)]
        moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
        if frozen:  # (batch norms' running statistics move: training normalises with the batch's own)
            assert not [k for k in moved if "running" not in k], moved
        else:
            assert any("running" not in k for k in moved)
    # (the frozen steps' losses agree to float32 rounding, ~1e-7, not bit for bit: also with the state reloaded)
    assert losses[True][0] == losses[False][0], losses
    assert losses[True][1] == pytest.approx(losses[True][0], rel=1e-6), losses
    assert abs(losses[False][1] - losses[False][0]) > 1e-4 * losses[False][0], losses
