"""Scale by simulation: thousands of near-empty trials through the real driver, callback, writer and MLflow store.

    python benchmarks/sweep_scale.py                       # 250, 500, 1,000, 2,000 points (docs/sweep.md table)
    python benchmarks/sweep_scale.py --sizes 100 --json out.json

Each size runs in a fresh process: `run_sweep` with the paper grid widened to
enough seeds, a tiny synthetic dataset, and a trial function that does almost
nothing (two epochs of a few made-up metrics, a one-file final folder) but
speaks the real trial's protocol, so Tune, the MLflow callback, the writer
thread, the SQLite store and the storage folder do their real work. Reported:
wall seconds per trial (the driver's scheduling and bookkeeping overhead, since
the trials themselves cost nothing), driver resident memory growth per trial,
and whether every grid point ended with one finished run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segclass.cli_help import HelpFormatter  # noqa: E402
POINTS_PER_SEED = 3 * 14 + 3 * 12  # the paper grid, both studies, per seed


def near_empty_trial(config, data=None, identities=None, pretrained_state=None, epoch_hook=None):
    """Two tiny epochs and a final folder, in the real trial's report protocol (see segclass/ray_sweep/trial.py)."""
    from ray import tune

    from segclass.ray_sweep.storage import Storage

    digest = identities[config["key"]]
    for epoch in (1, 2):
        tune.report({"epoch": float(epoch), "train_loss": 1.0 / epoch, "val_macro_f1": 0.1 * epoch,
                     "start_epoch": 0.0})
    store = Storage(config["sweep_storage"]).child("trials", digest)
    store.write_bytes("final/report.json", json.dumps({"test_macro_f1": 0.5, "class_names": ["a", "b"]}).encode())
    tune.report({"final": 1.0, "epoch": 2.0, "test_macro_f1": 0.5, "start_epoch": 0.0})


def _memory_kib() -> dict[str, int]:
    """Resident memory of this process, split: private (RssAnon), files, shared memory (the object store)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":")[0]
        if name in fields:
            out[fields[name]] = int(line.split()[1])
    return out


def one_size(points: int, work: Path, cpus: int) -> dict:
    """Run one grid in this process and measure it."""
    from segclass.grid import customise, expand, get_preset
    from segclass.synthetic import SyntheticConfig, generate
    from segclass.ray_sweep.driver import SweepOptions, run_sweep

    os.environ["SEGCLASS_DATA_CACHE"] = str(work / "cache")
    data_root = generate(work / "data", SyntheticConfig(seed=3, slide_size=320, train_slides=2, val_slides=1,
                                                        test_slides=1, cls_patients=4, cls_per_class=8))
    seeds = tuple(range(1, math.ceil(points / POINTS_PER_SEED) + 1))
    preset = customise(get_preset("paper"), dataset="synthetic", seeds=seeds, epochs=2)
    planned = len(expand(preset))
    options = SweepOptions(preset=preset, name="scale", data_root=str(data_root), storage=str(work / "tune"),
                           results=str(work / "results"), cpus_per_trial=0.25, num_cpus=cpus, max_failures=0)
    import ray

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cpus,
             log_to_driver=False)
    before = _memory_kib()
    started = time.perf_counter()
    summary = run_sweep(options, trainable=near_empty_trial)
    wall = time.perf_counter() - started
    after = _memory_kib()
    rss_before, rss_after = before["rss"], after["rss"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"points": planned, "finished": len(summary.ran), "failed": len(summary.failed),
            "tracking_errors": len(summary.tracking_errors), "wall_s": round(wall, 1),
            "ms_per_trial": round(1000 * wall / planned, 1),
            "rss_before_mib": round(rss_before / 1024, 1), "rss_after_mib": round(rss_after / 1024, 1),
            "peak_rss_mib": round(peak / 1024, 1), "kib_per_trial": round((rss_after - rss_before) / planned, 1),
            **{f"{k}_kib_per_trial": round((after[k] - before[k]) / planned, 1) for k in ("anon", "file", "shmem")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/sweep_scale.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[250, 500, 1000, 2000],
                        help="grid sizes to simulate (rounded up to whole seeds of the paper grid, 78 points each)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray offers (4 trial slots per CPU)")
    parser.add_argument("--work", default="results/scale", help="scratch folder (emptied)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one size here
    args = parser.parse_args(argv)
    import logging
    import shutil

    if args.one is not None:
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(one_size(args.one, Path(args.work), args.cpus)))
        return 0
    rows = []
    print(f"{'points':>7} {'finished':>8} {'wall s':>7} {'ms/trial':>9} {'driver RSS MiB':>15} {'KiB/trial':>10}")
    for size in args.sizes:
        work = Path(args.work).resolve() / str(size)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        result = subprocess.run([sys.executable, __file__, "--one", str(size), "--work", str(work), "--cpus",
                                 str(args.cpus)], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout[-3000:] + result.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['points']:>7} {row['finished']:>8} {row['wall_s']:>7} {row['ms_per_trial']:>9} "
              f"{row['rss_before_mib']:>6} -> {row['rss_after_mib']:<6} {row['kib_per_trial']:>10}", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["finished"] == r["points"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
