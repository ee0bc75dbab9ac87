#!/usr/bin/env bash
# Every check that needs a GPU, in one run, for a session that is lent one: the engine against the plain
# loop (vgg5, batch 512), the study and default recipes on the real FER2013, and torchrun over nccl.
# Logs go to $OUT; a table of the figures is printed last.
#
#   device run (carry .data):  mkdir -p .data && cp ../shared/data/fer2013/fer2013.zip .data/
#                              OUT=$OUT bash bench/gpu.sh
#   rehearsal on a CPU:        FER_GPU_SMOKE=1 OUT=/tmp/gpu-out bash bench/gpu.sh   (tiny sizes, minutes)
#
# The zip holds FER2013's Training and PublicTest: `fer prep` carves val out of Training and the test
# split is PublicTest, so the recipes' test accuracy here is PublicTest, not PrivateTest.
# Budget on one H100 (reference figures from outside the project): study ~100 s, default ~250 s, bench ~60 s.
set -uo pipefail
OUT=${OUT:-gpu-out}
SMOKE=${FER_GPU_SMOKE:-0}
mkdir -p "$OUT"
python3 -m pip install --no-deps -q -e . > "$OUT/pip.log" 2>&1 || { echo "pip install failed: $OUT/pip.log"; exit 1; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
DATA="$OUT/fer.safetensors"

if [ "$SMOKE" = 1 ]; then
    fer -q prep --synthetic 1400 -o "$DATA"
    BENCH=(--arch vgg4s --batch 64 --n 512 --epochs 2)
    STUDY=(--recipe study --arch vgg4s --epochs 1)
    DEFAULT=(--recipe default --arch vgg4s --epochs 1)
    DDP=(--arch vgg4s --epochs 1 --batch 64)
    NPROC=2
else
    fer -q prep "${FER_ZIP:-.data/fer2013.zip}" -o "$DATA" || { echo "prep failed"; exit 1; }
    BENCH=(--arch vgg5 --batch 512 --data "$DATA" --epochs 2)
    STUDY=(--recipe study)
    DEFAULT=(--recipe default)
    DDP=(--epochs 3)
    NPROC=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
fi

# 1. engine vs plain loop (target: >= 2.5x for vgg5 at batch 512 on an H100)
python3 bench/train.py "${BENCH[@]}" > "$OUT/bench_train.txt" 2> "$OUT/bench_train.log"

# 2-3. the recipes: wall time, best valid_acc, test accuracy of best.safetensors
for name in study default; do
    args=("${STUDY[@]}"); [ "$name" = default ] && args=("${DEFAULT[@]}")
    start=$SECONDS
    fer train --data "$DATA" "${args[@]}" --project "$OUT/runs" --name "$name" --json \
        > "$OUT/$name.jsonl" 2> "$OUT/$name.log"
    echo $((SECONDS - start)) > "$OUT/$name.seconds"
    fer eval "$OUT/runs/train/$name" --data "$DATA" --split test --json > "$OUT/$name.eval.json" 2>> "$OUT/$name.log"
done

# 4. torchrun: nccl on every GPU (gloo on CPU in the rehearsal), a short run. NCCL cannot put two ranks on
#    one GPU, so on a one-GPU machine this checks the launch path only (world size 1, no DDP).
python3 -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m fercli train --data "$DATA" \
    "${DDP[@]}" --project "$OUT/runs" --name ddp > "$OUT/ddp.log" 2>&1
echo $? > "$OUT/ddp.rc"

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
for name in ("study", "default"):
    try:
        ev = json.loads(read(f"{name}.eval.json", "{}"))
        rows = [json.loads(x) for x in read(f"{name}.jsonl", "").splitlines() if x.strip()]
        best = max(r["valid_acc"] for r in rows)
        print(f"| recipe {name} | {len(rows)} epochs in {float(read(name + '.seconds', '0')):.0f} s, best valid_acc "
              f"{100 * best:.2f}%, test (PublicTest) accuracy {100 * ev['accuracy']:.2f}% |")
    except (ValueError, KeyError, TypeError) as e:
        print(f"| recipe {name} | failed ({e}); see {out / (name + '.log')} |")
print(f"| torchrun | exit {read('ddp.rc')}; {(read('ddp.log', '').splitlines() or ['-'])[-1]} |")
EOF
