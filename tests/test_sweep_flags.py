"""A sweep's flags and connections are checked before anything is started or written: one line naming the flag."""

import time

import pytest

from segclass.errors import ConfigError
from segclass.grid import get_preset
from segclass.ray_sweep.driver import SweepOptions, check_tracking_uri, packing_warnings
from sweeps.full_grid import main


@pytest.mark.parametrize("flags, message", [
    (["--checkpoint-every", "0"], "--checkpoint-every 0: epochs between checkpoints, >= 1"),
    (["--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5: a share in [0, 1]"),
    (["--gpus-per-trial", "-0.5"], "--gpus-per-trial -0.5"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial 0.0: CPU cores per trial, > 0"),
    (["--max-failures", "-1"], "--max-failures -1"),
    (["--num-cpus", "0"], "--num-cpus 0"),
    (["--mlflow-uri", "http://127.0.0.1:9"], "--mlflow-uri http://127.0.0.1:9: no MLflow tracking server answers"),
    (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: nothing answers there"),
    # the data layer's message names this command's flag (`python -m segclass.data build` says --root)
    (["--dataset", "bach", "--data-root", "/nonexistent"],
     "/nonexistent does not exist; pass the bach files' folder as --data-root"),
])
def test_bad_flag_is_one_line_and_nothing_is_written(tmp_path, capsys, flags, message):
    code = main(["--preset", "smoke", "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune"),
                 *flags])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err
    assert not (tmp_path / "tune").exists()  # no sweep manifest, no lock


def test_a_store_that_cannot_be_opened_names_the_flag(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="--mlflow-uri sqlite:///.*cannot use that MLflow store"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    assert time.monotonic() - started < 60


def test_packing_limited_by_cpus_is_said():
    node = {"Alive": True, "NodeManagerAddress": "10.0.0.5", "Resources": {"CPU": 4.0, "GPU": 1.0}}
    (line,) = packing_warnings(0.125, 1.0, [node])
    assert "10.0.0.5: 4 CPUs run 4 trials at once" in line and "would pack 8" in line
    assert "--cpus-per-trial 0.5" in line
    assert packing_warnings(0.125, 0.5, [node]) == [] and packing_warnings(0.0, 1.0, [node]) == []
    options = SweepOptions(preset=get_preset("smoke"), gpus_per_trial=0.25, cpus_per_trial=1.0)
    options.validate()  # fine as given


def test_private_ray_sizes_with_an_address_are_said_to_be_ignored(tmp_path, capsys):
    code = main(["--preset", "smoke", "--results", str(tmp_path / "results"), "--storage", str(tmp_path / "tune"),
                 "--address", "127.0.0.1:9", "--num-cpus", "2"])
    captured = capsys.readouterr()
    assert "--num-cpus/--num-gpus are ignored with --address" in captured.out
    assert code == 2 and "--address 127.0.0.1:9: nothing answers there" in captured.err
