"""Ray cluster behaviour: two raylets on loopback, a raylet dying mid-sweep, a tracking server, packing.

The cluster is started with `ray start --block`, each node in a session of its
own, and torn down by killing exactly those sessions: the tests never touch any
other Ray of the user (no `ray stop`).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segclass.grid import customise, expand, get_preset
from segclass.schema import KEY_TAG
from tests.test_sweep import ROOT, _command, _runs, _sweep, _tune_results

sys.path.insert(0, str(ROOT / "benchmarks"))
from chaos import kill_session, session_pids  # noqa: E402

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
SMOKE = expand(customise(get_preset("smoke"), seeds=(1,)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(tmp_path: Path, name: str) -> list[dict]:
    return [r for f in (tmp_path / "results" / "tune" / name).glob("tune-*/*/result.json") for r in _tune_results(f)]


def _finals(tmp_path: Path, name: str) -> list[dict]:
    return [r for r in _rows(tmp_path, name) if r.get("final")]


def _start_in_session(command: list[str], log: Path, ready: str, env: dict, timeout: float = 120) -> int:
    """Start a blocking server in a new session; wait until its log shows `ready`. Returns the session id."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + timeout
    while ready not in log.read_text():
        if process.poll() is not None or time.time() > deadline:
            kill_session(process.pid)
            raise AssertionError(f"{command[:3]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return process.pid


@pytest.fixture
def two_raylets(tmp_path):
    """A head raylet and a worker raylet on 127.0.0.1, one CPU each; yields (address, worker port, node ids)."""
    port, worker_port = _free_port(), _free_port()
    # Ray 2.60 uses token authentication; the test's own token (not ~/.ray/auth_token, which a fresh
    # machine lacks) reaches every process through the environment
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats", "--block"]
    sessions = []
    try:
        sessions.append(_start_in_session([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                           *common], tmp_path / "head.log", "Ray runtime started", env))
        sessions.append(_start_in_session([RAY, "start", f"--address=127.0.0.1:{port}",
                                           f"--node-manager-port={worker_port}", *common], tmp_path / "worker.log",
                                          "Ray runtime started", env))
        nodes = json.loads(subprocess.run(
            [sys.executable, "-c", "import json, ray; ray.init(address=%r, log_to_driver=False); "
             "print(json.dumps({n['NodeManagerPort']: n['NodeID'] for n in ray.nodes() if n['Alive']}))"
             % f"127.0.0.1:{port}"], capture_output=True, text=True, env=env, timeout=120, check=True
        ).stdout.strip().splitlines()[-1])
        yield f"127.0.0.1:{port}", worker_port, {int(k): v for k, v in nodes.items()}
    finally:
        for session in sessions:
            kill_session(session)
        os.environ.pop("RAY_AUTH_MODE", None)
        os.environ.pop("RAY_AUTH_TOKEN", None)
    assert not any(session_pids(s) for s in sessions)


def _tracking_server(tmp_path: Path) -> tuple[str, int]:
    port = _free_port()
    command = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    session = _start_in_session(command, tmp_path / "mlflow-server.log", "Uvicorn running on", dict(os.environ))
    return f"http://127.0.0.1:{port}", session


def test_two_sweeps_at_once_on_a_cluster_with_a_tracking_server(tmp_path, tiny_root, two_raylets):
    """Two sweeps share the cluster and one MLflow tracking server; then a private sweep stays private."""
    address, _, nodes = two_raylets
    uri, server = _tracking_server(tmp_path)
    try:
        sweeps = {"first": ("--modes", "S"), "second": ("--modes", "S+C")}
        processes = {name: subprocess.Popen(_command(tmp_path, tiny_root, *flags, "--address", address,
                                                     "--mlflow-uri", uri, name=name),
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
                     for name, flags in sweeps.items()}
        for name, process in processes.items():
            output, _ = process.communicate(timeout=900)
            assert process.returncode == 0, output[-4000:]
        client, runs = _runs(tmp_path, uri)
        assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in SMOKE)  # nothing lost
        assert all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1]
            assert "report.json" in {a.path for a in client.list_artifacts(run.info.run_id)}  # served by the server
            assert run.outputs.model_outputs and run.inputs.dataset_inputs
        assert any((tmp_path / "server-artifacts").rglob("MLmodel"))  # the models, stored by the server
        finals = _finals(tmp_path, "first") + _finals(tmp_path, "second")
        assert {r["node_id"] for r in finals} <= set(nodes.values())
        assert len({r["node_id"] for r in finals}) == 2, "trials ran on one raylet only"

        # with the cluster still up, a sweep without --address starts a Ray of its own
        _sweep(tmp_path, tiny_root, "--modes", "S", "--fractions", "100", "--mlflow-uri", uri, name="private")
        assert not {r["node_id"] for r in _finals(tmp_path, "private")} & set(nodes.values())
    finally:
        kill_session(server)


def test_two_sweeps_of_the_same_identities_at_once_train_each_once(tmp_path, tiny_root):
    """Both find every identity free at start; their claims decide, so each identity is trained by one of them."""
    uri, server = _tracking_server(tmp_path)
    ledger = tmp_path / "ledger.txt"  # every epoch any trial of either sweep trains
    try:
        start = time.time() + 8  # both processes past their imports: their surveys and claims meet
        at_start = ("import runpy, sys, time; time.sleep(float(sys.argv[1]) - time.time()); sys.argv = sys.argv[2:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")
        processes = {name: subprocess.Popen(
            [sys.executable, "-c", at_start, str(start),
             *_command(tmp_path, tiny_root, "--mlflow-uri", uri, "--num-cpus", "1", name=name,
                       hooks=("--ledger", str(ledger)))[1:]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path) for name in ("ours", "theirs")}
        outputs = {}
        for name, process in processes.items():
            outputs[name], _ = process.communicate(timeout=900)
            assert process.returncode == 0, outputs[name][-4000:]
        client, runs = _runs(tmp_path, uri)
        assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in SMOKE)  # one run per identity
        assert all(r.info.status == "FINISHED" for r in runs)
        for run in runs:  # one training per run: each epoch once in its history
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1]
        trained = [tuple(line.split(" ")[:2]) for line in ledger.read_text().splitlines()]
        assert sorted(trained) == sorted((p.key, "1") for p in SMOKE), "an identity was trained twice, or never"
        left = sum(output.count("is training this trial now") for output in outputs.values())
        assert left == len(SMOKE), outputs  # every trial one sweep ran, the other left with a line naming it
    finally:
        kill_session(server)


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


def _node_pids(raylets: list[int]) -> list[int]:
    """The raylets and every process below them (a node's workers), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], list(raylets)
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in found]
        found = children + found
        frontier = children
    return found + list(raylets)


def test_trial_on_a_dying_worker_is_retried_on_the_other_node(tmp_path, tiny_root, two_raylets):
    address, worker_port, nodes = two_raylets
    worker = nodes[worker_port]
    ledger = tmp_path / "ledger.txt"
    command = _command(tmp_path, tiny_root, "--address", address, "--epochs", "3", "--max-failures", "3",
                       name="lossy", hooks=("--slow-epoch", "1", "--ledger", str(ledger)))
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    unfinished: set[str] = set()
    while time.time() < deadline and not unfinished:  # a trial on the worker has trained its first epoch only:
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        trained = [fields for fields in map(str.split, lines) if len(fields) == 3]  # not a line being written
        unfinished = ({key for key, epoch, node in trained if node == worker and epoch == "1"}  # two slow epochs
                      - {key for key, epoch, _ in trained if epoch != "1"})                # (> 2 s) are ahead
        time.sleep(0.1)
    assert unfinished, "no trial ran on the worker"
    for pid in _node_pids(_raylet_pids(worker_port)):  # the node dies: its raylet and the workers it started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-4000:]
    client, runs = _runs(tmp_path)
    assert sorted(r.data.tags[KEY_TAG] for r in runs) == sorted(p.key for p in SMOKE)
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [1, 2, 3]
    finals = {r["config"]["key"]: r for r in _finals(tmp_path, "lossy")}
    retried = [key for key in unfinished if finals[key]["node_id"] != worker]
    assert retried, f"no trial that was running on the killed worker finished elsewhere: {unfinished}"
    trained = [tuple(line.split(" ")[:2]) for line in ledger.read_text().splitlines()]
    assert len(trained) == len(set(trained)), "an epoch was trained twice after its checkpoint"


def test_fractional_gpus_pack_four_trials_at_once(tmp_path, tiny_root):
    _sweep(tmp_path, tiny_root, "--num-gpus", "1", "--num-cpus", "4", "--gpus-per-trial", "0.25",
           "--epochs", "2", name="packed", hooks=("--slow-epoch", "1"))
    finals = _finals(tmp_path, "packed")
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

    from segclass.ray_sweep.memory import measure_sharing

    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=4, log_to_driver=False)
    try:
        report = measure_sharing(tiny_data, tasks=4)
    finally:
        ray.shutdown()
    size = report.dataset_bytes
    assert max(report.shared_anonymous_growth) < 0.25 * size, report
    assert min(report.copied_anonymous_growth) > 0.8 * size, report  # the baseline really copies
