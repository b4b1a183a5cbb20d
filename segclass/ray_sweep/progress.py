"""The sweep's console: one line per finished trial and a status line now and then.

Tune's own console (a result box of ~50 lines per trial, generated trial names,
TensorBoard hints) is switched off (`verbose=0`); this callback says what a
person following a sweep wants to know: which grid point finished with what
test score, how many are done, running and waiting, and roughly how long the
rest will take. Errors still come from Tune's logger, with their traceback.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from ray import tune

from segclass.grid import GridPoint
from segclass.subsets import patch_fractions


def trial_name(trial) -> str:
    """Tune's name for a trial: the grid point's run name, e.g. 'S+C s=5 seed=2 budget=equal'."""
    return GridPoint.from_key(trial.config["key"]).run_name


def trial_dirname(trial) -> str:
    """A trial's folder in the Tune experiment: its run name without spaces, plus Tune's id (unique)."""
    return f"{trial_name(trial).replace(' ', '_')}_{trial.trial_id}"


def epoch_cost(trial) -> int:
    """A trial's epoch in units of one batch per iteration: 2 when it trains on both patch kinds (an
    iteration then runs a segmentation and a classification batch), else 1. Weights the time estimate,
    so S+C trials waiting behind finished S trials do not make the rest look short."""
    point = GridPoint.from_key(trial.config["key"])
    seg, cls = patch_fractions(point.mode, point.seg_fraction, point.cls_fraction)
    return max(1, int(seg > 0) + int(cls > 0))


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class ProgressCallback(tune.Callback):
    """Prints a line per finished or failed trial, and a status line at most every `every` seconds."""

    def __init__(self, total: int, epochs: int, every: float = 60.0, out: TextIO | None = None) -> None:
        self.total, self.epochs, self.every = total, epochs, every
        self.out = out
        self.started = time.monotonic()
        self.last_status = self.started
        self.done = 0
        self.finished: set[str] = set()  # trial ids whose final result arrived (Tune may still say RUNNING)
        self.epoch_of: dict[str, int] = {}  # trial id -> last epoch reported
        self.val_of: dict[str, float] = {}  # trial id -> val macro F1 of its last validated epoch
        self.trial_started: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "out": None}

    def _print(self, line: str) -> None:
        import sys

        print(f"[{_minutes(time.monotonic() - self.started):>11}] {line}", file=self.out or sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.trial_started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if result.get("final"):
            self.done += 1
            self.finished.add(trial.trial_id)
            scores = ", ".join(f"{label} {result[key]:.3f}" for key, label in
                               (("test_macro_f1", "test macro F1"),
                                ("test_paper_micro_f1", "paper-micro F1")) if key in result)
            took = time.monotonic() - self.trial_started.get(trial.trial_id, self.started)
            self._print(f"{self.done}/{self.total} done: {trial_name(trial)}: {scores} ({_minutes(took)})")
        else:
            self.epoch_of[trial.trial_id] = int(result.get("epoch", 0))
            if "val_macro_f1" in result:
                self.val_of[trial.trial_id] = float(result["val_macro_f1"])
        self._status(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._print(f"FAILED (no retries left): {trial_name(trial)}; the next run of this command resumes it")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._print(f"retrying {trial_name(trial)} from its last checkpoint")

    def _status(self, trials) -> None:
        now = time.monotonic()
        if now - self.last_status < self.every:
            return
        self.last_status = now
        running = [t for t in trials if t.status == "RUNNING" and t.trial_id not in self.finished]
        waiting = sum(1 for t in trials if t.status == "PENDING" and t.trial_id not in self.finished)
        shown = ", ".join(f"{trial_name(t)} epoch {self.epoch_of.get(t.trial_id, 0)}/{self.epochs}"
                          + (f" val F1 {self.val_of[t.trial_id]:.2f}" if t.trial_id in self.val_of else "")
                          for t in running[:4])
        more = f" and {len(running) - 4} more" if len(running) > 4 else ""
        # the share of the work done, in batch-epochs of the trials Tune knows (skipped ones are not among them)
        work = sum(epoch_cost(t) * self.epochs for t in trials)
        work_done = sum(epoch_cost(t) * (self.epochs if t.trial_id in self.finished else
                                         self.epoch_of.get(t.trial_id, 0)) for t in trials)
        share = work_done / max(1, work)
        left = f", about {_minutes((now - self.started) * (1 - share) / share)} left" if share > 0.05 else ""
        self._print(f"{self.done}/{self.total} done, {len(running)} running ({shown}{more}), {waiting} waiting{left}")
