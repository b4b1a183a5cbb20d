"""Streaming sliding-window prediction over a whole slide, band by band.

The windows and their stride are those of evaluation (`window_starts`), and
overlapping windows' logits are averaged the same way, so on an image that
fits in memory the streamed mask equals `predict_logits(...).argmax(0)`. What
differs is memory: windows are visited row by row in batches, the RGB rows
and the logit sums are kept only for the band of rows that windows still
touch, and each finished row is reduced to class ids at once. Peak memory is
then set by the image width and the batch size, not by the slide's area; the
one whole-slide array is the uint8 class mask itself.

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

from segclass.evaluation import window_logits, window_starts
from segclass.predict.regions import Regions

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Foreground:
    """A tissue mask computed on a thumbnail, looked up at full resolution by nearest neighbour."""

    mask: np.ndarray  # h x w bool, at `scale` of the working resolution
    scale: float

    def rows(self, top: int, bottom: int, width: int) -> np.ndarray:
        """(bottom - top) x width bool; rows or columns past the thumbnail are background."""
        height_small, width_small = self.mask.shape
        row_index = np.floor((np.arange(top, bottom) + 0.5) * self.scale).astype(np.int64)
        col_index = np.floor((np.arange(width) + 0.5) * self.scale).astype(np.int64)
        rows_ok, cols_ok = row_index < height_small, col_index < width_small
        out = np.zeros((bottom - top, width), bool)
        out[np.ix_(rows_ok, cols_ok)] = self.mask[np.ix_(row_index[rows_ok], col_index[cols_ok])]
        return out


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
    """Rows [top, top + len) of a full-width array that grows at the bottom and is dropped at the top."""

    def __init__(self, width: int, channels: int, dtype) -> None:
        self.top = 0
        self.data = np.zeros((0, width, channels), dtype)

    def extend_to(self, bottom: int, make_rows: Callable[[int, int], np.ndarray]) -> None:
        have = self.top + len(self.data)
        if bottom > have:
            self.data = np.concatenate([self.data, make_rows(have, bottom)])

    def drop_before(self, row: int) -> np.ndarray:
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
        tissue_columns = foreground.rows(y, min(y + patch_size, height), width).any(axis=0)
        cumulative = np.zeros(max(width, int(starts_x[-1]) + patch_size) + 1, np.int64)
        cumulative[1 : width + 1] = np.cumsum(tissue_columns)
        cumulative[width + 1 :] = cumulative[width]
        kept = starts_x[cumulative[starts_x + patch_size] > cumulative[starts_x]]
        rows.append(np.stack([np.full(len(kept), y), kept], axis=1))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 2), np.int64)


def predict_mask(
    model: torch.nn.Module, regions: Regions, foreground: Foreground, num_classes: int,
    patch_size: int = 128, stride: int = 64, batch_size: int = 32, device: str | torch.device = "cpu",
    transform: Transform | None = None, progress=None,
) -> tuple[np.ndarray, PredictionStats]:
    """H x W uint8 class mask of the whole image at the regions' working resolution.

    `transform` maps each band of RGB rows before the network sees it (stain
    normalization); `progress` is a tqdm bar, given its total once the
    foreground windows are known.
    """
    width, height = regions.size
    # images smaller than a window are padded with white glass, as in evaluation
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

    def zero_rows(top: int, bottom: int) -> np.ndarray:
        return np.zeros((bottom - top, full_w, num_classes + 1), np.float32)  # logit sums + window count

    mask = np.zeros((height, width), np.uint8)
    rgb, sums = _Band(full_w, 3, np.uint8), _Band(full_w, num_classes + 1, np.float32)

    def finish_rows(before: int) -> None:
        top = sums.top
        done = sums.drop_before(before)
        bottom = min(top + len(done), height)
        if bottom <= top:
            return
        classes = done[: bottom - top, :width, :num_classes].argmax(-1).astype(np.uint8)
        classes[done[: bottom - top, :width, num_classes] == 0] = 0
        tissue = foreground.rows(top, bottom, width)
        classes[~tissue] = 0
        mask[top:bottom] = classes
        stats.pixels += np.bincount(classes.ravel(), minlength=num_classes)
        stats.tissue_pixels += np.bincount(classes[tissue], minlength=num_classes)

    started = time.perf_counter()
    model.eval()
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        bottom = int(chunk[-1][0]) + patch_size
        rgb.extend_to(bottom, rgb_rows)
        sums.extend_to(bottom, zero_rows)
        crops = np.stack([rgb.data[y - rgb.top : y - rgb.top + patch_size, x : x + patch_size] for y, x in chunk])
        logits = window_logits(model, crops, device).permute(0, 2, 3, 1).numpy()
        for (y, x), window in zip(chunk, logits):
            target = sums.data[y - sums.top : y - sums.top + patch_size, x : x + patch_size]
            target[..., :num_classes] += window
            target[..., num_classes] += 1
        following = int(windows[first + batch_size][0]) if first + batch_size < len(windows) else full_h
        finish_rows(following)  # rows above the next window's top are final
        rgb.drop_before(following)
        if progress is not None:
            progress.update(len(chunk))
    sums.extend_to(full_h, zero_rows)  # rows no window touched: background
    finish_rows(full_h)
    stats.pixels[0] += mask.size - stats.pixels.sum()  # rows no window reached: background
    stats.seconds = time.perf_counter() - started
    return mask, stats
