"""Sample outputs as in Figs. C.10-C.12: ground truth on top, one row per mode, s <= 10 across.

Built from the predicted and true masks each trial logged as MLflow
artifacts; per-sample pixel accuracy in the top-left corner. BACH colours
(white normal, red benign, green in situ, blue invasive), extended by a fixed
palette for other class lists (`segclass.palette`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from segclass.analysis.figures import save_figure
from segclass.analysis.runs import artifact_path, init_labels
from segclass.palette import colourize

MAX_S = 10.0


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
        modes = [m for m in ("S", "S+C", "S+C*") if m in set(frame["mode"])]
        xs = sorted(frame["x"].unique())
        if not modes or not xs:
            continue
        figure, axes = plt.subplots(len(modes) + 1, len(xs), figsize=(max(2.2 * len(xs), 5.5), 2.2 * (len(modes) + 1)),
                                    squeeze=False)
        names = class_names_of.get(dataset, [])
        truth_shown = False
        for column, x in enumerate(xs):
            for row, mode in enumerate(modes, start=1):
                axis = axes[row][column]
                axis.axis("off")
                match = frame[(frame["mode"] == mode) & np.isclose(frame["x"], x)]
                if match.empty:
                    continue
                prediction, truth = _masks(match.iloc[0]["artifact_uri"])
                if prediction is None:
                    continue
                axis.imshow(colourize(prediction, len(names)))
                accuracy = float((prediction == truth).mean())
                axis.text(3, 12, f"pixel acc. {accuracy:.2f}", fontsize=8, color="black",
                          bbox={"facecolor": "white", "alpha": 0.7, "pad": 1})
                if column == 0:
                    axis.set_title(mode, fontsize=9, loc="left")
                if not truth_shown:
                    axes[0][0].imshow(colourize(truth, len(names)))
                    truth_shown = True
                axes[0][column].set_title(f"s = {x:g}%", fontsize=9)
            axes[0][column].axis("off")
        axes[0][0].text(3, 12, "ground truth", fontsize=8, bbox={"facecolor": "white", "alpha": 0.7, "pad": 1})
        figure.suptitle(f"sample outputs: {dataset}, seed {seed}\n(variant {variant}, budget {budget}, "
                        f"init: {inits[dataset]})", fontsize=10)
        if names:  # which colour is which class; white is also glass (class 0 off tissue)
            from matplotlib.patches import Patch

            from segclass.palette import class_colours

            colours = class_colours(len(names)) / 255.0
            figure.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=n) for c, n in zip(colours, names)],
                          loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False)
            figure.subplots_adjust(bottom=0.12)
        paths += save_figure(figure, out_dir / f"samples_{dataset}_{variant}_{budget}")
    return paths


def _masks(artifact_uri: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    try:
        folder = artifact_path(artifact_uri, "masks")
    except Exception:
        return None, None
    predictions = sorted(folder.glob("*_pred.png"))
    if not predictions:
        return None, None
    truth = predictions[0].with_name(predictions[0].name.replace("_pred.png", "_truth.png"))
    return np.asarray(Image.open(predictions[0])), np.asarray(Image.open(truth))
