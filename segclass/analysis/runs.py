"""Finished sweep runs from MLflow as one tidy DataFrame (one row per run).

A table cell averages runs over seeds, so every run in a selection must share
its training settings (epochs, batch size, weights, data: the `segclass.settings`
tag). A selection holding several is refused with a message that says what
differs and which filter (`--sweep`, `--epochs`, `--settings`) picks one.
The encoder's init is one of those settings, so each dataset's runs share one,
and every table and figure says which (`init_labels`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segclass.errors import ConfigError, TrackingStoreError
from segclass.grid import GridPoint
from segclass.schema import (FINAL_PREFIX, IDENTITY_TAG, IMAGENET_INIT, KEY_TAG, RANDOM_INIT, SETTINGS_TAG, SWEEP_TAG,
                             check_run_is_current, identity_columns, iter_runs)

RUN_COLUMNS = ["experiment", "run_id", "run_name", "study", "dataset", "mode", "x", "seed", "variant", "budget",
               "identity", "settings", "sweep", "epochs", "init", "precision"]
#: Columns holding a run's MLflow params, one per param: `param_<name>`.
PARAM_PREFIX = "param_"


#: Columns of `load_runs`'s frame that are not final metrics.
_NOT_METRICS = {*RUN_COLUMNS, "end_time", "artifact_uri"}


def with_mlflow_names(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with its metric columns named as MLflow shows them (`final_<metric>`) and `x` spelled out
    (`swept_percent`): the frame's short names suit the analysis code, not a reader of the files."""
    renames = {c: f"{FINAL_PREFIX}{c}" for c in runs.columns
               if c not in _NOT_METRICS and not c.startswith(PARAM_PREFIX)}
    return runs.rename(columns={**renames, "x": "swept_percent"})


def load_runs(tracking_uri: str, experiment: str | None = None, dataset: str | None = None,
              sweep: str | None = None, settings: str | None = None, epochs: int | None = None) -> pd.DataFrame:
    """Finished segclass runs; `x` is s or c in percent; metrics are the runs' final_* values.

    Every MLflow param of a run is also a `param_<name>` column, as MLflow stores
    it (a string), so that the frame, and the report's `tables/runs.parquet`
    written from it, answers questions the tables do not without an MLflow client.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith("segclass-")]
    if experiment:
        names = sorted(e.name for e in experiments)
        experiments = [e for e in experiments if e.name == experiment]
        if not experiments and names:
            raise ConfigError(f"{tracking_uri} has no experiment {experiment}; it holds {', '.join(names)}")
    records, run_settings = [], {}
    available: set[tuple[str, str]] = set()  # (sweep, dataset) of every finished segclass run, for the error below
    for exp in experiments:
        for run in iter_runs(client, exp.experiment_id, "attributes.status = 'FINISHED'"):
            tags = run.data.tags
            if not tags.get(KEY_TAG):
                continue
            check_run_is_current(tags, tracking_uri)
            point = GridPoint.from_key(tags[KEY_TAG])
            params = run.data.params
            available.add((tags.get(SWEEP_TAG, ""), point.dataset))
            if dataset and point.dataset != dataset or sweep and tags.get(SWEEP_TAG) != sweep:
                continue
            if settings and not tags.get(SETTINGS_TAG, "").startswith(settings):
                continue
            if epochs is not None and params.get("epochs") != str(epochs):
                continue
            record = {"experiment": exp.name, "run_id": run.info.run_id, "run_name": run.info.run_name,
                      "study": point.study, "dataset": point.dataset, "mode": point.mode,
                      "x": round(point.swept_fraction * 100, 4), "seed": point.seed, "variant": point.variant,
                      "budget": point.budget, "identity": tags[IDENTITY_TAG], "settings": tags[SETTINGS_TAG],
                      "sweep": tags.get(SWEEP_TAG, ""), "epochs": int(params.get("epochs", 0)),
                      "init": params.get("pretrained") or RANDOM_INIT,
                      "precision": params.get("precision", "unrecorded"),
                      "end_time": run.info.end_time, "artifact_uri": run.info.artifact_uri}
            record.update({k[len(FINAL_PREFIX):]: v for k, v in run.data.metrics.items()
                           if k.startswith(FINAL_PREFIX)})
            record.update({f"{PARAM_PREFIX}{k}": v for k, v in params.items()})
            records.append(record)
            run_settings.setdefault((point.dataset, tags[SETTINGS_TAG]), identity_columns(params))
    if not records and available:  # the store has runs, the filters matched none: a typo, not an empty report
        asked = ", ".join(f"{flag} {value}" for flag, value in (("--sweep", sweep), ("--dataset", dataset),
                                                                 ("--experiment", experiment),
                                                                 ("--settings", settings), ("--epochs", epochs))
                          if value is not None)
        raise ConfigError(f"no finished run in {tracking_uri} matches {asked}; it holds sweeps "
                          f"{', '.join(sorted({s or '(unnamed)' for s, _ in available}))} on datasets "
                          f"{', '.join(sorted({d for _, d in available}))}")
    frame = pd.DataFrame.from_records(records, columns=None if records else RUN_COLUMNS)
    param_columns = sorted(c for c in frame.columns if c.startswith(PARAM_PREFIX))  # last; the rest as before
    frame = frame[[c for c in frame.columns if not c.startswith(PARAM_PREFIX)] + param_columns]
    if not frame.empty:  # two sweeps that trained one identity at once: the same experiment counts once
        frame = frame.sort_values("end_time", kind="stable").drop_duplicates("identity").reset_index(drop=True)
    check_one_setting(frame, run_settings)
    return frame


def check_one_setting(frame: pd.DataFrame, run_settings: dict[tuple[str, str], dict[str, str]]) -> None:
    """Refuse to put runs of different training settings of one dataset into one table."""
    for dataset, runs in frame.groupby("dataset") if not frame.empty else []:
        groups = sorted(runs["settings"].unique())
        if len(groups) < 2:
            continue
        described = [run_settings[(dataset, g)] for g in groups]
        differing = sorted(k for k in set().union(*described) if len({d.get(k) for d in described}) > 1)
        lines = []
        for group, values in zip(groups, described):
            members = runs[runs["settings"] == group]
            what = ", ".join(f"{k}={values.get(k)}" for k in differing)
            lines.append(f"  --settings {group[:8]}: {len(members)} runs ({what}; sweeps "
                         f"{', '.join(sorted(set(members['sweep'])))})")
        raise TrackingStoreError(
            f"the finished runs of dataset {dataset} were trained with {len(groups)} different settings (they differ "
            f"in {', '.join(differing)}); their results must not share a table cell. Pick one with --settings "
            "(below), --sweep NAME or --epochs N:\n" + "\n".join(lines)
        )


def init_label(pretrained: str) -> str:
    """How reports name a run's encoder init (its `pretrained` param): random init is marked as not the paper's."""
    if not pretrained or pretrained == RANDOM_INIT:
        return "random (not the paper's ImageNet)"
    if pretrained == IMAGENET_INIT:
        return "ImageNet (torchvision IMAGENET1K_V1, as the paper)"
    return f"weights file {pretrained}"


def init_labels(runs: pd.DataFrame) -> dict[str, str]:
    """Dataset -> the init of its runs, for titles and captions."""
    if runs.empty:
        return {}
    return {dataset: " / ".join(sorted({init_label(name) for name in frame["init"]}))
            for dataset, frame in runs.groupby("dataset")}


def init_text(labels: dict[str, str]) -> str:
    """One phrase for headers and captions: `init: ...`, per dataset where datasets differ ("" without runs)."""
    if not labels:
        return ""
    if len(set(labels.values())) == 1:
        return f"init: {next(iter(labels.values()))}"
    return "init: " + "; ".join(f"{dataset}: {label}" for dataset, label in sorted(labels.items()))


def precision_text(runs: pd.DataFrame) -> str:
    """`training precision fp32` (per dataset where they differ; "" without runs) for headers and captions."""
    if runs.empty or "precision" not in runs:
        return ""
    labels = {dataset: " / ".join(sorted(set(frame["precision"]))) for dataset, frame in runs.groupby("dataset")}
    if len(set(labels.values())) == 1:
        return f"training precision {next(iter(labels.values()))}"
    return "training precision " + "; ".join(f"{dataset}: {label}" for dataset, label in sorted(labels.items()))


def artifact_path(artifact_uri: str, name: str) -> Path:
    """Local path of a run artifact (downloaded when the store is remote)."""
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{name}"))
