"""Raw tables as in the paper: Table D.5 (segmentation) and Table D.4 (classification).

Cells are `mean ± std` over seeds in percent (std with ddof=0, as numpy's
default); a cell with fewer seeds than planned shows its count, a cell of one
seed reads `mean (n=1)` (no spread to show), a grid point
without runs shows an empty mark. Columns are the grid's s (or c) values that
any run has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segclass.grid import CLS_FRACTIONS, SEG_FRACTIONS, percent

EMPTY = "–"
SEG_METRICS = {"macro_f1": "test_macro_f1", "paper_micro_f1": "test_paper_micro_f1"}
CLS_METRICS = {"accuracy": "holdout_cls_accuracy"}


def summarize(runs: pd.DataFrame, metric_columns: dict[str, str]) -> pd.DataFrame:
    """Long table: dataset, variant, budget, mode, metric, x, mean, std, n (values in percent)."""
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "variant", "budget", "mode", "metric", "x", "mean", "std", "n"])
    keys = ["dataset", "variant", "budget", "mode", "x"]
    for group, frame in runs.groupby(keys):
        for name, column in metric_columns.items():
            if column not in frame:
                continue
            values = frame[column].dropna().to_numpy(dtype=float) * 100
            if len(values):
                rows.append({**dict(zip(keys, group)), "metric": name, "mean": float(values.mean()),
                             "std": float(values.std()), "n": int(len(values))})
    return pd.DataFrame(rows)


def cell(mean: float, std: float, n: int, planned: int) -> str:
    """`mean ± std`; one seed has no spread to show, so it reads `mean (n=1)`."""
    if n == 1:
        return f"{mean:.1f} (n=1)"
    text = f"{mean:.1f} ± {std:.1f}"
    return text if n >= planned else f"{text} (n={n})"


def wide_table(summary: pd.DataFrame, xs: list[float], planned_seeds: int, row_keys: list[str]) -> pd.DataFrame:
    """Rows `row_keys`, one column per x value, formatted cells; missing -> EMPTY."""
    columns = [percent(x / 100) for x in xs]
    if summary.empty:
        return pd.DataFrame(columns=row_keys + columns)
    records = []
    for group, frame in summary.groupby(row_keys, sort=False):
        record = dict(zip(row_keys, group if isinstance(group, tuple) else (group,)))
        by_x = {round(x, 4): r for x, r in zip(frame["x"], frame.itertuples())}
        for x, column in zip(xs, columns):
            r = by_x.get(round(x, 4))
            record[column] = cell(r.mean, r.std, r.n, planned_seeds) if r is not None else EMPTY
        records.append(record)
    return pd.DataFrame(records, columns=row_keys + columns)


def segmentation_table(runs: pd.DataFrame, planned_seeds: int, xs: list[float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table D.5 as formatted cells, the long numeric summary)."""
    seg = runs[runs["study"] == "segmentation"] if not runs.empty else runs
    summary = summarize(seg, SEG_METRICS)
    xs = xs or _present(summary, SEG_FRACTIONS)
    return wide_table(summary, xs, planned_seeds, ["dataset", "variant", "budget", "mode", "metric"]), summary


def classification_table(runs: pd.DataFrame, planned_seeds: int, xs: list[float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Table D.4 as formatted cells, the long numeric summary)."""
    cls = runs[runs["study"] == "classification"] if not runs.empty else runs
    summary = summarize(cls, CLS_METRICS)
    xs = xs or _present(summary, CLS_FRACTIONS)
    return wide_table(summary, xs, planned_seeds, ["dataset", "variant", "budget", "mode", "metric"]), summary


def comparison_table(summary: pd.DataFrame, planned_seeds: int) -> pd.DataFrame:
    """Variants and budgets side by side: rows (dataset, mode, metric, x), a column per (variant, budget)."""
    keys = ["dataset", "mode", "metric", "x"]
    if summary.empty:
        return pd.DataFrame(columns=keys)
    frame = summary.assign(arm=summary["variant"] + " / " + summary["budget"],
                           text=[cell(m, s, n, planned_seeds) for m, s, n in zip(summary["mean"], summary["std"], summary["n"])])
    table = frame.pivot_table(index=keys, columns="arm", values="text", aggfunc="first").reset_index()
    arms = sorted(set(frame["arm"]), key=lambda arm: (not arm.startswith("paper /"), not arm.endswith("/ paper"), arm))
    table = table.reindex(columns=keys + arms).fillna(EMPTY)
    table["x"] = [percent(x / 100) for x in table["x"]]
    return table.sort_values(keys[:3], kind="stable").rename(columns={"x": fraction_heading(table["mode"])})


def fraction_heading(modes: pd.Series) -> str:
    """The swept fraction's column, spelled out: s (segmentation patches) or c (classification patches), in %."""
    from segclass.config import study_of

    studies = {study_of(mode) for mode in modes}
    if studies == {"segmentation"}:
        return "s (%)"
    return "c (%)" if studies == {"classification"} else "s or c (%)"


def default_view(summary: pd.DataFrame) -> pd.DataFrame:
    """Variant `paper` at the paper's budget, or at `equal` for a sweep that ran only that (the quick preset)."""
    if summary.empty:
        return summary
    paper = summary[summary["variant"] == "paper"]
    budget = "paper" if (paper["budget"] == "paper").any() else "equal"
    return paper[paper["budget"] == budget]


def default_view_name(summary: pd.DataFrame) -> str:
    """What `default_view` shows, in words."""
    view = default_view(summary)
    return f"Variant paper, budget {view['budget'].iloc[0] if len(view) else 'paper'}"


def _present(summary: pd.DataFrame, grid: tuple[float, ...]) -> list[float]:
    """The grid's x values (percent) that some run has, in grid order, plus any off-grid ones."""
    found = {round(x, 4) for x in summary["x"]} if not summary.empty else set()
    on_grid = [round(f * 100, 4) for f in grid]
    return [x for x in on_grid if x in found] + sorted(found - set(on_grid))


def write_table(table: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    """CSV, Markdown and LaTeX versions of a formatted table."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(f"{caption}\n\n{to_markdown(table)}\n")
    latex = table.to_latex(index=False, caption=caption, escape=True, column_format="l" * len(table.columns))
    paths[2].write_text(latex.replace("±", r"$\pm$").replace("–", "--"))
    return paths


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def seeds_planned(runs: pd.DataFrame) -> int:
    return int(runs["seed"].nunique()) if not runs.empty else 0


def within_paper_std(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Our mean against the paper's mean ± std at each matching cell."""
    if summary.empty or paper.empty:
        return pd.DataFrame()
    ours = summary[(summary["variant"] == "paper") & (summary["budget"] == "paper")]
    merged = ours.merge(paper, on=["dataset", "mode", "metric", "x"], suffixes=("", "_paper"))
    merged["within_std"] = np.abs(merged["mean"] - merged["mean_paper"]) <= merged["std_paper"]
    return merged
