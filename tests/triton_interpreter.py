"""Running a test script under Triton's interpreter (TRITON_INTERPRET=1 is read when the kernels are defined, so in
a fresh process): the script prints ``RESULT <json>``, which comes back as a dict."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_interpreted(script, timeout=600):
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.split("RESULT ", 1)[1])
