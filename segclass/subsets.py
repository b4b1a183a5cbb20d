"""Which patches a trial trains on: a pure function of (dataset, fraction, seed).

The paper compares S, S+C and S+C* on the *same* s% of segmentation patches
(paper 3.3), and curves over s only make sense if a larger s adds patches to a
smaller one. So each seed fixes one stratified order of the patches and every
trial takes a prefix of it: the three modes share their segmentation patches,
subsets are nested across s, and nothing depends on trial order or machine.

The classification study holds half of the classification patches out for
its accuracy (Table 1 / D.4). It holds out whole source images (a slide, a
TMA core, a photo), never single patches, and in that study no patch of a
held-out image is trained on, of either kind: tiles of one image are
correlated, so a patch-level split would measure memory, not accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from segclass.config import TrainConfig
from segclass.errors import ConfigError

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
    cls_pool: int  # classification patches available for training (all, or those outside the held-out images)
    seg_pool: int = -1  # segmentation patches available (all, or those outside the held-out images); -1: all


@dataclass(frozen=True)
class Holdout:
    """The classification study's held-out images and what stays available for training."""

    cls_holdout: np.ndarray  # classification patches of the held-out images
    cls_pool: np.ndarray  # classification patches of the other images
    seg_pool: np.ndarray  # segmentation patches of images not held out
    sources: frozenset  # the held-out source images


def _group_majority(labels: np.ndarray, inverse: np.ndarray, groups: int) -> np.ndarray:
    """Each source image's most frequent class among its patches (ties: the lower id)."""
    counts = np.zeros((groups, int(labels.max(initial=0)) + 1), np.int64)
    np.add.at(counts, (inverse, labels), 1)
    return counts.argmax(1)


def holdout_split(cls_labels: np.ndarray, cls_sources: np.ndarray | None, seg_sources: np.ndarray | None,
                  seg_total: int, seed: int) -> Holdout:
    """About half of the classification patches held out, whole source images at a time.

    Source images are put in a seeded order stratified by each image's
    majority class, and taken until the held-out patches come closest to
    ceil(N / 2). When every patch is its own image (BACH's photos; also a
    cache without sources) this is the patch-level stratified half. Then a
    class found on one side only moves over with its smallest image, where
    another image of it stays behind. Segmentation patches cut from a
    held-out image leave the training pool too. Fewer than two source
    images cannot be split this way: a ConfigError says so.
    """
    cls_labels = np.asarray(cls_labels)
    total = len(cls_labels)
    target = total - total // 2
    named = cls_sources is not None and len(cls_sources) == total and all(str(s) for s in cls_sources)
    sources = np.asarray(cls_sources if named else np.arange(total)).astype(str)
    names, inverse, sizes = np.unique(sources, return_inverse=True, return_counts=True)
    if len(names) == total:  # one patch per image: the patch-level stratified half
        order = stratified_order(cls_labels, seed, _HOLDOUT_STREAM)
        held = np.zeros(total, bool)
        held[order[:target]] = True
    else:
        if len(names) < 2:
            raise ConfigError(f"the classification study holds out whole source images, but all {total} "
                              f"classification patches come from one image ({names[0]}); build the dataset with "
                              "more training images")
        group_order = stratified_order(_group_majority(cls_labels, inverse, len(names)), seed, _HOLDOUT_STREAM)
        reached = np.cumsum(sizes[group_order])
        cut = int(np.argmin(np.abs(reached - target))) + 1  # groups held out
        cut = min(max(cut, 1), len(names) - 1)  # both sides keep an image
        held_groups = np.zeros(len(names), bool)
        held_groups[group_order[:cut]] = True
        _cover_classes(cls_labels, inverse, sizes, held_groups)
        held = held_groups[inverse]
    held_sources = frozenset(np.unique(sources[held]).tolist()) if named else frozenset()
    seg_names = np.asarray(seg_sources if seg_sources is not None else np.full(seg_total, ""), dtype=str)
    seg_pool = np.flatnonzero(~np.isin(seg_names, list(held_sources))) if held_sources else np.arange(seg_total)
    return Holdout(np.flatnonzero(held), np.flatnonzero(~held), seg_pool, held_sources)


def _cover_classes(labels: np.ndarray, inverse: np.ndarray, sizes: np.ndarray, held: np.ndarray) -> None:
    """Move images across (in place) so each class with images on both sides to spare is on both sides."""
    for label in np.unique(labels):
        images = np.unique(inverse[labels == label])  # the images holding this class
        for side in (True, False):
            here = images[held[images] == side]
            if len(here) == 0 and len(images) >= 2:  # all on the other side: move its smallest image over
                donor = images[np.argmin(sizes[images])]
                if np.count_nonzero(held == held[donor]) > 1:  # the donor's side keeps an image
                    held[donor] = side


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


def trial_counts(config: TrainConfig, seg_total: int, cls_total: int, seg_pool: int | None = None,
                 cls_pool: int | None = None) -> tuple[int, int, int]:
    """(segmentation patches, classification patches, classification pool) of a trial, without choosing them.

    The sizes `select_trial_patches` gives, from the dataset's counts (and,
    in the classification study, the pools `holdout_split` leaves; without
    them, half of the classification patches and all segmentation patches,
    as when every patch is its own image): a sweep prices all its grid points
    before it starts, and drawing every point's subsets for that took seconds
    on large datasets.
    """
    classification = config.study == "classification"
    pool = (cls_total // 2 if cls_pool is None else cls_pool) if classification else cls_total
    seg_available = (seg_total if seg_pool is None else seg_pool) if classification else seg_total
    seg, cls = patch_counts(config.mode, config.seg_fraction, config.cls_fraction, seg_available, cls_total)
    return seg, min(pool, cls), pool


def select_trial_patches(config: TrainConfig, seg_strata: np.ndarray, cls_labels: np.ndarray,
                         cls_sources: np.ndarray | None = None, seg_sources: np.ndarray | None = None) -> TrialPatches:
    """Segmentation and classification patch indices of the trial `config` describes.

    `cls_sources` / `seg_sources` name each patch's source image; the
    classification study holds out whole images (`holdout_split`). Without
    them every patch is its own image.
    """
    total_cls = len(cls_labels)
    holdout = np.empty(0, dtype=np.int64)
    pool, seg_pool = np.arange(total_cls), np.arange(len(seg_strata))
    if config.study == "classification":
        # one fixed held-out set of images for every trial of the dataset, whatever the seed
        split = holdout_split(cls_labels, cls_sources, seg_sources, len(seg_strata), config.holdout_seed)
        holdout, pool, seg_pool = split.cls_holdout, split.cls_pool, split.seg_pool
    seg_count, cls_count = patch_counts(config.mode, config.seg_fraction, config.cls_fraction, len(seg_pool),
                                        total_cls)
    seg_order = seg_pool[stratified_order(np.asarray(seg_strata)[seg_pool], config.seed, _SEG_STREAM)]
    seg = np.sort(seg_order[:seg_count])
    cls_order = pool[stratified_order(cls_labels[pool], config.seed, _CLS_STREAM)]
    cls = np.sort(cls_order[: min(len(pool), cls_count)])
    return TrialPatches(seg=seg, cls=cls, cls_holdout=holdout, cls_pool=len(pool), seg_pool=len(seg_pool))
