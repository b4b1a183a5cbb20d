"""The Tune trial: one grid point, trained by the Ray-agnostic trainer, checkpointed under its identity.

The trial keeps its checkpoint in the sweep's storage at `trials/<identity>/`
(see `storage.py`), not in Tune's checkpoint mechanism: whichever Tune
experiment runs the trial (the first driver, a resumed one, a grown one, a
retry after a worker died) it finds its own latest checkpoint and continues.
It reports, in order:

1. on resume, each epoch the checkpoint already holds (replayed from its
   history), so MLflow gets epochs a killed driver never wrote; a trial whose
   `final/` folder is complete (the driver died before MLflow had it) replays
   its history and reports `final` again without training or evaluating;
2. each trained epoch's metrics;
3. `final` once the report and artifacts are in `trials/<identity>/final/`.

Every report carries `start_epoch` (the checkpoint's epoch, 0 for a fresh
start): the MLflow side needs it to tell a continued training from a new one.
"""

from __future__ import annotations

import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from segclass.grid import GridPoint
from segclass.schema import FINAL_METRIC_PREFIXES, epoch_scalars, scalar_metrics
from segclass.ray_sweep.storage import Storage

#: Called in the trial after each trained epoch's report with (grid point, epoch).
#: Tests and the chaos benchmark pass one (to slow epochs, inject faults, count
#: epochs trained); production sweeps pass none.
EpochHook = Callable[[GridPoint, int], None]


def run_trial(config: dict[str, Any], data: Any = None, identities: dict[str, str] | None = None,
              pretrained_state: dict[str, Any] | None = None, epoch_hook: EpochHook | None = None) -> None:
    """Train one grid point (`config["key"]`) and report to Tune; see the module docstring.

    `data` (the dataset arrays), `identities` (grid key -> identity digest) and
    `pretrained_state` come through the object store (`tune.with_parameters`).
    """
    import ray
    import torch
    from ray import tune

    from segclass.checkpoint import FILENAME, is_best_file
    from segclass.ray_sweep.artifacts import MAX_SAMPLES, trial_artifacts
    from segclass.training_loop import train

    started = time.time()
    point = GridPoint.from_key(config["key"])
    digest = identities[point.key]
    epochs = int(config["epochs"])
    store = Storage(config["sweep_storage"]).child("trials", digest)
    train_config = point.train_config(epochs=epochs, batch_size=int(config["batch_size"]),
                                      validate_every=int(config.get("validate_every", 1)),
                                      pretrained=config.get("pretrained_name") or None,
                                      precision=config.get("precision", "auto"))
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    node = ray.get_runtime_context().get_node_id()
    start_epoch = 0

    def replay(history: list[dict[str, Any]]) -> None:
        nonlocal start_epoch
        start_epoch = len(history)
        for metrics in history:
            tune.report({**epoch_scalars(metrics), "start_epoch": float(start_epoch), "node_id": node})

    report = store.read_json("final/report.json")  # written last: its presence means final/ is complete
    if report is not None and report.get("identity") == digest:  # trained and evaluated before a driver died
        replay(report["history"])
    else:
        with ExitStack() as cleanup:
            if store.fs is None:  # a local or mounted shared folder: the trainer writes there directly
                run_dir = Path(store.root)
                run_dir.mkdir(parents=True, exist_ok=True)
                for leftover in run_dir.glob(".*"):  # temporary files of writes a kill interrupted
                    leftover.unlink(missing_ok=True)
            else:  # an object store: work in a temporary folder, mirror checkpoints to storage
                run_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="segclass-trial-")))
                for name in store.list():
                    if name == FILENAME or is_best_file(name):
                        (run_dir / name).write_bytes(store.read_bytes(name))
            uploaded: set[str] = set()
            samples: list[tuple[Any, Any]] = []  # (test image, predicted mask) for the run's sample masks

            def keep_sample(item, mask) -> None:
                if len(samples) < MAX_SAMPLES:
                    samples.append((item, mask))

            def on_epoch(metrics: dict[str, Any]) -> None:
                if metrics.get("checkpointed") and store.fs is not None:
                    _mirror(run_dir, store, uploaded)
                tune.report({**epoch_scalars(metrics), "start_epoch": float(start_epoch), "node_id": node})
                if epoch_hook is not None:
                    epoch_hook(point, int(metrics["epoch"]))

            report = train(train_config, data, run_dir, on_epoch=on_epoch, device=device,
                           checkpoint_every=int(config.get("checkpoint_every", 1)),
                           pretrained_state=pretrained_state, on_resume=replay, on_test_prediction=keep_sample)
            report.update(data_fingerprint=config.get("data_fingerprint", ""), identity=digest,
                          pretrained_sha256=config.get("pretrained_sha256", ""))
            files = trial_artifacts(report, run_dir / FILENAME, samples)
            store.delete("final")
            for name, payload in files.items():
                store.write_bytes(f"final/{name}", payload)
            store.write_bytes("final/report.json", json.dumps(report, default=str).encode())
    final = {k: v for k, v in scalar_metrics(report).items() if k.startswith(FINAL_METRIC_PREFIXES)}
    # where and when it ran: lets tests and users check node spread and fractional-GPU packing
    placement = {"node_id": node, "device": device, "trial_started": started, "trial_ended": time.time()}
    tune.report({**final, **placement, "final": 1.0, "epoch": float(epochs), "start_epoch": float(start_epoch)})


def _mirror(run_dir: Path, store: Storage, uploaded: set[str]) -> None:
    """Upload the best weights, then the checkpoint that points to them, then drop stale best files.

    `uploaded` holds the best files this trial process wrote: a best file of the
    same name left by a killed attempt may hold other weights, so it is replaced.
    """
    from segclass.checkpoint import FILENAME, is_best_file

    best = {p.name for p in run_dir.iterdir() if is_best_file(p.name)}
    for name in sorted(best - uploaded):
        store.write_bytes(name, (run_dir / name).read_bytes())
        uploaded.add(name)
    store.write_bytes(FILENAME, (run_dir / FILENAME).read_bytes())
    for name in store.list():
        if is_best_file(name) and name not in best:
            store.delete(name)
