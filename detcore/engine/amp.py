"""Mixed precision: bf16 autocast (CPU and CUDA) or fp16 autocast with a
GradScaler (CUDA only)."""

from __future__ import annotations

import contextlib

from detcore.errors import RunFileError

__all__ = ["autocast", "make_scaler", "check_amp"]


def check_amp(amp: str | None, device) -> None:
    if amp == "fp16" and device.type != "cuda":
        raise RunFileError(
            f"train.amp = \"fp16\" needs a CUDA device (this run uses {device}); use \"bf16\", which works on "
            f"CPU and CUDA, or leave amp unset",
            key="train.amp",
        )


def autocast(amp: str | None, device):
    """The autocast context for ``amp`` (``None``: a no-op context)."""
    import torch

    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(amp: str | None, device):
    """A ``torch.amp.GradScaler`` for fp16 on CUDA, else ``None`` (bf16 has
    float32's range and needs no loss scaling)."""
    import torch

    if amp == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
