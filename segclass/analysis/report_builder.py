"""Build every table and figure from the MLflow runs, and an index that links them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segclass.analysis import confusion, curves, samples, tables
from segclass.analysis.annotation_budget import SHARE_AT, SHARE_GOAL, annotation_budget, share_of_full_masks
from segclass.analysis.paper import paper_results, paper_table1
from segclass.analysis.runs import init_labels, init_text, load_runs, precision_text


@dataclass
class ReportOptions:
    mlflow_uri: str
    out_dir: Path
    experiment: str | None = None
    dataset: str | None = None
    with_paper: bool = False  # draw the paper's numbers beside ours where the dataset is one of the paper's
    seeds: int | None = None  # seeds planned per cell (default: the seeds found in the runs)
    sweep: str | None = None  # only this sweep's runs
    epochs: int | None = None  # only runs of this many epochs
    settings: str | None = None  # only runs with this settings hash (prefix)


def select_runs(options: ReportOptions) -> pd.DataFrame:
    """The finished runs the options select (refused when they mix training settings)."""
    return load_runs(options.mlflow_uri, options.experiment, options.dataset, sweep=options.sweep,
                     settings=options.settings, epochs=options.epochs)


@dataclass
class Report:
    index: Path
    files: list[Path] = field(default_factory=list)
    runs: int = 0


def build_tables(runs: pd.DataFrame, options: ReportOptions) -> tuple[list[Path], pd.DataFrame, pd.DataFrame]:
    """Tables D.5 and D.4 in the paper's setting, with every arm, and arms side by side."""
    planned = options.seeds or tables.seeds_planned(runs)
    init = init_text(init_labels(runs))
    init = f"; {init}" if init else ""
    seg_all, seg_summary = tables.segmentation_table(runs, planned)
    cls_all, cls_summary = tables.classification_table(runs, planned)
    out = options.out_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, summary, everything, what in (
        ("table_d5_segmentation", seg_summary, seg_all, "Table D.5 (ours): test F1 in percent, mean ± std over seeds; "
                                                          "columns are s (%)"),
        ("table_d4_classification", cls_summary, cls_all, "Table D.4 (ours): held-out classification accuracy in "
                                                            "percent; columns are c (%)"),
    ):
        if summary.empty:  # a sweep without this study: no empty table to show
            continue
        xs = [float(c) for c in everything.columns if c not in ("dataset", "variant", "budget", "mode", "metric")]
        paper_view = tables.wide_table(tables.default_view(summary), xs, planned,
                                       ["dataset", "variant", "budget", "mode", "metric"])
        files += tables.write_table(paper_view, out / name, f"{what}. {tables.default_view_name(summary)}{init}.")
        files += tables.write_table(everything, out / f"{name}_all", f"{what}. Every variant and budget{init}.")
        files += tables.write_table(tables.comparison_table(summary, planned), out / f"{name}_comparison",
                                    f"{what}. Variants and budgets side by side at each value{init}.")
    budget = annotation_budget(runs)
    if not budget.empty:  # needs S at s = 100%
        files += tables.write_table(budget, out / "annotation_budget",
                                    "Annotation budget: the smallest s (%) at which each mode's mean test F1 reaches "
                                    "90% or 95% of S at s = 100%, the masks (segmentation patches) that s holds, the "
                                    f"smallest s of each seed (min–max) and how many seeds reach it{init}.")
    shares = share_of_full_masks(runs)
    if not shares.empty:
        files += tables.write_table(shares, out / "share_of_full_masks",
                                    f"How close to full masks: at s = {SHARE_AT:g}%, each arm's test macro F1 as a "
                                    "share of S at s = 100% (its mean over seeds, same budget): the mean share and "
                                    f"its seed range; the goal is {SHARE_GOAL:.0%}{init}.")
    seg_summary.to_csv(out / "segmentation_summary.csv", index=False)
    cls_summary.to_csv(out / "classification_summary.csv", index=False)
    return files + [out / "segmentation_summary.csv", out / "classification_summary.csv"], seg_summary, cls_summary


def build_curves(seg_summary: pd.DataFrame, cls_summary: pd.DataFrame, options: ReportOptions,
                 inits: dict[str, str] | None = None) -> list[Path]:
    """Figs. 5 and 6; `inits` (dataset -> init label, see `init_labels`) goes under each figure's title."""
    out = options.out_dir / "figures"
    paper = paper_results() if options.with_paper else pd.DataFrame()
    files = []
    if not seg_summary.empty:
        files += curves.plot_arms(seg_summary, ["macro_f1", "paper_micro_f1"], "s (% of segmentation patches)",
                                  out / "comparison", inits)
        ours = curves.normalize(seg_summary, "S", 100.0)
        theirs = _paper_normalized(paper, "D.5", "S", 100.0)
        files += curves.plot_curves(ours, ["macro_f1", "paper_micro_f1"], "Fig. 5, relative to S at s = 100%",
                                    "s (% of segmentation patches)", out / "fig5", theirs, inits)
    if not cls_summary.empty:
        ours = curves.normalize(cls_summary, "S2+C2", 50.0)
        theirs = _paper_normalized(paper, "D.4", "S2+C2", 50.0)
        files += curves.plot_curves(ours, ["accuracy"], "Fig. 6, relative to S2+C2 at c = 50%",
                                    "c (% of classification patches)", out / "fig6", theirs, inits)
    return files


def _paper_normalized(paper: pd.DataFrame, table: str, mode: str, x: float) -> pd.DataFrame:
    if paper.empty:
        return paper
    part = paper[paper["table"] == table].assign(variant="paper", budget="paper")
    return curves.normalize(part, mode, x)


def paper_comparison(seg_summary: pd.DataFrame, cls_summary: pd.DataFrame) -> list[str]:
    lines = []
    for summary in (seg_summary, cls_summary):
        merged = tables.within_paper_std(summary, paper_results())
        if merged.empty:
            continue
        for (dataset, metric), frame in merged.groupby(["dataset", "metric"]):
            inside = int(frame["within_std"].sum())
            lines.append(f"{dataset} {metric}: {inside} of {len(frame)} cells within the paper's mean ± std "
                         f"(mean difference {np.mean(frame['mean'] - frame['mean_paper']):+.1f} points)")
    return lines


def write_runs(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """The frame every table is computed from, one row per run: `tables/runs.parquet` and `tables/runs.csv`.

    The tables average over seeds and show a few metrics; these files keep every
    run with every param (`param_<name>`), its identity columns and all its final
    metrics, for questions the report does not ask (pandas, polars, a spreadsheet).
    Metrics are named as in MLflow (`final_test_macro_f1`), the swept fraction
    `swept_percent` (s in the segmentation study, c in the classification one).
    """
    from segclass.analysis.runs import with_mlflow_names

    out = out_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    parquet, csv = out / "runs.parquet", out / "runs.csv"
    named = with_mlflow_names(runs)  # a column is found by the name the MLflow UI shows
    named.to_parquet(parquet, index=False)
    named.to_csv(csv, index=False)
    return [parquet, csv]


def build_report(options: ReportOptions) -> Report:
    runs = select_runs(options)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    runs_files = write_runs(runs, options.out_dir)
    table_files, seg_summary, cls_summary = build_tables(runs, options)
    figure_files = build_curves(seg_summary, cls_summary, options, init_labels(runs))
    class_names = _class_names(runs)
    sample_files = samples.plot_samples(runs, class_names, options.out_dir / "figures") if not runs.empty else []
    rows = confusion.confusion_rows(runs) if not runs.empty else []
    confusion_files = confusion.write_confusion(rows, options.out_dir / "tables",
                                                paper_table1() if options.with_paper else None) if rows else []
    comparison = paper_comparison(seg_summary, cls_summary) if options.with_paper else []
    index = _write_index(options, runs, runs_files, table_files, figure_files, sample_files, confusion_files,
                         comparison)
    return Report(index, runs_files + table_files + figure_files + sample_files + confusion_files, len(runs))


def _class_names(runs: pd.DataFrame) -> dict[str, list[str]]:
    from segclass.analysis.runs import artifact_path

    names = {}
    for dataset, frame in runs.groupby("dataset") if not runs.empty else []:
        try:
            report = json.loads(artifact_path(frame.iloc[0]["artifact_uri"], "report.json").read_text())
            names[dataset] = report["class_names"]
        except Exception:
            names[dataset] = []
    return names


def _write_index(options, runs, runs_files, table_files, figure_files, sample_files, confusion_files,
                 comparison) -> Path:
    out = options.out_dir
    lines = ["# segclass report", "", f"{len(runs)} finished runs from `{options.mlflow_uri}`"
             + (f", experiment `{options.experiment}`" if options.experiment else "")
             + (f", dataset `{options.dataset}`" if options.dataset else "") + ".", ""]
    if not runs.empty:
        lines += [f"Encoder {init_text(init_labels(runs))}; {precision_text(runs)}.", ""]
    if comparison:
        lines += ["## Against the paper", ""] + [f"- {line}" for line in comparison] + [""]
    lines += ["## Tables", ""]
    parquet, csv = (path.relative_to(out) for path in runs_files)
    lines += [f"One row per run: every param, identity and final metric ([{parquet}]({parquet}), "
              f"[{csv}]({csv}); `pd.read_parquet(\"{parquet}\")`).", ""]
    for path in table_files + confusion_files:
        if path.suffix in (".md", ".csv", ".tex", ".json"):
            lines.append(f"- [{path.relative_to(out)}]({path.relative_to(out)})")
    for md in [p for p in table_files + confusion_files if p.suffix == ".md"]:
        lines += ["", md.read_text()]
    lines += ["## Figures", ""]
    for path in figure_files + sample_files:
        if path.suffix == ".png":
            lines += [f"### {path.stem}", "", f"![{path.stem}]({path.relative_to(out)})",
                      f"([SVG]({path.with_suffix('.svg').relative_to(out)}))", ""]
    index = out / "index.md"
    index.write_text("\n".join(lines) + "\n")
    return index
