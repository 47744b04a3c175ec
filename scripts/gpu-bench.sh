#!/usr/bin/env bash
# The speed benches on one CUDA machine, within 8 minutes, every JSON report under one folder:
#
#   scripts/gpu-bench.sh [OUT]          (default OUT: runs/gpu-bench)
#
#   OUT/train-paper.json    bench train --size paper: stylecap train vs the paper's path, ViT-L/14 + t5-base
#   OUT/caption-paper.json  bench caption --paper-size: stylecap caption vs the paper-style path
#   OUT/scale/scale.json    a short bench scale: 10k and 100k captions (+ scale.png)
#   OUT/machine.txt         the GPU, driver, torch and CPU it ran on; OUT/*.log each bench's output
#
# Offline: paper-size models are built from their configs with random weights (speed does not depend
# on weight values). Needs stylecap installed (`pip install -e .`) and a CUDA GPU.
# SMOKE=1 runs the same commands with tiny settings on any machine (a check of the script itself).
set -uo pipefail

OUT="${1:-runs/gpu-bench}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${SMOKE:-0}" == 1 ]]; then
    TRAIN_ARGS=(--size tiny --steps 2 --warmup-steps 1 --batch-size 4)
    CAPTION_ARGS=(--images 4 --image-size 64x48 --beam 1 --batch-size 2)
    SCALE_ARGS=(--sizes 200,400 --train-steps 2 --batch-size 4)
    LIMITS=(900 900 900)  # a shared CPU may be slow; the limits are for the GPU run
else
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "no CUDA device here: this script measures the GPU paths (SMOKE=1 checks it on a CPU)" >&2
        exit 2
    }
    # paper size, batch 64; 40 timed steps after 3 warm-up steps keep each path to seconds on one GPU
    TRAIN_ARGS=(--size paper --steps 40 --warmup-steps 3 --batch-size 64)
    CAPTION_ARGS=(--paper-size --images 128 --beam 5 --batch-size 64)
    # below 64 MB of JSON a reread costs what the first read does: skip it here
    SCALE_ARGS=(--sizes 10000,100000 --train-steps 50 --stages read,cache,train,corpus)
    LIMITS=(200 110 150)  # seconds for train, caption, scale: 7 min 40 s at most in all
fi

{
    date -u +"%Y-%m-%dT%H:%M:%SZ"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, '|', platform.processor() or platform.machine(), '|', __import__('os').cpu_count(), 'cores')"
} > "$OUT/machine.txt"

failed=()
# run NAME SECONDS ARGS…: one bench under a time limit; a failure or a timeout is reported and the
# next bench still runs.
run() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (at most ${limit}s)"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$PYTHON" -m stylecap bench "$@" 2>&1 | tee "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit $status after $((SECONDS - started))s"
    [[ $status == 0 ]] || failed+=("$name (exit $status)")
}

run train-paper "${LIMITS[0]}" train "${TRAIN_ARGS[@]}" --report "$OUT/train-paper.json"
run caption-paper "${LIMITS[1]}" caption "${CAPTION_ARGS[@]}" --report "$OUT/caption-paper.json"
run scale "${LIMITS[2]}" scale "${SCALE_ARGS[@]}" --out "$OUT/scale"

echo "reports in $OUT:"
ls -1 "$OUT"/*.json "$OUT"/scale/scale.json 2>/dev/null
if (( ${#failed[@]} )); then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
