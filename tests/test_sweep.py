"""The sweep end to end: a real local Ray, a real MLflow store, the CLI as users run it."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segclass.grid import customise, expand, get_preset
from segclass.schema import IDENTITY_TAG, KEY_TAG, SETTINGS_TAG

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


def _command(tmp_path, tiny_root, *extra, name="t", hooks=()):
    script = [str(ROOT / "benchmarks" / "hooked_sweep.py"), *hooks, "--"] if hooks else [
        str(ROOT / "sweeps" / "full_grid.py")]
    return [sys.executable, *script, "--preset", "smoke", "--data-root", str(tiny_root), "--results",
            str(tmp_path / "results"), "--name", name, "--num-cpus", "2", *extra]


def _sweep(tmp_path, tiny_root, *extra, env=None, name="t", hooks=(), expect=0):
    result = subprocess.run(_command(tmp_path, tiny_root, *extra, name=name, hooks=hooks), capture_output=True,
                            text=True, timeout=900, cwd=tmp_path, env={**os.environ, **(env or {})})
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _tune_results(path):
    """Rows of a trial's result.json; a last line Tune is still writing is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _runs(tmp_path, uri=None):
    from mlflow import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("segclass-")]
    return client, client.search_runs(experiments, max_results=1000)


def _report(tmp_path, *extra):
    return subprocess.run([sys.executable, str(ROOT / "analysis" / "report.py"), "--results",
                           str(tmp_path / "results"), *extra], capture_output=True, text=True, timeout=600)


def test_smoke_sweep_rerun_growth_and_identity(tmp_path, tiny_root):
    out = _sweep(tmp_path, tiny_root)
    planned = expand(customise(get_preset("smoke"), seeds=(1,)))
    client, runs = _runs(tmp_path)
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in planned)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags[IDENTITY_TAG] for r in runs}) == len(planned)
    assert len({r.data.tags[SETTINGS_TAG] for r in runs}) == 1
    for run in runs:
        params = run.data.params
        assert {"dataset", "mode", "seg_percent", "seed", "variant", "budget", "epochs", "batch_size", "lr",
                "augment", "pretrained", "pretrained_sha256", "data_fingerprint", "result_version",
                "precision"} <= set(params)
        assert params["epochs"] == "1" and params["precision"] == "fp32" and params["seg_percent"] in {"25", "100"}
        assert {"final_test_macro_f1", "final_test_paper_micro_f1", "final_test_pixel_accuracy",
                "final_test_f1_invasive", "val_macro_f1", "train_loss"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"test_confusion_matrix.png", "test_confusion_matrix.json", "report.json", "masks"} <= artifacts
        assert "model.pt" not in artifacts  # the model is the run's MLflow model, not a second copy
        assert [m.model_id for m in run.outputs.model_outputs]  # the UI's Models column
        (dataset,) = [i.dataset for i in run.inputs.dataset_inputs]  # the UI's Dataset column
        assert dataset.name == params["dataset"] and dataset.digest == params["data_fingerprint"][:16]
        masks = {a.path for a in client.list_artifacts(run.info.run_id, "masks")}
        assert any(path.endswith("_pred.png") for path in masks), masks  # from the trial's own test pass
    assert "mlflow ui --backend-store-uri" in out and "analysis/report.py" in out
    assert "segclass.predict --checkpoint" in out
    assert f"{len(planned)} ran to the end now, 0 skipped" in out
    assert f"1/{len(planned)} done: " in out and "Trial status" not in out  # our console, not Tune's boxes
    assert "Configuration for experiment" not in out and "View detailed results" not in out
    finished = [line.split("done: ", 1)[1].split(":")[0] for line in out.splitlines() if "done: " in line]
    assert sorted(finished) == sorted(p.run_name for p in planned)  # trials named by their grid points
    assert len(out.splitlines()) <= 50, out  # one screen
    rebuild = next(line for line in out.splitlines() if line.startswith("Rebuild the paper's tables"))
    report = subprocess.run(rebuild.split(": ", 1)[1], shell=True, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)  # runs as printed
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    assert (tmp_path / "results" / "analysis" / "index.md").is_file()
    # finished trials leave no checkpoint behind: MLflow holds their results
    # no --storage: the sweep's storage is inside --results, and a finished trial leaves no files there
    assert list((tmp_path / "results" / "tune" / "t" / "trials").iterdir()) == []

    # a sweep trial's logged model predicts a slide by its MLflow run id alone
    predicted = subprocess.run(
        [sys.executable, "-m", "segclass.predict", "--checkpoint", runs[0].info.run_id, "--tracking-uri",
         f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", str(tiny_root / "test" / "images" / "slide_03.tiff"),
         "--out", str(tmp_path / "predicted"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    record = json.loads((tmp_path / "predicted" / "slide_03.json").read_text())
    assert record["weights"] == "last" and record["checkpoint"].startswith(f"runs:/{runs[0].info.run_id}/model in ")
    # what MLflow users load is the network predict uses: same mask logits on the test image's patches
    import mlflow.pytorch
    import torch

    from segclass.predict.source import load_trained
    from segclass.slide import read_image

    tracking = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    served = mlflow.pytorch.load_model(f"runs:/{runs[0].info.run_id}/model")
    trained = load_trained(runs[0].info.run_id, tracking)
    rgb = read_image(tiny_root / "test" / "images" / "slide_03.tiff", 1.25).rgb[:256, :256]
    patches = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unfold(1, 128, 128).unfold(2, 128, 128)
    patches = patches.permute(1, 2, 0, 3, 4).reshape(-1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(served(patches), trained.model.eval().forward_masks(patches))
    # registered in the Model Registry, it predicts by its models:/ URI as by its run
    mlflow.register_model(f"runs:/{runs[0].info.run_id}/model", "segclass-smoke")
    by_registry = subprocess.run(
        [sys.executable, "-m", "segclass.predict", "--checkpoint", "models:/segclass-smoke/1", "--tracking-uri",
         tracking, str(tiny_root / "test" / "images" / "slide_03.tiff"), "--out", str(tmp_path / "registry"),
         "--quiet"], capture_output=True, text=True, timeout=300)
    assert by_registry.returncode == 0, by_registry.stderr
    assert (tmp_path / "registry" / "slide_03_mask.png").read_bytes() == (
        tmp_path / "predicted" / "slide_03_mask.png").read_bytes()

    again = _sweep(tmp_path, tiny_root)
    assert f"{len(planned)} already finished (skipped), 0 to run" in again
    assert len(_runs(tmp_path)[1]) == len(planned)
    # identities are the data's content: the cache copied to another folder, or the sources copied (new
    # paths and mtimes, so the cache is rebuilt), and every finished trial is still skipped
    shutil.copytree(os.environ["SEGCLASS_DATA_CACHE"], tmp_path / "moved_cache")  # where the sweep built it
    copied_root = shutil.copytree(tiny_root, tmp_path / "shared" / "tiny", copy_function=shutil.copy)
    for root, cache in ((tiny_root, "moved_cache"), (copied_root, "fresh_cache")):
        moved = _sweep(tmp_path, root, env={"SEGCLASS_DATA_CACHE": str(tmp_path / cache)})
        assert f"{len(planned)} already finished (skipped), 0 to run" in moved, moved[-2000:]
    assert (tmp_path / "fresh_cache" / "synthetic").is_dir()  # the copied sources were built anew
    assert len(_runs(tmp_path)[1]) == len(planned)

    refused = _sweep(tmp_path, tiny_root, "--seeds", "1", "2", expect=2)
    assert "pass --grow" in refused and "Traceback" not in refused
    grown = _sweep(tmp_path, tiny_root, "--seeds", "1", "2", "--grow")
    assert f"{len(planned)} already finished (skipped), {len(planned)} to run" in grown
    assert f"{len(planned)} ran to the end now, {len(planned)} skipped" in grown
    _, runs = _runs(tmp_path)
    keys = [r.data.tags[KEY_TAG] for r in runs]
    assert len(keys) == 2 * len(planned) == len(set(keys))
    assert all(r.info.status == "FINISHED" for r in runs)

    # the same sweep name with other training settings is refused; another name in the same store runs
    # the same grid points again, as distinct runs, and the report refuses to mix the two
    refused = _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100", "--epochs", "2", expect=2)
    assert "other training settings" in refused and "epochs" in refused
    longer = _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100", "--epochs", "2", name="longer")
    assert "0 already finished (skipped), 1 to run" in longer
    _, runs = _runs(tmp_path)
    same_point = [r for r in runs if r.data.tags[KEY_TAG] == "segmentation|synthetic|S|s=100|seed=1|paper|paper"]
    assert sorted(r.data.params["epochs"] for r in same_point) == ["1", "2"]
    mixed = _report(tmp_path)
    assert mixed.returncode == 2 and "different settings" in mixed.stderr and "epochs" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    for selection in (["--epochs", "2"], ["--sweep", "t"]):
        picked = _report(tmp_path, *selection)
        assert picked.returncode == 0, picked.stderr


def test_another_dataset_under_the_same_name_is_refused(tmp_path, tiny_root):
    from segclass.synthetic import generate
    from tests.conftest import TINY

    other = generate(tmp_path / "other", dataclasses.replace(TINY, seed=4))
    _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100")
    refused = _sweep(tmp_path, other, "--modes", "S", "--fractions", "100", expect=2)
    assert "never mixes datasets" in refused and "--name" in refused
    assert len(_runs(tmp_path)[1]) == 1


def test_failing_trial_is_retried_from_its_checkpoint(tmp_path, tiny_root):
    ledger = tmp_path / "ledger.txt"
    _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100", "--epochs", "2", name="faulty",
           hooks=("--fault-once", str(tmp_path / "faults"), "--ledger", str(ledger)))
    assert len(list((tmp_path / "faults").iterdir())) == 1  # the fault fired once
    client, runs = _runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_macro_f1")] == [1, 2]
    assert [line.split(" ")[1] for line in ledger.read_text().splitlines()] == ["1", "2"], "the retry started over"
    results = _tune_results(next((tmp_path / "results" / "tune" / "faulty").glob("tune-1/*/result.json")))
    assert [r["start_epoch"] for r in results if r.get("final")] == [1.0]


def test_chaos_kills_during_first_run_and_growth(tmp_path):
    """CI's short chaos run: the driver and its Ray SIGKILLed twice, once while the sweep grows."""
    summary_file = tmp_path / "chaos.json"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--kills", "2", "--per-stage",
                             "1", "--after-progress", "--work", str(tmp_path / "chaos"), "--json", str(summary_file)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    summary = json.loads(summary_file.read_text())
    assert summary["kills"] == 2 and summary["kills_during_growth"] == 1
    assert summary["problems"] == []
    assert summary["finished_runs"] == summary["grid_points"] == 8
    assert summary["trials_resumed_from_checkpoint"] >= 1
    assert summary["epochs_trained"] <= summary["epochs_minimum"]
