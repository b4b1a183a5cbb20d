import math

import numpy as np
import pytest
import torch

from segclass.checkpoint import FILENAME, load_checkpoint
from segclass.config import VARIANTS, TrainConfig
from segclass.errors import CheckpointError, ConfigError, TrainingError
from segclass.losses import label_set_loss, pseudo_masks
from segclass.subsets import select_trial_patches
from segclass.model_file import load_trained_model
from segclass.model import ModelOutput
from segclass.training_loop import IndexCycler, classification_terms, iterations_per_epoch, train, trial_class_weights

FAST = dict(batch_size=4, eval_stride=128, epochs=2)


def _final_weights(run_dir):
    return load_checkpoint(run_dir / FILENAME)["model"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_budgets_iterations_per_epoch(tiny_data):
    n_seg, n_cls = len(tiny_data.seg_labels), len(tiny_data.cls_labels)
    for mode, s in (("S", 0.5), ("S+C", 0.5), ("S+C*", 0.25)):
        paper = TrainConfig(mode=mode, seg_fraction=s, batch_size=4)
        trial = select_trial_patches(paper, tiny_data.seg_labels, tiny_data.cls_labels)
        kinds = int(len(trial.seg) > 0) + int(len(trial.cls) > 0)
        assert iterations_per_epoch(paper, trial, n_seg) == math.ceil((len(trial.seg) + len(trial.cls)) / (4 * kinds))
        equal = paper.replace(budget="equal")
        assert iterations_per_epoch(equal, trial, n_seg) == math.ceil((n_seg + n_cls) / 8)
        # equal-images: every mode trains on the same images an epoch; S by twice the steps, batches stay 4
        images = iterations_per_epoch(paper.replace(budget="equal-images"), trial, n_seg) * 4 * kinds
        assert images == 8 * math.ceil((n_seg + n_cls) / 8)
    empty = TrainConfig(mode="S", seg_fraction=0.0)
    assert iterations_per_epoch(empty, select_trial_patches(empty, tiny_data.seg_labels, tiny_data.cls_labels), n_seg) == 0


def test_index_cycler_reshuffles_each_pass():
    cycler = IndexCycler(np.arange(3), np.random.default_rng(0))
    taken = cycler.take(7)
    assert len(taken) == 7
    assert sorted(taken[:3]) == [0, 1, 2] and sorted(taken[3:6]) == [0, 1, 2]


def test_class_weights_from_trial_masks(tiny_data):
    config = TrainConfig(mode="S", seg_fraction=1.0)
    trial = select_trial_patches(config, tiny_data.seg_labels, tiny_data.cls_labels)
    weights = trial_class_weights(config, tiny_data, trial)
    counts = np.bincount(tiny_data.seg_masks.ravel(), minlength=4)
    assert weights.max() == 1.0
    assert weights[np.argmin(counts)] == 1.0 and weights[np.argmax(counts)] == weights.min()
    released = TrainConfig(mode="S+C", seg_fraction=0.0, variant="released-code")
    released_trial = select_trial_patches(released, tiny_data.seg_labels, tiny_data.cls_labels)
    assert (trial_class_weights(released, tiny_data, released_trial) > 0).all()


def test_deterministic_for_a_seed(tiny_data, tmp_path):
    config = TrainConfig(mode="S+C", seg_fraction=0.5, seed=3, **FAST)
    a = train(config, tiny_data, tmp_path / "a")
    b = train(config, tiny_data, tmp_path / "b")
    _assert_same_state(_final_weights(tmp_path / "a"), _final_weights(tmp_path / "b"))
    assert a["test_macro_f1"] == b["test_macro_f1"]
    c = train(config.replace(seed=4), tiny_data, tmp_path / "c")
    assert not torch.equal(_final_weights(tmp_path / "a")["seg_head.classifier.weight"],
                           _final_weights(tmp_path / "c")["seg_head.classifier.weight"])
    assert c["n_seg_patches"] == a["n_seg_patches"]


def test_equal_images_budget_trains_s_and_s_plus_c_on_the_same_images(tiny_data):
    config = TrainConfig(mode="S", seg_fraction=0.5, budget="equal-images", **{**FAST, "epochs": 1})
    alone, both = (train(config.replace(mode=mode), tiny_data) for mode in ("S", "S+C"))
    assert alone["history"][0]["train_images"] == both["history"][0]["train_images"] > 0
    assert alone["iterations_per_epoch"] == 2 * both["iterations_per_epoch"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_classification_terms_per_variant(variant):
    lowres = torch.randn(2, 4, 16, 16, requires_grad=True)
    output = ModelOutput(lowres.repeat_interleave(8, 2).repeat_interleave(8, 3), lowres, torch.randn(2, 4))
    labels = torch.tensor([1, 3])
    terms = classification_terms(TrainConfig(variant=variant), output, labels, torch.ones(4))
    assert torch.allclose(terms["loss_cls"], torch.nn.functional.cross_entropy(output.class_logits, labels))
    pixel_term = variant in ("released-code", "label-set", "pseudo-mask")
    assert set(terms) == ({"loss_cls", "loss_cls_pixel"} if pixel_term else {"loss_cls"})
    if pixel_term:
        assert terms["loss_cls_pixel"] > 0 and terms["loss_cls_pixel"].requires_grad


def test_label_set_loss_is_free_on_the_patch_label_set_and_normal_only_on_normal_patches():
    big = 30.0
    lowres = torch.zeros(3, 4, 2, 2)
    lowres[0, 0, 0] = big  # class-2 patch: top row normal, bottom row class 2: every pixel in {0, 2}
    lowres[0, 2, 1] = big
    lowres[1, 3] = big  # class-2 patch whose pixels say class 3: outside the set
    lowres[2, 0] = big  # a normal patch, all normal
    labels = torch.tensor([2, 2, 0])
    per_patch = [label_set_loss(lowres[i : i + 1], labels[i : i + 1], torch.ones(4)).item() for i in range(3)]
    assert per_patch[0] < 1e-6 and per_patch[2] < 1e-6 and per_patch[1] > 10


def test_pseudo_masks_take_the_likelier_of_normal_and_the_label_with_a_floor():
    lowres = torch.zeros(2, 4, 4, 4)
    lowres[0, 1, :2] = 2.0  # class-1 patch: the top half says class 1, the rest is undecided
    lowres[0, 3] = 5.0  # class 3 is likeliest everywhere, but not allowed on a class-1 patch
    lowres[1, 0] = 4.0  # a class-2 patch seen as all normal: the floor keeps 10% (2 of 16 pixels) as class 2
    lowres[1, 2, 3, 3] = 3.0
    lowres[1, 2, 3, 2] = 2.0
    targets = pseudo_masks(lowres, torch.tensor([1, 2]), floor=0.1)
    assert set(targets[0].unique().tolist()) == {0, 1} and (targets[0, :2] == 1).all()
    assert (targets[1] == 2).sum() == 2 and targets[1, 3, 3] == 2 and targets[1, 3, 2] == 2


def test_mean_softmax_trial_is_deterministic_and_weighs_classes_by_masks_only(tiny_data, tmp_path):
    config = TrainConfig(mode="S+C", seg_fraction=0.5, seed=5, variant="mean-softmax", **{**FAST, "epochs": 1})
    a = train(config, tiny_data, tmp_path / "a")
    b = train(config, tiny_data, tmp_path / "b")
    _assert_same_state(_final_weights(tmp_path / "a"), _final_weights(tmp_path / "b"))
    assert a["test_macro_f1"] == b["test_macro_f1"] and a["history"][0]["train_loss_cls"] > 0
    paper = config.replace(variant="paper")
    trial = select_trial_patches(config, tiny_data.seg_labels, tiny_data.cls_labels)
    assert a["class_weights"] == pytest.approx(trial_class_weights(paper, tiny_data, trial).tolist())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("variant", ["paper", "released-code"])
def test_resume_after_interruption_equals_uninterrupted(tiny_data, tmp_path, variant):
    config = TrainConfig(mode="S+C*", seg_fraction=0.5, seed=2, variant=variant, **{**FAST, "epochs": 3})
    full = train(config, tiny_data, tmp_path / "full")

    def stop_after_first_epoch(metrics):
        if metrics["epoch"] == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(config, tiny_data, tmp_path / "resumed", on_epoch=stop_after_first_epoch)
    assert load_checkpoint(tmp_path / "resumed" / FILENAME)["epoch"] == 1
    epochs_seen, replayed = [], []
    resumed = train(config, tiny_data, tmp_path / "resumed", on_epoch=lambda m: epochs_seen.append(m["epoch"]),
                    on_resume=lambda history: replayed.extend(h["epoch"] for h in history))
    assert epochs_seen == [2, 3] and replayed == [1]
    _assert_same_state(_final_weights(tmp_path / "full"), _final_weights(tmp_path / "resumed"))
    assert resumed["test_macro_f1"] == full["test_macro_f1"]
    assert [h["val_macro_f1"] for h in resumed["history"]] == [h["val_macro_f1"] for h in full["history"]]


def test_finished_run_is_not_retrained_and_other_trial_is_refused(tiny_data, tmp_path):
    config = TrainConfig(mode="S", seg_fraction=1.0, **{**FAST, "epochs": 1})
    train(config, tiny_data, tmp_path)
    calls = []
    train(config, tiny_data, tmp_path, on_epoch=calls.append)
    assert calls == []
    with pytest.raises(CheckpointError, match="checkpoint.pt.*seed"):
        train(config.replace(seed=9), tiny_data, tmp_path)


def test_corrupt_checkpoint_is_named(tiny_data, tmp_path):
    (tmp_path / FILENAME).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="checkpoint.pt.*corrupt"):
        train(TrainConfig(mode="S", seg_fraction=1.0, **FAST), tiny_data, tmp_path)


def test_diverging_loss_is_a_clear_error(tiny_data):
    config = TrainConfig(mode="S", seg_fraction=1.0, lr=1e30, **{**FAST, "epochs": 3})
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at epoch \d+, iteration \d+.*lower --lr"):
        train(config, tiny_data)


def test_report_contents_and_model_reload(tiny_data, tmp_path):
    config = TrainConfig(mode="S2+C2", cls_fraction=0.25, **{**FAST, "epochs": 1})
    report = train(config, tiny_data, tmp_path)
    for key in ("test_macro_f1", "test_paper_micro_f1", "test_pixel_accuracy", "test_f1_invasive",
                "test_best_macro_f1", "holdout_cls_accuracy", "holdout_cls_confusion_matrix", "images_per_second"):
        assert key in report
    assert report["study"] == "classification"
    assert report["precision"] == "fp32"  # `auto` on the CPU
    assert report["best_epoch"] == 1 and report["test_best_macro_f1"] == report["test_macro_f1"]  # one pass, reused
    assert report["test_best_confusion_matrix"] == report["test_confusion_matrix"]
    assert np.sum(report["holdout_cls_confusion_matrix"]) == len(tiny_data.cls_labels) - len(tiny_data.cls_labels) // 2
    model, state = load_trained_model(tmp_path / FILENAME)
    assert state["class_names"] == list(tiny_data.class_names)
    assert model.seg_head.classifier.out_channels == tiny_data.num_classes


def test_untrainable_trial_s0_still_reports(tiny_data):
    report = train(TrainConfig(mode="S", seg_fraction=0.0, **{**FAST, "epochs": 1}), tiny_data)
    assert report["iterations_per_epoch"] == 0 and report["n_seg_patches"] == 0
    assert 0.0 <= report["test_macro_f1"] <= 1.0


def test_mode_needing_a_class_without_patches_is_refused(tiny_data):
    import dataclasses

    keep = tiny_data.cls_labels != 2  # no classification patches of class 2 (in_situ)
    without = dataclasses.replace(tiny_data, cls_images=tiny_data.cls_images[keep], cls_labels=tiny_data.cls_labels[keep])
    with pytest.raises(TrainingError, match="mode S\\+C trains on classification patches.*in_situ"):
        train(TrainConfig(mode="S+C", seg_fraction=0.5, **FAST), without)
    train(TrainConfig(mode="S", seg_fraction=0.5, **{**FAST, "epochs": 1}), without)  # S needs no cls patches


def test_checkpoint_cadence_and_best_weights_written_only_when_they_change(tiny_data, tmp_path):
    config = TrainConfig(mode="S", seg_fraction=1.0, **{**FAST, "epochs": 3})
    flags, best_files = [], []

    def watch(metrics):
        flags.append(metrics["checkpointed"])
        best_files.append(sorted(p.name for p in tmp_path.glob("best-*.pt")))

    report = train(config, tiny_data, tmp_path, on_epoch=watch, checkpoint_every=2)
    assert flags == [False, True, True]  # every 2nd epoch and the last
    state = load_checkpoint(tmp_path / FILENAME)
    assert state["epoch"] == 3 and "model" not in state["best"]
    assert best_files[-1] == [f"best-{state['best']['epoch']}.pt"]  # one best file, the one the checkpoint names
    assert report["best_epoch"] == state["best"]["epoch"]
    best_model, _ = load_trained_model(tmp_path / FILENAME, which="best")
    reference = load_checkpoint(tmp_path / f"best-{state['best']['epoch']}.pt")["model"]
    _assert_same_state(best_model.state_dict(), reference)


def test_format_1_checkpoint_resumes_and_writes_its_best_file(tiny_data, tmp_path):
    from segclass.checkpoint import save_checkpoint

    config = TrainConfig(mode="S", seg_fraction=1.0, **{**FAST, "epochs": 2})
    train(config.replace(epochs=1), tiny_data, tmp_path)
    state = load_checkpoint(tmp_path / FILENAME)  # rewrite it as segclass wrote it before best-<epoch>.pt files
    best = load_checkpoint(tmp_path / f"best-{state['best']['epoch']}.pt")["model"]
    (tmp_path / f"best-{state['best']['epoch']}.pt").unlink()
    save_checkpoint(tmp_path / FILENAME, {**state, "best": {**state["best"], "model": best}, "format_version": 1})
    train(config, tiny_data, tmp_path)
    epoch = load_checkpoint(tmp_path / FILENAME)["best"]["epoch"]
    assert (tmp_path / f"best-{epoch}.pt").is_file()
    load_trained_model(tmp_path / FILENAME, which="best")


def test_validate_every_skips_validation_between_and_picks_the_best_among_validated(tiny_data):
    config = TrainConfig(mode="S", seg_fraction=1.0, epochs=3, batch_size=4, validate_every=2)
    report = train(config, tiny_data)
    validated = [h["epoch"] for h in report["history"] if "val_macro_f1" in h]
    assert validated == [2, 3]  # every 2nd epoch, and always the last
    assert report["best_epoch"] in validated
    with pytest.raises(ConfigError, match="validate_every"):
        TrainConfig(validate_every=0)
