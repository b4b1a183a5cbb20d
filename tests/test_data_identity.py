"""A trial's data identity is the built content, a classification study's held-out images are never trained on,
and the precision a trial computes in is one of its settings."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from segclass.compute import autocast, precision_scope, resolve_precision
from segclass.config import TrainConfig
from segclass.data.build import BuildParams, build_cache
from segclass.data.shards import read_cache, read_manifest, verify_cache
from segclass.subsets import holdout_split, select_trial_patches, stratified_order
from tests.dataset_fixtures import make_digestpath, make_gleason

RAW = BuildParams(stain_normalize=False, resize_long_side=256)


def _copy_with_new_mtimes(source, target):
    """What `cp -r` (no -p) or an upload to shared storage does: same bytes, new mtimes."""
    return shutil.copytree(source, target, copy_function=shutil.copy)


def test_identity_survives_copies_and_a_pixel_changes_it(tiny_root, tiny_cache, tmp_path):
    original = read_manifest(tiny_cache)
    # the cache copied elsewhere: same identity, still verifies
    moved = shutil.copytree(tiny_cache, tmp_path / "elsewhere" / "cache")
    assert read_manifest(moved)["data_fingerprint"] == original["data_fingerprint"] and verify_cache(moved) == []
    # the sources copied elsewhere (new paths and mtimes): the cache is rebuilt, to the same identity
    copied = _copy_with_new_mtimes(tiny_root, tmp_path / "shared" / "tiny")
    rebuilt = read_manifest(build_cache("synthetic", copied, tmp_path / "rebuilt"))
    assert rebuilt["source_fingerprint"] != original["source_fingerprint"]  # it did rebuild
    assert rebuilt["data_fingerprint"] == original["data_fingerprint"]
    assert [f["sha256"] for f in rebuilt["files"]] == [f["sha256"] for f in original["files"]]
    # one pixel of one classification patch changed: another identity
    patch = sorted((copied / "cls").rglob("*.png"))[0]
    pixels = np.asarray(Image.open(patch).convert("RGB")).copy()
    pixels[5, 5] = 255 - pixels[5, 5]
    Image.fromarray(pixels).save(patch)
    changed = read_manifest(build_cache("synthetic", copied, tmp_path / "rebuilt"))
    assert changed["data_fingerprint"] != original["data_fingerprint"]


def test_build_settings_are_part_of_the_identity(tmp_path):
    root = make_gleason(tmp_path / "Gleason2019")
    first = read_manifest(build_cache("gleason2019", root, tmp_path / "a", RAW))["data_fingerprint"]
    other = read_manifest(build_cache("gleason2019", root, tmp_path / "b", BuildParams(
        stain_normalize=False, resize_long_side=256, split_seed=1)))["data_fingerprint"]
    assert first != other


@pytest.mark.parametrize("dataset, make", [("digestpath2019", make_digestpath), ("gleason2019", make_gleason)])
def test_classification_study_holds_out_whole_images(tmp_path, dataset, make):
    data = read_cache(build_cache(dataset, make(tmp_path / "source"), tmp_path / "cache", RAW))
    assert len(set(data.cls_sources.tolist())) < len(data.cls_labels)  # tiles: several patches per image
    split = holdout_split(data.cls_labels, data.cls_sources, data.seg_sources, len(data.seg_labels), 0)
    held = set(data.cls_sources[split.cls_holdout].tolist())
    assert held == split.sources and held
    assert not held & set(data.cls_sources[split.cls_pool].tolist())
    assert not held & set(data.seg_sources[split.seg_pool].tolist())
    for mode, c in (("S2+C2", 0.5), ("S2+C2*", 0.25), ("S2*+C2", 0.5)):
        trial = select_trial_patches(TrainConfig(mode=mode, cls_fraction=c), data.seg_labels, data.cls_labels,
                                     data.cls_sources, data.seg_sources)
        trained = set(data.cls_sources[trial.cls].tolist()) | set(data.seg_sources[trial.seg].tolist())
        assert not trained & held, mode  # no held-out image trains, of either kind
        assert np.array_equal(trial.cls_holdout, split.cls_holdout)


def test_one_patch_per_image_keeps_the_patch_level_half():
    labels = np.repeat(np.arange(4), 25)
    split = holdout_split(labels, np.array([f"photo{i}" for i in range(100)]), None, 10, 0)
    order = stratified_order(labels, 0, 2)
    assert np.array_equal(split.cls_holdout, np.sort(order[:50]))
    assert len(split.seg_pool) == 10


def test_precision_is_resolved_and_applied():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    layer = torch.nn.Linear(4, 4)
    with autocast("cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    with precision_scope("bf16"), autocast("cpu"):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_held_out_images_leave_every_class_on_both_sides():
    # class 2 lives in two small images only; a majority-class order alone could hold both out
    labels = np.array([0] * 10 + [1] * 10 + [0] * 10 + [1] * 10 + [2] * 2 + [2] * 2)
    sources = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + ["e"] * 2 + ["f"] * 2)
    for seed in range(8):
        split = holdout_split(labels, sources, None, 0, seed)
        for side in (split.cls_holdout, split.cls_pool):
            assert set(labels[side]) == {0, 1, 2}, seed


def test_one_source_image_cannot_be_held_out_by_image():
    from segclass.errors import ConfigError

    with pytest.raises(ConfigError, match="all 4 classification patches come from one image"):
        holdout_split(np.array([0, 1, 0, 1]), np.array(["core1"] * 4), None, 0, 0)
    blank = holdout_split(np.array([0, 1, 0, 1]), np.array([""] * 4), np.array(["x", "y"]), 2, 0)
    assert len(blank.cls_holdout) == 2 and len(blank.seg_pool) == 2  # no sources recorded: one image per patch


def test_palette_label_map_reads_as_its_indices(tmp_path):
    from segclass.data.reading import read_label_values

    values = np.array([[0, 1], [3, 6]], np.uint8)
    image = Image.fromarray(values, mode="L").convert("P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9] + [0] * (768 - 21))
    image.save(tmp_path / "map.png")
    assert np.array_equal(read_label_values(tmp_path / "map.png"), values)
