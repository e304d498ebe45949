"""PyTorch's intra-op thread count, held at one by blocks that may overlap in several threads.

The engine holds PyTorch at one thread while its own workers share a picture's tiles and during a picture's small
whole-picture steps (:mod:`scl_lle.engine.tiling`). In a server those blocks overlap: a job enhances a photo while
a request renders a preview. ``torch.set_num_threads`` sets the count of the calling thread and the one every new
thread starts with (with OpenMP, as PyTorch's wheels are built), so a block that restored the count it found
could leave one thread to every later thread: a request thread started during a job's block finds one, and
"restores" it. Here the first block in notes the count, every thread leaving its last block restores that, and
:func:`cpu_threads` gives it while blocks run, for sizing worker pools.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

__all__ = ["cpu_threads", "set_cpu_threads", "single_thread"]

_lock = threading.Lock()
_holders = 0  # blocks of single_thread() running now, in every thread
_saved = 0  # the count before the first of them, restored by each thread as it leaves its last block
_depth = threading.local()  # blocks running in this thread (nested ones counted)


def cpu_threads() -> int:
    """PyTorch's intra-op thread count outside :func:`single_thread` blocks (to size worker pools by)."""
    with _lock:
        return _saved if _holders else torch.get_num_threads()


def set_cpu_threads(count: int) -> None:
    """Set PyTorch's intra-op thread count to ``count`` >= 1, also for when the blocks running now end."""
    global _saved
    if count < 1:
        raise ValueError(f"threads must be >= 1, got {count}")
    with _lock:
        if _holders:
            _saved = count
        if not getattr(_depth, "count", 0):
            torch.set_num_threads(count)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """PyTorch at one intra-op thread in this thread for the block; the count outside blocks is restored as the
    thread leaves its last block."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = torch.get_num_threads()
        _holders += 1
        _depth.count = getattr(_depth, "count", 0) + 1
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            _depth.count -= 1
            if _depth.count == 0:
                torch.set_num_threads(_saved)
