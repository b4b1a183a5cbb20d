"""Sample outputs as in Figs. C.10-C.12, drawn over the H&E image they describe.

Built from the test image, true mask and predicted mask each trial logged as
MLflow artifacts (`masks/<image>_image.png`, `_truth.png`, `_pred.png`). The
first column shows the H&E image and the ground truth over it; then one row
per mode and one column per s (s <= 10%), every arm on the same test image
(the first one every trial of the figure logged). Classes are drawn over the image
on tissue only (`segclass.palette.overlay`, tissue found by the build's rule),
so glass stays glass and normal tissue has a colour of its own; one legend
names both. Each prediction carries its macro F1 on this image, over all its
pixels as the trials' test metric counts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segclass.analysis.figures import save_figure
from segclass.analysis.runs import artifact_path, init_labels
from segclass.palette import legend_handles, overlay

MAX_S = 10.0
MODES = ("S", "S+C", "S+C*")


def plot_samples(runs: pd.DataFrame, class_names_of: dict[str, list[str]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    seg = runs[(runs["study"] == "segmentation") & (runs["x"] <= MAX_S)] if not runs.empty else runs
    inits = init_labels(runs)
    for (dataset, variant, budget), frame in seg.groupby(["dataset", "variant", "budget"]):
        seed = frame["seed"].min()
        frame = frame[frame["seed"] == seed]
        cells = {(mode, float(x)): _sample_folder(frame[(frame["mode"] == mode) & np.isclose(frame["x"], x)])
                 for mode in MODES for x in sorted(frame["x"].unique())}
        cells = {key: folder for key, folder in cells.items() if folder is not None}
        image_name = _shared_image(cells.values())
        if image_name is None:
            continue
        modes = [m for m in MODES if any(mode == m for mode, _ in cells)]
        xs = sorted({x for _, x in cells})
        names = class_names_of.get(dataset) or []
        first = next(iter(cells.values()))
        image, truth = _read(first, image_name, "image"), _read(first, image_name, "truth")
        tissue = _tissue(image)
        predictions = {key: _read(folder, image_name, "pred") for key, folder in cells.items()}
        classes = max(len(names), int(truth.max()) + 1, *(int(p.max()) + 1 for p in predictions.values()))
        rows, columns = max(len(modes), 2), 1 + len(xs)
        figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns + 2.4, 2.6 * rows), squeeze=False)
        for axis in axes.ravel():
            axis.axis("off")
        axes[0][0].imshow(image)  # the first column: the image and its truth; then a column per s
        axes[0][0].set_title(f"H&E: test image {image_name}", fontsize=8, loc="left")
        axes[1][0].imshow(overlay(image, truth, tissue, classes))
        axes[1][0].set_title("ground truth", fontsize=8, loc="left")
        for (mode, x), prediction in predictions.items():
            axis = axes[modes.index(mode)][1 + xs.index(x)]
            axis.imshow(overlay(image, prediction, tissue, classes))
            axis.set_title(f"{mode}, s = {x:g}%", fontsize=8, loc="left")
            axis.text(3, image.shape[0] - 6, f"macro F1 {_macro_f1(truth, prediction, classes):.2f} (all pixels)",
                      fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "pad": 1})
        labels = names or [f"class {k}" for k in range(classes)]
        figure.legend(handles=legend_handles(labels), loc="center right", fontsize=8, frameon=False,
                      title="classes over tissue", title_fontsize=8)
        figure.suptitle(f"sample outputs: {dataset}, seed {seed} (variant {variant}, budget {budget}, "
                        f"init: {inits[dataset]})", fontsize=9)
        figure.tight_layout(rect=(0, 0, 1 - 2.2 / (2.6 * columns + 2.4), 1))
        paths += save_figure(figure, out_dir / f"samples_{dataset}_{variant}_{budget}", layout=False)
    return paths


def _sample_folder(match: pd.DataFrame) -> Path | None:
    """The `masks` artifact folder of the first run in `match`, if it logged one."""
    if match.empty:
        return None
    try:
        folder = artifact_path(match.iloc[0]["artifact_uri"], "masks")
    except Exception:  # noqa: BLE001 - a run without masks (or an unreachable store) is left out of the figure
        return None
    return folder if any(folder.glob("*_pred.png")) else None


def _shared_image(folders) -> str | None:
    """The first test image every folder holds a prediction, truth and image of, so all arms show one image."""
    folders = list(folders)
    if not folders:
        return None
    common = None
    for folder in folders:
        names = {p.name[: -len("_pred.png")] for p in folder.glob("*_pred.png")
                 if (folder / p.name.replace("_pred.png", "_image.png")).is_file()}
        common = names if common is None else common & names
    return min(common) if common else None


def _read(folder: Path, image_name: str, kind: str) -> np.ndarray:
    with Image.open(folder / f"{image_name}_{kind}.png") as file:
        return np.asarray(file.convert("RGB") if kind == "image" else file)


def _tissue(image: np.ndarray) -> np.ndarray:
    """Tissue by the rule the data build applies (saturation and opening), at the sample's size."""
    from segclass.preprocess.foreground import foreground_mask

    return foreground_mask(image)


def _macro_f1(truth: np.ndarray, prediction: np.ndarray, classes: int) -> float:
    from segclass.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(classes)
    matrix.update(truth, prediction)
    return float(matrix.macro_f1())
