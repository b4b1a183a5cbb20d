"""The sweep driver: from a preset to finished MLflow runs, resumable at any moment.

One operation covers starting, resuming and growing a sweep: compute every grid
point's trial identity, skip those with a finished MLflow run of that identity,
and run the rest as a new Tune experiment (`tune-<n>` under the sweep's
folder). Each trial continues from its own checkpoint if it has one. A driver
killed at any moment therefore loses at most the epochs since each running
trial's last checkpoint.

Ray: without an address a private Ray starts on 127.0.0.1 (`address="local"`:
never a cluster that happens to run on this machine); with one, the driver
joins that cluster and ships segclass's own code to it (`runtime_env`
py_modules), so a node needs only the dependencies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import segclass
from segclass.errors import ConfigError
from segclass.cli_help import counted
from segclass.grid import GridPoint, Preset, expand
from segclass.schema import TrialIdentity, default_tracking_uri
from segclass.ray_sweep.manifest import DriverLock, check_sweep
from segclass.ray_sweep.storage import Storage
from segclass.ray_sweep.trial import EpochHook, run_trial

if TYPE_CHECKING:
    from segclass.model import PretrainedWeights
    from segclass.ray_sweep.writer import TrackingWriter


#: GPU share of a trial by default: 8 trials per GPU. Measured on one H200 (benchmarks/trial_cost.py, a
#: BACH-sized trial): 0.35 GPU-seconds per trial-epoch at 8 per GPU against 0.61 at 4 and 1.79 at 1, each
#: trial under 0.5 GiB of GPU memory (docs/benchmarks.md, "The cost of one trial").
DEFAULT_GPUS_PER_TRIAL = 0.125
log = logging.getLogger(__name__)
#: Where Ray logs its token-authentication notice at the start of a new local cluster.
RAY_TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


@dataclass
class SweepOptions:
    """Everything `sweeps/full_grid.py` can set; see its --help."""

    preset: Preset
    name: str = "segclass"
    data_root: str | None = None
    address: str | None = None  # None: a private local Ray on 127.0.0.1; "auto" or HOST:PORT: join that cluster
    storage: str | None = None  # None: RESULTS/tune, so one --results folder holds the whole sweep
    mlflow_uri: str | None = None
    results: str = "results"
    gpus_per_trial: float | None = None  # None: DEFAULT_GPUS_PER_TRIAL when the cluster has GPUs, else 0
    precision: str = "auto"  # fp32 | bf16 | auto: bf16 when trials get a GPU share, else fp32 (part of each identity)
    cpus_per_trial: float = 1.0
    max_failures: int = 2
    checkpoint_every: int | None = None  # None: the preset's
    grow: bool = False
    resume: bool = False
    keep_trial_files: bool = False
    pretrained: str | None = None  # None: the preset's; else imagenet | none | PATH (see resolve_pretrained)
    batch_size: int = 20
    num_cpus: int | None = None  # local Ray only
    num_gpus: float | None = None  # local Ray only (a logical count; useful to test fractional packing)
    verbose: bool = False  # Ray's and Tune's own console output (trial tables, result boxes) as well as ours

    def validate(self) -> None:
        """Every number a user typed, checked before anything is started or written: one line naming the flag."""
        gpus = self.gpus_per_trial
        checks = [
            (gpus is None or gpus >= 0 and (gpus <= 1 or float(gpus).is_integer()), "--gpus-per-trial",
             f"{gpus}: a share in [0, 1] (0.125 packs 8 trials per GPU) or a whole number of GPUs"),
            (self.cpus_per_trial > 0, "--cpus-per-trial", f"{self.cpus_per_trial}: CPU cores per trial, > 0"),
            (self.max_failures >= 0, "--max-failures", f"{self.max_failures}: retries of a failing trial, >= 0"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1, "--checkpoint-every",
             f"{self.checkpoint_every}: epochs between checkpoints, >= 1"),
            (self.batch_size >= 2, "--batch-size", f"{self.batch_size}: patches per kind and step, >= 2"),
            (self.num_cpus is None or self.num_cpus >= 1, "--num-cpus", f"{self.num_cpus}: CPUs to offer, >= 1"),
            (self.num_gpus is None or self.num_gpus >= 0, "--num-gpus", f"{self.num_gpus}: GPUs to offer, >= 0"),
        ]
        for ok, flag, what in checks:
            if not ok:
                raise ConfigError(f"{flag} {what}")


def sweep_storage(options: SweepOptions) -> str:
    """`--storage`, or RESULTS/tune; says where an earlier default left this sweep's checkpoints."""
    if options.storage:
        return options.storage
    storage = Path(options.results) / "tune"
    earlier = Path("results") / "tune" / options.name  # the default before it followed --results
    if earlier.is_dir() and not (storage / options.name).exists():  # once: before the sweep has a folder here
        print(f"sweep {options.name}: {earlier} holds checkpoints of a sweep of this name (the storage default "
              f"before it followed --results); add --storage results/tune to continue its unfinished trials from "
              f"them, or they start over under {storage}", flush=True)
    return str(storage)


@dataclass
class SweepSummary:
    """What one driver run did, counted from MLflow after its writes were drained."""

    planned: int
    skipped: list[str] = field(default_factory=list)  # grid keys finished before this run
    elsewhere: list[str] = field(default_factory=list)  # grid keys a live driver of another sweep is training
    ran: list[str] = field(default_factory=list)  # finished by this run
    failed: list[str] = field(default_factory=list)  # still without a finished run
    experiments: list[str] = field(default_factory=list)
    mlflow_uri: str = ""
    tracking_errors: list[str] = field(default_factory=list)


def validate_points(points: list[GridPoint], epochs: int, batch_size: int, validate_every: int = 1) -> None:
    """Build every trial's config before Ray starts: a bad value is one line, not a failed sweep."""
    for point in points:
        try:
            point.train_config(epochs=epochs, batch_size=batch_size, validate_every=validate_every)
        except ConfigError as exc:
            raise ConfigError(f"grid point {point.run_name}: {exc}") from exc


def start_ray(options: SweepOptions) -> None:
    """A private Ray on 127.0.0.1, or the cluster at `options.address` with segclass's code shipped to it."""
    import ray

    if ray.is_initialized():
        return
    quiet = {} if options.verbose else {"logging_level": logging.WARNING}  # no "Started a local Ray instance"
    if options.address:
        check_address(options.address)
        package = str(Path(segclass.__file__).resolve().parent)
        try:
            ray.init(address=options.address, log_to_driver=False, runtime_env={"py_modules": [package]}, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--address {options.address}: cannot join that Ray cluster ({exc}); start it with "
                              "`ray start --head` (docs/sweep.md#cluster-setup) or fix the address") from exc
    else:
        # a private Ray keeps Ray's default, token authentication on loopback: the project's choice, so Ray's
        # "Token authentication is enabled ... opt out" line on every run is not shown (docs/sweep.md)
        logging.getLogger(RAY_TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 num_cpus=options.num_cpus, num_gpus=options.num_gpus, log_to_driver=False, **quiet)


def check_address(address: str) -> None:
    """A HOST:PORT address must accept a connection: Ray itself would retry it for minutes before failing."""
    import socket

    target = address.split("://")[-1]
    if address == "auto" or ":" not in target or target.endswith("]"):  # no port given: Ray's default, not ours
        return
    host, _, port = target.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--address {address}: nothing answers there ({exc}); start the cluster's head with "
                          "`ray start --head` (docs/sweep.md#cluster-setup), or pass --address auto on the head "
                          "node") from exc


def check_tracking_uri(uri: str) -> None:
    """Ask the MLflow store for one experiment, so a wrong --mlflow-uri is one line before the sweep writes."""
    import urllib.error
    import urllib.request

    if uri.startswith(("http://", "https://")):  # MLflow's client retries for minutes; a health check does not
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10):
                return
        except urllib.error.HTTPError:  # a server answered (behind auth, or an older one without /health)
            return
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", exc))
        raise ConfigError(f"--mlflow-uri {uri}: no MLflow tracking server answers there ({problem}); start one "
                          "(docs/sweep.md#cluster-setup) or fix the URI")
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a bad store; all mean the same here
        raise ConfigError(f"--mlflow-uri {uri}: cannot use that MLflow store ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); fix the URI") from exc


def packing_warnings(gpus_per_trial: float, cpus_per_trial: float, nodes: list[dict]) -> list[str]:
    """Lines for GPU nodes whose CPUs cannot run as many trials as their GPU share would pack."""
    if gpus_per_trial <= 0:
        return []
    lines = []
    for node in nodes:
        resources = node.get("Resources", {})
        node_gpus, node_cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if not node.get("Alive", True) or node_gpus <= 0:
            continue
        by_gpu = int(node_gpus / gpus_per_trial + 1e-9)
        by_cpu = int(node_cpus / cpus_per_trial + 1e-9)
        if by_cpu < by_gpu:
            fitting = math.floor(node_cpus / by_gpu * 100) / 100  # rounded down, so it does fit
            lines.append(f"node {node.get('NodeManagerAddress', '?')}: {node_cpus:g} CPUs run {by_cpu} trials at "
                         f"once, but its {node_gpus:g} GPU(s) at {gpus_per_trial:g} each would pack {by_gpu}: the "
                         f"CPUs limit the packing (--cpus-per-trial {fitting:g} would not)")
    return lines


def gpu_share(options: SweepOptions) -> float:
    """The GPU share of a trial: `--gpus-per-trial`, else DEFAULT_GPUS_PER_TRIAL where there are GPUs, else 0.

    Decided before any trial's identity (its precision follows from it). A
    cluster is asked (joining it is cheap); for a private Ray, `--num-gpus` or
    whether CUDA sees a GPU here (if Ray then finds none, the sweep stops
    with a line before any trial).
    """
    if options.gpus_per_trial is not None:
        return float(options.gpus_per_trial)
    if options.address:
        import ray

        start_ray(options)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    elif options.num_gpus is not None:
        has_gpus = options.num_gpus > 0
    else:
        import torch

        has_gpus = torch.cuda.is_available()
    return DEFAULT_GPUS_PER_TRIAL if has_gpus else 0.0


def _next_tune_name(folder: Storage) -> str:
    """`tune-<n>` for the n-th driver run of the sweep (under the driver lock, so never shared)."""
    used = [int(n.split("-")[1]) for n in folder.list() if n.startswith("tune-") and n.split("-")[1].isdigit()]
    return f"tune-{max(used, default=0) + 1}"


def run_sweep(options: SweepOptions, epoch_hook: EpochHook | None = None,
              trainable: Callable | None = None) -> SweepSummary:
    """Run every grid point of `options.preset` that has no finished run of its identity.

    `epoch_hook` runs in each trial after every epoch (tests, chaos benchmark);
    `trainable` replaces the trial function (the scale benchmark's near-empty trials).
    """
    from segclass.data import ensure_cache
    from segclass.data.shards import read_manifest
    from segclass.model import resolve_pretrained

    options.validate()
    if options.address and (options.num_cpus is not None or options.num_gpus is not None):
        print(f"sweep {options.name}: warning: --num-cpus/--num-gpus are ignored with --address: they size the "
              "private Ray of a run without it; a cluster offers what its `ray start` gave it", flush=True)
    preset = options.preset
    points = expand(preset)
    validate_points(points, preset.epochs, options.batch_size, preset.validate_every)
    # once, on the driver, before Ray or any file: workers need no copy (or download), an offline run fails in a line
    weights = resolve_pretrained(options.pretrained or preset.pretrained)
    print(f"sweep {options.name}: encoder init {weights.name}", flush=True)
    if options.mlflow_uri is None:  # the default store lives in --results
        Path(options.results).mkdir(parents=True, exist_ok=True)
    check_tracking_uri(options.mlflow_uri or default_tracking_uri(Path(options.results)))
    if options.address:  # joined before the sweep's manifest is written: a wrong address is one line
        start_ray(options)
    cache = ensure_cache(preset.dataset, options.data_root)
    fingerprint = read_manifest(cache)["data_fingerprint"]
    gpus = gpu_share(options)  # resolved here: a trial's precision (from its GPU share) is part of its identity
    options = dataclasses.replace(options, gpus_per_trial=gpus, precision=options.precision if options.precision
                                  != "auto" else ("bf16" if gpus > 0 else "fp32"))
    print(f"sweep {options.name}: trials train in {options.precision}, "
          f"{options.gpus_per_trial:g} GPU and {options.cpus_per_trial:g} CPU each", flush=True)
    identities = {p.key: TrialIdentity.of(p, p.train_config(epochs=preset.epochs, batch_size=options.batch_size,
                                                         validate_every=preset.validate_every,
                                                         precision=options.precision)
                                          .to_dict(), weights.sha256, fingerprint) for p in points}
    settings = next(iter(identities.values())).settings_dict

    sweep_folder = Storage(sweep_storage(options)).child(options.name)
    with contextlib.ExitStack() as held:
        try:
            lock = held.enter_context(DriverLock(sweep_folder, options.name))
        except OSError as exc:  # storage this machine cannot write (credentials, endpoint, permissions)
            raise ConfigError(f"--storage {sweep_folder.uri}: cannot take the sweep's driver lock there ({exc}); "
                              "fix the path or the storage's credentials") from exc
        check_sweep(sweep_folder, options.name, preset.dataset, fingerprint, settings, [p.key for p in points],
                    grow=options.grow, resume=options.resume)
        return _drive(options, points, identities, sweep_folder, fingerprint, weights, epoch_hook,
                      trainable or run_trial, cache, lock)


def _drive(options: SweepOptions, points: list[GridPoint], identities: dict[str, TrialIdentity],
           sweep_folder: Storage, fingerprint: str, weights: "PretrainedWeights", epoch_hook: EpochHook | None,
           trainable: Callable, cache: Path, lock: DriverLock) -> SweepSummary:
    """Skip what is finished, run the rest, count from MLflow what this run finished."""
    from segclass.ray_sweep.tracking import Tracker
    from segclass.ray_sweep.writer import TrackingWriter

    results = Path(options.results)
    results.mkdir(parents=True, exist_ok=True)
    mlflow_uri = options.mlflow_uri or default_tracking_uri(results)
    tracker = Tracker(mlflow_uri, artifact_root=results / "mlartifacts", sweep=options.name,
                      driver=lock.driver_id, lock_uri=lock.uri, data_source=str(cache.resolve()))
    summary = SweepSummary(planned=len(points), mlflow_uri=mlflow_uri)
    found = tracker.survey(list(identities.values()))
    finished = found.finished
    summary.skipped = sorted(p.key for p in points if identities[p.key].digest in finished)
    if found.ended:
        print(f"sweep {options.name}: ended {counted(len(found.ended), 'MLflow run')} that a driver which is gone left "
              "RUNNING (now KILLED; a trial that trains again continues its run)", flush=True)
    if not options.keep_trial_files:  # a driver killed between MLflow's FINISHED and the folder's removal
        for digest in finished & set(sweep_folder.list("trials")):
            sweep_folder.delete(f"trials/{digest}")
    todo = [p for p in points if identities[p.key].digest not in finished]
    _leave_to_other_sweeps(options.name, todo, identities, found.elsewhere, summary)
    todo = [p for p in todo if p.key not in summary.elsewhere]
    writer = None
    try:
        # two sweeps that started at once both found these free: the claim decides which trains each
        _leave_to_other_sweeps(options.name, todo, identities, tracker.claim([identities[p.key] for p in todo]),
                               summary)
        todo = [p for p in todo if p.key not in summary.elsewhere]
        elsewhere = f", {len(summary.elsewhere)} being trained by other sweeps" if summary.elsewhere else ""
        print(f"sweep {options.name}: {counted(len(points), 'grid point')}, {len(summary.skipped)} already finished "
              f"(skipped){elsewhere}, {len(todo)} to run", flush=True)
        if not todo:
            return summary
        writer = TrackingWriter(tracker, sweep_folder, keep_trial_files=options.keep_trial_files)
        experiment = _run_tune(options, todo, identities, sweep_folder, writer, fingerprint, weights, epoch_hook,
                               trainable, cache)
        summary.experiments.append(experiment)
    finally:
        stats = writer.close() if writer is not None else None
        try:  # claims of trials that never reported (an interrupted driver) are not left SCHEDULED
            tracker.release_unstarted()
        except Exception as exc:  # noqa: BLE001 - the next driver takes them over anyway
            log.warning("sweep %s: could not remove the MLflow runs of trials that never started: %s",
                        options.name, exc)
    summary.tracking_errors = stats.errors
    now_finished = tracker.finished_identities([identities[p.key] for p in todo])
    summary.ran = [p.key for p in todo if identities[p.key].digest in now_finished]
    summary.failed = [p.key for p in todo if identities[p.key].digest not in now_finished]
    return summary


def _leave_to_other_sweeps(name: str, points: list[GridPoint], identities: dict[str, TrialIdentity],
                           held: dict[str, str], summary: SweepSummary) -> None:
    """Record and say which of `points` another live sweep holds (`held`: identity digest -> that sweep)."""
    for point in points:
        other = held.get(identities[point.key].digest)
        if other and point.key not in summary.elsewhere:
            summary.elsewhere.append(point.key)
            print(f"sweep {name}: {point.run_name}: sweep {other} is training this trial now (same identity); "
                  "skipped here, a later run picks it up if that sweep does not finish it", flush=True)


def _run_tune(options: SweepOptions, todo: list[GridPoint], identities: dict[str, TrialIdentity],
              sweep_folder: Storage, writer: "TrackingWriter", fingerprint: str, weights: "PretrainedWeights",
              epoch_hook: EpochHook | None, trainable: Callable, cache: Path) -> str:
    """Run `todo` as a new Tune experiment `tune-<n>` in the sweep's folder; returns its path."""
    import ray
    from ray import tune

    from ray.tune.logger import JsonLoggerCallback

    from segclass.data.shards import read_cache
    from segclass.ray_sweep.callback import MlflowCallback
    from segclass.ray_sweep.progress import ProgressCallback, trial_dirname, trial_name
    from segclass.training_loop import batches_per_epoch

    start_ray(options)
    gpus = options.gpus_per_trial
    if gpus > 0 and ray.cluster_resources().get("GPU", 0) <= 0:
        raise ConfigError(f"trials ask for {gpus:g} GPU each, but the Ray cluster has no GPU; pass "
                          "--gpus-per-trial 0 (and --precision fp32 or auto)")
    for line in packing_warnings(gpus, options.cpus_per_trial, ray.nodes()):
        print(f"sweep {options.name}: warning: {line}", flush=True)
    data = read_cache(cache)
    batches = {p.key: batches_per_epoch(p.train_config(epochs=options.preset.epochs, batch_size=options.batch_size),
                                        data) for p in todo}  # what each trial's epoch costs, for the time estimate
    digests = {key: identity.digest for key, identity in identities.items()}
    trial = tune.with_parameters(trainable, data=data, identities=digests, pretrained_state=weights.state,
                                 epoch_hook=epoch_hook)
    checkpoint_every = options.checkpoint_every or options.preset.checkpoint_every
    # a trial's TrainConfig names its weights ("" for random init: None, as in checkpoints of earlier sweeps)
    pretrained_name = weights.name if weights.state is not None else ""
    static = {"epochs": options.preset.epochs, "batch_size": options.batch_size,
              "validate_every": options.preset.validate_every, "pretrained_sha256": weights.sha256,
              "pretrained_name": pretrained_name,
              "checkpoint_every": checkpoint_every, "threads": max(1, int(options.cpus_per_trial)),
              "data_fingerprint": fingerprint, "sweep_storage": sweep_folder.uri, "precision": options.precision}
    params = {"sweep": options.name, "preset": options.preset.name, "pretrained": weights.name}
    callback = MlflowCallback(writer, identities, params)
    name = _next_tune_name(sweep_folder)
    # MLflow is the record; Tune keeps only its JSON log (result.json per trial), not CSV or TensorBoard files
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not options.verbose:  # Tune's reporter prints its config box and result path even at verbose=0
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        tune.with_resources(trial, {"cpu": options.cpus_per_trial, "gpu": gpus}),
        param_space={**static, "key": tune.grid_search([p.key for p in todo])},
        # a worker process runs trial after trial: no process start and imports per trial
        tune_config=tune.TuneConfig(reuse_actors=True, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_dirname),
        # Tune's console is off unless asked for: ProgressCallback prints a line per trial and a status line
        run_config=tune.RunConfig(name=name, storage_path=sweep_folder.uri, verbose=2 if options.verbose else 0,
                                  callbacks=[callback, JsonLoggerCallback(),
                                             ProgressCallback(batches, options.preset.epochs)],
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures)),
    )
    tuner.fit()
    return f"{sweep_folder.uri}/{name}"
