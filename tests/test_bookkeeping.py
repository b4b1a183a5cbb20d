"""Sweep bookkeeping without Ray: identities, the sweep manifest, old stores, grid narrowing, flag checks."""

import subprocess
import sys
from pathlib import Path

import pytest

from segclass.errors import ConfigError, TrackingStoreError
from segclass.grid import GridPoint, expand, get_preset, narrow
from segclass.schema import KEY_TAG, TrialIdentity
from segclass.ray_sweep.manifest import check_sweep
from segclass.ray_sweep.storage import Storage
from tests.lock_race import drivers_at_once

ROOT = Path(__file__).resolve().parents[1]
POINT = GridPoint("segmentation", "bach", "S+C", 0.05, 1)


def _identity(point=POINT, sha="", fingerprint="f1", **changes):
    return TrialIdentity.of(point, point.train_config(epochs=100).replace(**changes).to_dict(), sha, fingerprint)


def test_identity_covers_everything_that_decides_a_result():
    base = _identity()
    assert base.digest == _identity().digest and len(base.digest) == 16
    for other in (_identity(epochs=1), _identity(batch_size=10), _identity(lr=1e-3), _identity(augment=False),
                  _identity(sha="abc"), _identity(fingerprint="f2"), _identity(GridPoint("segmentation", "bach",
                                                                                      "S+C", 0.05, 2))):
        assert other.digest != base.digest
    # the settings hash ignores the grid point: all cells of one sweep share it
    assert _identity(GridPoint("segmentation", "bach", "S", 1.0, 3)).settings_hash == base.settings_hash
    assert _identity(epochs=1).settings_hash != base.settings_hash
    params = base.params("resnet18.pth")
    assert params["epochs"] == 100 and params["seg_percent"] == "5" and params["pretrained"] == "resnet18.pth"


def test_manifest_refuses_other_datasets_settings_and_unasked_growth(tmp_path):
    folder = Storage(str(tmp_path)).child("sweep")
    settings = _identity().settings_dict
    keys = [POINT.key]
    check_sweep(folder, "sweep", "bach", "f1", settings, keys)
    check_sweep(folder, "sweep", "bach", "f1", settings, keys)  # a rerun resumes
    with pytest.raises(TrackingStoreError, match="dataset bach.*gleason2019.*choose another --name"):
        check_sweep(folder, "sweep", "gleason2019", "f9", settings, keys)
    with pytest.raises(TrackingStoreError, match="other training settings.*epochs 100 -> 1"):
        check_sweep(folder, "sweep", "bach", "f1", _identity(epochs=1).settings_dict, keys)
    more = keys + [GridPoint("segmentation", "bach", "S+C", 0.05, 2).key]
    with pytest.raises(TrackingStoreError, match="adds 1 grid point.*--grow"):
        check_sweep(folder, "sweep", "bach", "f1", settings, more)
    assert len(check_sweep(folder, "sweep", "bach", "f1", settings, more, grow=True)["points"]) == 2
    check_sweep(folder, "sweep", "bach", "f1", settings, keys)  # a narrower rerun is part of the same sweep
    with pytest.raises(TrackingStoreError, match="--resume: there is no sweep named 'new'"):
        check_sweep(Storage(str(tmp_path)).child("new"), "new", "bach", "f1", settings, keys, resume=True)


def test_an_old_tune_folder_is_refused(tmp_path):
    old = tmp_path / "quick"
    (old / "run_trial_2024").mkdir(parents=True)
    (old / "experiment_state-2024.json").write_text("{}")
    with pytest.raises(TrackingStoreError, match="older segclass.*another --name or --storage"):
        check_sweep(Storage(str(tmp_path)).child("quick"), "quick", "bach", "f1", {}, [POINT.key])


def test_an_old_mlflow_store_is_refused(tmp_path):
    from mlflow import MlflowClient

    from segclass.analysis.runs import load_runs
    from segclass.ray_sweep.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("segclass-segmentation-bach")
    run = client.create_run(experiment, tags={KEY_TAG: POINT.key})  # what segclass wrote before identities
    client.set_terminated(run.info.run_id)
    # the driver asks only for the runs of its settings, which such a run lacks; it looks at the oldest run too
    with pytest.raises(TrackingStoreError, match="before trial identities.*Start a new store"):
        Tracker(uri).finished_identities([_identity()])
    with pytest.raises(TrackingStoreError, match="before trial identities"):
        load_runs(uri)


def test_a_fresh_training_never_continues_an_old_history(tmp_path):
    from mlflow import MlflowClient

    from segclass.schema import SUPERSEDED_TAG
    from segclass.ray_sweep.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    identity = _identity()
    first = Tracker(uri)
    run = first.start(identity, identity.params(), start_epoch=0)
    first.log_epochs(identity.digest, [(1, {"val_macro_f1": 0.1}), (2, {"val_macro_f1": 0.2})])
    # a new driver: the trial resumed from its epoch-2 checkpoint -> same run, replayed epochs logged once
    resumed = Tracker(uri)
    assert resumed.start(identity, identity.params(), start_epoch=2) == run
    assert resumed.log_epochs(identity.digest, [(1, {"val_macro_f1": 0.1}), (2, {"val_macro_f1": 0.2}),
                                                (3, {"val_macro_f1": 0.3})]) == 1
    # another driver: the checkpoint is gone, the trial starts at epoch 0 -> a new run, the old one is KILLED
    fresh = Tracker(uri)
    new_run = fresh.start(identity, identity.params(), start_epoch=0)
    assert new_run != run
    client = MlflowClient(uri)
    assert client.get_run(run).info.status == "KILLED" and client.get_run(run).data.tags[SUPERSEDED_TAG] == new_run
    assert [m.step for m in client.get_metric_history(run, "val_macro_f1")] == [1, 2, 3]
    # MLflow ran ahead of the checkpoint (checkpoint every 2 epochs, killed after epoch 3 was logged):
    # the resumed training recomputes epoch 3, so it continues in a new run rather than under the old curve
    fresh.log_epochs(identity.digest, [(1, {"val_macro_f1": 0.1}), (2, {"val_macro_f1": 0.2}),
                                       (3, {"val_macro_f1": 0.3})])
    lagging = Tracker(uri)
    third = lagging.start(identity, identity.params(), start_epoch=2)
    assert third not in (run, new_run) and client.get_run(new_run).data.tags[SUPERSEDED_TAG] == third
    # the experiment explains itself in the MLflow UI (its description)
    experiment = client.get_experiment(client.get_run(run).info.experiment_id)
    assert "final_test_macro_f1" in experiment.tags["mlflow.note.content"]


def test_one_driver_per_sweep(tmp_path):
    import os
    import time

    from segclass.ray_sweep.manifest import LOCK, DriverLock

    folder = Storage(str(tmp_path)).child("sweep")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        from segclass.ray_sweep.manifest import _machine

        folder.write_json(LOCK, {"host": socket.gethostname(), "pid": other.pid, "heartbeat": time.time(),
                                 "machine": _machine()})
        with pytest.raises(TrackingStoreError, match=f"another driver \\(process {other.pid}"):
            DriverLock(folder, "sweep").__enter__()
    finally:
        other.kill()
        other.wait()
    with DriverLock(folder, "sweep"):  # the holder is gone: taken over
        assert folder.read_json(LOCK)["pid"] == os.getpid()
    assert folder.read_json(LOCK) is None
    folder.write_json(LOCK, {"host": "elsewhere", "pid": 1, "heartbeat": time.time()})
    with pytest.raises(TrackingStoreError, match="another driver"):
        DriverLock(folder, "sweep").__enter__()
    folder.write_json(LOCK, {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    with DriverLock(folder, "sweep"):  # a stale heartbeat from another host: taken over
        pass


def test_grid_flags_narrow_the_extra_arms_too():
    quick = get_preset("quick")
    narrowed = narrow(quick, modes=("S",), fractions=(1.0,), seeds=(1, 2, 3))
    points = expand(narrowed)
    assert {(p.mode, p.swept_fraction, p.variant, p.budget) for p in points} == {("S", 1.0, "paper", "equal")}
    assert {p.seed for p in points} == {1, 2, 3}
    only_paper = expand(narrow(quick, variants=("paper",)))
    assert {p.variant for p in only_paper} == {"paper"} and (1.0 in {p.swept_fraction for p in only_paper})
    assert {p.budget for p in expand(narrow(quick, budgets=("paper",)))} == {"paper"}
    assert {(p.mode, p.swept_fraction) for p in expand(narrow(quick, budgets=("paper",)))} == {("S", 0.05), ("S+C", 0.05),
                                                                                          ("S+C*", 0.05)}
    with pytest.raises(ConfigError, match="--fractions 200: s and c are percentages from 0 to 100"):
        narrow(quick, fractions=(2.0,))
    with pytest.raises(ConfigError, match="c is at most 50"):
        narrow(get_preset("paper"), fractions=(0.75,))
    with pytest.raises(ConfigError, match="--epochs 0"):
        narrow(quick, epochs=0)
    with pytest.raises(ConfigError, match="--variants mean-max: choose from paper, released-code, mean-softmax"):
        narrow(quick, variants=("mean-max",))


def test_variants_flag_runs_our_variant_across_the_grid():
    import importlib.util

    spec = importlib.util.spec_from_file_location("full_grid", ROOT / "sweeps" / "full_grid.py")
    full_grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(full_grid)
    args = full_grid.build_parser().parse_args(["--variants", "mean-softmax", "--fractions", "5", "100"])
    points = expand(narrow(get_preset("quick"), variants=tuple(args.variants), fractions=(0.05, 1.0)))
    assert {p.variant for p in points} == {"mean-softmax"} and {p.mode for p in points} == {"S", "S+C", "S+C*"}
    assert all(p.key.endswith("|mean-softmax|equal") for p in points)


def test_bad_flag_values_stop_before_ray_and_write_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--fractions", "200",
                             "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --fractions 200: s and c are percentages from 0 to 100"]
    assert not (tmp_path / "results").exists() and not (tmp_path / "tune").exists()


def test_storage_writes_are_atomic_and_listable(tmp_path):
    storage = Storage(str(tmp_path / "s"))
    storage.write_bytes("trials/abc/checkpoint.pt", b"x" * 10)
    storage.write_json("sweep.json", {"a": 1})
    assert storage.read_bytes("trials/abc/checkpoint.pt") == b"x" * 10
    assert storage.list("trials/abc") == ["checkpoint.pt"] and storage.read_json("sweep.json") == {"a": 1}
    assert [p.name for p in (tmp_path / "s" / "trials" / "abc").iterdir()] == ["checkpoint.pt"]  # no temp left
    storage.delete("trials/abc")
    assert storage.list("trials") == [] and storage.read_json("missing.json") is None


def test_sweep_storage_follows_results_and_points_to_checkpoints_the_earlier_default_left(tmp_path, monkeypatch,
                                                                                         capsys):
    from segclass.ray_sweep.driver import SweepOptions, sweep_storage

    monkeypatch.chdir(tmp_path)
    quick = get_preset("quick")
    assert sweep_storage(SweepOptions(preset=quick, name="q", results="mine")) == str(Path("mine") / "tune")
    assert sweep_storage(SweepOptions(preset=quick, name="q", results="mine", storage="s3://b/t")) == "s3://b/t"
    assert capsys.readouterr().out == ""
    (tmp_path / "results" / "tune" / "q").mkdir(parents=True)  # where a sweep with --results mine kept them before
    assert sweep_storage(SweepOptions(preset=quick, name="q", results="mine")) == str(Path("mine") / "tune")
    assert "add --storage results/tune to continue its unfinished trials" in capsys.readouterr().out
    sweep_storage(SweepOptions(preset=quick, name="q"))  # the default --results: that folder is its storage
    assert capsys.readouterr().out == ""


def test_driver_lock_is_taken_by_exactly_one_of_drivers_starting_at_once(tmp_path):
    outcomes = sorted(out.strip() for out, _ in drivers_at_once(str(tmp_path), 6))
    assert outcomes == ["refused"] * 5 + ["took"], outcomes


def test_driver_lock_is_released_only_by_its_owner(tmp_path):
    from segclass.ray_sweep.manifest import LOCK, DriverLock

    folder = Storage(str(tmp_path)).child("sweep")
    lock = DriverLock(folder, "sweep")
    with lock:
        held = folder.read_json(LOCK)
        assert held["driver"] == lock.driver_id
        folder.write_json(LOCK, {**held, "driver": "someone-else"})  # taken over while this driver hung
    assert folder.read_json(LOCK)["driver"] == "someone-else"  # not removed by the old owner


def test_runs_name_their_owner_live_owners_keep_their_trials_and_orphans_end(tmp_path):
    from mlflow import MlflowClient

    from segclass.ray_sweep.manifest import DriverLock
    from segclass.ray_sweep.tracking import Tracker
    from segclass.schema import OWNER_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    identity = _identity()
    lock = DriverLock(Storage(str(tmp_path)).child("sweep-a"), "sweep-a")
    with lock:
        owner = Tracker(uri, sweep="sweep-a", driver=lock.driver_id, lock_uri=lock.uri)
        run = owner.start(identity, identity.params(), start_epoch=0)
        assert client.get_run(run).data.tags[OWNER_TAG] == lock.driver_id
        # another sweep with the same identity, while sweep-a's driver lives: the trial is left to it
        other = Tracker(uri, sweep="sweep-b", driver="b" * 16, lock_uri=f"{tmp_path}/sweep-b/driver.json")
        seen = other.survey([identity])
        assert seen.elsewhere == {identity.digest: "sweep-a"} and seen.ended == []
        assert client.get_run(run).info.status == "RUNNING"
    # sweep-a's driver is gone (its lock released, the run left RUNNING): the next driver ends the run ...
    later = Tracker(uri, sweep="sweep-b", driver="c" * 16, lock_uri=f"{tmp_path}/sweep-b/driver.json")
    seen = later.survey([identity])
    assert seen.elsewhere == {} and seen.ended == [run]
    assert client.get_run(run).info.status == "KILLED"
    # ... and continues it when it trains the trial (no epoch was logged: nothing to supersede)
    assert later.start(identity, identity.params(), start_epoch=0) == run
    assert client.get_run(run).info.status == "RUNNING"
    assert client.get_run(run).data.tags[OWNER_TAG] == "c" * 16


def test_a_run_whose_params_failed_is_completed_by_the_retry_not_duplicated(tmp_path):
    from mlflow import MlflowClient

    from segclass.ray_sweep.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    identity = _identity()
    tracker = Tracker(uri, sweep="s", driver="d" * 16, lock_uri=f"{tmp_path}/s/driver.json")
    tracker.finished_identities([identity])  # the driver's start: the index of its runs
    real = tracker.client.log_batch
    calls = {"n": 0}

    def params_fail_once(run_id, metrics=(), params=(), tags=(), **kwargs):
        calls["n"] += 1
        if params and calls["n"] <= 2:  # the server drops the params call of the first attempt
            raise ConnectionError("tracking server unreachable")
        return real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    tracker.client.log_batch = params_fail_once
    with pytest.raises(ConnectionError):
        tracker.start(identity, identity.params(), start_epoch=0)
    run = tracker.start(identity, identity.params(), start_epoch=0)  # the writer's retry
    runs = MlflowClient(uri).search_runs([tracker.experiment_id(identity)])
    assert [r.info.run_id for r in runs] == [run]
    assert runs[0].data.params["seed"] == str(identity.point.seed) and runs[0].info.status == "RUNNING"


def test_runs_of_unknown_owners_are_left_and_live_owners_runs_never_taken(tmp_path):
    from mlflow import MlflowClient

    from segclass.ray_sweep.manifest import DriverLock
    from segclass.ray_sweep.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    identity = _identity()
    # a driver on another host whose sweep folder this host cannot see: its run is left RUNNING
    remote = Tracker(uri, sweep="remote", driver="r" * 16, lock_uri="/mnt/elsewhere/remote/driver.json")
    remote_run = remote.start(identity, {**identity.params(), "sweep": "remote"}, start_epoch=0)
    seen = Tracker(uri, sweep="local", driver="l" * 16, lock_uri=f"{tmp_path}/local/driver.json").survey([identity])
    assert seen.ended == [] and client.get_run(remote_run).info.status == "RUNNING"
    client.set_terminated(remote_run, status="KILLED")
    # a live driver's open run is never reattached by another sweep: that one gets a run of its own
    lock = DriverLock(Storage(str(tmp_path)).child("live"), "live")
    with lock:
        live = Tracker(uri, sweep="live", driver=lock.driver_id, lock_uri=lock.uri)
        live_run = live.start(identity, {**identity.params(), "sweep": "live"}, start_epoch=0)
        assert live_run == remote_run  # the remote owner is not known to live: its KILLED run is continued
        other = Tracker(uri, sweep="other", driver="o" * 16, lock_uri=f"{tmp_path}/other/driver.json")
        other_run = other.start(identity, {**identity.params(), "sweep": "other"}, start_epoch=0)
        assert other_run != live_run and client.get_run(live_run).info.status == "RUNNING"
    assert client.get_run(live_run).data.params["sweep"] == "remote"  # params are never changed, only completed


def test_two_drivers_that_found_an_identity_free_leave_it_to_one_claim(tmp_path):
    from mlflow import MlflowClient

    from segclass.ray_sweep.manifest import DriverLock
    from segclass.ray_sweep.tracking import Tracker
    from segclass.schema import OWNER_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    identity = _identity()
    first_lock = DriverLock(Storage(str(tmp_path)).child("sweep-a"), "sweep-a")
    second_lock = DriverLock(Storage(str(tmp_path)).child("sweep-b"), "sweep-b")
    with first_lock, second_lock:
        first, second = (Tracker(uri, sweep=lock.name, driver=lock.driver_id, lock_uri=lock.uri)
                         for lock in (first_lock, second_lock))
        assert first.survey([identity]).elsewhere == second.survey([identity]).elsewhere == {}  # both: free
        assert first.claim([identity]) == {}
        assert second.claim([identity]) == {identity.digest: "sweep-a"}  # its own claim lost: its run is gone
        runs = client.search_runs([first.experiment_id(identity)])
        assert [(r.info.status, r.data.tags[OWNER_TAG]) for r in runs] == [("SCHEDULED", first_lock.driver_id)]
        assert first.start(identity, identity.params(), start_epoch=0) == runs[0].info.run_id  # trains in its claim
        assert client.get_run(runs[0].info.run_id).info.status == "RUNNING"
        # a driver stopped before a claimed trial reported leaves no SCHEDULED run behind
        unstarted = _identity(GridPoint("segmentation", "bach", "S", 0.05, 1))
        assert first.claim([unstarted]) == {} and first.release_unstarted() == 1
        assert [r.info.run_id for r in client.search_runs([first.experiment_id(identity)])] == [runs[0].info.run_id]
        # a trial that started and then failed for good keeps its run (FAILED, its history): never released
        failing = _identity(GridPoint("segmentation", "bach", "S", 0.05, 2))
        assert first.claim([failing]) == {}
        failed_run = first.start(failing, failing.params(), start_epoch=0)
        first.fail(failing.digest)
        assert first.release_unstarted() == 0
        assert client.get_run(failed_run).info.status == "FAILED"


def test_claims_whose_drivers_cannot_see_each_others_locks_still_agree_on_one(tmp_path):
    """Two hosts with their own local storage and one tracking server: each other's lock is unreadable (unknown),
    and an open run of an unknown owner still counts as a claim, so the identity is trained once."""
    from mlflow import MlflowClient

    from segclass.ray_sweep.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    identity = _identity()
    first, second = (Tracker(uri, sweep=name, driver=f"driver-{name}", lock_uri=f"{tmp_path}/host-{name}/driver.json")
                     for name in ("a", "b"))  # neither lock folder exists on "this host"
    assert first.claim([identity]) == {}
    assert second.claim([identity]) == {identity.digest: "a"}
    runs = MlflowClient(uri).search_runs([first.experiment_id(identity)])
    assert len(runs) == 1 and runs[0].data.tags["segclass.sweep"] == "a"
