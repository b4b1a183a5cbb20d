"""Trial checkpoints: written atomically, read with `weights_only=True`.

A checkpoint holds what nanoGPT-style resume needs: model and optimizer state,
completed epochs, the best-so-far epoch and score, the metric history, the
config that built the model and the torch RNG state. The best-epoch weights sit
beside it in `best-<epoch>.pt`, written only when the best epoch changes (format
1 carried them inside every checkpoint: a third more bytes per epoch). Only
tensors and plain Python values go in, so loading never unpickles arbitrary
objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from segclass.errors import CheckpointError
from segclass.files import atomic_write

FORMAT_VERSION = 2
#: Formats this code reads: 1 kept the best weights inside the checkpoint.
READABLE_FORMATS = (1, 2)
FILENAME = "checkpoint.pt"


def best_filename(epoch: int) -> str:
    """The file of the best-epoch weights that a checkpoint's `best["epoch"]` points to."""
    return f"best-{epoch}.pt"


def is_best_file(name: str) -> bool:
    """A best-weights file (`best-<epoch>.pt`)."""
    return name.startswith("best-") and name.endswith(".pt")


def load_best(folder: str | Path, epoch: int) -> dict[str, Any]:
    """The best-epoch weights a checkpoint in `folder` points to."""
    return load_checkpoint(Path(folder) / best_filename(epoch))["model"]


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
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a segclass checkpoint of format {' or '.join(map(str, READABLE_FORMATS))}")
    return state
