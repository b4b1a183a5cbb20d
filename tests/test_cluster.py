"""Ray cluster behaviour: two raylets on loopback, a raylet dying mid-sweep, fractional GPUs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segclass.grid import customise, expand, get_preset
from segclass.sweep.tracking import KEY_TAG
from tests.test_sweep import ROOT, _runs, _sweep, _tune_results

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _final_results(experiment: Path) -> list[dict]:
    return [r for f in experiment.glob("*/result.json") for r in _tune_results(f) if r.get("final")]


@pytest.fixture
def two_raylets(tmp_path):
    """A head raylet and a worker raylet on 127.0.0.1, one CPU each."""
    port, worker_port = _free_port(), _free_port()
    # Ray 2.5x+ turns on token authentication for `ray start --head`; every joining process must say so too
    os.environ["RAY_AUTH_MODE"] = "token"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                   check=True, capture_output=True, env=env, timeout=120)
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", f"--node-manager-port={worker_port}", *common],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        yield f"127.0.0.1:{port}", worker_port
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        os.environ.pop("RAY_AUTH_MODE", None)


def test_trials_spread_over_two_raylets(tmp_path, tiny_root, two_raylets):
    address, _ = two_raylets
    _sweep(tmp_path, tiny_root, "--address", address, name="spread")
    finals = _final_results(tmp_path / "tune" / "spread")
    assert len(finals) == len(expand(customise(get_preset("smoke"), seeds=(1,))))
    assert len({r["node_id"] for r in finals}) == 2, "trials ran on one raylet only"


def _raylet_pids(node_manager_port: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "raylet" in cmdline and f"--node_manager_port={node_manager_port}" in cmdline:
                pids.append(int(proc.name))
    return pids


def test_sweep_survives_a_worker_raylet_dying(tmp_path, tiny_root, two_raylets):
    address, worker_port = two_raylets
    command = [sys.executable, str(ROOT / "sweeps" / "full_grid.py"), "--preset", "smoke", "--data-root",
               str(tiny_root), "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune"),
               "--name", "lossy", "--epochs", "3", "--max-failures", "3", "--address", address]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "tune" / "lossy").glob("*/result.json")):
        time.sleep(1)
    time.sleep(3)  # both raylets are busy with a trial by now
    pids = _raylet_pids(worker_port)
    assert pids, "worker raylet not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-4000:]
    client, runs = _runs(tmp_path)
    planned = expand(customise(get_preset("smoke"), seeds=(1,)))
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in planned)
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1, 2, 3]


def test_fractional_gpus_pack_four_trials_at_once(tmp_path, tiny_root):
    _sweep(tmp_path, tiny_root, "--num-gpus", "1", "--num-cpus", "4", "--gpus-per-trial", "0.25",
           "--epochs", "2", name="packed", env={"SEGCLASS_SLOW_EPOCH_S": "1"})
    finals = _final_results(tmp_path / "tune" / "packed")
    assert len(finals) == 4 and {r["device"] for r in finals} == {"cpu"}
    # the largest number of trials running at one moment
    events = sorted([(r["trial_started"], 1) for r in finals] + [(r["trial_ended"], -1) for r in finals])
    running, peak = 0, 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak == 4, json.dumps([(r["trial_started"], r["trial_ended"]) for r in finals])


def test_dataset_is_held_once_by_concurrent_trials(tiny_data):
    import ray

    from segclass.sweep.memory import measure_sharing

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=4, log_to_driver=False)
    try:
        report = measure_sharing(tiny_data, tasks=4)
    finally:
        ray.shutdown()
    size = report.dataset_bytes
    assert max(report.shared_anonymous_growth) < 0.25 * size, report
    assert min(report.copied_anonymous_growth) > 0.8 * size, report  # the baseline really copies
