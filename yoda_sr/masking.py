"""YODA's time-dependent mask M(t) (eq. 9) and the pixel-update fraction it implies.

M(t)_ij = 1 if T * (A_ij + l) >= t, else 0, for t in 1..T. Because t is an integer this is the same
as t <= floor(T * (A_ij + l)): each pixel has an *activation step*, the highest step at which it is
diffused, and it stays active for every lower step. Sampling compares integers only, so the mask of a
respaced run (which visits a subset of the original steps) is exact.

``block_attention`` averages a map over square blocks before the mask is formed, so that M(t) is
made of whole blocks that a block-sparse sampler can evaluate (docs/method.md §11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def validate_lower_bound(lower_bound: float) -> float:
    """Check YODA's lower bound l (the paper uses 0 < l < 1; l = 1 makes every pixel always active)."""
    if not 0.0 <= lower_bound <= 1.0:
        raise ValueError(f"the lower bound must lie in [0, 1], got {lower_bound}")
    return float(lower_bound)


def activation_steps(attention: Tensor, lower_bound: float, train_steps: int) -> Tensor:
    """Per-pixel highest step at which the pixel is diffused: min(T, floor(T * (A + l))) (eq. 9).

    ``attention`` holds values in [0, 1] (any shape, usually N x 1 x H x W). Returns int64 in [0, T].
    The product is formed in float64 where the device has it, so that A + l = 1 gives exactly T.
    """
    validate_lower_bound(lower_bound)
    wide = torch.float32 if attention.device.type == "mps" else torch.float64
    level = (attention.to(wide) + lower_bound) * train_steps
    return level.floor().clamp(0, train_steps).to(torch.int64)


def block_attention(attention: Tensor, block: int, origin: tuple[int, int] = (0, 0)) -> Tensor:
    """A map (N x 1 x H x W) with every pixel replaced by the mean of its ``block`` x ``block`` block.

    The mean keeps the pixel-update budget, mean(min(1, A + l)), about where it was, while M(t) becomes
    whole blocks (docs/method.md §11: a maximum would keep the same blocks active as the pixel-level map
    does, so it would cost as much, and diffuse more). Blocks are anchored at multiples of ``block``
    in image coordinates; ``origin`` is where the map's first pixel lies in the image, so a window
    that holds whole blocks agrees with the whole map. Blocks cut by the map's border average the
    part inside. ``block`` <= 1 returns the map as it is.
    """
    if block <= 1:
        return attention
    top, left = origin[0] % block, origin[1] % block
    height, width = attention.shape[-2:]
    padding = (left, -(left + width) % block, top, -(top + height) % block)
    sums = F.avg_pool2d(F.pad(attention, padding), block)
    counts = F.avg_pool2d(F.pad(torch.ones_like(attention[:1, :1]), padding), block)
    means = (sums / counts).repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return means[..., top : top + height, left : left + width]


def time_mask(activation: Tensor, t: int | Tensor) -> Tensor:
    """M(t) as a bool tensor: the pixels whose activation step is at least ``t``."""
    return activation >= t


def update_fraction(activation: Tensor, steps: Tensor) -> float:
    """Fraction of pixel updates a masked run makes versus plain diffusion on the same steps.

    ``steps`` are the visited training steps (ascending, starting with 0 as in ``NoiseSchedule``);
    the sampler denoises at every step except 0. Per pixel, the number of updates is how many of
    those steps are <= its activation step.
    """
    visited = steps[1:].to(activation.device)
    updates = torch.searchsorted(visited, activation.flatten(), right=True)
    return float(updates.double().mean() / len(visited))


def expected_update_fraction(attention: Tensor, lower_bound: float) -> float:
    """mean(min(1, A + l)): the pixel-update fraction of a full T-step run, up to 1/T."""
    return float((attention.double() + lower_bound).clamp(max=1.0).mean())
