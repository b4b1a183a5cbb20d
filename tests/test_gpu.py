"""What only a CUDA device can show: the host does not wait for it per step or per window, and its stitching is exact.

Skipped without CUDA (the CI machine has none); `benchmarks/gpu_check.sh`
runs them first on a lent GPU. Waits are counted with PyTorch's sync debug
mode, which warns at the operations through which PyTorch makes the host
wait for the GPU (copies, `.item()`, ...; not cuDNN's or the allocator's own).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from segclass.batches import TrialBatches
from segclass.compute import place_model
from segclass.config import ModelConfig, TrainConfig
from segclass.model import build_model
from segclass.inference.regions import MemoryRegions
from segclass.inference.sliding import _add_windows, _order_batches_by_group, overlap_groups, predict_mask, window_starts
from segclass.preprocess.foreground import Foreground
from segclass.subsets import select_trial_patches
from segclass.training_loop import train_one_epoch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _host_waits(work) -> int:
    """How many times `work()` made the host wait for the GPU."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_host_waits_per_epoch_do_not_grow_with_its_iterations(tiny_data):
    device = torch.device("cuda")
    config = TrainConfig(mode="S+C", seg_fraction=0.5, epochs=1, batch_size=4)
    trial = select_trial_patches(config, tiny_data.seg_labels, tiny_data.cls_labels)
    model = place_model(build_model(ModelConfig(num_classes=tiny_data.num_classes)), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    batches = TrialBatches(tiny_data, trial, device, augmented=True, channels_last=True)
    weights = torch.ones(tiny_data.num_classes, device=device)

    def epoch(iterations: int):
        return lambda: train_one_epoch(model, optimizer, config, batches, trial, weights, iterations, 0, device)

    epoch(3)()  # warm-up: cuDNN picks its kernels, the caches fill
    few, many = _host_waits(epoch(2)), _host_waits(epoch(8))
    assert few == many, f"{few} waits in a 2-iteration epoch, {many} in an 8-iteration one"


def test_host_waits_per_image_do_not_grow_with_its_batches(tiny_data):
    device = torch.device("cuda")
    model = place_model(build_model(ModelConfig(num_classes=4)), device).eval()
    rgb = np.ascontiguousarray(np.tile(tiny_data.val[0].rgb[:128], (1, 8, 1))[:, :2048])  # one row of windows
    everywhere = Foreground(np.ones(rgb.shape[:2], bool), 1.0)

    def predict(batch_size: int):
        return lambda: predict_mask(model, MemoryRegions(rgb), everywhere, 4, 128, 64, batch_size, device)

    predict(8)()  # warm-up
    waits = {batch: _host_waits(predict(batch)) for batch in (4, 31)}  # 8 batches against 1
    assert waits[4] == waits[31], waits


def test_grouped_adds_on_cuda_give_the_bits_of_window_by_window_adds_on_the_cpu():
    height, width, patch, stride, batch_size = 230, 300, 128, 64, 7
    windows = np.array([(y, x) for y in window_starts(height, patch, stride)
                        for x in window_starts(width, patch, stride)])
    groups = overlap_groups(windows, patch, stride)
    order = _order_batches_by_group(windows, groups, batch_size)
    windows, groups = windows[order], groups[order]
    generator = torch.Generator().manual_seed(0)
    scale = torch.logspace(-3, 3, len(windows))[:, None, None, None]  # far apart: another order shows in the bits
    values = torch.randn(len(windows), patch, patch, 5, generator=generator) * scale
    cpu, cuda = torch.zeros(height, width, 5), torch.zeros(height, width, 5, device="cuda")
    coords = torch.from_numpy(windows)
    for first in range(0, len(windows), batch_size):
        part = slice(first, first + batch_size)
        _add_windows(cpu, 0, windows[part], coords[part], None, values[part])
        _add_windows(cuda, 0, windows[part], coords[part].cuda(), groups[part], values[part].cuda())
    assert torch.equal(cuda.cpu(), cpu)


def test_predict_on_cuda_is_deterministic(tiny_data):
    model = place_model(build_model(ModelConfig(num_classes=4)), "cuda").eval()
    rgb = np.ascontiguousarray(tiny_data.val[0].rgb)
    tissue = Foreground(np.ones(rgb.shape[:2], bool), 1.0)
    first, second = (predict_mask(model, MemoryRegions(rgb, Path("val")), tissue, 4, batch_size=5, device="cuda")[0]
                     for _ in range(2))  # several batches, with flush windows
    assert np.array_equal(first, second)
