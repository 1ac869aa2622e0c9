"""What the command line reads besides flags: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).
Flag values given as text are parsed by ``settings`` (``parse_tile`` and the like), which the page
shares."""

from __future__ import annotations

import os

from .common import UsageError


def torchrun_shard(rendezvous: bool = False) -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise. With
    ``rendezvous`` (training, whose processes talk to each other), a world of several processes also
    needs MASTER_ADDR and MASTER_PORT."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(
            f"RANK={rank} and WORLD_SIZE={world} do not fit (0 <= RANK < WORLD_SIZE); "
            "unset them, or start the run with torchrun"
        )
    if local_rank < 0:
        raise UsageError(f"LOCAL_RANK={local_rank} must be >= 0; unset it, or start the run with torchrun")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if world > 1 and rendezvous and not os.environ.get(name)]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={world} needs {' and '.join(missing)} (where the processes meet); "
            "unset WORLD_SIZE and RANK, or start the run with torchrun"
        )
    return rank, world, local_rank
