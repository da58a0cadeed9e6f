"""Several processes through torchrun on the CPU (gloo): training runs, and evaluation on 2 ranks gives the same
numbers as on 1 (one confusion matrix, depth sums and fog statistics reduced over the ranks, no sample twice)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config", "configs/quick-gsv.txt", "--pose", "gt", "--device", "cpu", "--amp", "none",
        "--grid_size", "40", "40", "8", "--input_size", "64", "112", "--render_size", "32", "56",
        "--encoder_layers", "18", "--num_workers", "0"]


def _run(args, nproc, tmp_path, name):
    launch = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run(launch + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / f"{name}.log").write_text(p.stdout + p.stderr)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p


def test_two_cpu_processes_train_and_evaluate_like_one(synth_root, tmp_path):
    from tools.data.export_gt_depth_nusc import export_depth
    export_depth(str(synth_root), "v1.0-synthetic", str(tmp_path / "depth"))  # the set is shared: depth goes aside
    both = tmp_path / "both.txt"  # a sample needs a previous and a next frame: 1 per scene of 3 keyframes
    both.write_text((synth_root / "splits" / "train.txt").read_text() + (synth_root / "splits" / "val.txt").read_text())
    data = ["--dataroot", str(synth_root), "--train_split", str(both),
            "--val_split", str(synth_root / "splits" / "val.txt"), "--log_dir", str(tmp_path),
            "--depth_root", str(tmp_path / "depth")]
    _run(["train.py", *TINY, *data, "--exp_name", "ddp2", "--max_steps", "2", "--log_every", "1", "--val_every", "-1",
          "--image_every", "0"], 2, tmp_path, "train")
    ckpt = tmp_path / "ddp2" / "ckpt" / "last.pt"
    rows = [json.loads(line) for line in (tmp_path / "ddp2" / "train_log.jsonl").read_text().splitlines()]
    assert ckpt.exists() and [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert rows[-1]["samples"] == 2 * 2  # 2 steps x 2 processes x batch 1
    metrics = {}
    for n in (1, 2):
        out = tmp_path / f"eval{n}"
        _run(["eval.py", *TINY, *data, "--ckpt", str(ckpt), "--out_dir", str(out), "--eval_rayiou", "false"], n,
             tmp_path, f"eval{n}")
        metrics[n] = json.loads((out / "metrics.json").read_text())
    one, two = metrics[1], metrics[2]
    assert one["samples"] == two["samples"] and one["samples"]["occ"] == 3  # every val sample once
    assert one["occupancy"]["num_voxels"] == two["occupancy"]["num_voxels"] > 0
    for k, v in one["scalars"].items():
        assert two["scalars"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_bench_ddp_evaluates_on_its_own_data():
    """A checkpoint keeps no paths, so each eval.py of tools/bench_ddp.sh must name the benchmark's data (the first
    GPU run of the script trained and then stopped at 'nuScenes --dataroot not found: data/nuscenes')."""
    script = open(os.path.join(REPO, "tools", "bench_ddp.sh")).read()
    evals = [line for line in script.splitlines() if " eval.py " in line and not line.lstrip().startswith("#")]
    assert len(evals) == 2, evals
    assert 'EVAL_ARGS="--dataroot $DATA --val_split $DATA/splits/val.txt' in script
    for line in evals:
        assert "$EVAL_ARGS" in line, line
