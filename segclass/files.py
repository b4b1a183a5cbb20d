"""Writing files so that a crash never leaves half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux): setting and restoring it
    would, for a moment, give files other threads create (the sweep's MLflow writer) the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it: set, then put back
    os.umask(mask)
    return mask


def make_shareable(path: Path) -> None:
    """Give a file or folder made by `tempfile` (mode 0600 / 0700) the mode a plain `open` or `mkdir` would.

    Temporary files are private by design; once renamed into place they are
    results (a shard cache, a sweep's checkpoints, predictions) that the other
    users of a shared disk must be able to read, as the umask says.
    """
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it into place.

    The rename is atomic on one filesystem: readers see the old file or the
    whole new one. `write` should flush and fsync when durability matters.
    The file gets the umask's mode, not the temporary file's private 0600.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    make_shareable(Path(temporary))
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
