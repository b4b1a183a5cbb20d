"""Trial checkpoints: written atomically, read with `weights_only=True`.

A checkpoint holds what nanoGPT-style resume needs: model and optimizer state,
completed epochs, the best-so-far weights and score, the metric history, the
config that built the model and the torch RNG state. Only tensors and plain
Python values go in, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from segclass.errors import CheckpointError
from segclass.files import atomic_write

FORMAT_VERSION = 1
FILENAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        with temporary.open("wb") as file:
            torch.save({"format_version": FORMAT_VERSION, **state}, file)
            file.flush()
            os.fsync(file.fileno())

    atomic_write(path, write)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a segclass checkpoint ({exc}); delete it to start the trial afresh"
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a segclass checkpoint of format {FORMAT_VERSION}")
    return state
