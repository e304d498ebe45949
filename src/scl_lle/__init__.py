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
    "BatchResult": "apps.batch",
    "enhance": "apps.batch",
    "ImageReadError": "io.image",
    "ImageWriteError": "io.image",
    "read_image": "io.image",
    "write_image": "io.image",
    "Enhancer": "engine.enhancer",
    "DCENet": "models.dcenet",
    "apply_curves": "core.curves",
    "WeightsError": "models.hub",
    "list_pretrained": "models.hub",
    "load_dcenet": "models.hub",
    "save_weights": "models.hub",
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
    from .apps.batch import BatchResult, enhance
    from .core.curves import apply_curves
    from .engine.enhancer import Enhancer
    from .io.image import ImageReadError, ImageWriteError, read_image, write_image
    from .models.dcenet import DCENet
    from .models.hub import WeightsError, list_pretrained, load_dcenet, save_weights


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scl_lle' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
