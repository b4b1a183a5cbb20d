"""The two-step trainer of paper 2.2-2.3, readable top to bottom.

Each iteration takes one batch of segmentation patches and one batch of
classification patches. Step 1: segmentation patches -> encoder -> segmentation
head -> weighted pixel cross-entropy against the mask. Step 2: classification
patches -> encoder -> segmentation head -> classification head -> cross-entropy
against the label. One Adam step on the sum. A trial without one kind of patch
uses the other loss alone.

The trainer knows nothing of Ray or MLflow: it takes a config and a dataset,
writes a checkpoint each epoch into `run_dir`, and calls `on_epoch(metrics)`.
The one-trial CLI, the tests and the Tune trainable all drive it the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import segclass
from segclass.augment import AugmentDraws, draw_augmentation
from segclass.batches import EpochDraws, TrialBatches
from segclass.checkpoint import FILENAME, best_filename, is_best_file, load_best, load_checkpoint, save_checkpoint
from segclass.compute import autocast, pick_device, place_model, precision_scope, resolve_precision, uses_channels_last
from segclass.config import PSEUDO_MASK_FLOOR, ModelConfig, TrainConfig
from segclass.data.arrays import DatasetArrays, EvalImage
from segclass.errors import CheckpointError, TrainingError
from segclass.evaluation import evaluate_images, evaluate_patches
from segclass.losses import class_weights, label_set_loss, pseudo_masks, weighted_pixel_loss
from segclass.model import ModelOutput, SegClassNet, build_model, pretrained_name
from segclass.subsets import TrialPatches, holdout_split, patch_fractions, select_trial_patches, trial_counts

log = logging.getLogger(__name__)

#: Config fields a resumed run may change; anything else must match the checkpoint.
_RESUMABLE_CHANGES = {"epochs"}


# ---------------------------------------------------------------------------
# small pure helpers
# ---------------------------------------------------------------------------
def patch_kinds(trial: TrialPatches) -> int:
    """How many batches an iteration runs: one per kind of patch (segmentation, classification) the trial has."""
    return _kinds(len(trial.seg), len(trial.cls))


def _kinds(seg: int, cls: int) -> int:
    return int(seg > 0) + int(cls > 0)


def iterations_per_epoch(config: TrainConfig, trial: TrialPatches, seg_total: int) -> int:
    """Iterations in one epoch under the trial's training budget (README "The sweep", budgets).

    `paper`: one pass over the trial's own patches, ceil(N_trial / (B x kinds)).
    `equal`: ceil(N_dataset / (2 B)) for every trial of the dataset: equal
    optimizer steps (not equal compute: an S+C step runs two batches, S one).
    `equal-images`: ceil(N_dataset / (2 B)) x 2 / kinds, so every trial trains on
    2 B x ceil(N_dataset / (2 B)) images an epoch: S runs twice the steps. The
    batch size stays the paper's B (a batch of 2B would change BatchNorm's
    statistics and Adam's step per image, a second difference between arms).
    """
    return _iterations(config, len(trial.seg), len(trial.cls), seg_total, trial.cls_pool)


def _iterations(config: TrainConfig, seg: int, cls: int, seg_total: int, cls_pool: int) -> int:
    kinds = _kinds(seg, cls)
    if kinds == 0:
        return 0
    if config.budget == "paper":
        return math.ceil((seg + cls) / (config.batch_size * kinds))
    steps = math.ceil((seg_total + cls_pool) / (2 * config.batch_size))
    return steps * 2 // kinds if config.budget == "equal-images" else steps


def batches_per_epoch(config: TrainConfig, data: DatasetArrays) -> int:
    """Forward-backward batches in one epoch of this trial: its share of a sweep's compute (the time estimate)."""
    seg_pool = cls_pool = None
    if config.study == "classification":  # the pools the held-out images leave
        split = holdout_split(data.cls_labels, data.cls_sources, data.seg_sources, len(data.seg_labels),
                              config.holdout_seed)
        seg_pool, cls_pool = len(split.seg_pool), len(split.cls_pool)
    return batches_per_count(config, len(data.seg_labels), len(data.cls_labels), seg_pool, cls_pool)


def batches_per_count(config: TrainConfig, seg_total: int, cls_total: int, seg_pool: int | None = None,
                      cls_pool: int | None = None) -> int:
    """`batches_per_epoch` of a dataset known by its patch counts alone (the paper's, in benchmarks/trial_cost.py).

    Without the classification study's pools (`trial_counts`), every patch counts as its own image.
    """
    seg, cls, pool = trial_counts(config, seg_total, cls_total, seg_pool, cls_pool)
    return _iterations(config, seg, cls, seg_total, pool) * _kinds(seg, cls)


def trial_class_weights(config: TrainConfig, data: DatasetArrays, trial: TrialPatches) -> np.ndarray:
    """Class weights from the pixel labels this trial trains on.

    With variant `released-code` the classification patches' constant masks are
    training masks too, so their pixels count.
    """
    counts = np.bincount(data.seg_masks[trial.seg].ravel(), minlength=data.num_classes).astype(np.float64)
    if config.variant == "released-code" and len(trial.cls):
        pixels = config.patch_size * config.patch_size
        counts += np.bincount(data.cls_labels[trial.cls], minlength=data.num_classes) * pixels
    return class_weights(counts[: data.num_classes])


def classification_terms(
    config: TrainConfig, output: ModelOutput, labels: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Loss terms of step 2 (classification patches) under the trial's variant."""
    terms = {"loss_cls": F.cross_entropy(output.class_logits, labels)}
    if config.variant == "released-code":  # the released code also fits a constant mask
        constant = labels.view(-1, 1, 1).expand(-1, *output.mask_logits.shape[-2:])
        terms["loss_cls_pixel"] = weighted_pixel_loss(output.mask_logits, constant, weights)
    elif config.variant == "label-set":  # on the low-resolution logits: the mask logits are their upsampling
        terms["loss_cls_pixel"] = label_set_loss(output.lowres_logits, labels, weights)
    elif config.variant == "pseudo-mask":
        targets = pseudo_masks(output.lowres_logits, labels, PSEUDO_MASK_FLOOR)
        terms["loss_cls_pixel"] = weighted_pixel_loss(output.lowres_logits, targets, weights)
    return terms


class IndexCycler:
    """Endless batches of indices, one shuffled pass after another.

    A kind with fewer patches than a batch needs (S at s = 1%) is cycled,
    reshuffled each pass, so every iteration still has a full batch.
    """

    def __init__(self, indices: np.ndarray, rng: np.random.Generator) -> None:
        self.indices, self.rng = np.asarray(indices), rng
        self.order, self.position = self.rng.permutation(self.indices), 0

    def take(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(self.indices), 0
            step = min(count, len(self.order) - self.position)
            out.append(self.order[self.position : self.position + step])
            self.position += step
            count -= step
        return np.concatenate(out)


def check_patches_available(config: TrainConfig, data: DatasetArrays) -> None:
    """Refuse a trial whose mode needs a kind of patch the dataset lacks for some class.

    Class 0 is exempt for segmentation patches: they are centred on labelled
    (non-background) regions, so background never has patches of its own.
    """
    seg_fraction, cls_fraction = patch_fractions(config.mode, config.seg_fraction, config.cls_fraction)
    needed = [("segmentation", data.seg_labels, seg_fraction, 1), ("classification", data.cls_labels, cls_fraction, 0)]
    for kind, labels, fraction, first_class in needed:
        if fraction <= 0:
            continue
        counts = np.bincount(labels, minlength=data.num_classes)
        empty = [data.class_names[c] for c in range(first_class, data.num_classes) if counts[c] == 0]
        if empty:
            raise TrainingError(
                f"mode {config.mode} trains on {kind} patches, but dataset {data.name} has none of class(es) "
                f"{', '.join(empty)}; add such patches (or drop the class from the class list) and rebuild the cache"
            )


def _epoch_generators(seed: int, epoch: int) -> tuple[np.random.Generator, torch.Generator]:
    """Batch order and augmentation for one epoch, a function of (seed, epoch) only."""
    torch_generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, 1]).integers(2**62)))
    return np.random.default_rng([seed, epoch, 0]), torch_generator


def draw_epoch(config: TrainConfig, trial: TrialPatches, iterations: int, epoch: int) -> EpochDraws:
    """Every random choice of one epoch, in the order the iterations make them (see `segclass.batches`)."""
    rng, generator = _epoch_generators(config.seed, epoch)
    streams = [IndexCycler(rows, rng) if len(rows) else None for rows in (trial.seg, trial.cls)]
    rows: list[list[np.ndarray]] = [[], []]
    draws: list[list[AugmentDraws]] = [[], []]
    for _ in range(iterations):
        for kind, stream in enumerate(streams):  # segmentation, then classification, as the steps run
            if stream is not None:
                rows[kind].append(stream.take(config.batch_size))
                if config.augment:
                    draws[kind].append(draw_augmentation(config.batch_size, generator))
    stacked = [np.stack(r) if r else None for r in rows]
    augmented = [AugmentDraws.stack(d) if d else None for d in draws]
    return EpochDraws(stacked[0], stacked[1], augmented[0], augmented[1])


#: Loss terms an iteration records, in the order of a row of the epoch's record.
LOSS_TERMS = ("loss", "loss_seg", "loss_cls", "loss_cls_pixel")


def _check_finite(record: np.ndarray, epoch: int, present: list[str]) -> None:
    """Raise on the first iteration whose loss was not finite (checked once an epoch: no wait per step)."""
    bad = np.flatnonzero(~np.isfinite(record[:, 0]))
    if len(bad):
        row = record[bad[0]]
        raise TrainingError(
            f"loss became {row[0]} at epoch {epoch + 1}, iteration {bad[0] + 1} "
            f"({', '.join(f'{k}={row[LOSS_TERMS.index(k)]:.4g}' for k in present)}); "
            "lower --lr or check the input patches for corrupt values"
        )


# ---------------------------------------------------------------------------
# one epoch of training
# ---------------------------------------------------------------------------
def train_one_epoch(
    model: SegClassNet, optimizer: torch.optim.Optimizer, config: TrainConfig, batches: TrialBatches,
    trial: TrialPatches, weights: torch.Tensor, iterations: int, epoch: int, device: torch.device,
) -> dict[str, float]:
    """One epoch of two-step iterations; the host waits for the device once, at the end.

    Each iteration's loss terms go into a record on the device, read back and
    checked for non-finite values when the epoch ends.
    """
    record = torch.zeros((iterations, len(LOSS_TERMS)), dtype=torch.float32, device=device)
    present: list[str] = []
    images_seen = 0
    model.train()
    for iteration, (seg_batch, cls_batch) in enumerate(batches.epoch(draw_epoch(config, trial, iterations, epoch))):
        terms: dict[str, torch.Tensor] = {}
        if seg_batch is not None:  # step 1: pixel-labelled patches, no classification head
            images, masks = seg_batch
            with autocast(device):
                mask_logits = model.forward_masks(images)
            terms["loss_seg"] = weighted_pixel_loss(mask_logits.float(), masks, weights)
            images_seen += len(images)
        if cls_batch is not None:  # step 2: image-labelled patches through the segmentation path
            images, labels = cls_batch
            with autocast(device):
                output = model(images)
            terms.update(classification_terms(config, output.float(), labels, weights))
            images_seen += len(images)
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        record[iteration] = torch.stack([loss.detach()] + [terms[k].detach() if k in terms else loss.new_zeros(())
                                                           for k in LOSS_TERMS[1:]])
        present = list(terms)
    values = record.cpu().numpy()
    _check_finite(values, epoch, present)
    count = max(1, iterations)
    result = {f"train_{key}": sum(values[:, column].tolist()) / count for column, key in enumerate(LOSS_TERMS)}
    result["train_images"] = float(images_seen)
    return result


# ---------------------------------------------------------------------------
# the whole trial
# ---------------------------------------------------------------------------
def train(
    config: TrainConfig,
    data: DatasetArrays,
    run_dir: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    device: str | None = None,
    *,
    checkpoint_every: int = 1,
    pretrained_state: dict[str, torch.Tensor] | None = None,
    on_resume: Callable[[list[dict[str, Any]]], None] | None = None,
    on_test_prediction: Callable[[EvalImage, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Train one trial and return its final report (test metrics, sizes, timing).

    With `run_dir`, a checkpoint is written there every `checkpoint_every`
    epochs (and after the last) and an existing one is resumed from, so an
    interrupted trial ends with exactly the weights of an uninterrupted one;
    `on_resume(history)` then sees the epochs the checkpoint already holds.
    Each epoch's metrics say whether a checkpoint was written (`checkpointed`).
    `pretrained_state` (a state dict the caller resolved once) replaces
    resolving `config.pretrained` here. `on_test_prediction(image, mask)` sees
    the last-epoch model's mask of each test image (the `test_` metrics' masks).
    The trial trains and is evaluated in `config.precision` (`auto`: bf16
    autocast on CUDA, float32 elsewhere); the report's `precision` says which.
    """
    target = pick_device(device)
    precision = resolve_precision(config.precision, target)
    config = config.replace(precision=precision)  # checkpoints hold what ran: a resume elsewhere cannot switch
    with precision_scope(precision):
        report = _train(config, data, run_dir, on_epoch, target, checkpoint_every=checkpoint_every,
                        pretrained_state=pretrained_state, on_resume=on_resume,
                        on_test_prediction=on_test_prediction)
    report["precision"] = precision
    return report


@dataclasses.dataclass
class _TrialRun:
    """What one trial's training holds while it runs: the model and optimizer, its patches and the epochs so far."""

    config: TrainConfig
    data: DatasetArrays
    device: torch.device
    model_config: ModelConfig
    model: SegClassNet
    optimizer: torch.optim.Optimizer
    trial: TrialPatches
    batches: TrialBatches
    weights: torch.Tensor
    iterations: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] = dataclasses.field(default_factory=lambda: {"epoch": -1, "val_macro_f1": -1.0})
    best_model: dict[str, torch.Tensor] | None = None  # in memory; on disk only when it changed
    best_saved: int = -1  # the epoch whose best-<epoch>.pt is on disk

    def evaluate(self, prefix: str, images, on_prediction=None) -> dict[str, Any]:
        return evaluate_images(self.model, images, self.data.num_classes, self.data.class_names,
                               self.config.patch_size, self.config.eval_stride, self.device, prefix,
                               on_prediction=on_prediction)


def _train(
    config: TrainConfig,
    data: DatasetArrays,
    run_dir: str | Path | None,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    device: torch.device,
    *,
    checkpoint_every: int = 1,
    pretrained_state: dict[str, torch.Tensor] | None = None,
    on_resume: Callable[[list[dict[str, Any]]], None] | None = None,
    on_test_prediction: Callable[[EvalImage, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """`train` inside the trial's precision scope: set up, resume, the epochs, the final report."""
    run = _set_up(config, data, device, pretrained_state)
    checkpoint_path = Path(run_dir) / FILENAME if run_dir else None
    if checkpoint_path and checkpoint_path.exists():
        _resume(run, checkpoint_path)
        if on_resume:
            on_resume(run.history)
    for epoch in range(run.start_epoch, config.epochs):
        metrics = _epoch(run, epoch)
        metrics["checkpointed"] = bool(checkpoint_path) and ((epoch + 1) % max(1, checkpoint_every) == 0
                                                               or epoch + 1 == config.epochs)
        if metrics["checkpointed"]:
            _save(run, checkpoint_path, epoch + 1)
        _log_epoch(metrics, config.epochs)
        if on_epoch:
            on_epoch(metrics)
    return _final_report(run, on_test_prediction)


def _set_up(config: TrainConfig, data: DatasetArrays, device: torch.device,
            pretrained_state: dict[str, torch.Tensor] | None) -> _TrialRun:
    """The trial's patches, class weights, seeded model, batches and optimizer."""
    data.validate()
    check_patches_available(config, data)
    trial = select_trial_patches(config, data.seg_labels, data.cls_labels, data.cls_sources, data.seg_sources)
    iterations = iterations_per_epoch(config, trial, len(data.seg_labels))
    weights = torch.tensor(trial_class_weights(config, data, trial), dtype=torch.float32, device=device)
    model_config = ModelConfig(num_classes=data.num_classes, variant=config.variant)
    with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        model = build_model(model_config, pretrained_state if pretrained_state is not None else config.pretrained)
        model = place_model(model, device)
    batches = TrialBatches(data, trial, device, config.augment, channels_last=uses_channels_last(device))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    log.info(
        "trial %s mode=%s s=%g c=%g seed=%d variant=%s budget=%s init=%s: %d seg + %d cls patches, "
        "%d iterations/epoch on %s in %s", data.name, config.mode, config.seg_fraction, config.cls_fraction,
        config.seed, config.variant, config.budget, pretrained_name(config.pretrained), len(trial.seg),
        len(trial.cls), iterations, device, config.precision,
    )
    return _TrialRun(config, data, device, model_config, model, optimizer, trial, batches, weights, iterations)


def _resume(run: _TrialRun, checkpoint_path: Path) -> None:
    """Continue after the checkpoint's epoch: weights, optimizer, best so far, history and RNG as they were."""
    state = load_checkpoint(checkpoint_path)
    _check_same_trial(state, run.config, checkpoint_path)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.start_epoch, run.history = state["epoch"], state["history"]
    run.best = {"epoch": state["best"]["epoch"], "val_macro_f1": state["best"]["val_macro_f1"]}
    inline = state["best"].get("model")  # format 1 kept the best weights inside the checkpoint
    run.best_model = inline if inline is not None else _read_best(checkpoint_path, run.best["epoch"])
    run.best_saved = -1 if inline is not None else run.best["epoch"]  # format 1: write best-<epoch>.pt next time
    torch.set_rng_state(state["rng_torch"])
    log.info("resumed from %s after epoch %d", checkpoint_path, run.start_epoch)


def _epoch(run: _TrialRun, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate when it is due, keep the best weights; the epoch's metrics."""
    config = run.config
    started = time.perf_counter()
    metrics = train_one_epoch(run.model, run.optimizer, config, run.batches, run.trial, run.weights, run.iterations,
                              epoch, run.device)
    train_seconds = time.perf_counter() - started
    validated = (epoch + 1) % config.validate_every == 0 or epoch + 1 == config.epochs
    if validated:
        metrics.update(run.evaluate("val_", run.data.val))
    metrics.update(epoch=epoch + 1, train_seconds=train_seconds,
                   images_per_second=metrics["train_images"] / train_seconds if train_seconds > 0 else 0.0,
                   epoch_seconds=time.perf_counter() - started)
    if validated and metrics["val_macro_f1"] > run.best["val_macro_f1"]:
        run.best = {"epoch": epoch + 1, "val_macro_f1": metrics["val_macro_f1"]}
        run.best_model = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    run.history.append(metrics)
    return metrics


def _save(run: _TrialRun, checkpoint_path: Path, epoch: int) -> None:
    """The checkpoint after `epoch`; the best weights first, so the checkpoint always points to a whole file."""
    best_epoch = run.best["epoch"]
    if best_epoch != run.best_saved:
        save_checkpoint(checkpoint_path.parent / best_filename(best_epoch), {"model": run.best_model})
    save_checkpoint(checkpoint_path, {
        "config": run.config.to_dict(), "model_config": dataclasses.asdict(run.model_config),
        "class_names": list(run.data.class_names), "preprocessing": run.data.preprocessing, "epoch": epoch,
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "best": run.best,
        "history": run.history, "rng_torch": torch.get_rng_state(), "segclass_version": segclass.__version__,
    })
    if best_epoch != run.best_saved:
        _remove_stale_best(checkpoint_path.parent, keep=best_epoch)
        run.best_saved = best_epoch


def _log_epoch(metrics: dict[str, Any], epochs: int) -> None:
    val = (f"val macro F1 {metrics['val_macro_f1']:.3f}  paper-micro F1 {metrics['val_paper_micro_f1']:.3f}"
           if "val_macro_f1" in metrics else "not validated")
    log.info("epoch %d/%d  loss %.4f (seg %.4f, cls %.4f)  %s  %.1f img/s", metrics["epoch"], epochs,
             metrics["train_loss"], metrics["train_loss_seg"], metrics["train_loss_cls"], val,
             metrics["images_per_second"])


def _final_report(run: _TrialRun, on_test_prediction: Callable[[EvalImage, np.ndarray], None] | None
                  ) -> dict[str, Any]:
    """Test metrics of the last epoch's weights (and of the best epoch's), sizes, timing and the history."""
    config, data, history, best = run.config, run.data, run.history, run.best
    report: dict[str, Any] = {
        **config.to_dict(), "study": config.study, "n_seg_patches": int(len(run.trial.seg)),
        "n_cls_patches": int(len(run.trial.cls)), "iterations_per_epoch": run.iterations,
        "class_names": list(data.class_names), "class_weights": run.weights.cpu().tolist(),
        "pretrained": pretrained_name(config.pretrained),
    }
    report.update(run.evaluate("test_", data.test, on_test_prediction))
    if config.study == "classification":
        holdout = run.trial.cls_holdout
        report.update(evaluate_patches(run.model, data.cls_images[holdout], data.cls_labels[holdout],
                                       data.num_classes, device=run.device, prefix="holdout_cls_"))
    if history and best["epoch"] == history[-1]["epoch"]:  # the model holds the best weights: reuse, no second pass
        report.update({f"test_best_{key[len('test_'):]}": value for key, value in list(report.items())
                       if key.startswith("test_")})
    elif run.best_model is not None:
        last_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        run.model.load_state_dict(run.best_model)
        report.update(run.evaluate("test_best_", data.test))
        run.model.load_state_dict(last_state)
    report["best_epoch"] = best["epoch"]
    report["val_best_macro_f1"] = best["val_macro_f1"]
    if history:
        seconds = sum(h["train_seconds"] for h in history)
        report["images_per_second"] = sum(h["train_images"] for h in history) / seconds if seconds > 0 else 0.0
    report["history"] = [{k: v for k, v in h.items() if not k.endswith("confusion_matrix")} for h in history]
    return report


def _read_best(checkpoint_path: Path, epoch: int) -> dict[str, torch.Tensor] | None:
    return load_best(checkpoint_path.parent, epoch) if epoch >= 1 else None


def _remove_stale_best(folder: Path, keep: int) -> None:
    for path in folder.iterdir():
        if is_best_file(path.name) and path.name != best_filename(keep):
            path.unlink(missing_ok=True)


def _check_same_trial(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    stored = {"precision": config.precision, **state.get("config", {})}  # before precision was recorded: as now
    current = config.to_dict()
    differing = sorted(k for k in current if k not in _RESUMABLE_CHANGES and stored.get(k) != current[k])
    if differing:
        raise CheckpointError(
            f"checkpoint {path} belongs to another trial (differs in {', '.join(differing)}); "
            "use a fresh run directory or delete the checkpoint"
        )
