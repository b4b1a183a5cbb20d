"""Saving figures the same way everywhere: PNG for looking, SVG for papers."""

from __future__ import annotations

from pathlib import Path


def save_figure(figure, base: Path, layout: bool = True) -> list[Path]:
    """Write `base`.png and `base`.svg, close the figure, return both paths (`layout`: tighten it first; False
    where the caller laid it out around a figure-level legend)."""
    import matplotlib.pyplot as plt

    if layout:
        figure.tight_layout()
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".png", ".svg"):
        figure.savefig(base.with_suffix(suffix), dpi=110)
        paths.append(base.with_suffix(suffix))
    plt.close(figure)
    return paths
