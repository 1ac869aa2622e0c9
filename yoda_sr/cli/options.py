"""Flag values parsed into library settings: one parser per flag that takes words or numbers as text.
A wrong value is a ``SettingError`` naming the setting, which ``cli.main`` shows under its flag."""

from __future__ import annotations

import os

from ..errors import SettingError
from .common import UsageError


def output_format(fmt: str) -> str:
    """A format choice (auto, png, jpg or jpeg, webp, tiff), normalized."""
    from ..jobs.upscaling import FORMATS  # the library (and torch) load only once a command runs

    value = fmt.strip().lower()
    value = "jpg" if value == "jpeg" else value
    if value not in FORMATS:
        raise SettingError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return value


def parse_tile(tile: str) -> int | str:
    """A tile choice: "auto", or a side in pixels (0: no tiling)."""
    value = tile.strip().lower()
    if value == "auto":
        return value
    if not value.isdecimal():
        raise SettingError("tile", f"must be auto, 0 (off) or a size in pixels, got {tile!r}")
    return int(value)


def parse_sparse(sparse: str) -> bool:
    """A sparse-evaluation switch: on or off."""
    value = sparse.strip().lower()
    if value not in ("on", "off"):
        raise SettingError("sparse", f"must be on or off, got {sparse!r}")
    return value == "on"


def parse_block(block: str) -> int | str:
    """A block choice: "auto", or an HR side in pixels (0: pixel-level maps)."""
    value = block.strip().lower()
    if value == "auto":
        return value
    if not value.isdecimal():
        raise SettingError("block", f"must be auto, 0 (pixel-level maps) or a side in pixels, got {block!r}")
    return int(value)


def torchrun_shard() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise UsageError(
            f"RANK={rank} and WORLD_SIZE={world} do not fit (0 <= RANK < WORLD_SIZE); "
            "unset them, or start the run with torchrun"
        )
    return rank, world, local_rank
