"""Named exceptions for bad input.

Every message names the offending file (or value) and says what to do about it,
so a user several layers above the failure can act without reading a traceback.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Iterator

#: The flag that names a dataset's folder in the command being run: `--root` in `python -m segclass.data build`,
#: `--data-root` in the sweep and `segclass.train`, which say so with `naming_root_flag`.
_ROOT_FLAG = contextvars.ContextVar("segclass_root_flag", default="--root")


def root_flag() -> str:
    """The dataset-folder flag of the command being run, for error messages a user acts on."""
    return _ROOT_FLAG.get()


@contextmanager
def naming_root_flag(flag: str) -> Iterator[None]:
    """Within the block, messages name the dataset folder's flag as `flag`."""
    token = _ROOT_FLAG.set(flag)
    try:
        yield
    finally:
        _ROOT_FLAG.reset(token)


class SegclassError(Exception):
    """Base class of all errors segclass raises on purpose."""


class PretrainedWeightsError(SegclassError):
    """Pretrained weights cannot be downloaded, or their file is missing, unreadable or does not fit the encoder."""


class CheckpointError(SegclassError):
    """A training checkpoint is missing, corrupt or belongs to another configuration."""


class DatasetError(SegclassError):
    """A dataset folder is missing files, or holds masks or labels that make no sense."""


class TrainingError(SegclassError):
    """Training cannot go on (for example the loss became NaN)."""


class ConfigError(SegclassError, ValueError):
    """A configuration value is out of range or names something that does not exist."""


class TrackingStoreError(SegclassError):
    """An MLflow store or sweep folder cannot be used as asked (old format, another dataset, mixed settings)."""
