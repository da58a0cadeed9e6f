#!/bin/sh
# One whole GPU experiment inside one time-limited call on a fresh machine (a lent GPU, a CI runner, a cluster job
# with a hard wall-clock limit): nothing is lost when the limit comes, because whatever the run has written is
# packed before it.
#
#   sh tools/device_run.sh DEADLINE_S OUT_DIR COMMAND...
#   e.g. sh tools/device_run.sh 570 $OUT sh tools/run_benchmarks.sh occupancy
#
# 1. wheels in .whl/ (if any) are installed into /tmp/site (no network needed) and put on PYTHONPATH;
# 2. gsplat's kernels: .kernels/gsplat_cuda.so.gz is used when present (GSPLAT_KERNELS; ~1 s), else they are built
#    once and saved to OUT_DIR/gsplat_cuda.so.gz for the next machine (tools/gsplat_build.py --save); with
#    GSPLAT_BUILD_BG=1 that build runs beside COMMAND (which must wait for gsplat itself, as run_gs_occ.sh does);
# 3. COMMAND runs in the background, its output in logs/device_run.log, with DEADLINE_AT (epoch seconds of the
#    deadline) in its environment: tools/time_budget.py fits a training time into it;
# 4. when it ends, or DEADLINE_S seconds after the start (then it is stopped), logs/ is packed into
#    OUT_DIR/logs.tar.gz: logs and summaries, options, training logs, eval metrics, the stage-1 motion that
#    run_gs_occ.sh STAGES=1 exports (stage1_poses.pt, a few kB; no checkpoints, no images).
# Exit status: COMMAND's, or 124 when the deadline stopped it.
#
# A run longer than one call (e.g. run_benchmarks.sh gpu-default, ~21 min): DETACH=1 starts COMMAND so that it
# outlives the call (no DEADLINE_AT then), and at the deadline leaves it running, packs what it has written so far
# and exits 125; each next call, made while the machine is still held (and naming no `carry`: a carried path is
# replaced at every call),
#   sh tools/device_run.sh --wait DEADLINE_S OUT_DIR
# waits for it up to its own deadline and packs again: COMMAND's exit status once it has ended, 125 while it runs.
WAIT_ONLY=0
if [ "${1:-}" = "--wait" ]; then WAIT_ONLY=1; shift; fi
[ $# -ge 3 ] || { [ $WAIT_ONLY = 1 ] && [ $# -ge 2 ]; } || {
    echo "usage: sh tools/device_run.sh DEADLINE_S OUT_DIR COMMAND... | sh tools/device_run.sh --wait DEADLINE_S OUT_DIR" >&2
    exit 2; }
DEADLINE=$1; OUT_DIR=$2; shift 2
case "$DEADLINE" in ''|*[!0-9]*) echo "device_run: DEADLINE_S must be whole seconds, got '$DEADLINE'" >&2; exit 2;; esac
T0=$(date +%s)
PY=${PY:-python3}
mkdir -p logs "$OUT_DIR"
if [ $WAIT_ONLY = 1 ]; then
    [ -f logs/device_run.pid ] || { echo "device_run --wait: no detached run here (logs/device_run.pid)" >&2; exit 2; }
    P=$(cat logs/device_run.pid); DETACH=1
elif ls .whl/*.whl > /dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "device_run: installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ $WAIT_ONLY = 0 ] && [ -f .kernels/gsplat_cuda.so.gz ] && [ -z "${GSPLAT_KERNELS:-}" ]; then
    # a private copy outside the working tree: a later call of a detached run replaces the tree and drops the carried
    # paths it does not name again, and a process that starts after that (an eval, stage 2) would find no kernels
    # and build them (seen: .kernels gone 10 minutes into gpu-default, every later process failed)
    KD=${TMPDIR:-/tmp}/device_run-kernels; mkdir -p "$KD"
    cp .kernels/gsplat_cuda.so.gz "$KD/gsplat_cuda.so.gz"
    export GSPLAT_KERNELS="$KD/gsplat_cuda.so.gz"
fi
case "${GSPLAT_KERNELS:-/}" in /*) ;; *) GSPLAT_KERNELS="$(pwd)/$GSPLAT_KERNELS";; esac  # a relative path: absolute
if [ $WAIT_ONLY = 0 ] && command -v nvidia-smi > /dev/null 2>&1; then
    if [ -n "${GSPLAT_KERNELS:-}" ] && [ -f "$GSPLAT_KERNELS" ]; then
        $PY -m tools.gsplat_build > logs/gsplat_build.log 2>&1
    elif [ "${GSPLAT_BUILD_BG:-0}" = 1 ]; then
        # the build beside COMMAND (90-160 s on a fresh machine), for a COMMAND that waits for gsplat itself
        # (run_gs_occ.sh builds under the same lock while it makes its data); saved to OUT_DIR when it ends
        $PY -m tools.gsplat_build --save "$OUT_DIR/gsplat_cuda.so.gz" > logs/gsplat_build_save.log 2>&1 &
        BUILD_PID=$!
    else
        $PY -m tools.gsplat_build --save "$OUT_DIR/gsplat_cuda.so.gz" > logs/gsplat_build.log 2>&1
    fi
    [ -n "${BUILD_PID:-}" ] || tail -1 logs/gsplat_build.log
fi
export PYTHONUNBUFFERED=1
if [ $WAIT_ONLY = 1 ]; then
    :
elif [ "${DETACH:-0}" = 1 ]; then  # outlives the call; its exit status goes to logs/device_run.rc
    rm -f logs/device_run.rc
    setsid sh -c '"$@"; echo $? > logs/device_run.rc.tmp; mv logs/device_run.rc.tmp logs/device_run.rc' device_run \
        "$@" > logs/device_run.log 2>&1 < /dev/null &
    P=$!
    echo $P > logs/device_run.pid
else
    export DEADLINE_AT=$((T0 + DEADLINE))
    setsid "$@" > logs/device_run.log 2>&1 < /dev/null &
    P=$!
fi
RC=""
while [ -z "$RC" ]; do
    if [ "${DETACH:-0}" = 1 ] && [ -f logs/device_run.rc ]; then
        RC=$(cat logs/device_run.rc)
    elif ! kill -0 $P 2> /dev/null; then
        if [ "${DETACH:-0}" = 1 ]; then
            sleep 1; RC=$(cat logs/device_run.rc 2> /dev/null || echo 1)  # gone without a status: killed
        else
            wait $P; RC=$?
        fi
    elif [ "${DETACH:-0}" = 1 ] && [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then
        RC=125
        echo "[device_run] still running at the deadline (pid $P): sh tools/device_run.sh --wait DEADLINE_S OUT_DIR" \
            "collects it" >> logs/device_run.log
    elif [ $(( $(date +%s) - T0 )) -ge "$DEADLINE" ]; then
        kill -TERM -$P 2> /dev/null || kill -TERM $P 2> /dev/null
        sleep 2; kill -KILL -$P 2> /dev/null
        RC=124
        echo "[device_run] stopped at the deadline ($DEADLINE s)" >> logs/device_run.log
    else
        sleep 2
    fi
done
if [ -n "${BUILD_PID:-}" ]; then wait "$BUILD_PID"; tail -1 logs/gsplat_build_save.log >> logs/device_run.log; fi
echo "[device_run] rc $RC after $(( $(date +%s) - T0 )) s" >> logs/device_run.log
find logs \( -name '*.log' -o -name '*.md' -o -name '*.json' -o -name '*.jsonl' -o -name 'options.txt' \
    -o -name 'stage1_poses.pt' \) \
    -size -20M > /tmp/device_run.files
tar czf "$OUT_DIR/logs.tar.gz" -T /tmp/device_run.files
tail -15 logs/device_run.log
exit $RC
