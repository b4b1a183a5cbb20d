"""Each adapter reads its dataset's real layout and builds shards whose counts the test knows."""

import numpy as np
import openslide
import pytest

from segclass.data.build import BuildParams, build_cache
from segclass.data.extract import split_by_image
from segclass.data.shards import read_cache, read_manifest
from tests.dataset_fixtures import (BACH_PHOTOS, DIGEST_NEGATIVE, DIGEST_POSITIVE, GLEASON_CORES, make_bach,
                                    make_digestpath, make_gleason)

NO_RESIZE = BuildParams(resize_long_side=256, stain_normalize=False)


@pytest.fixture(scope="module")
def bach_root(tmp_path_factory):
    return make_bach(tmp_path_factory.mktemp("BACH"))


def test_bach_fixture_is_a_real_aperio_slide(bach_root):
    with openslide.OpenSlide(str(bach_root / "WSI" / "A01.svs")) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.objective-power"]) == 5


def test_bach_builds_with_paper_split(bach_root, tmp_path):
    cache = build_cache("bach", bach_root, tmp_path / "cache", BuildParams())
    data = read_cache(cache)
    # training slides A01-A03: A01 has 3 regions in two Annotation elements, A02 two, A03 one
    assert sorted(data.seg_labels.tolist()) == [1, 1, 2, 2, 3, 3]
    assert sorted(set(data.seg_sources.tolist())) == ["A01", "A02", "A03"]
    assert [v.name for v in data.val] == ["A04"]  # the first other slide holding all four classes
    assert [t.name for t in data.test] == ["A05"]
    assert np.bincount(data.cls_labels).tolist() == list(BACH_PHOTOS.values())
    assert data.cls_images.shape[1:] == (128, 128, 3)
    assert data.val[0].rgb.shape == (256, 256, 3)  # 1024 px at 5x read at 1.25x
    assert set(np.unique(data.val[0].mask)) == {0, 1, 2, 3}
    manifest = read_manifest(cache)
    assert manifest["report"]["stain"]["attempts"] > 0


def test_bach_configured_split(bach_root, tmp_path):
    params = BuildParams(train_slides=("A04",), val_slides=("A01",), test_slides=("A02", "A03"), stain_normalize=False)
    data = read_cache(build_cache("bach", bach_root, tmp_path / "cache", params))
    assert sorted(data.seg_labels.tolist()) == [1, 2, 3]
    assert [t.name for t in data.test] == ["A02", "A03"]


def test_gleason_builds_tiles_and_skips_cores_without_maps(tmp_path):
    root = make_gleason(tmp_path / "Gleason2019")
    cache = build_cache("gleason2019", root, tmp_path / "cache", NO_RESIZE)
    data = read_cache(cache)
    train, val, test = split_by_image(sorted(GLEASON_CORES), 0)
    # per training core: tile (0,0) benign cls, (0,1) grade 3 + 4 seg, (1,0) ignored, (1,1) grade 5 cls
    assert np.bincount(data.cls_labels, minlength=5).tolist() == [0, len(train), 0, 0, len(train)]
    assert data.seg_labels.tolist() == [2] * len(train)
    assert set(np.unique(data.seg_masks)) == {2, 3}
    assert [v.name for v in data.val] == val and [t.name for t in data.test] == test
    assert any("slide009_core009" in note for note in read_manifest(cache)["report"]["notes"])


def test_gleason_other_annotator_missing_is_named(tmp_path):
    from segclass.errors import DatasetError

    root = make_gleason(tmp_path / "Gleason2019", nested=False)
    with pytest.raises(DatasetError, match="Maps2_T is missing"):
        build_cache("gleason2019", root, tmp_path / "cache", BuildParams(annotator=2))


def test_digestpath_tiles_split_by_image(tmp_path):
    root = make_digestpath(tmp_path / "DigestPath")
    data = read_cache(build_cache("digestpath2019", root, tmp_path / "cache", NO_RESIZE))
    names = [f"tissue-train-pos-v1/{n}" for n in DIGEST_POSITIVE] + [f"tissue-train-neg/{n}" for n in DIGEST_NEGATIVE]
    train, val, test = split_by_image(sorted(names), 0)
    positives = sum(n.startswith("tissue-train-pos") for n in train)
    # a positive image: (0,0) malignant cls, (0,1) seg, two benign cls tiles; a negative one: four benign cls tiles
    assert np.bincount(data.cls_labels, minlength=2).tolist() == [2 * positives + 4 * (len(train) - positives), positives]
    assert len(data.seg_labels) == positives
    assert not set(data.cls_sources.tolist()) & {v.name for v in data.val + data.test}
    assert set(data.cls_sources.tolist()) <= set(train)


def test_digestpath_resizes_long_side(tmp_path):
    root = make_digestpath(tmp_path / "DigestPath")
    data = read_cache(build_cache("digestpath2019", root, tmp_path / "cache",
                                  BuildParams(resize_long_side=384, stain_normalize=False)))
    assert max(data.val[0].rgb.shape[:2]) == 384
