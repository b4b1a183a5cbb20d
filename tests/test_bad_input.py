"""Bad input gets a clear error that names the file and what to do, and nothing half-written."""

import shutil

import numpy as np
import pytest
from PIL import Image

from segclass.data.build import BuildParams, build_cache
from segclass.errors import DatasetError
from tests.dataset_fixtures import make_bach, make_gleason

RAW = BuildParams(stain_normalize=False)


@pytest.fixture(scope="module")
def bach_template(tmp_path_factory):
    return make_bach(tmp_path_factory.mktemp("BACH"))


@pytest.fixture
def bach(bach_template, tmp_path):
    return shutil.copytree(bach_template, tmp_path / "BACH")


def _fails(dataset, root, tmp_path, match):
    with pytest.raises(DatasetError, match=match):
        build_cache(dataset, root, tmp_path / "cache", RAW)
    assert not (tmp_path / "cache").exists()


def test_missing_dataset_folder(tmp_path):
    _fails("bach", tmp_path / "nowhere", tmp_path, "nowhere does not exist")


def test_missing_sub_folder(bach, tmp_path):
    shutil.rmtree(bach / "Photos")
    _fails("bach", bach, tmp_path, "has no Photos/ folder; BACH needs both Photos/ .* and WSI/")
    shutil.rmtree(bach / "WSI")  # neither: not a BACH folder, and none below
    _fails("bach", bach, tmp_path, "is not a BACH folder and none was found below it; pass --root the "
                                   "ICIAR2018_BACH_Challenge folder holding Photos/ and WSI/")


def test_slide_openslide_cannot_open(bach, tmp_path):
    (bach / "WSI" / "A02.svs").write_bytes(b"II*\x00 truncated")
    _fails("bach", bach, tmp_path, "OpenSlide cannot open .*A02.svs.*copy the slide again")


def test_annotation_xml_that_does_not_parse(bach, tmp_path):
    (bach / "WSI" / "A03.xml").write_text("<Annotations><Annotation>")
    _fails("bach", bach, tmp_path, "A03.xml does not parse as XML")


def test_region_with_fewer_than_three_vertices_is_left_out_and_said(bach, tmp_path):
    from segclass.data.shards import read_cache, read_manifest

    xml = bach / "WSI" / "A01.xml"
    text = xml.read_text()
    first = text.index("<Vertex ")
    second = text.index("<Vertex ", first + 1)
    end = text.index("</Vertices>", second)
    xml.write_text(text[:second] + text[end:])  # keep one vertex of the first region (A01's benign box)
    cache = build_cache("bach", bach, tmp_path / "cache", RAW)
    notes = " ".join(read_manifest(cache)["report"]["notes"])
    assert "1 regions with fewer than 3 vertices left out (A01.xml region 1 ('Benign', 1 vertices)" in notes
    assert sorted(read_cache(cache).seg_labels.tolist()) == [1, 2, 2, 3, 3]  # A01's benign patch is gone


def test_photo_csv_naming_a_missing_photo(bach, tmp_path):
    csv = bach / "Photos" / "microscopy_ground_truth.csv"
    csv.write_text(csv.read_text() + "ghost.tif,Benign\n")
    _fails("bach", bach, tmp_path, "microscopy_ground_truth.csv line .* names ghost.tif")


def _folder_dataset(root):
    (root / "seg" / "images").mkdir(parents=True)
    (root / "seg" / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("background\ntumour\n")
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(root / "seg" / "images" / f"im{index}.png")
        mask = np.zeros((200, 200), np.uint8)
        mask[50:90, 50:90] = 1
        Image.fromarray(mask).save(root / "seg" / "masks" / f"im{index}.png")
    return root


def test_mask_size_differs_from_image(tmp_path):
    root = _folder_dataset(tmp_path / "own")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(root / "seg" / "masks" / "im1.png")
    _fails("folder", root, tmp_path, "mask .*im1.png is 100x100 but its image .*im1.png is 200x200")


def test_mask_value_outside_class_table(tmp_path):
    root = _folder_dataset(tmp_path / "own")
    mask = np.zeros((200, 200), np.uint8)
    mask[0, 0] = 7
    Image.fromarray(mask).save(root / "seg" / "masks" / "im2.png")
    _fails("folder", root, tmp_path, "mask .*im2.png holds class id 7 but classes.txt names 2 classes")


def test_gleason_map_value_outside_class_table(tmp_path):
    root = make_gleason(tmp_path / "Gleason")
    maps = root / "Maps1_T" / "Maps1_T"
    bad = sorted(maps.glob("*.png"))[0]
    values = np.asarray(Image.open(bad)).copy()
    values[0, 0] = 2
    Image.fromarray(values).save(bad)
    _fails("gleason2019", root, tmp_path, f"map .*{bad.name} holds values \\[2\\]")


def test_image_without_mask(tmp_path):
    root = _folder_dataset(tmp_path / "own")
    (root / "seg" / "masks" / "im0.png").unlink()
    _fails("folder", root, tmp_path, "image .*im0.png has no mask")


def test_class_without_patches_is_reported(tmp_path):
    from segclass.data.shards import read_manifest

    root = _folder_dataset(tmp_path / "own")
    cache = build_cache("folder", root, tmp_path / "cache", BuildParams(stain_normalize=False, min_foreground=0))
    report = read_manifest(cache)["report"]
    assert report["empty_classes"] == {"cls": ["background", "tumour"]}
