"""What a finished trial leaves in its MLflow run: confusion matrices, predicted masks, the model.

`model.pt` is the slim export of the last-epoch weights (the ones the test_
metrics describe), about 12 MB, in the trial's folder; the tracker logs it
as the run's MLflow model (`segclass.mlflow_model`), which
`python -m segclass.predict --checkpoint runs:/<run id>` reads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from segclass.data.arrays import EvalImage

#: Predicted masks are stored at most this large (nearest downsampling).
MAX_MASK_SIDE = 512
MAX_SAMPLES = 2
MODEL_ARTIFACT = "model.pt"


def _png(array: np.ndarray, num_classes: int | None = None) -> bytes:
    """PNG bytes; a class-id mask (`num_classes` given) is a palette PNG: its pixel values stay the class ids
    (what the report reads back), and the MLflow UI or any viewer shows them in the report's class colours."""
    from segclass.palette import class_colours

    image = Image.fromarray(array)
    if num_classes is not None:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(class_colours(num_classes).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _shrink(array: np.ndarray, nearest: bool) -> np.ndarray:
    height, width = array.shape[:2]
    scale = MAX_MASK_SIDE / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if nearest else Image.LANCZOS))


def confusion_figure(matrix: list[list[int]], class_names: list[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    axes.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (row, col), value in np.ndenumerate(counts):
        axes.text(col, row, f"{value}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def trial_artifacts(report: dict[str, Any], checkpoint_path: Path,
                    samples: Sequence[tuple[EvalImage, np.ndarray]]) -> dict[str, bytes]:
    """Files for the trial's MLflow run: model, confusion matrices, sample predicted masks.

    `samples` are (test image, predicted mask) pairs the trial's test evaluation
    made with the last-epoch weights (the first MAX_SAMPLES are kept), so the
    masks shown are the ones the test_ metrics scored, predicted once.
    """
    from segclass.model_file import export_model, load_model

    names = report["class_names"]
    trained = load_model(checkpoint_path)  # last-epoch weights
    files: dict[str, bytes] = {MODEL_ARTIFACT: export_model(trained)}
    for key, title in (("test_confusion_matrix", "test pixels"), ("holdout_cls_confusion_matrix", "held-out patches")):
        if key in report:
            files[f"{key}.json"] = json.dumps({"class_names": names, "matrix": report[key]}).encode()
            files[f"{key}.png"] = confusion_figure(report[key], names, title)
    for item, prediction in list(samples)[:MAX_SAMPLES]:
        files[f"masks/{item.name}_pred.png"] = _png(_shrink(prediction, nearest=True), len(names))
        files[f"masks/{item.name}_truth.png"] = _png(_shrink(item.mask, nearest=True), len(names))
        files[f"masks/{item.name}_image.png"] = _png(_shrink(item.rgb, nearest=False))
    return files
