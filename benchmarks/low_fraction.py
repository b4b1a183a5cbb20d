"""Does S+C beat S at low s? The paper's headline claim, at equal compute, on synthetic data.

Runs, for each seed: S, S+C (paper), S+C (released-code), S+C* (paper) at s = 5%
and S at s = 100%, all with budget `equal`, and prints a table of test macro and
paper-micro F1 (mean +- std over seeds) plus training throughput.

    python benchmarks/low_fraction.py                 # 3 seeds, about 20 minutes on 2 cores
    python benchmarks/low_fraction.py --seeds 1 --epochs 2   # a quick look

Report what it prints, whichever variant it favours.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from segclass.config import TrainConfig
from segclass.data import load_dataset
from segclass.trainer import train

ARMS = (  # (label, mode, seg_fraction, variant)
    ("S  s=5%", "S", None, "paper"),
    ("S+C s=5% (paper)", "S+C", None, "paper"),
    ("S+C s=5% (released-code)", "S+C", None, "released-code"),
    ("S+C* s=5% (paper)", "S+C*", None, "paper"),
    ("S  s=100%", "S", 1.0, "paper"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds to average over")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per trial")
    parser.add_argument("--fraction", type=float, default=0.05, help="the low s, as a fraction")
    parser.add_argument("--budget", default="equal", choices=("equal", "paper"), help="training budget of every arm")
    parser.add_argument("--data-root", default=None, help="synthetic dataset folder (default data_cache/synthetic/source)")
    parser.add_argument("--out", default="results/benchmarks/low_fraction.json", help="where to write all reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    data = load_dataset("synthetic", args.data_root)
    reports: dict[str, list[dict]] = {label: [] for label, *_ in ARMS}
    started = time.perf_counter()
    for seed in args.seeds:
        for label, mode, fraction, variant in ARMS:
            config = TrainConfig(mode=mode, seg_fraction=fraction if fraction is not None else args.fraction,
                                 seed=seed, variant=variant, budget=args.budget, epochs=args.epochs)
            t0 = time.perf_counter()
            report = train(config, data)
            reports[label].append(report)
            print(f"[{time.perf_counter() - started:6.0f}s] seed {seed} {label:26s} macro F1 {report['test_macro_f1']:.3f} "
                  f"paper-micro F1 {report['test_paper_micro_f1']:.3f} ({time.perf_counter() - t0:.0f}s, "
                  f"{report['images_per_second']:.0f} img/s)", file=sys.stderr, flush=True)

    print(f"\nsynthetic, budget {args.budget}, {args.epochs} epochs, seeds {args.seeds}, test set (last epoch)\n")
    print("| arm | seg patches | cls patches | macro F1 | paper-micro F1 |")
    print("|---|---|---|---|---|")
    for label, runs in reports.items():
        macro = np.array([r["test_macro_f1"] for r in runs])
        micro = np.array([r["test_paper_micro_f1"] for r in runs])
        print(f"| {label} | {runs[0]['n_seg_patches']} | {runs[0]['n_cls_patches']} | "
              f"{macro.mean():.3f} ± {macro.std():.3f} | {micro.mean():.3f} ± {micro.std():.3f} |")
    throughput = np.mean([r["images_per_second"] for runs in reports.values() for r in runs])
    print(f"\ntraining throughput: {throughput:.1f} images/s (mean over trials); "
          f"wall time {time.perf_counter() - started:.0f}s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
