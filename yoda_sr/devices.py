"""Choosing the compute device from a user's device choice (``--device``)."""

from __future__ import annotations

import torch

from .errors import SettingError


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
