"""Tiles: pictures read and written a region at a time, and the regions shared among worker threads.

The engine never holds a whole image as floats: it reads regions from a :class:`TileReader` (over a float tensor
``(B, 3, H, W)`` or a numpy picture ``(H, W)`` / ``(H, W, 1)`` / ``(H, W, 3)`` of uint8, uint16 or float pixels),
converted to float in [0, 1] on the compute device (:func:`~scl_lle.io.pixels.to_unit`), and hands results to a
:class:`TileWriter`, which converts them back into an output of the input's kind, dtype and shape. So the memory
a picture costs beyond its own pixels (and those of the result) is bounded by the tile size, not by its size.

On the CPU the regions are shared among worker threads (:class:`TilePool`), each running its region's operations
on one core (PyTorch's and ONNX Runtime's own thread pools are held at one thread meanwhile). Many small
operations split across threads each end at a barrier where every thread waits for the slowest; when another
process holds a core that wait is a scheduler time slice per operation, and the fast path was measured 12x
slower on a busy machine. Whole regions per thread need no barrier: a busy core slows its own regions only
(docs/PERFORMANCE.md). The regions are of equal size, so the workers' shares are equal; the steps that see the
whole picture (the shrunk copy for the network, in bands; the noise estimate and the exposure solve, on
thumbnails) run the same way or on one thread (:meth:`TilePool.serial`), never across PyTorch's threads.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch
import torch.nn.functional as F

from ..core.colour import luminance
from ..io.pixels import from_unit, peak_value, tensor_view, to_unit
from .fused_pass import area_average_into
from .threads import single_thread

__all__ = ["Progress", "Region", "TilePool", "TileReader", "TileWriter", "regions"]

Region = tuple[int, int, int, int]  # top, left, bottom, right
#: A progress callback: ``(work done, work in all)``, both counted in tiles.
Progress = Callable[[int, int], None]


def regions(height: int, width: int, tile: int | None, square: bool = True) -> Iterator[Region]:
    """Regions covering ``(height, width)``: tiles of at most ``tile`` x ``tile``, or (``square=False``) full-width
    strips of at most the same area; one piece without ``tile`` or when the image fits in one square. As many
    pieces as ``tile`` needs, of equal size (to a pixel): no thin leftover pieces at the edges, and workers that
    share the pieces get equal shares (a 375 x 500 picture in tiles of 362 was cut 362 + 13 by 362 + 138)."""
    if not tile or (height <= tile and width <= tile):
        yield 0, 0, height, width
        return
    if not square:
        for top, bottom in _cuts(height, max(1, tile * tile // width)):
            yield top, 0, bottom, width
        return
    for top, bottom in _cuts(height, tile):
        for left, right in _cuts(width, tile):
            yield top, left, bottom, right


def _cuts(size: int, most: int) -> list[tuple[int, int]]:
    """``[start, stop)`` pieces of ``range(size)``, as many as pieces of at most ``most`` need, sizes within one."""
    count = -(-size // most)
    bounds = [i * size // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _worker_setup() -> None:
    # Denormal flushing is a per-thread CPU flag: each worker sets it, as the enhancer did for its caller.
    torch.set_flush_denormal(True)


class TilePool:
    """Runs work region by region: here, or shared among ``workers`` threads, this one included.

    The ``workers - 1`` helper threads are made on first use and kept (their allocator arenas stay warm).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._helpers: ThreadPoolExecutor | None = None

    def split(self, height: int, width: int, tile: int | None, square: bool) -> list[Region]:
        """The regions of a ``(height, width)`` picture for tiles of ``tile`` (see :func:`regions`). With several
        workers, each holds a tile at a time: tiles of ``tile / sqrt(workers)`` keep the memory in use near that of
        one ``tile`` tile, and pictures with fewer regions than workers are cut finer (down to 64 pixels) so that
        every worker has a share."""
        if tile is not None and self.workers > 1:
            tile = max(min(64, tile), round(tile / self.workers**0.5))
        pieces = list(regions(height, width, tile, square))
        while self.workers > 1 and len(pieces) < self.workers:
            tile = -(-max(height, width) // 2) if tile is None else -(-tile // 2)
            if tile < 64:
                break
            pieces = list(regions(height, width, tile, square))
        return pieces

    def serial(self) -> contextlib.AbstractContextManager[None]:
        """A block with PyTorch's own threads held at one when this pool has several workers: for a picture's
        whole-picture steps between the tiles (noise estimate, exposure solve: small operations, whose barriers
        stall on a busy machine; on one core they cost little more on a quiet one)."""
        return single_thread() if self.workers > 1 else contextlib.nullcontext()

    def run(self, work: Callable[[Region], None], pieces: Sequence[Region], progress: Progress | None = None) -> None:
        """``work(region)`` for every region of ``pieces`` (PyTorch's own threads held at one meanwhile).

        ``progress(done, total)`` is called from this thread with every count from 0 to ``total`` once, in order,
        as regions complete; an exception in any region (or in ``progress``) stops the others from taking new ones
        and is raised here once the running ones have ended.
        """
        total = len(pieces)
        if progress is not None:
            progress(0, total)
        if self.workers < 2 or total < 2:
            for done, region in enumerate(pieces, 1):
                work(region)
                if progress is not None:
                    progress(done, total)
            return
        self._run_shared(work, pieces, progress)

    def _run_shared(self, work: Callable[[Region], None], pieces: Sequence[Region], progress: Progress | None) -> None:
        """:meth:`run` with the regions shared among the workers."""
        total = len(pieces)
        pending, lock = iter(pieces), threading.Lock()
        done, failures, reported = [0], [], [0]

        def report(upto: int) -> None:  # every count once, in order, from this thread
            if progress is not None:
                for count in range(reported[0] + 1, upto + 1):
                    progress(count, total)
            reported[0] = max(reported[0], upto)

        def take() -> Region | None:
            with lock:
                return None if failures else next(pending, None)

        def finished() -> int:
            with lock:
                done[0] += 1
                return done[0]

        def helper() -> None:  # holds itself at one thread: it may have started while another thread restored more
            with torch.inference_mode(), single_thread():
                while (region := take()) is not None:
                    try:
                        work(region)
                    except BaseException as error:
                        with lock:
                            failures.append(error)
                        return
                    finished()

        # This thread works too (its allocator arena stays in use: less memory) and reports progress.
        if self._helpers is None:
            self._helpers = ThreadPoolExecutor(self.workers - 1, "scl-lle-tiles", initializer=_worker_setup)
        with single_thread():
            helpers = [self._helpers.submit(helper) for _ in range(self.workers - 1)]
            try:
                while (region := take()) is not None:
                    work(region)
                    report(finished())
            except BaseException as error:
                with lock:
                    failures.insert(0, error)
                raise
            finally:
                wait(helpers)
        if failures:
            raise failures[0]
        report(total)


def _torch_view(pixels: np.ndarray) -> torch.Tensor:
    """A numpy picture ``(H, W)`` / ``(H, W, C)`` as a ``(1, C, H, W)`` tensor view (no copy)."""
    array = pixels if pixels.ndim == 3 else pixels[..., None]
    return tensor_view(array).permute(2, 0, 1).unsqueeze(0)


def _array_view(original: torch.Tensor | np.ndarray, source: torch.Tensor) -> np.ndarray | None:
    """``(B, 3, H, W)`` numpy view of a picture's pixels (no copy), ``None`` for tensors off the CPU."""
    if isinstance(original, np.ndarray):
        array = original if original.ndim == 3 else original[..., None]
        planes = array.transpose(2, 0, 1)[None]
        return np.broadcast_to(planes, (1, 3, *planes.shape[2:])) if planes.shape[1] == 1 else planes
    if source.device.type != "cpu" or source.dtype in (torch.bfloat16, torch.uint16):
        return None
    return source.detach().numpy()


class TileReader:
    """Float tiles ``(B, 3, h, w)`` in [0, 1] on ``device`` and in ``dtype`` from a tensor or a numpy picture.

    ``source``: a float tensor ``(B, 3, H, W)`` in [0, 1], or a numpy array ``(H, W)``, ``(H, W, 1)`` or
    ``(H, W, 3)`` (grey pictures are read as three equal channels).
    """

    def __init__(self, source: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
        original = source
        if isinstance(source, np.ndarray):
            if not (source.ndim == 2 or (source.ndim == 3 and source.shape[2] in (1, 3))):
                raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {source.shape}")
            peak_value(source.dtype)  # refuse unsupported types now
            source = _torch_view(source)
        elif source.ndim != 4 or source.shape[1] != 3:
            raise ValueError(f"expected a tensor (B, 3, H, W), got shape {tuple(source.shape)}")
        self.source = source
        #: The numpy source's dtype (``uint8``, ``uint16``, a float type); ``None`` for a tensor.
        self.array_dtype = original.dtype if isinstance(original, np.ndarray) else None
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch, _, self.height, self.width = source.shape
        if 0 in source.shape:
            raise ValueError(f"nothing to enhance: the picture is empty (shape {tuple(original.shape)})")
        self._array = _array_view(original, source)

    def pixels(self, region: Region) -> np.ndarray | None:
        """The source's own pixels of ``region`` as a numpy view ``(B, 3, h, w)`` (any strides, the source's
        dtype, grey read as three equal channels), for kernels that convert as they read; ``None`` where the
        source is not on the CPU."""
        top, left, bottom, right = region
        return None if self._array is None else self._array[..., top:bottom, left:right]

    def read(self, top: int, left: int, bottom: int, right: int) -> torch.Tensor:
        """Pixels ``[top:bottom, left:right]`` as ``(B, 3, bottom - top, right - left)`` in [0, 1]."""
        return self._unit(self.source[..., top:bottom, left:right])

    def strided(self, step: int) -> torch.Tensor:
        """Every ``step``-th pixel in each direction (sampled, not averaged): ``(B, 3, ceil(H/step), ceil(W/step))``."""
        return self._unit(self.source[..., ::step, ::step])

    def neighbourhoods(self, step: int, radius: int) -> torch.Tensor:
        """The ``(2 radius + 1)``-pixel square around every pixel :meth:`strided` samples, edges replicated, as a
        mosaic ``(B, 3, h * k, w * k)`` with ``k = 2 radius + 1``: the square of sample ``(i, j)`` fills rows
        ``i k : (i + 1) k`` and columns ``j k : (j + 1) k``, the sample itself at its centre."""
        offsets = torch.arange(-radius, radius + 1)
        centres = torch.arange(0, self.height, step)
        rows = (centres[:, None] + offsets).clamp_(0, self.height - 1).flatten().to(self.source.device)
        strips = self.source.index_select(2, rows)  # (B, 3, h * k, W): each sample row's k rows
        # Columns: edges replicated, then the k-wide windows starting every `step` columns (a view; a column
        # gather along the last dimension is several times slower).
        edge = (-1, -1, -1, radius)
        padded = torch.cat((strips[..., :1].expand(edge), strips, strips[..., -1:].expand(edge)), dim=3)
        return self._unit(padded.unfold(3, 2 * radius + 1, step).flatten(3))

    def downsample(self, scale: int, rows: int | None = None, pool: TilePool | None = None) -> torch.Tensor:
        """Area average over ``scale`` x ``scale`` cells (as :func:`~scl_lle.core.curves.downsample` gives for
        the whole image) -> ``(B, 3, ceil(H/scale), ceil(W/scale))``, computed ``rows`` input rows at a time (``None``:
        about a quarter of a million pixels' worth, a few MB of floats), the bands shared among ``pool``'s workers
        (``None``: here; split across PyTorch's threads, which stall when another process holds a core). On the
        CPU in float32, large pictures are shrunk by a numba loop straight from their own pixels
        (:func:`~scl_lle.engine.fused_pass.area_average_into`), in strips of output rows shared the same way."""
        if scale == 1:
            return self.read(0, 0, self.height, self.width)
        pool = pool or TilePool(1)
        height, width = -(-self.height // scale), -(-self.width // scale)
        if self.device.type == "cpu" and self.dtype == torch.float32:  # the numba kernel, where it serves
            out = torch.empty((self.batch, 3, height, width), dtype=self.dtype)
            done: list[bool] = []  # whether the kernel wrote each strip of output rows

            def area_rows(strip: Region) -> None:
                done.append(area_average_into(self._array, out, (self.height, self.width), (strip[0], strip[2])))

            strips = _cuts(height, max(1, height // (4 * pool.workers)))
            pool.run(area_rows, [(top, 0, bottom, width) for top, bottom in strips])
            if all(done):
                return out
        # Averaging over a rectangle = averaging its rows' averages: shrink the width band by band (exact
        # adaptive-pool bins along the width), then the height of the much smaller result, strip by strip.
        narrow = torch.empty((self.batch, 3, self.height, width), dtype=self.dtype, device=self.device)
        out = torch.empty((self.batch, 3, height, width), dtype=self.dtype, device=self.device)
        rows = rows or max(1, 2**18 // self.width)

        def shrink_width(band: Region) -> None:
            top, _, bottom, _ = band
            narrow[..., top:bottom, :] = _shrink(self.read(top, 0, bottom, self.width), (bottom - top, width))

        def shrink_height(strip: Region) -> None:
            _, left, _, right = strip
            out[..., left:right] = _shrink(narrow[..., left:right], (height, right - left))

        pool.run(shrink_width, [(top, 0, bottom, self.width) for top, bottom in _cuts(self.height, rows)])
        strips = _cuts(width, -(-width // pool.workers))  # one strip of columns per worker
        pool.run(shrink_height, [(0, left, self.height, right) for left, right in strips])
        return out

    def _unit(self, pixels: torch.Tensor) -> torch.Tensor:
        unit = to_unit(pixels, self.dtype, self.device)
        return unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit


def _shrink(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling to ``size``; a plain (about twice as fast) average pooling where the sizes divide."""
    (height, width), (out_height, out_width) = image.shape[-2:], size
    if height % out_height == 0 and width % out_width == 0:
        return F.avg_pool2d(image, (height // out_height, width // out_width))
    return F.adaptive_avg_pool2d(image, size)


class TileWriter:
    """Collects result tiles ``(B, 3, h, w)`` in [0, 1] into an output of the source's kind, shape and dtype.

    Tensors: same shape, dtype and device as the source. Numpy pictures: same shape and dtype; grey pictures get
    the tiles' BT.601 luma.
    """

    def __init__(self, source: torch.Tensor | np.ndarray) -> None:
        self.grey = isinstance(source, np.ndarray) and (source.ndim == 2 or source.shape[2] == 1)
        self.result: torch.Tensor | np.ndarray
        if isinstance(source, np.ndarray):
            self.result = np.empty(source.shape, dtype=source.dtype)
            self._target = _torch_view(self.result)
            self._dtype = torch.uint16 if source.dtype == np.uint16 else self._target.dtype
        elif source.device.type == "cpu" and source.is_contiguous() and source.dtype in (torch.float32, torch.float64):
            # numpy asks the OS for huge pages for large arrays (torch does not, by default): far fewer page
            # faults when the fresh result is first written (docs/PERFORMANCE.md)
            dtype = np.float32 if source.dtype == torch.float32 else np.float64
            self.result = torch.from_numpy(np.empty(tuple(source.shape), dtype=dtype))
            self._target = self.result
            self._dtype = source.dtype
        else:
            self.result = torch.empty_like(source)
            self._target = self.result
            self._dtype = source.dtype
        self._array = None if self.grey else _array_view(self.result, self._target)

    def pixels(self, region: Region) -> np.ndarray | None:
        """Where the result of ``region`` goes, as a numpy view ``(B, 3, h, w)`` of the output's own pixels (any
        strides, its dtype), for kernels that convert as they write; ``None`` for grey outputs (they get luma)
        and tensors off the CPU."""
        top, left, bottom, right = region
        return None if self._array is None else self._array[..., top:bottom, left:right]

    def write(self, top: int, left: int, tile: torch.Tensor) -> None:
        """Put ``tile`` ``(B, 3, h, w)`` in [0, 1] at ``(top, left)``."""
        if self.grey:
            tile = luminance(tile.float())
        values = from_unit(tile, self._dtype) if self._dtype != tile.dtype else tile
        height, width = tile.shape[-2:]
        self._target[..., top : top + height, left : left + width] = values.to(self._target.device)
