#!/usr/bin/env bash
# Every check that needs a GPU, in one run, for a session that is lent one: the engine against the plain
# loop (vgg5, batch 512), the study and default recipes on the real FER2013, the default recipe on FER+
# crowd labels, fp16 with its gradient scaler, a run started on the CPU and resumed on the GPU, fp32
# inference agreeing across devices, --compile, and torchrun over nccl. Logs go to $OUT; a table of the
# figures is printed last. CHECKS picks a subset (a 10-minute command limit may need two calls).
#
#   device run (carry .data):  mkdir -p .data && cp ../shared/data/fer2013/fer2013.zip .data/
#                              OUT=$OUT bash bench/gpu.sh
#   FER+ (a second call, carrying .data/ferplus.zip, 61 MiB):
#       python ../shared/data/fer2013/to_csv.py .data/fer && (cd .data/fer && zip -q -9 -r ../ferplus.zip
#       FER2013Train FER2013Valid)            then  CHECKS=ferplus OUT=$OUT bash bench/gpu.sh
#   rehearsal on a CPU:        FER_GPU_SMOKE=1 OUT=/tmp/gpu-out bash bench/gpu.sh   (tiny sizes, minutes)
#
# The zip holds FER2013's Training and PublicTest: `fer prep` carves val out of Training and the test
# split is PublicTest, so the recipes' test accuracy here is PublicTest, not PrivateTest.
# Budget on one H100 (reference figures from outside the project): study ~100 s, default ~250 s, bench ~60 s.
set -uo pipefail
OUT=${OUT:-gpu-out}
SMOKE=${FER_GPU_SMOKE:-0}
CHECKS=${CHECKS:-"bench study default fp16 resume inference compile ddp ferplus"}
want() { [[ " $CHECKS " == *" $1 "* ]]; }
mkdir -p "$OUT"
python3 -m pip install --no-deps -q -e . > "$OUT/pip.log" 2>&1 || { echo "pip install failed: $OUT/pip.log"; exit 1; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
DATA="$OUT/fer.safetensors"

FERPLUS="$OUT/ferplus.safetensors"
if [ "$SMOKE" = 1 ]; then
    fer -q prep --synthetic 1400 -o "$DATA"
    cp "$DATA" "$FERPLUS"  # no votes in the rehearsal: the FER+ run falls back to FER2013 labels
    BENCH=(--arch vgg4s --batch 64 --n 512 --epochs 2)
    STUDY=(--recipe study --arch vgg4s --epochs 1)
    DEFAULT=(--recipe default --arch vgg4s --epochs 1)
    SHORT=(--arch vgg4s --epochs 1)
    DDP=(--arch vgg4s --epochs 1 --batch 64)
    RESUME=(--arch vgg4s --epochs 30); STOP_AFTER=12
    NPROC=2
    GPU=cpu
else
    if want bench || want study || want default || want fp16 || want resume || want inference || want compile \
        || want ddp; then
        fer -q prep "${FER_ZIP:-.data/fer2013.zip}" -o "$DATA" || { echo "prep failed"; exit 1; }
    fi
    if want ferplus; then
        fer -q prep "${FERPLUS_ZIP:-.data/ferplus.zip}" -o "$FERPLUS" || echo "FER+ prep failed (no .data/ferplus.zip?)"
    fi
    BENCH=(--arch vgg5 --batch 512 --data "$DATA" --epochs 2)
    STUDY=(--recipe study)
    DEFAULT=(--recipe default)
    SHORT=(--epochs 3)
    DDP=(--epochs 3)
    RESUME=(--arch vgg4s --epochs 3); STOP_AFTER=30  # seconds of CPU training before the SIGINT
    NPROC=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
    GPU=cuda
fi

# 1. engine vs plain loop (target: >= 2.5x for vgg5 at batch 512 on an H100)
want bench && python3 bench/train.py "${BENCH[@]}" > "$OUT/bench_train.txt" 2> "$OUT/bench_train.log"

# 2-3. the recipes: wall time, best valid_acc, test accuracy of best.safetensors (ferplus: the default
#      recipe on FER+ votes, --labels auto, scored against the crowd majority)
recipe_run() {  # name, data, args...
    local name=$1 data=$2; shift 2
    local start=$SECONDS
    fer train --data "$data" "$@" --project "$OUT/runs" --name "$name" --json > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
    echo $((SECONDS - start)) > "$OUT/$name.seconds"
    fer eval "$OUT/runs/train/$name" --data "$data" --split test --json > "$OUT/$name.eval.json" 2>> "$OUT/$name.log"
}
want study && recipe_run study "$DATA" "${STUDY[@]}"
want default && recipe_run default "$DATA" "${DEFAULT[@]}"
want ferplus && [ -f "$FERPLUS" ] && recipe_run ferplus "$FERPLUS" "${DEFAULT[@]}"
want fp16 && recipe_run fp16 "$DATA" "${SHORT[@]}" --precision fp16  # the gradient-scaler path

# 4. a run started on the CPU, stopped by SIGINT (it saves last.safetensors), resumed on the GPU
if want resume; then
    timeout -s INT "$STOP_AFTER" fer train --data "$DATA" "${RESUME[@]}" --device cpu --project "$OUT/runs" \
        --name resume > "$OUT/resume.log" 2>&1
    fer train --resume "$OUT/runs/train/resume" --device "$GPU" >> "$OUT/resume.log" 2>&1
    echo $? > "$OUT/resume.rc"
fi

# 5. inference in fp32 on every device: the default run's predictions on the CPU and on the GPU
if want inference && [ -d "$OUT/runs/train/default" ]; then
    fer predict "$OUT/runs/train/default" "$DATA" --probs --device cpu -o "$OUT/pred_cpu.csv" 2> "$OUT/inference.log"
    fer predict "$OUT/runs/train/default" "$DATA" --probs --device "$GPU" -o "$OUT/pred_gpu.csv" 2>> "$OUT/inference.log"
fi

# 6. --compile for one short run
want compile && recipe_run compile "$DATA" "${SHORT[@]}" --compile

# 7. torchrun: nccl on every GPU (gloo on CPU in the rehearsal), a short run. NCCL cannot put two ranks on
#    one GPU, so on a one-GPU machine this checks the launch path only (world size 1, no DDP).
if want ddp; then
    python3 -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m fercli train --data "$DATA" \
        "${DDP[@]}" --project "$OUT/runs" --name ddp > "$OUT/ddp.log" 2>&1
    echo $? > "$OUT/ddp.rc"
fi

python3 - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def read(name, default="-"):
    p = out / name
    return p.read_text().strip() if p.exists() else default

print("\n| check | figure |\n|---|---|")
for line in read("bench_train.txt", "").splitlines():
    print(f"| bench/train.py | {line.strip()} |")
for name in ("study", "default", "ferplus", "fp16", "compile"):
    if not (out / f"{name}.seconds").exists():
        continue
    try:
        ev = json.loads(read(f"{name}.eval.json", "{}"))
        rows = [json.loads(x) for x in read(f"{name}.jsonl", "").splitlines() if x.strip()]
        best = max(r["valid_acc"] for r in rows)
        print(f"| recipe {name} | {len(rows)} epochs in {float(read(name + '.seconds', '0')):.0f} s, best valid_acc "
              f"{100 * best:.2f}%, test (PublicTest) accuracy {100 * ev['accuracy']:.2f}% |")
    except (ValueError, KeyError, TypeError) as e:
        print(f"| recipe {name} | failed ({e}); see {out / (name + '.log')} |")
if (out / "resume.rc").exists():
    print(f"| CPU run resumed on the GPU | exit {read('resume.rc')}; {(read('resume.log', '').splitlines() or ['-'])[-1]} |")
if (out / "pred_gpu.csv").exists():
    import csv
    a, b = (list(csv.reader(open(out / f"pred_{d}.csv"))) for d in ("cpu", "gpu"))
    same = sum(x[1] == y[1] for x, y in zip(a[1:], b[1:]))
    diff = max(abs(float(u) - float(v)) for x, y in zip(a[1:], b[1:]) for u, v in zip(x[2:], y[2:]))
    print(f"| fp32 inference, CPU vs GPU | same class on {same} of {len(a) - 1} faces; largest --probs difference {diff:.1e} |")
if (out / "ddp.rc").exists():
    print(f"| torchrun | exit {read('ddp.rc')}; {(read('ddp.log', '').splitlines() or ['-'])[-1]} |")
EOF
