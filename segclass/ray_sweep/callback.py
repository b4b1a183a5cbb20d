"""The Tune callback that mirrors trial reports into MLflow, through the writer thread.

It runs on Tune's scheduling loop, so it does no I/O: it turns each result
into a queued write (`writer.py`).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from segclass.schema import TrialIdentity, epoch_scalars
from segclass.ray_sweep.writer import TrackingWriter


class MlflowCallback(tune.Callback):
    """One MLflow run per trial identity; epochs as they come, the artifacts at the end."""

    def __init__(self, writer: TrackingWriter, identities: dict[str, TrialIdentity], params: dict[str, Any]) -> None:
        self.writer = writer
        self.identities = identities  # grid key -> identity
        self.params = params  # sweep-wide params (sweep, preset, pretrained name)
        self._started: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with its experiment state
        return {"identities": {}, "params": self.params, "_started": set(), "writer": None}

    def _identity(self, trial, result: dict[str, Any]) -> TrialIdentity:
        identity = self.identities[trial.config["key"]]
        if identity.digest not in self._started:
            self._started.add(identity.digest)
            self.writer.submit_start(identity, {**self.params, **identity.params(self.params.get("pretrained", ""))},
                                     int(result.get("start_epoch", 0)))
        return identity

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """An epoch (trained or replayed from a checkpoint) or the trial's final report."""
        identity = self._identity(trial, result)
        if result.get("final"):
            self.writer.submit_finish(identity.digest)
        else:
            self.writer.submit_epoch(identity.digest, int(result["epoch"]), epoch_scalars(result))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        """The trial failed for good (no retries left): its run is marked FAILED; a later sweep resumes it."""
        self._release(trial)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """The trial failed and Tune retries it: the retry reattaches to the run (or supersedes it, see tracking)."""
        self._release(trial)

    def _release(self, trial) -> None:
        identity = self.identities[trial.config["key"]]
        if identity.digest in self._started:
            self.writer.submit_fail(identity.digest)
            self._started.discard(identity.digest)
