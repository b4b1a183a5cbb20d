"""Which patches a trial trains on: a pure function of (dataset, fraction, seed).

The paper compares S, S+C and S+C* on the *same* s% of segmentation patches
(paper 3.3), and curves over s only make sense if a larger s adds patches to a
smaller one. So each seed fixes one stratified order of the patches and every
trial takes a prefix of it: the three modes share their segmentation patches,
subsets are nested across s, and nothing depends on trial order or machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segclass.config import TrainConfig

#: Separate random streams so segmentation and classification orders are independent.
_SEG_STREAM, _CLS_STREAM, _HOLDOUT_STREAM = 0, 1, 2


def subset_size(fraction: float, total: int) -> int:
    """k = floor(fraction x total) (Fig. 5 caption: 1% of 615 -> 6), robust to float noise."""
    return int(math.floor(round(fraction * total, 6)))


def stratified_order(strata: np.ndarray, seed: int, stream: int = 0) -> np.ndarray:
    """A seeded permutation in which every prefix holds the classes in proportion.

    Each class is shuffled on its own; the i-th of n patches of a class gets the
    key (i + u) / n with u uniform in [0, 1), and patches are sorted by key, so
    classes interleave evenly while the order stays random.
    """
    strata = np.asarray(strata)
    rng = np.random.default_rng([seed, stream])
    keys = np.empty(len(strata), dtype=np.float64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        shuffled = rng.permutation(members)
        keys[shuffled] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
    return np.argsort(keys, kind="stable")


@dataclass(frozen=True)
class TrialPatches:
    """Indices into the dataset's training arrays for one trial."""

    seg: np.ndarray  # segmentation patches trained on
    cls: np.ndarray  # classification patches trained on
    cls_holdout: np.ndarray  # classification patches held out (classification study), else empty
    cls_pool: int  # classification patches available for training (all, or the non-held-out half)


def patch_fractions(mode: str, seg_fraction: float, cls_fraction: float) -> tuple[float, float]:
    """(fraction of segmentation patches, fraction of all classification patches) of a mode.

    Segmentation study (paper 3.3): S = (s, 0), S+C = (s, 1 - s), S+C* = (s, 1).
    Classification study: S2+C2 = (1 - 2c, c), S2+C2* = (1 - 2c, 0.5), S2*+C2 = (1, c).
    Counts are taken by `patch_counts`, which rounds the way the Fig. 5 caption does.
    """
    s, c = seg_fraction, cls_fraction
    table = {
        "S": (s, 0.0),
        "S+C": (s, 1.0 - s),
        "S+C*": (s, 1.0),
        "S2+C2": (1.0 - 2 * c, c),
        "S2+C2*": (1.0 - 2 * c, 0.5),
        "S2*+C2": (1.0, c),
    }
    return table[mode]


def patch_counts(mode: str, seg_fraction: float, cls_fraction: float, seg_total: int, cls_total: int) -> tuple[int, int]:
    """(segmentation patches, classification patches) a trial of `mode` trains on.

    Every count is floor(fraction x total), except S+C's classification count:
    the patches its s% of segmentation patches "replace" are floor(s x N), so
    it keeps N - floor(s x N), as the Fig. 5 caption counts (Gleason2019 at
    s = 1%: 1774 - 17 = 1757, where floor(0.99 x 1774) would give 1756).
    """
    seg, cls = patch_fractions(mode, seg_fraction, cls_fraction)
    if mode == "S+C":
        return subset_size(seg, seg_total), cls_total - subset_size(seg_fraction, cls_total)
    return subset_size(seg, seg_total), subset_size(cls, cls_total)


def trial_counts(config: TrainConfig, seg_total: int, cls_total: int) -> tuple[int, int, int]:
    """(segmentation patches, classification patches, classification pool) of a trial, without choosing them.

    The sizes `select_trial_patches` gives, from the dataset's counts alone:
    a sweep prices all its grid points before it starts, and drawing every
    point's subsets for that took seconds on large datasets.
    """
    pool = cls_total // 2 if config.study == "classification" else cls_total
    seg, cls = patch_counts(config.mode, config.seg_fraction, config.cls_fraction, seg_total, cls_total)
    return seg, min(pool, cls), pool


def select_trial_patches(config: TrainConfig, seg_strata: np.ndarray, cls_labels: np.ndarray) -> TrialPatches:
    """Segmentation and classification patch indices of the trial `config` describes."""
    total_cls = len(cls_labels)
    seg_count, cls_count = patch_counts(config.mode, config.seg_fraction, config.cls_fraction, len(seg_strata),
                                        total_cls)
    seg_order = stratified_order(seg_strata, config.seed, _SEG_STREAM)
    seg = np.sort(seg_order[:seg_count])

    holdout = np.empty(0, dtype=np.int64)
    pool = np.arange(total_cls)
    if config.study == "classification":
        # one fixed held-out half for every trial of the dataset, whatever the seed
        holdout_order = stratified_order(cls_labels, config.holdout_seed, _HOLDOUT_STREAM)
        holdout = np.sort(holdout_order[: total_cls - total_cls // 2])
        pool = np.sort(holdout_order[total_cls - total_cls // 2 :])
    cls_order = pool[stratified_order(cls_labels[pool], config.seed, _CLS_STREAM)]
    cls = np.sort(cls_order[: min(len(pool), cls_count)])
    return TrialPatches(seg=seg, cls=cls, cls_holdout=holdout, cls_pool=len(pool))
