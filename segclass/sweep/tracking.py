"""MLflow specifics, in one place: one run per grid point, found again by its key.

Ray's stock MLflow callback maps Tune trial ids to runs in driver memory, so a
restarted driver opens duplicates. Here every run carries its grid point's
deterministic key as the tag `segclass.grid_key`; the tracker reattaches to an
unfinished run with that key and never logs an epoch twice, so a resumed or
retried trial continues its own run with an intact history.

Only the sweep driver writes (a Tune callback), so a SQLite store never sees
concurrent writers.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from segclass.grid import GridPoint

log = logging.getLogger(__name__)

KEY_TAG = "segclass.grid_key"
SWEEP_TAG = "segclass.sweep"
FINISHED = "FINISHED"


def default_tracking_uri(results: Path) -> str:
    """A SQLite store in the results folder (MLflow's file store is in maintenance mode)."""
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


def experiment_name(point: GridPoint) -> str:
    return f"segclass-{point.study}-{point.dataset}"


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics dict (lists such as confusion matrices go to artifacts)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[f"{prefix}{key}"] = float(value)
    return out


class Tracker:
    """Create, find and finish MLflow runs for grid points."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None, sweep: str = "") -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self.sweep = sweep
        self._experiments: dict[str, str] = {}
        self._runs: dict[str, str] = {}  # grid key -> run id
        self._last_epoch: dict[str, int] = {}  # grid key -> last epoch logged
        self._finished: set[str] = set()  # keys whose run was already finished: log nothing more

    # -- lookup -------------------------------------------------------------
    def experiment_id(self, point: GridPoint) -> str:
        name = experiment_name(point)
        if name not in self._experiments:
            existing = self.client.get_experiment_by_name(name)
            if existing is not None:
                self._experiments[name] = existing.experiment_id
            else:
                location = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
                self._experiments[name] = self.client.create_experiment(name, artifact_location=location)
        return self._experiments[name]

    def runs_for(self, point: GridPoint) -> list:
        return self.client.search_runs([self.experiment_id(point)], filter_string=f"tags.`{KEY_TAG}` = '{point.key}'",
                                       max_results=50)

    def finished_keys(self, points: list[GridPoint]) -> set[str]:
        """Keys of the points that already have a finished run."""
        finished = set()
        for experiment in {self.experiment_id(p) for p in points}:
            token = None
            while True:
                page = self.client.search_runs([experiment], filter_string="attributes.status = 'FINISHED'",
                                               max_results=1000, page_token=token)
                finished.update(run.data.tags.get(KEY_TAG) for run in page)
                token = page.token
                if not token:
                    break
        return {p.key for p in points} & finished

    # -- writing ------------------------------------------------------------
    def ensure_run(self, point: GridPoint, params: dict[str, Any]) -> str:
        """The run of `point`: an unfinished one is reattached, else a new one is made."""
        if point.key in self._runs:
            return self._runs[point.key]
        runs = self.runs_for(point)
        finished = [r for r in runs if r.info.status == FINISHED]
        candidates = [r for r in runs if r.info.status != FINISHED]
        if finished:  # a trial replayed after its run was finished: never a second run
            run_id = finished[0].info.run_id
            self._finished.add(point.key)
        elif candidates:
            run = max(candidates, key=lambda r: r.info.start_time)
            run_id = run.info.run_id
            history = self.client.get_metric_history(run_id, "epoch")
            self._last_epoch[point.key] = int(max((m.value for m in history), default=0))
            self.client.update_run(run_id, status="RUNNING")
            log.info("reattached to MLflow run %s for %s (history up to epoch %d)", run_id, point.run_name,
                     self._last_epoch[point.key])
        else:
            tags = {KEY_TAG: point.key, SWEEP_TAG: self.sweep, "mlflow.runName": point.run_name}
            run_id = self.client.create_run(self.experiment_id(point), run_name=point.run_name, tags=tags).info.run_id
            from mlflow.entities import Param

            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self._last_epoch[point.key] = 0
        self._runs[point.key] = run_id
        return run_id

    def is_finished(self, point: GridPoint) -> bool:
        """True when the point's run was already finished before this tracker touched it, or by it."""
        return point.key in self._finished

    def log_epoch(self, point: GridPoint, epoch: int, metrics: dict[str, Any]) -> bool:
        """Log one epoch's metrics unless that epoch is already in the run (a replayed epoch)."""
        run_id = self._runs[point.key]
        if point.key in self._finished or epoch <= self._last_epoch.get(point.key, 0):
            return False
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = scalar_metrics(metrics)
        batch = [Metric(key, value, now, epoch) for key, value in values.items()]
        for start in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[start : start + 500])
        self._last_epoch[point.key] = epoch
        return True

    def finish(self, point: GridPoint, report: dict[str, Any], artifacts: dict[str, bytes]) -> None:
        """Final test metrics, artifacts, status FINISHED."""
        from mlflow.entities import Metric

        if point.key in self._finished:
            return
        run_id = self._runs[point.key]
        now = int(time.time() * 1000)
        finals = {k: v for k, v in scalar_metrics(report).items()
                  if k.startswith(("test_", "holdout_", "val_best", "best_epoch", "images_per_second", "n_"))}
        self.client.log_batch(run_id, metrics=[Metric(f"final_{k}", v, now, 0) for k, v in finals.items()])
        with tempfile.TemporaryDirectory() as folder:
            folder_path = Path(folder)
            (folder_path / "report.json").write_text(json.dumps(report, indent=1, default=str))
            for name, payload in artifacts.items():
                target = folder_path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)
            self.client.log_artifacts(run_id, str(folder_path))
        self.client.set_terminated(run_id, status=FINISHED)
        self._finished.add(point.key)

    def fail(self, point: GridPoint) -> None:
        """Mark a run failed; a later resume reattaches to it."""
        run_id = self._runs.get(point.key)
        if run_id and point.key not in self._finished:
            self.client.set_terminated(run_id, status="FAILED")
