"""Block-sparse denoising: the denoiser runs only on rectangles that cover M(t) (docs/method.md §11).

YODA's sampler discards eps wherever M(t) is off (those pixels take the known region, eq. 14), so
the denoiser need not run there. An ``Evaluator`` gives the sampler two epsilon functions over the
whole state: ``dense`` (the model on the whole image, in Gaussian-blended tiles when it is large,
``tiling.tiled_eps_fn``) for steps at which every pixel is active, and ``masked`` for the others:

1. the image is divided into cells of ``block`` x ``block`` pixels (the blocks the attention map was
   averaged over, so that a cell is wholly active or not), and the cells holding an active pixel found;
2. they are grouped into disjoint rectangles (``cover``): runs of active cells along each row,
   stacked while the next row repeats them, then merged greedily while a merged rectangle costs less
   to evaluate than its parts (each part pays a halo and a model call; a merge pays for the
   inactive cells it takes in);
3. each rectangle is grown by ``halo`` pixels of context (clipped at the image border), split into
   crops no larger than the tile side, and the denoiser runs on the crop with the condition cropped
   alike; the rectangle's own pixels are written back and every other eps stays 0 (it is never read).

Crops start and end on multiples of the model's size multiple, so the UNet downsamples them on the
grid of the whole image: inside a rectangle eps differs from the whole image's only through the
context beyond the halo. The evaluator counts the pixels the denoiser ran on per image (halos and
tile overlaps included); ``work_fraction`` divides them by a dense run's count on the same steps.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import SettingError
from ..models.base import Condition, SRDenoiser
from .tiling import Denoise, Tile, plan_tiles, tiled_eps_fn

DEFAULT_BLOCK = 64
"""HR block side of the maps and cells (rounded up to the model's size multiple); bench/sparse.py."""
HALO = 16
"""HR pixels of context around each evaluated rectangle (rounded up to the size multiple). Measured
on the embedded model at 512 x 512: eps of a 64 x 128 region evaluated alone differs from the whole
image's by at most 0.85 with no halo, 0.014 with 8 px and 0.003 with 16 px."""
CALL_COST = 2048
"""A model call's fixed cost, in pixels of evaluation (merging two rectangles saves one call): the
embedded model on the 2-core CPU took 16 ms per call plus 7.8 us per pixel (crops of 32-256 px)."""

Box = tuple[int, int, int, int]
"""Cells [top, bottom) x [left, right)."""


MAX_BLOCK = 4096
"""The largest block side: a block covers a whole image long before this (larger ones once tried to
allocate terabytes)."""


def resolve_block(block: int | str, sparse: bool, multiple: int) -> int:
    """The block side a setting means: auto is DEFAULT_BLOCK (rounded up to ``multiple``) with sparse
    evaluation and 0 (pixel-level maps) without; a side must be 0 or a multiple of ``multiple``."""
    if not isinstance(sparse, bool):
        raise SettingError("sparse", f"must be True or False, got {sparse!r}")
    if block == "auto":
        return cell_side(0, multiple) if sparse else 0
    if not isinstance(block, int) or isinstance(block, bool) or block < 0 or block % multiple:
        raise SettingError("block", f"must be auto, 0 (pixel-level maps) or a multiple of {multiple} px, got {block!r}")
    if block > MAX_BLOCK:
        raise SettingError("block", f"must be at most {MAX_BLOCK} px (a block larger than any image), got {block}")
    return block


def cell_side(block: int, multiple: int) -> int:
    """The cells an evaluator groups: the map's blocks, or DEFAULT_BLOCK for pixel-level maps."""
    return block or -(-DEFAULT_BLOCK // multiple) * multiple


def _row_runs(cells: np.ndarray) -> list[Box]:
    """Runs of true cells along each row, stacked while consecutive rows repeat the same run."""
    boxes: list[Box] = []
    open_runs: dict[tuple[int, int], int] = {}
    for row, values in enumerate(cells):
        edges = np.flatnonzero(np.diff(np.concatenate([[False], values, [False]]).astype(np.int8)))
        still_open = {}
        for left, right in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
            index = open_runs.get((left, right))
            if index is None:
                index = len(boxes)
                boxes.append((row, row + 1, left, right))
            else:
                top, _, _, _ = boxes[index]
                boxes[index] = (top, row + 1, left, right)
            still_open[(left, right)] = index
        open_runs = still_open
    return boxes


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))


def cover(cells: np.ndarray, cost: Callable[[np.ndarray], np.ndarray], reach: int = 2) -> list[Box]:
    """Disjoint rectangles of cells, (top, bottom, left, right) with exclusive ends, covering every
    true cell of a 2-D bool array.

    Starts from ``_row_runs`` and merges greedily: the pair whose bounding box (grown until it holds
    every rectangle it touches) saves the most ``cost`` goes first, until no merge saves anything;
    the bounding box of all true cells replaces the result if it costs no more.
    ``cost`` maps a k x 4 array of boxes to k costs; only boxes less than ``reach`` cells apart are
    considered for a merge (further ones cannot pay for the cells between them).
    """
    boxes = _row_runs(cells)
    if len(boxes) < 2:
        return boxes
    owner = np.full(cells.shape, -1, dtype=np.int64)
    for index, (top, bottom, left, right) in enumerate(boxes):
        owner[top:bottom, left:right] = index
    costs = [float(c) for c in cost(np.array(boxes))]
    alive = [True] * len(boxes)
    heap: list[tuple[float, int, int]] = []

    def inside(box: Box, margin: int = 0) -> set[int]:
        window = owner[max(0, box[0] - margin) : box[1] + margin, max(0, box[2] - margin) : box[3] + margin]
        return {index for index in np.unique(window).tolist() if index >= 0 and alive[index]}

    def push(index: int, others: list[int]) -> None:
        if not others:
            return
        merged = cost(np.array([_union(boxes[index], boxes[other]) for other in others]))
        for other, merged_cost in zip(others, merged.tolist(), strict=True):
            gain = costs[index] + costs[other] - merged_cost
            if gain > 0:
                heapq.heappush(heap, (-gain, min(index, other), max(index, other)))

    for index in range(len(boxes)):
        push(index, sorted(other for other in inside(boxes[index], reach) if other > index))
    while heap:
        _, first, second = heapq.heappop(heap)
        if not (alive[first] and alive[second]):
            continue
        box = _union(boxes[first], boxes[second])
        members: set[int] = set()
        while (found := inside(box)) != members:
            members = found
            for member in members:
                box = _union(box, boxes[member])
        merged_cost = float(cost(np.array([box]))[0])
        if sum(costs[member] for member in members) - merged_cost <= 0:
            continue
        for member in members:
            alive[member] = False
        index = len(boxes)
        boxes.append(box)
        costs.append(merged_cost)
        alive.append(True)
        owner[box[0] : box[1], box[2] : box[3]] = index
        push(index, sorted(inside(box, reach) - {index}))
    kept = [box for box, keep in zip(boxes, alive, strict=True) if keep]
    # Greedy pairs can stop short of the one box around everything: take it when it costs no more.
    rows, columns = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
    whole = (int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1)
    if float(cost(np.array([whole]))[0]) <= sum(cost(np.array(kept)).tolist()):
        return [whole]
    return kept


def _split(start: int, end: int, longest: int, multiple: int) -> list[tuple[int, int]]:
    """[start, end) cut into about equal parts of at most ``longest``, cuts on multiples of ``multiple``."""
    count = math.ceil((end - start) / longest)
    cuts = [start, *(start + round(k * (end - start) / count / multiple) * multiple for k in range(1, count)), end]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


class Evaluator:
    """Epsilon functions over whole states of a batch of images: ``dense`` and ``masked``.

    ``tile`` bounds the side of what the denoiser sees at once (None: the whole image); ``overlap``
    is the dense tiles'. ``block`` is the cell side (the map's blocks; 0: DEFAULT_BLOCK rounded up
    to the model's size multiple) and ``origin`` the image position of the state's first pixel (for
    windows of a larger image whose blocks are anchored at the image's origin). The denoiser runs
    one image at a time, so an image's eps depends on nothing else in its batch. ``denoise`` and
    ``tile_batch`` are ``tiling.tiled_eps_fn``'s, for the dense steps (a compiled denoiser, tiles per
    call); the sparse crops change shape from step to step and call the model itself.
    """

    def __init__(
        self,
        model: SRDenoiser,
        cond: Condition,
        *,
        tile: int | None = None,
        overlap: int = 32,
        block: int = 0,
        halo: int | None = None,
        origin: tuple[int, int] = (0, 0),
        dtype: torch.dtype | None = None,
        on_tile: Callable[[], None] | None = None,
        denoise: Denoise | None = None,
        tile_batch: int = 1,
    ) -> None:
        multiple = model.info.size_multiple
        height, width = cond.x_up.shape[-2:]
        if height % multiple or width % multiple:
            raise ValueError(f"the state's sides must be multiples of {multiple}, got {height} x {width}")
        block = cell_side(block, multiple)
        if block < 1 or block % multiple:
            raise ValueError(f"the block side must be a positive multiple of {multiple}, got {block}")
        self.model = model
        self.dtype = dtype or next(model.parameters()).dtype
        self.cond = cond.to(self.dtype)
        self.size = (int(height), int(width))
        self.multiple, self.block, self.origin = multiple, block, origin
        halo = HALO if halo is None else halo  # read at call time: bench/sparse.py --halo sets it
        self.halo = -(-halo // multiple) * multiple
        self.tile = tile
        hooks: list[Callable[[], None]] = [] if on_tile is None else [on_tile]

        def tick() -> None:  # refers to the hooks, not to self: no reference cycle (see below)
            for hook in hooks:
                hook()

        self._hooks, self._tick = hooks, tick
        self.images = [self.cond.select(slice(i, i + 1)) for i in range(cond.x_up.shape[0])]
        self.tiles = plan_tiles(height, width, tile or max(height, width), overlap, multiple)
        """The dense tile plan (one tile when the image fits)."""
        # A reference cycle through self would keep every tile's condition alive until the garbage
        # collector ran (streamed tiles make one evaluator each): the tile functions call ``tick``.
        self._dense = [
            tiled_eps_fn(model, image, self.tiles, self.dtype, tick, denoise=denoise, batch=tile_batch)
            for image in self.images
        ]
        self._dense_pixels = sum(t.height * t.width for t in self.tiles)
        self.pixels = [0] * len(self.images)
        """Pixels the denoiser ran on so far, per image."""
        self._plans: dict[bytes, list[tuple[Tile, Tile]]] = {}

    def work_fraction(self, steps: int) -> list[float]:
        """Per image: pixels evaluated / (``steps`` x image pixels), 1.0 for an untiled dense run."""
        return [pixels / (steps * self.size[0] * self.size[1]) for pixels in self.pixels]

    def dense(self, z: Tensor, t: Tensor, level: Tensor) -> Tensor:
        """Eps everywhere (``tiling.tiled_eps_fn``), one image at a time."""
        parts = []
        for i, eps_fn in enumerate(self._dense):
            parts.append(eps_fn(z[i : i + 1], t[i : i + 1], level[i : i + 1]))
            self.pixels[i] += self._dense_pixels
        return torch.cat(parts)

    def masked(self, z: Tensor, t: Tensor, level: Tensor, active: Tensor) -> Tensor:
        """Eps where ``active`` (bool N x 1 x H x W) is true: the denoiser runs on the rectangles of
        cells that hold an active pixel, with a halo; 0 elsewhere."""
        eps = torch.zeros(z.shape, dtype=torch.float32, device=z.device)
        for i, image in enumerate(self.images):
            for centre, crop in self._plan(self._cells(active[i : i + 1])):
                window = crop.window()
                part = image.crop(crop.top, crop.left, crop.height, crop.width)
                out = self.model(
                    z[i : i + 1][window].to(self.dtype), part, t[i : i + 1], level[i : i + 1].to(self.dtype)
                )
                rows = slice(centre.top - crop.top, centre.top - crop.top + centre.height)
                columns = slice(centre.left - crop.left, centre.left - crop.left + centre.width)
                eps[i : i + 1][centre.window()] = out[..., rows, columns].float()
                self.pixels[i] += crop.height * crop.width
                self._tick()
        return eps

    def watch(self, on_tile: Callable[[], None]) -> None:
        """Call ``on_tile`` after every denoiser call (a dense tile or a sparse crop)."""
        self._hooks.append(on_tile)

    def _cells(self, active: Tensor) -> np.ndarray:
        """Which cells of one image's mask (1 x 1 x H x W) hold an active pixel."""
        block = self.block
        top, left = self.origin[0] % block, self.origin[1] % block
        height, width = self.size
        bottom, right = -(top + height) % block, -(left + width) % block
        padded = F.pad(active[0, 0].to(torch.uint8), (left, right, top, bottom))
        rows, columns = padded.shape[0] // block, padded.shape[1] // block
        cells = padded.reshape(rows, block, columns, block).amax(dim=(1, 3))
        return cells.cpu().numpy().astype(bool)

    def _extent(self, first: np.ndarray, last: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel spans [start, end) of cells [first, last) along an axis, on multiples of the size multiple."""
        length, multiple = self.size[axis], self.multiple
        shift = self.origin[axis] % self.block
        start = np.clip(first * self.block - shift, 0, length)
        end = np.clip(last * self.block - shift, 0, length)
        return start - start % multiple, np.minimum(length, -(-end // multiple) * multiple)

    def cost(self, boxes: np.ndarray) -> np.ndarray:
        """What evaluating each box of cells (k x 4) costs: its pixels with the halo, and a call."""
        spans = []
        for axis, (first, last) in enumerate(((boxes[:, 0], boxes[:, 1]), (boxes[:, 2], boxes[:, 3]))):
            start, end = self._extent(first, last, axis)
            spans.append(np.minimum(self.size[axis], end + self.halo) - np.maximum(0, start - self.halo))
        return (spans[0] * spans[1]).astype(np.float64) + CALL_COST

    def _plan(self, cells: np.ndarray) -> list[tuple[Tile, Tile]]:
        """(centre, crop) pairs for a cell pattern, cached: a mask changes only a few times per run."""
        key = cells.tobytes() + str(cells.shape).encode()
        if key in self._plans:
            return self._plans[key]
        reach = (2 * self.halo + CALL_COST // (self.block + 2 * self.halo)) // self.block + 1
        height, width = self.size
        longest = max(self.multiple, self.tile - 2 * self.halo) if self.tile else max(height, width)
        longest -= longest % self.multiple
        plan = []
        for box in cover(cells, self.cost, reach):
            array = np.array([box])
            (top,), (bottom,) = self._extent(array[:, 0], array[:, 1], 0)
            (left,), (right,) = self._extent(array[:, 2], array[:, 3], 1)
            for y0, y1 in _split(int(top), int(bottom), longest, self.multiple):
                for x0, x1 in _split(int(left), int(right), longest, self.multiple):
                    a, b = max(0, y0 - self.halo), min(height, y1 + self.halo)
                    c, d = max(0, x0 - self.halo), min(width, x1 + self.halo)
                    plan.append((Tile(y0, x0, y1 - y0, x1 - x0), Tile(a, c, b - a, d - c)))
        self._plans[key] = plan
        return plan


class StepProgress:
    """``progress(done, total)`` in dense tile calls per step: the denoiser's calls move it within a
    step (never past it, since a sparse step makes more calls or fewer), each finished step completes it."""

    def __init__(self, progress: Callable[[int, int], None] | None, steps: int, per_step: int) -> None:
        self.progress, self.per_step, self.total = progress, per_step, steps * per_step
        self.steps = self.calls = self.shown = 0

    def call(self) -> None:
        self.calls += 1
        self._show(self.steps * self.per_step + min(self.calls, self.per_step - 1))

    def step(self, _info: object = None) -> None:
        self.steps, self.calls = self.steps + 1, 0
        self._show(self.steps * self.per_step)

    def _show(self, done: int) -> None:
        if done > self.shown and self.progress is not None:
            self.shown = done
            self.progress(done, self.total)
