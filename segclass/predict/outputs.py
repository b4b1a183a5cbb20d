"""What a prediction leaves on disk: mask, overlay, areas, comparison with ground truth.

Per input `<name>`: `<name>_mask.png` (a palette PNG: the pixel values are the
class ids, the palette gives them the class colours, so any viewer shows the
classes and any reader gets the ids), `<name>_mask.tiff`
(pyramidal, with the slide's resolution, for large slides: QuPath and
OpenSlide open it as a layer), `<name>_overlay.png` (thumbnail with class
colours and a legend), `<name>_areas.csv` and `<name>.json` (areas, settings,
timing, metrics), `<name>.geojson` (the predicted regions as QuPath
annotations, `segclass.predict.geojson`), and with ground truth
`<name>_comparison.png`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from segclass.files import atomic_write
from segclass.palette import class_colours, legend_handles, overlay


def write_mask(out: Path, name: str, mask: np.ndarray, mpp: float | None, tiff: bool) -> list[Path]:
    from segclass.slide import write_pyramidal_tiff

    paths = [out / f"{name}_mask.png"]
    atomic_write(paths[0], lambda p: palette_image(mask).save(p, format="PNG"))
    if tiff:
        paths.append(out / f"{name}_mask.tiff")
        atomic_write(paths[1], lambda p: write_pyramidal_tiff(p, mask, mpp))
    return paths


def palette_image(mask: np.ndarray) -> Image.Image:
    """A mode-P image whose pixel values are the class ids of `mask` and whose palette holds the class colours."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").convert("P")
    image.putpalette(class_colours(256).ravel().tolist())
    return image


def class_areas(mask_counts: np.ndarray, tissue_counts: np.ndarray, class_names: tuple[str, ...],
                mpp: float | None) -> list[dict[str, Any]]:
    """Per class: pixels in the mask, pixels on tissue, share of tissue, and mm^2 when mpp is known."""
    tissue_total = max(1, int(tissue_counts.sum()))
    rows = []
    for index, name in enumerate(class_names):
        row = {"class_id": index, "class_name": name, "pixels": int(mask_counts[index]),
               "tissue_pixels": int(tissue_counts[index]),
               "tissue_share": round(float(tissue_counts[index]) / tissue_total, 6)}
        row["tissue_area_mm2"] = round(float(tissue_counts[index]) * mpp**2 / 1e6, 6) if mpp else None
        rows.append(row)
    return rows


def write_areas(out: Path, name: str, areas: list[dict[str, Any]]) -> Path:
    path = out / f"{name}_areas.csv"

    def write(target: Path) -> None:
        with target.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(areas[0]))
            writer.writeheader()
            writer.writerows(areas)

    atomic_write(path, write)
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    atomic_write(path, lambda p: p.write_text(json.dumps(payload, indent=1, default=str)))
    return path


def shrink_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to `size` = (width, height): class ids stay ids."""
    if (mask.shape[1], mask.shape[0]) == size:
        return mask
    return np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))


def _legend(axis, class_names: tuple[str, ...], labels: list[str]) -> None:
    axis.legend(handles=legend_handles(class_names, labels), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                fontsize=8, frameon=False)


def _figure(panels: int, image_shape: tuple[int, ...]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = image_shape[:2]
    side = 5.0
    figure, axes = plt.subplots(1, panels, figsize=(side * panels * max(0.4, width / height) + 2.5, side + 0.6),
                                squeeze=False)
    return figure, axes[0]


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    atomic_write(path, lambda p: figure.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)
    return path


def overlay_figure(path: Path, thumbnail: np.ndarray, mask: np.ndarray, tissue: np.ndarray,
                   class_names: tuple[str, ...], areas: list[dict[str, Any]], title: str) -> Path:
    figure, (axis,) = _figure(1, thumbnail.shape)
    axis.imshow(overlay(thumbnail, mask, tissue, len(class_names)))
    axis.set_title(title, fontsize=9)
    axis.axis("off")
    labels = []
    for row in areas:
        area = f", {row['tissue_area_mm2']:.2f} mm²" if row["tissue_area_mm2"] is not None else ""
        labels.append(f"{row['class_name']}: {100 * row['tissue_share']:.1f}% of tissue{area}")
    _legend(axis, class_names, labels)
    return _save(figure, path)


def comparison_figure(path: Path, thumbnail: np.ndarray, truth: np.ndarray, mask: np.ndarray, tissue: np.ndarray,
                      class_names: tuple[str, ...], metrics: dict[str, Any], title: str) -> Path:
    """The image, then the truth and the prediction drawn over it on tissue (one image, one legend)."""
    figure, axes = _figure(3, thumbnail.shape)
    panels = (("H&E image", thumbnail), ("ground truth", overlay(thumbnail, truth, tissue, len(class_names))),
              ("prediction", overlay(thumbnail, mask, tissue, len(class_names))))
    for axis, (label, picture) in zip(axes, panels):
        axis.imshow(picture)
        axis.set_title(label, fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{title}\nmacro F1 {metrics['macro_f1']:.3f}   micro F1 (paper) {metrics['paper_micro_f1']:.3f}   "
                    f"pixel accuracy {metrics['pixel_accuracy']:.3f}   mean IoU {metrics['mean_iou']:.3f}", fontsize=9)
    _legend(axes[-1], class_names, list(class_names))
    return _save(figure, path)
