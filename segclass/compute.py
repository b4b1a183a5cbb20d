"""How a device computes: which one, in which precision, in which memory layout.

One place decides it for training, evaluation and prediction alike, so the
trainer's validation and `segclass.predict` run a model the same way.
"""

from __future__ import annotations

import contextlib

import torch


def pick_device(device: str | None = None) -> torch.device:
    """The device asked for, else CUDA when there is one, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (tensor cores); float32 elsewhere. Callers take losses in float32."""
    device = torch.device(device)
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def uses_channels_last(device: torch.device | str) -> bool:
    """NHWC activations where convolutions run faster in it (cuDNN's tensor-core kernels)."""
    return torch.device(device).type == "cuda"


def place_model(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """`model` on `device`, in the memory layout `uses_channels_last` picks there."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(device) else model
