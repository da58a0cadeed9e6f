# Sourced by run_gs_occ.sh, run_vis.sh and run_tests.sh: makes sure a Python with the requirements exists and
# exports PY. Set GSOCC_PYTHON to use an existing interpreter as is (e.g. a cluster module or a GPU image).
if [ -n "${GSOCC_PYTHON:-}" ]; then
    PY="$GSOCC_PYTHON"
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
