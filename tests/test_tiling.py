"""The tile plan: covers the image with the requested overlap and processes as few pixels as it can."""

from __future__ import annotations

import itertools
import math

import pytest

from yoda_sr.runtime.tiling import Tile, plan_tiles, processed_pixels


def axis_extents(tiles: list[Tile], axis: int) -> list[tuple[int, int]]:
    starts = sorted({(t.top, t.height) if axis == 0 else (t.left, t.width) for t in tiles})
    return [(start, start + side) for start, side in starts]


def check_plan(height: int, width: int, tile: int, overlap: int, multiple: int, align: int) -> list[Tile]:
    tiles = plan_tiles(height, width, tile, overlap, multiple, align)
    assert len({(t.height, t.width) for t in tiles}) == 1  # one shape: one compiled graph, one batch
    for axis, length in ((0, height), (1, width)):
        extents = axis_extents(tiles, axis)
        assert extents[0][0] == 0 and extents[-1][1] == length
        side = extents[0][1] - extents[0][0]
        if length > tile:
            assert side <= tile and side % math.lcm(multiple, align) == 0
        for (a, b), (c, _) in itertools.pairwise(extents):
            assert b - c >= overlap and c > a  # neighbours overlap by at least what was asked
        assert all(start % align == 0 for start, _ in extents)
    return tiles


@pytest.mark.parametrize(
    "height,width,tile,overlap,multiple,align",
    [
        (1024, 1024, 512, 32, 8, 1),
        (384, 512, 128, 32, 4, 1),
        (128, 192, 64, 16, 8, 4),
        (1536, 1024, 512, 32, 8, 4),
        (1000, 1000, 512, 32, 8, 1),
        (4000, 3000, 512, 64, 8, 4),
        (520, 64, 256, 0, 8, 1),
    ],
)
def test_plans_cover_with_the_overlap_in_tiles_of_one_shape(height, width, tile, overlap, multiple, align):
    check_plan(height, width, tile, overlap, multiple, align)


def test_a_small_overlap_costs_no_third_tile_of_full_size():
    # 1024 px at a 512 px limit and a 32 px overlap needs 3 tiles per side; they shrink to 368 px,
    # so the denoiser sees 1.16x the image's pixels, not the 2.25x of three 512 px tiles.
    tiles = check_plan(1024, 1024, 512, 32, 8, 1)
    assert len(tiles) == 9 and (tiles[0].height, tiles[0].width) == (368, 368)
    assert processed_pixels(tiles) / 1024**2 == pytest.approx(1.1624, abs=1e-4)


@pytest.mark.parametrize("length", [200, 256, 264, 384, 520, 777 // 8 * 8, 1024])
@pytest.mark.parametrize("tile,overlap", [(128, 16), (136, 32), (256, 64)])
def test_no_plan_of_equal_tiles_processes_fewer_pixels(length, tile, overlap):
    tiles = plan_tiles(length, 8, tile, overlap, 8)
    best = None
    for side in range(8, tile + 1, 8):  # brute force over every side and count along the axis
        for count in range(1, length):
            if side * count < length or (count == 1 and side < length) or side > length:
                continue
            if count > 1 and side - math.ceil((length - side) / (count - 1)) < overlap:
                continue
            best = side * count if best is None else min(best, side * count)
            break
    assert best is not None and processed_pixels(tiles) == best * 8
