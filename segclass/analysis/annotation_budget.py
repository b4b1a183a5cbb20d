"""How many masks to draw: the smallest s at which each mode reaches a share of S at 100%.

A lab reading Fig. 5 wants one number: how many pixel-annotated patches buy
90% (or 95%) of what annotating everything would give. Per dataset, budget,
mode and variant this table gives, for each target share q:

- the smallest s whose mean over seeds reaches q x (mean of S at s = 100%),
  and the segmentation patches that s holds (the masks to draw);
- the seed spread: the smallest s each seed reaches on its own, as min-max,
  and how many seeds reach q at all within the s values swept.

A curve that never reaches q within the swept s shows "not reached": the
answer lies above the largest s of the sweep, not at it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segclass.grid import percent

TARGETS = (0.90, 0.95)
METRICS = {"macro_f1": "test_macro_f1", "paper_micro_f1": "test_paper_micro_f1"}
NOT_REACHED = "not reached"
COLUMNS = ["dataset", "budget", "mode", "variant", "metric", "target", "s (%)", "masks", "s per seed (%)",
           "seeds reaching"]


def _first_reaching(xs: np.ndarray, values: np.ndarray, threshold: float) -> float | None:
    """The smallest x whose value is at least `threshold` (None when none is)."""
    order = np.argsort(xs)
    hits = [x for x, v in zip(xs[order], values[order]) if v >= threshold]
    return float(hits[0]) if hits else None


def annotation_budget(runs: pd.DataFrame, targets: tuple[float, ...] = TARGETS) -> pd.DataFrame:
    """One row per (dataset, budget, mode, variant, metric, target); empty without S at 100%."""
    rows = []
    for dataset, budget, frame, reference_runs in _with_reference(runs):
        for (mode, variant), arm in frame.groupby(["mode", "variant"]):
            for metric, column in METRICS.items():
                if column not in arm or column not in reference_runs:
                    continue
                reference = float(reference_runs[column].mean())
                mean_curve = arm.groupby("x")[column].mean()
                seeds = sorted(arm["seed"].unique())
                for target in targets:
                    threshold = target * reference
                    x = _first_reaching(mean_curve.index.to_numpy(float), mean_curve.to_numpy(float), threshold)
                    per_seed = [_first_reaching(s["x"].to_numpy(float), s[column].to_numpy(float), threshold)
                                for _, s in arm.groupby("seed")]
                    reached = [v for v in per_seed if v is not None]
                    masks = arm.loc[arm["x"] == x, "n_seg_patches"] if x is not None and "n_seg_patches" in arm else []
                    rows.append({
                        "dataset": dataset, "budget": budget, "mode": mode, "variant": "–" if mode == "S" else variant,
                        "metric": metric, "target": f"{target:.0%} of S at 100%",
                        "s (%)": percent(x / 100) if x is not None else NOT_REACHED,
                        "masks": int(np.median(masks)) if len(masks) else "–",
                        "s per seed (%)": (f"{percent(min(reached) / 100)}–{percent(max(reached) / 100)}"
                                           if reached else NOT_REACHED),
                        "seeds reaching": f"{len(reached)} of {len(seeds)}",
                    })
    return pd.DataFrame(rows, columns=COLUMNS)


def _with_reference(runs: pd.DataFrame):
    """(dataset, budget, its segmentation runs with one S arm, its runs of S at s = 100%) for each dataset and
    budget that has that reference."""
    seg = runs[runs["study"] == "segmentation"] if not runs.empty else runs
    for (dataset, budget), frame in seg.groupby(["dataset", "budget"]) if not seg.empty else []:
        frame = _one_s_arm(frame)
        reference_runs = frame[(frame["mode"] == "S") & (frame["x"] == 100.0)]
        if not reference_runs.empty:
            yield dataset, budget, frame, reference_runs


def _one_s_arm(frame: pd.DataFrame) -> pd.DataFrame:
    """S has no classification head: keep its runs of one variant (`paper` when present), not one arm per variant."""
    is_s = frame["mode"] == "S"
    variants = sorted(frame.loc[is_s, "variant"].unique(), key=lambda v: (v != "paper", v))
    return frame[~is_s | (frame["variant"] == variants[0])] if variants else frame


#: The s (%) at which `share_of_full_masks` asks how close each arm is to full masks, and the share it hopes for.
SHARE_AT, SHARE_GOAL = 5.0, 0.95
SHARE_COLUMNS = ["dataset", "budget", "mode", "variant", "s (%)", "share of S at 100%", "seed range", "seeds",
                 f"reaches {SHARE_GOAL:.0%}"]


def share_of_full_masks(runs: pd.DataFrame, at: float = SHARE_AT) -> pd.DataFrame:
    """At s = `at` %, each arm's test macro F1 as a share of S at 100% (mean over its seeds, same dataset and
    budget): the share's mean over seeds and its seed range. One row per (dataset, budget, mode, variant) that
    has runs at `at` and a reference; empty otherwise."""
    rows = []
    for dataset, budget, frame, reference_runs in _with_reference(runs):
        arms = frame[np.isclose(frame["x"], at)]
        if arms.empty or "test_macro_f1" not in frame:
            continue
        reference = float(reference_runs["test_macro_f1"].mean())
        for (mode, variant), arm in arms.groupby(["mode", "variant"]):
            shares = (arm["test_macro_f1"] / reference).to_numpy(float)
            rows.append({"dataset": dataset, "budget": budget, "mode": mode, "variant": "–" if mode == "S" else variant,
                         "s (%)": percent(at / 100), "share of S at 100%": f"{shares.mean():.0%}",
                         "seed range": f"{shares.min():.0%}–{shares.max():.0%}", "seeds": len(shares),
                         f"reaches {SHARE_GOAL:.0%}": "yes" if shares.mean() >= SHARE_GOAL else "no"})
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)
