"""Why does the paper head fail at low s? Diagnostics and controlled changes, synthetic data.

Every arm trains at s = 5% with budget `equal` (same iterations for all), random
init, and records per epoch: both training losses, val macro F1, what the
classification path outputs on a fixed probe of 64 classification patches
(16 per class: class-head accuracy, softmax entropy and max probability of the
class logits, and `seg agree` = share of a patch's 16x16 low-res pixels whose
segmentation argmax is the patch label) and, at a few epochs, the gradient
reaching the encoder from each step's loss alone (L2 norms and their cosine).

Two phases:
  study  controlled changes, one factor each, judged on VALIDATION macro F1
         (seeds --study-seeds): loss balance (L_cls x 0.1), the head's
         BatchNorm (paper MLP without it), and parameter-free pooling of the
         low-res logits that keeps channel c = class c (max; mean-softmax);
  final  S, S+C `paper`, S+C `released-code`, S+C with our variant at s = 5%
         and S at 100%, over --seeds, reporting TEST macro and paper-micro F1
         (last epoch) as mean +- std. Test is only printed in this table.

Trials are cached one file each under --cache, so the study can be read before
the final phase is run, and a rerun prints everything without retraining.

    python benchmarks/head_study.py                      # both phases, 13 trials (about 60 min on 2 busy cores)
    python benchmarks/head_study.py --phase study        # the controlled changes only
    python benchmarks/head_study.py --phase final --seeds 1 2 3
    python benchmarks/head_study.py --arms paper released-code --study-seeds 1 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segclass.augment import normalize, to_input
from segclass.config import ModelConfig, TrainConfig
from segclass.data import load_dataset
from segclass.data.arrays import DatasetArrays
from segclass.evaluation import evaluate_images
from segclass.losses import weighted_pixel_loss
from segclass.model import ClassificationHead, MaxPoolClassificationHead, ModelOutput, SegClassNet, build_model
from segclass.schema import RESULT_VERSION
from segclass.subsets import select_trial_patches
from segclass.batches import TrialBatches
from segclass.training_loop import classification_terms, iterations_per_epoch, train_one_epoch, trial_class_weights

log = logging.getLogger("head_study")

#: the variant of our own, chosen on validation by the study phase and compared in the final phase
OWN_VARIANT = "mean-softmax"


# ---------------------------------------------------------------------------
# study-only heads and the model wrapper (hooks live here, not in the trainer)
# ---------------------------------------------------------------------------
class PaperHeadNoBN(ClassificationHead):
    """The paper MLP (pool -> 1x1 C->8 -> ReLU -> 1x1 8->C) with its BatchNorm removed."""

    def __init__(self, num_classes: int, hidden: int = 8) -> None:
        super().__init__(num_classes, hidden)
        self.bn = nn.Identity()


HEADS = {"paper-no-bn": PaperHeadNoBN, "max": MaxPoolClassificationHead}


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient times `scale` backward (= scaling that loss term)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class StudyNet(SegClassNet):
    """SegClassNet with a swapped classification head and/or a scaled step-2 gradient.

    The encoder and segmentation head are built first, exactly as in SegClassNet,
    so a seed gives every arm the same initial trunk. Only `forward` (step 2, the
    classification patches) is affected; `forward_masks` (step 1, inference) is not.
    """

    def __init__(self, config: ModelConfig, head: str | None, cls_scale: float) -> None:
        super().__init__(config)
        if head is not None:
            self.cls_head = HEADS[head](config.num_classes, config.cls_hidden) if head == "paper-no-bn" else HEADS[head]()
        self.cls_scale = cls_scale

    def forward(self, images: torch.Tensor) -> ModelOutput:
        output = super().forward(images)
        if self.training and self.cls_scale != 1.0:
            return ModelOutput(*(_ScaleGrad.apply(t, self.cls_scale) for t in output))
        return output


# ---------------------------------------------------------------------------
# arms
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    name: str
    mode: str = "S+C"
    fraction: float = 0.05
    variant: str = "paper"
    head: str | None = None  # a HEADS key replacing the variant's classification head
    cls_scale: float = 1.0  # multiplies every step-2 gradient (L_cls and, for released-code, its pixel term)
    lr: float = 1e-4
    note: str = ""


STUDY_ARMS = (  # the first three are also final arms; then one factor changed per arm
    Arm("S", mode="S", note="no classification patches"),
    Arm("S+C paper", note="baseline: MLP head with BN"),
    Arm("S+C released-code", variant="released-code", note="max pool + constant-mask pixel CE"),
    Arm(f"S+C {OWN_VARIANT}", variant=OWN_VARIANT, note="our variant: log mean pixel softmax, no parameters"),
    Arm("paper, L_cls x0.1", cls_scale=0.1, note="loss balance"),
    Arm("paper head without BN", head="paper-no-bn", note="head BatchNorm"),
    Arm("max-pool logits", head="max", note="released-code without its constant mask"),
)


def final_arms() -> tuple[Arm, ...]:
    own = next(arm for arm in STUDY_ARMS if arm.variant == OWN_VARIANT)
    return (*STUDY_ARMS[:3], own, Arm("S 100%", mode="S", fraction=1.0))


# ---------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------
def probe_indices(labels: np.ndarray, per_class: int = 16) -> np.ndarray:
    """A fixed probe of classification patches: the first `per_class` of each class, interleaved."""
    by_class = [np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)]
    return np.stack(by_class, axis=1).ravel()


@torch.no_grad()
def output_distribution(model: SegClassNet, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """What the classification path says about labelled patches (eval mode, no augmentation)."""
    model.eval()
    out = model(images)
    probs = out.class_logits.softmax(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    agree = (out.lowres_logits.argmax(1) == labels.view(-1, 1, 1)).float().mean((1, 2))
    lesion = labels > 0
    shares = np.bincount(out.lowres_logits.argmax(1).ravel().numpy(), minlength=out.lowres_logits.shape[1])
    return {
        "cls_accuracy": (probs.argmax(1) == labels).float().mean().item(),
        "cls_entropy": entropy.mean().item(),
        "cls_max_prob": probs.amax(1).mean().item(),
        "seg_agree": agree.mean().item(),
        "seg_agree_normal": agree[~lesion].mean().item(),
        "seg_agree_lesion": agree[lesion].mean().item(),
        "seg_pixel_shares": (shares / shares.sum()).round(3).tolist(),
    }


def encoder_gradients(model: SegClassNet, config: TrainConfig, seg_batch, cls_batch, weights) -> dict[str, float]:
    """L2 norm of the encoder gradient from each step's loss alone, and their cosine.

    Runs on a copy in training mode (BatchNorm on batch statistics, as in
    training) so the model's running statistics are left alone.
    """
    probe = copy.deepcopy(model).train()
    grads = {}
    for kind, batch in (("seg", seg_batch), ("cls", cls_batch)):
        if batch is None:
            continue
        probe.zero_grad(set_to_none=True)
        images, target = batch
        if kind == "seg":
            loss = weighted_pixel_loss(probe.forward_masks(images), target, weights)
        else:
            loss = sum(classification_terms(config, probe(images), target, weights).values())
        loss.backward()
        grads[kind] = torch.cat([p.grad.flatten() for p in probe.encoder.parameters() if p.grad is not None])
    result = {f"grad_{k}": v.norm().item() for k, v in grads.items()}
    if len(grads) == 2:
        result["grad_cos"] = F.cosine_similarity(grads["seg"], grads["cls"], dim=0).item()
        result["grad_cls_share"] = result["grad_cls"] / (result["grad_cls"] + result["grad_seg"])
    return result


# ---------------------------------------------------------------------------
# one arm, one seed: the trainer's own epoch, with diagnostics between epochs
# ---------------------------------------------------------------------------
def run_arm(arm: Arm, seed: int, epochs: int, data: DatasetArrays, grad_epochs: set[int], with_test: bool,
            val_stride: int = 128) -> dict:
    """Mirrors `segclass.training_loop.train` (same subsets, init, batches, epoch function) minus checkpoints.

    Validation each epoch uses `val_stride` (128: non-overlapping windows, 3.5x
    cheaper); the test set uses the trainer's stride (64), as every other table.
    """
    config = TrainConfig(mode=arm.mode, seg_fraction=arm.fraction, seed=seed, variant=arm.variant, budget="equal",
                         epochs=epochs, lr=arm.lr)
    trial = select_trial_patches(config, data.seg_labels, data.cls_labels)
    iterations = iterations_per_epoch(config, trial, len(data.seg_labels))
    weights = torch.tensor(trial_class_weights(config, data, trial), dtype=torch.float32)
    model_config = ModelConfig(num_classes=data.num_classes, variant=arm.variant)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arm.head is None and arm.cls_scale == 1.0:
            model = build_model(model_config, None)
        else:
            model = StudyNet(model_config, arm.head, arm.cls_scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))

    probe = probe_indices(data.cls_labels)
    probe_images = normalize(to_input(torch.from_numpy(data.cls_images[probe])))
    probe_labels = torch.from_numpy(data.cls_labels[probe]).long()
    seg_batch = None
    if len(trial.seg):
        index = np.resize(trial.seg, config.batch_size)
        seg_batch = (normalize(to_input(torch.from_numpy(data.seg_images[index]))),
                     torch.from_numpy(data.seg_masks[index]).long())
    cls_batch = (probe_images[: config.batch_size], probe_labels[: config.batch_size]) if len(trial.cls) else None

    def diagnostics(epoch: int) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": epoch, **output_distribution(model, probe_images, probe_labels)}
        if epoch in grad_epochs:
            row.update(encoder_gradients(model, config, seg_batch, cls_batch, weights))
        return row

    started = time.perf_counter()
    history = [diagnostics(0)]
    batches = TrialBatches(data, trial, torch.device("cpu"), config.augment)
    for epoch in range(epochs):
        metrics = train_one_epoch(model, optimizer, config, batches, trial, weights, iterations, epoch,
                                  torch.device("cpu"))
        val = evaluate_images(model, data.val, data.num_classes, data.class_names, config.patch_size,
                              val_stride, "cpu", "val_")
        history.append({**diagnostics(epoch + 1), **metrics,
                        **{k: v for k, v in val.items() if not k.endswith("confusion_matrix")}})
        log.info("%s seed %d epoch %d: seg %.3f cls %.3f val macro F1 %.3f", arm.name, seed, epoch + 1,
                 metrics["train_loss_seg"], metrics["train_loss_cls"], val["val_macro_f1"])
    report: dict[str, Any] = {
        "arm": asdict(arm), "seed": seed, "epochs": epochs, "config": config.to_dict(), "result_version": RESULT_VERSION,
        "n_seg_patches": int(len(trial.seg)), "n_cls_patches": int(len(trial.cls)),
        "iterations_per_epoch": iterations, "history": history,
        "val_macro_f1": history[-1]["val_macro_f1"], "val_paper_micro_f1": history[-1]["val_paper_micro_f1"],
        "val_best_macro_f1": max(h["val_macro_f1"] for h in history[1:]), "val_stride": val_stride,
    }
    if with_test:
        test = evaluate_images(model, data.test, data.num_classes, data.class_names, config.patch_size,
                               config.eval_stride, "cpu", "test_")
        report.update({k: v for k, v in test.items() if not k.endswith("confusion_matrix")})
    report["seconds"] = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std():.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def study_table(reports: dict[str, list[dict]]) -> list[str]:
    lines = ["| arm | changes | val macro F1 (last) | val macro F1 (best) | loss seg | loss cls | "
             "cls acc | cls entropy | seg agree (normal / lesion) | encoder grad cls share | cos(g_seg, g_cls) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in reports.items():
        last = [r["history"][-1] for r in runs]
        grads = [next((h for h in reversed(r["history"]) if "grad_cls_share" in h), None) for r in runs]
        grads = [g for g in grads if g is not None]

        def mean(key, rows=last, spec=".3f"):
            return format(np.mean([h[key] for h in rows]), spec) if rows and key in rows[0] else "–"

        lines.append(
            f"| {name} | {runs[0]['arm']['note']} | {_mean_std([r['val_macro_f1'] for r in runs])} | "
            f"{_mean_std([r['val_best_macro_f1'] for r in runs])} | {mean('train_loss_seg')} | "
            f"{mean('train_loss_cls') if runs[0]['n_cls_patches'] else '–'} | {mean('cls_accuracy', spec='.2f')} | "
            f"{mean('cls_entropy', spec='.2f')} | {mean('seg_agree_normal', spec='.2f')} / "
            f"{mean('seg_agree_lesion', spec='.2f')} | {mean('grad_cls_share', grads, '.2f')} | "
            f"{mean('grad_cos', grads, '+.2f')} |")
    return lines


def curve_table(name: str, run: dict) -> list[str]:
    lines = [f"{name}, seed {run['seed']}: per epoch (epoch 0 = initial weights)", "",
             "| epoch | loss seg | loss cls | val macro F1 | cls acc | cls entropy | cls max prob | seg agree | "
             "seg pixel shares (n/b/is/inv) | grad seg | grad cls | cos |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in run["history"]:
        def fmt(key, spec=".3f"):
            return format(h[key], spec) if key in h else "–"
        lines.append(f"| {h['epoch']} | {fmt('train_loss_seg')} | {fmt('train_loss_cls')} | {fmt('val_macro_f1')} | "
                     f"{fmt('cls_accuracy', '.2f')} | {fmt('cls_entropy', '.2f')} | {fmt('cls_max_prob', '.2f')} | "
                     f"{fmt('seg_agree', '.2f')} | {' '.join(f'{v:.2f}' for v in h['seg_pixel_shares'])} | "
                     f"{fmt('grad_seg', '.3g')} | {fmt('grad_cls', '.3g')} | {fmt('grad_cos', '+.2f')} |")
    return lines


def final_table(reports: dict[str, list[dict]]) -> list[str]:
    lines = ["| arm | seg patches | cls patches | val macro F1 | test macro F1 | test paper-micro F1 | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in reports.items():
        lines.append(f"| {name} | {runs[0]['n_seg_patches']} | {runs[0]['n_cls_patches']} | "
                     f"{_mean_std([r['val_macro_f1'] for r in runs])} | {_mean_std([r['test_macro_f1'] for r in runs])} | "
                     f"{_mean_std([r['test_paper_micro_f1'] for r in runs])} | {' '.join(str(r['seed']) for r in runs)} |")
    return lines


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", default="all", choices=("study", "final", "all"), help="which arms to run (default all)")
    parser.add_argument("--study-seeds", type=int, nargs="+", default=[1], help="seeds of the study phase (default 1)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds of the final phase (default 1 2)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4: 48 iterations of 20 + 20 patches)")
    parser.add_argument("--val-stride", type=int, default=128,
                        help="sliding-window stride of the per-epoch validation (default 128; test always uses 64)")
    parser.add_argument("--arms", nargs="+", default=None, metavar="NAME",
                        help=f"only these arms, by exact name: {'; '.join(a.name for a in STUDY_ARMS)}; S 100%%")
    parser.add_argument("--grad-epochs", type=int, nargs="+", default=[0, 1, 2, 4],
                        help="epochs after which to measure the encoder gradients (0 = initial weights)")
    parser.add_argument("--data-root", default=None, help="synthetic dataset folder (default data_cache/synthetic/source)")
    parser.add_argument("--cache", default="results/benchmarks/head_study", help="one JSON per trained trial; reused")
    parser.add_argument("--out", default="results/benchmarks/head_study.json", help="where to write every report")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    logging.getLogger("segclass").setLevel(logging.ERROR)  # the random-init warning, once per trial

    def chosen(arms):
        return [a for a in arms if args.arms is None or a.name in args.arms]

    plan: list[tuple[str, Arm, int]] = []
    if args.phase in ("study", "all"):
        plan += [("study", arm, seed) for arm in chosen(STUDY_ARMS) for seed in args.study_seeds]
    if args.phase in ("final", "all"):
        plan += [("final", arm, seed) for seed in args.seeds for arm in chosen(final_arms())]

    final_names = {arm.name for arm in final_arms()}
    data = load_dataset("synthetic", args.data_root)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    study: dict[str, list[dict]] = {}
    final: dict[str, list[dict]] = {}
    started, seconds_by_trial = time.perf_counter(), {}
    for phase, arm, seed in plan:
        with_test = arm.name in final_names
        key = f"{arm.name}|seed={seed}|epochs={args.epochs}|val_stride={args.val_stride}".replace(" ", "_").replace("/", "-")
        path = cache / f"{key}.json"
        report = json.loads(path.read_text()) if path.exists() else None
        if (report is None or report["arm"] != asdict(arm) or report.get("result_version") != RESULT_VERSION
                or (with_test and "test_macro_f1" not in report)):  # other arm, older evaluation or no test
            report = run_arm(arm, seed, args.epochs, data, set(args.grad_epochs), with_test, args.val_stride)
            path.write_text(json.dumps(report))
            source = "trained"
        else:
            source = "cached"
        seconds_by_trial[key] = report["seconds"]  # a trial in both phases counts once
        (study if phase == "study" else final).setdefault(arm.name, []).append(report)
        print(f"[{time.perf_counter() - started:6.0f}s] {phase} seed {seed} {arm.name:26s} val macro F1 "
              f"{report['val_macro_f1']:.3f} ({report['seconds']:.0f}s, {source})", file=sys.stderr, flush=True)

    lines = [f"synthetic, s = 5%, budget equal, {args.epochs} epochs, random init, batch 20 + 20; "
             f"{len(seconds_by_trial)} trials, train+eval time {sum(seconds_by_trial.values()) / 60:.1f} min in all "
             "(when they were trained)", ""]
    if study:
        lines += [f"## Controlled changes (validation, last epoch; seeds {args.study_seeds})", ""]
        lines += study_table(study) + [""]
        lines += ["(cls acc / entropy / seg agree: on a fixed probe of 64 classification patches, eval mode; "
                  "grad share = |g_cls| / (|g_seg| + |g_cls|) of the encoder, at the last measured epoch)", ""]
        curves = [name for name in ("S+C paper", "S+C released-code", f"S+C {OWN_VARIANT}") if name in study]
        lines += ["## Learning curves and diagnostics", ""] if curves else []
        for name in curves:
            lines += curve_table(name, study[name][0]) + [""]
    if final:
        lines += [f"## Final comparison (test, last epoch; seeds {args.seeds})", ""] + final_table(final) + [""]
    print("\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "study": study, "final": final}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
