"""Training and prediction throughput on one device, and fractional-GPU packing.

Ray Tune packs trials onto a GPU by giving each `num_gpus = 1/K`; what that buys
is decided by the GPU, not by Ray. This measures it directly: K trainer
processes start together on the same device and each reports its training
images/s of a steady-state epoch; the aggregate over K says whether packing
K trials per GPU pays. It also times `segclass.predict` (tiles/s) at several
batch sizes. No dataset files, OpenSlide or Ray are needed: patches are
rendered in memory by the synthetic generator.

    python benchmarks/gpu_throughput.py --device cuda --packing 1 2 4 8
    python benchmarks/gpu_throughput.py --device cpu --packing 1 --cls-patches 400   # the CPU baseline
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("normal", "benign", "in_situ", "invasive")


def render_arrays(cls_patches: int, seg_patches: int, unique: int, seed: int = 0):
    """DatasetArrays of synthetic patches (`unique` rendered, repeated to the counts asked)."""
    from segclass.data.arrays import DatasetArrays, EvalImage
    from segclass.synthetic import patch_labels, random_appearance, render_tissue, slide_labels

    rng = np.random.default_rng(seed)
    appearance = random_appearance(rng)
    images, masks, labels = [], [], []
    for index in range(unique):
        target = index % len(CLASSES)
        label_map, tissue = patch_labels(target, 128, rng)
        images.append(render_tissue(label_map, tissue, appearance, rng))
        masks.append(label_map)
        labels.append(target)
    images, masks, labels = np.stack(images), np.stack(masks), np.array(labels)

    def repeat(array: np.ndarray, count: int) -> np.ndarray:
        return array[np.arange(count) % unique]

    slide, tissue = slide_labels(256, rng)
    evaluation = (EvalImage("eval", render_tissue(slide, tissue, appearance, rng), slide),)
    return DatasetArrays(
        "throughput", CLASSES, repeat(images, seg_patches), repeat(masks, seg_patches), repeat(labels, seg_patches),
        repeat(images, cls_patches), repeat(labels, cls_patches), evaluation, evaluation,
    )


def worker_arrays(arrays_path: str, threads: int, barrier):
    """In a `run_together` process: set its threads, load its arrays, wait for the others."""
    import pickle

    import torch

    torch.set_num_threads(threads)
    with open(arrays_path, "rb") as file:
        arrays = pickle.load(file)
    barrier.wait()
    return arrays


def write_result(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=1))
    print(f"wrote {path}", flush=True)


def peak_gpu_mib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0


def _train_worker(arrays_path: str, threads: int, device: str, epochs: int, barrier, queue) -> None:
    from segclass.config import TrainConfig
    from segclass.training_loop import train

    data = worker_arrays(arrays_path, threads, barrier)
    started = time.perf_counter()
    report = train(TrainConfig(mode="S+C*", seg_fraction=1.0, epochs=epochs, budget="paper"), data, device=device)
    steady = report["history"][-1]
    queue.put({"images_per_second": steady["images_per_second"], "train_seconds": steady["train_seconds"],
               "wall_seconds": time.perf_counter() - started, "peak_gpu_mib": peak_gpu_mib(device)})


def run_together(target, arrays, count: int, *args) -> list[dict]:
    """Start `count` spawned processes `target(arrays_path, threads, *args, barrier, queue)` at once; their results.

    The arrays go through a pickle file (each process loads its own copy, as a
    Ray trial gets its own); CPU threads are split evenly; the barrier lines
    the processes up after their start-up so they time the same moments.
    """
    import pickle

    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // count)
    with tempfile.TemporaryDirectory() as folder:
        arrays_path = str(Path(folder) / "arrays.pkl")
        with open(arrays_path, "wb") as file:
            pickle.dump(arrays, file)
        barrier, queue = context.Barrier(count), context.Queue()
        workers = [context.Process(target=target, args=(arrays_path, threads, *args, barrier, queue))
                   for _ in range(count)]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=3600) for _ in workers]
        for worker in workers:
            worker.join()
    return results


def packing(arrays, device: str, counts: list[int], epochs: int) -> list[dict]:
    """Aggregate training throughput with K processes sharing the device."""
    rows = []
    for count in counts:
        results = run_together(_train_worker, arrays, count, device, epochs)
        total = sum(r["images_per_second"] for r in results)
        rows.append({"processes": count, "aggregate_images_per_second": round(total, 1),
                     "per_process_images_per_second": round(total / count, 1),
                     "peak_gpu_mib_per_process": round(max(r["peak_gpu_mib"] for r in results), 1)})
        print(f"packing K={count}: {total:8.1f} images/s aggregate, {total / count:7.1f} per trial, "
              f"peak {rows[-1]['peak_gpu_mib_per_process']:.0f} MiB GPU memory per trial", flush=True)
    return rows


def prediction(device: str, batch_sizes: list[int], side: int, out: Path) -> list[dict]:
    """Tiles/s of the streamed predictor on a tissue image of side x side pixels."""
    from PIL import Image

    from segclass.config import ModelConfig
    from segclass.model import build_model
    from segclass.predict.run import PredictOptions, predict_image
    from segclass.synthetic import random_appearance, render_tissue, slide_labels
    from segclass.model_file import DEFAULT_PREPROCESSING, TrainedModel

    rng = np.random.default_rng(1)
    labels, tissue = slide_labels(512, rng)
    tile = render_tissue(labels, tissue, random_appearance(rng), rng)
    image = np.tile(tile, (side // 512 + 1, side // 512 + 1, 1))[:side, :side]
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out / "tissue.png")
    model = build_model(ModelConfig(len(CLASSES)))
    trained = TrainedModel(model.eval(), CLASSES, {}, dict(DEFAULT_PREPROCESSING), "untrained", "last", 0)
    rows = []
    for batch in [batch_sizes[0]] + batch_sizes:  # the first run warms up (cuDNN autotuning, allocator)
        options = PredictOptions(out_dir=out, batch_size=batch, device=device, stain_normalize=False, progress=False)
        summary = predict_image(trained, out / "tissue.png", options, f"b{batch}")
        rows.append({"batch_size": batch, "tiles": summary["tiles"], "tiles_per_second": summary["tiles_per_second"],
                     "predict_seconds": summary["predict_seconds"]})
    rows = rows[1:]
    for row in rows:
        print(f"predict batch {row['batch_size']:4d}: {row['tiles_per_second']:8.1f} tiles/s "
              f"({row['tiles']} tiles of 128 px, {side} x {side} image)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device to measure (cuda, cuda:0, cpu)")
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="numbers of concurrent trainer processes on the device (Ray's num_gpus = 1/K)")
    parser.add_argument("--cls-patches", type=int, default=4000, help="classification patches per trainer")
    parser.add_argument("--seg-patches", type=int, default=1000, help="segmentation patches per trainer")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trainer; the last one is timed")
    parser.add_argument("--predict-batches", type=int, nargs="+", default=[32, 128, 512],
                        help="prediction batch sizes to time")
    parser.add_argument("--predict-side", type=int, default=2048, help="side of the image predicted, pixels")
    parser.add_argument("--skip-training", action="store_true", help="only time prediction")
    parser.add_argument("--out", default="results/benchmarks/gpu_throughput.json", help="JSON with every figure")
    args = parser.parse_args(argv)

    import torch

    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    print(f"device: {device_name}; torch {torch.__version__}", flush=True)
    result: dict = {"device": device_name, "torch": torch.__version__, "args": vars(args)}
    if not args.skip_training:
        arrays = render_arrays(args.cls_patches, args.seg_patches, unique=64)
        result["packing"] = packing(arrays, args.device, args.packing, args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        result["prediction"] = prediction(args.device, args.predict_batches, args.predict_side, Path(folder))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
