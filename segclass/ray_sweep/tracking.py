"""MLflow runs of sweep trials: find, start, log, finish, keyed by trial identity.

One run per trial identity (see `segclass.schema`). A trial that resumes from
its checkpoint continues its run; a trial that starts from epoch 0 while an
unfinished run of its identity already holds epochs gets a new run and the old
one is ended as KILLED with a `segclass.superseded_by` tag, so no run's history
is ever spliced from two trainings. Only the writer thread (`writer.py`) calls
the writing methods.

Every run names its owner: the driver that writes it (`segclass.driver`) and
that driver's lock file (`segclass.driver_lock`), whose heartbeat says
whether it lives. A driver never takes over a run a live driver owns: the
trial is left to that sweep, with a line. A run left RUNNING by a driver that
is gone is ended (KILLED) when the next driver of its settings starts; it is
resumed (reattached) when that driver trains the trial. Before its trials
start, a driver claims each identity (`Tracker.claim`), so two sweeps started
at the same moment train it once between them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from dataclasses import dataclass, field

from segclass.schema import (FINAL_METRIC_PREFIXES, FINAL_PREFIX, FINISHED, IDENTITY_TAG, OWNER_LOCK_TAG, OWNER_TAG,
                             SETTINGS_TAG, SUPERSEDED_TAG, SWEEP_TAG, TrialIdentity, check_run_is_current,
                             experiment_description, experiment_name, iter_runs, scalar_metrics, swept_metric)

log = logging.getLogger(__name__)
#: MLflow's log_batch takes at most 1,000 metrics per call.
BATCH_LIMIT = 1000
#: Seconds a driver waits after claiming its trials on a tracking server before reading who holds each:
#: longer than the clock difference of two hosts whose drivers start at once (`Tracker.claim`).
CLAIM_SETTLE_S = 2.0
#: MLflow keeps at most 36 characters of a dataset digest; 16 hex characters of the fingerprint identify it.
DATASET_DIGEST_CHARS = 16
#: Tries to log a run's dataset: the server's dataset insert races another sweep's (a unique-key error) once at most.
DATASET_ATTEMPTS = 3
#: Run statuses of a training that has not ended: a driver that is gone never leaves them so.
OPEN_STATUSES = ("RUNNING", "SCHEDULED")


def is_server(tracking_uri: str) -> bool:
    """An MLflow tracking server (which then decides where artifacts go)."""
    return tracking_uri.startswith(("http://", "https://"))


@dataclass
class StoreSurvey:
    """What the store says of a driver's identities when it starts."""

    finished: set[str] = field(default_factory=set)  # digests with a finished run
    elsewhere: dict[str, str] = field(default_factory=dict)  # digest -> the live sweep training it now
    ended: list[str] = field(default_factory=list)  # runs a driver that is gone left RUNNING, now KILLED


class Tracker:
    """Create, find and finish the MLflow runs of trial identities."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None, sweep: str = "", driver: str = "",
                 lock_uri: str = "", data_source: str = "") -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        # a tracking server decides where artifacts go (its --artifacts-destination); a local store keeps
        # them beside the database
        self.artifact_root = None if is_server(tracking_uri) else artifact_root
        self.sweep = sweep
        self.data_source = data_source  # where the data cache was read from (the runs' dataset source)
        self.owner = {OWNER_TAG: driver, OWNER_LOCK_TAG: lock_uri} if driver else {}
        self._experiments: dict[str, str] = {}
        self._runs: dict[str, str] = {}  # identity digest -> run id
        self._last_epoch: dict[str, int] = {}  # identity digest -> last epoch logged
        self._finished: set[str] = set()  # digests whose run is finished: log nothing more
        # digest -> ids of its runs, from the scan `finished_identities` makes anyway: lets `start` skip a
        # tag search per trial (which costs O(runs in the store) on SQLite)
        self._index: dict[str, list[str]] | None = None
        self._made: dict[str, str] = {}  # digest -> the run `claim` created for it
        self._started: set[str] = set()  # digests whose trial reported (`start`): their runs are kept

    # -- lookup -------------------------------------------------------------
    def experiment_id(self, identity: TrialIdentity) -> str:
        name = experiment_name(identity.point)
        if name not in self._experiments:
            existing = self.client.get_experiment_by_name(name)
            if existing is not None:
                self._experiments[name] = existing.experiment_id
            else:
                self._experiments[name] = self._create_experiment(name, experiment_description(identity.point))
        return self._experiments[name]

    def _create_experiment(self, name: str, description: str) -> str:
        """Create the experiment; when another sweep created it a moment ago, use theirs."""
        from mlflow.exceptions import MlflowException

        location = (self.artifact_root / name).resolve().as_uri() if self.artifact_root else None
        try:  # mlflow.note.content is what the MLflow UI shows as the experiment's description
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags={"mlflow.note.content": description})
        except MlflowException:
            existing = self.client.get_experiment_by_name(name)
            if existing is None:
                raise
            return existing.experiment_id

    def finished_identities(self, identities: list[TrialIdentity]) -> set[str]:
        """Digests of the identities that already have a finished run (`survey`, without its side effects)."""
        return self.survey(identities, end_orphans=False).finished

    def survey(self, identities: list[TrialIdentity], end_orphans: bool = True) -> StoreSurvey:
        """Which identities are finished, which a live driver of another sweep is training, and (with
        `end_orphans`) the runs of these settings that a driver that is gone left RUNNING, ended as KILLED.

        The tracking server is asked only for the runs of these identities'
        settings (a filter on the `segclass.settings` tag, evaluated by the
        store), not for every run of the experiment: experiments are per study
        and dataset, so they hold every lab member's sweeps.
        """
        wanted = {i.digest for i in identities}
        found, index, open_runs = StoreSurvey(), {}, []
        queries = sorted({(self.experiment_id(i), i.settings_hash) for i in identities})
        for experiment in sorted({e for e, _ in queries}):  # the filter hides runs without identity tags:
            for oldest in self.client.search_runs([experiment], max_results=1, order_by=["attributes.start_time ASC"]):
                check_run_is_current(oldest.data.tags, self.tracking_uri)  # a store of old segclass is refused
        for run in self._runs_of_settings(identities):
            digest = run.data.tags.get(IDENTITY_TAG)
            if run.info.status == FINISHED:
                found.finished.add(digest)
            elif SUPERSEDED_TAG not in run.data.tags:
                open_runs.append(run)
            if digest in wanted:
                index.setdefault(digest, []).append(run.info.run_id)
        found.finished &= wanted
        if end_orphans:
            states: dict[tuple[str, str], str] = {}
            for run in open_runs:
                digest = run.data.tags.get(IDENTITY_TAG)
                if digest in found.finished:
                    continue
                key = (run.data.tags.get(OWNER_TAG, ""), run.data.tags.get(OWNER_LOCK_TAG, ""))
                state = states.setdefault(key, self._owner_state(run.data.tags))
                if state == "live":  # a FAILED run between a trial's retries counts too
                    if digest in wanted:
                        found.elsewhere[digest] = run.data.tags.get(SWEEP_TAG) or "another sweep"
                elif state == "gone" and run.info.status in OPEN_STATUSES:  # never left open; reattached if trained
                    self.client.set_terminated(run.info.run_id, status="KILLED")
                    found.ended.append(run.info.run_id)
        if self._index is None:
            self._index = index
        return found

    def _runs_of_settings(self, identities: list[TrialIdentity]):
        """Every run of these identities' settings: one filtered query per experiment and settings."""
        for experiment, settings in sorted({(self.experiment_id(i), i.settings_hash) for i in identities}):
            for run in iter_runs(self.client, experiment, f"tags.`{SETTINGS_TAG}` = '{settings}'"):
                check_run_is_current(run.data.tags, self.tracking_uri)
                yield run

    def claim(self, identities: list[TrialIdentity]) -> dict[str, str]:
        """Make this driver the one that trains `identities`; returns those another sweep holds (digest -> sweep).

        Two sweeps started at once with the same identities both find nothing
        in `survey`. So each driver first claims every identity it is to train:
        it takes the identity's open run whose owner is gone (the run's owner
        tags now name this driver) or creates one, SCHEDULED until its trial
        reports. After a pause for the other drivers' claims to land, each
        identity belongs to one claim every driver agrees on: a FINISHED run,
        else the oldest open run (start time, then run id) of a live owner,
        under its owner tag as it now reads. A driver whose claim lost deletes
        the run it made and leaves the trial to the holder. Start times come
        from each driver's clock, so the pause (CLAIM_SETTLE_S, on a tracking
        server) must exceed the hosts' clock difference: keep clocks in sync
        (NTP), as the driver lock's heartbeat needs anyway.
        """
        from mlflow.entities import RunTag

        if not identities:
            return {}
        for identity in identities:
            takeable = [r for r in self._runs_of_identity(identity) if r.info.status != FINISHED
                        and SUPERSEDED_TAG not in r.data.tags and self._may_take(r)]
            if takeable:
                run = max(takeable, key=lambda r: r.info.start_time)
                self.client.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in self.owner.items()])
            else:
                self._made[identity.digest] = self._create(identity, status="SCHEDULED")
        if is_server(self.tracking_uri):  # a local store is one machine and one clock: nothing to wait for
            time.sleep(CLAIM_SETTLE_S)
        held: dict[str, list] = {}
        for run in self._runs_of_settings(identities):
            held.setdefault(run.data.tags.get(IDENTITY_TAG), []).append(run)
        lost, me = {}, self.owner.get(OWNER_TAG)
        for identity in identities:
            runs = held.get(identity.digest, [])
            finished = [r for r in runs if r.info.status == FINISHED]
            contenders = [r for r in runs if r.info.status != FINISHED and SUPERSEDED_TAG not in r.data.tags
                          and (r.data.tags.get(OWNER_TAG) == me or self._contends(r))]
            holder = finished[0] if finished else min(contenders, key=lambda r: (r.info.start_time, r.info.run_id),
                                                      default=None)
            if holder is None or holder.data.tags.get(OWNER_TAG) == me and holder.info.status != FINISHED:
                continue
            lost[identity.digest] = holder.data.tags.get(SWEEP_TAG) or "another sweep"
            if not finished and self._owner_state(holder.data.tags) == "unknown":
                log.warning("%s: MLflow run %s holds this trial, and its driver's lock (%s) cannot be read from this "
                            "host: it may be training elsewhere. If that sweep is gone, end the run (KILLED) in "
                            "MLflow and run this sweep again", identity.point.run_name, holder.info.run_id,
                            holder.data.tags.get(OWNER_LOCK_TAG))
            made = self._made.pop(identity.digest, None)
            if made:  # never trained: nothing of it is kept
                self.client.delete_run(made)
                if self._index is not None:
                    self._index[identity.digest].remove(made)
        return lost

    def release_unstarted(self) -> int:
        """Delete the runs `claim` made for trials that never reported (a driver stopped early); returns how many.

        Runs this driver took over keep their history and status: the next
        driver takes them again.
        """
        unstarted = [run_id for digest, run_id in self._made.items() if digest not in self._started]
        for run_id in unstarted:
            self.client.delete_run(run_id)
        self._made.clear()
        return len(unstarted)

    def _runs_of_identity(self, identity: TrialIdentity) -> list:
        if self._index is not None:  # the runs known at the driver's start, plus those it made
            return [self.client.get_run(run_id) for run_id in self._index.get(identity.digest, [])]
        query = f"tags.`{IDENTITY_TAG}` = '{identity.digest}'"
        return list(iter_runs(self.client, self.experiment_id(identity), query))

    def _contends(self, run) -> bool:
        """A claim of another driver that may hold the identity: its driver lives, or its lock cannot be read from
        here (another host's local storage) while the run is open. Every driver judges the same way, so two that
        cannot see each other's locks still agree on one holder."""
        state = self._owner_state(run.data.tags)
        return state == "live" or state == "unknown" and run.info.status in OPEN_STATUSES

    def _may_take(self, run) -> bool:
        """A run this driver may continue or supersede: not one a live driver owns, nor a RUNNING one whose owner
        cannot be judged from here (it may be training on another host)."""
        state = self._owner_state(run.data.tags)
        return state in ("gone", "none") or state == "unknown" and run.info.status not in OPEN_STATUSES

    def _owner_state(self, tags: dict[str, str]) -> str:
        """`live` (a driver other than this one, its lock fresh), `gone`, `unknown` (a lock this host cannot
        read: such runs are never ended on a guess) or `none` (no owner recorded: a Tracker used without a driver,
        or an older segclass; continued as before owners existed, never ended)."""
        from segclass.ray_sweep.manifest import owner_state
        from segclass.ray_sweep.storage import Storage

        owner, lock = tags.get(OWNER_TAG), tags.get(OWNER_LOCK_TAG)
        if not owner or not lock:
            return "none"
        if owner == self.owner.get(OWNER_TAG):
            return "gone"  # this driver's own run: not another's
        try:
            return owner_state(Storage(lock.rpartition("/")[0]), owner)
        except Exception:  # noqa: BLE001 - storage this host cannot open: never end a run on a guess
            return "unknown"

    # -- writing (writer thread only) ----------------------------------------
    def start(self, identity: TrialIdentity, params: dict[str, Any], start_epoch: int) -> str:
        """The run of `identity` for a training that resumed after `start_epoch` (0: a fresh start).

        An unfinished run is continued only when it holds no epoch beyond
        `start_epoch`: epochs past the checkpoint were computed by a training
        that is gone (a kill between checkpoints, a retry from scratch), and
        the resumed training recomputes them. Otherwise the old run is ended
        (KILLED, tagged with its successor) and a new run gets the whole
        history, replayed from the checkpoint: one run, one training.
        """
        digest = identity.digest
        self._started.add(digest)  # from here its run holds a training (or its params): never released
        if digest in self._runs:
            return self._runs[digest]
        runs = self._runs_of_identity(identity)
        finished = [r for r in runs if r.info.status == FINISHED]
        open_runs = [r for r in runs if r.info.status != FINISHED and SUPERSEDED_TAG not in r.data.tags
                     and self._may_take(r)]
        run_id, superseded = None, []
        if finished:  # a trial replayed after its run was finished: never a second run
            run_id = finished[0].info.run_id
            self._finished.add(digest)
        elif open_runs:
            run = max(open_runs, key=lambda r: r.info.start_time)
            last = self._last_logged(run.info.run_id)
            if last > start_epoch:
                superseded.append((run.info.run_id, last))
            else:
                run_id = run.info.run_id
                self._last_epoch[digest] = last
                self.client.update_run(run_id, status="RUNNING")
                self._claim(run_id, params)
                if run_id != self._made.get(digest):  # not the run this driver's claim made a moment ago
                    log.info("reattached to MLflow run %s for %s (history up to epoch %d)", run_id,
                             identity.point.run_name, last)
        if run_id is None:
            run_id = self._create(identity, params=params)
        for old_run, last in superseded:
            self.client.set_tag(old_run, SUPERSEDED_TAG, run_id)
            self.client.set_terminated(old_run, status="KILLED")
            log.warning("MLflow run %s of %s held epochs up to %d, but the training now resumes after epoch %d: "
                        "it continues in run %s; the old run is marked KILLED", old_run, identity.point.run_name,
                        last, start_epoch, run_id)
        self._runs[digest] = run_id
        return run_id

    def _last_logged(self, run_id: str) -> int:
        return int(max((m.value for m in self.client.get_metric_history(run_id, "epoch")), default=0))

    def _create(self, identity: TrialIdentity, params: dict[str, Any] | None = None, status: str = "") -> str:
        """A new run with its identity tags, indexed at once: if its params then fail to log, the retry finds
        it (open, no epoch), reattaches and logs them, so a run is never made twice or left without params.
        A claim's run (`status` SCHEDULED) gets its params when its trial reports."""
        from mlflow.entities import Metric

        run = self.client.create_run(self.experiment_id(identity), run_name=identity.point.run_name,
                                     tags={**identity.tags(self.sweep), **self.owner})
        if self._index is not None:
            self._index.setdefault(identity.digest, []).append(run.info.run_id)
        if status:
            self.client.update_run(run.info.run_id, status=status)
        self._log_dataset(run.info.run_id, identity)
        swept, value = swept_metric(identity.point)
        self.client.log_batch(run.info.run_id, metrics=[Metric(swept, value, int(time.time() * 1000), 0)])
        if params is not None:
            self._claim(run.info.run_id, params)
            self._last_epoch[identity.digest] = 0
        return run.info.run_id

    def _log_dataset(self, run_id: str, identity: TrialIdentity) -> None:
        """The run's training data as its MLflow input (the UI's Dataset column): the dataset's name, the first
        DATASET_DIGEST_CHARS of its data fingerprint (what the sweep's identity holds) and the cache it was read from.
        """
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        source = json.dumps({"uri": self.data_source or identity.point.dataset})
        dataset = Dataset(name=identity.point.dataset, digest=identity.settings_dict["data_fingerprint"][
            :DATASET_DIGEST_CHARS], source_type="local", source=source)
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        for attempt in range(DATASET_ATTEMPTS):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except MlflowException as exc:  # two sweeps adding the experiment's first run of this data at once: the
                if attempt + 1 == DATASET_ATTEMPTS:  # server's get-or-create of the dataset row is not atomic;
                    raise  # the retry finds the row the other made
                log.info("logging the dataset of MLflow run %s again (%s)", run_id, str(exc).splitlines()[0])
                time.sleep(0.5 * (attempt + 1))

    def _claim(self, run_id: str, params: dict[str, Any]) -> None:
        """Make this driver the run's owner and log the params the run lacks (a create whose params failed).

        Params it has are left: MLflow refuses to change a param, and those
        that may differ between two sweeps of one identity (`sweep`, `preset`)
        name the sweep that made the run.
        """
        from mlflow.entities import Param, RunTag

        have = self.client.get_run(run_id).data.params
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in have],
                              tags=[RunTag(k, v) for k, v in self.owner.items()])

    def has_run(self, digest: str) -> bool:
        """Whether `start` has given `digest` a run in this driver (it may have failed)."""
        return digest in self._runs

    def log_epochs(self, digest: str, epochs: list[tuple[int, dict[str, float]]]) -> int:
        """Log epochs not yet in the run, in as few calls as MLflow allows; returns how many were new."""
        from mlflow.entities import Metric

        if digest in self._finished:
            return 0
        now = int(time.time() * 1000)
        new = sorted({e: m for e, m in epochs if e > self._last_epoch.get(digest, 0)}.items())
        # `epoch` is always logged: a reattaching driver reads the run's last epoch from it
        batch = [Metric(key, value, now, epoch) for epoch, metrics in new
                 for key, value in {**metrics, "epoch": float(epoch)}.items()]
        for start in range(0, len(batch), BATCH_LIMIT):
            self.client.log_batch(self._runs[digest], metrics=batch[start : start + BATCH_LIMIT])
        if new:
            self._last_epoch[digest] = new[-1][0]
        return len(new)

    def finish(self, digest: str, folder: Path) -> None:
        """Final test metrics from `folder`/report.json, the folder's files as artifacts, its model.pt as the
        run's MLflow model (`runs:/<run id>/model`), status FINISHED."""
        from mlflow.entities import Metric

        from segclass.mlflow_model import log_trained_model
        from segclass.model_file import load_model
        from segclass.ray_sweep.artifacts import MODEL_ARTIFACT

        if digest in self._finished:
            return
        run_id = self._runs[digest]
        report = json.loads((folder / "report.json").read_text())
        now = int(time.time() * 1000)
        finals = {k: v for k, v in scalar_metrics(report).items() if k.startswith(FINAL_METRIC_PREFIXES)}
        self.client.log_batch(run_id, metrics=[Metric(f"{FINAL_PREFIX}{k}", v, now, 0) for k, v in finals.items()])
        for item in sorted(folder.iterdir()):  # the model goes in as an MLflow model, not as a second copy
            if item.name == MODEL_ARTIFACT:
                continue
            if item.is_dir():
                self.client.log_artifacts(run_id, str(item), artifact_path=item.name)
            else:
                self.client.log_artifact(run_id, str(item))
        if (folder / MODEL_ARTIFACT).is_file():
            log_trained_model(self.tracking_uri, run_id, load_model(folder / MODEL_ARTIFACT))
        self.client.set_terminated(run_id, status=FINISHED)
        self._finished.add(digest)

    def fail(self, digest: str) -> None:
        """Mark a run failed; a later sweep reattaches to it (it resumes from the trial's checkpoint)."""
        run_id = self._runs.pop(digest, None)
        if run_id and digest not in self._finished:
            self.client.set_terminated(run_id, status="FAILED")
        self._last_epoch.pop(digest, None)

