"""Where the engine runs: the process's place among distributed ranks."""

from __future__ import annotations

import os

__all__ = ["shard_from_env"]


def shard_from_env() -> tuple[int, int]:
    """``(rank, world_size)`` from the ``RANK`` and ``WORLD_SIZE`` variables that ``torchrun`` sets; ``(0, 1)``."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as error:
        raise ValueError(f"RANK and WORLD_SIZE must be whole numbers: {error}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return rank, world
