#!/usr/bin/env bash
# Every check that needs a GPU, in one call of at most GPU_LIMIT_S seconds (default 450: the GPU machine
# gives 10 minutes a command and 15 in all, its start included), install and data preparation included:
# the engine against a plain loop (vgg5, batch 512), the study recipe and the default recipe (2-minute
# budget) on the real FER2013, fp16 with its gradient scaler, a CPU run interrupted and resumed on the
# GPU, fp32 inference on the CPU against the GPU, --compile, and torchrun over nccl (skipped, with a
# note, on one GPU). Nothing is installed: the package runs from src/ (the machine reaches no registry).
#
#   on the GPU machine (carry .data):  mkdir -p .data && cp ../shared/data/fer2013/fer2013.zip .data/
#                                      OUT=$OUT bash bench/gpu.sh
#   rehearsal on a CPU:                FER_GPU_SMOKE=1 OUT=/tmp/gpu-out bash bench/gpu.sh
#                                      (tiny sizes; tests/test_gpu_script.py runs it)
#
# Each check runs under `timeout`; one that would end past GPU_LIMIT_S is not started. The table, one
# row per check ("ok" with its figures, "failed", "timed out", "not run", "skipped"), is printed from an
# EXIT trap, so it comes even when a check fails or the call is cut short; data and runs live in a
# temporary folder, and $OUT receives only the logs, as one gpu-logs.tar.gz, and table.md. CHECKS picks
# a subset. The zip holds Training and PublicTest: the test split is PublicTest.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SMOKE=${FER_GPU_SMOKE:-0}
LIMIT=${GPU_LIMIT_S:-450}
CHECKS=${CHECKS:-"bench study default fp16 resume inference compile ddp"}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fer-gpu-XXXXXX")
mkdir -p "$WORK/logs" "$WORK/status"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 XDG_CACHE_HOME="$WORK/cache"
START=$SECONDS
fer() { python3 -m fercli "$@"; }
export -f fer

finish() {
    python3 bench/gpu_table.py "$WORK" | tee "$OUT/table.md"
    tar -czf "$OUT/gpu-logs.tar.gz" -C "$WORK" logs status
    rm -rf "$WORK"
}
trap finish EXIT

want() { [[ " $CHECKS " == *" $1 "* ]]; }

# check NAME TIMEOUT COMMAND...: run COMMAND under `timeout`, its output in logs/NAME.out and .log, and
# record what became of it in status/NAME (and its seconds); 0 when it succeeded.
check() {
    local name=$1 limit=$2
    shift 2
    echo "$name" >> "$WORK/status/order"
    if ! want "$name"; then
        echo "not run (not in CHECKS)" > "$WORK/status/$name"
        return 1
    fi
    if ((SECONDS - START + limit > LIMIT)); then
        echo "not run: its ${limit} s would pass the ${LIMIT} s limit" > "$WORK/status/$name"
        return 1
    fi
    local t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" > "$WORK/logs/$name.out" 2> "$WORK/logs/$name.log"
    rc=$?
    echo $((SECONDS - t0)) > "$WORK/status/$name.seconds"
    case $rc in
        0) echo ok > "$WORK/status/$name" ;;
        124 | 137) echo "timed out after ${limit} s" > "$WORK/status/$name" ;;
        *) echo "failed (exit $rc)" > "$WORK/status/$name" ;;
    esac
    return $rc
}

DATA="$WORK/fer.safetensors"
RUNS="$WORK/runs"
if [ "$SMOKE" = 1 ]; then
    PREP=(--synthetic 1400)
    BENCH=(--arch vgg4s --batch 64 --n 512 --epochs 2)
    STUDY=(--recipe study --arch vgg4s --width 0.125 --epochs 1)
    DEFAULT=(--recipe default --arch vgg4s --width 0.125 --epochs 1)
    SHORT=(--arch vgg4s --width 0.125 --epochs 1)
    RESUME=(--arch vgg4s --width 0.125 --epochs 3 --batch 16)
    GPU=cpu
    NPROC=2
    T_PREP=60 T_BENCH=120 T_STUDY=90 T_DEFAULT=90 T_SHORT=90 T_RESUME=150 T_INFER=60 T_COMPILE=150 T_DDP=120
else
    PREP=("${FER_ZIP:-.data/fer2013.zip}")
    BENCH=(--arch vgg5 --batch 512 --data "$DATA" --epochs 2)
    STUDY=(--recipe study)
    DEFAULT=(--recipe default --time 2m)
    SHORT=(--epochs 3)
    RESUME=(--arch vgg4s --epochs 4)
    GPU=cuda
    NPROC=$(python3 -c "import torch; print(torch.cuda.device_count())" 2> /dev/null || echo 0)
    # Seconds each may take (reference figures from outside the project, one H100: bench ~60, study ~100)
    T_PREP=60 T_BENCH=90 T_STUDY=150 T_DEFAULT=170 T_SHORT=60 T_RESUME=120 T_INFER=45 T_COMPILE=120 T_DDP=120
fi
export DATA RUNS GPU WORK
nvidia-smi > "$WORK/logs/nvidia-smi.txt" 2>&1 || true
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())" \
    > "$WORK/logs/versions.txt" 2>&1

CHECKS="prep $CHECKS"
check prep "$T_PREP" fer prep "${PREP[@]}" -o "$DATA" || exit 1

check bench "$T_BENCH" python3 bench/train.py "${BENCH[@]}"

# train NAME ARGS...: a run into $RUNS with one JSON line per epoch, then its test accuracy.
train() {
    local name=$1
    shift
    fer train --data "$DATA" "$@" --project "$RUNS" --name "$name" --json &&
        fer eval "$RUNS/train/$name" --data "$DATA" --split test --json > "$WORK/logs/$name.eval.json"
}
export -f train
check study "$T_STUDY" bash -c 'train "$@"' _ study "${STUDY[@]}"
check default "$T_DEFAULT" bash -c 'train "$@"' _ default "${DEFAULT[@]}"
check fp16 "$T_SHORT" bash -c 'train "$@"' _ fp16 "${SHORT[@]}" --precision fp16

# A run on the CPU interrupted by SIGINT once its first epoch is reported (so mid-epoch 2), then resumed
# on the GPU: the log says where it stopped and where it went on.
interrupted_then_resumed() {
    # python itself in the background (not the fer function's subshell), so that SIGINT reaches it
    python3 -m fercli train --data "$DATA" "$@" --device cpu --project "$RUNS" --name resume --json \
        > "$WORK/logs/resume.jsonl" &
    local pid=$! i
    for i in $(seq 1 600); do
        [ -s "$WORK/logs/resume.jsonl" ] && break
        kill -0 $pid 2> /dev/null || break
        sleep 0.2
    done
    kill -INT $pid
    wait $pid
    echo "interrupted: exit $?"
    fer train --resume "$RUNS/train/resume" --device "$GPU" --json
}
export -f interrupted_then_resumed
check resume "$T_RESUME" bash -c 'interrupted_then_resumed "$@"' _ "${RESUME[@]}"

if [ -d "$RUNS/train/default" ]; then
    check inference "$T_INFER" bash -c 'fer predict "$RUNS/train/default" "$DATA" --probs --device cpu \
        -o "$WORK/logs/pred_cpu.csv" && fer predict "$RUNS/train/default" "$DATA" --probs --device "$GPU" \
        -o "$WORK/logs/pred_gpu.csv"'
else
    echo inference >> "$WORK/status/order"
    echo "not run: needs the default run" > "$WORK/status/inference"
fi

check compile "$T_COMPILE" bash -c 'train "$@"' _ compile "${SHORT[@]}" --compile

if [ "$NPROC" -ge 2 ]; then
    check ddp "$T_DDP" python3 -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m fercli train \
        --data "$DATA" "${SHORT[@]}" --project "$RUNS" --name ddp --json
else
    echo ddp >> "$WORK/status/order"
    echo "skipped: $NPROC GPU (NCCL puts one rank on each GPU; the gloo path is tested on the CPU)" \
        > "$WORK/status/ddp"
fi

# Exit 1 when a check that ran failed or timed out (the table, from the EXIT trap, says which).
if grep -qE '^(failed|timed out)' "$WORK"/status/*; then
    exit 1
fi
exit 0
