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


def trial_name(trial) -> str:
    """Tune's name for a trial: the grid point's run name, e.g. 'S+C s=5 seed=2 budget=equal'."""
    return GridPoint.from_key(trial.config["key"]).run_name


def trial_dirname(trial) -> str:
    """A trial's folder in the Tune experiment: its run name without spaces, plus Tune's id (unique)."""
    return f"{trial_name(trial).replace(' ', '_')}_{trial.trial_id}"


def trial_error(trial) -> str:
    """The last line of a failed trial's error and where its whole traceback is.

    Workers' output does not reach the driver's console (`log_to_driver=False`
    keeps it a progress report), so the reason a trial failed is said here.
    """
    text = ""
    try:
        error = trial.get_error()
        text = str(error) if error is not None else ""
    except Exception:  # noqa: BLE001 - reading a failed trial's error must not fail the sweep
        pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = f" (traceback: {trial.error_file})" if getattr(trial, "error_file", None) else ""
    return f"{lines[-1][:300] if lines else 'no error text recorded'}{where}"


def _minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class ProgressCallback(tune.Callback):
    """Prints a line per finished or failed trial, and a status line at most every `every` seconds.

    `batches_per_epoch` maps each grid key this run must finish to the
    forward-backward batches one of its epochs runs (an S+C iteration runs two;
    under budget `paper` a trial's epoch is one pass over its own patches), so
    the time left weighs work, not trial counts: Tune creates the trials of a
    large grid lazily, and the estimate must cover the ones it has not created.
    Epochs a resumed trial replays from its checkpoint are not work of this run.
    """

    def __init__(self, batches_per_epoch: dict[str, int], epochs: int, every: float = 60.0,
                 out: TextIO | None = None) -> None:
        self.batches, self.epochs, self.every = dict(batches_per_epoch), epochs, every
        self.total = len(self.batches)
        self.out = out
        self.started = time.monotonic()
        self.last_status = self.started
        self.finished: set[str] = set()  # grid keys whose final result arrived (Tune may still say RUNNING)
        self.failed: set[str] = set()  # grid keys that failed with no retries left
        self.epoch_of: dict[str, int] = {}  # grid key -> last epoch reported
        self.start_epoch_of: dict[str, int] = {}  # grid key -> the epoch its checkpoint held when this run began
        self.val_of: dict[str, float] = {}  # grid key -> val macro F1 of its last validated epoch
        self.trial_started: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "out": None}

    @property
    def done(self) -> int:
        return len(self.finished)

    def _print(self, line: str) -> None:
        import sys

        print(f"[{_minutes(time.monotonic() - self.started):>11}] {line}", file=self.out or sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.trial_started.setdefault(trial.trial_id, time.monotonic())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        key = trial.config["key"]
        if "start_epoch" in result:  # the first one: a retry's replay must not undo work trained in this run
            self.start_epoch_of.setdefault(key, int(result["start_epoch"]))
        if result.get("final"):
            if key not in self.finished:  # a retried trial may send its final result again
                self.finished.add(key)
                scores = ", ".join(f"{label} {result[name]:.3f}" for name, label in
                                   (("test_macro_f1", "test macro F1"),
                                    ("test_paper_micro_f1", "paper-micro F1")) if name in result)
                took = time.monotonic() - self.trial_started.get(trial.trial_id, self.started)
                self._print(f"{self.done}/{self.total} done: {trial_name(trial)}: {scores} ({_minutes(took)})")
        else:
            self.epoch_of[key] = int(result.get("epoch", 0))
            if "val_macro_f1" in result:
                self.val_of[key] = float(result["val_macro_f1"])
        self._status(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed.add(trial.config["key"])
        self._print(f"FAILED (no retries left): {trial_name(trial)}: {trial_error(trial)}; the next run of this "
                    "command resumes it")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._print(f"retrying {trial_name(trial)} from its last checkpoint: it failed with {trial_error(trial)}")

    def share_done(self) -> float:
        """The share of this run's training work done: batches trained now over batches it has to train."""
        to_train = trained = 0
        for key, batches in self.batches.items():
            start = self.start_epoch_of.get(key, 0)
            reached = self.epochs if key in self.finished else self.epoch_of.get(key, start)
            end = reached if key in self.failed else self.epochs  # a failed trial trains no further this run
            to_train += batches * max(0, end - start)
            trained += batches * max(0, reached - start)
        return trained / to_train if to_train else 0.0  # nothing to train: no estimate rather than "0 s left"

    def _status(self, trials) -> None:
        now = time.monotonic()
        if now - self.last_status < self.every:
            return
        self.last_status = now
        running = [t for t in trials if t.status == "RUNNING" and t.config["key"] not in self.finished]
        failed = len(self.failed - self.finished)
        waiting = self.total - self.done - len(running) - failed  # pending in Tune, or not yet created by it
        shown = ", ".join(f"{trial_name(t)} epoch {self.epoch_of.get(t.config['key'], 0)}/{self.epochs}"
                          + (f" val F1 {self.val_of[t.config['key']]:.2f}" if t.config["key"] in self.val_of else "")
                          for t in running[:4])
        more = f" and {len(running) - 4} more" if len(running) > 4 else ""
        share = self.share_done()
        left = f", about {_minutes((now - self.started) * (1 - share) / share)} left" if share > 0.05 else ""
        failures = f", {failed} failed" if failed else ""
        listed = f" ({shown}{more})" if running else ""
        self._print(f"{self.done}/{self.total} done, {len(running)} running{listed}, {waiting} waiting"
                    f"{failures}{left}")
