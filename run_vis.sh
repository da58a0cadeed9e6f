#!/usr/bin/env bash
# Pictures and videos of a trained stage-2 (GSV) model, or of the ground truth alone (GT_ONLY=1).
#
#   CKPT=logs/nusc-gsv/ckpt/last.pt SCENES="scene-0916" ./run_vis.sh --dataroot data/nuscenes
#   GT_ONLY=1 ./run_vis.sh --dataroot data/synthetic --version v1.0-synthetic --occ_root gts
#
# Environment: CKPT (checkpoint), CONFIG (optional config file), OUT (default vis), SCENES (space separated,
# default all of the split), MAX_FRAMES (0 = all), FPS (video frame rate), SEM_ONLY=1 (videos of the 3D
# occupancy views only), PYTHON. Other arguments go to tools/visualize.py (any option of train.py).
# Writes OUT/<scene>/<index>_{inputs,depth,sem,occ,occ_gt,frame}.png and OUT/<scene>/<scene>.{mp4,gif}.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-vis}
args=(--out_dir "$OUT" --max_frames "${MAX_FRAMES:-0}")
[ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")
[ -n "${SCENES:-}" ] && args+=(--scenes $SCENES)
if [ "${GT_ONLY:-0}" = 1 ]; then
    args+=(--gt_only)
else
    args+=(--ckpt "${CKPT:?set CKPT to a stage-2 checkpoint, or GT_ONLY=1}")
fi
"$PYTHON" tools/visualize.py "${args[@]}" "$@"

video_args=(--fps "${FPS:-4}")
[ "${SEM_ONLY:-0}" = 1 ] && video_args+=(--sem_only)
for scene_dir in "$OUT"/*/; do
    "$PYTHON" gen_scene_video.py "$scene_dir" "${video_args[@]}"
done
