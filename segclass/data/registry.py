"""Dataset names -> loaders. Errors list the valid names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from segclass.data.arrays import DatasetArrays
from segclass.errors import ConfigError


def _load_synthetic(root: Path) -> DatasetArrays:
    from segclass.data.folder import load_folder
    from segclass.synthetic import generate

    # a folder that already holds a synthetic dataset is used as it is, whatever its size
    if not (root / "synthetic.json").is_file():
        generate(root)
    return load_folder(root, name="synthetic")


def _load_folder(root: Path) -> DatasetArrays:
    from segclass.data.folder import load_folder

    return load_folder(root, name="folder")


DATASETS: dict[str, Callable[[Path], DatasetArrays]] = {
    "synthetic": _load_synthetic,
    "folder": _load_folder,
}


def default_root(dataset: str) -> Path:
    """Where a dataset lives when no --data-root is given: data_cache/<dataset>/source.

    SEGCLASS_DATA_CACHE overrides the data_cache folder (default: ./data_cache).
    """
    return Path(os.environ.get("SEGCLASS_DATA_CACHE", "data_cache")) / dataset / "source"


def load_dataset(dataset: str, root: str | Path | None = None) -> DatasetArrays:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(sorted(DATASETS))}")
    if root is None:
        if dataset != "synthetic":
            raise ConfigError(f"dataset {dataset!r} needs --data-root pointing at its files")
        root = default_root(dataset)
    return DATASETS[dataset](Path(root))
