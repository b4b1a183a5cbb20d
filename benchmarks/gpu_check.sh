#!/usr/bin/env bash
# What to run on a GPU to check and price segclass on it, in one go:
#   1. the CUDA-only tests (tests/test_gpu.py): host waits that do not grow with steps or windows, exact
#      stitching, deterministic prediction;
#   2. benchmarks/trial_cost.py: a BACH-sized trial at K = 1, 2, 4, 8 trials per GPU, the paper grid's hours;
#   3. benchmarks/gpu_throughput.py at K = 1 and 8, and prediction, with this code and, when BASELINE names the
#      folder of another version's code, with that code in the same run:
#
#   bash benchmarks/gpu_check.sh [OUT_FOLDER]            (default results/benchmarks/gpu_check)
#   mkdir -p baseline && git archive a83b81a | tar -x -C baseline && BASELINE=baseline bash benchmarks/gpu_check.sh
#
# Runs from a checkout with or without segclass installed (PYTHONPATH points at the checkout). PYTHON picks the
# interpreter: default the checkout's .venv/bin/python (scripts/setup.sh), else python3. Without a CUDA device it
# says so and stops; otherwise a step that fails is reported and the next one still runs. Everything goes to
# OUT_FOLDER: summary.txt (device, each step's lines and exit status, a tally), test_gpu.log, each benchmark's JSON.
set -uo pipefail
here=$(pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/results/benchmarks/gpu_check}
mkdir -p "$out" && out=$(cd "$out" && pwd)
baseline=""
if [ -n "${BASELINE:-}" ]; then  # resolved where the command was typed, like OUT_FOLDER
    baseline=$(cd "$here" && cd "$BASELINE" 2>/dev/null && pwd) || { echo "BASELINE=$BASELINE: no such folder" >&2; exit 2; }
fi
if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
    case $python in */*) python=$(cd "$here" && cd "$(dirname "$python")" && pwd)/$(basename "$python") ;; esac
elif [ -x "$root/.venv/bin/python" ]; then
    python=$root/.venv/bin/python
else
    python=python3
fi
summary="$out/summary.txt"
: > "$summary"
failures=()
say() { echo "$@" | tee -a "$summary"; }
step() {  # step TITLE COMMAND...: run it, keep its lines (not the random-init notice), record its exit status
    local title=$1; shift
    say "== $title"
    "$@" 2>&1 | { grep -v "RANDOM weights" || true; } | tee -a "$summary"
    local status=${PIPESTATUS[0]}
    if [ "$status" -ne 0 ]; then say "!! $title failed (exit $status)"; failures+=("$title"); fi
}

say "# $(date -u +%FT%TZ) commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true; } | tee -a "$summary"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

say "python: $python"
cuda=$("$python" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' 2>&1 | tail -n 1)
say "torch, CUDA available: $cuda"
case $cuda in
    *" True") ;;
    *) say "!! no CUDA device visible to $python: the GPU steps cannot run here"; exit 1 ;;
esac
missing=$("$python" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("pytest", "numpy", "h5py", "scipy", "PIL", "torchvision", "tqdm", "skimage")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
    say "!! tests/test_gpu.py not run: $python lacks $missing (pip install them, or run scripts/setup.sh)"
    failures+=("tests/test_gpu.py")
else  # pytest exits 0 when every test is skipped; here that is a failure
    step "tests/test_gpu.py (full log: test_gpu.log)" \
        bash -c "\"$python\" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py > \"$out/test_gpu.log\" 2>&1; \
                 status=\$?; tail -n 15 \"$out/test_gpu.log\"; \
                 if grep -q ' passed' \"$out/test_gpu.log\" && ! grep -q ' skipped' \"$out/test_gpu.log\"; then \
                     exit \$status; else exit \$(( status ? status : 1 )); fi"
fi
step "trial_cost.py --device cuda --packing 1 2 4 8" \
    "$python" benchmarks/trial_cost.py --device cuda --packing 1 2 4 8 --out "$out/trial_cost.json"
step "gpu_throughput.py --device cuda --packing 1 8 --predict-batches 32 128 (this code)" \
    "$python" benchmarks/gpu_throughput.py --device cuda --packing 1 8 --predict-batches 32 128 \
    --out "$out/gpu_throughput.json"
if [ -n "$baseline" ]; then
    cd "$baseline"
    PYTHONPATH="$baseline" step "the same with the code in $baseline" \
        "$python" benchmarks/gpu_throughput.py --device cuda --packing 1 8 --predict-batches 32 128 \
        --out "$out/gpu_throughput_baseline.json"
    cd "$root"
fi
if [ ${#failures[@]} -eq 0 ]; then
    say "all steps passed; wrote $out"
else
    say "${#failures[@]} step(s) failed: $(IFS=';'; echo "${failures[*]}"); wrote $out"
fi
[ ${#failures[@]} -eq 0 ]
