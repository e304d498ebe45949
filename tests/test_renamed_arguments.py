"""Arguments renamed to match their CLI flags still work under their old names for one release, with a warning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scl_lle import Enhancer
from scl_lle._renamed import UNSET, renamed


def test_renamed_passes_the_new_value_when_the_old_name_is_unused() -> None:
    assert renamed("f", "old", "new", UNSET, 3) == 3


def test_enhancer_tile_size_is_the_old_name_of_tile(weights_file: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"Enhancer\(tile_size=...\) is now Enhancer\(tile=...\)"):
        old = Enhancer(weights_file, device="cpu", tile_size=24, exposure="off")
    assert old.tile == 24
    x = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    new = Enhancer(weights_file, device="cpu", tile=24, exposure="off")
    assert torch.equal(old(x), new(x))


def test_export_include_curves_is_the_old_name_of_with_curves(weights_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from scl_lle.apps.export import export_onnx

    with pytest.warns(DeprecationWarning, match="with_curves"):
        old = export_onnx(weights_file, tmp_path / "old.onnx", include_curves=True)
    new = export_onnx(weights_file, tmp_path / "new.onnx", with_curves=True)
    assert old.read_bytes() == new.read_bytes()


def test_enhance_video_old_names_warn_and_are_used(tmp_path: Path) -> None:
    """The old names reach the same checks as the new ones (a bad value is refused under either name)."""
    pytest.importorskip("av")
    from scl_lle.apps.video import enhance_video

    source, target = tmp_path / "in.mp4", tmp_path / "out.mp4"
    source.write_bytes(b"")
    with pytest.warns(DeprecationWarning, match="video_batch"), pytest.raises(ValueError, match="video_batch"):
        enhance_video(source, target, batch_size=0)
    with pytest.warns(DeprecationWarning, match="temporal_smoothing"), pytest.raises(ValueError, match="temporal"):
        enhance_video(source, target, smoothing=1.5)
