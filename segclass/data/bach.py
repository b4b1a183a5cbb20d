"""BACH 2018 (ICIAR) in its distributed layout (docs/data.md cites the sources).

    ICIAR2018_BACH_Challenge/                             the zip's top folder (--root here, or above it)
      Photos/{Normal,Benign,InSitu,Invasive}/*.tif        Part A photos (2048x1536, 0.42 um/px)
      Photos/microscopy_ground_truth.csv                  no header: file name, class (folder spelling)
      WSI/A01.svs ... A10.svs + A01.xml ... A10.xml       Part B: annotated slides, ImageScope XML at level 0
      WSI/01.svs ... 20.svs                               Part B: slides without annotation (not used)
      WSI/gt_thumbnails/                                  colour thumbnails of the annotations (not used)

Photos become classification patches (resized to one patch, as the paper's
"downsampling each image to 128 x 128"). The annotated slides are read at
1.25x; their regions are filled into masks (normal 0, benign 1, in situ 2,
invasive 3; unlabelled tissue is normal) and cut by centred extraction. A
region's label is its `Attributes/Attribute@Value` (A01's regions), else
its `Text` (the others'), matched by words because spellings vary ("Carcinoma
in situ", "In situ carcinoma"). Paper split: 3 training slides, 1 validation
slide holding all four classes, the rest of the annotated slides for testing
(configurable in BuildParams).
"""

from __future__ import annotations

import csv
import logging
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.assemble import assemble, resize_patch
from segclass.data.extract import PatchTable, extract_centred
from segclass.data.layout import files_with_suffix, find_folder, locate_dataset, visible
from segclass.data.reading import read_rgb
from segclass.errors import DatasetError
from segclass.slide import read_image

log = logging.getLogger(__name__)

CLASS_NAMES = ("normal", "benign", "in_situ", "invasive")
PHOTO_FOLDERS = {"Normal": 0, "Benign": 1, "InSitu": 2, "Invasive": 3}
#: Class names of the ground-truth CSV, compared without case, spaces, '_' or '-' ("In Situ" = "InSitu").
_CSV_CLASSES = {name.lower(): label for name, label in PHOTO_FOLDERS.items()}


@dataclass(frozen=True)
class Region:
    label: int
    vertices: np.ndarray  # K x 2 (x, y) at level 0
    text: str = ""  # the label as written in the XML


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


def _region_text(region: ElementTree.Element) -> str:
    """A01 writes the label in Attributes/Attribute@Value, the other slides in Region@Text."""
    values = [a.get("Value", "") for a in region.findall("Attributes/Attribute") if a.get("Value", "").strip()]
    return values[0] if values else region.get("Text", "")


def parse_annotations(path: Path, skipped: list[str] | None = None) -> list[Region]:
    """Regions of every Annotation element of an ImageScope-style XML.

    A region with fewer than 3 vertices encloses no area: it is left out and
    named in `skipped` (a stray click in ImageScope should not stop a build of
    a public dataset nobody can edit).
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise DatasetError(f"annotation {path} does not parse as XML ({exc}); download (or unzip) it again, "
                           "or re-export it from ImageScope") from exc
    regions = []
    for annotation in root.iter("Annotation"):
        for region in annotation.iter("Region"):
            text = _region_text(region)
            try:
                vertices = np.array([[float(v.get("X")), float(v.get("Y"))] for v in region.iter("Vertex")])
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"annotation {path}: region {region.get('Id', '?')} has a vertex without "
                                   f"numeric X and Y ({exc}); download it again") from exc
            if len(vertices) < 3:
                if skipped is not None:
                    skipped.append(f"{path.name} region {region.get('Id', '?')} ({text!r}, {len(vertices)} vertices)")
                continue
            regions.append(Region(region_label(text), vertices, text.strip()))
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


def read_slide_with_mask(slide: Path, params, labels: Counter | None = None,
                         skipped: list[str] | None = None) -> EvalImage:
    """A slide at the working magnification with its annotation filled in; `labels` counts the label texts."""
    xml = slide.with_suffix(".xml")
    if not xml.is_file():
        raise DatasetError(f"slide {slide} has no annotation {xml}; only BACH's A01-A10 are annotated: "
                           "name those in --train-slides/--val-slides/--test-slides")
    regions = parse_annotations(xml, skipped)
    if labels is not None:
        labels.update(region.text for region in regions)
    image = read_image(slide, params.magnification)
    mask = rasterize(regions, image.rgb.shape[:2], image.downsample)
    return EvalImage(slide.stem, image.rgb, mask, source=str(slide))


def _csv_class(text: str) -> int | None:
    return _CSV_CLASSES.get(text.strip().lower().replace(" ", "").replace("_", "").replace("-", ""))


def read_photo_labels(photos: Path) -> dict[Path, int]:
    """Photo path -> class id from microscopy_ground_truth.csv (else, or for photos it omits, the folder name).

    The distributed CSV has no header; a header row is tolerated.
    """
    csv_path = photos / "microscopy_ground_truth.csv"
    by_name: dict[str, Path] = {}
    for path in visible(p for p in photos.rglob("*") if p.suffix.lower() in (".tif", ".tiff")):
        if path.name in by_name:
            raise DatasetError(f"photo name {path.name} appears twice ({by_name[path.name]} and {path}); "
                               "the ground-truth CSV names photos by file name, so names must be unique")
        by_name[path.name] = path
    if not by_name:
        raise DatasetError(f"{photos} holds no .tif photos; unzip the BACH archive's Photos/ folder again")
    by_folder = {p: PHOTO_FOLDERS[p.parent.name] for p in by_name.values() if p.parent.name in PHOTO_FOLDERS}
    if not csv_path.is_file():
        log.warning("%s is missing: photo labels are taken from folder names", csv_path)
        return by_folder
    by_lower = {name.lower(): path for name, path in by_name.items()}
    labels = {}
    with open(csv_path, newline="") as file:
        for line, row in enumerate(csv.reader(file), start=1):
            if not row or not "".join(row).strip():
                continue
            label = _csv_class(row[1]) if len(row) >= 2 else None
            if label is None and line == 1:
                continue  # a header row
            if label is None:
                raise DatasetError(f"{csv_path} line {line}: expected 'file name,class' with class one of "
                                   f"{', '.join(PHOTO_FOLDERS)}; got {row}")
            name = row[0].strip()
            path = by_name.get(name) or by_lower.get(name.lower())  # b000.TIF on disk for b000.tif in the CSV
            if path is None:
                raise DatasetError(f"{csv_path} line {line} names {name}, which is not under {photos}; "
                                   "unzip Photos/ again")
            labels[path] = label
    contradicting = sorted(p.name for p, label in labels.items() if p in by_folder and by_folder[p] != label)
    if contradicting:
        log.warning("%d photos are in a class folder other than their class in %s (the CSV's class is used): %s",
                    len(contradicting), csv_path.name, ", ".join(contradicting[:5]))
    unlisted = {p: label for p, label in by_folder.items() if p not in labels}
    if unlisted:
        log.warning("%d photos under %s are not in %s; labelled by their folder: %s", len(unlisted), photos,
                    csv_path.name, ", ".join(p.name for p in sorted(unlisted)[:5]))
    return {**labels, **unlisted}


def looks_like_bach(folder: Path) -> bool:
    """The training archive's top folder: Photos/ and WSI/, with the CSV or the annotations (the test archive has neither)."""
    photos, wsi = folder / "Photos", folder / "WSI"
    return photos.is_dir() and wsi.is_dir() and (
        (photos / "microscopy_ground_truth.csv").is_file() or any(wsi.glob("*.xml")))


def locate(root: Path) -> Path:
    halves = {name: (root / name).is_dir() for name in ("Photos", "WSI")}
    if any(halves.values()) and not all(halves.values()):  # one part of the archive only (Part A without B)
        missing = next(name for name, there in halves.items() if not there)
        raise DatasetError(f"{root} has no {missing}/ folder; BACH needs both Photos/ (Part A) and WSI/ (Part B): "
                           "unzip the whole ICIAR2018_BACH_Challenge.zip there")
    return locate_dataset(root, looks_like_bach, "BACH",
                          "the ICIAR2018_BACH_Challenge folder holding Photos/ and WSI/ (with A01.xml ...)")


def annotated_slides(wsi: Path, named: tuple[str, ...]) -> dict[str, Path]:
    """The slides with an annotation XML beside them; the others are skipped with one line."""
    slides = {p.stem: p for p in files_with_suffix(wsi, (".svs",))}
    if not slides:
        raise DatasetError(f"{wsi} holds no .svs slides; unzip the BACH archive's WSI/ folder again")
    missing = [s for s in named if s not in slides]
    if missing:
        raise DatasetError(f"slides {', '.join(missing)} named in the split are not in {wsi}; "
                           "fix --train-slides/--val-slides/--test-slides")
    annotated = {name: path for name, path in slides.items() if path.with_suffix(".xml").is_file()}
    unannotated = sorted(set(slides) - set(annotated))
    if unannotated:
        log.info("BACH: skipping %d of %d slides in %s that have no annotation XML (%s): they are not part of the "
                 "paper's splits", len(unannotated), len(slides), wsi, _name_range(unannotated))
    for name in named:
        if name not in annotated:
            raise DatasetError(f"slide {slides[name]} named in the split has no annotation "
                               f"{slides[name].with_suffix('.xml')}; name annotated slides (A01-A10) in "
                               "--train-slides/--val-slides/--test-slides")
    if not annotated:
        raise DatasetError(f"{wsi} holds no slide with an annotation XML (A01.svs + A01.xml ...); unzip WSI/ again")
    return annotated


def _name_range(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]}, ..., {names[-1]}"


def _label_note(labels: Counter, skipped: list[str]) -> str:
    read = ", ".join(f"{text or '(empty)'!r} x{count} -> {CLASS_NAMES[region_label(text)]}"
                     for text, count in sorted(labels.items()))
    note = f"BACH annotation labels: {read}"
    if skipped:
        note += f"; {len(skipped)} regions with fewer than 3 vertices left out ({', '.join(skipped[:3])}...)"
    return note


def load_bach(root: Path, params, report) -> DatasetArrays:
    root = locate(root)
    photos = find_folder(root, ("Photos",), (".csv",))
    wsi = find_folder(root, ("WSI",), (".svs",))
    named = params.train_slides + params.val_slides + params.test_slides
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise DatasetError(f"slides {', '.join(twice)} are named in more than one split (or twice in one); a slide "
                           "belongs to one of --train-slides/--val-slides/--test-slides")
    slides = annotated_slides(wsi, named)
    labels: Counter = Counter()
    skipped: list[str] = []
    loaded = {name: read_slide_with_mask(path, params, labels, skipped)
              for name, path in tqdm(slides.items(), desc="BACH slides", unit="slide", leave=False, disable=None)}
    log.info("%s", _label_note(labels, skipped))
    unknown = sorted(text for text in labels if region_label(text) == 0 and "normal" not in text.lower())
    if unknown or skipped:
        report.notes.append(_label_note(labels, skipped))
    train = [loaded[name] for name in params.train_slides]
    others = [name for name in slides if name not in params.train_slides]
    val_names = list(params.val_slides) or [
        next((n for n in others if len(np.unique(loaded[n].mask)) == len(CLASS_NAMES)), others[0] if others else None)]
    if val_names == [None]:
        raise DatasetError(f"{wsi}: no annotated slide left for validation after the training slides")
    test_names = list(params.test_slides) or [n for n in others if n not in val_names]
    if not test_names:
        raise DatasetError(f"{wsi}: no annotated slide left for testing after training and validation slides")
    report.facts.append(f"BACH split: train {', '.join(params.train_slides)}; val {', '.join(val_names)}; "
                        f"test {', '.join(test_names)}")

    seg = extract_centred(train, params, report)
    cls = PatchTable.empty()
    for path, label in tqdm(sorted(read_photo_labels(photos).items()), desc="BACH photos", unit="photo", leave=False,
                            disable=None):
        rgb = read_rgb(path, "BACH photo")
        cls.add(resize_patch(rgb, params.patch_size), None, label, path.relative_to(root).as_posix(), 0, 0)
    return assemble("bach", CLASS_NAMES, seg, cls, [loaded[n] for n in val_names], [loaded[n] for n in test_names],
                    params.patch_size)
