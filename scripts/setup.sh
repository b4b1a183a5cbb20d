#!/usr/bin/env bash
# Install segclass and its test tools into ./.venv (created if missing).
# torch/torchvision are pinned here to the builds this project is tested with;
# on a machine with its own CUDA torch, set SEGCLASS_KEEP_TORCH=1 to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ -z "${SEGCLASS_KEEP_TORCH:-}" ] && ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
.venv/bin/python -m pip install -q -e '.[test]'
echo "segclass installed in $(pwd)/.venv"
