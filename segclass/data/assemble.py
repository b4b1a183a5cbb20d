"""Put an adapter's pieces together into validated DatasetArrays."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.data.extract import PatchTable


def assemble(name: str, class_names: Sequence[str], seg: PatchTable, cls: PatchTable,
             val: Sequence[EvalImage], test: Sequence[EvalImage], patch_size: int) -> DatasetArrays:
    seg_arrays, cls_arrays = seg.arrays(patch_size), cls.arrays(patch_size)
    arrays = DatasetArrays(
        name=name,
        class_names=tuple(class_names),
        seg_images=seg_arrays["images"],
        seg_masks=seg_arrays["masks"],
        seg_labels=seg_arrays["labels"],
        cls_images=cls_arrays["images"],
        cls_labels=cls_arrays["labels"],
        val=tuple(val),
        test=tuple(test),
        seg_sources=seg_arrays["sources"],
        seg_coords=seg_arrays["coords"],
        cls_sources=cls_arrays["sources"],
        cls_coords=cls_arrays["coords"],
    )
    arrays.validate()
    return arrays


def resize_patch(rgb: np.ndarray, patch_size: int) -> np.ndarray:
    from PIL import Image

    if rgb.shape[:2] == (patch_size, patch_size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((patch_size, patch_size), Image.LANCZOS))
