"""The one sliding-window prediction: a whole image, streamed band by band.

Both `segclass.predict` (slides and images from files) and the trainer's
evaluation (validation every epoch, test at the end; images held in memory,
`segclass.evaluation`) call `predict_mask`, so a model's sweep metrics and
its predicted masks come from the same windows, the same stitching and the
same tissue rule.

Windows are patch-sized with a stride (half a patch by default), the last
one in each direction flush with the image's edge; images smaller than a
window are padded with white glass. Logits of overlapping windows are
averaged. Windows are visited row by row, `batch_size` at a time through the
network; the RGB rows and the logit sums are kept only for the band of rows
that windows still touch, and each finished row is reduced to class ids at
once. Peak memory is then set by the image width and the batch size, not by
the slide's area; the one whole-image array is the uint8 class mask itself.

The RGB band and the logit sums live on the model's device: rows are read
(and stain-normalized) on the host once and copied over, a batch's windows
are cut from the band in one gather there (their coordinates went to the
device once, with the image's window list), and only the finished rows'
class ids come back to the host.

Adding a batch's logits into the sums. On the CPU, window by window in
row-major order, one slice add each (an indexed add of that size measured
20-50x slower there: 26-62 ms against 1.2 ms per batch of 32). On CUDA a
launch per window would be host work per window, so windows are put in
*overlap groups* (`overlap_groups`): with m = ceil(patch / stride), windows
whose starts have the same residues (start / stride mod m) in both
directions are at least a patch apart and never overlap; the flush last
windows form groups of their own. Each batch is ordered by group and each
group is one `index_add_` in which no pixel occurs twice, so every element
gets one exact float add and the order of adds is fixed. The group order
differs from row-major order, so the CPU and CUDA add overlapping logits in
a different order (they differ more than that anyway: CUDA runs the network
in bf16); a test runs the grouped adds on the CPU and checks they give the
bits of window-by-window adds in the same order. An add over the whole batch
at once would sum overlaps in a varying order, so evaluation and prediction
of one image could disagree.

Only windows that touch the foreground are run through the network; pixels
outside the foreground are class 0 (background folds into the first class, as
in the paper's masks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from segclass.augment import normalize, to_input
from segclass.compute import autocast
from segclass.inference.regions import Regions
from segclass.preprocess.foreground import Foreground

Transform = Callable[[np.ndarray], np.ndarray]

#: Windows per forward pass, for evaluation and (by default) prediction alike.
BATCH_SIZE = 32

__all__ = ["BATCH_SIZE", "Foreground", "PredictionStats", "overlap_groups", "predict_mask", "window_logits",
           "window_starts"]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with the last window flush to the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


@torch.no_grad()
def window_logits(model: torch.nn.Module, windows: np.ndarray | torch.Tensor,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """N x C x P x P float32 mask logits, on `device`, of N x P x P x 3 uint8 windows.

    The uint8 windows are on the device before the float conversion: a quarter
    of the bytes to copy. The network runs in the precision in force
    (`segclass.compute`): the trial's, in its evaluation and in predict.
    """
    windows = torch.from_numpy(windows) if isinstance(windows, np.ndarray) else windows
    with autocast(device):
        return model.forward_masks(normalize(to_input(windows.to(device)))).float()


def overlap_groups(windows: np.ndarray, patch_size: int, stride: int) -> np.ndarray:
    """Group number of each (y, x) window start: two windows of one group never overlap (module docstring)."""
    repeat = max(1, -(-patch_size // stride))

    def axis_class(starts: np.ndarray) -> np.ndarray:  # residue on the stride grid; the flush start: its own class
        return np.where(starts % stride == 0, (starts // stride) % repeat, repeat)

    return axis_class(windows[:, 0]) * (repeat + 1) + axis_class(windows[:, 1])


def _order_batches_by_group(windows: np.ndarray, groups: np.ndarray, batch_size: int) -> np.ndarray:
    """Positions that sort each batch of `batch_size` windows by group, keeping row-major order within a group."""
    return np.lexsort((groups, np.arange(len(windows)) // batch_size))


def _crop_windows(band: torch.Tensor, top: int, coords: torch.Tensor, patch_size: int) -> torch.Tensor:
    """N x P x P x 3 windows at N x 2 (y, x) `coords` (on the band's device) from a band of rows starting at `top`."""
    offsets = torch.arange(patch_size, device=band.device)
    ys = (coords[:, 0] - top)[:, None] + offsets  # N x P
    xs = coords[:, 1][:, None] + offsets
    return band[ys[:, :, None], xs[:, None, :]]


def _add_windows(sums: torch.Tensor, top: int, starts: np.ndarray, coords: torch.Tensor, groups: np.ndarray | None,
                 values: torch.Tensor) -> None:
    """sums[window] += values[window] for a batch's windows at (y, x) `starts` (`coords` on the device).

    `groups` None: window by window, in the batch's order (the CPU). Otherwise
    the batch is ordered by group and each group is one `index_add_` over
    flat pixel indices: no pixel twice in a group, so each element gets one
    exact float add, and no range check that reads a value back to the host
    (`index_put_` with accumulation does two per index tensor, and so does
    `index_add_` under `torch.use_deterministic_algorithms`, which turns it
    into that).
    """
    patch_size = values.shape[1]
    if groups is None:
        for (y, x), window in zip(starts.tolist(), values):
            sums[y - top : y - top + patch_size, x : x + patch_size] += window
        return
    width, channels = sums.shape[1], sums.shape[2]
    offsets = torch.arange(patch_size, device=sums.device)
    flat_sums, flat_values = sums.view(-1, channels), values.reshape(len(values), -1, channels)
    bounds = [0, *(np.flatnonzero(np.diff(groups)) + 1).tolist(), len(groups)]
    for start, end in zip(bounds[:-1], bounds[1:]):
        rows = (coords[start:end, 0] - top)[:, None, None] + offsets[None, :, None]
        columns = coords[start:end, 1][:, None, None] + offsets[None, None, :]
        flat_sums.index_add_(0, (rows * width + columns).reshape(-1), flat_values[start:end].reshape(-1, channels))


@dataclass
class PredictionStats:
    pixels: np.ndarray  # per class: pixels of the mask
    tissue_pixels: np.ndarray  # per class: pixels of the mask inside the foreground
    windows: int = 0  # windows the network saw
    windows_total: int = 0  # windows covering the image, foreground or not
    seconds: float = 0.0

    @property
    def tiles_per_second(self) -> float:
        return self.windows / self.seconds if self.seconds > 0 else 0.0


class _Band:
    """Rows [top, top + len) of a full-width array (numpy or torch), grown at the bottom and dropped at the top."""

    def __init__(self, empty, concatenate: Callable) -> None:
        self.top, self.data, self._concatenate = 0, empty, concatenate

    def extend_to(self, bottom: int, make_rows: Callable[[int, int], object]) -> None:
        have = self.top + len(self.data)
        if bottom > have:
            self.data = self._concatenate([self.data, make_rows(have, bottom)])

    def drop_before(self, row: int):
        """Remove and return the rows held before `row`; rows never held are skipped."""
        cut = min(len(self.data), max(0, row - self.top))
        head, self.data = self.data[:cut], self.data[cut:]
        self.top = max(self.top + cut, row) if not len(self.data) else self.top + cut
        return head


def _tissue_windows(foreground: Foreground, starts_y: list[int], starts_x: np.ndarray, patch_size: int,
                    width: int, height: int) -> np.ndarray:
    """N x 2 (y, x) of the windows touching tissue, row-major (an array: slides can have millions)."""
    rows = []
    for y in starts_y:
        if y >= height:
            continue
        tissue_columns = foreground.columns_with_tissue(y, min(y + patch_size, height), width)
        cumulative = np.zeros(max(width, int(starts_x[-1]) + patch_size) + 1, np.int64)
        cumulative[1 : width + 1] = np.cumsum(tissue_columns)
        cumulative[width + 1 :] = cumulative[width]
        kept = starts_x[cumulative[starts_x + patch_size] > cumulative[starts_x]]
        rows.append(np.stack([np.full(len(kept), y), kept], axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)


@torch.no_grad()
def predict_mask(
    model: torch.nn.Module, regions: Regions, foreground: Foreground, num_classes: int,
    patch_size: int = 128, stride: int = 64, batch_size: int = BATCH_SIZE, device: str | torch.device = "cpu",
    transform: Transform | None = None, progress=None, batched_adds: bool | None = None,
) -> tuple[np.ndarray, PredictionStats]:
    """H x W uint8 class mask of the whole image at the regions' working resolution.

    `transform` maps each band of RGB rows before the network sees it (stain
    normalization); `progress` is a tqdm bar, given its total once the
    foreground windows are known. `batched_adds` (default: on CUDA) adds a
    batch's logits one overlap group at a time instead of window by window in
    row-major order (module docstring).
    """
    width, height = regions.size
    # images smaller than a window are padded with white glass
    full_w, full_h = max(width, patch_size), max(height, patch_size)
    starts_y = window_starts(full_h, patch_size, stride)
    starts_x = np.asarray(window_starts(full_w, patch_size, stride))
    windows = _tissue_windows(foreground, starts_y, starts_x, patch_size, width, height)
    stats = PredictionStats(np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64), windows=len(windows),
                            windows_total=len(starts_x) * len(starts_y))

    if progress is not None:
        progress.reset(total=len(windows))

    def rgb_rows(top: int, bottom: int) -> np.ndarray:
        rows = np.full((bottom - top, full_w, 3), 255, np.uint8)
        real_bottom = min(bottom, height)
        if real_bottom > top:
            band = regions.read_rows(top, real_bottom)
            rows[: real_bottom - top, :width] = transform(band) if transform else band
        return rows

    def zero_rows(top: int, bottom: int) -> torch.Tensor:  # logit sums + window count, channels last
        return torch.zeros((bottom - top, full_w, num_classes + 1), dtype=torch.float32, device=device)

    def device_rgb_rows(top: int, bottom: int) -> torch.Tensor:  # read (and normalized) on the host, once per row
        return torch.from_numpy(rgb_rows(top, bottom)).to(device)

    mask = np.zeros((height, width), np.uint8)
    rgb = _Band(torch.zeros((0, full_w, 3), dtype=torch.uint8, device=device), torch.cat)
    sums = _Band(zero_rows(0, 0), torch.cat)

    def finish_rows(before: int) -> None:
        top = sums.top
        done = sums.drop_before(before)
        bottom = min(top + len(done), height)
        if bottom <= top:
            return
        block = done[: bottom - top, :width]
        classes = block[..., :num_classes].argmax(-1).masked_fill_(block[..., num_classes] == 0, 0)
        classes = classes.to(torch.uint8).cpu().numpy()
        tissue = foreground.rows(top, bottom, width)
        classes[~tissue] = 0
        mask[top:bottom] = classes
        stats.pixels += np.bincount(classes.ravel(), minlength=num_classes)
        stats.tissue_pixels += np.bincount(classes[tissue], minlength=num_classes)

    started = time.perf_counter()
    batched = torch.device(device).type == "cuda" if batched_adds is None else batched_adds
    groups = None  # window by window (the CPU), else the overlap group of each window, batches ordered by group
    if batched:
        groups = overlap_groups(windows, patch_size, stride)
        order = _order_batches_by_group(windows, groups, batch_size)
        windows, groups = windows[order], groups[order]
    coords = torch.from_numpy(windows).to(device)  # once: no copy, and no wait for the device, per batch
    model.eval()
    for first in range(0, len(windows), batch_size):
        last = min(first + batch_size, len(windows))
        chunk = windows[first:last]
        bottom = int(chunk[:, 0].max()) + patch_size
        rgb.extend_to(bottom, device_rgb_rows)
        sums.extend_to(bottom, zero_rows)
        logits = window_logits(model, _crop_windows(rgb.data, rgb.top, coords[first:last], patch_size), device)
        logits = logits.permute(0, 2, 3, 1)
        counted = torch.cat([logits, logits.new_ones(logits.shape[:3] + (1,))], dim=-1)
        _add_windows(sums.data, sums.top, chunk, coords[first:last], None if groups is None else groups[first:last],
                     counted)
        following = int(windows[last : last + batch_size, 0].min()) if last < len(windows) else full_h
        finish_rows(following)  # rows above the next batch's top are final
        rgb.drop_before(following)
        if progress is not None:
            progress.update(len(chunk))
    finish_rows(full_h)  # rows below the last window were never held: they stay background
    stats.pixels[0] += mask.size - stats.pixels.sum()  # rows no window reached: background
    stats.seconds = time.perf_counter() - started
    return mask, stats
