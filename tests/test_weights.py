"""Weights: safetensors round trip with metadata, foreign .pth files, clear errors, hostile pickles refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from scl_lle import DCENet, Enhancer, WeightsError, load_dcenet, save_weights
from scl_lle.models.hub import load_state_dict, read_metadata, resolve_weights


def test_safetensors_round_trip_with_metadata(tmp_path: Path):
    torch.manual_seed(3)
    model = DCENet()
    path = save_weights(model, tmp_path / "m.safetensors", config={"lr": 1e-4, "name": "test"})
    meta = read_metadata(path)
    assert meta["format"] == "scl-lle" and meta["architecture"] == "dce-net"
    assert meta["channels"] == "32" and meta["iterations"] == "8"
    assert json.loads(meta["config"]) == {"lr": 1e-4, "name": "test"}
    loaded = load_dcenet(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_pth_variants_load(tmp_path: Path):
    model = DCENet()
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        loaded = load_dcenet(path)
        assert torch.equal(loaded.e_conv7.weight, model.e_conv7.weight)


def test_wrong_keys_and_shapes_name_the_file(tmp_path: Path):
    state = DCENet().state_dict()
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("e_conv3")}, missing)
    with pytest.raises(WeightsError, match=r"missing\.pth.*e_conv3"):
        load_dcenet(missing)
    shapes = tmp_path / "shapes.pth"
    bad = dict(state)
    bad["e_conv5.weight"] = torch.zeros(32, 32, 3, 3)
    torch.save(bad, shapes)
    with pytest.raises(WeightsError, match=r"shapes\.pth.*e_conv5\.weight"):
        load_dcenet(shapes)
    ints = tmp_path / "ints.pth"
    torch.save({k: v.to(torch.int32) for k, v in state.items()}, ints)
    with pytest.raises(WeightsError, match="floating point"):
        load_dcenet(ints)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"junk\.pth"):
        load_dcenet(junk)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_dcenet(tmp_path / "absent.safetensors")


class _Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_hostile_pickle_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "executed"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"e_conv1.weight": exploit}, handle)
    torch_saved = tmp_path / "evil_torch.pth"
    torch.save({"payload": exploit}, torch_saved)
    marker.unlink(missing_ok=True)
    for candidate in (path, torch_saved):
        with pytest.raises(WeightsError, match="refused"):
            load_state_dict(candidate)
    assert not marker.exists()


def test_missing_packaged_weights_explain_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import scl_lle.models.hub as W

    monkeypatch.setattr(W, "_packaged", lambda filename: tmp_path / filename)
    assert W.list_pretrained() == []
    with pytest.raises(WeightsError, match="--weights"):
        resolve_weights(None)
    with pytest.raises(WeightsError, match="--weights"):
        Enhancer(device="cpu")


def test_the_default_model_ships_and_brightens_dark_photos():
    """The embedded model: under 1 MB, safetensors with its training config, loaded with no argument."""
    path = resolve_weights(None)
    assert path.suffix == ".safetensors" and path.stat().st_size < 1_000_000
    meta = read_metadata(path)
    assert json.loads(meta["config"])["name"]
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=generator), size=(96, 128))
    dark = (smooth * 0.12).clamp(0, 1)  # mean about 0.06, like LOL eval15 low
    out = Enhancer(device="cpu")(dark)
    assert 0.25 < out.mean().item() < 0.7
    assert out.min() >= 0 and out.max() <= 1
