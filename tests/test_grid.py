import pytest

from segclass.config import TrainConfig
from segclass.errors import ConfigError
from segclass.grid import PRESETS, GridPoint, customise, expand, get_preset, percent


def test_paper_preset_is_the_full_grid():
    points = PRESETS["paper"].points()
    seg = [p for p in points if p.study == "segmentation"]
    cls = [p for p in points if p.study == "classification"]
    assert len(seg) == 3 * 14 * 5 and len(cls) == 3 * 12 * 5
    assert {p.mode for p in cls} == {"S2+C2", "S2+C2*", "S2*+C2"}
    assert {percent(p.swept_fraction) for p in seg} >= {"0", "1", "2.5", "7.5", "100"}
    assert PRESETS["paper"].epochs == 100 and {p.variant for p in points} == {"paper"}


def test_quick_preset_compares_every_mode_and_heads_at_equal_steps_with_s_at_100_as_reference():
    points = PRESETS["quick"].points()
    arms = {(p.mode, p.swept_fraction, p.variant) for p in points}
    assert arms == {("S", 0.05, "paper"), ("S", 1.0, "paper"), ("S+C", 0.05, "paper"), ("S+C*", 0.05, "paper"),
                    ("S+C", 0.05, "mean-softmax")}
    assert {p.budget for p in points} == {"equal"}  # the same optimizer steps for every trial
    assert {p.seed for p in points} == {1, 2} and len(points) == 10 == len(set(points))
    assert PRESETS["quick"].epochs >= 12  # S at 100% within 4.2 points of a run four times longer (docs/benchmarks.md)


def test_keys_and_names_round_trip():
    point = GridPoint("segmentation", "bach", "S+C", 0.025, 2, "released-code", "equal")
    assert point.key == "segmentation|bach|S+C|s=2.5|seed=2|released-code|equal"
    assert GridPoint.from_key(point.key) == point
    assert point.run_name == "S+C s=2.5 seed=2 variant=released-code budget=equal"
    assert GridPoint("segmentation", "bach", "S", 0.05, 1).run_name == "S s=5 seed=1"
    cls_point = GridPoint("classification", "bach", "S2+C2", 0.1, 3)
    assert cls_point.run_name == "S2+C2 c=10 seed=3"
    config = cls_point.train_config(epochs=2)
    assert isinstance(config, TrainConfig) and config.cls_fraction == 0.1 and config.seg_fraction == 0.0


def test_customise_and_unknown_preset():
    smoke = customise(get_preset("smoke"), seeds=(1, 2, 3), seg_fractions=None)
    assert {p.seed for p in expand(smoke)} == {1, 2, 3}
    assert smoke.seg_fractions == get_preset("smoke").seg_fractions
    with pytest.raises(ConfigError, match="choose one of paper, quick, smoke"):
        get_preset("huge")


def test_sweep_cli_help_explains_every_flag():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "sweeps" / "full_grid.py"
    text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--address", "--dataset", "--data-root", "--preset", "--study", "--modes", "--fractions", "--seeds",
                 "--variants", "--budgets", "--epochs", "--gpus-per-trial", "--cpus-per-trial", "--storage",
                 "--mlflow-uri", "--name", "--resume", "--grow", "--keep-trial-files", "--max-failures",
                 "--checkpoint-every", "--pretrained"):
        assert flag in text
    assert "quick" in text and "smoke" in text


def test_analysis_and_data_cli_help():
    import subprocess
    import sys

    for module in (["-m", "segclass.data", "build", "--help"], ["-m", "segclass.data", "--help"]):
        subprocess.run([sys.executable, *module], capture_output=True, text=True, check=True)


def test_preset_descriptions_name_their_true_trial_counts():
    import re

    for preset in PRESETS.values():  # --help shows these; a stale count misleads the first run
        for count in re.findall(r"(?:^|\()(\d+) trials\b", preset.description):
            assert int(count) == len(preset.points()), (preset.name, count)
