"""Build a dataset's shard cache: adapter -> foreground filter -> stain normalization -> shards.

Validation and test images are prepared the way `segclass.predict` prepares
a slide (`segclass.inference.survey`, on the file they were read from when
there is one): their tissue is found on a thumbnail and recorded with them,
and their stains are mapped to the training reference with the thumbnail's
stain estimate. Evaluation during training then predicts exactly what
predict does on the same file.

Two fingerprints, for two jobs. The *source fingerprint* (the source files'
relative paths, sizes and mtimes, the build parameters and the cache format)
only decides whether a cache is current: rebuilding with the same inputs is a
no-op; changing any of them rebuilds into a fresh folder that replaces the
old one only when complete. The *data fingerprint*, a trial's data identity,
is made from what was built: the shards' SHA-256 and the build parameters
(`segclass.data.shards.data_fingerprint`). The build is deterministic and
records no absolute paths in the shards, so a cache (or its sources) copied
to shared storage keeps its identity, even where a copy's new mtimes make
it rebuild, and one changed pixel changes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import segclass
from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.shards import FORMAT_VERSION, MANIFEST, write_cache
from segclass.errors import ConfigError, DatasetError, root_flag
from segclass.preprocess.foreground import MIN_FOREGROUND, OPENING_RADIUS, SATURATION_THRESHOLD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildParams:
    """How patches are made; every field is recorded in the manifest."""

    patch_size: int = 128  # patch side in pixels (paper App. B.2)
    magnification: float = 1.25  # slides are read at this objective magnification
    min_foreground: float = MIN_FOREGROUND  # segmentation patches with less tissue are dropped (App. B.1)
    saturation_threshold: float = SATURATION_THRESHOLD  # HSV saturation below this share of the maximum is background
    opening_radius: int = OPENING_RADIUS  # morphological opening radius of the foreground mask, pixels
    stain_normalize: bool = True  # Macenko to one reference image from the training set (paper 2.3)
    dominant_share: float = 0.90  # tile rule: dominant class share for a classification tile
    resize_long_side: int = 1024  # DigestPath2019 images are resized to this long side
    annotator: int = 1  # Gleason2019: which expert's map (Maps<K>_T) is ground truth
    split_seed: int = 0  # seed of the 50/25/25 image-level splits
    train_slides: tuple[str, ...] = ("A01", "A02", "A03")  # BACH WSIs for segmentation patches
    val_slides: tuple[str, ...] = ()  # BACH validation WSI(s); empty = first other WSI holding all classes
    test_slides: tuple[str, ...] = ()  # BACH test WSIs; empty = all WSIs not used above
    class_map: tuple[tuple[int, int], ...] = ()  # Gleason2019: (map value, class id); empty = default table

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def used_by(self, dataset: str) -> dict[str, Any]:
        """The fields `dataset`'s build reads: what its manifest records and its fingerprints hold, so a
        flag another dataset reads (`--annotator` for BACH) neither rebuilds a cache nor changes an identity."""
        fields = _COMMON_PARAMS + _DATASET_PARAMS.get(dataset, ())
        return {name: value for name, value in self.to_dict().items() if name in fields}


_COMMON_PARAMS = ("patch_size", "min_foreground", "saturation_threshold", "opening_radius", "stain_normalize")
_TILED_PARAMS = ("dominant_share", "resize_long_side", "split_seed")
#: Dataset -> the BuildParams fields its adapter reads besides the common ones.
_DATASET_PARAMS = {
    "synthetic": ("magnification", "split_seed"),
    "folder": ("magnification", "split_seed"),
    "bach": ("magnification", "train_slides", "val_slides", "test_slides"),
    "gleason2019": _TILED_PARAMS + ("annotator", "class_map"),
    "digestpath2019": _TILED_PARAMS,
}


@dataclass
class BuildReport:
    """What a build found worth telling: dropped patches, normalization failures, empty classes.

    `notes` are things a user should look at (logged as warnings); `facts`
    describe a normal build, such as the split (logged as info).
    """

    notes: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    stain: dict[str, Any] = field(default_factory=dict)
    stain_reference: dict[str, Any] | None = None  # fitted Macenko reference (StainNormalizer.state)
    dropped_background: int = 0
    empty_classes: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Loader = Callable[[Path, BuildParams, BuildReport], DatasetArrays]


#: Dataset name -> (module of segclass.data, its loader, the function finding the dataset's folder below
#: --root or None); imported on use: the readers are heavy imports.
ADAPTERS = {
    "synthetic": ("folder", "load_synthetic", None),
    "folder": ("folder", "load_folder_dataset", None),
    "bach": ("bach", "load_bach", "locate"),
    "gleason2019": ("gleason", "load_gleason", "locate"),
    "digestpath2019": ("digestpath", "load_digestpath", "locate"),
}
DATASET_NAMES = tuple(ADAPTERS)


def _adapter_part(dataset: str, part: int) -> Callable | None:
    import importlib

    name = ADAPTERS[dataset][part]
    return getattr(importlib.import_module(f"segclass.data.{ADAPTERS[dataset][0]}"), name) if name else None


def locate_source(dataset: str, root: Path) -> Path:
    """The dataset's own folder: `root`, or the one below it that holds the dataset (a zip's top folder)."""
    locate = _adapter_part(dataset, 2)
    return locate(root) if locate else root


def source_fingerprint(root: Path, params: BuildParams, dataset: str) -> str:
    """Hash of the source files' relative paths, sizes and mtimes plus the build parameters (is a cache current?)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([dataset, FORMAT_VERSION, segclass.__version__, params.used_by(dataset)]).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_is_current(out_dir: Path, expected: str) -> bool:
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("source_fingerprint") == expected and manifest.get("format_version") == FORMAT_VERSION


def build_cache(dataset: str, root: str | Path, out_dir: str | Path, params: BuildParams = BuildParams()) -> Path:
    """Build (or keep, when current) the shard cache of `dataset` from its files under `root`."""
    if dataset not in ADAPTERS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    root, out_dir = Path(root), Path(out_dir)
    if dataset == "synthetic":  # generated on first use; its files are then the source like any other
        from segclass.synthetic import generate

        if not (root / "synthetic.json").is_file():
            log.info("generating the synthetic H&E dataset into %s (once, about 20 s on 2 cores)", root)
            generate(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"dataset folder {root} {what}; pass the {dataset} files' folder as {root_flag()}")
    root = locate_source(dataset, root)
    expected = source_fingerprint(root, params, dataset)
    if cache_is_current(out_dir, expected):
        log.info("cache %s is up to date", out_dir)
        return out_dir
    log.info("building the %s shard cache into %s (once per source and settings)", dataset, out_dir)
    started = time.perf_counter()
    report = BuildReport()
    arrays = _adapter_part(dataset, 1)(root, params, report)
    _check_classes(arrays, report)
    arrays = relative_sources(prepare_images(arrays, params, report), root)
    patches = len(arrays.seg_labels) + len(arrays.cls_labels)
    seconds = time.perf_counter() - started
    write_cache(arrays, out_dir, params.used_by(dataset), expected, extra={
        "source_root": str(root.resolve()), "report": report.to_dict(),
        "preprocessing": preprocessing_record(params, report),
        "build_seconds": round(seconds, 2), "patches_per_second": round(patches / seconds, 1) if seconds else None,
    })
    for fact in report.facts:
        log.info("%s", fact)
    for note in report.notes:
        log.warning("%s", note)
    log.info("built %s: %d patches in %.1fs into %s", dataset, patches, seconds, out_dir)
    return out_dir


def relative_sources(arrays: DatasetArrays, root: Path) -> DatasetArrays:
    """Evaluation images' source files relative to `root`: the shards then hold no absolute path, so a copy of
    the sources elsewhere builds the same bytes (the data fingerprint)."""
    import os

    def relative(item: EvalImage) -> EvalImage:  # links are not followed: where they point is not content
        if not item.source:
            return item
        source = os.path.relpath(Path(item.source).absolute(), root.absolute())
        return dataclasses.replace(item, source=Path(source).as_posix())

    return dataclasses.replace(arrays, val=tuple(map(relative, arrays.val)), test=tuple(map(relative, arrays.test)))


def preprocessing_record(params: BuildParams, report: BuildReport) -> dict[str, Any]:
    """What prediction must repeat to feed new images to a model trained on this cache."""
    return {"magnification": params.magnification, "patch_size": params.patch_size,
            "saturation_threshold": params.saturation_threshold, "opening_radius": params.opening_radius,
            "stain_reference": report.stain_reference}


def _check_classes(arrays: DatasetArrays, report: BuildReport) -> None:
    """Record classes with no patches of a kind (training refuses modes that need them)."""
    for kind, labels in (("seg", arrays.seg_labels), ("cls", arrays.cls_labels)):
        counts = np.bincount(labels, minlength=arrays.num_classes) if len(labels) else np.zeros(arrays.num_classes)
        # class 0 is the unlabelled background of segmentation masks: it has no components to centre on
        skip = {0} if kind == "seg" else set()
        empty = [name for cid, name in enumerate(arrays.class_names) if counts[cid] == 0 and cid not in skip]
        if empty:
            report.empty_classes[kind] = empty
            report.notes.append(f"{arrays.name}: no {kind} patches of class(es) {', '.join(empty)}")


def prepare_images(arrays: DatasetArrays, params: BuildParams, report: BuildReport) -> DatasetArrays:
    """Macenko-normalize every patch to one training reference; prepare evaluation images as predict would.

    Each patch is mapped with its own stain estimate. Each validation and
    test image gets the tissue and the stain mapping `segclass.predict` would
    give its file (`_prepare_for_evaluation`); without stain normalization
    (`params.stain_normalize` off) only the tissue.
    """
    from tqdm import tqdm

    from segclass.preprocess.stain import StainNormalizer, pick_reference

    candidates = list(arrays.seg_images) or list(arrays.cls_images)
    normalizer = None
    if params.stain_normalize and candidates:
        reference = pick_reference(candidates)
        source = "seg" if len(arrays.seg_images) else "cls"
        normalizer = StainNormalizer().fit(candidates[reference], f"{source} patch #{reference}")
    bar = tqdm(total=len(arrays.seg_images) + len(arrays.cls_images) + len(arrays.val) + len(arrays.test),
               desc="stain normalization" if normalizer else "tissue of evaluation images", unit="img", leave=False,
               disable=None)

    def many(images: np.ndarray, prefix: str) -> np.ndarray:
        if normalizer is None or not len(images):
            out = images
        else:
            out = normalizer.normalize_many(images, [f"{prefix} #{i}" for i in range(len(images))])
        bar.update(len(images))
        return out

    def whole(items: tuple[EvalImage, ...]) -> tuple[EvalImage, ...]:
        out = tuple(_prepare_for_evaluation(item, params, normalizer) for item in items)
        bar.update(len(items))
        return out

    result = dataclasses.replace(
        arrays, seg_images=many(arrays.seg_images, "seg patch"), cls_images=many(arrays.cls_images, "cls patch"),
        val=whole(arrays.val), test=whole(arrays.test),
    )
    bar.close()
    if normalizer is not None:
        report.stain = normalizer.report()
        report.stain_reference = normalizer.state()
        if normalizer.failures:  # recorded in the manifest's report.stain; expected, so not a warning
            log.info("stain normalization left %d of %d images as they were: too little stained tissue or a single "
                     "stain (glass, fat, pale stroma) to estimate two stain vectors; expected, and those images keep "
                     "their own colours; e.g. %s", len(normalizer.failures), normalizer.attempts,
                     ", ".join(normalizer.failures[:5]))
    return result


def _prepare_for_evaluation(item: EvalImage, params: BuildParams, normalizer) -> EvalImage:
    """`item` with the tissue and the colours `segclass.predict` would give it (see the module docstring)."""
    from segclass.inference.regions import MemoryRegions, open_regions
    from segclass.inference.survey import survey

    regions = open_regions(item.source, params.magnification) if item.source else MemoryRegions(item.rgb)
    with regions:
        if regions.size != (item.rgb.shape[1], item.rgb.shape[0]):
            raise DatasetError(f"{item.source} reads as {regions.size[0]}x{regions.size[1]} at "
                               f"{params.magnification}x but was loaded as {item.rgb.shape[1]}x{item.rgb.shape[0]}")
        seen = survey(regions, params.saturation_threshold, params.opening_radius, stains=normalizer is not None,
                      name=item.name)
    rgb = item.rgb
    if normalizer is not None:
        normalizer.attempts += 1
        if seen.stains is None:
            normalizer.failures.append(item.name)
            log.debug("%s", seen.stain_error)
        else:
            rgb = normalizer.normalize_with(item.rgb, seen.stains)
    return dataclasses.replace(item, rgb=rgb, tissue=seen.tissue)
