#!/bin/sh
# N GPUs (torchrun, DDP + SyncBatchNorm) against 1 GPU: stage 2 on the same synthetic data, the same epochs and
# the same options, then the same evaluation; a table of throughput (samples/s), data wait, peak memory and the
# metrics (tools/ddp_report.py). Both runs see the same samples; the N-GPU run makes 1/N of the optimiser steps
# with an N times larger effective batch (same lr).
#
#   sh tools/bench_ddp.sh          # on a machine with >= 2 GPUs: about 5-7 minutes on H200s, plus gsplat's
#                                  # first build (~90 s) on a fresh machine
#
# Environment: PY (default python3), NGPU (default 2), EPOCHS (default 16), DATA (default data/synthetic-ddp,
# generated when missing: 6 scenes x 12 frames at 270x480, 1 held out), BENCH_OUT (default logs/bench_ddp),
# WORKERS (generator processes, default 16), SHARE=1 (NGPU processes on fewer GPUs, --share_gpu: exercises the
# multi-process path on a machine of one GPU; its throughput says nothing about scaling), BENCH_ARGS (more training
# options, e.g. a smaller network for a check on the CPU). Results: $BENCH_OUT/bench_ddp.{md,json}, logs $BENCH_OUT/ddp-*.log.
set -e
cd "$(dirname "$0")/.."
PY=${PY:-python3}; NGPU=${NGPU:-2}; EPOCHS=${EPOCHS:-16}; DATA=${DATA:-data/synthetic-ddp}; RES=${BENCH_OUT:-logs/bench_ddp}
mkdir -p "$RES"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
SHARE_ARG=""
if [ "${SHARE:-0}" = 1 ]; then  # NGPU processes on the GPUs there are (gloo): the code path, not a speed measure
    SHARE_ARG="--share_gpu true"
elif [ "$GPUS" -lt "$NGPU" ]; then
    echo "bench_ddp.sh: NGPU=$NGPU but torch sees $GPUS GPU(s) (SHARE=1 puts several processes on one)" >&2; exit 1
fi
if [ ! -f "$DATA/v1.0-synthetic/sample.json" ]; then
    $PY -m tools.data.make_synthetic_nusc --out "$DATA" --num_scenes 6 --frames_per_scene 12 --img_size 270 480 \
        --val_scenes 1 --workers "${WORKERS:-16}"
fi
[ -d "$DATA/depth_gt" ] || $PY -m tools.data.export_gt_depth_nusc --dataroot "$DATA" --version v1.0-synthetic --out depth_gt
$PY -m tools.gsplat_build  # gsplat's kernels once, before any training process starts
ARGS="--config configs/synthetic-gsv.txt --dataroot $DATA --train_split $DATA/splits/train.txt \
    --val_split $DATA/splits/val.txt --pose gt --num_epochs $EPOCHS --max_minutes 0 --val_every -1 --log_every 5 \
    --image_every 0 --save_every 1000000 --resume false --log_dir $RES $SHARE_ARG ${BENCH_ARGS:-}"
# the checkpoint keeps its model options but no paths (options.path_options): eval gets the data paths here, not
# --config, whose model options would override the run's BENCH_ARGS
EVAL_ARGS="--dataroot $DATA --val_split $DATA/splits/val.txt --depth_root depth_gt --occ_root gts --sem_root sem"
for n in 1 "$NGPU"; do
    if [ "$n" = 1 ]; then LAUNCH="$PY"; else LAUNCH="$PY -m torch.distributed.run --standalone --nproc_per_node $n"; fi
    echo "[bench_ddp] $n GPU(s): training"
    # shellcheck disable=SC2086
    $LAUNCH train.py $ARGS --exp_name "ddp-${n}gpu" > "$RES/ddp-${n}gpu.log" 2>&1 || { tail -30 "$RES/ddp-${n}gpu.log"; exit 1; }
    echo "[bench_ddp] $n GPU(s): evaluation"
    $PY eval.py $EVAL_ARGS --ckpt "$RES/ddp-${n}gpu/ckpt/last.pt" --out_dir "$RES/ddp-${n}gpu/eval" >> "$RES/ddp-${n}gpu.log" 2>&1 \
        || { tail -30 "$RES/ddp-${n}gpu.log"; exit 1; }
    if [ "$n" != 1 ]; then  # the same checkpoint evaluated by n processes: the numbers must not change
        # shellcheck disable=SC2086
        $LAUNCH eval.py $EVAL_ARGS --ckpt "$RES/ddp-${n}gpu/ckpt/last.pt" --out_dir "$RES/ddp-${n}gpu/eval-ranks" $SHARE_ARG \
            >> "$RES/ddp-${n}gpu.log" 2>&1 || { tail -30 "$RES/ddp-${n}gpu.log"; exit 1; }
    fi
done
$PY tools/ddp_report.py "$RES/ddp-1gpu" "$RES/ddp-${NGPU}gpu" --out "$RES/bench_ddp"
