"""How a device computes: which one, in which precision, in which memory layout.

One place decides it for training, evaluation and prediction alike, so the
trainer's validation and `segclass.predict` run a model the same way.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import torch

from segclass.config import PRECISIONS
#: The precision a trial trains and evaluates in, set by `precision_scope` around it (None: `auto`).
_PRECISION: ContextVar[str | None] = ContextVar("segclass_precision", default=None)


def pick_device(device: str | None = None) -> torch.device:
    """The device asked for, else CUDA when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """`fp32` or `bf16`: what `precision` (one of PRECISIONS) means on `device`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


@contextlib.contextmanager
def precision_scope(precision: str) -> Iterator[None]:
    """Run the block's `autocast` calls in `precision` (a trial's, which is part of its identity)."""
    token = _PRECISION.set(precision)
    try:
        yield
    finally:
        _PRECISION.reset(token)


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast where the precision in force (`precision_scope`, else `auto`) says bf16; else float32.

    Callers take losses in float32.
    """
    device = torch.device(device)
    if resolve_precision(_PRECISION.get() or "auto", device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(device: torch.device | str) -> bool:
    """NHWC activations where convolutions run faster in it (cuDNN's tensor-core kernels)."""
    return torch.device(device).type == "cuda"


def place_model(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """`model` on `device`, in the memory layout `uses_channels_last` picks there."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(device) else model
