"""Shared command-line options of the analysis CLIs (analysis/*.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from segclass.analysis.report_builder import ReportOptions
from segclass.cli_help import HelpFormatter


def parser(description: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    result.add_argument("--mlflow-uri", default=None,
                        help="MLflow tracking URI of the sweep; default: sqlite:///RESULTS/mlflow.db, as the sweep")
    result.add_argument("--results", default="results", help="the sweep's results folder (for the defaults)")
    result.add_argument("--out", default=None, help="output folder; default: RESULTS/analysis")
    result.add_argument("--experiment", default=None,
                        help="only this MLflow experiment (e.g. segclass-segmentation-bach)")
    result.add_argument("--dataset", default=None, help="only runs of this dataset")
    result.add_argument("--sweep", default=None,
                        help="only runs trained by this sweep (its --name; a point another sweep had already "
                             "finished keeps that sweep's name)")
    result.add_argument("--epochs", type=int, default=None, help="only runs trained for this many epochs")
    result.add_argument("--settings", default=None,
                        help="only runs with these training settings (the segclass.settings tag, or its start; "
                             "the error for mixed settings lists them)")
    result.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="how many seeds each cell was planned with (a count, e.g. 5, not a list); cells with "
                             "fewer show their count (default: the most seeds found in a cell)")
    result.add_argument("--with-paper", action="store_true",
                        help="draw and compare the paper's own numbers where the dataset is one of the paper's")
    return result


def options(args: argparse.Namespace) -> ReportOptions:
    from segclass.schema import default_tracking_uri

    results = Path(args.results)
    return ReportOptions(mlflow_uri=args.mlflow_uri or default_tracking_uri(results),
                         out_dir=Path(args.out) if args.out else results / "analysis",
                         experiment=args.experiment, dataset=args.dataset, with_paper=args.with_paper,
                         seeds=args.seeds, sweep=args.sweep, epochs=args.epochs, settings=args.settings)


def run(main: Callable[[], int]) -> int:
    """Run an analysis CLI's body; segclass's own errors become one line on stderr and exit status 2."""
    from segclass.errors import SegclassError

    try:
        return main()
    except SegclassError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
