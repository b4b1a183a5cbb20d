"""Ray Tune specifics, in one place: the trial function, the MLflow callback, the sweep driver.

- Data: the driver reads the shard cache once and hands the arrays to
  `tune.with_parameters`, which puts them into the object store once; every
  trial on a node maps the same read-only buffers (numpy arrays are
  deserialized zero-copy).
- Trials: a function of `config` that restores its Tune checkpoint, runs the
  Ray-agnostic trainer, reports metrics each epoch with a checkpoint every N
  epochs, and finally reports the test metrics with artifacts in the checkpoint.
- Tracking: `MlflowCallback` logs from the driver through `Tracker`, keyed by
  grid point, so resumed and retried trials continue their own runs.
- Resume: an existing experiment of the same name is restored (finished trials
  stay finished, unfinished and errored ones continue from their checkpoints);
  grid points still without a finished MLflow run then run as a new experiment,
  which is how a sweep grows.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import segclass
from segclass.grid import GridPoint, Preset, expand
from segclass.sweep.tracking import Tracker, scalar_metrics

log = logging.getLogger(__name__)

#: Set to a folder to make each trial fail once after its first epoch (fault-injection for tests).
FAULT_ENV = "SEGCLASS_FAULT_ONCE_DIR"
#: Seconds each trial waits after every epoch report (widens timing windows in kill tests).
SLOW_EPOCH_ENV = "SEGCLASS_SLOW_EPOCH_S"
EPOCH_METRIC_PREFIXES = ("train_", "val_")
EPOCH_METRIC_KEYS = ("epoch", "images_per_second", "epoch_seconds", "train_seconds")


# ---------------------------------------------------------------------------
# the trial (runs in a Ray worker)
# ---------------------------------------------------------------------------
def run_trial(config: dict[str, Any], data=None, finished_keys: frozenset[str] = frozenset()) -> None:
    """One grid point: train, report each epoch, report the final test metrics.

    A trial whose grid point already has a finished MLflow run (Tune's last
    snapshot before a killed driver can lag behind the trial) reports done at
    once instead of training again.
    """
    import ray
    import torch
    from ray import tune

    from segclass.sweep.artifacts import trial_artifacts
    from segclass.trainer import train

    started = time.time()
    point = GridPoint.from_key(config["key"])
    epochs = int(config["epochs"])
    if point.key in finished_keys:
        tune.report({"final": 1.0, "already_finished": 1.0, "epoch": float(epochs)})
        return
    train_config = point.train_config(epochs=epochs, batch_size=int(config["batch_size"]),
                                      pretrained=config.get("pretrained"))
    run_dir = Path(tempfile.mkdtemp(prefix="segclass-trial-"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(run_dir))
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    every = max(1, int(config.get("checkpoint_every", 1)))
    fault_dir = os.environ.get(FAULT_ENV)
    slow_epoch = float(os.environ.get(SLOW_EPOCH_ENV, "0"))

    def on_epoch(metrics: dict[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        scalars = {k: v for k, v in scalar_metrics(metrics).items()
                   if k.startswith(EPOCH_METRIC_PREFIXES) or k in EPOCH_METRIC_KEYS}
        if epoch % every == 0 or epoch == epochs:
            tune.report(scalars, checkpoint=tune.Checkpoint.from_directory(str(run_dir)))
        else:
            tune.report(scalars)
        if slow_epoch:
            time.sleep(slow_epoch)
        if fault_dir:
            marker = Path(fault_dir) / point.key.replace("|", "_").replace("=", "")
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"fault injected by {FAULT_ENV} after epoch {epoch} of {point.run_name}")

    report = train(train_config, data, run_dir, on_epoch=on_epoch, device=device)
    report["data_fingerprint"] = config.get("data_fingerprint", "")
    artifacts = trial_artifacts(report, run_dir / "checkpoint.pt", data.test)
    folder = run_dir / "artifacts"
    for name, payload in artifacts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(payload)
    (run_dir / "report.json").write_text(json.dumps(report, default=str))
    final = {k: v for k, v in scalar_metrics(report).items() if k.startswith(("test_", "holdout_", "val_best"))}
    # where and when it ran: lets tests and users check node spread and fractional-GPU packing
    placement = {"node_id": ray.get_runtime_context().get_node_id(), "device": device,
                 "trial_started": started, "trial_ended": time.time()}
    tune.report({**final, **placement, "final": 1.0, "epoch": float(epochs)},
                checkpoint=tune.Checkpoint.from_directory(str(run_dir)))


# ---------------------------------------------------------------------------
# the MLflow callback (runs in the driver)
# ---------------------------------------------------------------------------
def _callback_class():
    from ray import tune

    class MlflowCallback(tune.Callback):
        """Mirror Tune results into one MLflow run per grid point."""

        def __init__(self, tracking_uri: str, artifact_root: Path, sweep: str, params: dict[str, Any]) -> None:
            self.settings = (tracking_uri, artifact_root, sweep)
            self.params = params
            self._tracker: Tracker | None = None

        @property
        def tracker(self) -> Tracker:
            if self._tracker is None:
                self._tracker = Tracker(*self.settings)
            return self._tracker

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
            return {"settings": self.settings, "params": self.params, "_tracker": None}

        def _point(self, trial) -> GridPoint:
            point = GridPoint.from_key(trial.config["key"])
            self.tracker.ensure_run(point, {**self.params, **run_params(point, trial.config)})
            return point

        def on_trial_start(self, iteration, trials, trial, **info):
            self._point(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            point = self._point(trial)
            if not result.get("final"):
                epoch_metrics = {k: v for k, v in result.items()
                                 if k.startswith(EPOCH_METRIC_PREFIXES) or k in EPOCH_METRIC_KEYS}
                self.tracker.log_epoch(point, int(result["epoch"]), epoch_metrics)

        def on_trial_complete(self, iteration, trials, trial, **info):
            point = self._point(trial)
            if self.tracker.is_finished(point):
                return
            checkpoint = trial.checkpoint
            if checkpoint is None:
                log.warning("%s finished without a checkpoint; its MLflow run stays open", point.run_name)
                return
            with checkpoint.as_directory() as folder:
                folder = Path(folder)
                report = json.loads((folder / "report.json").read_text())
                artifacts = {str(p.relative_to(folder / "artifacts")): p.read_bytes()
                             for p in (folder / "artifacts").rglob("*") if p.is_file()}
            self.tracker.finish(point, report, artifacts)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.tracker.fail(self._point(trial))

    return MlflowCallback


def run_params(point: GridPoint, config: dict[str, Any]) -> dict[str, Any]:
    """MLflow params of a run: the grid point plus what else decides its result."""
    params = {"study": point.study, "dataset": point.dataset, "mode": point.mode,
              "seg_fraction": point.seg_fraction, "seed": point.seed, "variant": point.variant,
              "budget": point.budget, "epochs": config["epochs"], "batch_size": config["batch_size"],
              "pretrained": config.get("pretrained") or "none (random init)",
              "data_fingerprint": config.get("data_fingerprint", ""), "segclass_version": segclass.__version__}
    if point.study == "classification":
        params["cls_fraction"] = point.cls_fraction
    return params


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------
@dataclass
class SweepOptions:
    """Everything `sweeps/full_grid.py` can set; see its --help."""

    preset: Preset
    name: str = "segclass"
    data_root: str | None = None
    address: str | None = None  # None: start a local Ray on 127.0.0.1; "auto": join a running cluster
    storage: str = "results/tune"
    mlflow_uri: str | None = None
    results: str = "results"
    gpus_per_trial: float | None = None  # None: 0.25 when the cluster has GPUs, else 0
    cpus_per_trial: float = 1.0
    max_failures: int = 2
    checkpoint_every: int = 1
    resume: bool = False
    pretrained: str | None = None
    batch_size: int = 20
    num_cpus: int | None = None  # local Ray only
    num_gpus: float | None = None  # local Ray only (a logical count; useful to test fractional packing)


@dataclass
class SweepSummary:
    planned: int
    skipped: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    errored: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)
    mlflow_uri: str = ""


def _start_ray(options: SweepOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=options.num_cpus,
                 num_gpus=options.num_gpus, log_to_driver=False)


def _storage_uri(storage: str) -> str:
    """Tune wants an absolute path or a URI."""
    return storage if "://" in storage else str(Path(storage).resolve())


def run_sweep(options: SweepOptions) -> SweepSummary:
    import ray
    from ray import tune

    from segclass.data import ensure_cache
    from segclass.data.shards import read_cache, read_manifest
    from segclass.sweep.tracking import default_tracking_uri

    # forced experiment snapshots (num_to_keep) are what make a killed driver resumable; no need to warn
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    points = expand(options.preset)
    results = Path(options.results)
    results.mkdir(parents=True, exist_ok=True)
    mlflow_uri = options.mlflow_uri or default_tracking_uri(results)
    tracker = Tracker(mlflow_uri, artifact_root=results / "mlartifacts", sweep=options.name)
    summary = SweepSummary(planned=len(points), mlflow_uri=mlflow_uri)

    cache = ensure_cache(options.preset.dataset, options.data_root)
    fingerprint = read_manifest(cache)["fingerprint"]
    _start_ray(options)
    gpus = options.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    data = read_cache(cache)
    finished_before = frozenset(tracker.finished_keys(points))

    def trainable_for(finished_keys: frozenset[str]):
        return tune.with_resources(tune.with_parameters(run_trial, data=data, finished_keys=finished_keys),
                                   {"cpu": options.cpus_per_trial, "gpu": gpus})

    static = {"epochs": options.preset.epochs, "batch_size": options.batch_size, "pretrained": options.pretrained,
              "checkpoint_every": options.checkpoint_every, "threads": max(1, int(options.cpus_per_trial)),
              "data_fingerprint": fingerprint}
    callback = _callback_class()(mlflow_uri, results / "mlartifacts", options.name,
                                 {"sweep": options.name, "preset": options.preset.name})
    storage = _storage_uri(options.storage)

    def run_config(name: str):
        return tune.RunConfig(
            name=name, storage_path=storage, callbacks=[callback], verbose=1,
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )

    experiment_path = f"{storage.rstrip('/')}/{options.name}"
    if options.resume and not tune.Tuner.can_restore(experiment_path):
        log.warning("--resume: no Tune experiment at %s; running the grid points without a finished run",
                    experiment_path)
    if tune.Tuner.can_restore(experiment_path):
        log.info("restoring Tune experiment %s", experiment_path)
        tuner = tune.Tuner.restore(experiment_path, trainable=trainable_for(finished_before),
                                   resume_unfinished=True, resume_errored=True)
        _collect(tuner.fit(), summary)
        summary.experiments.append(experiment_path)

    finished = tracker.finished_keys(points)
    todo = [p for p in points if p.key not in finished]
    summary.skipped = sorted(finished)
    print(f"sweep {options.name}: {len(points)} grid points, {len(finished)} already finished (skipped), "
          f"{len(todo)} to run", flush=True)
    if todo:
        name = _fresh_name(storage, options.name)
        tuner = tune.Tuner(
            trainable_for(frozenset()),
            param_space={**static, "key": tune.grid_search([p.key for p in todo])},
            run_config=run_config(name),
        )
        _collect(tuner.fit(), summary)
        summary.experiments.append(f"{storage.rstrip('/')}/{name}")
    return summary


def _fresh_name(storage: str, name: str) -> str:
    """`name`, or `name-2`, `name-3`... when an experiment of that name already exists."""
    from ray import tune

    candidate, index = name, 1
    while tune.Tuner.can_restore(f"{storage.rstrip('/')}/{candidate}"):
        index += 1
        candidate = f"{name}-{index}"
    return candidate


def _collect(result_grid, summary: SweepSummary) -> None:
    for result in result_grid:
        key = result.config.get("key") if result.config else None
        if result.error is not None:
            summary.errored.append(key)
        else:
            summary.ran.append(key)
