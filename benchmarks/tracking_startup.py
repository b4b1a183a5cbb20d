"""How long a sweep's driver takes to learn which of its trials are finished, in a store full of other sweeps.

A lab shares one MLflow store; experiments are per study and dataset, so a
sweep's experiment holds everyone's runs. The driver used to read every run
of its experiments (twice: at start and at the end); it now asks the store
only for the runs of its own settings (a filter on the `segclass.settings`
tag). This benchmark fills a SQLite store with --runs finished runs of other
sweeps (other settings; 20 params and 5 metrics each, like a real run) plus
one finished run per grid point of a `smoke` sweep, then times, in the same
process and store:

- before: the previous scan (every run of the experiment, no filter);
- after: `Tracker.finished_identities` (the filtered query).

    .venv/bin/python benchmarks/tracking_startup.py --runs 20000    # the store is kept and reused

Filling 20,000 runs takes about 10 minutes on 2 cores (once; later runs reuse the store).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segclass.grid import expand, get_preset  # noqa: E402
from segclass.schema import (FINISHED, IDENTITY_TAG, KEY_TAG, SETTINGS_TAG, SWEEP_TAG, TrialIdentity,  # noqa: E402
                             check_run_is_current, iter_runs)


def sweep_identities() -> list[TrialIdentity]:
    """The identities of a smoke sweep (fixed settings: the timing does not depend on their values)."""
    preset = get_preset("smoke")
    return [TrialIdentity.of(p, p.train_config(epochs=preset.epochs, precision="fp32").to_dict(), "",
                             "benchmark-data") for p in expand(preset)]


def fill(uri: str, runs: int, identities: list[TrialIdentity]) -> None:
    """Add other sweeps' finished runs until the store holds `runs` of them, and this sweep's finished runs."""
    from mlflow.entities import Metric, Param

    from segclass.ray_sweep.tracking import Tracker

    tracker = Tracker(uri, sweep="benchmark")
    client = tracker.client
    experiment = tracker.experiment_id(identities[0])
    have = sum(1 for _ in iter_runs(client, experiment, f"tags.`{SWEEP_TAG}` = 'others'"))
    started = time.perf_counter()
    for index in range(have, runs):
        point = identities[index % len(identities)].point
        run = client.create_run(experiment, run_name=point.run_name, tags={
            KEY_TAG: point.key, IDENTITY_TAG: uuid.uuid4().hex[:16], SETTINGS_TAG: f"other{index // 100:05d}",
            SWEEP_TAG: "others"})
        client.log_batch(run.info.run_id, params=[Param(f"param_{j}", str(j)) for j in range(20)],
                         metrics=[Metric(f"final_metric_{j}", 0.5, 0, 0) for j in range(5)])
        client.set_terminated(run.info.run_id, FINISHED)
        if (index + 1) % 1000 == 0:
            print(f"  {index + 1} of {runs} other runs ({time.perf_counter() - started:.0f} s)", flush=True)
    mine = {r.data.tags.get(IDENTITY_TAG) for r in iter_runs(client, experiment, f"tags.`{SWEEP_TAG}` = 'benchmark'")}
    for identity in identities:
        if identity.digest not in mine:
            run = client.create_run(experiment, run_name=identity.point.run_name, tags=identity.tags("benchmark"))
            client.set_terminated(run.info.run_id, FINISHED)


def scan_everything(uri: str, identities: list[TrialIdentity]) -> set[str]:
    """The previous driver's query: every run of the experiments, matched here."""
    from mlflow import MlflowClient

    from segclass.ray_sweep.tracking import Tracker

    client = MlflowClient(tracking_uri=uri)
    wanted, finished = {i.digest for i in identities}, set()
    tracker = Tracker(uri)
    for experiment in sorted({tracker.experiment_id(i) for i in identities}):
        for run in iter_runs(client, experiment):
            check_run_is_current(run.data.tags, uri)
            if run.data.tags.get(IDENTITY_TAG) in wanted and run.info.status == FINISHED:
                finished.add(run.data.tags[IDENTITY_TAG])
    return finished


def filtered(uri: str, identities: list[TrialIdentity]) -> set[str]:
    from segclass.ray_sweep.tracking import Tracker

    return Tracker(uri).finished_identities(identities)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000, help="finished runs of other sweeps in the store")
    parser.add_argument("--store", default="benchmarks/results/tracking_startup.db",
                        help="SQLite file of the store (kept: later runs reuse it)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each query (the median is reported)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    store = Path(args.store).resolve()
    store.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store}"
    identities = sweep_identities()
    print(f"filling {store} to {args.runs} runs of other sweeps (reused when already there)", flush=True)
    fill(uri, args.runs, identities)
    figures = {}
    for name, query in (("before (every run of the experiment)", scan_everything),
                        ("after (runs of the sweep's settings)", filtered)):
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            found = query(uri, identities)
            seconds.append(time.perf_counter() - started)
        assert found == {i.digest for i in identities}, f"{name}: found {len(found)} of {len(identities)}"
        figures[name] = statistics.median(seconds)
        print(f"{name}: {figures[name]:.2f} s (median of {args.repeats}; runs {[round(s, 2) for s in seconds]})",
              flush=True)
    before, after = figures.values()
    print(f"the driver's query of which trials are finished: {before / after:.0f}x faster with {args.runs} runs of "
          f"other sweeps in the store ({len(identities)} grid points of its own); the driver makes it twice per run",
          flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": args.runs, "grid_points": len(identities),
                                              "seconds": figures, "ratio": before / after}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
