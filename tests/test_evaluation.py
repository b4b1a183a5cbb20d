"""Evaluation during training is `segclass.predict` on the same file: one sliding window, one tissue rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segclass.config import ModelConfig
from segclass.data.arrays import EvalImage
from segclass.evaluation import evaluate_images, predict_eval_image
from segclass.model import build_model
from segclass.predict.__main__ import main
from segclass.inference.regions import MemoryRegions
from segclass.inference.sliding import predict_mask, window_logits, window_starts
from segclass.preprocess.foreground import Foreground, foreground_mask
from segclass.model_file import load_model


def test_trainer_test_metrics_equal_predict_metrics_on_the_source_file(tiny_trained, tiny_data, tiny_root, tmp_path,
                                                                        capsys):
    checkpoint, report = tiny_trained  # last-epoch weights, the ones the report's test_* metrics describe
    (item,) = tiny_data.test
    source = tiny_root / "test" / "images" / f"{item.name}.tiff"
    assert item.source == source.relative_to(tiny_root).as_posix()  # the shards hold no absolute path
    truth = tiny_root / "test" / "masks" / f"{item.name}.png"  # level 0: twice the working size
    code = main([str(source), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--mask", str(truth), "--quiet"])
    assert code == 0, capsys.readouterr().err
    predicted = json.loads((tmp_path / f"{item.name}.json").read_text())
    assert predicted["stain_normalization"].startswith("macenko")
    assert predicted["precision"] == report["precision"] == "fp32"  # predicted in the trial's precision

    from_trainer = {key[len("test_"):]: value for key, value in report.items()
                    if key.startswith("test_") and not key.startswith("test_best_")}
    assert predicted["metrics"] == from_trainer  # identical, confusion matrices included
    err = capsys.readouterr().err
    assert f"{item.name}: macro F1 {from_trainer['macro_f1']:.3f}" in err  # said on the console, and pooled:
    assert f"pooled over 1 input(s) with ground truth: macro F1 {from_trainer['macro_f1']:.3f}" in err
    assert json.loads((tmp_path / "pooled_metrics.json").read_text())["macro_f1"] == from_trainer["macro_f1"]
    assert {"macro_f1", "paper_micro_f1", "tissue_macro_f1", "tissue_confusion_matrix"} <= set(from_trainer)
    tissue_pixels = np.sum(from_trainer["tissue_confusion_matrix"])
    assert 0 < tissue_pixels < np.sum(from_trainer["confusion_matrix"]), "the slide must hold glass and tissue"


def test_glass_is_class_0_and_tissue_metrics_score_tissue_only(tiny_trained, tiny_data):
    trained = load_model(tiny_trained[0])
    item = tiny_data.val[0]
    mask, tissue = predict_eval_image(trained.model, item, trained.num_classes)
    assert tissue.any() and not tissue.all() and not mask[~tissue].any()
    metrics = evaluate_images(trained.model, [item], trained.num_classes, trained.class_names, prefix="val_")
    assert metrics["val_pixel_accuracy"] == pytest.approx((mask == item.mask).mean())
    assert metrics["val_tissue_pixel_accuracy"] == pytest.approx((mask == item.mask)[tissue].mean())


def test_image_without_recorded_tissue_gets_it_from_its_pixels(tiny_trained, tiny_data):
    trained = load_model(tiny_trained[0])
    recorded = tiny_data.val[0]
    bare = EvalImage(recorded.name, recorded.rgb, recorded.mask)
    mask, tissue = predict_eval_image(trained.model, bare, trained.num_classes)
    assert np.array_equal(tissue, foreground_mask(recorded.rgb)) and not mask[~tissue].any()


def test_trial_sample_masks_are_the_masks_its_test_metrics_scored(tiny_data, tmp_path):
    """The run's sample masks come from the trainer's test pass (no second prediction) and equal predict's."""
    import io

    from PIL import Image

    from segclass.config import TrainConfig
    from segclass.ray_sweep.artifacts import trial_artifacts
    from segclass.training_loop import train

    seen: list[tuple[EvalImage, np.ndarray]] = []
    report = train(TrainConfig(mode="S", seg_fraction=0.5, epochs=1, batch_size=4), tiny_data, run_dir=tmp_path,
                   on_test_prediction=lambda item, mask: seen.append((item, mask)))
    assert [item.name for item, _ in seen] == [item.name for item in tiny_data.test]
    files = trial_artifacts(report, tmp_path / "checkpoint.pt", seen)
    trained = load_model(tmp_path / "checkpoint.pt")  # the last-epoch weights model.pt holds
    for item, mask in seen:
        expected, _ = predict_eval_image(trained.model, item, trained.num_classes)
        assert np.array_equal(mask, expected)
        stored = np.asarray(Image.open(io.BytesIO(files[f"masks/{item.name}_pred.png"])))
        assert max(item.mask.shape) <= 512 and np.array_equal(stored, expected)  # small enough to be kept whole


def _reference_average(model: torch.nn.Module, rgb: np.ndarray, patch: int, stride: int) -> np.ndarray:
    """Every window through the network, logits averaged pixel by pixel: the definition, written plainly."""
    height, width = rgb.shape[:2]
    sums, counts = None, np.zeros((height, width))
    for y in window_starts(height, patch, stride):
        for x in window_starts(width, patch, stride):
            logits = window_logits(model, rgb[None, y : y + patch, x : x + patch].copy()).numpy()[0]
            sums = np.zeros((logits.shape[0], height, width)) if sums is None else sums
            sums[:, y : y + patch, x : x + patch] += logits
            counts[y : y + patch, x : x + patch] += 1
    return (sums / counts).argmax(0).astype(np.uint8)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_streamed_windows_average_like_the_definition(tiny_data, batch_size):
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=4)).eval()
    rgb = np.ascontiguousarray(tiny_data.val[0].rgb[:200, :260])  # stride does not divide it: flush last windows
    everywhere = Foreground(np.ones(rgb.shape[:2], bool), 1.0)
    mask, stats = predict_mask(model, MemoryRegions(rgb, Path("crop")), everywhere, 4, 128, 64, batch_size)
    assert stats.windows == stats.windows_total == 3 * 4
    assert np.array_equal(mask, _reference_average(model, rgb, 128, 64))


@pytest.mark.parametrize("stride", [64, 48, 128, 200])
def test_windows_of_one_overlap_group_never_overlap(stride):
    from segclass.inference.sliding import overlap_groups

    starts = np.array([(y, x) for y in window_starts(530, 128, stride) for x in window_starts(611, 128, stride)])
    groups = overlap_groups(starts, 128, stride)
    for group in np.unique(groups):
        members = starts[groups == group]
        for i in range(len(members)):
            apart = np.abs(members[i + 1 :] - members[i]).max(axis=1)
            assert (apart >= 128).all(), (stride, members[i])


@pytest.mark.parametrize("stride,batch_size", [(64, 5), (48, 32), (64, 1)])
def test_adds_by_overlap_group_give_the_same_bits_as_window_by_window(stride, batch_size):
    """The CUDA way of adding a batch's logits (one indexed add per group), run on the CPU."""
    from segclass.inference.sliding import _add_windows, _order_batches_by_group, overlap_groups

    height, width, patch = 230, 300, 128  # flush last windows in both directions
    windows = np.array([(y, x) for y in window_starts(height, patch, stride)
                        for x in window_starts(width, patch, stride)])
    groups = overlap_groups(windows, patch, stride)
    order = _order_batches_by_group(windows, groups, batch_size)
    windows, groups = windows[order], groups[order]
    generator = torch.Generator().manual_seed(stride)
    scale = torch.logspace(-3, 3, len(windows))[:, None, None, None]  # far apart: another order shows in the bits
    values = torch.randn(len(windows), patch, patch, 3, generator=generator) * scale
    sums = {}
    for batched in (False, True):
        total = torch.zeros(height, width, 3)
        for first in range(0, len(windows), batch_size):
            part = slice(first, first + batch_size)
            _add_windows(total, 0, windows[part], torch.from_numpy(windows[part]), groups[part] if batched else None,
                         values[part])
        sums[batched] = total
    assert torch.equal(sums[True], sums[False])
    model = build_model(ModelConfig(num_classes=4)).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    everywhere = Foreground(np.ones((height, width), bool), 1.0)
    masks = [predict_mask(model, MemoryRegions(rgb), everywhere, 4, patch, stride, batch_size, batched_adds=batched)[0]
             for batched in (False, True)]
    assert np.array_equal(*masks)
