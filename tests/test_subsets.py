import numpy as np
import pytest

from segclass.config import TrainConfig
from segclass.subsets import patch_counts, patch_fractions, select_trial_patches, stratified_order


S_VALUES = (0, 1, 2.5, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 75, 100)
#: Fig. 5 caption, every count: (segmentation patches N_seg, classification patches N_cls) -> per s value
#: (segmentation-level count, patch-level count in S+C).
FIG5_CAPTION = {
    "BACH": ((615, 400),
             [0, 6, 15, 30, 46, 61, 92, 123, 153, 184, 246, 307, 461, 615],
             [400, 396, 390, 380, 370, 360, 340, 320, 300, 280, 240, 200, 100, 0]),
    "Gleason2019": ((1274, 1774),
                    [0, 12, 31, 63, 95, 127, 191, 254, 318, 382, 509, 637, 955, 1274],
                    [1774, 1757, 1730, 1686, 1641, 1597, 1508, 1420, 1331, 1242, 1065, 887, 444, 0]),
    "DigestPath2019": ((1630, 1764),
                       [0, 16, 40, 81, 122, 163, 244, 326, 407, 489, 652, 815, 1222, 1630],
                       [1764, 1747, 1720, 1676, 1632, 1588, 1500, 1412, 1323, 1235, 1059, 882, 441, 0]),
}


@pytest.mark.parametrize("dataset", FIG5_CAPTION)
def test_counts_follow_fig5_caption(dataset):
    (n_seg, n_cls), seg_counts, cls_counts = FIG5_CAPTION[dataset]
    assert [patch_counts("S+C", s / 100, 0.0, n_seg, n_cls) for s in S_VALUES] == list(zip(seg_counts, cls_counts))
    assert [patch_counts("S", s / 100, 0.0, n_seg, n_cls) for s in S_VALUES] == [(k, 0) for k in seg_counts]
    assert [patch_counts("S+C*", s / 100, 0.0, n_seg, n_cls) for s in S_VALUES] == [(k, n_cls) for k in seg_counts]


def test_trial_patches_have_the_caption_counts():
    (n_seg, n_cls), seg_counts, cls_counts = FIG5_CAPTION["Gleason2019"]
    seg_labels, cls_labels = np.arange(n_seg) % 4, np.arange(n_cls) % 4
    for s, seg_count, cls_count in zip(S_VALUES, seg_counts, cls_counts):
        trial = select_trial_patches(TrainConfig(mode="S+C", seg_fraction=s / 100), seg_labels, cls_labels)
        assert (len(trial.seg), len(trial.cls)) == (seg_count, cls_count)


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
