"""What one trial of the paper's grid costs, and what the whole grid would.

A BACH-sized trial: 615 segmentation + 400 classification patches (S+C* at
s = 100%, the largest BACH trial), the `paper` budget (26 iterations of 20 + 20
patches per epoch), validated every epoch on one image of a BACH WSI's size at
1.25x (2,560 x 3,840 px, half of it tissue). Patches and image are rendered in
memory by the synthetic generator, so no dataset, OpenSlide or Ray is needed.

On CUDA it starts K = 1, 2, 4, 8 trials together on the GPU (Ray Tune's
`num_gpus = 1/K`) and prints, per K: GPU-seconds per trial-epoch, training
images/s (per trial and in all), the share of an epoch spent validating, and
the hours the paper's full grid (1,170 trials x 100 epochs at the caption's
patch counts) would take on 1 and on 8 GPUs at that K.

On the CPU it compares, in the same run, the trainer's training images/s with
a bare forward + backward + Adam step of the same model on the same batches
held ready in memory: the share the trainer's own work (sampling, gathering,
augmenting) costs. Goal: the trainer at >= 0.9 of the bare step.

On either device it first prints the paper grid's size (trials, trial-epochs,
training images) and last the host work of one validation pass besides the
network (listing the windows on tissue, the tissue of finished rows, the
metrics).

    python benchmarks/trial_cost.py --device cuda --packing 1 2 4 8
    python benchmarks/trial_cost.py --device cpu --threads 1        # as a sweep trial runs on one core
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

from segclass.cli_help import HelpFormatter

SEG_PATCHES, CLS_PATCHES = 615, 400  # BACH (Fig. 5 caption)
EVAL_SIZE = (2560, 3840)  # a BACH WSI (about 41,000 x 61,000 px at 20x) read at 1.25x
#: (segmentation, classification) patches of each dataset in the paper (Fig. 5 caption)
PAPER_SIZES = {"BACH": (615, 400), "Gleason2019": (1274, 1774), "DigestPath2019": (1630, 1764)}


def bach_sized_arrays(seed: int = 0):
    """DatasetArrays of a BACH-sized trial, rendered in memory."""
    from dataclasses import replace

    from segclass.data.arrays import EvalImage
    from segclass.evaluation import image_tissue
    from segclass.synthetic import random_appearance, render_tissue, slide_labels

    from gpu_throughput import render_arrays  # benchmarks/ is on sys.path when a script of it runs

    arrays = render_arrays(CLS_PATCHES, SEG_PATCHES, unique=64, seed=seed)
    rng = np.random.default_rng(seed + 1)
    labels, tissue = slide_labels(1280, rng)
    tile = render_tissue(labels, tissue, random_appearance(rng), rng)
    height, width = EVAL_SIZE[1], EVAL_SIZE[0]
    rgb = np.tile(tile, (math.ceil(height / 1280), math.ceil(width / 1280), 1))[:height, :width]
    mask = np.tile(labels, (math.ceil(height / 1280), math.ceil(width / 1280)))[:height, :width]
    image = EvalImage("bach_sized", np.ascontiguousarray(rgb), np.ascontiguousarray(mask))
    # the tissue is found once and recorded with the image, as the data build does for every evaluation image
    image = replace(image, tissue=image_tissue(image))
    return replace(arrays, val=(image,), test=(image,))


def trial_config(epochs: int):
    from segclass.config import TrainConfig

    return TrainConfig(mode="S+C*", seg_fraction=1.0, epochs=epochs, budget="paper")


def paper_grid() -> dict[str, float]:
    """Training images and trial-epochs of the paper preset over the three datasets, at the caption's counts."""
    from segclass.grid import get_preset
    from segclass.training_loop import batches_per_count

    preset = get_preset("paper")
    images = trial_epochs = trials = 0
    for n_seg, n_cls in PAPER_SIZES.values():
        for point in preset.points():
            config = point.train_config(epochs=preset.epochs)
            images += batches_per_count(config, n_seg, n_cls) * config.batch_size * preset.epochs
            trial_epochs += preset.epochs
            trials += 1
    return {"trials": trials, "trial_epochs": trial_epochs, "training_images": images}


# ---------------------------------------------------------------------------
# CPU: the trainer against a bare step
# ---------------------------------------------------------------------------
def cpu_ratio(arrays, threads: int, steps: int) -> dict[str, float]:
    """Trainer images/s (training only) against a bare forward+backward+step on batches held in memory."""
    from dataclasses import replace

    import torch

    from segclass.augment import normalize, to_input
    from segclass.config import ModelConfig
    from segclass.losses import weighted_pixel_loss
    from segclass.model import build_model
    from segclass.training_loop import classification_terms, train

    torch.set_num_threads(threads)
    config = trial_config(epochs=1)
    small = arrays.val[0].__class__("small", arrays.val[0].rgb[:256, :256].copy(), arrays.val[0].mask[:256, :256].copy())
    arrays = replace(arrays, val=(small,), test=(small,))  # evaluation is not part of this ratio
    model = build_model(ModelConfig(num_classes=arrays.num_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    weights = torch.ones(arrays.num_classes)
    seg_images = normalize(to_input(torch.from_numpy(arrays.seg_images[: config.batch_size])))
    seg_masks = torch.from_numpy(arrays.seg_masks[: config.batch_size]).long()
    cls_images = normalize(to_input(torch.from_numpy(arrays.cls_images[: config.batch_size])))
    cls_labels = torch.from_numpy(arrays.cls_labels[: config.batch_size]).long()

    def bare_step() -> None:
        loss = weighted_pixel_loss(model.forward_masks(seg_images), seg_masks, weights)
        loss = loss + sum(classification_terms(config, model(cls_images), cls_labels, weights).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    bare_step()  # warm-up
    rows = {"bare": [], "trainer": []}
    for _ in range(2):  # interleaved, so a busy neighbour slows both alike
        started = time.perf_counter()
        for _ in range(steps):
            bare_step()
        rows["bare"].append(steps * 2 * config.batch_size / (time.perf_counter() - started))
        report = train(config, arrays, device="cpu")
        rows["trainer"].append(report["history"][-1]["images_per_second"])
    bare, trainer = max(rows["bare"]), max(rows["trainer"])
    return {"threads": threads, "bare_images_per_second": round(bare, 2),
            "trainer_images_per_second": round(trainer, 2), "ratio": round(trainer / bare, 3)}


def evaluation_host_work(arrays, repeats: int = 3) -> dict[str, float]:
    """Seconds of host work (besides the network) one validation pass spends on the image, best of `repeats`.

    What `segclass.evaluation` does around the network: list the windows that
    touch tissue (the tissue of each window row), look up the tissue of each
    band of finished rows, then look up the whole image's tissue again and
    count the confusion matrices over all and over tissue pixels. On a GPU
    this work does not overlap the network's.
    """
    from segclass.metrics import PixelScores
    from segclass.inference.sliding import _tissue_windows, window_starts

    (image,) = arrays.val
    height, width = image.mask.shape
    patch, stride = 128, 64
    starts_y, starts_x = window_starts(height, patch, stride), np.asarray(window_starts(width, patch, stride))

    def window_list() -> None:
        _tissue_windows(image.tissue, starts_y, starts_x, patch, width, height)

    def finished_rows() -> None:
        for top in range(0, height, stride):
            image.tissue.rows(top, min(top + stride, height), width)

    def metrics() -> None:
        PixelScores(arrays.num_classes).update(image.mask, image.mask, image.tissue.rows(0, height, width))

    parts = {"window_list": window_list, "finished_rows": finished_rows, "metrics": metrics}
    timings = {name: [] for name in parts}
    for _ in range(repeats):
        for name, work in parts.items():
            started = time.perf_counter()
            work()
            timings[name].append(time.perf_counter() - started)
    result = {name: round(min(values), 4) for name, values in timings.items()}
    result["total"] = round(sum(result.values()), 4)
    return result


# ---------------------------------------------------------------------------
# GPU: K trials per device
# ---------------------------------------------------------------------------
def _trial_worker(arrays_path: str, threads: int, device: str, epochs: int, barrier, queue) -> None:
    from gpu_throughput import peak_gpu_mib, worker_arrays

    from segclass.training_loop import train

    arrays = worker_arrays(arrays_path, threads, barrier)
    started = time.perf_counter()
    report = train(trial_config(epochs), arrays, device=device)
    steady = report["history"][1:] or report["history"]  # the first epoch pays for warm-up
    queue.put({"wall_seconds": time.perf_counter() - started,
               "train_seconds": float(np.mean([h["train_seconds"] for h in steady])),
               "epoch_seconds": float(np.mean([h["epoch_seconds"] for h in steady])),
               "train_images": float(np.mean([h["train_images"] for h in steady])), "peak_gpu_mib": peak_gpu_mib(device)})


def packing(arrays, device: str, counts: list[int], epochs: int, grid: dict[str, float]) -> list[dict]:
    """Per K: the cost of a trial-epoch with K trials sharing the GPU, and the paper grid's hours at that K."""
    from gpu_throughput import run_together

    rows = []
    for k in counts:
        results = run_together(_trial_worker, arrays, k, device, epochs)
        epoch_seconds = float(np.mean([r["epoch_seconds"] for r in results]))  # K epochs share the GPU
        train_rate = sum(r["train_images"] / r["train_seconds"] for r in results)
        eval_share = float(np.mean([1 - r["train_seconds"] / r["epoch_seconds"] for r in results]))
        # the grid at this K: training at the aggregate rate, plus each trial-epoch's validation
        val_seconds = epoch_seconds * eval_share
        grid_seconds = grid["training_images"] / train_rate + grid["trial_epochs"] * val_seconds / k
        row = {"trials_per_gpu": k, "gpu_seconds_per_trial_epoch": round(epoch_seconds / k, 3),
               "training_images_per_second_per_trial": round(train_rate / k, 1),
               "training_images_per_second": round(train_rate, 1), "evaluation_share": round(eval_share, 3),
               "grid_hours_1_gpu": round(grid_seconds / 3600, 2), "grid_hours_8_gpus": round(grid_seconds / 8 / 3600, 2),
               "peak_gpu_mib_per_trial": round(max(r["peak_gpu_mib"] for r in results), 1)}
        rows.append(row)
        print(f"K={k}: {row['gpu_seconds_per_trial_epoch']:.2f} GPU-s per trial-epoch, "
              f"{row['training_images_per_second']:.0f} training images/s in all "
              f"({row['training_images_per_second_per_trial']:.0f} per trial), evaluation "
              f"{row['evaluation_share']:.0%} of an epoch; paper grid {row['grid_hours_1_gpu']:.1f} h on 1 GPU, "
              f"{row['grid_hours_8_gpus']:.1f} h on 8", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cuda (K trials per GPU) or cpu (trainer vs bare step)")
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8], help="CUDA: trials per GPU to time")
    parser.add_argument("--epochs", type=int, default=3, help="CUDA: epochs per trial (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads (a sweep trial gets one core)")
    parser.add_argument("--steps", type=int, default=26, help="CPU: bare steps per timing (an epoch's iterations)")
    parser.add_argument("--out", default="results/benchmarks/trial_cost.json", help="JSON with every figure")
    args = parser.parse_args(argv)

    import torch
    from gpu_throughput import write_result

    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)"
    grid = paper_grid()
    print(f"device: {name}; torch {torch.__version__}\npaper grid: {grid['trials']} trials, "
          f"{grid['trial_epochs']:,} trial-epochs, {grid['training_images'] / 1e6:.0f} M training images", flush=True)
    arrays = bach_sized_arrays()
    result: dict = {"device": name, "torch": torch.__version__, "args": vars(args), "paper_grid": grid}
    if cuda:
        result["packing"] = packing(arrays, args.device, args.packing, args.epochs, grid)
    else:
        result["cpu"] = cpu_ratio(arrays, args.threads, args.steps)
        row = result["cpu"]
        print(f"CPU, {row['threads']} thread(s): trainer {row['trainer_images_per_second']:.1f} images/s, bare step "
              f"{row['bare_images_per_second']:.1f} images/s: ratio {row['ratio']:.2f} (goal >= 0.9)", flush=True)
    result["evaluation_host_seconds"] = host = evaluation_host_work(arrays)
    print(f"host work per validation of the {EVAL_SIZE[0]} x {EVAL_SIZE[1]} image, besides the network: "
          f"{host['total'] * 1000:.0f} ms (window list {host['window_list'] * 1000:.0f}, tissue of finished rows "
          f"{host['finished_rows'] * 1000:.0f}, metrics {host['metrics'] * 1000:.0f})", flush=True)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
