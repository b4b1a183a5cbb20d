"""Table 1: the classification head's confusion matrix on held-out classification patches.

For each dataset, the classification-study runs at the largest c of mode
S2+C2 (the paper's Table 1 setting: 50% of the classification patches, no
segmentation patches); matrices are summed over seeds, accuracy averaged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from segclass.analysis.runs import artifact_path, init_labels
from segclass.cli_help import counted


def confusion_rows(runs: pd.DataFrame) -> list[dict]:
    rows = []
    cls = runs[(runs["study"] == "classification") & (runs["mode"] == "S2+C2")] if not runs.empty else runs
    inits = init_labels(runs)
    for (dataset, variant, budget), frame in cls.groupby(["dataset", "variant", "budget"]):
        top = frame[np.isclose(frame["x"], frame["x"].max())]
        matrices, names = [], []
        for uri in top["artifact_uri"]:
            try:
                payload = json.loads(artifact_path(uri, "holdout_cls_confusion_matrix.json").read_text())
            except Exception:
                continue
            matrices.append(np.asarray(payload["matrix"]))
            names = payload["class_names"]
        if not matrices:
            continue
        total = np.sum(matrices, axis=0)
        rows.append({"dataset": dataset, "variant": variant, "budget": budget, "c": float(top["x"].iloc[0]),
                     "seeds": len(matrices), "init": inits[dataset],
                     "accuracy": float(top["holdout_cls_accuracy"].mean() * 100),
                     "class_names": names, "matrix": total.tolist()})
    return rows


def write_confusion(rows: list[dict], out_dir: Path, paper: pd.DataFrame | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["Table 1: classification head on the held-out classification patches "
             "(S2+C2 at the largest c; matrices summed over seeds, rows = ground truth).", ""]
    for row in rows:
        lines.append(f"**{row['dataset']}** (variant {row['variant']}, budget {row['budget']}, c = {row['c']:g}%, "
                     f"{counted(row['seeds'], 'seed')}, init: {row['init']}): accuracy {row['accuracy']:.1f}%")
        if paper is not None and not paper.empty and row["dataset"] in set(paper["dataset"]):
            theirs = paper[paper["dataset"] == row["dataset"]].iloc[0]
            lines.append(f"(paper: {theirs['accuracy']}% on {theirs['images']} images, matrix {theirs['matrix']})")
        lines.append("")
        lines.append("| truth \\ predicted | " + " | ".join(row["class_names"]) + " |")
        lines.append("|---|" + "---|" * len(row["class_names"]))
        for name, counts in zip(row["class_names"], row["matrix"]):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in counts) + " |")
        lines.append("")
    path = out_dir / "table1_confusion.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "table1_confusion.json").write_text(json.dumps(rows, indent=1))
    return [path, out_dir / "table1_confusion.json"]
