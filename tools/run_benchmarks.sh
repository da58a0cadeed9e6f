#!/bin/sh
# The GPU benchmarks of the README, one phase at a time (each phase fits a 10-minute slot or runs in the
# background; results land in logs/<run>/eval/metrics.{json,md} and logs/bench/).
#
#   sh tools/run_benchmarks.sh pipeline    # 2 GPUs, ~10 min: no-GT-pose pipeline on a small synthetic set + fixture
#   sh tools/run_benchmarks.sh occupancy   # 1 GPU, ~10 min: stage-2 criteria side by side on a small synthetic set
#                                          #   (OCC_VARIANTS, recorded poses), scored by occupancy and its health
#   sh tools/run_benchmarks.sh gpu-default # 1 GPU, ~21 min (detached): run_gs_occ.sh timed + stage 2 on recorded
#                                          #   poses on its data (+ GD_VARIANTS) + stage 1 per held-out street
#   sh tools/run_benchmarks.sh stage1-heldout  # 1 GPU, <= 9 min: stage 1 per held-out street at sweep and keyframe
#                                          #   spacing, motion by alignment vs the pose net, + the real fixture
#   sh tools/run_benchmarks.sh data        # synthetic benchmark set (18 scenes x 30 frames, 270x480) + LiDAR depth
#   sh tools/run_benchmarks.sh bench       # render / training-iteration speed: GSV (gsplat, torch) vs volume rendering
#   sh tools/run_benchmarks.sh step        # stage-2 training step at the paper config: old code path vs new (+ profile)
#   sh tools/run_benchmarks.sh speed       # 1 GPU, ~8 min: today's stage-2 step vs each speed option of issue 20, both
#                                          #   networks, components, profile (docs/results/speed_notes.md)
#   sh tools/run_benchmarks.sh ddp         # 2 GPUs vs 1 (tools/bench_ddp.sh; needs a machine with >= 2 GPUs)
#   sh tools/run_benchmarks.sh cpu-default # the README's CPU default (sh run_gs_occ.sh without GPU, from scratch)
#                                          #   -> docs/results/cpu_default/{metrics.json,metrics.md,run.md}
#   sh tools/run_benchmarks.sh synthetic   # stage 1 with and without GSP, stage 2 with GT pose and with stage-1 pose
#   sh tools/run_benchmarks.sh fixture     # real nuScenes scene-0916: stage 1 with / without GSP, stage 2 with GT pose
#   sh tools/run_benchmarks.sh fixture-stage1   # the same, stage 1 only
#   sh tools/run_benchmarks.sh fixture-gsv # real scene-0916, stage 2, recorded poses, no labels: the default criterion
#                                          # vs the collapsing one (alpha entropy) vs no entropy, untrained baseline,
#                                          # and tools/diagnostics/gsv_diagnose.py on the first two (all at once on one GPU)
#   sh tools/run_benchmarks.sh landscape   # stage-1 losses vs a depth scale factor on exact synthetic depth (CPU)
#
# FIXTURE=<nuScenes fixture root> (default ../shared/fixtures/nuscenes-scene-0916); PY=<python> (default python3);
# training budgets in minutes: GSP_MIN (stage 1, default 6), REFINE_MIN (1.5), GSV_MIN (stage 2, 10), or in steps for
# stage 2: GSV_STEPS (overrides GSV_MIN).
set -e
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SYN=data/synthetic-full
FIXTURE=${FIXTURE:-../shared/fixtures/nuscenes-scene-0916}
GSP_MIN=${GSP_MIN:-6}; REFINE_MIN=${REFINE_MIN:-1.5}; GSV_MIN=${GSV_MIN:-10}
mkdir -p logs

train_eval() {  # $1 = run name, rest = train.py options; evaluates the last checkpoint afterwards
    name=$1; shift
    if ! $PY train.py --exp_name "$name" --val_every -1 "$@" > "logs/$name.log" 2>&1; then
        echo "[failed] $name: training ($(tail -1 "logs/$name.log" | cut -c1-200); logs/$name.log)"; return 0; fi
    $PY eval.py "$@" --ckpt "logs/$name/ckpt/last.pt" --out_dir "logs/$name/eval" >> "logs/$name.log" 2>&1 \
        || { echo "[failed] $name: evaluation (logs/$name.log)"; return 0; }
    echo "[done] $name"
}

fixture_split() {  # $1 = a nuScenes fixture root, $2 = a folder, $3 = held-out fraction (default 0.25): the last
    # frames of the scene in $2/fx_val.txt, the first in $2/train_gap.txt without the last of them (its neighbour is
    # held out: no training sample then warps a held-out image)
    mkdir -p "$2"
    $PY -m tools.data.make_split --dataroot "$1" --version v1.0-mini --val_fraction "${3:-0.25}" --out_dir "$2" \
        --name fx > "$2/make_split.log" 2>&1 || { cat "$2/make_split.log"; return 1; }
    grep -v '^#' "$2/fx_train.txt" | sed '$d' > "$2/train_gap.txt"
}

on_gpu() {  # $1 = GPU id, rest = a command (train_eval ...) run with only that GPU visible
    gpu=$1; shift
    (export CUDA_VISIBLE_DEVICES=$gpu; "$@")
}

case "$1" in
pipeline)
    # The method without any ground-truth pose on a small synthetic set (SYN_SCENES streets x SYN_FRAMES keyframes
    # with 12 Hz camera sweeps, 2 held out), beside stage 2 on recorded poses (same steps), and the real-fixture
    # stage-2 variants: two GPUs (G0, G1), about 10 minutes. Stage 1 (S1_MIN) | fixture stage 2, then stage 2 on
    # stage-1 poses | recorded poses (with and without 2D labels) | the stage-1 refine phase (GSV_STEPS steps).
    SYNP=${SYNP:-data/synthetic-pipe}; G0=${G0:-0}; G1=${G1:-1}; S1_MIN=${S1_MIN:-4}; N=${GSV_STEPS:-800}
    [ -f $SYNP/v1.0-synthetic/sample.json ] || $PY -m tools.data.make_synthetic_nusc --out $SYNP \
        --num_scenes "${SYN_SCENES:-8}" --frames_per_scene "${SYN_FRAMES:-12}" --img_size 270 480 --val_scenes 2 \
        --workers "${WORKERS:-28}" > logs/pipe-data.log 2>&1
    mkdir -p $SYNP/depth_gt  # training reads no depth; the held-out scenes' LiDAR depth is exported meanwhile
    $PY -m tools.data.export_gt_depth_nusc --dataroot $SYNP --version v1.0-synthetic --out depth_gt \
        --split $SYNP/splits/val.txt >> logs/pipe-data.log 2>&1 &
    SD="--dataroot $SYNP --train_split $SYNP/splits/train.txt --val_split $SYNP/splits/val.txt"
    FX="--config configs/fixture-gsv.txt --dataroot $FIXTURE --num_workers 3"
    on_gpu "$G1" train_eval pipe-gsp --config configs/synthetic-gsp.txt $SD --max_minutes "$S1_MIN" &
    for v in "default:" "no-entropy:--w_entropy 0" "softmax:--opacity softmax"; do
        on_gpu "$G0" train_eval "fixture-gsv-${v%%:*}" $FX ${v#*:} --max_minutes "$S1_MIN" &
    done
    wait
    $PY eval.py --config configs/synthetic-gsp.txt $SD --adjacent keyframe --ckpt logs/pipe-gsp/ckpt/last.pt \
        --out_dir logs/pipe-gsp/eval-keyframes > logs/pipe-gsp-keyframes.log 2>&1 &
    C2="--config configs/synthetic-gsv.txt $SD --max_steps $N --max_minutes ${S2_MIN:-4}"
    on_gpu "$G1" train_eval pipe-gsv --pose stage1 --stage1_ckpt logs/pipe-gsp/ckpt/last.pt $C2 &
    on_gpu "$G1" train_eval pipe-gsp-refine --config configs/synthetic-gsp.txt $SD --gsp_phase refine \
        --load_weights logs/pipe-gsp/ckpt/last.pt --max_minutes 1.5 &
    on_gpu "$G0" train_eval pipe-gsv-gtpose --pose gt $C2 &
    on_gpu "$G0" train_eval pipe-gsv-gtpose-nosem --pose gt --use_sem false $C2 &
    wait
    ;;
occupancy)
    # Stage-2 criteria side by side on ONE GPU: SYN_SCENES synthetic streets (2 held out) with 12 Hz sweeps, recorded
    # poses, 2D labels, all variants training at once for GSV_MIN minutes; each evaluated on the held-out streets
    # (SYN_VAL of them, default 2)
    # (occupancy, opacity AUC and read-out thresholds, fog statistics, depth); one table: logs/occ-summary.md.
    # OCC_VARIANTS: lines "name:options over configs/synthetic-gsv.txt" (or OCC_VARIANTS_FILE: a file of them).
    # SYN_SWEEPS: camera sweeps per keyframe of the generated set (default 5, nuScenes' 12 Hz; 0 = keyframes only, 6x
    # fewer images, all the recorded-pose runs on keyframe pairs need).
    # OCC_SUBSET=N: also writes $SYNP/splits/first<N>_train.txt, the training split of the first N streets only (a
    # variant's "--train_split $SYNP/splits/first<N>_train.txt" then trains on fewer streets, same held-out ones).
    # OCC_EVAL_TRAIN=N: each run is also evaluated on N training samples (logs/occ-<name>/eval-train, a row of the
    # summary: the gap to the held-out streets; occupancy only, so the training streets need no LiDAR depth). A variant with --save_pred logs/pred-<name> writes its held-out
    # volumes there (not the training samples'), and logs/occ-errors.md compares them (tools/diagnostics/occ_errors.py).
    SYNP=${SYNP:-data/synthetic-pipe}; GB=""
    if command -v nvidia-smi > /dev/null 2>&1; then  # gsplat's kernels build while the data is made
        $PY -m tools.gsplat_build > logs/gsplat_build.log 2>&1 & GB=$!
    fi
    [ -f $SYNP/v1.0-synthetic/sample.json ] || $PY -m tools.data.make_synthetic_nusc --out $SYNP \
        --num_scenes "${SYN_SCENES:-8}" --frames_per_scene "${SYN_FRAMES:-12}" --img_size 270 480 \
        --val_scenes "${SYN_VAL:-2}" --sweeps_per_keyframe "${SYN_SWEEPS:-5}" --workers "${WORKERS:-14}" \
        > logs/occ-data.log 2>&1
    [ -n "${OCC_VARIANTS_FILE:-}" ] && OCC_VARIANTS=$(grep -v '^#' "$OCC_VARIANTS_FILE")
    # the held-out streets' LiDAR depth (evaluation); every sample's when a variant trains on it (--w_depth_oracle)
    DSPLIT="--split $SYNP/splits/val.txt"; case "${OCC_VARIANTS:-}" in *w_depth_oracle*) DSPLIT="";; esac
    [ -d $SYNP/depth_gt ] && [ -n "$DSPLIT" ] || $PY -m tools.data.export_gt_depth_nusc --dataroot $SYNP \
        --version v1.0-synthetic --out depth_gt $DSPLIT >> logs/occ-data.log 2>&1
    if [ -n "${OCC_SUBSET:-}" ]; then  # the first N training streets (scene names in order), the same held-out ones
        FIRST=$($PY -c "import json, sys; n = sorted(s['name'] for s in json.load(open(sys.argv[1]))); \
v = int(sys.argv[3]); print(' '.join(n[:int(sys.argv[2])] + n[len(n) - v:]))" $SYNP/v1.0-synthetic/scene.json \
            "$OCC_SUBSET" "${SYN_VAL:-2}")
        $PY -m tools.data.make_split --dataroot $SYNP --version v1.0-synthetic --scenes $FIRST \
            --val_fraction "$($PY -c "print(${SYN_VAL:-2} / ($OCC_SUBSET + ${SYN_VAL:-2}))")" --out_dir $SYNP/splits \
            --name "first$OCC_SUBSET" >> logs/occ-data.log 2>&1
        grep -v "^#" $SYNP/splits/first${OCC_SUBSET}_val.txt | sort > logs/occ-subset-val.txt
        grep -v "^#" $SYNP/splits/val.txt | sort | cmp -s - logs/occ-subset-val.txt \
            || { echo "[occupancy] first$OCC_SUBSET: its held-out streets are not those of val.txt"; exit 1; }
    fi
    [ -z "$GB" ] || wait $GB || true
    echo "[occupancy] data and kernels ready"
    # inside tools/device_run.sh: training ends early enough for the evaluation (OCC_EVAL_S seconds) to fit
    GSV_MIN=$($PY -m tools.time_budget "$GSV_MIN" "${OCC_EVAL_S:-150}")
    SD="--dataroot $SYNP --train_split $SYNP/splits/train.txt --val_split $SYNP/splits/val.txt"
    VARIANTS=${OCC_VARIANTS:-"default:
softmax-noent:--opacity softmax --w_entropy 0 --w_tv 0"}
    echo "$VARIANTS" | { while IFS= read -r v; do
        [ -n "$v" ] || continue
        { train_eval "occ-${v%%:*}" --config configs/synthetic-gsv.txt $SD --pose gt --max_minutes "$GSV_MIN" \
              --num_workers "${OCC_WORKERS:-2}" --eval_rayiou false ${v#*:}
          [ -z "${OCC_EVAL_TRAIN:-}" ] || $PY eval.py --config configs/synthetic-gsv.txt $SD --pose gt \
              --num_workers "${OCC_WORKERS:-2}" --eval_rayiou false ${v#*:} --val_split $SYNP/splits/train.txt \
              --eval_max_samples "$OCC_EVAL_TRAIN" --eval_depth false --save_pred "" \
              --ckpt "logs/occ-${v%%:*}/ckpt/last.pt" \
              --out_dir "logs/occ-${v%%:*}/eval-train" >> "logs/occ-${v%%:*}.log" 2>&1; } &
    done; wait; }
    $PY tools/occ_summary.py logs/occ-* $(ls -d logs/occ-*/eval-train 2>/dev/null) --json logs/occ-summary.json \
        | tee logs/occ-summary.md
    # variants that saved their held-out volumes (--save_pred logs/pred-<name>): where they are wrong, side by side
    PRED=$(ls -d logs/pred-* 2>/dev/null || true)  # none: ls exits 2, which set -e would make the exit status
    # shellcheck disable=SC2086
    [ -z "$PRED" ] || $PY -m tools.diagnostics.occ_errors --occ_root $SYNP/gts --pred $PRED --out logs/occ-errors.md \
        > logs/occ-errors.log 2>&1 || echo "[occupancy] occ_errors failed: logs/occ-errors.log"
    ;;
gpu-default)
    # The GPU default and the occupancy floor at once on ONE GPU from a bare machine (about 21 minutes: run it
    # detached, e.g. under setsid, across device calls): `sh run_gs_occ.sh` as a user runs it (data, stage 1,
    # refine, stage 2 on stage-1 poses, eval; timed), and on the same data, once stage 1 is done, stage 2 on recorded
    # poses with the same options (the number the stage-1 pose is compared with), the untrained network (the baseline),
    # plus GD_VARIANTS ("name:options" lines over configs/synthetic-gsv.txt, recorded poses); after the refine phase,
    # stage 1 per held-out street at
    # sweep and keyframe spacing. GD_MIN: minutes of every stage-2 run, run_gs_occ.sh's too (default 6, its config's).
    # GD_FIXTURE: a nuScenes fixture root with depth_gt/ and gts_lidar/: stage 2 on it too (configs/fixture-gsv.txt,
    # recorded poses, no labels in training; trained on the first 3/4 of its keyframes, evaluated on them, on the last
    # quarter and untrained on that quarter) and stage 1 (configs/fixture-gsp.txt, 4 + 1 min, keyframe spacing).
    # GD_GTPOSE=0: none of the recorded-pose runs (nor GD_VARIANTS): run_gs_occ.sh alone on the GPU, as a user runs it
    # (about 17 minutes), stage 1 per held-out street still measured.
    # GD_STAGES=1 / 2 (run_gs_occ.sh's STAGES; with GD_GTPOSE=0): the run in two device calls that need not share a
    # machine: 1 = data, stage 1, refine, the stage-1 motion exported (copied to GD_PACK) and stage 1 per held-out
    # street (about 9.5 minutes); 2 = stage 2 on that motion and its evaluation (about 7.5 minutes), given
    # logs/synthetic-gsp-refine/stage1_poses.pt and data/synthetic-full (its keyframes suffice: data/syn-kf16's are
    # the same, tools/data/make_synthetic_nusc draws the same keyframes with and without the sweeps).
    # Results in GD_OUT (logs/gpu-default): summary.md / .json (stage 2), errors.md (occ_errors of the recorded-pose
    # runs), stage1/summary.md / .json, logs.tar.gz;
    # copied to GD_PACK when set.
    T0=$(date +%s); O=${GD_OUT:-logs/gpu-default}; GD_STAGES=${GD_STAGES:-1 2}
    mkdir -p "$O"
    # GD_ARGS: train.py options for every training of run_gs_occ.sh (with GD_STAGES=1: stage 1 and its refine only)
    STAGES=$GD_STAGES GSOCC_PYTHON=$PY NGPU=1 GSV_MINUTES=${GD_MIN:-6} sh run_gs_occ.sh synthetic ${GD_ARGS:-} \
        > "$O/run_gs_occ.log" 2>&1 &
    MAIN=$!
    if [ "$GD_STAGES" != 2 ]; then
        until grep -q "^\[run_gs_occ\] stage 1 (GSP)" "$O/run_gs_occ.log" 2>/dev/null; do
            kill -0 $MAIN 2>/dev/null || { cat "$O/run_gs_occ.log"; exit 1; }
            sleep 5
        done
        echo "[gpu-default] data ready after $(( $(date +%s) - T0 )) s"
        # stage 1 has the GPU to itself (it is the critical path: the other runs end before run_gs_occ.sh's stage 2)
        until grep -q "^\[run_gs_occ\] stage 1 refine" "$O/run_gs_occ.log" 2>/dev/null; do
            kill -0 $MAIN 2>/dev/null || break
            sleep 5
        done
        echo "[gpu-default] stage 1 done after $(( $(date +%s) - T0 )) s"
    fi
    GT="--config configs/synthetic-gsv.txt --pose gt --max_minutes ${GD_MIN:-6}"
    if [ "${GD_GTPOSE:-1}" = 1 ]; then  # GD_GTPOSE=0: run_gs_occ.sh alone on the GPU (its steps as a user gets them)
        { $PY -m tools.init_checkpoint $GT --exp_name gd-untrained > logs/gd-untrained.log 2>&1  # the baseline
          $PY eval.py $GT --ckpt logs/gd-untrained/ckpt/last.pt --out_dir logs/gd-untrained/eval >> logs/gd-untrained.log 2>&1
        } &
        printf 'default:\n%s\n' "${GD_VARIANTS:-}" | { while IFS= read -r v; do
            [ -n "$v" ] || continue
            train_eval "gd-gtpose-${v%%:*}" $GT --save_pred "logs/pred-gd-gtpose-${v%%:*}" ${v#*:} &
        done; wait
        # the default on its own training streets too: the gap to the held-out ones says what more streets would buy
        $PY eval.py $GT --val_split data/synthetic-full/splits/train.txt --ckpt logs/gd-gtpose-default/ckpt/last.pt \
            --out_dir logs/gd-gtpose-default/eval-train >> logs/gd-gtpose-default.log 2>&1; } &
    fi
    if [ -n "${GD_FIXTURE:-}" ]; then  # the real fixture beside them (its LiDAR depth and labels in depth_gt, gts_lidar)
        # read from a private copy: a device call that carries GD_FIXTURE replaces it, and a run reading it then
        # loses its images mid-run (seen: "image missing" after 52 s)
        rm -rf logs/gd-fixture-data; cp -r "$GD_FIXTURE" logs/gd-fixture-data; GD_FIXTURE=logs/gd-fixture-data
        # stage 2 trained on the first 3/4 of the scene's keyframes (less the last, fixture_split); evaluated on them
        # ("its frames"), on the last quarter it never trained on, and the untrained network on that quarter (does
        # training help where unseen?)
        SPL=logs/fixture_split
        fixture_split "$GD_FIXTURE" $SPL
        FXC="--config configs/fixture-gsv.txt --dataroot $GD_FIXTURE --num_workers 4 --occ_root gts_lidar
             --eval_occ true --eval_rayiou false --train_split $SPL/train_gap.txt"
        { $PY train.py $FXC --exp_name gd-fixture --max_minutes "${GD_MIN:-6}" --val_every -1 > logs/gd-fixture.log 2>&1
          $PY -m tools.init_checkpoint $FXC --exp_name gd-fixture-untrained >> logs/gd-fixture.log 2>&1
          for e in "eval:gd-fixture:train_gap" "eval-heldout:gd-fixture:fx_val" "eval-heldout:gd-fixture-untrained:fx_val"; do
              set -- $(echo "$e" | tr ':' ' ')
              $PY eval.py $FXC --val_split "$SPL/$3.txt" --ckpt "logs/$2/ckpt/last.pt" --out_dir "logs/$2/$1" \
                  >> logs/gd-fixture.log 2>&1
          done; } &
        F1="--config configs/fixture-gsp.txt --dataroot $GD_FIXTURE --num_workers 4 --val_every -1"
        { $PY train.py $F1 --exp_name gd-fixture-gsp --max_minutes 4 > logs/gd-fixture-gsp.log 2>&1 \
          && $PY train.py $F1 --exp_name gd-fixture-gsp-refine --gsp_phase refine --max_minutes 1 \
                 --load_weights logs/gd-fixture-gsp/ckpt/last.pt >> logs/gd-fixture-gsp.log 2>&1 \
          && $PY eval.py $F1 --ckpt logs/gd-fixture-gsp-refine/ckpt/last.pt --adjacent keyframe \
                 --out_dir "$O/stage1-fixture" >> logs/gd-fixture-gsp.log 2>&1; } &
    fi
    until grep -Eq "^\[run_gs_occ\] (stage 2|stage-1 motion)" "$O/run_gs_occ.log" 2>/dev/null; do
        kill -0 $MAIN 2>/dev/null || break
        sleep 5
    done
    # (--use_sem at evaluation: the depth error per class of the synthetic 2D labels, e.g. the near parked cars)
    S1="--config configs/synthetic-gsp.txt --ckpt logs/synthetic-gsp-refine/ckpt/last.pt --num_workers 2"
    S1="$S1 --use_sem true --sem_root sem"
    if [ "$GD_STAGES" != 2 ]; then
        for sp in sweep keyframe; do
            $PY eval.py $S1 --adjacent $sp --out_dir "$O/stage1-$sp" > "$O/stage1-$sp.log" 2>&1 &
        done
    fi
    RC=0; wait $MAIN || RC=$?
    echo "[gpu-default] run_gs_occ.sh exit $RC after $(( $(date +%s) - T0 )) s"
    wait
    FXS=""; [ -f "$O/stage1-fixture/metrics.json" ] && FXS="fixture:keyframe=$O/stage1-fixture/metrics.json"
    if [ "$GD_STAGES" != 2 ]; then  # (stage 1 is not in a GD_STAGES=2 run)
        $PY tools/stage1_summary.py --main default --out_dir "$O/stage1" default:sweep="$O/stage1-sweep/metrics.json" \
            default:keyframe="$O/stage1-keyframe/metrics.json" $FXS > "$O/stage1-summary.log" 2>&1 \
            || cat "$O/stage1-summary.log"
    fi
    $PY tools/occ_summary.py logs/synthetic-gsv logs/gd-gtpose-* logs/gd-gtpose-default/eval-train logs/gd-untrained \
        logs/gd-fixture logs/gd-fixture/eval-heldout logs/gd-fixture-untrained/eval-heldout --json "$O/summary.json" \
        > "$O/summary.md" || true
    cat "$O/summary.md" "$O/stage1/summary.md" 2>/dev/null || true
    # where the recorded-pose volumes are wrong (tools/diagnostics/occ_errors.py on their saved held-out volumes)
    PRED=$(ls -d logs/pred-gd-gtpose-* 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$PRED" ] || $PY -m tools.diagnostics.occ_errors --occ_root data/synthetic-full/gts --pred $PRED \
        --out "$O/errors.md" > "$O/errors.log" 2>&1 || true
    for r in logs/synthetic-gsp logs/synthetic-gsp-refine logs/synthetic-gsv logs/gd-gtpose-* logs/gd-untrained logs/gd-fixture \
             logs/gd-fixture-untrained logs/gd-fixture-gsp logs/gd-fixture-gsp-refine; do
        [ -d "$r" ] || continue
        n=$(basename "$r"); mkdir -p "$O/runs/$n"
        cp "$r/options.txt" "$r/train_log.jsonl" "$O/runs/$n/" 2>/dev/null || true
        cp "$r/eval/metrics.json" "$r/eval/metrics.md" "$O/runs/$n/" 2>/dev/null || true
        if [ -d "$r/eval-train" ]; then
            cp "$r/eval-train/metrics.json" "$O/runs/$n/train.metrics.json" 2>/dev/null || true
            cp "$r/eval-train/metrics.md" "$O/runs/$n/train.metrics.md" 2>/dev/null || true
        fi
        if [ -d "$r/eval-heldout" ]; then
            cp "$r/eval-heldout/metrics.json" "$O/runs/$n/heldout.metrics.json" 2>/dev/null || true
            cp "$r/eval-heldout/metrics.md" "$O/runs/$n/heldout.metrics.md" 2>/dev/null || true
        fi
        [ -f "logs/$n.log" ] && tail -c 20000 "logs/$n.log" > "$O/runs/$n/console.log"
    done
    cp data/synthetic-full/preview.png "$O/" 2>/dev/null || true
    tar czf "$O/logs.tar.gz" -C "$O" --exclude=logs.tar.gz . 2>/dev/null || true
    if [ -n "${GD_PACK:-}" ]; then
        mkdir -p "$GD_PACK"
        for f in summary.md summary.json errors.md logs.tar.gz; do [ -f "$O/$f" ] && cp "$O/$f" "$GD_PACK/"; done
        # GD_STAGES=1: the stage-1 motion that a GD_STAGES=2 run (another call, another machine) trains stage 2 with
        [ -f logs/synthetic-gsp-refine/stage1_poses.pt ] && cp logs/synthetic-gsp-refine/stage1_poses.pt "$GD_PACK/"
        [ -f "$O/stage1/summary.md" ] && cp "$O/stage1/summary.md" "$GD_PACK/stage1.md"
    fi
    echo "[gpu-default] all done after $(( $(date +%s) - T0 )) s"
    ;;
stage1-heldout)
    # Issue 18, one GPU, <= 9 minutes from a bare machine: a synthetic set (SH_SCENES streets, SH_VAL held out,
    # SH_FRAMES keyframes with 12 Hz sweeps), stage 1 trained at once on the one GPU until BUDGET_S - 110 s, then
    # eval.py per street on the held-out streets at sweep and keyframe spacing. Runs (docs/results/stage1_heldout.md):
    #   fix       --gsp_pose net_solve --train_sweeps true, main then refine: the pose net in training, the motion
    #             measured by aligning the images through the depth at prediction; sweeps as training items
    #   old       the stage 1 of before (pose net, keyframe items), as long; evaluated as it is (old) and with the
    #             alignment at prediction (old+align, no retraining)
    #   fixture   the fix on the real keyframes-only fixture (when FIXTURE or shared/fixtures/... holds it)
    # Results: $SH_OUT/summary.json, summary.md, logs.tar.gz (options, logs, train_log.jsonl, metrics of every run),
    # also copied to $SH_PACK when set (e.g. SH_PACK=$OUT). S1_EXTRA: options for every run (the CPU test).
    # S1_VARIANTS: "name:options" lines, each another run over the fix's options (e.g. "stride6:--frame_stride 6").
    # FX_S1_VARIANTS: the same over the fixture run (runs fixture-<name>, e.g. "lock:--gsp_scale_lock true").
    # S1_OLD=0: leaves the stage 1 of before out. SH_SYN=0: the fixture runs alone (no synthetic set, no `fix`;
    # 60 s kept for the evaluations instead of 110): e.g. a short call that compares fixture variants.
    # BUDGET_S: seconds from now for the whole benchmark; default 530, or what is left before DEADLINE_AT (set by
    # tools/device_run.sh, whose kernel build came before) less 15 s for packing
    T0=$(date +%s); BUDGET=${BUDGET_S:-530}; O=${SH_OUT:-logs/stage1-heldout}; S=${SH_DATA:-data/synthetic-heldout}
    [ -n "${BUDGET_S:-}" ] || [ -z "${DEADLINE_AT:-}" ] || BUDGET=$(( DEADLINE_AT - T0 - 15 ))
    SYN=${SH_SYN:-1}; RESERVE=110; [ "$SYN" = 1 ] || RESERVE=60
    mkdir -p "$O"
    OA=$(cd "$O" && pwd)  # absolute: the fixture's depth folder is named relative to nothing
    $PY -m tools.gsplat_build > "$O/gsplat.log" 2>&1 &
    BUILD=$!
    FX=""
    for f in "$FIXTURE" shared/fixtures/nuscenes-scene-0916; do [ -f "$f/v1.0-mini/sample.json" ] && FX=$f && break; done
    FXDEPTH=$OA/fixture_depth
    if [ -n "$FX" ] && [ -d "$FX/depth_gt" ]; then  # exported already (a fixture packed without its LiDAR sweeps)
        FXDEPTH=$(cd "$FX/depth_gt" && pwd)
    elif [ -n "$FX" ]; then  # LiDAR depth of the fixture into our own folder (the fixture may be read-only)
        mkdir -p "$O/fixture_depth"
        $PY -m tools.data.export_gt_depth_nusc --dataroot "$FX" --version v1.0-mini --out "$OA/fixture_depth" \
            > "$O/fixture-depth.log" 2>&1 &
    fi
    if [ "$SYN" = 1 ]; then
        [ -f $S/v1.0-synthetic/sample.json ] || $PY -m tools.data.make_synthetic_nusc --out $S \
            --num_scenes "${SH_SCENES:-14}" --frames_per_scene "${SH_FRAMES:-7}" --img_size ${SH_SIZE:-224 400} --val_scenes "${SH_VAL:-4}" \
            --workers "${WORKERS:-15}" > "$O/data.log" 2>&1
        mkdir -p $S/depth_gt
        $PY -m tools.data.export_gt_depth_nusc --dataroot $S --version v1.0-synthetic --out depth_gt \
            --split $S/splits/val.txt >> "$O/data.log" 2>&1 &
    elif [ -z "$FX" ]; then
        echo "[stage1-heldout] SH_SYN=0 needs the fixture (FIXTURE=<dir> or shared/fixtures/nuscenes-scene-0916)" >&2
        exit 2
    fi
    wait $BUILD || true
    LEFT=$(( BUDGET - RESERVE - 50 - $(date +%s) + T0 ))  # for the evaluations, 2 x 25 s to start the runs
    M1=$(awk -v t=$LEFT 'BEGIN { m = 0.75 * t / 60; print (m < 0.5 ? 0.5 : m) }')
    M2=$(awk -v t=$LEFT 'BEGIN { m = 0.25 * t / 60; print (m < 0.2 ? 0.2 : m) }')
    MALL=$(awk -v a=$M1 -v b=$M2 'BEGIN { print a + b + 0.4 }')
    echo "[stage1-heldout] data ready after $(( $(date +%s) - T0 )) s; main $M1 min + refine $M2 min"
    SD="--config configs/synthetic-gsp.txt --dataroot $S --train_split $S/splits/train.txt --val_split $S/splits/val.txt"
    SEM="--use_sem true --sem_root sem"  # at evaluation: the depth error per class of the synthetic 2D labels
    FXD="--config configs/fixture-gsp.txt --dataroot $FX --depth_root $FXDEPTH"
    FIX="--gsp_pose net_solve --train_sweeps true"
    run1() { name=$1; shift; $PY train.py --exp_name "$name" --val_every -1 --log_dir "$O" --num_workers 4 "$@" \
             $S1_EXTRA > "$O/$name.log" 2>&1; echo "[trained] $name"; }
    main_refine() { mr=$1; shift  # (sh has no local variables: run1 sets name)
        run1 "$mr-main" "$@" --max_minutes "$M1"
        run1 "$mr" "$@" --gsp_phase refine --load_weights "$O/$mr-main/ckpt/last.pt" --max_minutes "$M2"; }
    [ "$SYN" = 1 ] && main_refine fix $SD $FIX &
    OLD=${S1_OLD:-1}  # S1_OLD=0: without the stage 1 of before (measured once: gpu-2026-12-02), more GPU for the rest
    [ "$SYN" = 1 ] || OLD=0
    [ "$OLD" = 1 ] && run1 old $SD --gsp_pose net --train_sweeps false --max_minutes "$MALL" &
    [ -n "$FX" ] && main_refine fixture $FXD --gsp_pose net_solve &
    # S1_VARIANTS: lines "name:options" over the fix, trained (main + refine), evaluated and summarised like it
    [ "$SYN" = 1 ] && echo "${S1_VARIANTS:-}" | { while IFS= read -r v; do
        [ -n "$v" ] && main_refine "${v%%:*}" $SD $FIX ${v#*:} &
    done; wait; }
    # FX_S1_VARIANTS: the same over the fixture's run (e.g. "lock:--gsp_scale_lock true"), runs fixture-<name>
    [ -z "$FX" ] || echo "${FX_S1_VARIANTS:-}" | { while IFS= read -r v; do
        [ -n "$v" ] && main_refine "fixture-${v%%:*}" $FXD --gsp_pose net_solve ${v#*:} &
    done; wait; }
    wait
    ev() { name=$1; ckpt=$2; shift 2; $PY eval.py --ckpt "$O/$ckpt/ckpt/last.pt" --out_dir "$O/$name" --num_workers 2 \
           "$@" $S1_EXTRA >> "$O/eval.log" 2>&1; echo "[eval] $name"; }
    for sp in sweep keyframe; do
        [ "$SYN" = 1 ] || continue
        ev fix-$sp fix $SD $SEM --adjacent $sp &
        [ "$OLD" = 1 ] || continue
        ev old-$sp old $SD $SEM --adjacent $sp --gsp_pose net &
        ev old+align-$sp old $SD $SEM --adjacent $sp --gsp_pose net_solve &
    done
    # the fixture's 2D labels when it has some (sem_occ: tools/data/occ_to_2d_labels.py): depth error per class
    FXSEM=""; [ -n "$FX" ] && [ -d "$FX/sem_occ" ] && FXSEM="--use_sem true --sem_root sem_occ"
    [ -n "$FX" ] && ev fixture-keyframe fixture $FXD $FXSEM &
    FXNAMES=""; [ -z "$FX" ] || FXNAMES=$(echo "${FX_S1_VARIANTS:-}" | sed -n 's/^\([^:][^:]*\):.*/fixture-\1/p')
    for vn in $FXNAMES; do ev $vn-keyframe $vn $FXD $FXSEM & done
    VNAMES=""; [ "$SYN" = 1 ] && VNAMES=$(echo "${S1_VARIANTS:-}" | sed -n 's/^\([^:][^:]*\):.*/\1/p')
    for vn in $VNAMES; do
        for sp in sweep keyframe; do ev $vn-$sp $vn $SD $SEM --adjacent $sp --frame_stride 1 & done  # each spacing as is
    done
    wait
    runs=""
    OLDRUNS="old:sweep old:keyframe old+align:sweep old+align:keyframe"; [ "$OLD" = 1 ] || OLDRUNS=""
    FIXRUNS="fix:sweep fix:keyframe"; [ "$SYN" = 1 ] || FIXRUNS=""
    for r in $FIXRUNS $OLDRUNS fixture:keyframe \
             $(for vn in $VNAMES; do echo $vn:sweep $vn:keyframe; done) $(for vn in $FXNAMES; do echo $vn:keyframe; done); do
        runs="$runs $r=$O/${r%%:*}-${r#*:}/metrics.json"
    done
    $PY tools/stage1_summary.py --main fix --out_dir "$O" $runs > "$O/summary.log" 2>&1 || cat "$O/summary.log"
    cat "$O/summary.md" 2>/dev/null || true
    tar czf "$O/logs.tar.gz" -C "$O" --exclude='*.pt' --exclude=tb --exclude=logs.tar.gz --exclude=fixture_depth . \
        2>/dev/null || true
    if [ -n "$SH_PACK" ]; then
        mkdir -p "$SH_PACK"
        for f in summary.json summary.md logs.tar.gz; do [ -f "$O/$f" ] && cp "$O/$f" "$SH_PACK/"; done
    fi
    echo "[stage1-heldout] $(( $(date +%s) - T0 )) s; files: $O/summary.json $O/summary.md $O/logs.tar.gz"
    ;;
data)
    [ -f $SYN/v1.0-synthetic/sample.json ] || $PY -m tools.data.make_synthetic_nusc --out $SYN --num_scenes "${SYN_SCENES:-18}" \
        --frames_per_scene "${SYN_FRAMES:-30}" --img_size 270 480 --val_scenes 2 --workers "${WORKERS:-12}"
    [ -d $SYN/depth_gt ] || $PY -m tools.data.export_gt_depth_nusc --dataroot $SYN --version v1.0-synthetic --out depth_gt
    $PY -m tools.diagnostics.occ_baselines --dataroot $SYN --split $SYN/splits/val.txt --out logs/synthetic_baselines.json
    ;;
bench)
    $PY tools/bench_render.py --out_dir logs/bench
    ;;
step)
    $PY tools/bench_render.py --step_compare --step_ablations --profile --out_dir logs/bench_step
    ;;
speed)
    $PY tools/bench_render.py --speed_compare --profile --step_net project,authors --step_compile --out_dir logs/bench_speed
    ;;
ddp)
    PY=$PY sh tools/bench_ddp.sh
    ;;
cpu-default)
    rm -rf logs/quick-gsp logs/quick-gsp-refine logs/quick-gsv  # from scratch (the generated data is deterministic)
    start=$(date +%s); commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    CUDA_VISIBLE_DEVICES="" sh run_gs_occ.sh synthetic > logs/cpu-default.log 2>&1
    out=docs/results/cpu_default
    mkdir -p $out
    cp logs/quick-gsv/eval/metrics.json logs/quick-gsv/eval/metrics.md $out/
    { echo "# The CPU default: \`sh run_gs_occ.sh\` without a GPU"; echo
      echo "- command: \`sh tools/run_benchmarks.sh cpu-default\` (stage 1, refine, stage 2 with the stage-1 pose, eval)"
      echo "- machine: $(nproc) CPU cores, $(uname -m); wall time $(( ($(date +%s) - start) / 60 )) min; $(date -u +%F);" \
           "load average at the end $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on the same cores make it slower)"
      echo "- code: commit $commit; after so few steps the metrics only show that every stage runs"; echo
      cat $out/metrics.md; } > $out/run.md
    cat $out/run.md
    ;;
synthetic)
    # both stage-2 runs train at the same time for the same number of steps (GSV_STEPS) when it is set
    C1=configs/synthetic-gsp.txt; C2=configs/synthetic-gsv.txt
    GSV_LIMIT="--max_minutes $GSV_MIN"; [ -n "$GSV_STEPS" ] && GSV_LIMIT="--max_steps $GSV_STEPS --max_minutes 60"
    train_eval synthetic-gsp-nogsp --config $C1 --use_gsp false --max_minutes "$GSP_MIN" &
    train_eval synthetic-gsp --config $C1 --max_minutes "$GSP_MIN"
    train_eval synthetic-gsp-refine --config $C1 --gsp_phase refine --load_weights logs/synthetic-gsp/ckpt/last.pt \
        --max_minutes "$REFINE_MIN"
    train_eval synthetic-gsv-gtpose --config $C2 --pose gt $GSV_LIMIT &
    train_eval synthetic-gsv --config $C2 --pose stage1 --stage1_ckpt logs/synthetic-gsp-refine/ckpt/last.pt $GSV_LIMIT
    wait
    ;;
fixture|fixture-stage1)
    [ -d "$FIXTURE/depth_gt" ] || $PY -m tools.data.export_gt_depth_nusc --dataroot "$FIXTURE" --version v1.0-mini \
        --out depth_gt
    [ "$1" = fixture-stage1 ] ||
        train_eval fixture-gsv-gtpose --config configs/fixture-gsv.txt --dataroot "$FIXTURE" --max_minutes "$GSV_MIN" &
    train_eval fixture-gsp-nogsp --config configs/fixture-gsp.txt --dataroot "$FIXTURE" --use_gsp false \
        --max_minutes "$GSP_MIN" &
    train_eval fixture-gsp --config configs/fixture-gsp.txt --dataroot "$FIXTURE" --max_minutes "$GSP_MIN"
    wait
    ;;
fixture-gsv)
    [ -d "$FIXTURE/depth_gt" ] || $PY -m tools.data.export_gt_depth_nusc --dataroot "$FIXTURE" --version v1.0-mini \
        --out depth_gt
    # FX_VARIANTS (or FX_VARIANTS_FILE): "name:options" lines over configs/fixture-gsv.txt (default: the three
    # criteria below); with $FIXTURE/gts_lidar (tools/data/make_occ_gt_nusc.py) also the geo IoU against those labels;
    # FX_DIAG=0 leaves out gsv_diagnose; inside tools/device_run.sh the training ends early enough for FX_EVAL_S.
    # FX_HOLDOUT=F (e.g. 0.25): train on the first frames of the scene and evaluate on its last F (frames the network
    # has not seen; the last training frame is left out too, so no training sample warps a held-out image), each run
    # also on its training frames (logs/<run>/eval-train), the untrained network on the held-out ones.
    C="--config configs/fixture-gsv.txt --dataroot $FIXTURE --num_workers ${WORKERS:-3}"
    [ ! -d "$FIXTURE/gts_lidar" ] || C="$C --occ_root gts_lidar --eval_occ true"
    if [ -n "${FX_HOLDOUT:-}" ]; then
        fixture_split "$FIXTURE" logs/fx-split "$FX_HOLDOUT" || exit 1
        C="$C --train_split logs/fx-split/train_gap.txt --val_split logs/fx-split/fx_val.txt"
    fi
    OLD="--opacity softmax --entropy_on alpha --w_tv 0"  # the criterion that collapsed (issue 11)
    [ -n "${FX_VARIANTS_FILE:-}" ] && FX_VARIANTS=$(grep -v '^#' "$FX_VARIANTS_FILE")
    FX_VARIANTS=${FX_VARIANTS:-"default:
alpha-entropy:$OLD
no-entropy:--opacity softmax --w_entropy 0 --w_tv 0"}
    GSV_MIN=$($PY -m tools.time_budget "$GSV_MIN" "${FX_EVAL_S:-120}")
    echo "$FX_VARIANTS" | { while IFS= read -r v; do
        [ -n "$v" ] || continue
        { train_eval "fixture-gsv-${v%%:*}" $C ${v#*:} --max_minutes "$GSV_MIN"
          [ -z "${FX_HOLDOUT:-}" ] || $PY eval.py $C ${v#*:} --val_split logs/fx-split/train_gap.txt \
              --ckpt "logs/fixture-gsv-${v%%:*}/ckpt/last.pt" --out_dir "logs/fixture-gsv-${v%%:*}/eval-train" \
              >> "logs/fixture-gsv-${v%%:*}.log" 2>&1; } &
    done
    $PY -m tools.init_checkpoint $C --exp_name fixture-gsv-untrained > logs/fixture-gsv-untrained.log 2>&1
    $PY eval.py $C --ckpt logs/fixture-gsv-untrained/ckpt/last.pt --out_dir logs/fixture-gsv-untrained/eval \
        >> logs/fixture-gsv-untrained.log 2>&1
    if [ "${FX_DIAG:-1}" = 1 ]; then
        for v in "default:" "alpha-entropy:$OLD"; do
            $PY -m tools.diagnostics.gsv_diagnose $C ${v#*:} --steps "${DIAG_STEPS:-150}" --out "logs/diag-${v%%:*}" \
                > "logs/diag-${v%%:*}.log" 2>&1 &
        done
    fi
    wait; }
    $PY tools/occ_summary.py logs/fixture-gsv-* $(ls -d logs/fixture-gsv-*/eval-train 2>/dev/null) \
        --json logs/fixture-summary.json | tee logs/fixture-summary.md
    ;;
landscape)
    $PY -m tools.diagnostics.gsp_landscape --out_dir logs/landscape
    $PY -m tools.diagnostics.gsp_landscape --out_dir logs/landscape-bf16 --amp bf16
    ;;
*)
    echo "usage: sh tools/run_benchmarks.sh pipeline|stage1-heldout|data|bench|step|ddp|cpu-default|synthetic|fixture|fixture-stage1|fixture-gsv|landscape" >&2
    exit 1
    ;;
esac
