"""Tiled denoising for images larger than memory allows: a tile plan and Gaussian blending.

The whole image is one diffusion state; only the denoiser runs per tile. At every step each tile's
epsilon is weighted by a Gaussian window and the overlapping predictions are averaged, so the state
the sampler updates is a single smooth field and no seam can form. The condition (and the attention
map) are computed once for the whole image and cropped per tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.base import Condition, SRDenoiser
from .sampling import EpsFunction


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    def window(self) -> tuple[slice, slice, slice, slice]:
        return (
            slice(None),
            slice(None),
            slice(self.top, self.top + self.height),
            slice(self.left, self.left + self.width),
        )


def _starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Tile starts along one axis: evenly spread, first at 0, last flush with the end.

    With ``align`` > 1 the starts are multiples of it (``length - tile`` must be one too); the tiles
    are planned for ``overlap + align - 1`` so that rounding keeps at least ``overlap``.
    """
    if length <= tile:
        return [0]
    planned = overlap + align - 1 if align > 1 else overlap
    if planned >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile}) less {align - 1}")
    count = math.ceil((length - planned) / (tile - planned))
    span = length - tile
    if align > 1:
        return sorted({round(i * span / (count - 1) / align) * align for i in range(count)})
    return sorted({round(i * span / (count - 1)) for i in range(count)})


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1, align: int = 1) -> list[Tile]:
    """Tiles of side ``tile`` (rounded down to ``multiple``) covering height x width with >= ``overlap``.

    A side shorter than the tile gets one tile of the full length (which must itself be a multiple
    of ``multiple``: the caller pads the image to that). ``align`` > 1 puts every tile start on a
    multiple of it (streamed tiles start on whole LR pixels); the tile side and the image sides must
    then be multiples of ``align`` too.
    """
    tile = max(multiple, tile - tile % multiple)
    if height <= tile and width <= tile:
        return [Tile(0, 0, height, width)]
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    rows = [(top, min(tile, height)) for top in _starts(height, tile, overlap, align)]
    columns = [(left, min(tile, width)) for left in _starts(width, tile, overlap, align)]
    return [Tile(top, left, h, w) for top, h in rows for left, w in columns]


def gaussian_window(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """1 x 1 x H x W weights, a separable Gaussian with sigma = side / 4, never exactly zero."""

    def axis(n: int) -> Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 4)) ** 2)

    return (axis(height)[:, None] * axis(width)[None, :]).clamp_min(1e-3)[None, None]


def tiled_eps_fn(
    model: SRDenoiser,
    cond: Condition,
    tiles: list[Tile],
    dtype: torch.dtype | None = None,
    on_tile: Callable[[], None] | None = None,
) -> EpsFunction:
    """An epsilon function over the whole state that runs ``model`` tile by tile and blends."""
    dtype = dtype or next(model.parameters()).dtype
    cond = cond.to(dtype)
    weights: list[Tensor | None]
    if len(tiles) == 1 and (tiles[0].height, tiles[0].width) == tuple(cond.x_up.shape[-2:]):
        crops = [cond]
        weights = [None]
    else:
        crops = [cond.crop(t.top, t.left, t.height, t.width) for t in tiles]
        weights = [gaussian_window(t.height, t.width, cond.x_up.device) for t in tiles]

    def eps_fn(z: Tensor, t: Tensor, level: Tensor) -> Tensor:
        if weights[0] is None:
            result = model(z.to(dtype), crops[0], t, level.to(dtype)).float()
            if on_tile is not None:
                on_tile()
            return result
        total = torch.zeros_like(z, dtype=torch.float32)
        norm = torch.zeros_like(z[:, :1], dtype=torch.float32)
        for tile, crop, weight in zip(tiles, crops, weights, strict=True):
            assert weight is not None
            window = tile.window()
            eps = model(z[window].to(dtype), crop, t, level.to(dtype)).float()
            total[window] += eps * weight
            norm[window] += weight
            if on_tile is not None:
                on_tile()
        return total / norm

    return eps_fn


def lr_multiple(size_multiple: int, scale: int) -> int:
    """LR sides must be multiples of this for the HR side to be a multiple of ``size_multiple``."""
    return size_multiple // math.gcd(size_multiple, scale)


def pad_to(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)
