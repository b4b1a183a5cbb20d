"""Finished sweep runs from MLflow as one tidy DataFrame (one row per run)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segclass.grid import GridPoint
from segclass.sweep.tracking import KEY_TAG

RUN_COLUMNS = ["experiment", "run_id", "run_name", "study", "dataset", "mode", "x", "seed", "variant", "budget"]


def load_runs(tracking_uri: str, experiment: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Finished segclass runs; `x` is s or c in percent; metrics are the runs' final_* values."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith("segclass-")]
    if experiment:
        experiments = [e for e in experiments if e.name == experiment]
    records = []
    for exp in experiments:
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                      max_results=1000, page_token=token)
            for run in page:
                key = run.data.tags.get(KEY_TAG)
                if not key:
                    continue
                point = GridPoint.from_key(key)
                if dataset and point.dataset != dataset:
                    continue
                record = {"experiment": exp.name, "run_id": run.info.run_id, "run_name": run.info.run_name,
                          "study": point.study, "dataset": point.dataset, "mode": point.mode,
                          "x": round(point.fraction * 100, 4), "seed": point.seed, "variant": point.variant,
                          "budget": point.budget, "artifact_uri": run.info.artifact_uri}
                record.update({k[len("final_"):]: v for k, v in run.data.metrics.items() if k.startswith("final_")})
                records.append(record)
            token = page.token
            if not token:
                break
    return pd.DataFrame.from_records(records, columns=None if records else RUN_COLUMNS)


def artifact_path(artifact_uri: str, name: str) -> Path:
    """Local path of a run artifact (the default stores are local folders)."""
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{name}"))
