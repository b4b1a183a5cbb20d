"""A trial's training batches, assembled on the device the model runs on.

On a GPU a trial would otherwise spend most of each step on the host: gather
patches with numpy, convert them to float, augment and copy them over, while
the network itself takes a few milliseconds. `TrialBatches` therefore puts the
trial's own patches (uint8, about 50 KB each) on the device once, and each
batch is gathered, converted, augmented and normalized there.

Everything random about an epoch (which patches each iteration takes, how each
is rotated and jittered) is drawn on the host before the epoch starts
(`EpochDraws`) and moved to the device in one copy. A batch then needs nothing
from the host: no small copy per batch, each of which would make the host wait
for the GPU, so the host can queue the next steps while the GPU runs this one.

On the CPU the patches stay in the dataset's arrays (often read-only views of
the Ray object store) and a batch is one numpy gather, as before.

Both paths draw the same random numbers from the same generators in the same
order (batch order from numpy, augmentation from a CPU torch.Generator; only
the draws' *results* move to the device), so a trial sees the same batches on
either device, and a resumed trial replays what an uninterrupted one saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch

from segclass.augment import AugmentDraws, augment, normalize, to_input
from segclass.data.arrays import DatasetArrays
from segclass.subsets import TrialPatches


@dataclass(frozen=True)
class EpochDraws:
    """One epoch's random choices, drawn up front: per iteration, the rows of each kind and their augmentation.

    A kind the trial lacks is None; so are the augmentation draws when the
    trial trains without augmentation.
    """

    seg_rows: np.ndarray | None  # iterations x B dataset rows
    cls_rows: np.ndarray | None
    seg_augment: AugmentDraws | None  # stacked: iterations x B
    cls_augment: AugmentDraws | None

    @property
    def iterations(self) -> int:
        rows = self.seg_rows if self.seg_rows is not None else self.cls_rows
        return 0 if rows is None else len(rows)


class DevicePatches:
    """Images (and masks or labels) of one patch kind, gathered by dataset row."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray, device: torch.device,
                 resident: bool) -> None:
        self.resident = resident
        if resident:  # only the trial's rows, once; dataset row -> position by binary search
            self.rows = np.asarray(rows)
            self.images = torch.from_numpy(np.ascontiguousarray(images[self.rows])).to(device)
            self.targets = torch.from_numpy(np.ascontiguousarray(targets[self.rows])).to(device)
        else:
            self.images, self.targets = images, targets
        self.device = device

    def locate(self, rows: np.ndarray) -> Located:
        """What `gather` takes for dataset `rows`: positions on the device (resident), else the rows themselves."""
        if self.resident:
            return torch.from_numpy(np.searchsorted(self.rows, rows)).to(self.device)
        return rows

    def gather(self, located: Located) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x H x W x 3 uint8 images, targets) of rows `located` by `locate`, on the device."""
        if self.resident:
            return self.images.index_select(0, located), self.targets.index_select(0, located)
        # fancy indexing copies (writable, contiguous); the copy to the device is a no-op on the CPU
        return (torch.from_numpy(self.images[located]).to(self.device),
                torch.from_numpy(np.asarray(self.targets[located])).to(self.device))


Batch = tuple[torch.Tensor, torch.Tensor]
#: What `DevicePatches.gather` takes: positions on the device (resident patches) or dataset rows (host arrays).
Located = np.ndarray | torch.Tensor


class _KindOnDevice(NamedTuple):
    """One kind's rows for a whole epoch, located for `gather`, and its augmentation draws, on the device."""

    located: Located  # iterations x B
    augment: AugmentDraws | None  # iterations x B, or None: not augmented

    def at(self, iteration: int) -> tuple[Located, AugmentDraws | None]:
        return self.located[iteration], None if self.augment is None else self.augment[iteration]


class TrialBatches:
    """Model-ready batches of a trial's segmentation and classification patches."""

    def __init__(self, data: DatasetArrays, trial: TrialPatches, device: torch.device, augmented: bool,
                 channels_last: bool = False, resident: bool | None = None) -> None:
        resident = device.type != "cpu" if resident is None else resident
        self.segmentation_patches = DevicePatches(data.seg_images, data.seg_masks, trial.seg, device, resident)
        self.classification_patches = DevicePatches(data.cls_images, data.cls_labels, trial.cls, device, resident)
        self.augmented = augmented
        self.channels_last = channels_last
        self.device = device

    def _images(self, images_uint8: torch.Tensor, masks: torch.Tensor | None,
                draws: AugmentDraws | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.augmented and draws is not None:
            images, masks = augment(images_uint8, masks, draws)
        else:
            images = to_input(images_uint8)
        images = normalize(images)
        # otherwise the layout stays what the gather gave (NHWC bytes viewed as NCHW), as it always was
        return (images.contiguous(memory_format=torch.channels_last) if self.channels_last else images), masks

    def segmentation(self, located: Located, draws: AugmentDraws | None) -> Batch:
        """(normalized images, long masks) of segmentation rows `located` (see `DevicePatches.locate`)."""
        images, masks = self.segmentation_patches.gather(located)
        images, masks = self._images(images, masks, draws)
        return images, masks.long()

    def classification(self, located: Located, draws: AugmentDraws | None) -> Batch:
        """(normalized images, long labels) of classification rows `located`."""
        images, labels = self.classification_patches.gather(located)
        images, _ = self._images(images, None, draws)
        return images, labels.long()

    def _on_device(self, rows: np.ndarray | None, patches: DevicePatches,
                   augment_draws: AugmentDraws | None) -> _KindOnDevice | None:
        """An epoch's rows of one kind, located for `gather`, and its augmentation, on the device in one copy each."""
        if rows is None:
            return None
        located = patches.locate(rows.ravel())
        located = located.view(rows.shape) if isinstance(located, torch.Tensor) else located.reshape(rows.shape)
        return _KindOnDevice(located, augment_draws.to(self.device) if augment_draws is not None and self.augmented
                             else None)

    def epoch(self, draws: EpochDraws) -> Iterator[tuple[Batch | None, Batch | None]]:
        """(segmentation batch, classification batch) per iteration; None for a kind the trial lacks."""
        seg = self._on_device(draws.seg_rows, self.segmentation_patches, draws.seg_augment)
        cls = self._on_device(draws.cls_rows, self.classification_patches, draws.cls_augment)
        for i in range(draws.iterations):
            yield (self.segmentation(*seg.at(i)) if seg else None,
                   self.classification(*cls.at(i)) if cls else None)
