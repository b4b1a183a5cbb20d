"""Chaos: SIGKILL a sweep's driver and its Ray at random moments, resume each time, then audit MLflow.

    python benchmarks/chaos.py --kills 20                  # the README figure (~10 min on 2 cores)
    python benchmarks/chaos.py --kills 2 --per-stage 1 --after-progress   # CI's short version
    python benchmarks/chaos.py --kills 6 --checkpoint-every 2             # MLflow ahead of the checkpoint

The sweep is the `smoke` grid (S, S+C at s = 25, 100%) on a tiny synthetic
dataset, started through `benchmarks/hooked_sweep.py` so every trial appends
each epoch it trains to a ledger. Stage k runs seeds 1..k; after `--per-stage`
kills (or a clean finish) the next run grows the sweep by one seed (`--grow`),
so later kills land during growth. Each kill is a SIGKILL to the driver's whole
session: the driver, the Ray it started, and its workers, with no cleanup.
Each kill comes, with probability 1/2, at a uniformly random time 1 s to
`--max-wait` after the driver started, else a random 0-6 s after its first
newly trained epoch (`--after-progress`: always the latter).

At the end the audit checks, on the final grid:
- every grid point has exactly one FINISHED MLflow run of its identity;
- each run's per-epoch history is epochs 1..E, each logged once;
- no epoch was trained twice after its checkpoint existed (ledger), so no
  finished trial was retrained and no history was spliced from a second
  training; epochs trained are compared with the minimum (points x E).
  With `--checkpoint-every N` > 1 an epoch between checkpoints is lost by a
  kill and trained again, while MLflow already holds it: that run is
  superseded (KILLED) and a new run gets the whole history, which the
  per-run history check then audits;
- how many trials continued from a checkpoint (start_epoch > 0 in Tune's logs).
Exit status 1 if any check fails. The summary is printed as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segclass.cli_help import HelpFormatter  # noqa: E402


def session_pids(sid: int) -> list[int]:
    """Processes of one session (the driver started with start_new_session=True and all it spawned)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # after the name: state, ppid, pgrp, session
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"processes of session {sid} survived SIGKILL: {session_pids(sid)}")


def ledger_lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


def run_chaos(work: Path, data_root: Path, kills: int, per_stage: int, epochs: int, slow_epoch: float,
              max_wait: float, after_progress: bool, seed: int, checkpoint_every: int = 1) -> dict:
    rng = random.Random(seed)
    ledger = work / "ledger.txt"
    base = [sys.executable, str(ROOT / "benchmarks" / "hooked_sweep.py"), "--ledger", str(ledger),
            "--slow-epoch", str(slow_epoch), "--", "--preset", "smoke", "--data-root", str(data_root),
            "--results", str(work / "results"), "--storage", str(work / "tune"), "--name", "chaos",
            "--epochs", str(epochs), "--num-cpus", "2", "--checkpoint-every", str(checkpoint_every)]
    stage, done, in_growth, stage_kills, runs, log = 1, 0, 0, 0, 0, work / "drivers.log"
    started_all = time.time()
    while True:
        command = base + ["--seeds", *map(str, range(1, stage + 1))] + (["--grow"] if stage > 1 else [])
        with log.open("a") as out:
            out.write(f"\n=== run {runs + 1}: stage {stage} (seeds 1-{stage}), kills so far {done}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                       cwd=work)
        runs += 1
        if done >= kills:
            if process.wait() != 0:
                raise RuntimeError(f"the final run failed (exit {process.returncode}); see {log}")
            break
        trained_before, started = len(ledger_lines(ledger)), time.time()
        progress_kill = after_progress or rng.random() < 0.5
        deadline = None if progress_kill else started + rng.uniform(1.0, max_wait)
        while process.poll() is None:
            now = time.time()
            if deadline is None and len(ledger_lines(ledger)) > trained_before:
                deadline = now + rng.uniform(0.0, 6.0)
            if deadline is not None and now >= deadline:
                break
            time.sleep(0.1)
        if process.poll() is None:
            kill_session(process.pid)
            process.wait()
            done, stage_kills = done + 1, stage_kills + 1
            in_growth += stage > 1
            print(f"kill {done}/{kills}: stage {stage}, {time.time() - started:.1f} s after start "
                  f"({'after progress' if progress_kill else 'random time'}), "
                  f"{len(ledger_lines(ledger))} epochs trained so far", flush=True)
            if stage_kills >= per_stage and done < kills:
                stage, stage_kills = stage + 1, 0
        elif process.returncode == 0:
            print(f"stage {stage} finished without a kill; growing", flush=True)
            stage, stage_kills = stage + 1, 0
        else:
            raise RuntimeError(f"a driver run failed on its own (exit {process.returncode}); see {log}")
    summary = audit(work, stage, epochs, ledger, checkpoint_every)
    summary.update(kills=done, kills_during_growth=in_growth, driver_runs=runs, final_seeds=stage,
                   wall_seconds=round(time.time() - started_all, 1))
    return summary


def audit(work: Path, seeds: int, epochs: int, ledger: Path, checkpoint_every: int = 1) -> dict:
    from mlflow import MlflowClient

    from segclass.grid import customise, expand, get_preset
    from segclass.schema import IDENTITY_TAG, KEY_TAG, SUPERSEDED_TAG

    points = expand(customise(get_preset("smoke"), seeds=tuple(range(1, seeds + 1)), epochs=epochs))
    client = MlflowClient(f"sqlite:///{work / 'results' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("segclass-")]
    runs = client.search_runs(experiments, max_results=5000)
    finished = Counter(r.data.tags[KEY_TAG] for r in runs if r.info.status == "FINISHED")
    problems = []
    for point in points:
        if finished[point.key] != 1:
            problems.append(f"{point.key}: {finished[point.key]} finished runs")
    for run in runs:
        if run.info.status != "FINISHED":
            continue
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")]
        if steps != list(range(1, epochs + 1)):
            problems.append(f"{run.info.run_name}: history epochs {steps}")
    left_open = [r for r in runs if r.info.status in ("RUNNING", "SCHEDULED")]  # no driver runs any more
    problems += [f"{r.info.run_name}: left {r.info.status}" for r in left_open]
    trained = Counter(tuple(line.split(" ")[:2]) for line in ledger_lines(ledger))
    checkpointed = {e for e in range(1, epochs + 1) if e % checkpoint_every == 0 or e == epochs}
    twice = {k: n for k, n in trained.items() if n > 1 and int(k[1]) in checkpointed}  # others: lost by a kill
    summary_retrained = sum(n - 1 for k, n in trained.items() if n > 1 and int(k[1]) not in checkpointed)
    problems += [f"{key} epoch {epoch} trained {n} times" for (key, epoch), n in twice.items()]
    resumed = set()
    for result in (work / "tune" / "chaos").glob("tune-*/*/result.json"):
        for line in result.read_text().splitlines():
            row = json.loads(line)
            if row.get("start_epoch", 0) > 0:
                resumed.add((result.parent.parent.name, row["config"]["key"]))
    return {
        "grid_points": len(points), "finished_runs": sum(finished.values()),
        "identities": len({r.data.tags.get(IDENTITY_TAG) for r in runs}),
        "superseded_runs": sum(SUPERSEDED_TAG in r.data.tags for r in runs),
        "runs_left_open": len(left_open), "runs_killed": sum(r.info.status == "KILLED" for r in runs),
        "epochs_trained": sum(trained.values()), "epochs_minimum": len(points) * epochs,
        "epochs_retrained_between_checkpoints": summary_retrained,
        "trials_resumed_from_checkpoint": len(resumed), "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/chaos.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of the driver and its Ray")
    parser.add_argument("--per-stage", type=int, default=4, help="kills before the sweep is grown by one seed")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--slow-epoch", type=float, default=0.5, help="seconds each trial sleeps after an epoch")
    parser.add_argument("--max-wait", type=float, default=40.0,
                        help="random-time kills come 1 s to this many seconds after the driver starts")
    parser.add_argument("--after-progress", action="store_true",
                        help="every kill comes 0-6 s after the driver's first newly trained epoch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--checkpoint-every", type=int, default=1,
                        help="the sweep's --checkpoint-every; > 1 lets kills lose epochs MLflow already holds, so the "
                             "superseded-run path runs end to end")
    parser.add_argument("--work", default="results/chaos", help="folder for the data, stores and logs (emptied)")
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    args = parser.parse_args(argv)

    import shutil

    from segclass.synthetic import SyntheticConfig, generate

    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["SEGCLASS_DATA_CACHE"] = str(work / "cache")
    print("generating a tiny synthetic dataset ...", flush=True)
    data_root = generate(work / "data", SyntheticConfig(seed=3, slide_size=320, train_slides=2, val_slides=1,
                                                        test_slides=1, cls_patients=4, cls_per_class=8))
    summary = run_chaos(work, data_root, args.kills, args.per_stage, args.epochs, args.slow_epoch, args.max_wait,
                        args.after_progress, args.seed, args.checkpoint_every)
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print(f"{summary['kills']} kills ({summary['kills_during_growth']} during growth), {summary['driver_runs']} "
          f"driver runs, {summary['grid_points']} grid points: {summary['finished_runs']} finished runs, "
          f"{summary['trials_resumed_from_checkpoint']} trial starts continued from a checkpoint, "
          f"{summary['epochs_trained']} epochs trained of {summary['epochs_minimum']} minimum, "
          f"{len(summary['problems'])} problems")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
