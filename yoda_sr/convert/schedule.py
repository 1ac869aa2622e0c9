"""Recognising an upstream noise schedule from the ``betas`` buffer its checkpoint carries."""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.schedules import ScheduleSpec, cosine_betas, linear_betas


def schedule_from_betas(betas: Tensor | None) -> ScheduleSpec | None:
    """The linear or cosine ScheduleSpec whose betas equal ``betas`` (to 1e-6 relative), else None."""
    if betas is None or betas.dim() != 1 or betas.numel() < 1:
        return None
    betas = betas.to(torch.float64)
    steps = betas.numel()
    # Upstream stores betas in float32: round the ends back to the decimal values of its config.
    start, end = (float(f"{float(value):.7g}") for value in (betas[0], betas[-1]))
    for candidate, reference in (
        (ScheduleSpec(kind="linear", steps=steps, start=start, end=end), linear_betas(steps, start, end)),
        (ScheduleSpec(kind="cosine", steps=steps), cosine_betas(steps)),
    ):
        if torch.allclose(betas, reference, rtol=1e-6, atol=1e-9):
            return candidate
    return None
