"""The paper's own numbers (Tables D.4, D.5, 1), shipped as versioned CSV files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def paper_results() -> pd.DataFrame:
    """Long table: table, dataset, mode, metric, x (percent), mean, std (percent)."""
    frame = pd.read_csv(HERE / "paper_results.csv", comment="#")
    frame["x"] = frame["x"].astype(float)
    return frame


def paper_table1() -> pd.DataFrame:
    frame = pd.read_csv(HERE / "paper_table1.csv", comment="#")
    frame["matrix"] = frame["matrix"].map(json.loads)
    return frame
