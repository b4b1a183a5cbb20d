"""Device-resident batches: the same batches as the host path, and the trainer's numbers unchanged by them."""

import numpy as np
import pytest
import torch

from segclass.augment import draw_augmentation, rotate90
from segclass.batches import TrialBatches
from segclass.compute import place_model
from segclass.config import ModelConfig, TrainConfig
from segclass.model import build_model
from segclass.subsets import select_trial_patches
from segclass.training_loop import (IndexCycler, _epoch_generators, draw_epoch, iterations_per_epoch, train,
                                    train_one_epoch)


def _trial(data, mode="S+C"):
    config = TrainConfig(mode=mode, seg_fraction=0.5, epochs=1, batch_size=4)
    return config, select_trial_patches(config, data.seg_labels, data.cls_labels)


def test_resident_batches_are_the_host_batches(tiny_data):
    """The GPU path (patches uploaded once, gathered and augmented on the device) run on the CPU."""
    config, trial = _trial(tiny_data)
    cpu = torch.device("cpu")
    host = TrialBatches(tiny_data, trial, cpu, augmented=True, resident=False)
    resident = TrialBatches(tiny_data, trial, cpu, augmented=True, resident=True)
    assert resident.segmentation_patches.images.shape[0] == len(trial.seg)  # only the trial's own patches
    draws = draw_epoch(config, trial, 3, epoch=0)
    batches = list(zip(host.epoch(draws), resident.epoch(draws)))
    assert len(batches) == 3
    for host_batches, resident_batches in batches:
        for (x, y), (u, v) in zip(host_batches, resident_batches):
            assert torch.equal(x, u) and torch.equal(y, v)
            assert x.dtype == torch.float32 and y.dtype == torch.int64


def test_epoch_draws_are_those_of_the_iterations_in_order(tiny_data):
    """Drawing an epoch up front takes the rows and augmentation each iteration took when it drew its own."""
    config, trial = _trial(tiny_data)
    draws = draw_epoch(config, trial, 4, epoch=1)
    rng, generator = _epoch_generators(config.seed, 1)
    seg, cls = IndexCycler(trial.seg, rng), IndexCycler(trial.cls, rng)
    for i in range(4):
        assert np.array_equal(draws.seg_rows[i], seg.take(config.batch_size))
        expected = draw_augmentation(config.batch_size, generator)
        assert torch.equal(draws.seg_augment.turns[i], expected.turns)
        assert torch.equal(draws.seg_augment.factors[i], expected.factors)
        assert np.array_equal(draws.cls_rows[i], cls.take(config.batch_size))
        expected = draw_augmentation(config.batch_size, generator)
        assert torch.equal(draws.cls_augment.turns[i], expected.turns)
        assert torch.equal(draws.cls_augment.factors[i], expected.factors)


def test_rotation_by_gather_is_torch_rot90(tiny_data):
    images = torch.from_numpy(tiny_data.seg_images[:8].copy())
    masks = torch.from_numpy(tiny_data.seg_masks[:8].copy())
    turns = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    rotated, rotated_masks = rotate90(images, masks, turns)
    for i, k in enumerate(turns.tolist()):
        assert torch.equal(rotated[i], torch.rot90(images[i], k, dims=(0, 1)))
        assert torch.equal(rotated_masks[i], torch.rot90(masks[i], k, dims=(0, 1)))


# S+C, s = 50%, 2 epochs, batch 4 on the tiny dataset, trained by the trainer before device-resident batches
BEFORE = {"train_loss": [2.8671730756759644, 2.8823859095573425], "test_macro_f1": 0.2194379578251746,
          "test_paper_micro_f1": 0.551687242759034, "val_best_macro_f1": 0.31021199824643436}


def test_cpu_trainer_metrics_are_those_of_before(tiny_data):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the values above were measured (a sweep trial's one CPU)
    try:
        report = train(TrainConfig(mode="S+C", seg_fraction=0.5, epochs=2, batch_size=4), tiny_data, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert [h["train_loss"] for h in report["history"]] == pytest.approx(BEFORE["train_loss"], rel=1e-4)
    for key in ("test_macro_f1", "test_paper_micro_f1", "val_best_macro_f1"):
        assert report[key] == pytest.approx(BEFORE[key], abs=2e-3), key


def _one_epoch_losses(data, channels_last: bool) -> list[float]:
    config, trial = _trial(data)
    torch.manual_seed(config.seed)
    model = build_model(ModelConfig(num_classes=data.num_classes))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = TrialBatches(data, trial, torch.device("cpu"), augmented=True, channels_last=channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weights = torch.ones(data.num_classes)
    iterations = iterations_per_epoch(config, trial, len(data.seg_labels))
    losses = []
    for epoch in range(2):
        metrics = train_one_epoch(model, optimizer, config, batches, trial, weights, iterations, epoch,
                                  torch.device("cpu"))
        losses.append(metrics["train_loss"])
    return losses


def test_channels_last_changes_only_rounding(tiny_data):
    """The layout the GPU path uses gives the CPU path's losses up to float rounding."""
    assert _one_epoch_losses(tiny_data, True) == pytest.approx(_one_epoch_losses(tiny_data, False), rel=1e-3)


def test_placement_and_epoch_generators_are_pure():
    model = place_model(build_model(ModelConfig(num_classes=3)), "cpu")
    assert next(model.parameters()).device.type == "cpu"
    a, b = _epoch_generators(3, 2), _epoch_generators(3, 2)
    assert a[0].integers(1000) == b[0].integers(1000) and torch.equal(torch.rand(3, generator=a[1]),
                                                                        torch.rand(3, generator=b[1]))
