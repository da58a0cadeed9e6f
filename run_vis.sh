#!/bin/sh
# Pictures and videos of a trained stage-2 (GSV) model, or of the ground truth alone (GT_ONLY=1).
#
#   CKPT=logs/quick-gsv/ckpt/last.pt sh run_vis.sh --config configs/quick-gsv.txt   # model options: the checkpoint's
#   CKPT=logs/nusc-gsv/ckpt/last.pt SCENES="scene-0916" sh run_vis.sh --config configs/nusc-gsv.txt
#   GT_ONLY=1 sh run_vis.sh --config configs/quick-gsv.txt           # inputs + Occ3D ground truth, no model
# A checkpoint keeps no paths: the data options (--config, --dataroot...) come from this command.
#
# Environment: CKPT (checkpoint), OUT (default vis), SCENES (space separated, default all of the split),
# MAX_FRAMES (0 = all), FPS (video frame rate), SEM_ONLY=1 (videos of the 3D occupancy views only).
# Other arguments go to tools/visualize.py (which takes every option of train.py: --config, --dataroot, --split).
# Writes OUT/<scene>/<index>_{inputs,depth,sem,occ,occ_gt,frame}.png and OUT/<scene>/<scene>.{mp4,gif}.
set -e
cd "$(dirname "$0")"
. tools/setup_env.sh

OUT=${OUT:-vis}
if [ "${GT_ONLY:-0}" = 1 ]; then
    MODEL="--gt_only"
else
    [ -n "${CKPT:-}" ] || { echo "set CKPT to a stage-2 checkpoint, or GT_ONLY=1" >&2; exit 1; }
    MODEL="--ckpt $CKPT"
fi
if [ -n "${SCENES:-}" ]; then
    # shellcheck disable=SC2086
    "$PY" -m tools.visualize --out_dir "$OUT" --max_frames "${MAX_FRAMES:-0}" $MODEL --scenes $SCENES "$@"
else
    # shellcheck disable=SC2086
    "$PY" -m tools.visualize --out_dir "$OUT" --max_frames "${MAX_FRAMES:-0}" $MODEL "$@"
fi

SEM=""
[ "${SEM_ONLY:-0}" = 1 ] && SEM="--sem_only"
for scene_dir in "$OUT"/*/; do
    # shellcheck disable=SC2086
    "$PY" gen_scene_video.py "$scene_dir" --fps "${FPS:-4}" $SEM
done
