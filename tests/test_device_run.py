"""tools/device_run.sh: a command's output and logs come back packed whether it ends by itself or is stopped at the
deadline (then exit 124, and its process group is gone)."""
import os
import subprocess
import tarfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "device_run.sh"


def run(tmp_path, deadline, *cmd):
    out = tmp_path / "out"
    t0 = time.time()
    r = subprocess.run(["sh", str(SCRIPT), str(deadline), str(out), *cmd], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PATH="/usr/bin:/bin"))
    with tarfile.open(out / "logs.tar.gz") as t:
        names = t.getnames()
    return r, names, time.time() - t0


def test_rc_and_logs_of_a_command_that_ends(tmp_path):
    r, names, _ = run(tmp_path, 60, "sh", "-c", "mkdir -p logs/run1/ckpt && echo '{}' > logs/run1/metrics.json && "
                      "echo x > logs/run1/stage1_poses.pt && echo x > logs/run1/ckpt/last.pt && exit 3")
    assert r.returncode == 3, r.stderr
    assert "logs/run1/metrics.json" in names and "logs/device_run.log" in names
    # the stage-1 motion a later call trains stage 2 with comes back; checkpoints do not
    assert "logs/run1/stage1_poses.pt" in names and "logs/run1/ckpt/last.pt" not in names
    assert "rc 3" in (tmp_path / "logs" / "device_run.log").read_text()


def test_the_deadline_stops_the_command_and_still_packs(tmp_path):
    # (a sleep of a length no other process on the machine is likely to have: ps lists every process)
    r, names, took = run(tmp_path, 3, "sh", "-c", "echo started > logs/partial.log; sleep 60.4317 & wait")
    assert r.returncode == 124 and took < 30, (r.returncode, took, r.stderr)
    assert "logs/partial.log" in names
    assert "stopped at the deadline" in (tmp_path / "logs" / "device_run.log").read_text()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 60.4317" not in ps  # the whole process group went


def test_bad_deadline_is_named(tmp_path):
    r = subprocess.run(["sh", str(SCRIPT), "soon", str(tmp_path), "true"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "DEADLINE_S" in r.stderr


def test_the_command_is_told_the_deadline_and_training_time_fits_into_it(tmp_path):
    from tools.time_budget import fit_minutes
    r, _, _ = run(tmp_path, 60, "sh", "-c", "echo $DEADLINE_AT > logs/at.txt")
    at = int((tmp_path / "logs" / "at.txt").read_text())
    assert abs(at - (time.time() + 60)) < 15, at
    assert fit_minutes(8, 150, deadline_at=1000 + 575, now=1000) == (575 - 150) / 60  # round 8's first call
    assert fit_minutes(5, 150, deadline_at=1000 + 575, now=1000) == 5
    assert fit_minutes(5, 150, deadline_at=None) == 5
    assert fit_minutes(5, 150, deadline_at=1000, now=1000) == 0.5  # never nothing
    env = dict(os.environ, DEADLINE_AT=str(int(time.time()) + 300))
    p = subprocess.run([os.sys.executable, "-m", "tools.time_budget", "8", "120"], capture_output=True, text=True,
                       env=env, cwd=SCRIPT.parents[1])
    assert p.returncode == 0 and 2.9 < float(p.stdout) <= 3.0 and "deadline" in p.stderr


def _call(tmp_path, out, *args, env=None):
    r = subprocess.run(["sh", str(SCRIPT), *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PATH="/usr/bin:/bin", **(env or {})))
    with tarfile.open(Path(out) / "logs.tar.gz") as t:
        return r, t.getnames()


def test_a_detached_run_outlives_its_call_and_a_later_call_collects_it(tmp_path):
    """DETACH=1: at the deadline the command keeps running (exit 125, what it wrote so far packed); --wait in a later
    call waits for it and returns its exit status with its last files."""
    cmd = "echo first > logs/first.log; sleep 6; echo second > logs/second.log; exit 7"
    r, names = _call(tmp_path, tmp_path / "out1", 2, tmp_path / "out1", "sh", "-c", cmd, env={"DETACH": "1"})
    assert r.returncode == 125, r.stderr
    assert "logs/first.log" in names and "logs/second.log" not in names
    pid = int((tmp_path / "logs" / "device_run.pid").read_text())
    os.kill(pid, 0)  # still alive after the call returned
    r, names = _call(tmp_path, tmp_path / "out2", "--wait", 60, tmp_path / "out2")
    assert r.returncode == 7, r.stderr
    assert "logs/second.log" in names and "rc 7" in (tmp_path / "logs" / "device_run.log").read_text()


def test_wait_without_a_detached_run_is_named(tmp_path):
    r = subprocess.run(["sh", str(SCRIPT), "--wait", "10", str(tmp_path / "o")], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "logs/device_run.pid" in r.stderr


def test_the_kernels_outlive_the_working_tree(tmp_path):
    """A later device call replaces the working tree and drops the carried .kernels/ it does not name again; a process
    the detached run starts after that must still find the kernels: GSPLAT_KERNELS points at a private copy."""
    (tmp_path / ".kernels").mkdir()
    (tmp_path / ".kernels" / "gsplat_cuda.so.gz").write_bytes(b"kernels")
    cmd = "rm -r .kernels; sleep 1; cat \"$GSPLAT_KERNELS\" > logs/k.txt; echo \"$GSPLAT_KERNELS\" > logs/path.txt"
    r, _ = _call(tmp_path, tmp_path / "out", 60, tmp_path / "out", "sh", "-c", cmd, env={"TMPDIR": str(tmp_path / "t")})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "logs" / "k.txt").read_text() == "kernels"
    path = (tmp_path / "logs" / "path.txt").read_text().strip()
    assert os.path.isabs(path) and not path.startswith(str(tmp_path / ".kernels")), path
    # a relative GSPLAT_KERNELS given by the caller becomes absolute (the command may change directory)
    (tmp_path / "k.gz").write_bytes(b"mine")
    r, _ = _call(tmp_path, tmp_path / "out2", 60, tmp_path / "out2", "sh", "-c",
                 "cd logs && cat \"$GSPLAT_KERNELS\" > k2.txt", env={"GSPLAT_KERNELS": "k.gz"})
    assert r.returncode == 0 and (tmp_path / "logs" / "k2.txt").read_text() == "mine", r.stderr


def test_gsplat_build_in_the_background_runs_beside_the_command(tmp_path):
    """GSPLAT_BUILD_BG=1 on a GPU machine without prebuilt kernels: the kernel build (here a fake one of 3 s) runs while
    the command runs, not before it, and its saved kernels are in OUT_DIR when device_run.sh returns."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")  # "a GPU machine"
    # PY: a fake python whose `-m tools.gsplat_build --save FILE` takes 3 s and writes FILE
    (bin_dir / "fakepy").write_text('#!/bin/sh\n[ "$2" = tools.gsplat_build ] || exit 9\nsleep 3\n'
                                    '[ "$3" = --save ] && echo kernels > "$4"\necho "[setup] built"\n')
    for f in ("nvidia-smi", "fakepy"):
        (bin_dir / f).chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", PY=str(bin_dir / "fakepy"), GSPLAT_BUILD_BG="1")
    env.pop("GSPLAT_KERNELS", None)
    t0 = time.time()
    r = subprocess.run(["sh", str(SCRIPT), "60", str(out), "sh", "-c", "date +%s.%N > logs/started.txt"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    started = float((tmp_path / "logs" / "started.txt").read_text())
    assert started - t0 < 2.5  # the command did not wait for the 3 s build
    assert time.time() - t0 >= 3  # device_run.sh waited for it before returning
    assert (out / "gsplat_cuda.so.gz").read_text().strip() == "kernels"
    assert "[setup] built" in (tmp_path / "logs" / "device_run.log").read_text()
