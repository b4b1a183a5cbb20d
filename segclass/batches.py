"""A trial's training batches, assembled on the device the model runs on.

On a GPU a trial would otherwise spend most of each step on the host: gather
patches with numpy, convert them to float, augment and copy them over, while
the network itself takes a few milliseconds. `TrialBatches` therefore puts the
trial's own patches (uint8, about 50 KB each) on the device once, and each
batch is gathered, converted, augmented and normalized there.

On the CPU the patches stay in the dataset's arrays (often read-only views of
the Ray object store) and a batch is one numpy gather, as before.

Both paths draw the same random numbers from the same generators in the same
order (batch order from numpy, augmentation from a CPU torch.Generator; only
the draws' *results* move to the device), so a trial sees the same batches on
either device, and a resumed trial replays what an uninterrupted one saw.
"""

from __future__ import annotations

import numpy as np
import torch

from segclass.augment import augment, normalize, to_input
from segclass.data.arrays import DatasetArrays
from segclass.subsets import TrialPatches


class DevicePatches:
    """Images (and masks or labels) of one patch kind, gathered by dataset index."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, rows: np.ndarray, device: torch.device,
                 resident: bool) -> None:
        self.resident = resident
        if resident:  # only the trial's rows, once; dataset index -> position by binary search
            self.rows = np.asarray(rows)
            self.images = torch.from_numpy(np.ascontiguousarray(images[self.rows])).to(device)
            self.targets = torch.from_numpy(np.ascontiguousarray(targets[self.rows])).to(device)
        else:
            self.images, self.targets = images, targets
        self.device = device

    def gather(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x H x W x 3 uint8 images, targets) of dataset rows `index`, on the device."""
        if self.resident:
            positions = torch.from_numpy(np.searchsorted(self.rows, index)).to(self.device)
            return self.images.index_select(0, positions), self.targets.index_select(0, positions)
        # fancy indexing copies (writable, contiguous); the copy to the device is a no-op on the CPU
        return (torch.from_numpy(self.images[index]).to(self.device),
                torch.from_numpy(np.asarray(self.targets[index])).to(self.device))


class TrialBatches:
    """Model-ready batches of a trial's segmentation and classification patches."""

    def __init__(self, data: DatasetArrays, trial: TrialPatches, device: torch.device, augmented: bool,
                 channels_last: bool = False, resident: bool | None = None) -> None:
        resident = device.type != "cpu" if resident is None else resident
        self.segmentation_patches = DevicePatches(data.seg_images, data.seg_masks, trial.seg, device, resident)
        self.classification_patches = DevicePatches(data.cls_images, data.cls_labels, trial.cls, device, resident)
        self.augmented = augmented
        self.channels_last = channels_last

    def _images(self, images_uint8: torch.Tensor, masks: torch.Tensor | None,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = to_input(images_uint8)
        if self.augmented:
            images, masks = augment(images, masks, generator)
        images = normalize(images)
        # otherwise the layout stays what the gather gave (NHWC bytes viewed as NCHW), as it always was
        return (images.contiguous(memory_format=torch.channels_last) if self.channels_last else images), masks

    def segmentation(self, index: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized images, long masks) of segmentation rows `index`."""
        images, masks = self.segmentation_patches.gather(index)
        images, masks = self._images(images, masks, generator)
        return images, masks.long()

    def classification(self, index: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized images, long labels) of classification rows `index`."""
        images, labels = self.classification_patches.gather(index)
        images, _ = self._images(images, None, generator)
        return images, labels.long()
