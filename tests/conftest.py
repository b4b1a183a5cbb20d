"""Shared fixtures: a tiny synthetic dataset written in the real file formats, and its shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segclass.synthetic import SyntheticConfig

TINY = SyntheticConfig(seed=3, slide_size=320, train_slides=2, val_slides=1, test_slides=1,
                       cls_patients=4, cls_per_class=8)


@pytest.fixture(scope="session", autouse=True)
def isolated_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep every test's built data out of the repository's data_cache/."""
    path = tmp_path_factory.mktemp("data_cache")
    os.environ["SEGCLASS_DATA_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segclass.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_cache(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segclass.data import ensure_cache

    return ensure_cache("synthetic", tiny_root, tmp_path_factory.mktemp("cache") / "tiny")


@pytest.fixture(scope="session")
def tiny_data(tiny_cache: Path):
    from segclass.data.shards import read_cache

    return read_cache(tiny_cache)


@pytest.fixture(scope="session")
def tiny_trained(tiny_data, tmp_path_factory: pytest.TempPathFactory):
    """A one-epoch S+C model of the tiny dataset: (its checkpoint.pt, the trainer's final report)."""
    from segclass.config import TrainConfig
    from segclass.training_loop import train

    run_dir = tmp_path_factory.mktemp("trained")
    report = train(TrainConfig(mode="S+C", seg_fraction=0.5, epochs=1, batch_size=4), tiny_data, run_dir=run_dir)
    return run_dir / "checkpoint.pt", report
