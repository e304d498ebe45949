"""Shared fixtures. Tests that need ``../shared`` (data sets, weights, reference values) use ``shared``
and are skipped with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path | None:
    env = os.environ.get("SCL_LLE_SHARED")
    candidate = Path(env) if env else REPO.parent / "shared"
    return candidate.resolve() if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared data folder (``$SCL_LLE_SHARED`` or ``../shared`` beside the repository)."""
    path = _find_shared()
    if path is None:
        pytest.skip("../shared is absent (set SCL_LLE_SHARED to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, randomly initialised DCE-Net saved in the project's safetensors format."""
    import torch

    from scl_lle import DCENet, save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random.safetensors"
    return save_weights(DCENet(), path, metadata={"note": "random test weights"})


@pytest.fixture(scope="session")
def official_weights(shared: Path) -> Path:
    """The authors' released SCL-LLE enhancer (``../shared/weights/upstream``)."""
    return shared / "weights" / "upstream" / "scl-lle_official.pth"
