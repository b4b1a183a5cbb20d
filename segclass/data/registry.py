"""Dataset names -> a built shard cache -> DatasetArrays. Errors list the valid names."""

from __future__ import annotations

import os
from pathlib import Path

from segclass.data.arrays import DatasetArrays
from segclass.errors import ConfigError


def cache_root() -> Path:
    """The data_cache folder (SEGCLASS_DATA_CACHE overrides ./data_cache)."""
    return Path(os.environ.get("SEGCLASS_DATA_CACHE", "data_cache"))


def default_source(dataset: str) -> Path:
    """Where the synthetic dataset's files are generated when no --data-root is given."""
    return cache_root() / dataset / "source"


def default_cache(dataset: str, source: Path) -> Path:
    """Shard cache of a dataset: data_cache/<dataset>/shards, or .../shards-<hash> for other sources."""
    import hashlib

    if source.resolve() == default_source(dataset).resolve():
        return cache_root() / dataset / "shards"
    tag = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:10]
    return cache_root() / dataset / f"shards-{tag}"


def ensure_cache(dataset: str, root: str | Path | None = None, out: str | Path | None = None, params=None) -> Path:
    """Build the dataset's shards if missing or stale; return the cache folder."""
    from segclass.data.build import DATASET_NAMES, BuildParams, build_cache, locate_source

    if dataset not in DATASET_NAMES:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    if root is None:
        if dataset != "synthetic":
            raise ConfigError(f"dataset {dataset!r} needs its folder: --root in `python -m segclass.data build`, "
                              "--data-root in the sweep and segclass.train (docs/data.md)")
        root = default_source(dataset)
    root = Path(root)
    if root.is_dir():  # the dataset's own folder names the cache, however far above it --root pointed
        root = locate_source(dataset, root)
    out = Path(out) if out else default_cache(dataset, root)
    return build_cache(dataset, root, out, params or BuildParams())


def load_dataset(dataset: str, root: str | Path | None = None, cache: str | Path | None = None) -> DatasetArrays:
    """Arrays of a dataset, building its shard cache on first use."""
    from segclass.data.shards import read_cache

    return read_cache(ensure_cache(dataset, root, cache))
