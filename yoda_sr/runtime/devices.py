"""Choosing the compute device and precision from a user's choices (``--device``, ``--dtype``)."""

from __future__ import annotations

import torch

from ..errors import SettingError


def resolve_device(name: str) -> torch.device:
    """auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps; an absent device is an error."""
    value = name.strip().lower()
    mps_available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if value == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available else "cpu")
    try:
        chosen = torch.device(value)
    except (RuntimeError, ValueError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "mps"):
        raise SettingError("device", f"must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", f"{name}: CUDA is not available on this machine")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise SettingError("device", f"{name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if chosen.type == "mps" and not mps_available:
        raise SettingError("device", f"{name}: Apple MPS is not available on this machine")
    return chosen


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA, fp32 elsewhere. fp16 is never used on the CPU."""
    value = name.strip().lower()
    if value == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if value not in DTYPES:
        raise SettingError("dtype", f"must be auto, fp32, fp16 or bf16, got {name!r}")
    if value == "fp16" and device.type == "cpu":
        raise SettingError("dtype", "fp16 is not supported on the CPU; use fp32 or bf16")
    return DTYPES[value]
