"""The sweep end to end: a real local Ray, a real MLflow store, the CLI as users run it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segclass.grid import customise, expand, get_preset
from segclass.sweep.tracking import KEY_TAG

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_ray_left_running():
    """Start each sweep on a machine where the previous test's Ray has exited.

    A driver's Ray shuts down asynchronously; a new local Ray started while the
    old raylet still holds the fixed agent ports can fail to start.
    """
    import time

    def ray_running() -> bool:
        for comm in Path("/proc").glob("[0-9]*/comm"):
            try:
                if comm.read_text().strip() in ("raylet", "gcs_server"):
                    return True
            except OSError:  # the process exited while we looked
                continue
        return False

    deadline = time.time() + 60
    while time.time() < deadline and ray_running():
        time.sleep(0.5)
    yield


def _sweep(tmp_path, tiny_root, *extra, env=None, name="t"):
    command = [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--preset", "smoke", "--data-root",
               str(tiny_root), "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune"),
               "--name", name, "--num-cpus", "2", *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _tune_results(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _runs(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("segclass-")]
    return client, client.search_runs(experiments, max_results=1000)


def test_smoke_sweep_rerun_and_growth(tmp_path, tiny_root):
    out = _sweep(tmp_path, tiny_root)
    planned = expand(customise(get_preset("smoke"), seeds=(1,)))
    client, runs = _runs(tmp_path)
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in planned)
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        params = run.data.params
        assert {"dataset", "mode", "seg_fraction", "seed", "variant", "budget", "epochs", "pretrained",
                "data_fingerprint", "segclass_version"} <= set(params)
        assert {"final_test_macro_f1", "final_test_paper_micro_f1", "final_test_pixel_accuracy",
                "final_test_f1_invasive", "val_macro_f1", "train_loss"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"test_confusion_matrix.png", "test_confusion_matrix.json", "report.json", "masks", "model.pt"} <= artifacts
    assert "mlflow ui --backend-store-uri" in out and "analysis/report.py" in out
    assert "segclass.predict --checkpoint" in out

    # a sweep trial's logged model predicts a slide by its MLflow run id alone
    predicted = subprocess.run(
        [sys.executable, "-m", "segclass.predict", "--checkpoint", runs[0].info.run_id, "--tracking-uri",
         f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", str(tiny_root / "test" / "images" / "slide_03.tiff"),
         "--out", str(tmp_path / "predicted"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads((tmp_path / "predicted" / "slide_03.json").read_text())["weights"] == "last"

    again = _sweep(tmp_path, tiny_root)
    assert f"{len(planned)} already finished (skipped), 0 to run" in again
    assert len(_runs(tmp_path)[1]) == len(planned)

    grown = _sweep(tmp_path, tiny_root, "--seeds", "1", "2")
    assert f"{len(planned)} already finished (skipped), {len(planned)} to run" in grown
    _, runs = _runs(tmp_path)
    keys = [r.data.tags[KEY_TAG] for r in runs]
    assert len(keys) == 2 * len(planned) == len(set(keys))
    assert all(r.info.status == "FINISHED" for r in runs)


def test_failing_trial_is_retried_from_its_checkpoint(tmp_path, tiny_root):
    _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100", "--epochs", "2",
           env={"SEGCLASS_FAULT_ONCE_DIR": str(tmp_path / "faults")}, name="faulty")
    assert len(list((tmp_path / "faults").iterdir())) == 1  # the fault fired once
    client, runs = _runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_macro_f1")] == [1, 2]
    results = _tune_results(next((tmp_path / "tune" / "faulty").glob("*/result.json")))
    assert [r["epoch"] for r in results if not r.get("final")] == [1.0, 2.0], "the retry started over"
    assert results[-1]["final"] == 1.0


def _store_snapshot(database: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Finished runs (grid key -> end time) and running ones (grid key -> epoch), read-only.

    Read with sqlite directly: an MlflowClient would create the schema itself if
    it found the file before the driver had, and race the driver's migration.
    """
    import sqlite3

    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)
    try:
        rows = connection.execute(
            "SELECT r.status, r.end_time, t.value, m.value FROM runs r "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? "
            "LEFT JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'epoch'", (KEY_TAG,)).fetchall()
    finally:
        connection.close()
    finished = {key: end for status, end, key, _ in rows if status == "FINISHED"}
    running = {key: int(epoch) for status, _, key, epoch in rows if status == "RUNNING" and epoch}
    return finished, running


def _kill_when_some_done_and_some_mid_training(process, tmp_path, timeout=600):
    import sqlite3
    import time

    deadline = time.time() + timeout
    database = tmp_path / "results" / "mlflow.db"
    while time.time() < deadline:
        time.sleep(0.5)
        if process.poll() is not None:
            log = tmp_path / "killed_sweep.log"
            tail = log.read_text()[-4000:] if log.exists() else ""
            raise AssertionError(f"the sweep ended (exit {process.returncode}) before it could be killed:\n{tail}")
        if not database.exists():
            continue
        try:
            finished, running = _store_snapshot(database)
        except sqlite3.Error:  # the driver is still creating the schema
            continue
        mid = {key: epoch for key, epoch in running.items() if epoch >= 2}
        if finished and mid:
            process.kill()  # SIGKILL: no cleanup, no final snapshot
            process.wait()
            return finished, mid
    raise AssertionError("never saw finished and mid-training trials at once")


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path, tiny_root):
    args = ["--epochs", "6", "--name", "killed"]
    command = [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--preset", "smoke", "--data-root",
               str(tiny_root), "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune"),
               "--num-cpus", "2", *args]
    slow = {**os.environ, "SEGCLASS_SLOW_EPOCH_S": "0.7"}  # wide windows to kill in, on a busy machine too
    with (tmp_path / "killed_sweep.log").open("w") as log:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=slow)
    finished_before, mid_before = _kill_when_some_done_and_some_mid_training(process, tmp_path)

    _sweep(tmp_path, tiny_root, "--epochs", "6", "--resume", name="killed")
    client, runs = _runs(tmp_path)
    planned = expand(customise(get_preset("smoke"), seeds=(1,)))
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in planned)  # exactly once each
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")]
        assert steps == [1, 2, 3, 4, 5, 6], (run.info.run_name, steps)  # no gaps, no duplicates
        if run.data.tags[KEY_TAG] in finished_before:  # finished trials were not rerun
            assert run.info.end_time == finished_before[run.data.tags[KEY_TAG]]
    # interrupted trials continued from a checkpoint, not from epoch 0. (Tune's snapshot may lag the
    # last checkpoint by one epoch, so a trial may replay its latest epoch; MLflow still logs it once.)
    resumed_from_checkpoint = 0
    for result_file in (tmp_path / "tune" / "killed").glob("*/result.json"):
        rows = _tune_results(result_file)
        key = rows[0]["config"]["key"]
        epochs = [r["epoch"] for r in rows if not r.get("final")]
        if mid_before.get(key, 0) >= 2:
            assert epochs.count(1.0) == 1, f"{key} started over after the kill: {epochs}"
            resumed_from_checkpoint += 1
        if key in finished_before:  # finished trials trained no further epoch
            assert len(epochs) == len(set(epochs)) == 6, f"{key} trained again: {epochs}"
    assert resumed_from_checkpoint >= 1
