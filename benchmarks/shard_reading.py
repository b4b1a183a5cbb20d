"""Reading training batches: HDF5 shards vs one PNG file per patch (the released code's way).

Both read the same patches of the synthetic dataset. Each batch is 20
segmentation patches (image + mask) and 20 classification patches, drawn at
random as the trainer does. Reported: batches/s for
  - png:     PIL opens one image (and one mask) file per patch,
  - shards:  ShardReader reads the batch's rows from the chunked, compressed shards,
  - memory:  the shards read once (what a trial does), then numpy indexing;
and the shard build throughput (patches/s) for the synthetic slides.

    python benchmarks/shard_reading.py [--batches 200]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segclass.data.build import BuildParams, build_cache
from segclass.data.registry import default_source
from segclass.data.shards import ShardReader, read_cache

BATCH = 20


def export_pngs(data, folder: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    seg, cls = [], []
    for index, (image, mask) in enumerate(zip(data.seg_images, data.seg_masks)):
        pair = (folder / f"seg_{index:05d}.png", folder / f"seg_{index:05d}_mask.png")
        Image.fromarray(image).save(pair[0])
        Image.fromarray(mask).save(pair[1])
        seg.append(pair)
    for index, image in enumerate(data.cls_images):
        path = folder / f"cls_{index:05d}.png"
        Image.fromarray(image).save(path)
        cls.append(path)
    return seg, cls


def rate(read_batch, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
    started = time.perf_counter()
    for seg_index, cls_index in batches:
        read_batch(seg_index, cls_index)
    return len(batches) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="random batches to read per method")
    parser.add_argument("--data-root", default=None, help="synthetic source folder (default data_cache/synthetic/source)")
    args = parser.parse_args(argv)
    root = Path(args.data_root) if args.data_root else default_source("synthetic")

    work = Path(tempfile.mkdtemp(prefix="segclass-bench-"))
    try:
        timings = {}
        for label, params in (("with stain normalization", BuildParams()),
                              ("without stain normalization", BuildParams(stain_normalize=False))):
            started = time.perf_counter()
            cache = build_cache("synthetic", root, work / label.replace(" ", "-"), params)
            timings[label] = time.perf_counter() - started
        data = read_cache(cache)
        patches = len(data.seg_labels) + len(data.cls_labels)
        (work / "png").mkdir()
        seg_pngs, cls_pngs = export_pngs(data, work / "png")

        rng = np.random.default_rng(0)
        batches = [(np.sort(rng.choice(len(seg_pngs), BATCH)), np.sort(rng.choice(len(cls_pngs), BATCH)))
                   for _ in range(args.batches)]

        def from_png(seg_index, cls_index):
            images = [np.asarray(Image.open(seg_pngs[i][0])) for i in seg_index]
            masks = [np.asarray(Image.open(seg_pngs[i][1])) for i in seg_index]
            patches_ = [np.asarray(Image.open(cls_pngs[i])) for i in cls_index]
            return np.stack(images), np.stack(masks), np.stack(patches_)

        reader = ShardReader(cache)

        def from_shards(seg_index, cls_index):
            return reader.batch("seg", seg_index), reader.batch("cls", cls_index)

        def from_memory(seg_index, cls_index):
            return data.seg_images[seg_index], data.seg_masks[seg_index], data.cls_images[cls_index]

        png_rate, shard_rate, memory_rate = rate(from_png, batches), rate(from_shards, batches), rate(from_memory, batches)
        started = time.perf_counter()
        read_cache(cache)
        load_seconds = time.perf_counter() - started
        reader.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"synthetic dataset: {patches} training patches, {args.batches} random batches of {BATCH}+{BATCH}\n")
    print("| reader | batches/s | vs PNG |")
    print("|---|---|---|")
    print(f"| PNG per patch (PIL) | {png_rate:.1f} | 1.0x |")
    print(f"| HDF5 shards (ShardReader, per batch) | {shard_rate:.1f} | {shard_rate / png_rate:.1f}x |")
    print(f"| shards loaded once, then memory | {memory_rate:.0f} | {memory_rate / png_rate:.0f}x |")
    print(f"\nloading the whole cache (with checksums): {load_seconds:.2f}s")
    for label, seconds in timings.items():
        print(f"shard build {label}: {seconds:.1f}s = {patches / seconds:.0f} patches/s "
              "(reading slides, extraction, writing shards)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
