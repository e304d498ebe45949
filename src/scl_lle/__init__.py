"""scl-lle: low-light image enhancement with Semantically Contrastive Learning (SCL-LLE).

Public API::

    from scl_lle import Enhancer, enhance
    enhancer = Enhancer(weights="model.safetensors")   # or weights=None for the embedded default
    brighter = enhancer(images)                         # (B, 3, H, W) float in [0, 1]
    enhance(["photos/"], "out/", weights="model.safetensors", recursive=True)   # = scl-lle enhance

The names are imported on first use (PEP 562), so ``import scl_lle`` and the command line start without loading
PyTorch until they need it (``scl-lle --version``, ``--help``, and a Ctrl-C in the first second stay quick).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "BatchResult": "batch",
    "enhance": "batch",
    "ImageReadError": "imageio",
    "ImageWriteError": "imageio",
    "read_image": "imageio",
    "write_image": "imageio",
    "Enhancer": "inference",
    "DCENet": "model",
    "apply_curves": "model",
    "WeightsError": "weights",
    "list_pretrained": "weights",
    "load_dcenet": "weights",
    "save_weights": "weights",
}

__all__ = [
    "BatchResult",
    "DCENet",
    "Enhancer",
    "ImageReadError",
    "ImageWriteError",
    "WeightsError",
    "__version__",
    "apply_curves",
    "enhance",
    "list_pretrained",
    "load_dcenet",
    "read_image",
    "save_weights",
    "write_image",
]

if TYPE_CHECKING:
    from .batch import BatchResult, enhance
    from .imageio import ImageReadError, ImageWriteError, read_image, write_image
    from .inference import Enhancer
    from .model import DCENet, apply_curves
    from .weights import WeightsError, list_pretrained, load_dcenet, save_weights


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scl_lle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
