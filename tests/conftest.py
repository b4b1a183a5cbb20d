"""Shared fixtures: a tiny synthetic dataset written in the real file formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from segclass.synthetic import SyntheticConfig

TINY = SyntheticConfig(seed=3, slide_size=320, train_slides=2, val_slides=1, test_slides=1,
                       cls_patients=4, cls_per_class=8)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segclass.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_data(tiny_root: Path):
    from segclass.data.folder import load_folder

    return load_folder(tiny_root, name="synthetic")
