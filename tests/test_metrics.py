"""Tests for scl_lle.evaluation.metrics and .niqe: agreement with the pyiqa reference values in ../shared/metrics, and
values on tiny synthetic inputs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scl_lle.evaluation import metrics as M
from scl_lle.evaluation import niqe as N

NIQE_FILE = "niqe_pris_params.npz"


def _load_rgb(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1], as pyiqa reads images (PIL, alpha dropped)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def niqe_params(shared: Path) -> N.NIQEParams:
    return N.load_niqe_params(shared / "metrics" / NIQE_FILE)


@pytest.fixture
def no_niqe_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Clear every place the NIQE parameters could come from; returns the (empty) cache folder."""
    monkeypatch.delenv(N.NIQE_PARAMS_ENV, raising=False)
    monkeypatch.delenv("SCL_LLE_SHARED", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SCL_LLE_CACHE", str(cache))
    return cache


# ----------------------------------------------------------------------------------- reference agreement


def test_niqe_matches_pyiqa_reference(shared: Path, niqe_params: N.NIQEParams) -> None:
    rows = _read_tsv(shared / "metrics" / "niqe_reference.tsv")
    assert len(rows) >= 30
    worst = 0.0
    for row in rows:
        x = _load_rgb(shared / "data" / row["file"])
        ref = float(row["niqe_pyiqa"])
        got = N.niqe(x, niqe_params).item()
        rel = abs(got - ref) / ref
        worst = max(worst, rel)
        assert rel < 0.01, f"{row['file']}: niqe {got:.4f} vs pyiqa {ref:.4f} ({100 * rel:.2f}%)"
    # the implementation reproduces the reference to its printed precision; keep it that way
    assert worst < 1e-3


def test_niqe_batched_equals_single(shared: Path, niqe_params: N.NIQEParams) -> None:
    folder = shared / "data" / "eval_LOLv1_eval15_low" / "images_cut600x396_SGZ"
    x = torch.cat([_load_rgb(folder / name) for name in ("1.png", "22.png", "55.png")])
    batched = N.niqe(x, niqe_params)
    single = torch.cat([N.niqe(x[i : i + 1], niqe_params) for i in range(3)])
    assert batched.shape == (3,) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, rtol=1e-6, atol=0)
    metric = N.NIQE(niqe_params)
    metric.update(x[:2])
    metric.update(x[2:])
    assert metric.count == 3
    assert metric.compute().item() == pytest.approx(single.double().mean().item(), rel=1e-6)


def test_psnr_ssim_match_fivek_reference(shared: Path) -> None:
    root = shared / "data" / "eval_paired_FiveK_DPE_DeepLPF"
    rows = _read_tsv(shared / "metrics" / "fr_reference_FiveK.tsv")
    assert len(rows) == 9
    for row in rows:
        low, high = _load_rgb(root / row["low"]), _load_rgb(root / row["high"])
        h, w = min(low.shape[2], high.shape[2]), min(low.shape[3], high.shape[3])
        low, high = low[..., :h, :w], high[..., :h, :w]
        p = M.psnr(low, high).item()
        s = M.ssim(low, high).item()
        assert p == pytest.approx(float(row["psnr_rgb_db"]), abs=0.01), row["low"]
        assert s == pytest.approx(float(row["ssim_y_pyiqa"]), abs=0.001), row["low"]


def test_niqe_params_from_env_and_cache(
    shared: Path, no_niqe_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    src = shared / "metrics" / NIQE_FILE
    ref = N.load_niqe_params(src)
    monkeypatch.setenv(N.NIQE_PARAMS_ENV, str(src))
    torch.testing.assert_close(N.load_niqe_params().cov, ref.cov)
    monkeypatch.delenv(N.NIQE_PARAMS_ENV)
    monkeypatch.setenv("SCL_LLE_SHARED", str(shared))
    torch.testing.assert_close(N.load_niqe_params().mu, ref.mu)
    monkeypatch.delenv("SCL_LLE_SHARED")
    no_niqe_env.mkdir(parents=True)
    (no_niqe_env / NIQE_FILE).symlink_to(src)
    torch.testing.assert_close(N.load_niqe_params().window, ref.window)
    with np.load(src) as data:  # an already-loaded npz works too
        torch.testing.assert_close(N.load_niqe_params(data).mu, ref.mu)


# ------------------------------------------------------------------------------------------ synthetic cases


def test_missing_niqe_params_error(no_niqe_env: Path) -> None:
    with pytest.raises(N.NIQEParamsNotFoundError) as info:
        N.load_niqe_params()
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert str(no_niqe_env / NIQE_FILE) in msg
    assert N.NIQE_PARAMS_ENV in msg and "BasicSR" in msg and "MATLAB" in msg
    with pytest.raises(FileNotFoundError):
        N.niqe(torch.rand(1, 3, 200, 200))
    with pytest.raises(FileNotFoundError):
        N.NIQE()
    with pytest.raises(N.NIQEParamsNotFoundError, match=r"nowhere\.npz"):
        N.load_niqe_params(no_niqe_env / "nowhere.npz")


def _toy_params() -> N.NIQEParams:
    """A made-up pristine model (identity covariance) for shape/behaviour tests without the real file."""
    t = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (7 / 6) ** 2))
    return N.NIQEParams(
        mu=torch.ones(36, dtype=torch.float64), cov=torch.eye(36, dtype=torch.float64), window=g / g.sum()
    )


def test_niqe_shapes_dtypes_and_small_images() -> None:
    p = _toy_params()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 200, 300)
    v = N.niqe(x, p)
    assert v.shape == (2,) and v.dtype == torch.float32 and torch.isfinite(v).all()
    torch.testing.assert_close(N.niqe(x.double(), p), v.double(), rtol=1e-5, atol=0)
    # odd sizes are cut to whole 96x96 blocks: extra rows/columns beyond them change nothing
    torch.testing.assert_close(N.niqe(x[..., :193, :289], p), N.niqe(x[..., :192, :288], p))
    grey = N.niqe(x[:, :1], p)
    assert grey.shape == (2,) and torch.isfinite(grey).all()
    with pytest.raises(ValueError, match="96x96"):
        N.niqe(torch.rand(1, 3, 95, 400), p)


def test_matlab_imresize_half() -> None:
    # a linear ramp stays linear inside: output pixel i (1-based) samples the input at 2 i - 0.5
    ramp = torch.arange(1, 33, dtype=torch.float64).view(1, 1, 1, 32).expand(1, 1, 4, 32)
    out = N.matlab_imresize(ramp, scale=0.5)
    assert out.shape == (1, 1, 2, 16)
    expected = 2 * torch.arange(1, 17, dtype=torch.float64) - 0.5
    torch.testing.assert_close(out[0, 0, 0, 2:-2], expected[2:-2])
    const = torch.full((1, 1, 9, 7), 0.3, dtype=torch.float64)
    half = N.matlab_imresize(const, scale=0.5)
    torch.testing.assert_close(half, torch.full((1, 1, 5, 4), 0.3, dtype=torch.float64))
    assert N.matlab_imresize(const, size=(3, 3)).shape == (1, 1, 3, 3)


def test_rgb_to_y() -> None:
    x = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)  # pure green
    assert M.rgb_to_y(x).item() == round(0.587 * 255)
    assert M.rgb_to_y(torch.ones(1, 3, 2, 2)).eq(255).all()
    assert M.rgb_to_y(torch.zeros(1, 3, 2, 2)).eq(0).all()
    assert M.rgb_to_y(x, rounded=False).item() == pytest.approx(0.587 * 255, rel=1e-6)


def test_psnr_constant_offset() -> None:
    x = torch.full((2, 3, 4, 5), 0.25)
    y = x + 0.1  # MSE = 0.01 -> 20 dB
    torch.testing.assert_close(M.psnr(x, y), torch.full((2,), 20.0), rtol=0, atol=1e-4)
    assert M.psnr(x * 255, y * 255, data_range=255.0)[0].item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(M.psnr(x, x)[0].item())
    with pytest.raises(ValueError):
        M.psnr(x, y[..., :4])


def test_ssim_identical_and_different() -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 40, dtype=torch.float64)
    torch.testing.assert_close(M.ssim(x, x), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(M.ssim(x[:, :1], x[:, :1]), torch.ones(2, dtype=torch.float64))
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s = M.ssim(x, noisy)
    assert (s < 0.9).all() and (s >= 0).all()
    # constant images: SSIM reduces to the luminance term (2 a b + C1) / (a^2 + b^2 + C1) on the 0..255 luma
    a = torch.full((1, 3, 16, 16), 0.2, dtype=torch.float64)
    b = torch.full((1, 3, 16, 16), 0.6, dtype=torch.float64)
    ya, yb, c1 = round(0.2 * 255), round(0.6 * 255), (0.01 * 255) ** 2
    assert M.ssim(a, b).item() == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), rel=1e-5)


def test_colourfulness() -> None:
    grey = torch.rand(3, 1, 8, 8).expand(3, 3, 8, 8)
    torch.testing.assert_close(M.colourfulness(grey), torch.zeros(3))
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0  # rg = 255, yb = 127.5, no spread
    assert M.colourfulness(red).item() == pytest.approx(0.3 * 255 * math.sqrt(1.25), rel=1e-6)
    half = torch.zeros(1, 3, 2, 2)  # red and green halves: rg = +-255 (std 255, mean 0), yb = 127.5
    half[:, 0, :, 0] = 1.0
    half[:, 1, :, 1] = 1.0
    assert M.colourfulness(half).item() == pytest.approx(255 + 0.3 * 127.5, rel=1e-6)
    with pytest.raises(ValueError):
        M.colourfulness(torch.rand(1, 1, 4, 4))


def test_mean_brightness_and_exposure_error() -> None:
    x = torch.zeros(1, 3, 4, 4)
    x[..., 2:] = 1.0  # left half black, right half white
    assert M.mean_brightness(x).item() == pytest.approx(0.5)
    assert M.exposure_error(x).item() == pytest.approx(0.0)
    assert M.exposure_error(x, patch_size=2).item() == pytest.approx(0.5)
    c = torch.full((2, 3, 8, 8), 0.2)
    torch.testing.assert_close(M.exposure_error(c), torch.full((2,), 0.3))
    torch.testing.assert_close(M.exposure_error(c, target=0.6, patch_size=4), torch.full((2,), 0.4))


def _distinct_levels() -> torch.Tensor:
    """(1, 3, 8, 8) grey image with 64 distinct 8-bit levels 0..63 in a shuffled order."""
    g = torch.Generator().manual_seed(3)
    levels = torch.randperm(64, generator=g).float().view(1, 1, 8, 8) / 255.0
    return levels.expand(1, 3, 8, 8).contiguous()


def test_loe() -> None:
    x = _distinct_levels()
    assert M.loe(x, x).item() == 0.0
    assert M.loe(x.sqrt(), x).item() == 0.0  # a monotone map keeps the order
    # reversing the order flips the relation with every other sample: LOE = N - 1
    assert M.loe(1.0 - x, x).item() == pytest.approx(63.0)
    # colour does not matter beyond the maximum channel
    tinted = x.clone()
    tinted[:, 1:] *= 0.5
    assert M.loe(tinted, x).item() == 0.0
    big = torch.rand(2, 3, 120, 260)
    v = M.loe(1 - big, big)
    assert v.shape == (2,) and (v > 0).all()
    # grid subsampling: step = floor(120 / 50) = 2 -> 60 x 130 samples, LOE < number of samples
    assert (v < 60 * 130).all()


def test_metric_objects_average_over_batches() -> None:
    m = M.MeanBrightness()
    assert math.isnan(m.compute().item())
    m.update(torch.stack([torch.full((3, 2, 2), 0.2), torch.full((3, 2, 2), 0.4)]))
    m.update(torch.full((1, 3, 2, 2), 0.9))
    assert m.count == 3
    assert m.compute().item() == pytest.approx(0.5)
    m.reset()
    assert m.count == 0 and math.isnan(m.compute().item())

    p = M.PSNR()
    x = torch.full((1, 3, 4, 4), 0.5)
    p.update(x, x + 0.1)  # 20 dB
    p.update(torch.cat([x, x]), torch.cat([x + 0.01, x + 0.01]))  # 40 dB twice
    assert p.compute().item() == pytest.approx((20 + 40 + 40) / 3, abs=1e-3)

    e = M.ExposureError(target=0.4)
    e(torch.full((2, 3, 4, 4), 0.5))
    assert e.compute().item() == pytest.approx(0.1)

    s = M.SSIM()
    y = torch.rand(2, 3, 16, 16)
    s.update(y, y)
    assert s.compute().item() == pytest.approx(1.0, abs=1e-5)

    c = M.Colourfulness()
    c.update(torch.rand(2, 1, 4, 4).expand(2, 3, 4, 4))
    assert c.compute().item() == pytest.approx(0.0, abs=1e-4)

    lo = M.LOE()
    z = _distinct_levels()
    lo.update(z, z)
    lo.update(1 - z, z)
    assert lo.compute().item() == pytest.approx(31.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda() -> None:
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 200, 300), torch.rand(2, 3, 200, 300)
    p = _toy_params()
    torch.testing.assert_close(N.niqe(x.cuda(), p).cpu(), N.niqe(x, p), rtol=1e-4, atol=0)
    torch.testing.assert_close(M.ssim(x.cuda(), y.cuda()).cpu(), M.ssim(x, y), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(M.loe(x.cuda(), y.cuda()).cpu(), M.loe(x, y))
