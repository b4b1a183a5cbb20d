"""Does S+C beat S at low s, and which classification path uses the class labels best?

For every dataset, s and seed it trains S and S+C with each variant (the paper's
head, the released code's, and segclass's `mean-softmax`), plus S at s = 100% as
the reference, all at the `equal` budget (every trial takes the same optimizer
steps), and prints test macro and paper-micro F1 as mean +- std over seeds and
each variant's paired gain over S and over the best published variant.

Two datasets by default, each with six mask slides (s = 1% then holds a patch):
`synthetic` (the demo's generator; the labelled lesion dominates a class patch) and `focal`, a second synthetic set of other patients whose class
patches hold a small lesion ringed by normal tissue (`segclass.synthetic.FOCAL`),
written in the own-data `folder` layout and read through the `folder` adapter.
Nothing here looks at a test split to choose anything: every arm is fixed up
front, and the numbers are the last epoch's.

    python benchmarks/low_fraction.py                          # the full table, ~80 min on 2 cores
    python benchmarks/low_fraction.py --datasets synthetic --fractions 0.05 --seeds 1 --epochs 2   # a look

Finished trials are kept in `--out` (one JSON per dataset) and skipped when the
command is run again, so an interrupted run continues where it stopped.
Report what it prints, whichever variant it favours.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from segclass.cli_help import HelpFormatter
from segclass.config import VARIANTS

PUBLISHED = ("paper", "released-code")
DATASETS = ("synthetic", "focal")


#: Six mask slides instead of the demo's three (about 160 segmentation patches),
#: so that s = 1% still holds a patch; everything else is the generator's default.
TRAIN_SLIDES = 6


def dataset_source(name: str) -> tuple[str, Path]:
    """(adapter, root) of a benchmark dataset, generated on first use."""
    from segclass.data.registry import cache_root
    from segclass.synthetic import FOCAL, SyntheticConfig, generate

    config = SyntheticConfig() if name == "synthetic" else FOCAL
    root = generate(cache_root() / f"low_fraction_{name}" / "source", replace(config, train_slides=TRAIN_SLIDES))
    return ("synthetic" if name == "synthetic" else "folder"), root


def arms(fractions: list[float], variants: list[str]) -> list[tuple[str, str, float, str]]:
    """(label, mode, s, variant) of every arm: S and S+C per variant at each s, then S at 100%."""
    out = []
    for s in fractions:
        out.append((f"S s={s:g}", "S", s, "paper"))
        out += [(f"S+C s={s:g} {v}", "S+C", s, v) for v in variants]
    out.append(("S s=1", "S", 1.0, "paper"))
    return out


def run_settings(args: argparse.Namespace) -> dict[str, int | str]:
    """What a stored result must match to be reused or tabled: a result of other epochs, budget or
    evaluation code (`RESULT_VERSION`) is trained again, never mixed in."""
    from segclass.schema import RESULT_VERSION

    return {"epochs": args.epochs, "budget": args.budget, "result_version": RESULT_VERSION}


def run_dataset(name: str, args: argparse.Namespace) -> Path:
    """Train every missing arm of one dataset; return its results file."""
    import torch

    from segclass.config import TrainConfig
    from segclass.data import load_dataset
    from segclass.training_loop import train

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    adapter, root = dataset_source(name)
    data = load_dataset(adapter, root)
    out = Path(args.out) / f"low_fraction_{name}.json"
    done: dict[str, dict] = json.loads(out.read_text()) if out.is_file() else {}
    settings = run_settings(args)
    started = time.perf_counter()
    for seed in args.seeds:
        for label, mode, s, variant in arms(args.fractions, args.variants):
            key = f"{label} seed={seed}"
            if key in done and done[key]["settings"] == settings:
                continue
            config = TrainConfig(dataset=adapter, mode=mode, seg_fraction=s, seed=seed, variant=variant,
                                 budget=args.budget, epochs=args.epochs)
            t0 = time.perf_counter()
            report = train(config, data, device="cpu")
            done[key] = {"settings": settings, "label": label, "seed": seed, "seconds": time.perf_counter() - t0,
                         **{k: report[k] for k in ("test_macro_f1", "test_paper_micro_f1", "n_seg_patches",
                                                   "n_cls_patches", "images_per_second")}}
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=1))
            os.replace(tmp, out)  # atomic: a kill never leaves half a file
            print(f"[{name} {time.perf_counter() - started:5.0f}s] {key:34s} macro F1 "
                  f"{report['test_macro_f1']:.3f}  paper-micro F1 {report['test_paper_micro_f1']:.3f}  "
                  f"({done[key]['seconds']:.0f}s)", file=sys.stderr, flush=True)
    return out


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"


def table(name: str, results: dict[str, dict], args: argparse.Namespace) -> str:
    """Markdown tables of one dataset: F1 per arm, then each variant's paired gains."""
    def scores(label: str, metric: str = "test_macro_f1") -> dict[int, float]:
        return {r["seed"]: r[metric] for r in results.values() if r["label"] == label}

    reference = scores("S s=1")
    lines = [f"### {name}: budget {args.budget}, {args.epochs} epochs, seeds {args.seeds}, test set, last epoch",
             "", f"S at s = 100%: macro F1 {_mean_std(list(reference.values()))}, paper-micro F1 "
             f"{_mean_std(list(scores('S s=1', 'test_paper_micro_f1').values()))}", "",
             "| s | seg / cls patches | S | " + " | ".join(f"S+C {v}" for v in args.variants) + " |",
             "|---|---|---|" + "---|" * len(args.variants)]
    for s in args.fractions:
        row = [r for r in results.values() if r["label"] == f"S+C s={s:g} {args.variants[0]}"]
        sizes = f"{row[0]['n_seg_patches']} / {row[0]['n_cls_patches']}" if row else "-"
        cells = [_mean_std(list(scores(f"S s={s:g}").values()))]
        cells += [_mean_std(list(scores(f"S+C s={s:g} {v}").values())) for v in args.variants]
        lines.append(f"| {s:.0%} | {sizes} | " + " | ".join(cells) + " |")
    lines += ["", "Paired gain in macro F1 (same seed), mean ± std over seeds:", "",
              "| s | variant | over S | over the best published variant |", "|---|---|---|---|"]
    published = [v for v in args.variants if v in PUBLISHED]
    for s in args.fractions:
        base = scores(f"S s={s:g}")
        for v in args.variants:
            own = scores(f"S+C s={s:g} {v}")
            seeds = sorted(set(own) & set(base))
            over_s = [own[k] - base[k] for k in seeds]
            best_published = [max(scores(f"S+C s={s:g} {p}").get(k, np.nan) for p in published if p != v)
                              for k in seeds] if [p for p in published if p != v] else []
            over_p = [own[k] - b for k, b in zip(seeds, best_published) if np.isfinite(b)]
            lines.append(f"| {s:.0%} | {v} | {_mean_std(over_s)} | {_mean_std(over_p)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                        help="synthetic: the demo set; focal: class patches with normal tissue around the lesion")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10],
                        help="the low s values, as fractions")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="classification paths of the S+C arms")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds to average over")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial")
    parser.add_argument("--budget", default="equal", choices=("equal", "paper"), help="training budget of every arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per dataset process")
    parser.add_argument("--workers", type=int, default=2, help="datasets trained at once, one process each")
    parser.add_argument("--out", default="results/benchmarks", help="folder of the per-dataset results files")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(args.workers, len(args.datasets))) as pool:
        files = dict(zip(args.datasets, pool.map(run_dataset, args.datasets, [args] * len(args.datasets))))
    for name, path in files.items():
        results = {k: v for k, v in json.loads(path.read_text()).items() if v["settings"] == run_settings(args)}
        print(table(name, results, args) + "\n")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
