"""PyTorch's thread count under blocks that hold it at one in several threads at once (a server runs a job and
renders a preview together). With OpenMP, ``torch.set_num_threads`` sets the calling thread's count and the count
every new thread starts with; these tests look at both."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from scl_lle.apps.serve.work import Engine
from scl_lle.engine.enhancer import Enhancer
from scl_lle.engine.threads import cpu_threads, set_cpu_threads, single_thread
from scl_lle.engine.tiling import TilePool
from scl_lle.models.dcenet import DCENet


@pytest.fixture(autouse=True)
def three_threads() -> Iterator[None]:
    """PyTorch at three threads for the test (a count no machine default is likely to give), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def _in_new_thread(work: Callable[[], object]) -> object:
    """``work()`` in a thread started now (it starts at the count new threads get); its result."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(work).result(10)


class _Holder:
    """A thread that enters :func:`single_thread` on creation and leaves it when released."""

    def __init__(self) -> None:
        self.inside, self.leave = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold)
        self.thread.start()
        assert self.inside.wait(10)

    def _hold(self) -> None:
        with single_thread():
            self.inside.set()
            self.leave.wait(10)

    def release(self) -> None:
        self.leave.set()
        self.thread.join(10)


def test_a_thread_leaving_its_block_restores_the_count_outside_blocks() -> None:
    # A request thread starts while a job holds one thread, so it finds one; its own block ends after the job's.
    job = _Holder()
    seen: list[int] = []

    def request() -> None:
        seen.append(torch.get_num_threads())
        with single_thread():
            seen.append(torch.get_num_threads())
            job.release()
        seen.append(torch.get_num_threads())

    _in_new_thread(request)
    assert seen == [1, 1, 3]
    assert _in_new_thread(torch.get_num_threads) == 3  # what every later thread starts with
    assert torch.get_num_threads() == 3


def test_enhancers_made_during_a_hold_get_every_thread() -> None:
    engine = Engine(DCENet(), "cpu", backend="torch")  # made before any hold, as the server makes it
    job = _Holder()
    try:
        assert cpu_threads() == 3
        assert _in_new_thread(lambda: cpu_threads()) == 3
        enhancer = _in_new_thread(lambda: Enhancer(DCENet(), device="cpu", backend="torch"))
        served = _in_new_thread(lambda: engine.enhancer("full"))
    finally:
        job.release()
    assert enhancer.workers == 3 and served.workers == 3


def test_threads_set_during_a_hold_hold_after_it() -> None:
    job = _Holder()
    try:
        set_cpu_threads(2)
        assert cpu_threads() == 2 and torch.get_num_threads() == 2
        with single_thread():
            assert torch.get_num_threads() == 1
            set_cpu_threads(2)
            assert torch.get_num_threads() == 1  # held in this thread until its block ends
        assert torch.get_num_threads() == 2
    finally:
        job.release()
    assert _in_new_thread(torch.get_num_threads) == 2
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_cpu_threads(0)


def test_tile_workers_run_on_one_thread_whatever_they_started_with() -> None:
    pool = TilePool(2)
    # The pool's helper thread started, and first used PyTorch, while new threads got three.
    pool._helpers = ThreadPoolExecutor(1)
    assert pool._helpers.submit(torch.get_num_threads).result(10) == 3
    seen: dict[str, int] = {}

    def work(region: tuple[int, int, int, int]) -> None:
        time.sleep(0.02)  # long enough for both threads to take regions
        seen[threading.current_thread().name] = max(
            seen.get(threading.current_thread().name, 0), torch.get_num_threads()
        )

    pool.run(work, [(0, 0, 1, 1)] * 8)
    assert len(seen) == 2 and set(seen.values()) == {1}
    assert torch.get_num_threads() == 3
    pool._helpers.shutdown()
