"""Curves: the comparison of all arms in raw values, and normalized curves as in Figs. 5 and 6.

The comparison figure (`plot_arms`, the report's first figure) puts every
mode and variant of one dataset and budget on one pair of axes in raw test F1,
so S, S+C, S+C* and each classification-head variant can be read against each
other and against S at s = 100% directly.
Fig. 5: each metric divided by the mean of S at s = 100% (segmentation patches
only, the paper's reference), one line per mode, mean markers with ±std error
bars (and a band between points).
Fig. 6: accuracy divided by S2+C2 at c = 50% (classification patches only).
If the reference mode is missing, a mode is normalized by its own last point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segclass.analysis.figures import save_figure

MODE_STYLE = {"S": ("tab:red", "x"), "S+C": ("tab:blue", "o"), "S+C*": ("tab:green", "s"),
              "S2+C2": ("tab:blue", "o"), "S2+C2*": ("tab:green", "s"), "S2*+C2": ("tab:red", "x")}
MODE_ORDER = {mode: index for index, mode in enumerate(("S", "S+C", "S+C*", "S2+C2", "S2+C2*", "S2*+C2"))}
METRIC_LABEL = {"macro_f1": "macro F1", "paper_micro_f1": "paper-micro F1", "accuracy": "accuracy"}
#: Line styles of classification-head variants in the comparison figure (other variants: dash-dot).
VARIANT_LINE = {"paper": "-", "released-code": "--"}
#: Colours of (mode, variant) arms that are not the paper's head; the paper's head keeps MODE_STYLE's colour.
OTHER_HEAD_COLOURS = {"S+C": ("tab:orange", "tab:purple", "tab:olive"), "S+C*": ("tab:brown", "tab:pink", "tab:cyan")}


def _arm_colour(mode: str, variant: str, variants: list[str]) -> str | None:
    if variant == "paper" or mode not in OTHER_HEAD_COLOURS:
        return MODE_STYLE.get(mode, (None, "o"))[0]
    others = [v for v in variants if v != "paper"]
    palette = OTHER_HEAD_COLOURS[mode]
    return palette[others.index(variant) % len(palette)]


def arm_label(mode: str, variant: str) -> str:
    """'S' for segmentation-only modes (no classification head), else 'S+C (released-code head)'."""
    if mode == "S":
        return mode
    return f"{mode} ({variant} head)"


#: Markers of the heads that are not the paper's, in order of their variant names (the paper's head and S keep
#: MODE_STYLE's marker).
OTHER_HEAD_MARKERS = ("D", "^", "v", "P")
#: How far apart arms measured at one x are drawn: a share of x on the log part of the axis, of 1 on its linear part.
DODGE = 0.05


def _arm_marker(mode: str, variant: str, variants: list[str]) -> str:
    if variant == "paper" or mode == "S":
        return MODE_STYLE.get(mode, (None, "o"))[1]
    others = [v for v in variants if v != "paper"]
    return OTHER_HEAD_MARKERS[others.index(variant) % len(OTHER_HEAD_MARKERS)]


def _dodge(x: np.ndarray, index: int, count: int) -> np.ndarray:
    """x moved aside for the `index`-th of `count` arms, symmetric around the true x (symlog axis)."""
    shift = DODGE * (index - (count - 1) / 2)
    return np.where(x > 1.0, x * (1.0 + shift), x + shift)


def _x_axis(axis, xs, label: str) -> None:
    """symlog x (s = 0 fits) with a tick at each value the runs have, written as the paper writes s."""
    from matplotlib.ticker import NullLocator

    axis.set_xscale("symlog", linthresh=1.0)
    values = sorted({float(x) for x in xs})
    if values:
        axis.set_xticks(values, [f"{x:g}" for x in values])
        axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel(label)


def plot_arms(summary: pd.DataFrame, metrics: list[str], x_label: str, stem: Path,
              inits: dict[str, str] | None = None) -> list[Path]:
    """One figure per (dataset, budget): raw mean (percent) with ± std error bars per (mode, variant) against x.

    S does not use the classification head, so only its `paper`-variant runs
    are drawn; every other mode gets one line per variant. Lines join measured
    points only (S+C at s = 100% is S's point, drawn only where it ran). Arms
    at one s are set side by side (`_dodge`) with distinct markers, so none
    hides another, and the spread over seeds is an error bar with caps,
    visible at a single s too. The `equal` figure also draws S under
    `equal-images` (S given as many images as S+C), the control for S+C's
    extra images; that budget gets no figure of its own when it holds S only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (dataset, budget), frame in summary.groupby(["dataset", "budget"]):
        matched = _image_matched_s(summary, dataset, budget)
        if budget == IMAGE_CONTROL[1] and set(frame["mode"]) == {"S"} and \
                ((summary["dataset"] == dataset) & (summary["budget"] == IMAGE_CONTROL[0])).any():
            continue  # drawn in the equal-steps figure, beside the arms it controls
        figure, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.2), squeeze=False)
        seeds = int(frame["n"].max()) if len(frame) else 0
        variants = sorted(set(frame["variant"]))
        for axis, metric in zip(axes[0], metrics):
            part_metric = frame[frame["metric"] == metric]
            order = sorted(part_metric.groupby(["mode", "variant"]),  # S, then each mode's paper head first
                           key=lambda item: (MODE_ORDER.get(item[0][0], 99), item[0][1] != "paper", item[0][1]))
            order = [((mode, variant), part) for (mode, variant), part in order if mode != "S" or variant == "paper"]
            if len(matched):
                order.insert(1, ((_MATCHED, "paper"), matched[matched["metric"] == metric]))
            for index, ((mode, variant), part) in enumerate(order):
                part = part.sort_values("x")
                if mode == _MATCHED:  # S given S+C's images: S's colour, a marker and line of its own
                    marker, color, line, label = "+", MODE_STYLE["S"][0], ":", MATCHED_LABEL
                else:
                    marker, color = _arm_marker(mode, variant, variants), _arm_colour(mode, variant, variants)
                    line, label = VARIANT_LINE.get(variant, "-."), arm_label(mode, variant)
                x, y, s = part["x"].to_numpy(), part["mean"].to_numpy(), part["std"].to_numpy()
                axis.errorbar(_dodge(x, index, len(order)), y, yerr=s, marker=marker, color=color,
                              linestyle=line, capsize=4, elinewidth=1.2, label=label)  # ± std over seeds
            _x_axis(axis, part_metric["x"], x_label)
            axis.set_ylabel(f"test {METRIC_LABEL.get(metric, metric)} (%)")
            axis.set_title(METRIC_LABEL.get(metric, metric))
            axis.grid(alpha=0.3)
            if axis.has_data():
                axis.legend(fontsize=8)
        spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed, no spread"
        title = f"{dataset}, budget {budget}: test F1 against s, {spread}"
        figure.suptitle(title + (f"\ninit: {inits[dataset]}" if inits and dataset in inits else ""))
        paths += save_figure(figure, stem.with_name(f"{stem.name}_{dataset}_{budget}"))
    return paths


#: A budget and its image-matched control for S: the comparison figure of `equal` (equal optimizer steps) also
#: draws S under `equal-images` (as many training images as S+C), so S+C's gain is read against both.
IMAGE_CONTROL = ("equal", "equal-images")
MATCHED_LABEL = "S, images matched (budget equal-images)"
_MATCHED = "S (images matched)"


def _image_matched_s(summary: pd.DataFrame, dataset: str, budget: str) -> pd.DataFrame:
    """S's rows of `dataset` under the image-matched control of `budget` (empty when it has none)."""
    if budget != IMAGE_CONTROL[0]:
        return summary.iloc[:0]
    return summary[(summary["dataset"] == dataset) & (summary["budget"] == IMAGE_CONTROL[1])
                   & (summary["mode"] == "S") & (summary["variant"] == "paper")]


def normalize(summary: pd.DataFrame, reference_mode: str, reference_x: float) -> pd.DataFrame:
    """Add rel_mean / rel_std columns: values divided by the reference mean, per group and metric."""
    out = []
    for _, frame in summary.groupby(["dataset", "variant", "budget", "metric"]):
        reference = frame[(frame["mode"] == reference_mode) & np.isclose(frame["x"], reference_x)]
        for mode, part in frame.groupby("mode"):
            part = part.sort_values("x").copy()
            if len(reference):
                base = float(reference["mean"].iloc[0])
            else:
                at_reference = part[np.isclose(part["x"], reference_x)]
                base = float(at_reference["mean"].iloc[0]) if len(at_reference) else float("nan")
            part["rel_mean"] = part["mean"] / base if base else np.nan
            part["rel_std"] = part["std"] / base if base else np.nan
            out.append(part)
    return pd.concat(out) if out else summary.assign(rel_mean=[], rel_std=[])


def plot_curves(normalized: pd.DataFrame, metrics: list[str], title: str, x_label: str,
                stem: Path, paper: pd.DataFrame | None = None, inits: dict[str, str] | None = None) -> list[Path]:
    """One figure per (dataset, variant, budget): a panel per metric, a line per mode.

    `inits` (dataset -> encoder init) puts the init under the title: curves of
    random-init runs are not the paper's experiment.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (dataset, variant, budget), frame in normalized.groupby(["dataset", "variant", "budget"]):
        if frame["rel_mean"].isna().all():  # no reference to normalize by (an arm at one s only): nothing to draw
            continue
        figure, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
        for axis, metric in zip(axes[0], metrics):
            groups = list(frame[frame["metric"] == metric].groupby("mode", sort=False))
            for index, (mode, part) in enumerate(groups):
                color, marker = MODE_STYLE.get(mode, (None, "o"))
                x, y, s = part["x"].to_numpy(), part["rel_mean"].to_numpy(), part["rel_std"].to_numpy()
                shown = _dodge(x, index, len(groups))
                axis.errorbar(shown, y, yerr=s, marker=marker, color=color, capsize=4, label=f"{mode} (ours)")
                if len(x) > 1:  # the band between measured points; at one point the error bar says it
                    axis.fill_between(shown, y - s, y + s, color=color, alpha=0.15)
                if paper is not None and not paper.empty:
                    theirs = paper[(paper["dataset"] == dataset) & (paper["mode"] == mode) & (paper["metric"] == metric)]
                    if len(theirs):
                        axis.plot(theirs["x"], theirs["rel_mean"], linestyle="--", marker=marker, color=color,
                                  alpha=0.6, label=f"{mode} (paper)")
            _x_axis(axis, frame[frame["metric"] == metric]["x"], x_label)
            axis.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
            axis.set_ylabel(f"{METRIC_LABEL.get(metric, metric)} / reference")
            axis.set_title(METRIC_LABEL.get(metric, metric))
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
        init = f"\ninit: {inits[dataset]}" if inits and dataset in inits else ""
        figure.suptitle(f"{title}: {dataset} (variant {variant}, budget {budget}){init}")
        paths += save_figure(figure, stem.with_name(f"{stem.name}_{dataset}_{variant}_{budget}"))
    return paths
