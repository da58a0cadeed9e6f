"""Starting a run: the rasteriser choice, gsplat's build lock, the GPU of each torchrun process, SyncBatchNorm,
the set-up script, and clear one-line errors for a bare `python train.py` and a wrong --dataroot (CPU only: GPUs
and torchrun are faked where needed)."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import options
import train
from utils import dist, raster_backend
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


@pytest.fixture
def fresh_backend(monkeypatch):
    """A clean per-process backend state; ``set(ok, detail)`` fakes what gsplat_status finds."""
    monkeypatch.setattr(raster_backend, "_status", {})
    monkeypatch.setattr(raster_backend, "_announced", set())

    def fake(ok, detail):
        raster_backend._status[True] = (ok, detail)
    return fake


# ---------------------------------------------------------------- rasteriser choice

def test_auto_on_a_cuda_device_without_gsplat_stops_with_the_fix(fresh_backend):
    fresh_backend(False, "`import gsplat` fails (ModuleNotFoundError: No module named 'gsplat')")
    with pytest.raises(raster_backend.BackendError) as err:
        raster_backend.resolve_backend("auto", CUDA)
    text = str(err.value)
    assert "No module named 'gsplat'" in text and "tools/setup_env.sh" in text and "gsplat==1.5.3" in text
    assert "--raster_backend torch" in text and isinstance(err.value, UserError)
    assert raster_backend.resolve_backend("torch", CUDA) == "torch"  # asked for explicitly: no error


def test_auto_announces_its_choice_once(fresh_backend, capsys):
    fresh_backend(True, "gsplat 1.5.3")
    assert [raster_backend.resolve_backend("auto", CUDA) for _ in range(3)] == ["gsplat"] * 3
    assert raster_backend.resolve_backend("auto", torch.device("cpu")) == "torch"
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[rasteriser]")]
    assert lines == ["[rasteriser] auto -> gsplat (gsplat 1.5.3) on cuda",
                     "[rasteriser] auto -> torch (pure PyTorch reference; no CUDA device)"]


@pytest.mark.parametrize("backend_py, ok, detail", [
    ("_C = object()", True, "gsplat 9.9.9"),
    ("_C = None", False, "gsplat found no CUDA toolkit (nvcc) to build its kernels"),
    ("raise OSError('nvcc failed')", False, "gsplat's CUDA kernels do not build (OSError: nvcc failed)")])
def test_gsplat_status_loads_the_kernels_under_the_lock(tmp_path, monkeypatch, fresh_backend, backend_py, ok, detail):
    """A stand-in gsplat package: importing gsplat.cuda._backend is where the real one builds its kernels."""
    pkg = tmp_path / "site" / "gsplat"
    (pkg / "cuda").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '9.9.9'\n")
    (pkg / "cuda" / "__init__.py").write_text("")
    (pkg / "cuda" / "_backend.py").write_text(
        "import os, fcntl\n"
        "with open(os.environ['TORCH_EXTENSIONS_DIR'] + '/gsplat_build.lock') as f:\n"
        "    try:\n"
        "        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "        raise RuntimeError('the build ran without the lock held')\n"
        "    except BlockingIOError:\n"
        "        pass\n" + backend_py + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    def forget_gsplat():
        for name in [m for m in sys.modules if m == "gsplat" or m.startswith("gsplat.")]:
            del sys.modules[name]
    forget_gsplat()
    try:
        assert raster_backend.gsplat_status() == (ok, detail)
        assert raster_backend.gsplat_status(load_kernels=False) == (True, "gsplat 9.9.9")
    finally:
        forget_gsplat()  # the stand-in must not serve later tests


def test_build_lock_makes_a_second_builder_wait(tmp_path, capsys):
    path, events = tmp_path / "ext" / "gsplat_build.lock", []

    def second():
        with raster_backend.file_lock(path, "waiting"):
            events.append("second in")

    with raster_backend.file_lock(path):
        th = threading.Thread(target=second)
        th.start()
        time.sleep(0.3)
        events.append("first out")
    th.join(5)
    assert events == ["first out", "second in"]
    assert "waiting" in capsys.readouterr().out


def test_gsplat_build_step_on_a_cpu_machine(capsys):
    from tools.gsplat_build import main
    assert main() == 0
    assert "rasteriser: torch" in capsys.readouterr().out


def test_setup_env_checks_the_rasteriser_only_where_nvidia_smi_exists(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "GSOCC_PYTHON": sys.executable}
    cmd = ["sh", "-c", ". tools/setup_env.sh && echo \"PY=$PY\""]
    gpu = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**env, "PATH": f"{fake_bin}:{env['PATH']}"})
    assert gpu.returncode == 0 and "[setup] rasteriser: torch" in gpu.stdout and f"PY={sys.executable}" in gpu.stdout
    path = ":".join(p for p in env["PATH"].split(":") if not os.path.isfile(os.path.join(p, "nvidia-smi")))
    cpu = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env={**env, "PATH": path})
    assert cpu.returncode == 0 and cpu.stdout.strip() == f"PY={sys.executable}"  # nothing else on a CPU machine


# ---------------------------------------------------------------- one GPU per torchrun process

def test_each_process_takes_its_own_gpu():
    R = dist.resolve_device
    assert R("auto", local_rank=0, world=1, cuda_count=0) == torch.device("cpu")
    assert R("auto", 1, 2, 2) == torch.device("cuda", 1)
    assert R("cuda", 1, 2, 2) == torch.device("cuda", 1)
    assert R("cuda:1", 0, 1, 2) == torch.device("cuda", 1)  # one process: the GPU asked for
    with pytest.raises(dist.DeviceError, match="would put every process on GPU 0.*CUDA_VISIBLE_DEVICES"):
        R("cuda:0", 1, 2, 2)
    with pytest.raises(dist.DeviceError, match="torch sees 2.*--share_gpu true"):
        R("cuda", 2, 3, 2)
    # --share_gpu: more processes than GPUs, round robin (the multi-process path on one GPU)
    assert [R("auto", i, 3, 1, share=True) for i in range(3)] == [torch.device("cuda", 0)] * 3
    assert [R("cuda", i, 4, 2, share=True).index for i in range(4)] == [0, 1, 0, 1]
    assert R("cpu", 1, 2, 1, share=True) == torch.device("cpu")
    with pytest.raises(dist.DeviceError, match="no CUDA device"):
        R("cuda", 0, 1, 0)
    with pytest.raises(dist.DeviceError, match="expected auto, cpu, cuda"):
        R("gpu", 0, 1, 0)


def test_init_distributed_reads_torchrun_variables(monkeypatch):
    """torchrun's second process on a 2-GPU machine (CUDA and the process group faked)."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist.dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    assert dist.init_distributed("cuda") == (1, 2, torch.device("cuda", 1))
    assert dist.init_distributed("auto") == (1, 2, torch.device("cuda", 1))
    assert calls[:2] == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]
    with pytest.raises(dist.DeviceError):
        dist.init_distributed("cuda:0")


def test_sync_batchnorm_only_under_ddp_on_gpus():
    from networks.gsv_model import GSVModel
    opt = options.parse_args(["--stage", "gsv", "--pose", "gt", "--encoder_layers", "18", "--encoder_weights", "none",
                              "--grid_size", "8", "8", "4", "--contracted", "false", "--feat_dim", "8",
                              "--voxel_feat_dim", "4"])  # the authors' network: BatchNorm in the encoder and the 3D CNN
    model = GSVModel(opt)
    keys = list(model.state_dict())
    bn2d, bn3d = (sum(isinstance(m, t) for m in model.modules()) for t in (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d))
    assert bn2d > 0 and bn3d > 0
    assert dist.sync_batchnorm(model, 1, CUDA)[1] == 0 and dist.sync_batchnorm(model, 2, torch.device("cpu"))[1] == 0
    assert dist.sync_batchnorm(model, 2, CUDA, enabled=False)[1] == 0
    model, n = dist.sync_batchnorm(model, 2, CUDA)
    assert n == bn2d + bn3d and sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()) == n
    assert not any(type(m) in (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d) for m in model.modules())
    assert list(model.state_dict()) == keys  # checkpoints load either way


def test_channels_last_leaves_the_pose_net_alone():
    from networks.gsp_model import GSPModel
    from utils.speed import channels_last_modules
    opt = options.parse_args(["--stage", "gsp", "--gsp_pretrained", "false", "--gsp_depth_layers", "18",
                              "--gsp_pose_layers", "18"])
    model = GSPModel(opt)
    assert channels_last_modules(model) == [model.depth.encoder]


# ---------------------------------------------------------------- clear errors instead of tracebacks

def test_bare_train_py_says_what_to_do(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(REPO / "train.py")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=180, env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: stage 2 with --pose stage1 (the default) needs --stage1_ckpt")
    assert "sh run_gs_occ.sh" in r.stderr and "--pose gt" in r.stderr
    assert not (tmp_path / "logs").exists()  # nothing written before the check


def test_wrong_dataroot_is_named_as_such(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(SystemExit) as stop:
        train.main(["--pose", "gt", "--dataroot", str(missing), "--use_sem", "true", "--occ_root", "gts",
                    "--depth_root", "depth_gt", "--device", "cpu", "--log_dir", str(tmp_path / "logs")])
    assert str(stop.value.code) == f"error: nuScenes --dataroot not found: {missing}"
    with pytest.raises(SystemExit) as stop:
        train.main(["--pose", "gt", "--dataset", "ddad", "--dataroot", str(missing), "--device", "cpu",
                    "--log_dir", str(tmp_path / "logs")])
    assert str(stop.value.code).startswith(f"error: DDAD: --dataroot not found: {missing}")


def test_ddp_report_compares_throughput_and_metrics(tmp_path):
    from tools.ddp_report import main
    for name, procs, seconds, miou in (("one", 1, 10.0, 10.0), ("two", 2, 6.0, 9.0)):
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        (run / "options.txt").write_text("batch_size = 1\nlr = 0.0002\n")
        rows = [{"step": s, "samples": s * procs, "time_s": 1.0 + seconds * (s - 5) / 95, "data_wait_frac": 0.1,
                 "peak_mem_gib": 3.0, "steps_per_s": 9.0} for s in (5, 50, 100)]
        (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "eval" / "metrics.json").write_text(json.dumps({"scalars": {"occ/mIoU*": miou, "depth/abs_rel": 0.2}}))
    (tmp_path / "two" / "eval-ranks").mkdir()  # the 2-process checkpoint evaluated by 2 processes too
    (tmp_path / "two" / "eval-ranks" / "metrics.json").write_text(
        json.dumps({"scalars": {"occ/mIoU*": 9.0 + 2e-6, "depth/abs_rel": 0.2 + 3e-5}}))
    one, two = main([str(tmp_path / "one"), str(tmp_path / "two"), "--out", str(tmp_path / "r")])
    assert "eval_ranks_max_abs_diff" not in one and two["eval_ranks_max_abs_diff"] == pytest.approx(3e-5)
    assert two["eval_ranks_max_diff_key"] == "depth/abs_rel"
    assert two["eval_ranks_occ_max_abs_diff"] == pytest.approx(2e-6)  # the confusion-matrix scores on their own
    assert one["samples_per_s"] == pytest.approx(95 / 10) and two["samples_per_s"] == pytest.approx(190 / 6)
    assert (one["processes"], two["processes"]) == (1, 2) and two["metrics"]["mIoU*"] == 9.0
    md = (tmp_path / "r.md").read_text()
    assert "| two | 2 | 100 | 200 | 6 | 31.7 | 3.33x | 10 % | 3.0 | 9.00 |" in md
    assert md.splitlines()[-1].endswith("| occupancy 2e-06, any 3e-05 (depth/abs_rel) |")
    assert md.splitlines()[-2].endswith("| - |")


def test_run_gs_occ_names_a_bad_stages_value_before_any_work(tmp_path):
    env = {**os.environ, "GSOCC_PYTHON": sys.executable, "STAGES": "3", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run(["sh", str(REPO / "run_gs_occ.sh"), "synthetic"], capture_output=True, text=True, timeout=120,
                       env=env)
    assert r.returncode == 1 and "STAGES='3': 1, 2 or '1 2'" in r.stderr, r.stderr
    assert "make_synthetic" not in r.stdout and "stage 1" not in r.stdout
