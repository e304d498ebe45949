"""scl-lle: low-light image enhancement with Semantically Contrastive Learning (SCL-LLE).

Public API::

    from scl_lle import Enhancer, enhance
    enhancer = Enhancer(weights="model.safetensors")   # or weights=None for the embedded default
    brighter = enhancer(images)                         # (B, 3, H, W) float in [0, 1]
    enhance(["photos/"], "out/", weights="model.safetensors", recursive=True)   # = scl-lle enhance
"""

__version__ = "0.1.0"

from .batch import BatchResult, enhance
from .imageio import ImageReadError, ImageWriteError, read_image, write_image
from .inference import Enhancer
from .model import DCENet, apply_curves
from .weights import WeightsError, list_pretrained, load_dcenet, save_weights

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
