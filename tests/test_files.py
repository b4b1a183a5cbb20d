"""Atomic writes: all or nothing, and readable by the other users of a shared disk as the umask allows."""

from __future__ import annotations

import os
import stat

import pytest

from segclass.files import atomic_write


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_write_gives_the_umask_mode_not_the_temporary_files_0600(tmp_path, umask_022):
    target = tmp_path / "sweep.json"
    atomic_write(target, lambda p: p.write_text("{}"))
    assert target.read_text() == "{}" and stat.S_IMODE(target.stat().st_mode) == 0o644
    os.umask(0o077)  # a user who wants private files gets them
    private = tmp_path / "private.json"
    atomic_write(private, lambda p: p.write_text("{}"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, umask_022):
    target = tmp_path / "checkpoint.pt"
    target.write_text("old")

    def fail(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_shard_cache_folder_gets_the_umask_mode_not_the_temporary_folders_0700(tiny_cache):
    """The cache the data build swaps into place from a private temporary folder, built under this umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(tiny_cache.stat().st_mode) == 0o777 & ~umask
