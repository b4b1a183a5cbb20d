#!/usr/bin/env bash
# What to run on a GPU to check and price segclass on it, in one go (about 5 minutes on an H200):
#   1. the CUDA-only tests (tests/test_gpu.py): no host wait per step or per window, exact stitching;
#   2. benchmarks/trial_cost.py: a BACH-sized trial at K = 1, 2, 4, 8 trials per GPU, the paper grid's hours;
#   3. benchmarks/gpu_throughput.py at K = 1 and 8, and prediction, with this code and, when BASELINE names the
#      folder of another checkout (e.g. `git worktree add ../baseline a83b81a`), with that code in the same run.
#
#   bash benchmarks/gpu_check.sh [OUT_FOLDER]          (default results/benchmarks/gpu_check)
#   BASELINE=../baseline bash benchmarks/gpu_check.sh
#
# Runs from a checkout with or without segclass installed (PYTHONPATH points at the checkout). Every output goes
# to OUT_FOLDER: summary.txt (device, test outcome, every benchmark line) and each benchmark's JSON.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/results/benchmarks/gpu_check}" && cd "${1:-$root/results/benchmarks/gpu_check}" && pwd)
python=${PYTHON:-python3}
summary="$out/summary.txt"
: > "$summary"
say() { echo "$@" | tee -a "$summary"; }

say "# $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true; } | tee -a "$summary"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
say "== tests/test_gpu.py"
"$python" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -n 15 | tee -a "$summary" || true
say "== trial_cost.py --device cuda --packing 1 2 4 8"
"$python" benchmarks/trial_cost.py --device cuda --packing 1 2 4 8 --out "$out/trial_cost.json" 2>&1 \
    | grep -v "RANDOM weights" | tee -a "$summary"
say "== gpu_throughput.py --device cuda --packing 1 8 --predict-batches 32 128 (this code)"
"$python" benchmarks/gpu_throughput.py --device cuda --packing 1 8 --predict-batches 32 128 \
    --out "$out/gpu_throughput.json" 2>&1 | grep -v "RANDOM weights" | tee -a "$summary"
if [ -n "${BASELINE:-}" ]; then
    baseline=$(cd "$BASELINE" && pwd)
    say "== the same with the code of $baseline ($(git -C "$baseline" rev-parse --short HEAD 2>/dev/null || echo unknown))"
    (cd "$baseline" && PYTHONPATH="$baseline" "$python" benchmarks/gpu_throughput.py --device cuda --packing 1 8 \
        --predict-batches 32 128 --out "$out/gpu_throughput_baseline.json" 2>&1 | grep -v "RANDOM weights") \
        | tee -a "$summary"
fi
say "wrote $out"
