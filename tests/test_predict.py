"""The predict CLI on real files: pyramidal TIFF slides, PNGs, checkpoints, an MLflow store."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score

from segclass.palette import PALETTE
from segclass.data.arrays import EvalImage
from segclass.evaluation import predict_eval_image
from segclass.predict.__main__ import build_parser, main
from segclass.preprocess.foreground import Foreground, foreground_mask
from segclass.preprocess.stain import StainNormalizer
from segclass.slide import read_image, read_mask, write_pyramidal_tiff
from segclass.model_file import export_model, load_model

SLIDE_MPP = 4.0  # synthetic level 0: 2.5x, so 1.25x is a downsample of 2 and 8 um per pixel


@pytest.fixture(scope="module")
def checkpoint(tiny_trained) -> Path:
    return tiny_trained[0]


@pytest.fixture(scope="module")
def slide(tiny_root) -> Path:
    return tiny_root / "test" / "images" / "slide_03.tiff"


def _run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args] + ["--quiet"])
    return code, capsys.readouterr().err


def _expected_mask(checkpoint: Path, rgb: np.ndarray) -> np.ndarray:
    """The whole image in memory: stains normalized and tissue found on all of it at once, then evaluation's path."""
    trained = load_model(checkpoint)
    stains = StainNormalizer.from_state(trained.preprocessing["stain_reference"])
    item = EvalImage("whole", stains.normalize(rgb), np.zeros(rgb.shape[:2], np.uint8),
                     Foreground(foreground_mask(rgb), 1.0))
    return predict_eval_image(trained.model, item, trained.num_classes, trained.patch_size, trained.eval_stride)[0]


def test_help_explains_every_flag():
    for action in build_parser()._actions:
        if action.dest != "help":
            assert action.help, action.dest
    text = subprocess.run([sys.executable, "-m", "segclass.predict", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for flag in ("--checkpoint", "--out", "--mask", "--scale", "--device", "--batch-size", "--tiff"):
        assert flag in text


def test_slide_prediction_outputs_and_metrics(checkpoint, slide, tiny_root, tmp_path, capsys):
    truth_path = tiny_root / "test" / "masks" / "slide_03.png"  # stored at level 0, twice the working size
    out = tmp_path / "out"
    code, err = _run(capsys, slide, "--checkpoint", checkpoint, "--out", out, "--mask", truth_path,
                     "--tiff", "always", "--batch-size", "5")
    assert code == 0, err
    rgb = read_image(slide, 1.25).rgb
    with Image.open(out / "slide_03_mask.png") as written:  # a palette PNG: ids as values, class colours shown
        assert written.mode == "P" and written.getpalette()[3:6] == PALETTE[1].tolist()
        mask = np.asarray(written)
    assert mask.shape == rgb.shape[:2] == (320, 320)
    assert not mask[~foreground_mask(rgb)].any(), "background must be class 0"
    assert (mask == _expected_mask(checkpoint, rgb)).mean() > 0.999

    summary = json.loads((out / "slide_03.json").read_text())
    truth = read_mask(truth_path, (320, 320))
    assert summary["metrics"]["macro_f1"] == pytest.approx(
        f1_score(truth.ravel(), mask.ravel(), average="macro", labels=np.union1d(truth, mask)))
    assert summary["metrics"]["paper_micro_f1"] == pytest.approx(
        f1_score(truth.ravel(), mask.ravel(), average="weighted"))
    assert summary["mpp"] == pytest.approx(2 * SLIDE_MPP) and summary["magnification"] == 1.25
    assert summary["stain_normalization"].startswith("macenko")

    with (out / "slide_03_areas.csv").open() as file:
        areas = list(csv.DictReader(file))
    assert [a["class_name"] for a in areas] == ["normal", "benign", "in_situ", "invasive"]
    assert sum(int(a["pixels"]) for a in areas) == mask.size
    tissue = foreground_mask(rgb)
    for row in areas:
        on_tissue = int((mask[tissue] == int(row["class_id"])).sum())
        assert int(row["tissue_pixels"]) == on_tissue
        assert float(row["tissue_area_mm2"]) == pytest.approx(on_tissue * (2 * SLIDE_MPP) ** 2 / 1e6, abs=1e-6)

    # the regions as QuPath annotations: valid polygons in level-0 pixels, each class's area that of the mask
    from shapely.geometry import shape

    collection = json.loads((out / "slide_03.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    level0_pixel = summary["downsample"] ** 2
    for feature in collection["features"]:
        properties = feature["properties"]
        assert properties["objectType"] == "annotation"
        row = next(a for a in areas if a["class_name"] == properties["classification"]["name"])
        assert properties["classification"]["color"] == PALETTE[int(row["class_id"])].tolist()
        regions = shape(feature["geometry"])
        assert regions.is_valid and regions.geom_type == "MultiPolygon"
        assert regions.area == pytest.approx(int(row["tissue_pixels"]) * level0_pixel, rel=0.01)
        assert regions.bounds[2] <= 640 and regions.bounds[3] <= 640  # level 0 is twice the working size
    assert {f["properties"]["classification"]["name"] for f in collection["features"]} == {
        a["class_name"] for a in areas if int(a["tissue_pixels"])}

    for figure in ("slide_03_overlay.png", "slide_03_comparison.png"):
        with Image.open(out / figure) as image:
            image.verify()
    import openslide

    with openslide.OpenSlide(str(out / "slide_03_mask.tiff")) as pyramid:  # the big-slide output
        assert pyramid.dimensions == (320, 320)
        assert float(pyramid.properties["openslide.mpp-x"]) == pytest.approx(2 * SLIDE_MPP)
        level0 = np.asarray(pyramid.read_region((0, 0), 0, (320, 320)))[..., 0]
        assert np.array_equal(level0, mask)
    with (out / "predictions.csv").open() as file:
        (row,) = list(csv.DictReader(file))
    assert row["status"] == "ok" and float(row["tiles_per_second"]) > 0


def test_png_at_native_resolution_and_at_a_scale(checkpoint, slide, tmp_path, capsys):
    rgb = read_image(slide, 1.25).rgb
    wide = np.pad(rgb, ((0, 0), (0, 300), (0, 0)), constant_values=245)  # glass on the right: windows skipped
    Image.fromarray(wide).save(tmp_path / "photo.png")
    code, err = _run(capsys, tmp_path / "photo.png", "--checkpoint", checkpoint, "--out", tmp_path / "native")
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "native" / "photo_mask.png"))
    assert mask.shape == wide.shape[:2]
    assert (mask == _expected_mask(checkpoint, wide)).mean() > 0.999
    summary = json.loads((tmp_path / "native" / "photo.json").read_text())
    assert summary["tiles"] < summary["tiles_total"], "windows on glass alone are not predicted"
    assert summary["mpp"] is None and summary["areas"][0]["tissue_area_mm2"] is None

    code, err = _run(capsys, tmp_path / "photo.png", "--checkpoint", checkpoint, "--out", tmp_path / "half",
                     "--scale", "0.5")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "half" / "photo_mask.png")).shape == (160, 310)


def test_tissue_found_on_a_thumbnail_when_the_image_is_large(checkpoint, slide, tmp_path):
    """Tissue detection runs on a capped thumbnail; the mask is 0 wherever that thumbnail says glass."""
    from segclass.predict.run import PredictOptions, predict_image
    from segclass.inference.regions import open_regions

    trained = load_model(checkpoint)
    options = PredictOptions(out_dir=tmp_path, foreground_max_pixels=8000, progress=False)
    predict_image(trained, slide, options, "small_thumb")
    mask = np.asarray(Image.open(tmp_path / "small_thumb_mask.png"))
    with open_regions(slide, 1.25) as regions:
        thumbnail, scale = regions.thumbnail(8000)
    assert thumbnail.shape[0] * thumbnail.shape[1] <= 8000 and scale < 1
    glass = ~Foreground(foreground_mask(thumbnail, opening_radius=1), scale).rows(0, 320, 320)
    assert glass.any() and not mask[glass].any()


def test_slim_model_from_an_mlflow_run(checkpoint, slide, tmp_path, capsys, monkeypatch):
    import tempfile

    import mlflow

    downloads = tmp_path / "tmp"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))  # where the run's model.pt is downloaded to

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("predict-test", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment)
    (tmp_path / "model.pt").write_bytes(export_model(load_model(checkpoint)))
    client.log_artifact(run.info.run_id, str(tmp_path / "model.pt"))
    empty = client.create_run(experiment)
    assert (tmp_path / "model.pt").stat().st_size < 0.6 * checkpoint.stat().st_size  # no optimizer, one weight set

    for spec in (run.info.run_id, f"runs:/{run.info.run_id}/model.pt"):
        out = tmp_path / spec.replace("/", "_").replace(":", "")
        code, err = _run(capsys, slide, "--checkpoint", spec, "--tracking-uri", uri, "--out", out)
        assert code == 0, err
        record = json.loads((out / "slide_03.json").read_text())
        assert record["class_names"][3] == "invasive"
        assert record["checkpoint"] == f"runs:/{run.info.run_id}/model.pt in {uri}"  # which model, not a temp file
        assert list(downloads.iterdir()) == []  # the download is removed once the model is loaded
    direct = tmp_path / "direct"
    assert _run(capsys, slide, "--checkpoint", checkpoint, "--out", direct)[0] == 0
    assert np.array_equal(np.asarray(Image.open(out / "slide_03_mask.png")),
                          np.asarray(Image.open(direct / "slide_03_mask.png")))

    code, err = _run(capsys, slide, "--checkpoint", empty.info.run_id, "--tracking-uri", uri, "--out", tmp_path)
    assert code == 2 and empty.info.run_id in err and "model.pt" in err

    broken = client.create_run(experiment)  # a model.pt that does not load: the error names the run, not a temp file
    (tmp_path / "model.pt").write_bytes(export_model(load_model(checkpoint))[:5000])
    client.log_artifact(broken.info.run_id, str(tmp_path / "model.pt"))
    code, err = _run(capsys, slide, "--checkpoint", broken.info.run_id, "--tracking-uri", uri, "--out", tmp_path)
    assert code == 2 and f"runs:/{broken.info.run_id}/model.pt" in err and "segclass-model-" not in err, err
    assert list(downloads.iterdir()) == []


def test_bad_checkpoints_and_devices_stop_at_once(checkpoint, slide, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:5000])
    code, err = _run(capsys, slide, "--checkpoint", corrupt, "--out", tmp_path / "out")
    assert code == 2 and str(corrupt) in err and "corrupt" in err

    state = torch.load(checkpoint, weights_only=True)
    state["class_names"] = state["class_names"][:3]  # a three-class run's names on a four-class model
    other = tmp_path / "three_classes.pt"
    torch.save(state, other)
    code, err = _run(capsys, slide, "--checkpoint", other, "--out", tmp_path / "out")
    assert code == 2 and str(other) in err and "3 classes" in err

    state = torch.load(checkpoint, weights_only=True)
    state["model_config"]["num_classes"] = 3  # weights of four classes, config of three
    state["class_names"] = state["class_names"][:3]
    torch.save(state, other)
    code, err = _run(capsys, slide, "--checkpoint", other, "--out", tmp_path / "out")
    assert code == 2 and str(other) in err and "do not fit" in err

    code, err = _run(capsys, slide, "--checkpoint", "0123456789abcdef", "--out", tmp_path / "out")
    assert code == 2 and "neither a file" in err

    code, err = _run(capsys, slide, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--device", "gpu")
    assert code == 2 and "not a torch device" in err
    if not torch.cuda.is_available():
        code, err = _run(capsys, slide, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--device", "cuda")
        assert code == 2 and "no CUDA device" in err


def test_bad_inputs_fail_alone_and_are_reported(checkpoint, slide, tiny_root, tmp_path, capsys):
    rgb = np.asarray(Image.open(slide))  # level 0 without any resolution tags
    untagged = tmp_path / "untagged.tiff"
    write_pyramidal_tiff(untagged, rgb, mpp=None)
    garbage = tmp_path / "scan.svs"
    garbage.write_bytes(b"not a slide" * 100)
    not_png = tmp_path / "photo.png"
    not_png.write_bytes(b"\x89PNG truncated")
    wrong_ids = tmp_path / "wrong_ids.png"
    Image.fromarray(np.full((640, 640), 7, np.uint8)).save(wrong_ids)
    inputs = [untagged, garbage, slide, not_png, tmp_path / "missing.tiff", slide]
    masks = [wrong_ids, wrong_ids, tiny_root / "test" / "masks" / "slide_03.png", wrong_ids, wrong_ids, wrong_ids]
    args = [*inputs, "--checkpoint", checkpoint, "--out", tmp_path / "out"]
    code, err = _run(capsys, *args, *[a for m in masks for a in ("--mask", m)])
    assert code == 1
    assert f"{untagged}" in err and "--scale" in err
    assert f"{garbage}" in err and "not a recognised slide" in err
    assert f"{not_png}" in err and f"{tmp_path / 'missing.tiff'}" in err and "does not exist" in err
    assert f"{wrong_ids}" in err and "class id 7" in err
    with (tmp_path / "out" / "predictions.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [r["status"] for r in rows].count("ok") == 1 and len(rows) == len(inputs)
    assert (tmp_path / "out" / "slide_03_mask.png").is_file()

    code, err = _run(capsys, untagged, "--checkpoint", checkpoint, "--out", tmp_path / "scaled", "--scale", "0.5")
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "scaled" / "untagged_mask.png")).shape == (320, 320)


def test_aperio_slide_with_imagescope_xml_found_in_a_mask_folder(checkpoint, tmp_path, capsys):
    from segclass.data.bach import parse_annotations, rasterize
    from tests.dataset_fixtures import BACH_REGIONS, make_bach

    root = make_bach(tmp_path / "bach")  # Aperio SVS at 5x (AppMag) with ImageScope XML beside each
    slide = root / "WSI" / "A04.svs"
    code, err = _run(capsys, slide, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--mask", root / "WSI")
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "out" / "A04_mask.png"))
    assert mask.shape == (256, 256)  # 1024 px at 5x -> 1.25x
    truth = rasterize(parse_annotations(root / "WSI" / "A04.xml"), (256, 256), 4.0)
    assert set(np.unique(truth)) == {0, 1, 2, 3} and len(BACH_REGIONS["A04"][0]) == 3
    summary = json.loads((tmp_path / "out" / "A04.json").read_text())
    assert summary["truth"].endswith("A04.xml") and summary["magnification"] == 1.25
    assert summary["metrics"]["pixel_accuracy"] == pytest.approx((truth == mask).mean())
    assert summary["metrics"]["macro_f1"] == pytest.approx(
        f1_score(truth.ravel(), mask.ravel(), average="macro", labels=np.union1d(truth, mask)))
    assert (tmp_path / "out" / "A04_comparison.png").is_file()


def test_a_folder_of_inputs_with_a_folder_of_masks(checkpoint, tiny_root, tmp_path, capsys):
    images, masks = tiny_root / "test" / "images", tiny_root / "test" / "masks"
    code, err = _run(capsys, images, "--checkpoint", checkpoint, "--out", tmp_path / "out", "--mask", masks)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "slide_03.json").read_text())
    assert summary["input"] == str(images / "slide_03.tiff") and summary["truth"] == str(masks / "slide_03.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _run(capsys, empty, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 2 and "no slides or images" in err


def test_a_recorded_tracking_uri_keeps_no_credentials():
    from segclass.predict.source import _without_credentials

    assert _without_credentials("postgresql://user:secret@db:5432/mlflow") == "postgresql://db:5432/mlflow"
    assert _without_credentials("http://me@head:5000") == "http://head:5000"
    assert _without_credentials("sqlite:////tmp/a@b/mlflow.db") == "sqlite:////tmp/a@b/mlflow.db"
