#!/bin/sh
# GaussianOcc, the whole pipeline: stage 1 (GSP, no GT pose) -> stage-1 refine -> stage 2 (GSV, camera motion from
# the stage-1 pose net) -> evaluation. No ground-truth pose is used anywhere.
#
#   sh run_gs_occ.sh                       # synthetic set (generated on first use), or nuScenes if data/nuscenes exists
#   sh run_gs_occ.sh synthetic|nuscenes|ddad [train.py options...]
#
# Environment: PROFILE=quick|full (default: quick on a CPU, full with CUDA), REFINE_STEPS (stage-1 refine length),
# GSP_MINUTES / GSV_MINUTES (stage 1's / stage 2's training minutes instead of its config's max_minutes),
# NGPU (processes = GPUs used; default: every GPU torch sees, through torchrun when more than one; NGPU=1 for one).
# STAGES=1: stage 1 and its refine only, ending with the stage-1 motion of every stage-2 training sample exported to
# logs/<stage-1 run>-refine/stage1_poses.pt (tools/export_stage1_poses.py); STAGES=2: stage 2 and the evaluation
# only, the camera motion read from that file (else from the stage-1 checkpoint): the two halves can run on two
# machines or in two jobs, with only the small file (and the data) carried between them. Default: both, in one go.
# Sets up .venv on first use (tools/setup_env.sh; on a GPU machine also gsplat and its CUDA kernels). Runs resume
# from their last checkpoint when restarted. With N GPUs each process takes batch_size samples a step: the
# effective batch is N x batch_size and an epoch has 1/N of the steps.
set -e
cd "$(dirname "$0")"
T0=$(date +%s)
took() { echo "$(( $(date +%s) - T0 )) s"; }
GSOCC_GSPLAT_BACKGROUND=1  # the CUDA kernels build while the data is made (gsplat_wait below)
. tools/setup_env.sh

DATA=${1:-auto}
[ $# -gt 0 ] && shift
if [ "$DATA" = auto ]; then
    if [ -d data/nuscenes/v1.0-trainval ]; then DATA=nuscenes; else DATA=synthetic; fi
fi
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" -gt 0 ]; then PROFILE=${PROFILE:-full}; else PROFILE=${PROFILE:-quick}; fi
NGPU=${NGPU:-$GPUS}
if [ "$NGPU" -gt "$GPUS" ]; then
    echo "NGPU=$NGPU but torch sees $GPUS GPU(s)" >&2; exit 1
fi
if [ "$NGPU" -gt 1 ]; then
    RUN="$PY -m torch.distributed.run --standalone --nproc_per_node $NGPU"  # = torchrun, one process per GPU
else
    RUN="$PY"
fi
STAGES=${STAGES:-1 2}
case "$STAGES" in 1|2|"1 2") ;; *) echo "STAGES='$STAGES': 1, 2 or '1 2' (the default)" >&2; exit 1;; esac
echo "[run_gs_occ] data=$DATA profile=$PROFILE gpus=$GPUS NGPU=$NGPU python=$PY"

case "$DATA" in
synthetic)
    if [ "$PROFILE" = quick ]; then
        ROOT=data/synthetic; C1=configs/quick-gsp.txt; C2=configs/quick-gsv.txt; REFINE_STEPS=${REFINE_STEPS:-20}
        GEN="--num_scenes 3 --frames_per_scene 10 --img_size 180 320 --val_scenes 1"
    else
        # 16 streets x 8 keyframes with 12 Hz sweeps, 4 held out: about 3.5 minutes on 16 cores (gsplat's kernels
        # build meanwhile); with stage 1 (4 min), refine (500 steps) and stage 2 (6 min on one H200) under 20 minutes
        ROOT=data/synthetic-full; C1=configs/synthetic-gsp.txt; C2=configs/synthetic-gsv.txt
        REFINE_STEPS=${REFINE_STEPS:-500}
        GEN="--num_scenes 16 --frames_per_scene 8 --img_size 270 480 --val_scenes 4 --workers $(nproc)"
    fi
    if [ ! -f "$ROOT/v1.0-synthetic/sample.json" ]; then
        "$PY" -m tools.data.make_synthetic_nusc --out "$ROOT" $GEN --preview "$ROOT/preview.png"
    fi
    if [ ! -d "$ROOT/depth_gt" ]; then
        "$PY" -m tools.data.export_gt_depth_nusc --dataroot "$ROOT" --version v1.0-synthetic --out depth_gt
    fi
    ;;
nuscenes)
    C1=configs/nusc-gsp.txt; C2=configs/nusc-gsv.txt; REFINE_STEPS=${REFINE_STEPS:-2000}
    if [ ! -d data/nuscenes/v1.0-trainval ]; then
        echo "data/nuscenes/v1.0-trainval not found: see README.md, 'nuScenes, step by step'" >&2; exit 1
    fi
    ;;
ddad)
    C1=configs/ddad-gsp.txt; C2=configs/ddad-gsv.txt; REFINE_STEPS=${REFINE_STEPS:-2000}
    if [ ! -d data/ddad_train_val ]; then
        echo "data/ddad_train_val not found: see README.md, 'DDAD, step by step'" >&2; exit 1
    fi
    ;;
*)
    echo "unknown dataset '$DATA' (synthetic, nuscenes or ddad)" >&2; exit 1
    ;;
esac

S1=$(basename "$C1" .txt); S2=$(basename "$C2" .txt)
gsplat_wait
POSES="logs/$S1-refine/stage1_poses.pt"
if [ "$STAGES" != 2 ]; then
    echo "[run_gs_occ] stage 1 (GSP): $C1 (after $(took))"
    $RUN train.py --config "$C1" --exp_name "$S1" --val_every -1 ${GSP_MINUTES:+--max_minutes "$GSP_MINUTES"} "$@"
    # (the refine phase validates stage 1)
    echo "[run_gs_occ] stage 1 refine (pose net frozen, no cross-view term) (after $(took))"
    $RUN train.py --config "$C1" --exp_name "$S1-refine" --gsp_phase refine --load_weights "logs/$S1/ckpt/last.pt" \
        --max_steps "$REFINE_STEPS" "$@"
fi
if [ "$STAGES" = 1 ]; then
    echo "[run_gs_occ] stage-1 motion of the stage-2 training samples -> $POSES (after $(took))"
    "$PY" -m tools.export_stage1_poses --config "$C2" --stage1_ckpt "logs/$S1-refine/ckpt/last.pt" --out "$POSES" "$@"
    echo "[run_gs_occ] stage 1 done after $(took): STAGES=2 sh run_gs_occ.sh $DATA continues (needs $POSES)"
    exit 0
fi
if [ "$STAGES" = 2 ] && [ -f "$POSES" ]; then
    POSE_ARGS="--stage1_poses $POSES"
    echo "[run_gs_occ] stage 2 (GSV) with the stage-1 pose of $POSES: $C2 (after $(took))"
else
    POSE_ARGS="--stage1_ckpt logs/$S1-refine/ckpt/last.pt"
    echo "[run_gs_occ] stage 2 (GSV) with the stage-1 pose: $C2 (after $(took))"
fi
# shellcheck disable=SC2086
$RUN train.py --config "$C2" --exp_name "$S2" --pose stage1 $POSE_ARGS \
    --val_every -1 ${GSV_MINUTES:+--max_minutes "$GSV_MINUTES"} "$@"
echo "[run_gs_occ] evaluation (after $(took))"
$RUN eval.py --config "$C2" --ckpt "logs/$S2/ckpt/last.pt"
echo "[run_gs_occ] done after $(took)"
