"""BACH 2018 (ICIAR) in its distributed layout.

    root/Photos/{Normal,Benign,InSitu,Invasive}/*.tif    Part A photos (2048x1536, 0.42 um/px)
    root/Photos/microscopy_ground_truth.csv              no header: file name, class
    root/WSI/A01.svs ... A10.svs                         Part B slides
    root/WSI/A01.xml ...                                 ImageScope-style annotations, vertices at level 0

Photos become classification patches (resized to one patch, as the paper's
"downsampling each image to 128 x 128"). Slides are read at 1.25x; their
annotated regions are filled into masks (normal 0, benign 1, in situ 2,
invasive 3; unlabelled tissue is normal) and cut by centred extraction. Paper
split: 3 training slides, 1 validation slide holding all four classes, the
rest for testing (configurable in BuildParams).
"""

from __future__ import annotations

import csv
import logging
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.assemble import assemble, resize_patch
from segclass.data.extract import PatchTable, extract_centred
from segclass.errors import DatasetError
from segclass.slide import read_image

log = logging.getLogger(__name__)

CLASS_NAMES = ("normal", "benign", "in_situ", "invasive")
PHOTO_FOLDERS = {"Normal": 0, "Benign": 1, "InSitu": 2, "Invasive": 3}


@dataclass(frozen=True)
class Region:
    label: int
    vertices: np.ndarray  # K x 2 (x, y) at level 0


def region_label(text: str) -> int:
    """BACH label text -> class id; anything unrecognised is unlabelled tissue (normal)."""
    text = text.strip().lower().replace("-", " ").replace("_", " ")
    if "benign" in text:
        return 1
    if "in situ" in text or "insitu" in text.replace(" ", ""):
        return 2
    if "invasive" in text:
        return 3
    return 0


def parse_annotations(path: Path) -> list[Region]:
    """Regions of every Annotation element of an ImageScope-style XML."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise DatasetError(f"annotation {path} does not parse as XML ({exc}); re-export it from ImageScope") from exc
    regions = []
    for annotation in root.iter("Annotation"):
        for region in annotation.iter("Region"):
            values = [a.get("Value", "") for a in region.findall("Attributes/Attribute") if a.get("Value", "").strip()]
            text = values[0] if values else region.get("Text", "")
            vertices = np.array([[float(v.get("X")), float(v.get("Y"))] for v in region.iter("Vertex")])
            if len(vertices) < 3:
                raise DatasetError(
                    f"annotation {path}: region {region.get('Id', '?')} ({text!r}) has {len(vertices)} vertices; "
                    "a region needs at least 3; fix or delete it in ImageScope"
                )
            regions.append(Region(region_label(text), vertices))
    return regions


def rasterize(regions: list[Region], shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Class-id mask at a downsampled size; smaller regions are drawn over larger ones (nesting)."""
    from skimage.draw import polygon

    mask = np.zeros(shape, np.uint8)

    def area(region: Region) -> float:
        x, y = region.vertices[:, 0], region.vertices[:, 1]
        return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))

    for region in sorted(regions, key=area, reverse=True):
        scaled = region.vertices / downsample
        rows, cols = polygon(scaled[:, 1], scaled[:, 0], shape)
        mask[rows, cols] = region.label
    return mask


def read_slide_with_mask(slide: Path, params) -> EvalImage:
    xml = slide.with_suffix(".xml")
    if not xml.is_file():
        raise DatasetError(f"slide {slide} has no annotation {xml}; BACH WSIs come with A##.xml beside them")
    image = read_image(slide, params.magnification)
    mask = rasterize(parse_annotations(xml), image.rgb.shape[:2], image.downsample)
    return EvalImage(slide.stem, image.rgb, mask, source=str(slide))


def read_photo_labels(photos: Path) -> dict[Path, int]:
    """Photo path -> class id from microscopy_ground_truth.csv (else from folder names)."""
    csv_path = photos / "microscopy_ground_truth.csv"
    by_name: dict[str, Path] = {}
    for path in sorted(photos.rglob("*.tif")):
        if path.name in by_name:
            raise DatasetError(f"photo name {path.name} appears twice ({by_name[path.name]} and {path}); "
                               "the ground-truth CSV names photos by file name, so names must be unique")
        by_name[path.name] = path
    if not csv_path.is_file():
        log.warning("%s is missing: photo labels are taken from folder names", csv_path)
        return {p: PHOTO_FOLDERS[p.parent.name] for p in by_name.values() if p.parent.name in PHOTO_FOLDERS}
    labels = {}
    with open(csv_path, newline="") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if not row:
                continue
            if len(row) < 2 or row[1].strip() not in PHOTO_FOLDERS:
                raise DatasetError(f"{csv_path} line {line}: expected 'file name,class' with class one of "
                                   f"{', '.join(PHOTO_FOLDERS)}; got {row}")
            name = row[0].strip()
            if name not in by_name:
                raise DatasetError(f"{csv_path} line {line} names {name}, which is not under {photos}")
            labels[by_name[name]] = PHOTO_FOLDERS[row[1].strip()]
    return labels


def load_bach(root: Path, params, report) -> DatasetArrays:
    photos, wsi = root / "Photos", root / "WSI"
    for folder in (photos, wsi):
        if not folder.is_dir():
            raise DatasetError(f"{folder} is missing; point --root at the BACH folder holding Photos/ and WSI/")
    slides = {p.stem: p for p in sorted(wsi.glob("*.svs"))}
    if not slides:
        raise DatasetError(f"{wsi} holds no .svs slides")
    missing = [s for s in params.train_slides + params.val_slides + params.test_slides if s not in slides]
    if missing:
        raise DatasetError(f"slides {', '.join(missing)} named in the split are not in {wsi}")
    loaded = {name: read_slide_with_mask(path, params)
              for name, path in tqdm(slides.items(), desc="BACH slides", unit="slide", leave=False, disable=None)}
    train = [loaded[name] for name in params.train_slides]
    others = [name for name in slides if name not in params.train_slides]
    val_names = list(params.val_slides) or [
        next((n for n in others if len(np.unique(loaded[n].mask)) == len(CLASS_NAMES)), others[0] if others else None)]
    if val_names == [None]:
        raise DatasetError(f"{wsi}: no slide left for validation after the training slides")
    test_names = list(params.test_slides) or [n for n in others if n not in val_names]
    if not test_names:
        raise DatasetError(f"{wsi}: no slide left for testing after training and validation slides")
    report.notes.append(f"BACH split: train {', '.join(params.train_slides)}; val {', '.join(val_names)}; "
                        f"test {', '.join(test_names)}")

    seg = extract_centred(train, params, report)
    cls = PatchTable.empty()
    for path, label in tqdm(sorted(read_photo_labels(photos).items()), desc="BACH photos", unit="photo", leave=False, disable=None):
        try:
            with Image.open(path) as photo:
                rgb = np.asarray(photo.convert("RGB"))
        except OSError as exc:
            raise DatasetError(f"cannot read photo {path}: {exc}; replace or remove it") from exc
        cls.add(resize_patch(rgb, params.patch_size), None, label, str(path.relative_to(root)), 0, 0)
    return assemble("bach", CLASS_NAMES, seg, cls, [loaded[n] for n in val_names], [loaded[n] for n in test_names],
                    params.patch_size)
