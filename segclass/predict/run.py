"""Predict one image or many: read, find tissue, normalize stains, stream windows, write outputs.

Everything about how images must look to the model (magnification, patch
size, stride, foreground thresholds, stain reference, class names) comes
from the trained model's file; `PredictOptions` holds only what is the user's
choice. Inputs are independent: one that fails is recorded and the rest go on.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segclass.errors import SegclassError
from segclass.files import atomic_write
from segclass.predict import outputs
from segclass.predict.geojson import write_geojson
from segclass.inference.regions import Regions, open_regions
from segclass.inference.sliding import BATCH_SIZE, predict_mask
from segclass.inference.survey import THUMBNAIL_MAX_PIXELS, Survey, survey
from segclass.predict.truth import load_truth
from segclass.model_file import TrainedModel

log = logging.getLogger(__name__)

TIFF_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class PredictOptions:
    """The user's choices; the model's own settings come from its file."""

    out_dir: Path
    scale: float | None = None  # output pixels per level-0 pixel; overrides the slide's metadata
    magnification: float | None = None  # None: the magnification the model was trained at
    batch_size: int = BATCH_SIZE  # windows per forward pass
    stride: int | None = None  # None: the model's evaluation stride (half a patch)
    device: str | None = None  # None: cuda when available, else cpu
    tiff: str = "auto"  # pyramidal TIFF mask: auto (when larger than tiff_min_side), always, never
    tiff_min_side: int = 4096
    thumbnail_side: int = 1024  # longest side of overlay and comparison figures
    stain_normalize: bool = True  # map stains to the model's training reference (when it has one)
    # tissue detection and stain estimation run on a thumbnail this large at most
    foreground_max_pixels: int = THUMBNAIL_MAX_PIXELS
    progress: bool = True


@dataclass
class Failure:
    input: str
    error: str


def _wants_stains(trained: TrainedModel, options: PredictOptions) -> bool:
    return options.stain_normalize and bool(trained.preprocessing.get("stain_reference"))


def _stain_transform(trained: TrainedModel, seen: Survey, options: PredictOptions):
    """Band transform to the model's stain reference, and a note of what was done."""
    from segclass.preprocess.stain import StainNormalizer

    if not options.stain_normalize:
        return None, "off (--no-stain-normalize)"
    if not trained.preprocessing.get("stain_reference"):
        return None, "off (the model file records no stain reference: trained without normalization)"
    if seen.stains is None:
        log.warning("%s; predicting on unnormalized colours", seen.stain_error)
        return None, f"failed, unnormalized: {seen.stain_error}"
    normalizer = StainNormalizer.from_state(trained.preprocessing["stain_reference"])
    return (lambda band: normalizer.normalize_with(band, seen.stains)), "macenko to the training reference"


def predict_image(trained: TrainedModel, path: Path, options: PredictOptions, name: str,
                  truth_path: Path | None = None) -> dict[str, Any]:
    """Predict `path`, write its outputs under `options.out_dir` as `name`_*, return its summary."""
    from tqdm import tqdm

    from segclass.compute import pick_device, place_model, precision_scope, resolve_precision
    from segclass.metrics import PixelScores

    device = pick_device(options.device)
    # the trial's own precision (its test metrics were computed in it); `auto` for models that do not record one
    precision = resolve_precision(trained.config.get("precision") or "auto", device)
    magnification = options.magnification or trained.magnification
    started = time.perf_counter()
    with open_regions(path, magnification, options.scale) as regions:
        seen = survey(regions, trained.preprocessing["saturation_threshold"], trained.preprocessing["opening_radius"],
                      options.foreground_max_pixels, _wants_stains(trained, options), str(path))
        thumbnail, foreground = seen.thumbnail, seen.tissue
        transform, stain_note = _stain_transform(trained, seen, options)
        with tqdm(desc=path.name, unit="tile", leave=False, disable=None if options.progress else True) as bar, \
                precision_scope(precision):
            mask, stats = predict_mask(
                place_model(trained.model, device), regions, foreground, trained.num_classes, trained.patch_size,
                options.stride or trained.eval_stride, options.batch_size, device, transform, bar,
            )
        summary = _describe(regions, path, name, magnification, trained, options, device, stain_note)
        summary["precision"] = precision
    summary.update(tiles=stats.windows, tiles_total=stats.windows_total, predict_seconds=round(stats.seconds, 3),
                   tiles_per_second=round(stats.tiles_per_second, 2))
    out = options.out_dir
    areas = outputs.class_areas(stats.pixels, stats.tissue_pixels, trained.class_names, summary["mpp"])
    tiff = options.tiff == "always" or (options.tiff == "auto" and max(mask.shape) > options.tiff_min_side)
    files = outputs.write_mask(out, name, mask, summary["mpp"], tiff)
    files.append(outputs.write_areas(out, name, areas))
    files.append(write_geojson(out / f"{name}.geojson", mask, foreground.rows(0, mask.shape[0], mask.shape[1]),
                               trained.class_names, summary["downsample"]))
    shown, shown_tissue, shown_mask = _display(thumbnail, foreground.mask, mask, options.thumbnail_side)
    title = f"{path.name}: {_model_name(trained.config)} ({trained.weights} weights, epoch {trained.epoch})"
    files.append(outputs.overlay_figure(out / f"{name}_overlay.png", shown, shown_mask, shown_tissue,
                                        trained.class_names, areas, title))
    summary["areas"] = areas
    if truth_path is not None:
        truth = load_truth(truth_path, regions.size, summary["downsample"], trained.class_names)
        scores = PixelScores(trained.num_classes)
        scores.update(truth, mask, foreground.rows(0, mask.shape[0], mask.shape[1]))
        metrics = scores.summary(list(trained.class_names))
        summary.update(truth=str(truth_path), metrics=metrics)
        files.append(outputs.comparison_figure(
            out / f"{name}_comparison.png", shown, outputs.shrink_mask(truth, shown_mask.shape[::-1]), shown_mask,
            shown_tissue, trained.class_names, metrics, title))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["outputs"] = [str(f) for f in files]
    outputs.write_json(out / f"{name}.json", summary)
    log.info("%s: %dx%d px (%s), %d of %d tiles on tissue, %.1f tiles/s -> %s_*", path, *regions.size,
             _resolution(summary), stats.windows, stats.windows_total, stats.tiles_per_second, out / name)
    return summary


def _describe(regions: Regions, path: Path, name: str, magnification: float, trained: TrainedModel,
              options: PredictOptions, device, stain_note: str) -> dict[str, Any]:
    return {
        "input": str(path), "name": name, "status": "ok", "is_slide": regions.is_slide,
        "width": regions.size[0], "height": regions.size[1],
        "magnification": magnification if regions.is_slide and not options.scale else None,
        "scale": options.scale,
        "downsample": regions.downsample, "mpp": regions.mpp, "checkpoint": trained.source,
        "weights": trained.weights, "epoch": trained.epoch, "class_names": list(trained.class_names),
        "patch_size": trained.patch_size, "stride": options.stride or trained.eval_stride,
        "batch_size": options.batch_size, "device": str(device), "stain_normalization": stain_note,
    }


def _model_name(config: dict[str, Any]) -> str:
    """The trial as sweeps name it, e.g. 'S+C s=5 seed=1 variant=mean-softmax budget=equal'."""
    from segclass.config import study_of
    from segclass.grid import GridPoint

    mode = config.get("mode", "?")
    study = study_of(mode)
    fraction = config.get("cls_fraction" if study == "classification" else "seg_fraction", 0.0)
    return GridPoint(study, config.get("dataset", "?"), mode, float(fraction), int(config.get("seed", 0)),
                     config.get("variant", "paper"), config.get("budget", "paper")).run_name


def _resolution(summary: dict[str, Any]) -> str:
    if summary["magnification"]:
        return f"{summary['magnification']:g}x"
    return f"scale {summary['scale']:g}" if summary["scale"] else "native resolution"


def _display(thumbnail: np.ndarray, tissue: np.ndarray, mask: np.ndarray, side: int):
    """Thumbnail, tissue and mask at the figure size (longest side at most `side`)."""
    from PIL import Image

    height, width = thumbnail.shape[:2]
    factor = min(1.0, side / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    shown = thumbnail if factor == 1.0 else np.asarray(Image.fromarray(thumbnail).resize(size, Image.LANCZOS))
    return shown, outputs.shrink_mask(tissue.astype(np.uint8), size).astype(bool), outputs.shrink_mask(mask, size)


def unique_names(paths: list[Path]) -> list[str]:
    """Output names from file stems, numbered where two inputs share a stem."""
    names, seen = [], {}
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def predict_many(trained: TrainedModel, paths: list[Path], options: PredictOptions,
                 truths: list[Path | None] | None = None) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Predict every input; a failing input is recorded and the others go on."""
    options.out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], []
    for index, (path, name) in enumerate(zip(paths, unique_names(paths))):
        truth = truths[index] if truths else None
        try:
            results.append(predict_image(trained, path, options, name, truth))
        except SegclassError as exc:
            failures.append(Failure(str(path), str(exc)))
            log.error("%s failed: %s", path, exc)
        except Exception as exc:  # an unexpected bug on one input must not cost the others
            failures.append(Failure(str(path), f"{type(exc).__name__}: {exc}"))
            log.error("%s failed unexpectedly:\n%s", path, traceback.format_exc())
    write_index(options.out_dir / "predictions.csv", results, failures)
    return results, failures


def pooled_metrics(results: list[dict[str, Any]], class_names: tuple[str, ...]) -> dict[str, Any] | None:
    """Metrics of all inputs with ground truth pooled into one confusion matrix, as a trial's test metrics pool
    its test slides (so predicting a trial's test slides gives its test macro F1); None without ground truth."""
    from segclass.metrics import PixelScores

    scored = [r["metrics"] for r in results if "metrics" in r]
    if not scored:
        return None
    pooled = PixelScores(len(class_names))
    for metrics in scored:
        pooled.all_pixels.counts += np.asarray(metrics["confusion_matrix"], dtype=pooled.all_pixels.counts.dtype)
        pooled.tissue.counts += np.asarray(metrics["tissue_confusion_matrix"], dtype=pooled.tissue.counts.dtype)
    return pooled.summary(list(class_names))


def write_index(path: Path, results: list[dict[str, Any]], failures: list[Failure]) -> Path:
    """One row per input: where it went, how fast, how much of each class, how good (with truth)."""
    rows = []
    for result in results:
        row = {key: result[key] for key in ("name", "input", "status", "width", "height", "tiles",
                                              "tiles_per_second", "seconds")}
        row["error"] = ""
        for area in result["areas"]:
            row[f"tissue_share_{area['class_name']}"] = area["tissue_share"]
        for key in ("macro_f1", "paper_micro_f1", "pixel_accuracy", "mean_iou", "tissue_macro_f1"):
            row[key] = result.get("metrics", {}).get(key, "")
        rows.append(row)
    rows += [{"input": failure.input, "status": "failed", "error": failure.error} for failure in failures]
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def write(target: Path) -> None:
        import csv

        with target.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
    return path
