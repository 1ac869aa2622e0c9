"""YODA's time-dependent mask M(t) (eq. 9) and the pixel-update fraction it implies.

M(t)_ij = 1 if T * (A_ij + l) >= t, else 0, for t in 1..T. Because t is an integer this is the same
as t <= floor(T * (A_ij + l)): each pixel has an *activation step*, the highest step at which it is
diffused, and it stays active for every lower step. Sampling compares integers only, so the mask of a
respaced run (which visits a subset of the original steps) is exact.

``block_attention`` averages a map over square blocks before the mask is formed, so that M(t) is
made of whole blocks that a block-sparse sampler can evaluate (docs/method.md §11).

``flat_areas`` finds where the LR image holds no detail above its 8-bit rounding; those pixels get
activation step 0 whatever A and l say, so they keep the regression base (docs/method.md §4,
"Flat areas").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def validate_lower_bound(lower_bound: float) -> float:
    """Check YODA's lower bound l (the paper uses 0 < l < 1; l = 1 makes every pixel always active)."""
    if not 0.0 <= lower_bound <= 1.0:
        raise ValueError(f"the lower bound must lie in [0, 1], got {lower_bound}")
    return float(lower_bound)


def activation_steps(attention: Tensor, lower_bound: float, train_steps: int, flat: Tensor | None = None) -> Tensor:
    """Per-pixel highest step at which the pixel is diffused: min(T, floor(T * (A + l))) (eq. 9).

    ``attention`` holds values in [0, 1] (any shape, usually N x 1 x H x W). Returns int64 in [0, T].
    The product is formed in float64 where the device has it, so that A + l = 1 gives exactly T.
    ``flat`` (bool, broadcastable to ``attention``; ``flat_areas`` upscaled) sets step 0 where true.
    """
    validate_lower_bound(lower_bound)
    wide = torch.float32 if attention.device.type == "mps" else torch.float64
    level = (attention.to(wide) + lower_bound) * train_steps
    steps = level.floor().clamp(0, train_steps).to(torch.int64)
    return steps if flat is None else steps.masked_fill(flat.to(steps.device), 0)


FLAT_SIGMA = 1.0
"""Sigma (LR pixels) of the Gaussian whose residual is the LR's detail in ``flat_areas``."""
FLAT_WINDOW = 7
"""Side (LR pixels) of the window the detail's RMS is taken over."""
MAX_FLAT_FLOOR = 255.0


def validate_flat_floor(floor: float) -> float:
    """Check the flat-area floor: 8-bit levels of detail RMS, 0 (off) to 255."""
    if not 0.0 <= floor <= MAX_FLAT_FLOOR:
        raise ValueError(f"the flat-area floor must lie in [0, {MAX_FLAT_FLOOR:g}] (8-bit levels), got {floor}")
    return float(floor)


def flat_areas(lr: Tensor, floor: float, scale: int = 1) -> Tensor:
    """Where LR images (N x 3 x h x w in [-1, 1]) are flat: N x 1 x h x w bool, each LR pixel
    repeated ``scale`` x ``scale`` times (``scale`` = the model's: the HR pixels it becomes).

    The detail at a pixel is the RMS, over a ``FLAT_WINDOW`` square, of the luma (BT.601, in 8-bit
    levels) minus its Gaussian blur (sigma ``FLAT_SIGMA``); flat means below ``floor``. Rounding a
    smooth image to 8 bits alone leaves about 0.25 levels of such detail (uniform rounding error,
    1/sqrt(12) levels, through the same high-pass), so a floor of 0.3 finds the areas that hold
    nothing but a smooth gradient. ``floor`` 0 finds none, nor does an image under 13 LR pixels a side.
    """
    validate_flat_floor(floor)
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected LR images N x 3 x h x w, got shape {tuple(lr.shape)}")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=lr.device).view(1, 3, 1, 1)
    luma = ((lr.to(torch.float32) + 1.0) * 127.5 * weights).sum(dim=1, keepdim=True)
    radius = int(math.ceil(3 * FLAT_SIGMA))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=lr.device)
    kernel = torch.exp(-(taps**2) / (2 * FLAT_SIGMA**2))
    kernel = kernel / kernel.sum()
    reach = radius + FLAT_WINDOW // 2
    if min(lr.shape[-2:]) <= 2 * reach or floor == 0:
        flat = torch.zeros_like(luma, dtype=torch.bool)
    else:
        # Valid convolutions only (padding would make detail of a ramp at the border); the border's
        # pixels take the nearest inside pixel's value.
        blurred = F.conv2d(F.conv2d(luma, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
        detail = luma[..., radius:-radius, radius:-radius] - blurred
        rms = F.avg_pool2d(detail**2, FLAT_WINDOW, stride=1).sqrt()
        flat = F.pad(rms, (reach, reach, reach, reach), mode="replicate") < floor
    return flat.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1) if scale > 1 else flat


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


_FRACTION_CHUNK = 1 << 22
"""``expected_update_fraction`` works in float64 on this many values at a time (a gigapixel map
would otherwise need several float64 copies of itself)."""


def expected_update_fraction(attention: Tensor, lower_bound: float, flat: Tensor | None = None) -> float:
    """mean(min(1, A + l)): the pixel-update fraction of a full T-step run, up to 1/T (0 where ``flat``)."""
    values = attention.reshape(-1)
    mask = None if flat is None else flat.to(attention.device).expand_as(attention).reshape(-1)
    if values.numel() <= _FRACTION_CHUNK:
        share = (values.double() + lower_bound).clamp(max=1.0)
        return float((share if mask is None else share.masked_fill(mask, 0.0)).mean())
    total = 0.0
    for start in range(0, values.numel(), _FRACTION_CHUNK):
        share = (values[start : start + _FRACTION_CHUNK].double() + lower_bound).clamp_(max=1.0)
        if mask is not None:
            share.masked_fill_(mask[start : start + _FRACTION_CHUNK], 0.0)
        total += float(share.sum())
    return total / values.numel()
