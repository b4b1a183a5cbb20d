"""One trial from the command line, no Ray needed.

    python -m segclass.train --dataset synthetic --mode S+C --seg-fraction 0.05 --seed 1

Shows progress per epoch on stderr, prints the final metrics as one JSON object
on stdout and, with --metrics-out, writes the same object to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from segclass.config import BUDGETS, MODES, PRECISIONS, VARIANTS, TrainConfig, variants_help
from segclass.errors import SegclassError
from segclass.cli_help import HelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segclass.train",
        description="Train one segclass trial (one grid point) and print its final metrics as JSON.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--dataset", default="synthetic",
                        help="dataset name: 'synthetic' (generated on first use), 'bach', 'gleason2019', "
                             "'digestpath2019' (their files under --data-root) or 'folder' (your own data, see docs/data.md)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding the dataset's files; default for synthetic: data_cache/synthetic/source")
    parser.add_argument("--mode", default="S+C", choices=MODES,
                        help="which patches to train on: S = s%% segmentation only; S+C = s%% segmentation + "
                             "(100-s)%% classification; S+C* = s%% segmentation + all classification; "
                             "S2+C2, S2+C2*, S2*+C2 = classification study (see docs/sweep.md)")
    parser.add_argument("--seg-fraction", type=float, default=0.05,
                        help="s as a fraction in [0, 1]: share of segmentation patches (0.05 = 5%%)")
    parser.add_argument("--cls-fraction", type=float, default=0.0,
                        help="c as a fraction in [0, 0.5]: share of classification patches, classification study only")
    parser.add_argument("--seed", type=int, default=1, help="fixes patch subsets, initial weights, batches and augmentation")
    parser.add_argument("--variant", default="paper", choices=VARIANTS,
                        help=variants_help())
    parser.add_argument("--budget", default="paper", choices=BUDGETS,
                        help="'paper': an epoch is one pass over the trial's own patches; 'equal': every trial of a "
                             "dataset runs the same iterations per epoch (compute-matched)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="training epochs (the paper used 100)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="patches of each kind per iteration")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="Adam learning rate")
    parser.add_argument("--validate-every", type=int, default=TrainConfig.validate_every,
                        help="validate every N epochs and at the last; the best epoch is chosen among the validated")
    parser.add_argument("--pretrained", default=None, metavar="imagenet|none|PATH",
                        help="encoder init: 'imagenet' = torchvision's ImageNet ResNet-18 weights (IMAGENET1K_V1, the "
                             "paper's; downloaded once into torch's hub cache; offline, the error says where to put "
                             "the file); 'none' = random init; or PATH of a local torchvision resnet18 state dict. "
                             "Omitted: random init, said loudly in the log")
    parser.add_argument("--run-dir", default=None,
                        help="folder for the per-epoch checkpoint; an existing checkpoint there is resumed")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="arithmetic of training and evaluation: bf16 autocast or float32; 'auto' = bf16 on CUDA, "
                             "fp32 elsewhere (the report's 'precision' says which ran)")
    parser.add_argument("--metrics-out", default=None, help="also write the final metrics JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    from segclass.errors import naming_root_flag

    args = build_parser().parse_args(argv)
    with naming_root_flag("--data-root"):  # the data layer's messages name this command's flag
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from segclass.data import load_dataset
    from segclass.model import resolve_pretrained
    from segclass.training_loop import train

    try:
        config = TrainConfig(
            dataset=args.dataset, mode=args.mode, seg_fraction=args.seg_fraction, cls_fraction=args.cls_fraction,
            seed=args.seed, variant=args.variant, budget=args.budget, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, pretrained=args.pretrained, validate_every=args.validate_every,
            precision=args.precision,
        )
        weights = resolve_pretrained(args.pretrained, progress=not args.quiet)  # before the data: fail fast
        data = load_dataset(args.dataset, args.data_root)
        report = train(config, data, run_dir=args.run_dir, device=args.device, pretrained_state=weights.state)
        report["pretrained_sha256"] = weights.sha256
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report)
    print(text)
    if args.metrics_out:
        Path(args.metrics_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
