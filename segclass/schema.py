"""The MLflow tracking schema, in one place: the sweep writes with it, analysis and predict read with it.

A trial's *identity* is its grid point plus everything else that decides its
result: the training settings of its `TrainConfig` (epochs, batch size,
learning rate, augmentation, evaluation stride...), the content hash of the
pretrained weights, the fingerprint of the data cache and `RESULT_VERSION`
(bumped whenever code changes what a trial computes). Two runs with the same
identity are the same experiment; a 1-epoch smoke run and a 100-epoch paper run
of one grid point are not. Each MLflow run carries:

- tags: `segclass.identity` (a short hash of the identity), `segclass.grid_key`
  (the grid point), `segclass.settings` (a short hash of the identity without
  the grid point: what a table cell must hold constant), `segclass.sweep`;
- params: every identity field, readable (MLflow keeps params as strings, so
  they filter by `=`, `!=` and `LIKE` only);
- metrics: per-epoch `train_*` / `val_*` at step = epoch, and `final_*` once;
  s or c in percent also as the metric `seg_percent` / `cls_percent`, so that
  `metrics.seg_percent < 10` compares numbers (`swept_metric`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from segclass.errors import TrackingStoreError
from segclass.grid import GridPoint, percent

#: Bump when a code change alters what a trial computes (metrics, weights), so
#: runs of the old code are not counted as finished for the new one.
#: 3: S+C keeps N - floor(sN) classification patches (the Fig. 5 caption), not floor((1 - s)N).
#: 4: val/test images are predicted as segclass.predict does (glass is class 0; tissue_ extras added).
RESULT_VERSION = 4

KEY_TAG = "segclass.grid_key"
IDENTITY_TAG = "segclass.identity"
SETTINGS_TAG = "segclass.settings"
SWEEP_TAG = "segclass.sweep"
#: Set on an unfinished run that another training of the same identity replaced: the new run's id.
SUPERSEDED_TAG = "segclass.superseded_by"
#: The driver that owns a run (a random id per driver run) and the lock file that says whether it lives.
OWNER_TAG = "segclass.driver"
OWNER_LOCK_TAG = "segclass.driver_lock"
FINISHED = "FINISHED"
FINAL_PREFIX = "final_"
EPOCH_METRIC_PREFIXES = ("train_", "val_")
EPOCH_METRIC_KEYS = ("epoch", "images_per_second", "epoch_seconds", "train_seconds")
FINAL_METRIC_PREFIXES = ("test_", "holdout_", "val_best", "best_epoch", "images_per_second", "n_")
#: Training settings of a TrainConfig that are part of a grid point, not of the settings.
_POINT_FIELDS = ("dataset", "mode", "seg_fraction", "cls_fraction", "seed", "variant", "budget", "pretrained")
#: The `pretrained` param of a run: one of these, or the name of the weights file it started from.
RANDOM_INIT = "none (random init)"
IMAGENET_INIT = "imagenet (torchvision IMAGENET1K_V1)"


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics dict (lists such as confusion matrices go to artifacts)."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def epoch_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-epoch metrics MLflow records at step = epoch."""
    return {k: v for k, v in scalar_metrics(metrics).items()
            if k.startswith(EPOCH_METRIC_PREFIXES) or k in EPOCH_METRIC_KEYS}


def iter_runs(client: Any, experiment_id: str, filter_string: str = "") -> Iterator[Any]:
    """Every run of an experiment matching `filter_string`, page after page (MLflow returns 1,000 at most)."""
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def default_tracking_uri(results: Path) -> str:
    """A SQLite store in the results folder (MLflow's file store is in maintenance mode)."""
    return f"sqlite:///{(Path(results) / 'mlflow.db').resolve()}"


def experiment_name(point: GridPoint) -> str:
    """One MLflow experiment per (study, dataset)."""
    return f"segclass-{point.study}-{point.dataset}"


def experiment_description(point: GridPoint) -> str:
    """The experiment's description in the MLflow UI: what a run is and which columns and filters compare them."""
    letter, percent_param = ("s", "seg_percent") if point.study == "segmentation" else ("c", "cls_percent")
    return (f"segclass, the {point.study} study on {point.dataset}: one run per trial, named from its grid point "
            f"(mode, {letter} in %, seed, variant, budget). Compare final_test_macro_f1 and "
            f"final_test_paper_micro_f1 (add them as columns; per-epoch curves: val_macro_f1, train_loss), filter "
            f"with e.g. params.mode = 'S+C' and params.variant = 'paper' and metrics.{percent_param} <= 10 "
            f"({percent_param} holds {letter} in %, as a param and as a metric); "
            f"tags segclass.sweep and segclass.settings keep one sweep and one set of training settings apart.")


def swept_metric(point: GridPoint) -> tuple[str, float]:
    """(name, value) of the metric holding s or c in percent: params are strings, metrics compare as numbers."""
    name = "seg_percent" if point.study == "segmentation" else "cls_percent"
    return name, round(point.swept_fraction * 100, 4)


def short_hash(values: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of a canonical JSON rendering."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrialIdentity:
    """A grid point plus the settings that decide its result (see module docstring)."""

    point: GridPoint
    settings: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs

    @classmethod
    def of(cls, point: GridPoint, train_settings: dict[str, Any], pretrained_sha256: str,
           data_fingerprint: str) -> "TrialIdentity":
        """`train_settings`: a TrainConfig as a dict; its grid-point fields are ignored."""
        settings = {k: v for k, v in train_settings.items() if k not in _POINT_FIELDS}
        settings.update(pretrained_sha256=pretrained_sha256 or "", data_fingerprint=data_fingerprint,
                        result_version=RESULT_VERSION)
        return cls(point, tuple(sorted(settings.items())))

    @property
    def settings_dict(self) -> dict[str, Any]:
        """The identity without its grid point: what every cell of one table must share."""
        return dict(self.settings)

    @property
    def settings_hash(self) -> str:
        """The `segclass.settings` tag."""
        return short_hash(self.settings_dict)

    @property
    def digest(self) -> str:
        """The `segclass.identity` tag; also the trial's folder name in the sweep storage."""
        return short_hash({"grid_key": self.point.key, **self.settings_dict})

    def tags(self, sweep: str) -> dict[str, str]:
        """Tags of a new MLflow run of this identity, written by sweep `sweep`."""
        return {KEY_TAG: self.point.key, IDENTITY_TAG: self.digest, SETTINGS_TAG: self.settings_hash,
                SWEEP_TAG: sweep, "mlflow.runName": self.point.run_name}

    def params(self, pretrained_name: str = "") -> dict[str, Any]:
        """Readable MLflow params: the grid point and every setting."""
        point = self.point
        params: dict[str, Any] = {
            "study": point.study, "dataset": point.dataset, "mode": point.mode, "seed": point.seed,
            "variant": point.variant, "budget": point.budget,
            # written as the run name writes it (s=5 -> '5', s=2.5 -> '2.5'): `params.seg_percent = '5'` finds it
            "seg_percent" if point.study == "segmentation" else "cls_percent": percent(point.swept_fraction),
            "pretrained": pretrained_name or RANDOM_INIT,
        }
        params.update(self.settings_dict)
        return params


#: Params of a run that are not part of its settings (the grid point, and where the run came from).
_NON_SETTING_PARAMS = {"study", "dataset", "mode", "seed", "variant", "budget", "seg_percent", "cls_percent",
                       "pretrained", "sweep", "preset"}


def identity_columns(params: dict[str, str]) -> dict[str, str]:
    """The settings part of a run's params (what `TrialIdentity.settings` holds), for comparing runs."""
    return {k: v for k, v in params.items() if k not in _NON_SETTING_PARAMS}


def check_run_is_current(tags: dict[str, str], where: str) -> None:
    """Refuse runs that segclass wrote before trial identities existed (no silent mixing)."""
    if KEY_TAG in tags and IDENTITY_TAG not in tags:
        raise TrackingStoreError(
            f"the MLflow store {where} holds runs written by segclass before trial identities (run "
            f"{tags.get('mlflow.runName', '?')!r} has no {IDENTITY_TAG} tag): their settings (epochs, weights, data) "
            "are unknown, so they cannot be compared or resumed. Start a new store (--results DIR or --mlflow-uri), "
            "or move the old one aside"
        )
