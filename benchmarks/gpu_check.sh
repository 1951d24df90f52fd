#!/usr/bin/env bash
# The full-size presets of every benchmark on one 80 GB GPU, in under 15 minutes altogether.
# Each run also builds the full architecture (EVA-CLIP ViT-g + LLaMA-2-7B shape, random bf16
# weights) on the card, so it doubles as the "builds and runs at full size" check.
#   bash benchmarks/gpu_check.sh            # results as JSON under gpu_check/ (OUT=...)
# A benchmark that fails does not stop the others; the script then exits 1 naming it.
# tests/test_benchmarks.py runs every `run` line below at its script's smoke size on the CPU,
# so keep one command per `run` line, with the flags as the script spells them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

failed=()
run() {  # name, time limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    printf '\n== %s (limit %ss)\n' "$name" "$limit"
    if ! timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then
        failed+=("$name")
    fi
}

run extract 200 "$PYTHON" -m benchmarks.bench_extract --preset full --device cuda --clips 64 --batch-size 8 --json "$OUT/extract.json"
run train 180 "$PYTHON" -m benchmarks.bench_train --preset full --device cuda --steps 10 --json "$OUT/train.json"
run encoders 90 "$PYTHON" -m benchmarks.bench_encoders --preset full --device cuda --clips 32 --batch_size 8 --json "$OUT/encoders.json"
run detect 420 "$PYTHON" -m benchmarks.bench_detect --preset full --device cuda --seconds 30 --live --live-threads 4 --json "$OUT/detect.json"

if ((${#failed[@]})); then
    printf '\nfailed: %s (see %s/<name>.log)\n' "${failed[*]}" "$OUT" >&2
    exit 1
fi
