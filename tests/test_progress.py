"""The sweep's status line: what it counts as done, running and waiting, and how it weighs the rest."""

from __future__ import annotations

import io
from types import SimpleNamespace

from segclass.grid import GridPoint
from segclass.ray_sweep.progress import ProgressCallback, epoch_cost


def _trial(trial_id: str, mode: str, fraction: float, status: str) -> SimpleNamespace:
    """What the callback reads of a Tune trial: its id, status and config's grid key."""
    key = GridPoint("segmentation", "synthetic", mode, fraction, 1, "paper", "equal").key
    return SimpleNamespace(trial_id=trial_id, status=status, config={"key": key})


def test_epoch_cost_counts_the_batches_of_an_iteration():
    assert epoch_cost(_trial("a", "S", 0.05, "PENDING")) == 1
    assert epoch_cost(_trial("b", "S+C", 0.05, "PENDING")) == 2
    assert epoch_cost(_trial("c", "S+C*", 1.0, "PENDING")) == 2
    assert epoch_cost(_trial("d", "S+C", 1.0, "PENDING")) == 1  # no classification patches left at s = 100%


def test_a_trial_that_sent_its_final_result_is_done_not_running_and_the_rest_is_weighed_by_cost():
    out = io.StringIO()
    progress = ProgressCallback(total=3, epochs=10, every=0.0, out=out)
    s_trial, sc_trial, waiting = (_trial("s", "S", 0.05, "RUNNING"), _trial("sc", "S+C", 0.05, "RUNNING"),
                                  _trial("w", "S+C*", 0.05, "PENDING"))
    trials = [s_trial, sc_trial, waiting]
    progress.started -= 100.0  # 100 s into the sweep
    progress.on_trial_result(0, trials, sc_trial, {"epoch": 0})
    # Tune still lists the S trial as RUNNING when its final result arrives
    progress.on_trial_result(0, trials, s_trial, {"final": 1.0, "test_macro_f1": 0.5, "test_paper_micro_f1": 0.9})
    status = out.getvalue().strip().splitlines()[-1]
    assert "1/3 done, 1 running (S+C s=5 seed=1 budget=equal epoch 0/10), 1 waiting" in status, status
    # 10 of 50 batch-epochs done in 100 s: 400 s left (counting epochs alone would say 200 s)
    assert status.endswith("about 6 min 40 s left"), status
