"""Peak memory and tiles/s of `segclass.predict` as slides grow, against whole-image prediction.

Writes synthetic pyramidal slides (OpenSlide-readable TIFF, 2.5x level 0 like
the built-in dataset) whose working size at 1.25x is the default slide's
(1024 px) and 2 and 4 times its side (4x and 16x its area), then predicts each
in a fresh process two ways and records the process's peak resident memory:

- streamed: `segclass.predict.run.predict_image` (bands of rows, tissue found
  on a thumbnail, windows only on tissue, stains mapped per band);
- whole image: the trainer's evaluation path (`read_image` and Macenko on the
  whole image held in memory, then the same streamed windows over it). Until
  evaluation and prediction shared one implementation this arm ran a separate
  whole-image predictor holding C x H x W logits (`predict_logits`, removed);
  the README's whole-image column was measured with that.

    python benchmarks/predict_memory.py                      # 1x, 4x, 16x area; about 6 minutes on 2 cores
    python benchmarks/predict_memory.py --factors 1 2        # 1x and 4x area only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = ("normal", "benign", "in_situ", "invasive")
DEFAULT_SIDE = 1024  # the built-in synthetic slide at 1.25x


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _trained(reference_rgb: np.ndarray):
    """An untrained network with a real stain reference: memory and speed do not depend on training."""
    import torch

    from segclass.config import ModelConfig
    from segclass.model import build_model
    from segclass.preprocess.stain import StainNormalizer
    from segclass.model_file import DEFAULT_PREPROCESSING, TrainedModel

    torch.manual_seed(0)
    preprocessing = {**DEFAULT_PREPROCESSING, "stain_reference": StainNormalizer().fit(reference_rgb).state()}
    return TrainedModel(build_model(ModelConfig(len(CLASSES))).eval(), CLASSES, {}, preprocessing, "untrained",
                        "last", 0)


def worker(kind: str, slide: Path, reference: Path, out: Path) -> dict:
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    trained = _trained(np.asarray(Image.open(reference)))
    before = _peak_mib()
    started = time.perf_counter()
    if kind == "streamed":
        from segclass.predict.run import PredictOptions, predict_image

        summary = predict_image(trained, slide, PredictOptions(out_dir=out, progress=False), slide.stem)
        tiles, pixels = summary["tiles"], summary["width"] * summary["height"]
    else:
        from segclass.data.arrays import EvalImage
        from segclass.evaluation import predict_eval_image
        from segclass.preprocess.stain import StainNormalizer
        from segclass.slide import read_image

        rgb = read_image(slide, 1.25).rgb
        normalized = StainNormalizer.from_state(trained.preprocessing["stain_reference"]).normalize(rgb)
        item = EvalImage(slide.stem, normalized, np.zeros(rgb.shape[:2], np.uint8))  # tissue: found on its pixels
        mask, _ = predict_eval_image(trained.model, item, len(CLASSES))
        tiles, pixels = None, mask.size
    seconds = time.perf_counter() - started
    return {"kind": kind, "pixels": pixels, "tiles": tiles, "seconds": round(seconds, 2),
            "tiles_per_second": round(tiles / seconds, 1) if tiles else None,
            "peak_mib": round(_peak_mib(), 1), "peak_above_model_mib": round(_peak_mib() - before, 1)}


def write_slides(folder: Path, factors: list[int]) -> tuple[dict[int, Path], Path]:
    from PIL import Image

    from segclass.slide import write_pyramidal_tiff
    from segclass.synthetic import LEVEL0_MPP, random_appearance, render_tissue, slide_labels

    rng = np.random.default_rng(7)
    labels, tissue = slide_labels(DEFAULT_SIDE, rng)
    rgb = render_tissue(labels, tissue, random_appearance(rng), rng)
    reference = folder / "reference.png"
    Image.fromarray(rgb[384:512, 384:512]).save(reference)
    slides = {}
    for factor in factors:
        working = np.tile(rgb, (factor, factor, 1))  # a tissue microarray of copies: real tissue everywhere
        level0 = np.asarray(Image.fromarray(working).resize((working.shape[1] * 2, working.shape[0] * 2), Image.BICUBIC))
        slides[factor] = folder / f"slide_{factor}x{factor}.tiff"
        write_pyramidal_tiff(slides[factor], level0, LEVEL0_MPP)
        print(f"wrote {slides[factor].name}: {working.shape[1]} x {working.shape[0]} px at 1.25x", flush=True)
    return slides, reference


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4],
                        help="slide sides as multiples of the default slide's (area grows with the square)")
    parser.add_argument("--out", default="results/benchmarks/predict_memory.json", help="JSON with every figure")
    parser.add_argument("--worker", nargs=4, metavar=("KIND", "SLIDE", "REFERENCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, slide, reference, out = args.worker
        print(json.dumps(worker(kind, Path(slide), Path(reference), Path(out))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        slides, reference = write_slides(Path(folder), args.factors)
        for factor, slide in slides.items():
            for kind in ("streamed", "whole-image"):
                done = subprocess.run([sys.executable, __file__, "--worker", kind, str(slide), str(reference), folder],
                                      capture_output=True, text=True, check=True)
                row = {"factor": factor, "area_vs_default": factor**2, **json.loads(done.stdout.splitlines()[-1])}
                rows.append(row)
                speed = f"{row['tiles_per_second']:6.1f} tiles/s" if row["tiles_per_second"] else " " * 14
                print(f"{factor**2:3d}x area ({row['pixels'] / 1e6:5.1f} Mpx at 1.25x) {kind:12s} peak "
                      f"{row['peak_mib']:7.0f} MiB ({row['peak_above_model_mib']:6.0f} above the loaded model) "
                      f"{speed} {row['seconds']:6.1f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
