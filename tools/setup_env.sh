# Sourced by run_gs_occ.sh, run_vis.sh and run_tests.sh: makes sure a Python with the requirements exists and
# exports PY. Set GSOCC_PYTHON to use an existing interpreter as is (e.g. a cluster module or a GPU image).
# On a machine with an NVIDIA GPU (nvidia-smi found) it also installs requirements-cuda.txt (gsplat) into .venv,
# builds gsplat's CUDA kernels once under a file lock (tools/gsplat_build.py) and says which rasteriser will
# run. GSOCC_SKIP_GSPLAT=1 skips that part. On a CPU machine nothing of it runs.
if [ -n "${GSOCC_PYTHON:-}" ]; then
    PY="$GSOCC_PYTHON"
    VENV=""
else
    VENV="${GSOCC_VENV:-.venv}"
    STAMP="$VENV/.requirements.sha"
    WANT=$(sha1sum requirements.txt | cut -d' ' -f1)
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
        echo "[setup] creating $VENV and installing requirements.txt (first run only, a few minutes)"
        python3 -m venv "$VENV" || { echo "[setup] python3 -m venv failed: install python3-venv" >&2; exit 1; }
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install -q -r requirements.txt || { echo "[setup] pip install failed" >&2; exit 1; }
        echo "$WANT" > "$STAMP"
    fi
    PY="$VENV/bin/python"
fi
export PY

if command -v nvidia-smi >/dev/null 2>&1 && [ "${GSOCC_SKIP_GSPLAT:-0}" != 1 ]; then
    if [ -n "$VENV" ]; then
        WANT_CUDA=$(sha1sum requirements-cuda.txt | cut -d' ' -f1)
        if [ "$(cat "$VENV/.requirements-cuda.sha" 2>/dev/null)" != "$WANT_CUDA" ]; then
            echo "[setup] NVIDIA GPU found: installing requirements-cuda.txt (gsplat)"
            if "$PY" -m pip install -q -r requirements-cuda.txt; then
                echo "$WANT_CUDA" > "$VENV/.requirements-cuda.sha"
            else
                echo "[setup] pip install -r requirements-cuda.txt failed (see above)" >&2
            fi
        fi
    fi
    # Builds the kernels once (about 90 s the first time) and prints the rasteriser; a failure is reported with
    # its fix here, and training with --raster_backend auto stops with the same message. A caller that has other
    # work first (run_gs_occ.sh: the synthetic data) sets GSOCC_GSPLAT_BACKGROUND=1 and calls gsplat_wait later.
    if [ "${GSOCC_GSPLAT_BACKGROUND:-0}" = 1 ]; then
        mkdir -p logs
        "$PY" -m tools.gsplat_build > logs/gsplat_build.log 2>&1 &
        GSPLAT_PID=$!
    else
        "$PY" -m tools.gsplat_build || true
    fi
fi

gsplat_wait() {  # the background build, if one was started: wait for it and show what it said
    if [ -n "${GSPLAT_PID:-}" ]; then
        wait "$GSPLAT_PID" || true
        cat logs/gsplat_build.log
        GSPLAT_PID=""
    fi
}
