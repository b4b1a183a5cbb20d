"""The sweep's status line: what it counts as done, running and waiting, and how it weighs the work left."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from segclass.config import TrainConfig
from segclass.grid import GridPoint
from segclass.ray_sweep import progress as progress_module
from segclass.ray_sweep.progress import ProgressCallback
from segclass.training_loop import batches_per_epoch


def _key(mode: str, fraction: float) -> str:
    return GridPoint("segmentation", "synthetic", mode, fraction, 1, "paper", "equal").key


def _trial(trial_id: str, key: str, status: str) -> SimpleNamespace:
    """What the callback reads of a Tune trial: its id, status and config's grid key."""
    return SimpleNamespace(trial_id=trial_id, status=status, config={"key": key})


def test_batches_per_epoch_counts_both_kinds_of_batch_and_the_budget(tiny_data):
    def batches(mode: str, s: float, budget: str) -> int:
        return batches_per_epoch(TrainConfig(mode=mode, seg_fraction=s, budget=budget, batch_size=4), tiny_data)

    assert batches("S+C", 0.5, "equal") == 2 * batches("S", 0.5, "equal")  # same iterations, two batches each
    assert batches("S+C", 1.0, "equal") == batches("S", 1.0, "equal")  # no classification patches left
    assert batches("S", 1.0, "paper") > batches("S", 0.25, "paper")  # budget paper: one pass over own patches


@pytest.fixture
def clock(monkeypatch):
    """The callback's clock, set by the test: the estimate must not depend on how fast the test runs."""
    now = SimpleNamespace(value=1000.0)
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now.value)
    return now


def test_a_trial_that_sent_its_final_result_is_done_and_the_time_left_weighs_work(clock):
    out = io.StringIO()
    s_key, sc_key, unseen_key = _key("S", 0.05), _key("S+C", 0.05), _key("S+C*", 0.05)
    # S: 1 batch per epoch; S+C and S+C*: 2; S+C* not yet created by Tune (it creates big grids lazily)
    progress = ProgressCallback({s_key: 1, sc_key: 2, unseen_key: 2}, epochs=10, every=0.0, out=out)
    s_trial, sc_trial = _trial("t1", s_key, "RUNNING"), _trial("t2", sc_key, "RUNNING")
    trials = [s_trial, sc_trial]
    clock.value += 100.0
    progress.on_trial_result(0, trials, sc_trial, {"epoch": 0, "start_epoch": 0.0})
    # Tune still lists the S trial as RUNNING when its final result arrives
    final = {"final": 1.0, "start_epoch": 0.0, "test_macro_f1": 0.5, "test_paper_micro_f1": 0.9}
    progress.on_trial_result(0, trials, s_trial, final)
    lines = out.getvalue().strip().splitlines()
    assert "1/3 done: S s=5 seed=1 budget=equal" in lines[-2]
    assert "1/3 done, 1 running (S+C s=5 seed=1 budget=equal epoch 0/10), 1 waiting" in lines[-1], lines[-1]
    # 10 of 50 batch-epochs in 100 s: 400 s left (counting trials Tune made, or epochs, would say less)
    assert lines[-1].endswith("about 6 min 40 s left"), lines[-1]
    progress.on_trial_result(0, trials, s_trial, final)  # a retry replays its final result: counted once
    assert progress.done == 1 and "2/3 done" not in out.getvalue()


def test_epochs_a_resumed_trial_replays_are_not_work_of_this_run(clock):
    out = io.StringIO()
    key, other = _key("S+C", 0.05), _key("S", 0.05)
    progress = ProgressCallback({key: 2, other: 1}, epochs=10, every=0.0, out=out)
    resumed = _trial("t1", key, "RUNNING")
    clock.value += 60.0
    for epoch in range(1, 10):  # its checkpoint held 9 epochs: replayed at once
        progress.on_trial_result(0, [resumed], resumed, {"epoch": epoch, "start_epoch": 9.0})
    assert progress.share_done() == 0.0  # nothing trained yet in this run: no "about 1 s left"
    assert "left" not in out.getvalue().strip().splitlines()[-1]
    progress.on_trial_result(0, [resumed], resumed, {"epoch": 10, "start_epoch": 9.0})
    assert progress.share_done() == pytest.approx(2 / (2 + 10))  # its last epoch, of it plus the S trial's 10


def test_a_retry_keeps_the_work_of_this_run_and_a_failed_trial_is_neither_waiting_nor_work_left(clock):
    out = io.StringIO()
    key, other = _key("S+C", 0.05), _key("S", 0.05)
    progress = ProgressCallback({key: 2, other: 1}, epochs=10, every=0.0, out=out)
    trial = _trial("t1", key, "RUNNING")
    for epoch in range(1, 6):
        progress.on_trial_result(0, [trial], trial, {"epoch": epoch, "start_epoch": 0.0})
    share = progress.share_done()
    assert share == pytest.approx(10 / 30)
    for epoch in range(1, 5):  # Tune retries it; it replays its checkpoint of epoch 4
        progress.on_trial_result(0, [trial], trial, {"epoch": epoch, "start_epoch": 4.0})
    assert progress.share_done() == pytest.approx(8 / 30)  # epoch 5 is lost, epochs 1-4 still count
    trial.status = "ERROR"
    progress.on_trial_error(0, [trial], trial)
    assert progress.share_done() == pytest.approx(8 / 18)  # its epochs 5-10 are no longer work left
    progress.on_trial_result(0, [trial], _trial("t2", other, "RUNNING"), {"epoch": 0, "start_epoch": 0.0})
    assert "0/2 done, 0 running, 1 waiting, 1 failed" in out.getvalue().strip().splitlines()[-1]


def test_batches_per_epoch_from_counts_is_what_the_trainer_runs(tiny_data):
    """The sweep prices each grid point from the dataset's counts; the trainer draws the subsets. They agree."""
    import dataclasses

    from segclass.grid import get_preset
    from segclass.subsets import select_trial_patches
    from segclass.training_loop import iterations_per_epoch, patch_kinds

    for point in get_preset("paper").points():
        for budget in ("paper", "equal"):
            config = dataclasses.replace(point, budget=budget).train_config(epochs=1)
            trial = select_trial_patches(config, tiny_data.seg_labels, tiny_data.cls_labels)
            runs = iterations_per_epoch(config, trial, len(tiny_data.seg_labels)) * patch_kinds(trial)
            assert batches_per_epoch(config, tiny_data) == runs, config
