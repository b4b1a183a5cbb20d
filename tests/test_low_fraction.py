"""The low-fraction benchmark's choice of our variant: made on validation only, kept only if it wins on test."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def low_fraction():
    spec = importlib.util.spec_from_file_location("low_fraction", ROOT / "benchmarks" / "low_fraction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(module, name, val, test):
    """Trials of one dataset at s = 5%, seeds 1-2: `val`/`test` map a variant to its score (same for both seeds)."""
    trials = {}
    for seed in (1, 2):
        for variant in module.VARIANTS:
            label = f"S+C s=0.05 {variant}"
            trials[f"{label} seed={seed}"] = {"label": label, "seed": seed, "val_macro_f1": val.get(variant, 0.3),
                                              "test_macro_f1": test.get(variant, 0.3), "n_seg_patches": 8,
                                              "n_cls_patches": 380}
        for budget in ("equal", "equal-images"):
            for s, score in ((0.05, 0.4), (1.0, 0.8)):
                label = module.s_label(s, budget)
                trials[f"{label} seed={seed}"] = {"label": label, "seed": seed, "test_macro_f1": score}
    return module.Results(name, trials)


def test_the_candidate_is_chosen_on_validation_and_kept_only_if_it_wins_on_test(low_fraction):
    args = argparse.Namespace(fractions=[0.05], variants=list(low_fraction.VARIANTS), seeds=[1, 2], epochs=4,
                              image_control=True)
    # label-set leads on validation everywhere, pseudo-mask on test: the choice follows validation
    datasets = [_results(low_fraction, name, {"label-set": 0.6, "pseudo-mask": 0.5, "mean-softmax": 0.55},
                         {"label-set": 0.62, "pseudo-mask": 0.9, "mean-softmax": 0.60}) for name in low_fraction.DATASETS]
    chosen, lines = low_fraction.choose_candidate(datasets, args)
    assert chosen == "label-set" and "Chosen candidate: label-set" in lines
    assert "kept as our variant" in low_fraction.verdict(chosen, datasets, args)  # +0.02 over mean-softmax on test
    losing = [_results(low_fraction, name, {"label-set": 0.6}, {"label-set": 0.58, "mean-softmax": 0.60})
              for name in low_fraction.DATASETS]
    assert "not kept: mean-softmax stays" in low_fraction.verdict("label-set", losing, args)
    assert "no verdict yet" in low_fraction.verdict("label-set", losing[:2], args)
    tables = low_fraction.dataset_tables(datasets[0], args)
    assert "| S (equal) | 50% (50% - 50%) | 50% (50% - 50%) |" in tables
    assert "| S+C pseudo-mask | 112% (112% - 112%) |" in tables
