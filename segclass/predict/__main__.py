"""Predict masks for your own slides and images with a trained segclass model.

    python -m segclass.predict --checkpoint runs:/<run id> slide1.svs slide2.tiff photo.png --out predictions/

Prints one line per input, writes per-input outputs (see segclass.predict.outputs)
and predictions.csv, and exits non-zero when any input failed (the others are
still predicted).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from segclass.errors import SegclassError
from segclass.cli_help import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    from segclass.predict.run import TIFF_CHOICES, PredictOptions

    defaults = PredictOptions(out_dir=Path("predictions"))
    parser = argparse.ArgumentParser(
        prog="python -m segclass.predict",
        description="Turn a trained segclass model into class masks, colour overlays and per-class areas for "
                    "whole-slide images (anything OpenSlide reads) and plain images (PNG, JPEG, TIFF). The model's "
                    "magnification, patch size, stride, tissue-detection thresholds, stain reference and class "
                    "names come from its file.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="SLIDE_OR_IMAGE",
                        help="slides or images to predict; a folder stands for the slides and images in it")
    parser.add_argument("--checkpoint", required=True,
                        help="trained model: a model.pt or checkpoint.pt file, a folder holding one, an MLflow run "
                             "id (its logged model), a runs:/<run id>/<artifact path> URI or a Model Registry URI "
                             "models:/<name>/<version>")
    parser.add_argument("--out", default=str(defaults.out_dir),
                        help="output folder: <name>_mask.png, <name>_overlay.png, <name>_areas.csv, <name>.json, "
                             "predictions.csv (and <name>_mask.tiff, <name>_comparison.png)")
    parser.add_argument("--weights", default="last", choices=("last", "best"),
                        help="from a trial checkpoint: last-epoch weights (what the test metrics describe) or the "
                             "best validation epoch's; a model.pt holds one set and ignores this")
    parser.add_argument("--mask", action="append", default=[], metavar="PATH",
                        help="ground truth: give once per input in input order, or once as a folder searched for "
                             "<stem>.png/.tif/.xml (or <stem>_mask.*); class-id images at any resolution with the "
                             "image's aspect ratio, or ImageScope XML (BACH's labels). Adds metrics and a "
                             "side-by-side figure")
    parser.add_argument("--scale", type=float, default=None,
                        help="working pixels per file pixel (level 0), e.g. 0.03125 for 40x -> 1.25x; needed for "
                             "slides without resolution metadata; plain images default to 1 (native resolution)")
    parser.add_argument("--magnification", type=float, default=None,
                        help="read slides at this objective magnification instead of the model's training one")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda when available, "
                                                      "else cpu)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="windows per forward pass")
    parser.add_argument("--stride", type=int, default=None,
                        help="sliding-window stride in pixels (default: the model's evaluation stride, half a patch)")
    parser.add_argument("--tiff", default=defaults.tiff, choices=TIFF_CHOICES,
                        help="also write the mask as a pyramidal TIFF with the slide's resolution: auto = when its "
                             "longer side exceeds --tiff-min-side")
    parser.add_argument("--tiff-min-side", type=int, default=defaults.tiff_min_side,
                        help="longer side (pixels) above which --tiff auto writes the TIFF")
    parser.add_argument("--thumbnail-side", type=int, default=defaults.thumbnail_side,
                        help="longest side of the overlay and comparison figures, pixels")
    parser.add_argument("--no-stain-normalize", action="store_true",
                        help="feed colours as they are instead of mapping them to the model's stain reference")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store for run ids (default: $MLFLOW_TRACKING_URI, else sqlite:///results/mlflow.db)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-input lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(message)s", stream=sys.stderr)
    from segclass.predict import outputs
    from segclass.predict.run import PredictOptions, pooled_metrics, predict_many
    from segclass.predict.source import load_trained
    from segclass.predict.truth import find_truth

    inputs = expand_inputs([Path(p) for p in args.inputs])
    if not inputs:
        print(f"error: no slides or images in {', '.join(args.inputs)}", file=sys.stderr)
        return 2
    masks = [Path(p) for p in args.mask]
    if masks and not (len(masks) == 1 and masks[0].is_dir()) and len(masks) != len(inputs):
        print(f"error: --mask was given {len(masks)} times for {len(inputs)} inputs; give it once per input "
              "or once as a folder", file=sys.stderr)
        return 2
    for name, value in (("--batch-size", args.batch_size), ("--stride", args.stride or 1),
                        ("--thumbnail-side", args.thumbnail_side)):
        if value < 1:
            print(f"error: {name} must be positive, got {value}", file=sys.stderr)
            return 2
    if args.scale is not None and args.scale <= 0:
        print(f"error: --scale must be positive, got {args.scale}", file=sys.stderr)
        return 2
    device_problem = _check_device(args.device)
    if device_problem:
        print(f"error: {device_problem}", file=sys.stderr)
        return 2
    try:
        if args.quiet:  # MLflow's download progress bar too
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        trained = load_trained(args.checkpoint, args.tracking_uri, args.weights)
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = PredictOptions(
        out_dir=Path(args.out), scale=args.scale, magnification=args.magnification, batch_size=args.batch_size,
        stride=args.stride, device=args.device, tiff=args.tiff, tiff_min_side=args.tiff_min_side,
        thumbnail_side=args.thumbnail_side, stain_normalize=not args.no_stain_normalize, progress=not args.quiet,
    )
    truths = [find_truth(path, masks, i) for i, path in enumerate(inputs)] if masks else None
    results, failures = predict_many(trained, inputs, options, truths)
    for result in results:
        if "metrics" in result:
            metrics = result["metrics"]
            print(f"{result['name']}: macro F1 {metrics['macro_f1']:.3f}, paper-micro F1 "
                  f"{metrics['paper_micro_f1']:.3f}, pixel accuracy {metrics['pixel_accuracy']:.3f}", file=sys.stderr)
    pooled = pooled_metrics(results, trained.class_names)
    if pooled is not None:
        scored = sum("metrics" in r for r in results)
        print(f"pooled over {scored} input(s) with ground truth: macro F1 {pooled['macro_f1']:.3f}, paper-micro F1 "
              f"{pooled['paper_micro_f1']:.3f} (one confusion matrix, as a trial's test metrics)", file=sys.stderr)
        outputs.write_json(options.out_dir / "pooled_metrics.json", pooled)
    print(f"predicted {len(results)} of {len(inputs)} inputs into {options.out_dir} (see predictions.csv)",
          file=sys.stderr)
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure.input}: {failure.error}", file=sys.stderr)
        return 1
    return 0


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Folders stand for the slides and images directly inside them (sorted); files stay as given."""
    from segclass.slide import PLAIN_SUFFIXES, SLIDE_ONLY_SUFFIXES

    suffixes = PLAIN_SUFFIXES | SLIDE_ONLY_SUFFIXES | {".tif", ".tiff"}
    expanded = []
    for path in paths:
        if path.is_dir():
            expanded += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        else:
            expanded.append(path)
    return expanded


def _check_device(device: str | None) -> str | None:
    """Why `device` cannot be used, or None: checked once, not once per input."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        return f"--device {device!r} is not a torch device ({exc}); use cpu, cuda or cuda:N"
    if parsed.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device} asks for CUDA but torch sees no CUDA device here; use --device cpu"
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
    return None


if __name__ == "__main__":
    sys.exit(main())
