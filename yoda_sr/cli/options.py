"""What the command line reads besides flags: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).
Flag values given as text are parsed by ``settings`` (``parse_tile`` and the like), which the page
shares."""

from __future__ import annotations

import os

from .common import UsageError


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
