import numpy as np
import pytest

from segclass.config import TrainConfig
from segclass.subsets import patch_fractions, select_trial_patches, stratified_order, subset_size


def test_counts_follow_fig5_caption():
    seg = [subset_size(s / 100, 615) for s in (0, 1, 2.5, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100)]
    assert seg == [0, 6, 15, 30, 46, 61, 92, 123, 153, 184, 246, 307, 461, 615]
    cls = [subset_size(1 - s / 100, 400) for s in (0, 1, 2.5, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100)]
    assert cls == [400, 396, 390, 380, 370, 360, 340, 320, 300, 280, 240, 200, 100, 0]


def test_order_is_a_stratified_permutation():
    strata = np.repeat([0, 1, 2], [60, 30, 10])
    order = stratified_order(strata, seed=4)
    assert sorted(order) == list(range(100))
    first_ten = np.bincount(strata[order[:10]], minlength=3)
    assert first_ten.tolist() == [6, 3, 1]
    assert not np.array_equal(order, stratified_order(strata, seed=5))
    assert np.array_equal(order, stratified_order(strata, seed=4))


def _trial(mode, s, seed=1, c=0.0):
    seg_labels = np.repeat([1, 2, 3], [50, 30, 20])
    cls_labels = np.repeat([0, 1, 2, 3], 100)
    return select_trial_patches(TrainConfig(mode=mode, seg_fraction=s, cls_fraction=c, seed=seed), seg_labels, cls_labels)


def test_modes_share_segmentation_patches():
    trials = [_trial(mode, 0.1) for mode in ("S", "S+C", "S+C*")]
    assert all(np.array_equal(trials[0].seg, t.seg) for t in trials)
    assert [len(t.cls) for t in trials] == [0, 360, 400]


def test_subsets_are_nested_across_fractions():
    previous = set()
    for s in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
        current = set(_trial("S", s).seg.tolist())
        assert previous <= current
        previous = current
    assert len(previous) == 100


def test_selection_depends_on_seed_only():
    assert not np.array_equal(_trial("S", 0.2, seed=1).seg, _trial("S", 0.2, seed=2).seg)
    assert np.array_equal(_trial("S", 0.2, seed=2).seg, _trial("S+C*", 0.2, seed=2).seg)


@pytest.mark.parametrize("mode,expected", [("S2+C2", (0.8, 0.1)), ("S2+C2*", (0.8, 0.5)), ("S2*+C2", (1.0, 0.1))])
def test_classification_study_fractions(mode, expected):
    assert patch_fractions(mode, 0.0, 0.1) == pytest.approx(expected)


def test_classification_study_holds_out_half_fixed_across_seeds():
    a, b = _trial("S2+C2", 0.0, seed=1, c=0.5), _trial("S2*+C2", 0.0, seed=2, c=0.25)
    assert np.array_equal(a.cls_holdout, b.cls_holdout)
    assert len(a.cls_holdout) == 200 and a.cls_pool == 200
    assert not set(a.cls) & set(a.cls_holdout)
    assert len(a.cls) == 200 and len(b.cls) == 100
    assert np.bincount(np.repeat([0, 1, 2, 3], 100)[a.cls_holdout]).tolist() == [50, 50, 50, 50]
