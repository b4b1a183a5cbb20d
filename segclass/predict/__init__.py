"""Prediction on new slides and images with a trained model (`python -m segclass.predict`).

Importing the package loads nothing heavy (no torch, no model): its names
come from `segclass.predict.run` on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PredictOptions", "predict_image", "predict_many"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from segclass.predict import run

        return getattr(run, name)
    raise AttributeError(f"module 'segclass.predict' has no attribute {name!r}")
