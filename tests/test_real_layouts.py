"""The three public datasets in the layouts and variants users actually have, and each bad file as one line.

Layouts and their sources: docs/data.md. Every case writes its files here, in
the shapes a partial download, a nested unzip or a renamed folder leaves.
"""

import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from segclass.data.__main__ import main as data_cli
from segclass.data.build import BuildParams, build_cache
from segclass.data.shards import read_cache, read_manifest
from segclass.errors import DatasetError
from tests.dataset_fixtures import (BACH_PHOTOS, BACH_UNANNOTATED, DIGEST_NEGATIVE, DIGEST_POSITIVE, GLEASON_CORES,
                                    gleason_map, make_bach, make_digestpath, make_gleason, real_he_tile)

RAW = BuildParams(stain_normalize=False, resize_long_side=256)


def _truncate(path):
    """What an interrupted download leaves: the first part of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _one_line_error(dataset, root, tmp_path, capsys, *names):
    """The CLI's stderr for a build that must fail: one `error:` line naming every string in `names`."""
    code = data_cli(["build", dataset, "--root", str(root), "--out", str(tmp_path / "cache"),
                     "--no-stain-normalization", "--resize-long-side", "256"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in errors[0], errors[0]
    assert not (tmp_path / "cache").exists()
    return errors[0]


# ---------------------------------------------------------------------------
# BACH
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bach_zip(tmp_path_factory):
    """Where a user unzipped ICIAR2018_BACH_Challenge.zip: downloads/ICIAR2018_BACH_Challenge/..."""
    downloads = tmp_path_factory.mktemp("downloads")
    make_bach(downloads / "ICIAR2018_BACH_Challenge")
    # the test archive beside it has Photos/ and WSI/ but no labels: not a training folder
    (downloads / "ICIAR2018_BACH_Challenge_TestDataset" / "Photos").mkdir(parents=True)
    (downloads / "ICIAR2018_BACH_Challenge_TestDataset" / "WSI").mkdir()
    return downloads


def test_bach_as_distributed_from_the_folder_above(bach_zip, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cache = build_cache("bach", bach_zip, tmp_path / "cache", RAW)  # --root one folder too high
    messages = caplog.text
    assert f"using {bach_zip / 'ICIAR2018_BACH_Challenge'}, found below --root" in messages
    skipped = [r.message for r in caplog.records if "have no annotation XML" in r.message]
    assert len(skipped) == 1 and f"skipping {len(BACH_UNANNOTATED)} of 7 slides" in skipped[0]
    assert "they are not part of the paper's splits" in skipped[0]
    data = read_cache(cache)
    assert sorted(set(data.seg_sources.tolist())) == ["A01", "A02", "A03"]
    assert [v.name for v in data.val] == ["A04"] and [t.name for t in data.test] == ["A05"]
    assert np.bincount(data.cls_labels).tolist() == list(BACH_PHOTOS.values())
    # A01's labels are Attribute@Value, the others' Region@Text; spellings vary
    assert "'In situ carcinoma' x1 -> in_situ" in messages and "'Invasive carcinoma' x1 -> invasive" in messages
    manifest = read_manifest(cache)
    assert manifest["source_root"].endswith("ICIAR2018_BACH_Challenge")


def test_bach_csv_with_a_header_and_other_class_spellings(bach_zip, tmp_path):
    root = shutil.copytree(bach_zip / "ICIAR2018_BACH_Challenge", tmp_path / "BACH")
    csv = root / "Photos" / "microscopy_ground_truth.csv"
    rows = csv.read_text().replace(",InSitu", ",In Situ").replace(",Invasive", ",invasive")
    csv.write_text("Name,Class\n" + rows)
    data = read_cache(build_cache("bach", root, tmp_path / "cache", RAW))
    assert np.bincount(data.cls_labels).tolist() == list(BACH_PHOTOS.values())


def test_bach_split_naming_an_unannotated_slide(bach_zip, tmp_path, capsys):
    code = data_cli(["build", "bach", "--root", str(bach_zip / "ICIAR2018_BACH_Challenge"), "--out",
                     str(tmp_path / "cache"), "--train-slides", "A01,01", "--no-stain-normalization"])
    err = capsys.readouterr().err
    assert code == 2 and "01.svs named in the split has no annotation" in err and "--train-slides" in err


def test_bach_slide_in_two_splits_is_refused(bach_zip, tmp_path):
    with pytest.raises(DatasetError, match="slides A01 are named in more than one split"):
        build_cache("bach", bach_zip, tmp_path / "cache", BuildParams(val_slides=("A01",), stain_normalize=False))


def test_bach_truncated_photo(bach_zip, tmp_path, capsys):
    root = shutil.copytree(bach_zip / "ICIAR2018_BACH_Challenge", tmp_path / "BACH")
    _truncate(root / "Photos" / "Benign" / "b000.tif")
    _one_line_error("bach", root, tmp_path, capsys, "b000.tif", "download")


def test_two_bach_folders_below_root_are_named(bach_zip, tmp_path):
    shutil.copytree(bach_zip / "ICIAR2018_BACH_Challenge", tmp_path / "a" / "ICIAR2018_BACH_Challenge")
    shutil.copytree(bach_zip / "ICIAR2018_BACH_Challenge", tmp_path / "b" / "ICIAR2018_BACH_Challenge")
    with pytest.raises(DatasetError, match="holds 2 BACH folders .*pass the one to build as --root"):
        build_cache("bach", tmp_path, tmp_path / "cache", RAW)


# ---------------------------------------------------------------------------
# Gleason2019
# ---------------------------------------------------------------------------
def _gleason(tmp_path, **changes):
    return make_gleason(tmp_path / "Gleason2019", **changes)


def test_gleason_nested_train_imgs_and_several_annotators(tmp_path, caplog):
    root = _gleason(tmp_path)
    nested = root / "Train Imgs" / "Train Imgs"
    nested.mkdir()
    for path in (root / "Train Imgs").glob("*.jpg"):
        path.rename(nested / path.name)
    (root / "Maps3_T").mkdir()  # annotator 3 mapped only two cores (zero-padding of its own)
    for core in ("slide1_core1", "slide2_core1"):
        Image.fromarray(gleason_map()).save(root / "Maps3_T" / f"{core}_classimg_nonconvex.png")
    (root / "Test" / "Test_imgs").mkdir(parents=True)
    Image.fromarray(real_he_tile()).save(root / "Test" / "Test_imgs" / "slide007_core001.jpg")
    caplog.set_level(logging.INFO)
    data = read_cache(build_cache("gleason2019", root, tmp_path / "cache", RAW))
    assert len(data.val) + len(data.test) + len(set(data.cls_sources.tolist())) == len(GLEASON_CORES)
    assert "Train Imgs/Train Imgs (the archive was unzipped into a folder of its own name)" in caplog.text
    assert "test cores, which have no public maps; not used" in caplog.text
    with pytest.raises(DatasetError, match="2 of the 5 cores .* have a map in Maps3_T; at least 3 are needed"):
        build_cache("gleason2019", root, tmp_path / "cache3", BuildParams(annotator=3, stain_normalize=False))


def test_gleason_rgb_map_with_equal_channels_reads_as_its_one_channel(tmp_path):
    root = _gleason(tmp_path)
    maps = root / "Maps1_T" / "Maps1_T"
    for path in maps.glob("*.png"):
        grey = np.asarray(Image.open(path))
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    rgb_maps = read_cache(build_cache("gleason2019", root, tmp_path / "cache", RAW))
    plain = read_cache(build_cache("gleason2019", _gleason(tmp_path / "plain"), tmp_path / "plain-cache", RAW))
    assert np.array_equal(rgb_maps.seg_masks, plain.seg_masks)
    assert np.array_equal(rgb_maps.cls_labels, plain.cls_labels)


def test_gleason_colour_map_is_said_to_be_colour(tmp_path, capsys):
    root = _gleason(tmp_path)
    path = root / "Maps1_T" / "Maps1_T" / f"{GLEASON_CORES[0]}_classimg_nonconvex.png"
    colour = np.stack([gleason_map(), gleason_map() * 0, gleason_map()], axis=-1)
    Image.fromarray(colour).save(path)
    line = _one_line_error("gleason2019", root, tmp_path, capsys, path.name, "3 channels that differ")
    assert "size" not in line


@pytest.mark.parametrize("which", ["core", "map"])
def test_gleason_truncated_file(tmp_path, capsys, which):
    root = _gleason(tmp_path)
    path = (root / "Train Imgs" / f"{GLEASON_CORES[1]}.jpg" if which == "core"
            else root / "Maps1_T" / "Maps1_T" / f"{GLEASON_CORES[1]}_classimg_nonconvex.png")
    _truncate(path)
    _one_line_error("gleason2019", root, tmp_path, capsys, str(path), "download")


def test_gleason_unknown_map_value_names_the_flag(tmp_path, capsys):
    root = _gleason(tmp_path)
    path = root / "Maps1_T" / "Maps1_T" / f"{GLEASON_CORES[0]}_classimg_nonconvex.png"
    values = gleason_map()
    values[0, 0] = 2
    Image.fromarray(values).save(path)
    _one_line_error("gleason2019", root, tmp_path, capsys, path.name, "values [2]", "--class-map FILE.json")


def test_gleason_empty_images_folder_is_named(tmp_path, capsys):
    root = _gleason(tmp_path)
    for path in (root / "Train Imgs").glob("*.jpg"):
        path.unlink()
    _one_line_error("gleason2019", root, tmp_path, capsys, "Train Imgs holds no .jpg cores")


# ---------------------------------------------------------------------------
# DigestPath2019
# ---------------------------------------------------------------------------
def _digestpath(tmp_path):
    """Colonoscopy_tissue_segment_dataset/ as unzipped, with macOS leftovers beside the images."""
    root = make_digestpath(tmp_path / "Colonoscopy_tissue_segment_dataset")
    (root / "tissue-train-neg" / "._neg 01.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "__MACOSX").mkdir()
    return root


def _malignant_patches(data):
    return int(np.bincount(data.cls_labels, minlength=2)[1]) + len(data.seg_labels)


def test_digestpath_from_above_with_names_with_spaces(tmp_path, caplog):
    root = _digestpath(tmp_path)
    caplog.set_level(logging.INFO)
    data = read_cache(build_cache("digestpath2019", tmp_path, tmp_path / "cache", RAW))
    assert f"using {root}, found below --root" in caplog.text
    names = {v.name for v in data.val + data.test} | set(data.cls_sources.tolist())
    assert names == {f"tissue-train-pos-v1/{n}" for n in DIGEST_POSITIVE} | {f"tissue-train-neg/{n}"
                                                                                for n in DIGEST_NEGATIVE}


@pytest.mark.parametrize("variant", ["first-release-name", "nested-positive", "nested-negative"])
def test_digestpath_folder_variants(tmp_path, variant):
    root = _digestpath(tmp_path)
    reference = read_cache(build_cache("digestpath2019", root, tmp_path / "reference", RAW))
    positive, negative = root / "tissue-train-pos-v1", root / "tissue-train-neg"
    if variant == "first-release-name":
        positive.rename(root / "tissue-train-pos")
    else:
        folder = positive if variant == "nested-positive" else negative
        inner = folder / folder.name
        inner.mkdir()
        for path in list(folder.iterdir()):
            if path != inner:
                path.rename(inner / path.name)
    data = read_cache(build_cache("digestpath2019", root, tmp_path / "cache", RAW))
    assert _malignant_patches(data) == _malignant_patches(reference) > 0
    assert len(data.cls_labels) == len(reference.cls_labels)


def test_digestpath_missing_negatives_are_said(tmp_path):
    root = _digestpath(tmp_path)
    shutil.rmtree(root / "tissue-train-neg")
    positive = root / "tissue-train-pos-v1"
    for suffix in ("", "_mask"):  # three images are needed to split
        shutil.copy(positive / f"{DIGEST_POSITIVE[0]}{suffix}.jpg", positive / f"case 03{suffix}.jpg")
    manifest = read_manifest(build_cache("digestpath2019", root, tmp_path / "cache", RAW))
    assert any("no tissue-train-neg/" in note and "unzip tissue-train-neg.zip" in note
               for note in manifest["report"]["notes"])


def test_digestpath_empty_negatives_folder_is_named(tmp_path, capsys):
    root = _digestpath(tmp_path)
    for path in (root / "tissue-train-neg").glob("*.jpg"):
        path.unlink()
    _one_line_error("digestpath2019", root, tmp_path, capsys, "tissue-train-neg holds no .jpg images")


@pytest.mark.parametrize("which", ["image", "mask"])
def test_digestpath_truncated_file(tmp_path, capsys, which):
    root = _digestpath(tmp_path)
    name = f"{DIGEST_POSITIVE[0]}{'_mask' if which == 'mask' else ''}.jpg"
    _truncate(root / "tissue-train-pos-v1" / name)
    _one_line_error("digestpath2019", root, tmp_path, capsys, name, "is truncated", "download")


def test_greyscale_image_is_said_to_have_one_channel(tmp_path, capsys):
    root = _digestpath(tmp_path)
    path = root / "tissue-train-neg" / f"{DIGEST_NEGATIVE[0]}.jpg"
    Image.open(path).convert("L").save(path)
    _one_line_error("digestpath2019", root, tmp_path, capsys, path.name, "has 1 channel")


def test_gleason_class_map_with_an_id_out_of_range_names_the_flag(tmp_path):
    params = BuildParams(stain_normalize=False, class_map=((0, 0), (1, 9), (3, 2), (4, 3), (5, 4), (6, 1)))
    with pytest.raises(DatasetError, match=r"--class-map maps values to class ids \[9\]; the ids are 0-4"):
        build_cache("gleason2019", _gleason(tmp_path), tmp_path / "cache", params)


def test_bach_csv_case_and_contradictions(bach_zip, tmp_path, caplog):
    root = shutil.copytree(bach_zip / "ICIAR2018_BACH_Challenge", tmp_path / "BACH")
    (root / "Photos" / "Normal" / "n000.tif").rename(root / "Photos" / "Normal" / "n000.TIF")
    csv = root / "Photos" / "microscopy_ground_truth.csv"
    csv.write_text(csv.read_text().replace("b000.tif,Benign", "b000.tif,Invasive"))
    caplog.set_level(logging.INFO)
    data = read_cache(build_cache("bach", root, tmp_path / "cache", RAW))
    assert "1 photos are in a class folder other than their class in microscopy_ground_truth.csv" in caplog.text
    counts = list(BACH_PHOTOS.values())
    counts[1], counts[3] = counts[1] - 1, counts[3] + 1  # b000 counted as invasive, as the CSV says
    assert np.bincount(data.cls_labels).tolist() == counts
