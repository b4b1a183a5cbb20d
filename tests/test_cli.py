import json
import subprocess
import sys

import pytest

from segclass.train import build_parser


def test_help_explains_every_flag():
    parser = build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    text = subprocess.run([sys.executable, "-m", "segclass.train", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--mode", "--seg-fraction", "--variant", "--budget", "--pretrained", "--metrics-out"):
        assert flag in text


@pytest.mark.slow
def test_one_trial_end_to_end(tiny_root, tmp_path):
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [sys.executable, "-m", "segclass.train", "--dataset", "synthetic", "--data-root", str(tiny_root),
         "--mode", "S+C", "--seg-fraction", "0.5", "--seed", "1", "--epochs", "1", "--batch-size", "4",
         "--budget", "equal", "--variant", "released-code", "--metrics-out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert json.loads(out.read_text()) == printed
    assert printed["variant"] == "released-code" and printed["budget"] == "equal"
    assert "epoch 1/1" in result.stderr and "RANDOM" in result.stderr and "init=none (random init)" in result.stderr
    assert printed["pretrained"] == "none (random init)" and printed["pretrained_sha256"] == ""


def test_bad_input_exits_with_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "segclass.train", "--dataset", "folder", "--data-root", str(tmp_path / "none")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "none" in result.stderr and "does not exist" in result.stderr
