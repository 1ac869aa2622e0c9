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

from ..diffusion.loop import Predict
from ..errors import SettingError
from ..models.base import Condition, SRDenoiser

CPU_AUTO_TILE = 512
"""HR tile side ``--tile auto`` uses on the CPU for images with a side above 1.5 x this."""


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


def _axis(length: int, tile: int, overlap: int, unit: int, align: int) -> tuple[list[int], int]:
    """Tile starts and the common tile side along one axis, processing as few pixels as it can.

    The fewest tiles of side <= ``tile`` that cover ``length`` with >= ``overlap`` between
    neighbours, each then made as small as that allows (a multiple of ``unit``), evenly spread:
    first at 0, last flush with the end. With ``align`` > 1 the starts are multiples of it; the
    tiles are planned for ``overlap + align - 1`` so that rounding keeps at least ``overlap``.
    """
    if length <= tile:
        return [0], length
    planned = overlap + align - 1 if align > 1 else overlap
    if planned >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile}) less {align - 1}")
    count = math.ceil((length - planned) / (tile - planned))
    needed = math.ceil((length + (count - 1) * planned) / count)
    side = min(tile, -(-needed // unit) * unit)
    span = length - side
    starts = sorted({round(i * span / (count - 1) / align) * align for i in range(count)})
    return starts, side


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1, align: int = 1) -> list[Tile]:
    """Tiles no larger than ``tile`` (rounded down to ``multiple``) covering height x width with >=
    ``overlap``, planned to process as few pixels as possible (``_axis``): every tile has one shape.

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
    unit = math.lcm(multiple, align)
    tops, tile_height = _axis(height, tile, overlap, unit, align)
    lefts, tile_width = _axis(width, tile, overlap, unit, align)
    return [Tile(top, left, tile_height, tile_width) for top in tops for left in lefts]


def processed_pixels(tiles: list[Tile]) -> int:
    """Pixels the denoiser processes per step under a tile plan."""
    return sum(tile.height * tile.width for tile in tiles)


MIN_TILE = 64
"""The smallest tile side: below it the overlap and the per-tile calls dominate the work."""


def check_tile_settings(tile: int | str, overlap: int, multiple: int, batch: int = 1) -> None:
    """A tile side is auto, 0 (off) or at least two of the model's size multiples; the overlap is
    at most half a tile (more would evaluate most pixels four times or more); a batch is >= 1."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise SettingError("tile_batch", f"must be a whole number of tiles >= 1, got {batch!r}")
    if tile != "auto" and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 0):
        raise SettingError("tile", f"must be auto, 0 (off) or a size in pixels, got {tile!r}")
    smallest = max(MIN_TILE, 2 * multiple)
    if isinstance(tile, int) and 0 < tile < smallest:
        raise SettingError(
            "tile",
            f"must be 0 (off), auto, or at least {smallest} px: smaller tiles spend more on their overlap and "
            f"per-tile calls than on the image (16 px tiles ran 50 times slower than whole), got {tile}",
        )
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise SettingError("tile_overlap", f"must be a whole number of pixels >= 0, got {overlap!r}")
    side = CPU_AUTO_TILE if tile == "auto" else int(tile)
    if side and overlap > side // 2:
        which = "the automatic tile" if tile == "auto" else "the tile"
        raise SettingError("tile_overlap", f"must be at most half {which} ({side // 2} px), got {overlap}")


def auto_tile_side(device: torch.device, hparams: dict) -> int:
    """The tile side ``tile auto`` means on this device, for a model with these hyperparameters."""
    if device.type != "cuda":
        return CPU_AUTO_TILE
    free, _ = torch.cuda.mem_get_info(device)
    # ~ 4 feature maps of the widest first level, 4 bytes each, per HR pixel, times 8 for the rest
    # of the UNet: a deliberately cautious estimate, halved again on OOM.
    width_first = int(hparams.get("hidden_size") or hparams.get("inner_channel", 64))
    return max(int(math.sqrt(max(free * 0.6, 1) / (width_first * 4 * 4 * 8))), CPU_AUTO_TILE)


def tile_side(
    tile: int | str, height: int, width: int, multiple: int, scale: int, auto: int, stream: bool = False
) -> int | None:
    """HR tile side, or None for no tiling; streamed tiles always exist and span whole LR pixels.

    ``auto`` is ``auto_tile_side``'s answer, used when ``tile`` is "auto": images up to 1.5 times it
    run whole.
    """
    if stream:
        multiple = multiple * scale // math.gcd(multiple, scale)
        side = auto if tile == "auto" else int(tile)
        return max(multiple, side - side % multiple)
    if tile == "auto":
        if max(height, width) <= auto * 1.5:
            return None
        return max(multiple, auto - auto % multiple)
    side = int(tile)
    if side == 0 or max(height, width) <= side:
        return None
    return side - side % multiple


def gaussian_window(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """1 x 1 x H x W weights, a separable Gaussian with sigma = side / 4, never exactly zero."""

    def axis(n: int) -> Tensor:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 4)) ** 2)

    return (axis(height)[:, None] * axis(width)[None, :]).clamp_min(1e-3)[None, None]


Denoise = Callable[[Tensor, Condition, Tensor, Tensor], Tensor]
"""A denoiser call, (z, condition, t, sqrt(gamma_t)) -> epsilon: the model itself, or a compiled one."""


def tiled_eps_fn(
    model: SRDenoiser,
    cond: Condition,
    tiles: list[Tile],
    dtype: torch.dtype | None = None,
    on_tile: Callable[[], None] | None = None,
    *,
    denoise: Denoise | None = None,
    batch: int = 1,
) -> Predict:
    """An epsilon function over one image's state that runs ``model`` tile by tile and blends.

    ``denoise`` replaces the plain model call (e.g. a compiled one). ``batch`` > 1 runs up to that
    many tiles in one call (every tile of a plan has one shape); they are tiles of this image only,
    so the result depends on the tile plan and ``batch``, never on other images.
    """
    dtype = dtype or next(model.parameters()).dtype
    call: Denoise = denoise or model
    cond = cond.to(dtype)
    if len(tiles) == 1 and (tiles[0].height, tiles[0].width) == tuple(cond.x_up.shape[-2:]):

        def whole(z: Tensor, t: Tensor, level: Tensor) -> Tensor:
            result = call(z.to(dtype), cond, t, level.to(dtype)).float()
            if on_tile is not None:
                on_tile()
            return result

        return whole

    crops = [cond.crop(t.top, t.left, t.height, t.width) for t in tiles]
    weights = [gaussian_window(t.height, t.width, cond.x_up.device) for t in tiles]
    groups = [range(first, min(first + max(1, batch), len(tiles))) for first in range(0, len(tiles), max(1, batch))]

    def eps_fn(z: Tensor, t: Tensor, level: Tensor) -> Tensor:
        total = torch.zeros_like(z, dtype=torch.float32)
        norm = torch.zeros_like(z[:, :1], dtype=torch.float32)
        for group in groups:
            if len(group) == 1:
                crop, z_in = crops[group[0]], z[tiles[group[0]].window()].to(dtype)
            else:
                crop = _stack([crops[i] for i in group])
                z_in = torch.cat([z[tiles[i].window()] for i in group]).to(dtype)
            eps = call(z_in, crop, t.repeat(len(group)), level.to(dtype).repeat(len(group))).float()
            for index, part in zip(group, eps.split(z.shape[0]), strict=True):
                window = tiles[index].window()
                total[window] += part * weights[index]
                norm[window] += weights[index]
                if on_tile is not None:
                    on_tile()
        return total / norm

    return eps_fn


def _stack(conditions: list[Condition]) -> Condition:
    """Conditions of equal-shaped tiles as one batch."""
    first = conditions[0]
    return Condition(
        x_up=torch.cat([c.x_up for c in conditions]),
        base=None if first.base is None else torch.cat([c.base for c in conditions if c.base is not None]),
        features={name: torch.cat([c.features[name] for c in conditions]) for name in first.features},
    )


def lr_multiple(size_multiple: int, scale: int) -> int:
    """LR sides must be multiples of this for the HR side to be a multiple of ``size_multiple``."""
    return size_multiple // math.gcd(size_multiple, scale)


def pad_to(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)
