"""Training data pipeline: labelled layouts, aligned crops, darkening model, deterministic batches, config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle.io.files import image_files
from scl_lle.train.config import expand_path
from scl_lle.train.data import TrainingBatch, build_batches
from scl_lle.train.datasets import camvid_pairs, cityscapes_pairs, folder_pairs, labelled_pairs
from scl_lle.train.pools import ImagePool, LabelledPool
from scl_lle.train.synthesis import LowLightSynthesis, darken, poisson_gaussian_noise

RNG = np.random.default_rng(3)
H, W = 30, 40  # test images: height, width


def _coded(h: int = H, w: int = W, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red / green channels are the column / row (plus ``offset``) and a label that is a
    function of them, so alignment can be checked after any crop and flip."""
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([cols + offset, rows + offset, np.full_like(rows, 128)], axis=-1).astype(np.uint8)
    return image, _label_of(image[..., 0].astype(np.int64), image[..., 1].astype(np.int64)).astype(np.uint8)


def _label_of(red: np.ndarray | torch.Tensor, green: np.ndarray | torch.Tensor):
    return (red + 3 * green) % 11


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _camvid(root: Path, n: int = 3, split: str = "train") -> Path:
    for i in range(n):
        image, label = _coded(offset=i)
        _save(root / split / f"f{i:03d}.png", image)
        _save(root / f"{split}annot" / f"f{i:03d}.png", label)
    return root


def _folder(path: Path, means: list[int], size: tuple[int, int] = (H, W), ext: str = "png") -> Path:
    for i, mean in enumerate(means):
        noise = RNG.integers(-5, 6, (*size, 3))
        _save(path / f"{i:03d}.{ext}", np.clip(mean + noise, 0, 255).astype(np.uint8))
    return path


# --------------------------------------------------------------------------------------------- layouts


def test_camvid_pairs(tmp_path: Path):
    pairs = camvid_pairs(_camvid(tmp_path, 3), "train")
    assert [(p.parent.name, q.parent.name, p.name == q.name) for p, q in pairs] == [("train", "trainannot", True)] * 3
    assert pairs == labelled_pairs("camvid", root=tmp_path, split="train")


def test_camvid_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="train"):
        camvid_pairs(tmp_path, "train")
    _camvid(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="testannot"):
        _save(tmp_path / "test" / "a.png", _coded()[0])
        camvid_pairs(tmp_path, "test")
    _save(tmp_path / "train" / "lonely.png", _coded()[0])
    with pytest.raises(ValueError, match=r"1 images without a partner .*lonely\.png"):
        camvid_pairs(tmp_path, "train")
    (tmp_path / "train" / "lonely.png").unlink()
    _save(tmp_path / "trainannot" / "orphan.png", _coded()[1])
    with pytest.raises(ValueError, match=r"labels without a partner .*orphan\.png"):
        camvid_pairs(tmp_path, "train")


def test_cityscapes_pairs_and_void(tmp_path: Path):
    for city, frame in [("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")]:
        image, label = _coded()
        label[0, :] = 255
        _save(tmp_path / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png", image)
        _save(tmp_path / "gtFine" / "train" / city / f"{frame}_gtFine_labelTrainIds.png", label)
        _save(tmp_path / "gtFine" / "train" / city / f"{frame}_gtFine_labelIds.png", label)  # ignored
    pairs = cityscapes_pairs(tmp_path, "train")
    assert [p.name for p, _ in pairs] == ["aachen_000000_000019_leftImg8bit.png", "bonn_000001_000019_leftImg8bit.png"]
    assert all(q.name.endswith("_gtFine_labelTrainIds.png") for _, q in pairs)
    pool = LabelledPool.from_pairs(pairs, void_index=19, source_void=255)
    assert (pool.labels[0][0] == 19).all() and int(pool.labels[0][1:].max()) <= 10
    (tmp_path / "gtFine" / "train" / "bonn" / "bonn_000001_000019_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(ValueError, match="bonn/bonn_000001_000019"):
        cityscapes_pairs(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val"):
        cityscapes_pairs(tmp_path, "val")


def test_folder_pairs(tmp_path: Path):
    image, label = _coded()
    _save(tmp_path / "img" / "a.jpg", image)
    _save(tmp_path / "img" / "b.png", image)
    _save(tmp_path / "lab" / "a.png", label)
    _save(tmp_path / "lab" / "b.png", label)
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    pairs = folder_pairs(tmp_path / "img", tmp_path / "lab")
    assert [(p.name, q.name) for p, q in pairs] == [("a.jpg", "a.png"), ("b.png", "b.png")]
    _save(tmp_path / "lab" / "c.png", label)
    with pytest.raises(ValueError, match=r"labels without a partner .*c\.png"):
        folder_pairs(tmp_path / "img", tmp_path / "lab")
    _save(tmp_path / "img" / "c.png", image)
    _save(tmp_path / "img" / "c.jpg", image)
    with pytest.raises(ValueError, match="stem 'c'"):
        folder_pairs(tmp_path / "img", tmp_path / "lab")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        folder_pairs(tmp_path / "nowhere", tmp_path / "lab")
    with pytest.raises(ValueError, match="unknown labelled layout"):
        labelled_pairs("voc", root=tmp_path)


def test_size_mismatch_names_both_files(tmp_path: Path):
    _save(tmp_path / "train" / "a.png", _coded()[0])
    _save(tmp_path / "trainannot" / "a.png", _coded(h=H + 2)[1])
    with pytest.raises(ValueError, match=r"size mismatch: image .*train/a\.png.* label .*trainannot/a\.png"):
        LabelledPool.from_pairs(camvid_pairs(tmp_path), void_index=11)


def test_rgb_label_is_refused(tmp_path: Path):
    _save(tmp_path / "train" / "a.png", _coded()[0])
    _save(tmp_path / "trainannot" / "a.png", _coded()[0])
    with pytest.raises(ValueError, match="single-channel"):
        LabelledPool.from_pairs(camvid_pairs(tmp_path), void_index=11)


# --------------------------------------------------------------------------------------------- pools


def test_crops_keep_image_and_label_aligned(tmp_path: Path):
    pool = LabelledPool.from_pairs(camvid_pairs(_camvid(tmp_path, 3)), void_index=11)
    generator = torch.Generator().manual_seed(0)
    flips = 0
    for _ in range(10):
        images, labels = pool.sample(5, 16, generator)
        assert images.shape == (5, 3, 16, 16) and images.dtype == torch.float32
        assert labels.shape == (5, 16, 16) and labels.dtype == torch.int64
        assert images.min() >= 0 and images.max() <= 1
        pixels = (images * 255).round().long()
        assert torch.equal(labels, _label_of(pixels[:, 0], pixels[:, 1]))
        step = pixels[:, 0, :, 1:] - pixels[:, 0, :, :-1]  # red = column: +1 (as stored) or -1 (flipped)
        assert bool(((step == 1).all(dim=(1, 2)) | (step == -1).all(dim=(1, 2))).all())
        flips += int((step == -1).all(dim=(1, 2)).sum())
        assert bool((pixels[:, 1, 1:] - pixels[:, 1, :-1] == 1).all())  # rows never flipped
    assert 10 < flips < 40  # about half of 50


def test_small_images_are_upsized_labels_stay_nearest(tmp_path: Path):
    pool = LabelledPool.from_pairs(camvid_pairs(_camvid(tmp_path, 2)), void_index=11)
    images, labels = pool.sample(4, 48, torch.Generator().manual_seed(1))  # larger than 30x40: upsized on the fly
    assert images.shape == (4, 3, 48, 48) and labels.shape == (4, 48, 48)
    assert set(labels.unique().tolist()) <= set(range(11))
    loaded = LabelledPool.from_pairs(camvid_pairs(tmp_path), void_index=11, min_side=48)
    assert tuple(loaded.images[0].shape) == (3, 48, 64) and tuple(loaded.labels[0].shape) == (48, 64)
    assert torch.equal(loaded.sample(4, 48, torch.Generator().manual_seed(1))[1], labels)


def test_image_pool_without_replacement_and_sources(tmp_path: Path):
    means = [10, 60, 110, 160, 210]
    folder = _folder(tmp_path / "pool", means)
    (tmp_path / "pool" / "readme.md").write_text("x")
    assert [p.name for p in image_files(folder)] == [f"{i:03d}.png" for i in range(5)]
    pool = ImagePool.from_files([folder])
    assert len(pool) == 5 and pool.images[0].dtype == torch.uint8
    for seed in range(5):
        crops = pool.sample(5, 8, torch.Generator().manual_seed(seed))
        got = sorted(round(float(c.mean()) * 255 / 50) for c in crops)
        assert got == [round(m / 50) for m in means]  # every image once
    assert pool.sample(12, 8, torch.Generator().manual_seed(0)).shape == (12, 3, 8, 8)  # with replacement
    assert len(ImagePool.from_files([folder], max_images=2)) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        ImagePool.from_files([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no image files"):
        ImagePool.from_files([tmp_path / "pool" / ".."])


# --------------------------------------------------------------------------------------------- darkening


def test_darken_scales_brightness_as_documented():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    for k in (0.03, 0.1, 0.3):
        ratio = float(darken(images, k).mean() / images.mean())
        assert ratio == pytest.approx(k ** (1 / 2.2), rel=1e-4)
    means = [float(darken(images, k).mean()) for k in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert means == sorted(means) and means[-1] == pytest.approx(float(images.mean()), rel=1e-5)
    darker = darken(images, 0.1, gamma=1.3)
    assert torch.allclose(darker, darken(images, 0.1) ** 1.3, atol=1e-6)
    assert float(darker.mean()) < float(darken(images, 0.1).mean())
    per_image = darken(images, torch.tensor([0.03, 0.1, 0.3, 1.0]))
    assert torch.allclose(per_image[1], darken(images[1:2], 0.1)[0], atol=1e-6)
    noisy = darken(images, 0.1, noise=(0.0, 0.0))
    assert torch.allclose(noisy, darken(images, 0.1), atol=1e-6)


def test_noise_has_requested_variance():
    x = torch.full((8, 3, 64, 64), 0.2)
    generator = torch.Generator().manual_seed(0)
    for shot, read in [(0.01, 0.0), (0.0, 0.05), (0.004, 0.03)]:
        z = poisson_gaussian_noise(x, shot, read, generator)
        assert float(z.mean()) == pytest.approx(0.2, abs=2e-3)
        assert float(z.var()) == pytest.approx(shot * 0.2 + read**2, rel=0.05)
    per_image = poisson_gaussian_noise(x[:2], torch.tensor([0.0, 0.01]), torch.tensor([0.0, 0.0]), generator)
    assert torch.equal(per_image[0], x[0]) and float(per_image[1].var()) == pytest.approx(0.002, rel=0.1)
    # through darken: constant grey 0.5 at k = 0.5 is linear 0.109; sRGB-side std by the delta method
    grey = torch.full((4, 3, 64, 64), 0.5)
    out = darken(grey, 0.5, noise=(0.0, 0.005), generator=generator)
    linear = 0.5 * 0.5**2.2
    slope = linear ** (1 / 2.2 - 1) / 2.2
    assert float(out.std()) == pytest.approx(0.005 * slope, rel=0.05)


def test_synthesis_draws_in_range_and_is_seeded():
    synthesis = LowLightSynthesis(exposure=(0.05, 0.2), gamma=(1.0, 1.3))
    params = synthesis.draw(2000, torch.Generator().manual_seed(0))
    e = params["exposure"]
    assert float(e.min()) >= 0.05 and float(e.max()) <= 0.2
    assert float(torch.log(e).mean()) == pytest.approx((math.log(0.05) + math.log(0.2)) / 2, abs=0.02)  # log-uniform
    assert float(params["gamma"].min()) >= 1.0 and float(params["gamma"].max()) <= 1.3
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    noisy = LowLightSynthesis(shot_noise=(1e-3, 1e-2), read_noise=(0.0, 0.01))
    assert torch.equal(noisy(images, 5), noisy(images, torch.Generator().manual_seed(5)))
    assert not torch.equal(noisy(images, 5), noisy(images, 6))
    fixed = LowLightSynthesis(exposure=(0.1, 0.1), gamma=(1.2, 1.2))
    assert torch.allclose(fixed(images, 0), darken(images, 0.1, gamma=1.2), atol=1e-6)
    assert LowLightSynthesis(exposure=[0.1, 0.2], gamma=1.1).gamma == (1.1, 1.1)
    with pytest.raises(ValueError, match="exposure"):
        LowLightSynthesis(exposure=(0.0, 0.3))
    with pytest.raises(ValueError, match="read_noise"):
        LowLightSynthesis(read_noise=(0.1, 0.0))


# --------------------------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _camvid(root / "camvid", 6)
    _folder(root / "dark", [15, 20, 25])
    _folder(root / "normal", [100, 120, 140, 160])
    _folder(root / "under", [5, 10, 15], size=(20, 20), ext="jpg")  # smaller than the crop: upsized
    _folder(root / "over", [230, 240, 250])
    return root


def _config(**overrides) -> dict:
    cfg = {
        "labelled": {"layout": "camvid", "root": "camvid", "split": "train", "void_index": 11},
        "unlabelled": ["dark"],
        "unlabelled_per_batch": 2,
        "positives": ["normal"],
        "positives_per_batch": 2,
        "negatives": [{"path": "under", "per_batch": 1}, {"path": "over", "per_batch": 2}],
        "crop_size": 24,
        "synthesis": {"exposure": [0.03, 0.3], "gamma": [1.0, 1.3], "shot_noise": [0, 1e-3], "read_noise": [0, 0.01]},
        "max_images": None,
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def batches(data_root: Path):
    return build_batches(_config(), batch_size=3, device="cpu", seed=7, root=data_root)


def _equal(a: TrainingBatch, b: TrainingBatch) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in vars(a))


def test_batch_shapes_and_contents(batches):
    batch = batches.batch(0)
    assert batch.low.shape == batch.clean.shape == (5, 3, 24, 24)
    assert batch.labels.shape == (5, 24, 24) and batch.labels.dtype == torch.int64
    assert batch.labelled.dtype == torch.bool and batch.labelled.tolist() == [True] * 3 + [False] * 2
    assert batch.positives.shape == (2, 3, 24, 24) and batch.negatives.shape == (3, 3, 24, 24)
    for tensor in (batch.low, batch.clean, batch.positives, batch.negatives):
        assert tensor.dtype == torch.float32 and float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    assert (batch.labels[3:] == 11).all() and int(batch.labels[:3].max()) <= 10
    assert torch.equal(batch.low[3:], batch.clean[3:])
    assert float(batch.low[:3].mean()) < 0.75 * float(batch.clean[:3].mean())
    pixels = (batch.clean[:3] * 255).round().long()
    assert torch.equal(batch.labels[:3], _label_of(pixels[:, 0], pixels[:, 1]))
    means = batch.negatives.mean(dim=(1, 2, 3))
    assert float(means[0]) < 0.1 and bool((means[1:] > 0.85).all())  # under first, then over, as configured


def test_batches_are_a_function_of_seed_rank_step(data_root: Path, batches):
    first = [batches.batch(s) for s in range(6)]
    fresh = build_batches(_config(), batch_size=3, device="cpu", seed=7, root=data_root)
    assert _equal(fresh.batch(5), first[5])  # resume at step 5 without replaying 0..4
    assert _equal(batches.batch(2), first[2])
    assert not torch.equal(first[0].low, first[1].low)
    assert not torch.equal(first[0].positives, first[1].positives)
    other_rank = build_batches(_config(), batch_size=3, device="cpu", seed=7, rank=1, root=data_root)
    other_seed = build_batches(_config(), batch_size=3, device="cpu", seed=8, root=data_root)
    assert not torch.equal(other_rank.batch(0).low, first[0].low)
    assert not torch.equal(other_seed.batch(0).low, first[0].low)
    with pytest.raises(ValueError, match="step"):
        batches.batch(-1)


def test_config_paths_and_errors(data_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SCL_LLE_TEST_DATA", str(data_root))
    cfg = _config(positives=["${SCL_LLE_TEST_DATA}/normal"], unlabelled=None, unlabelled_per_batch=0, max_images=2)
    cfg["labelled"] = {"layout": "folders", "images": "$SCL_LLE_TEST_DATA/camvid/train", "labels": "camvid/trainannot"}
    built = build_batches(cfg, batch_size=2, device="cpu", seed=0, root=data_root)
    assert len(built.labelled) == 2 and len(built.positives) == 2 and built.unlabelled is None
    assert built.labelled.void_index == 255 and built.batch(0).low.shape == (2, 3, 24, 24)

    monkeypatch.delenv("SCL_LLE_TEST_UNSET", raising=False)
    with pytest.raises(ValueError, match=r"environment variable SCL_LLE_TEST_UNSET used in positives\[0\]"):
        cfg = _config(positives=["${SCL_LLE_TEST_UNSET}/normal"])
        build_batches(cfg, batch_size=2, device="cpu", seed=0, root=data_root)
    with pytest.raises(ValueError, match="SCL_LLE_TEST_UNSET"):
        expand_path("$SCL_LLE_TEST_UNSET/x")
    assert expand_path("a/b", root=Path("/r")) == Path("/r/a/b")
    assert expand_path("a") == Path("a")  # relative to the working folder
    with pytest.raises(ValueError, match="unknown data config keys: crop"):
        build_batches({**_config(), "crop": 3}, batch_size=2, device="cpu", seed=0, root=data_root)
    with pytest.raises(ValueError, match="labelled"):
        build_batches(_config(labelled=None), batch_size=2, device="cpu", seed=0, root=data_root)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_batches(_config(positives=["nowhere"]), batch_size=2, device="cpu", seed=0, root=data_root)


# --------------------------------------------------------------------------------------------- real data


def test_documented_config_on_shared_data(shared: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    data = "${SCL_LLE_SHARED}/data"
    cfg = {
        "labelled": {
            "layout": "camvid",
            "root": f"{data}/seg_CamVid_SegNet_subset",
            "split": "train",
            "void_index": 11,
        },
        "unlabelled": None,
        "unlabelled_per_batch": 0,
        "positives": [f"{data}/train_exposure_SICE_ZeroDCEpp/positive_normal"],
        "positives_per_batch": 2,
        "negatives": [
            {"path": f"{data}/train_exposure_SICE_ZeroDCEpp/negative_under", "per_batch": 1},
            {"path": f"{data}/train_exposure_SICE_ZeroDCEpp/negative_over", "per_batch": 1},
        ],
        "crop_size": 256,
        "synthesis": {"exposure": [0.03, 0.3], "gamma": [1.0, 1.3], "shot_noise": [0, 0], "read_noise": [0, 0]},
        "max_images": 3,
    }
    batch = build_batches(cfg, batch_size=2, device="cpu", seed=0).batch(0)
    assert batch.low.shape == (2, 3, 256, 256) and batch.labels.shape == (2, 256, 256)
    assert int(batch.labels.min()) >= 0 and int(batch.labels.max()) <= 11
    assert batch.positives.shape == (2, 3, 256, 256) and batch.negatives.shape == (2, 3, 256, 256)
    under, over = batch.negatives.mean(dim=(1, 2, 3)).tolist()
    assert under < 0.3 < 0.6 < over
