#!/usr/bin/env bash
# Install segclass and its test tools into ./.venv (created if missing).
# torch/torchvision, Ray and MLflow are pinned here to the builds this project is tested with
# (pyproject.toml holds lower bounds only);
# on a machine with its own CUDA torch, set SEGCLASS_KEEP_TORCH=1 to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ -z "${SEGCLASS_KEEP_TORCH:-}" ] && ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
# Ray and MLflow change their APIs fastest: install the versions this project is tested with
.venv/bin/python -m pip install -q -e '.[test]' 'ray[tune]==2.60.0' 'mlflow==3.17.2'
echo "segclass installed in $(pwd)/.venv"
