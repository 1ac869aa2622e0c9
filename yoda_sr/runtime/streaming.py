"""Streamed tiles: memory bounded by the tile, not the image (docs/method.md §7, "Streamed tiles").

Whole-image sampling (``api.Upscaler``, ``tiling.tiled_eps_fn``) keeps full-size float tensors of
the state, the condition (C channels at HR size), the attention map and the noise: hundreds of
bytes per output pixel. Above a memory budget each tile is instead super-resolved on its own:

- the attention map is computed once on the whole LR image, at LR size, and each tile's part is
  bilinearly upscaled from a crop of it (for the weight-free maps this is the HR map exactly);
- each tile gets an LR crop with a margin for the encoder's receptive field, its own condition
  (``model.prepare`` on the crop, cropped to the tile) and the full sampler (``sampler.sample``);
- noise is keyed by HR position (``PositionalNoise``): overlapping tiles draw the same noise where
  they overlap, so they agree there up to the denoiser's border effects, and an output does not
  depend on the tile plan's other tiles or on the batch;
- finished tiles are blended with the Gaussian window into a band of rows (float32, one tile row
  high); rows no later tile touches are converted into the uint8/uint16 output array.

Peak memory is then about the output array plus O(tile x image width), not O(image x channels).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention import compute_attention
from ..diffusion.masking import activation_steps, block_attention, flat_areas, update_fraction
from ..image.imaging import _taps_float64, resize_bicubic, to_array, to_tensor
from ..models.base import SRDenoiser
from ..seeds import derive_seed
from .sparse import Evaluator
from .tiling import Tile, gaussian_window, lr_multiple, plan_tiles
from .window import SamplingSpec, Upscaled, condition, sample_window

NOISE_BLOCK = 64
"""Side (HR pixels) of the blocks that noise is drawn in, each from its own position-keyed seed."""
MIN_LR_MARGIN = 8
"""LR pixels of context around a tile for the encoder: 3 per RRDB block, at least this. Measured on
the embedded model (6 blocks, so 18): at 16 px the tile's condition equals the whole image's to float
precision, at 12 px its base is within 0.002 of an 8-bit level, at 8 px within 0.07."""


class PositionalNoise:
    """A ``NoiseSampler`` for one tile whose draws depend on HR position, not on the tile.

    Draws are told apart by their slot (0: the start, k: the k-th step; ``advance`` is the sampler's
    step callback) and their order within the slot (the step's noise first, then the known region's,
    which every tile draws in the same order when it draws them at all). Each NOISE_BLOCK-sided
    block of the image has its own generator per draw, seeded from the image's seed, so two tiles
    that overlap draw the same noise there.
    """

    def __init__(self, seed: int, top: int, left: int, block: int = NOISE_BLOCK) -> None:
        self.seed, self.top, self.left, self.block = int(seed), top, left, block
        self.slot = 0
        self.order = 0

    def advance(self, _info: object = None) -> None:
        self.slot += 1
        self.order = 0

    def __call__(self, like: Tensor) -> Tensor:
        if like.dim() != 4 or like.shape[0] != 1:
            raise ValueError(f"positional noise is drawn for one image, got shape {tuple(like.shape)}")
        channels, height, width = like.shape[1:]
        block, top, left = self.block, self.top, self.left
        out = torch.empty(channels, height, width)
        for by in range(top // block, -(-(top + height) // block)):
            for bx in range(left // block, -(-(left + width) // block)):
                seed = derive_seed(self.seed, "noise", self.slot, self.order, by, bx)
                drawn = torch.randn(channels, block, block, generator=torch.Generator().manual_seed(seed))
                y0, y1 = max(top, by * block), min(top + height, (by + 1) * block)
                x0, x1 = max(left, bx * block), min(left + width, (bx + 1) * block)
                out[:, y0 - top : y1 - top, x0 - left : x1 - left] = drawn[
                    :, y0 - by * block : y1 - by * block, x0 - bx * block : x1 - bx * block
                ]
        self.order += 1
        return out[None].to(like.device, like.dtype)


class _ImageRows:
    """Writes finished rows (1 x 3 x n x W, [-1, 1]) of the output image into its array, in order."""

    def __init__(self, out: np.ndarray) -> None:
        self.out, self.done = out, 0

    def write(self, rows: Tensor) -> None:

        count = rows.shape[-2]
        self.out[self.done : self.done + count] = to_array(rows, self.out.dtype)
        self.done += count


class _ResizedRows:
    """Resizes finished rows to the output size on the fly, as ``resize_bicubic`` on the whole image.

    The width pass is ``resize_bicubic`` on the rows; the height pass gathers them with the whole
    image's tap table, in its order of operations, so the result is the same bit for bit.
    """

    def __init__(self, out: np.ndarray, in_height: int) -> None:

        indices, weights = _taps_float64(in_height, out.shape[0], True)
        self.indices, self.weights = torch.from_numpy(indices), torch.from_numpy(weights).float()
        self.sink = _ImageRows(out)
        self.buffer: Tensor | None = None
        self.start = 0  # image row of the buffer's first row

    def write(self, rows: Tensor) -> None:

        out_width = self.sink.out.shape[1]
        resized = resize_bicubic(rows, size=(rows.shape[-2], out_width))[0]
        self.buffer = resized if self.buffer is None else torch.cat([self.buffer, resized], dim=1)
        received = self.start + self.buffer.shape[1]
        first = self.sink.done
        last = first
        while last < len(self.indices) and int(self.indices[last].max()) < received:
            last += 1
        if last > first:
            indices, weights = self.indices[first:last] - self.start, self.weights[first:last]
            result = self.buffer.index_select(1, indices[:, 0]).mul_(weights[:, 0, None])
            for tap in range(1, indices.shape[1]):
                result.add_(self.buffer.index_select(1, indices[:, tap]).mul_(weights[:, tap, None]))
            self.sink.write(result.clamp(-1.0, 1.0)[None])
        if last < len(self.indices):
            keep = int(self.indices[last:, 0].min()) - self.start
            self.buffer = self.buffer[:, keep:].contiguous()
            self.start += keep


def upscale_window(window: Tensor, scale: int) -> Tensor:
    """A window of an LR-size attention map, bilinearly upscaled and clamped as ``compute_attention``
    does with ``hr_size``: the whole HR map's pixels wherever the window extends at least one LR
    pixel beyond them (or reaches the image's border)."""
    size = (window.shape[-2] * scale, window.shape[-1] * scale)
    return F.interpolate(window, size=size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def tile_attention(attention_lr: Tensor, tile: Tile, scale: int, block: int) -> Tensor:
    """A tile's HR attention, pooled to the image's ``block`` grid (``masking.block_attention``).

    The LR window reaches one LR pixel beyond the blocks the tile touches, so its bilinear upscale is
    the whole HR map there (``upscale_window``) and each block's mean is the whole map's.
    """

    side = max(block, 1)
    lr_height, lr_width = attention_lr.shape[-2:]
    top, left = tile.top - tile.top % side, tile.left - tile.left % side
    a, c = max(0, top // scale - 1), max(0, left // scale - 1)
    b = min(lr_height, -(-(tile.top + tile.height) // side) * side // scale + 2)
    d = min(lr_width, -(-(tile.left + tile.width) // side) * side // scale + 2)
    pooled = block_attention(upscale_window(attention_lr[..., a:b, c:d], scale), block, (a * scale, c * scale))
    dy, dx = tile.top - a * scale, tile.left - c * scale
    return pooled[..., dy : dy + tile.height, dx : dx + tile.width]


def lr_margin(model: SRDenoiser) -> int:
    """LR pixels of context each tile's condition is computed with."""
    blocks = int(getattr(model, "config", {}).get("rrdb_num_block", 0) or 0)
    return max(MIN_LR_MARGIN, 3 * blocks)


def _owned(starts: list[int], ends: list[int], length: int) -> list[tuple[int, int]]:
    """Per tile start along one axis, the part it owns: overlaps are split at their middle."""
    cuts = [0, *((start + end) // 2 for start, end in zip(starts[1:], ends[:-1], strict=True)), length]
    return list(itertools.pairwise(cuts))


@torch.inference_mode()
def upscale_streamed(
    model: SRDenoiser,
    lr: Tensor,
    size: tuple[int, int],
    out: np.ndarray,
    *,
    seed: int,
    spec: SamplingSpec,
    tile_side: int,
    overlap: int,
    device: torch.device,
    on_tile: Callable[[], None],
    check: Callable[[Tensor], None],
) -> tuple[np.ndarray | None, float, float]:
    """Super-resolve one padded LR image (1 x 3 x h x w on the CPU) tile by tile into ``out``.

    ``size`` is the unpadded LR (height, width); ``out`` is the H x W x 3 output array (at the
    model's scale, or smaller: then rows are bicubic-resized on the fly); ``tile_side`` and
    ``overlap`` are the HR tile plan's (``tiling.plan_tiles``). ``check`` raises on a
    tile's non-finite output. Returns the attention map at LR size (unpadded), the update fraction
    and the work fraction (pixels the denoiser ran on / steps x image pixels).
    """
    schedule = spec.schedule
    scale = int(model.info.scale)
    lr_height, lr_width = lr.shape[-2:]
    height, width = lr_height * scale, lr_width * scale
    out_height, out_width = size[0] * scale, size[1] * scale
    attention_lr, flat_lr = None, None
    if spec.attention != "none":
        attention_lr = compute_attention(lr, spec.attention, device=device).cpu()
        if spec.flat_floor:
            flat_lr = flat_areas(lr, spec.flat_floor)
    tiles = plan_tiles(height, width, tile_side, overlap, model.info.size_multiple, align=scale)
    row_starts = sorted({t.top for t in tiles})
    col_starts = sorted({t.left for t in tiles})
    rows_owned = dict(
        zip(row_starts, _owned(row_starts, [s + tiles[0].height for s in row_starts], height), strict=True)
    )
    cols_owned = dict(zip(col_starts, _owned(col_starts, [s + tiles[0].width for s in col_starts], width), strict=True))
    sink: _ImageRows | _ResizedRows = _ImageRows(out) if out.shape[0] == out_height else _ResizedRows(out, out_height)
    margin = lr_margin(model)
    updates, evaluated = 0.0, 0

    band_top, band = 0, torch.zeros(4, 0, width)  # rows of 3 weighted channels and their weight
    for row_index, top in enumerate(row_starts):
        row_tiles = [t for t in tiles if t.top == top]
        bottom = top + row_tiles[0].height
        grown = torch.zeros(4, bottom - band_top, width)
        grown[:, : band.shape[1]] = band
        band = grown
        for tile in row_tiles:
            # The LR window with context, and the tile's offset inside its HR upscale.
            a, b = max(0, tile.top // scale - margin), min(lr_height, (tile.top + tile.height) // scale + margin)
            c, d = max(0, tile.left // scale - margin), min(lr_width, (tile.left + tile.width) // scale + margin)
            dy, dx = tile.top - a * scale, tile.left - c * scale
            crop = lr[..., a:b, c:d].to(device)
            cond = condition(model, crop, ((b - a) * scale, (d - c) * scale), spec).crop(
                dy, dx, tile.height, tile.width
            )
            attention, flat = None, None
            if attention_lr is not None:
                attention = tile_attention(attention_lr, tile, scale, spec.block).to(device)
                if flat_lr is not None:  # tiles are aligned to the scale (plan_tiles' align)
                    lr_rows = slice(tile.top // scale, (tile.top + tile.height) // scale)
                    lr_columns = slice(tile.left // scale, (tile.left + tile.width) // scale)
                    window = flat_lr[..., lr_rows, lr_columns].repeat_interleave(scale, dim=-2)
                    flat = window.repeat_interleave(scale, dim=-1).to(device)
                activation = activation_steps(attention, spec.lower_bound, schedule.train_steps, flat)
                (r0, r1), (c0, c1) = rows_owned[tile.top], cols_owned[tile.left]
                owned = activation[..., r0 - tile.top : r1 - tile.top, c0 - tile.left : c1 - tile.left]
                updates += update_fraction(owned, schedule.steps) * owned.numel()
            evaluator = Evaluator(
                model, cond, block=spec.block, origin=(tile.top, tile.left), dtype=spec.dtype, denoise=spec.denoise
            )
            noise = PositionalNoise(seed, tile.top, tile.left)

            def step(info: object, noise: PositionalNoise = noise) -> None:
                noise.advance(info)
                on_tile()

            sampled = sample_window(
                model, cond, spec, evaluator, attention=attention, flat=flat, noise=noise, callback=step
            )
            evaluated += evaluator.pixels[0]
            check(sampled.image)
            weight = gaussian_window(tile.height, tile.width)[0]
            rows = slice(tile.top - band_top, bottom - band_top)
            columns = slice(tile.left, tile.left + tile.width)
            band[:3, rows, columns] += sampled.image[0].cpu() * weight
            band[3:, rows, columns] += weight
        finished = (row_starts[row_index + 1] if row_index + 1 < len(row_starts) else height) - band_top
        done = band[:3, :finished] / band[3:, :finished]
        keep = min(finished, max(0, out_height - band_top))
        if keep:
            sink.write(done[None, :, :keep, :out_width])
        band_top += finished
        band = band[:, finished:].clone()

    fraction = 1.0 if attention_lr is None else updates / (height * width)
    attention_map = None if attention_lr is None else attention_lr[0, 0, : size[0], : size[1]].numpy()
    return attention_map, fraction, evaluated / (schedule.num_steps * height * width)


def stream_images(
    model: SRDenoiser,
    images: Sequence[np.ndarray],
    seeds: Sequence[int],
    scale: int,
    spec: SamplingSpec,
    *,
    tile_side: int,
    overlap: int,
    device: torch.device,
    progress: Callable[[int, int], None] | None,
    check: Callable[[Tensor], None],
) -> list[Upscaled]:
    """Streamed super-resolution of H x W x 3 uint8/uint16 images, one after the other, by ``scale``
    (at most the model's), in HR tiles of ``tile_side`` overlapping by ``overlap``. The attention map
    of each result is at LR size; ``progress`` counts tile steps (steps x tiles x images)."""
    model_scale = int(model.info.scale)
    multiple = lr_multiple(model.info.size_multiple, model_scale)
    sides = [-(-side // multiple) * multiple * model_scale for side in images[0].shape[:2]]
    tiles = plan_tiles(sides[0], sides[1], tile_side, overlap, model.info.size_multiple, align=model_scale)
    total, done = spec.schedule.num_steps * len(tiles) * len(images), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    results = []
    for image, seed in zip(images, seeds, strict=True):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("Upscaler takes H x W x 3 images; convert greyscale to RGB first")
        lr = to_tensor(image)
        height, width = lr.shape[-2:]
        lr = F.pad(lr, (0, (-width) % multiple, 0, (-height) % multiple), mode="replicate")
        out = np.empty((height * scale, width * scale, 3), dtype=image.dtype)
        attention, fraction, work = upscale_streamed(
            model, lr, (height, width), out, seed=seed, spec=spec, tile_side=tile_side, overlap=overlap,
            device=device, on_tile=tick, check=check,
        )  # fmt: skip
        results.append(Upscaled(image=out, attention=attention, update_fraction=fraction, work_fraction=work))
    return results
