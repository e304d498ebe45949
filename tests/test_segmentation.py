"""ESPNet segmentation: architecture, wrapper, loading, and agreement with the authors' label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scl_lle.models.espnet import ESPNet
from scl_lle.models.segmenter import SEGMENTERS, Segmenter, SegmenterWeightsError, load_segmenter

SEG_DIR = Path("weights") / "segmentation"
CAMVID_TEST = Path("data") / "seg_CamVid_SegNet_subset" / "test"
MIN_AGREEMENT = 0.995


def _random_segmenter(name: str, seed: int = 0) -> Segmenter:
    torch.manual_seed(seed)
    spec = SEGMENTERS[name]
    return Segmenter(spec.build(), spec)


def _read_rgb(path: Path) -> torch.Tensor:
    """PNG -> RGB float tensor (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def _read_labels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# Fast unit tests (no shared data)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_espnet_output_shape(name: str) -> None:
    spec = SEGMENTERS[name]
    net = spec.build().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, spec.num_classes, 32, 48)
    assert torch.isfinite(out).all()


def test_espnet_state_dict_has_no_num_batches_tracked() -> None:
    keys = ESPNet(20, decoder_level1_channels=16).state_dict().keys()
    assert not [k for k in keys if k.endswith("num_batches_tracked")]
    assert len(keys) == 189


@pytest.mark.parametrize("hw", [(30, 32), (32, 36), (4, 8)])
def test_espnet_rejects_sizes_not_multiple_of_8(hw: tuple[int, int]) -> None:
    net = ESPNet(12).eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 3, *hw))


def test_espnet_rejects_bad_decoder_channels() -> None:
    with pytest.raises(ValueError, match="16 or 19"):
        ESPNet(12, decoder_level1_channels=17)


def test_segmenter_pads_to_multiple_of_8_and_crops_back() -> None:
    seg = _random_segmenter("espnet-camvid")
    rgb = torch.rand(2, 3, 30, 45)
    logits = seg(rgb)
    assert logits.shape == (2, 12, 30, 45)
    labels = seg.predict(rgb)
    assert labels.shape == (2, 30, 45)
    assert labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < 12


def test_segmenter_normalisation_matches_authors_convention() -> None:
    seg = _random_segmenter("espnet-cityscapes")
    rgb = torch.rand(1, 3, 8, 8)
    spec = seg.spec
    bgr255 = rgb.flip(1) * 255.0
    mean = torch.tensor(spec.mean_bgr).view(1, 3, 1, 1)
    std = torch.tensor(spec.std_bgr).view(1, 3, 1, 1)
    expected = (bgr255 - mean) / std / 255.0
    torch.testing.assert_close(seg.normalize(rgb), expected, rtol=1e-5, atol=1e-6)


def test_segmenter_is_frozen_and_stays_in_eval_mode() -> None:
    seg = _random_segmenter("espnet-camvid")
    assert all(not p.requires_grad for p in seg.parameters())
    seg.train()
    assert not seg.net.training
    assert all(not m.training for m in seg.net.modules())


def test_gradients_flow_to_input_image() -> None:
    seg = _random_segmenter("espnet-cityscapes", seed=1)
    seg.train()  # a parent module in training mode must not switch BatchNorm to batch statistics
    rgb = torch.rand(2, 3, 64, 64, requires_grad=True)
    logits = seg(rgb)
    target = torch.randint(0, seg.num_classes, (2, 64, 64))
    loss = F.cross_entropy(logits, target, ignore_index=seg.spec.void_index)
    loss.backward()
    assert rgb.grad is not None
    assert torch.isfinite(rgb.grad).all()
    assert rgb.grad.abs().sum() > 0
    assert (rgb.grad.abs().flatten(1).sum(1) > 0).all()  # every image in the batch gets gradient
    assert all(p.grad is None for p in seg.parameters())


def test_gradients_flow_through_padding() -> None:
    seg = _random_segmenter("espnet-camvid", seed=2)
    rgb = torch.rand(1, 3, 29, 37, requires_grad=True)
    seg(rgb).logsumexp(1).mean().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0


def test_load_segmenter_wrong_keys_names_the_file(tmp_path: Path) -> None:
    # a CamVid-layout file loaded as the Cityscapes model: every class-dependent shape differs
    path = tmp_path / "not_cityscapes.pth"
    torch.save(SEGMENTERS["espnet-camvid"].build().state_dict(), path)
    with pytest.raises(SegmenterWeightsError) as info:
        load_segmenter("espnet-cityscapes", path)
    msg = str(info.value)
    assert str(path) in msg
    assert "shape mismatches" in msg
    assert "encoder.classifier.conv.weight: file (12, 256, 1, 1) vs model (20, 256, 1, 1)" in msg


def test_load_segmenter_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = SEGMENTERS["espnet-camvid"].build().state_dict()
    state.pop("classifier.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(SegmenterWeightsError, match="missing keys") as info:
        load_segmenter("espnet-camvid", path)
    assert "classifier.weight" in str(info.value) and "extra.weight" in str(info.value)


def test_load_segmenter_missing_file_and_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_segmenter("espnet-camvid", path)
    with pytest.raises(KeyError, match="espnet-cityscapes"):
        load_segmenter("deeplab", path)


def test_load_segmenter_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = SEGMENTERS["espnet-camvid"].build()
    path = tmp_path / "w.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)  # DataParallel-style
    seg = load_segmenter("espnet-camvid", str(path))
    assert isinstance(seg, Segmenter)
    assert not seg.training and all(not p.requires_grad for p in seg.parameters())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(seg.net.state_dict()[k], v)


# ---------------------------------------------------------------------------------------------------
# Against the shared weights and the authors' reference label maps
# ---------------------------------------------------------------------------------------------------

_VARIANT_FILES = {"espnet-cityscapes": "cityscapes", "espnet-camvid": "camvid"}


def _weights(shared: Path, name: str) -> Path:
    path = shared / SEG_DIR / SEGMENTERS[name].weights_filename
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def cityscapes(shared: Path) -> Segmenter:
    return load_segmenter("espnet-cityscapes", _weights(shared, "espnet-cityscapes"))


@pytest.fixture(scope="module")
def camvid(shared: Path) -> Segmenter:
    return load_segmenter("espnet-camvid", _weights(shared, "espnet-camvid"))


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_state_dict_matches_key_listing(shared: Path, name: str) -> None:
    listing = shared / SEG_DIR / f"espnet_p2_q8_{_VARIANT_FILES[name]}.keys.tsv"
    if not listing.is_file():
        pytest.skip(f"{listing} is absent")
    rows = [line.split("\t") for line in listing.read_text().splitlines()[1:] if line.strip()]
    expected = {key: tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()) for key, shape, _ in rows}
    state = SEGMENTERS[name].build().state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_weights_load_strictly_into_plain_espnet(shared: Path, name: str) -> None:
    spec = SEGMENTERS[name]
    net = ESPNet(spec.num_classes, decoder_level1_channels=spec.decoder_level1_channels)
    net.load_state_dict(torch.load(_weights(shared, name), weights_only=True, map_location="cpu"))


@pytest.mark.parametrize("frame", ["frankfurt_000000_000294", "frankfurt_000000_000576"])
def test_cityscapes_reproduces_reference(shared: Path, cityscapes: Segmenter, frame: str) -> None:
    ref_dir = shared / SEG_DIR / "reference"
    image = ref_dir / f"{frame}_leftImg8bit.png"
    reference = ref_dir / f"{frame}_leftImg8bit_espnet_cityscapes_labels.png"
    if not (image.is_file() and reference.is_file()):
        pytest.skip(f"{image} or {reference} is absent")
    # the authors' pipeline: normalise at full size, then bilinear resize to 1024x512
    x = cityscapes.normalize(_read_rgb(image))
    x = F.interpolate(x, size=SEGMENTERS["espnet-cityscapes"].native_hw, mode="bilinear", align_corners=False)
    with torch.no_grad():
        labels = cityscapes.net(x).argmax(1)[0].numpy()
    ref = _read_labels(reference)
    assert labels.shape == ref.shape == (512, 1024)
    agreement = float((labels == ref).mean())
    assert agreement >= MIN_AGREEMENT, f"{frame}: {agreement:.4%} pixel agreement"


@pytest.mark.parametrize("frame", ["0001TP_008550", "Seq05VD_f00270"])
def test_camvid_reproduces_reference(shared: Path, camvid: Segmenter, frame: str) -> None:
    image = shared / CAMVID_TEST / f"{frame}.png"
    reference = shared / SEG_DIR / "reference" / f"camvid_{frame}_espnet_camvid_labels.png"
    if not (image.is_file() and reference.is_file()):
        pytest.skip(f"{image} or {reference} is absent")
    rgb = _read_rgb(image)
    assert tuple(rgb.shape[-2:]) == SEGMENTERS["espnet-camvid"].native_hw
    labels = camvid.predict(rgb)[0].numpy()
    ref = _read_labels(reference)
    agreement = float((labels == ref).mean())
    assert agreement >= MIN_AGREEMENT, f"{frame}: {agreement:.4%} pixel agreement"
