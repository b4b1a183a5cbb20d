"""The in-memory form of a dataset: training patches plus whole evaluation images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segclass.errors import DatasetError
from segclass.preprocess.foreground import Foreground


@dataclass(frozen=True)
class EvalImage:
    """A whole validation or test image, evaluated by sliding windows as `segclass.predict` predicts it."""

    name: str
    rgb: np.ndarray  # H x W x 3 uint8 at the working resolution; stain-normalized by the build when it normalizes
    mask: np.ndarray  # H x W uint8 class ids
    # where predict finds tissue on this image (recorded by the build); None: found on `rgb` when evaluated
    tissue: Foreground | None = None
    source: str = ""  # the file read at the working resolution, when there is one (predict runs on it)


@dataclass(frozen=True)
class DatasetArrays:
    """Everything a trial reads. Arrays are uint8 so they are cheap to share read-only."""

    name: str
    class_names: tuple[str, ...]
    seg_images: np.ndarray  # N x P x P x 3 uint8
    seg_masks: np.ndarray  # N x P x P uint8
    seg_labels: np.ndarray  # N: class the patch was centred on (stratifies subsets)
    cls_images: np.ndarray  # M x P x P x 3 uint8
    cls_labels: np.ndarray  # M int64
    val: tuple[EvalImage, ...] = field(default_factory=tuple)
    test: tuple[EvalImage, ...] = field(default_factory=tuple)
    # provenance, kept in the shards: source image of each patch and its (top, left)
    seg_sources: np.ndarray | None = None
    seg_coords: np.ndarray | None = None
    cls_sources: np.ndarray | None = None
    cls_coords: np.ndarray | None = None
    # how whole images were turned into model input (magnification, foreground, stain reference);
    # trained models carry it so prediction on new slides repeats it
    preprocessing: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def validate(self) -> None:
        """Fail early, naming the dataset, on shapes or class ids that make no sense."""
        c = self.num_classes
        if len(self.seg_images) != len(self.seg_masks) or len(self.seg_images) != len(self.seg_labels):
            raise DatasetError(f"{self.name}: segmentation images, masks and labels differ in count")
        if len(self.cls_images) != len(self.cls_labels):
            raise DatasetError(f"{self.name}: classification images and labels differ in count")
        for what, values in (("segmentation masks", self.seg_masks), ("classification labels", self.cls_labels)):
            if values.size and int(values.max()) >= c:
                raise DatasetError(
                    f"{self.name}: {what} hold class id {int(values.max())} but there are only {c} classes "
                    f"({', '.join(self.class_names)}); fix classes.txt or the masks"
                )
        for image in self.val + self.test:
            if image.mask.size and int(image.mask.max()) >= c:
                raise DatasetError(f"{self.name}: mask of {image.name} holds class id {int(image.mask.max())} >= {c}")
        if not self.val:
            raise DatasetError(f"{self.name}: no validation images")
        if not self.test:
            raise DatasetError(f"{self.name}: no test images")
