"""MLflow writes off Tune's event loop: a queue drained by one writer thread.

Tune calls its callbacks on the driver's scheduling loop; an MLflow call there
(tens of milliseconds to a server, more under SQLite lock contention) delays
every trial's scheduling. The callback only enqueues; this thread writes, and
folds the epochs that piled up for one run into a single `log_batch`. `close()`
drains everything before the driver exits. A driver killed with writes still
queued loses nothing that matters: epochs are replayed from the trial's
checkpoint history when it resumes, and an unfinished run is rerun from its
checkpoint (evaluation only, when training was complete).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from segclass.schema import TrialIdentity
from segclass.ray_sweep.storage import Storage
from segclass.ray_sweep.tracking import Tracker

log = logging.getLogger(__name__)
_STOP = object()


@dataclass
class _Start:
    identity: TrialIdentity
    params: dict[str, Any]
    start_epoch: int


@dataclass
class _Epoch:
    digest: str
    epoch: int
    metrics: dict[str, float]


@dataclass
class _Finish:
    digest: str


@dataclass
class _Fail:
    digest: str


@dataclass
class WriterStats:
    """What the writer did; `errors` (one line each) end up in the sweep summary."""

    epochs_logged: int = 0
    batches: int = 0
    finished: int = 0
    errors: list[str] = field(default_factory=list)


class TrackingWriter:
    """Owns the `Tracker`; everything reaches MLflow through `submit_*` and this thread."""

    def __init__(self, tracker: Tracker, storage: Storage, keep_trial_files: bool = False) -> None:
        self.tracker = tracker
        self.storage = storage  # the sweep's folder: trials/<digest>/final holds what a finished trial left
        self.keep_trial_files = keep_trial_files
        self.stats = WriterStats()
        self._starts: dict[str, _Start] = {}  # the latest start of each digest, to retry one that failed
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="segclass-mlflow-writer", daemon=True)
        self._thread.start()

    # -- called from Tune's event loop: enqueue only --------------------------
    def submit_start(self, identity: TrialIdentity, params: dict[str, Any], start_epoch: int) -> None:
        self._queue.put(_Start(identity, params, start_epoch))

    def submit_epoch(self, digest: str, epoch: int, metrics: dict[str, float]) -> None:
        self._queue.put(_Epoch(digest, epoch, metrics))

    def submit_finish(self, digest: str) -> None:
        self._queue.put(_Finish(digest))

    def submit_fail(self, digest: str) -> None:
        self._queue.put(_Fail(digest))

    def close(self, timeout: float = 600.0) -> WriterStats:
        """Write everything queued, then stop the thread; give up after `timeout` s (an unreachable server)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.stats.errors.append(f"{self._queue.qsize()} MLflow writes still queued after {timeout:.0f} s; "
                                         "the next run of the sweep redoes them")
        return self.stats

    # -- the thread ---------------------------------------------------------
    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:  # take whatever else is waiting, so epochs of one run go in one call
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in items)
            self._write([item for item in items if item is not _STOP])
            if stop:
                return

    def _write(self, items: list) -> None:
        pending: dict[str, list[tuple[int, dict[str, float]]]] = {}

        def flush() -> None:
            for digest, epochs in pending.items():
                self._guard(f"log epochs of {digest}", lambda: self._log(digest, epochs))
            pending.clear()

        for item in items:
            if isinstance(item, _Epoch):
                pending.setdefault(item.digest, []).append((item.epoch, item.metrics))
                continue
            flush()  # keep order: a run's epochs reach MLflow before its finish
            if isinstance(item, _Start):
                self._starts[item.identity.digest] = item
                self._guard(f"start {item.identity.point.run_name}", lambda: self._ensure_run(item.identity.digest))
            elif isinstance(item, _Finish):
                self._guard(f"finish {item.digest}", lambda: self._finish(item.digest))
            elif isinstance(item, _Fail):
                self._guard(f"mark {item.digest} failed", lambda: self.tracker.fail(item.digest))
        flush()

    def _ensure_run(self, digest: str) -> None:
        """Start the digest's run if it has none yet: the first time, or again after a start that failed."""
        if not self.tracker.has_run(digest):
            start = self._starts.get(digest)
            if start is None:
                raise RuntimeError(f"no MLflow run for trial {digest}: the callback never started one")
            self.tracker.start(start.identity, start.params, start.start_epoch)

    def _log(self, digest: str, epochs: list[tuple[int, dict[str, float]]]) -> None:
        self._ensure_run(digest)
        self.stats.epochs_logged += self.tracker.log_epochs(digest, epochs)
        self.stats.batches += 1

    def _finish(self, digest: str) -> None:
        self._ensure_run(digest)
        name = f"trials/{digest}/final"
        folder = self.storage.download(name)
        try:
            self.tracker.finish(digest, folder)
        finally:
            if self.storage.fs is not None:  # a downloaded copy
                shutil.rmtree(folder, ignore_errors=True)
        self.stats.finished += 1
        if not self.keep_trial_files:  # MLflow holds the results now; the checkpoint is no longer needed
            self.storage.delete(f"trials/{digest}")

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # one failed write must not stop the others; the summary reports it
            log.error("MLflow: could not %s: %s", what, exc)
            self.stats.errors.append(f"{what}: {exc}")
