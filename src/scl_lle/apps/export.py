"""``scl-lle export``: DCE-Net written as an ONNX file.

The graph is built by :func:`scl_lle.models.onnx.build_onnx` (its module docstring describes the two variants:
the network alone, which ``Enhancer(backend="onnxruntime")`` runs, and ``with_curves=True``, the network and
its curves for use outside scl-lle). ONNX Runtime sessions are made by
:func:`scl_lle.engine.backends.onnxruntime_session`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._renamed import UNSET, renamed
from ..defaults import DEFAULT_OPSET
from ..io.files import atomic_write
from ..models.dcenet import DCENet
from ..models.onnx import build_onnx

__all__ = ["export_onnx"]


def export_onnx(
    weights: str | os.PathLike[str] | DCENet | None,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    with_curves: bool = False,
    include_curves: bool = UNSET,
) -> Path:
    """Write DCE-Net as ONNX to ``path`` (atomically) and return the path.

    Args:
        weights: as for :class:`~scl_lle.engine.enhancer.Enhancer` (a weights file, a pretrained name, a DCENet).
        path: the ``.onnx`` file to write (replaced if it exists).
        opset: ONNX opset, :data:`~scl_lle.defaults.MIN_OPSET` up to what the installed ``onnx`` knows
            (default :data:`~scl_lle.defaults.DEFAULT_OPSET`).
        with_curves: export network + curves (output ``enhanced``) instead of the network alone (output
            ``curve_maps``, which ``Enhancer(backend="onnxruntime")`` needs) (``--with-curves``).
        include_curves: the old name of ``with_curves`` (deprecated).
    """
    with_curves = renamed("export_onnx", "include_curves", "with_curves", include_curves, with_curves)
    proto = build_onnx(weights, opset=opset, with_curves=with_curves)
    final = Path(path)
    with atomic_write(final) as temporary:
        temporary.write_bytes(proto.SerializeToString())
    return final
