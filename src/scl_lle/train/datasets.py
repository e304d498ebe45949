"""Labelled data sets on disk: the layouts the training data understands and their ``(image, label)`` file pairs.

- ``camvid``: SegNet-style CamVid (``root/{split}`` + ``root/{split}annot``; labels 0..10, void 11);
- ``cityscapes``: ``root/leftImg8bit/{split}/<city>`` + ``root/gtFine/{split}/<city>`` (trainIds 0..18; the files'
  255 is void, mapped to 19);
- ``folders``: two folders paired by file stem (void 255 unless the config says otherwise).

The void index of each layout is that of the matching segmenter (:data:`scl_lle.models.segmenter.SEGMENTERS`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..io.files import is_image_file
from ..models.segmenter import SEGMENTERS

__all__ = [
    "DEFAULT_SOURCE_VOID",
    "DEFAULT_VOID_INDEX",
    "LAYOUTS",
    "camvid_pairs",
    "cityscapes_pairs",
    "folder_pairs",
    "labelled_pairs",
]

#: Layouts of labelled data sets understood by :func:`labelled_pairs`.
LAYOUTS = ("camvid", "cityscapes", "folders")
#: The label meaning void in each layout (after :data:`DEFAULT_SOURCE_VOID` is mapped to it).
DEFAULT_VOID_INDEX: dict[str, int] = {
    "camvid": SEGMENTERS["espnet-camvid"].void_index,
    "cityscapes": SEGMENTERS["espnet-cityscapes"].void_index,
    "folders": 255,
}
#: The label value in each layout's files that means void (mapped to the void index), or ``None``.
DEFAULT_SOURCE_VOID: dict[str, int | None] = {"camvid": None, "cityscapes": 255, "folders": None}

_CITYSCAPES_IMAGE = "_leftImg8bit.png"
_CITYSCAPES_LABEL = "_gtFine_labelTrainIds.png"

PathLike = str | os.PathLike[str]


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} is not a folder: {path}")
    return path


def _unpaired_error(kind: str, names: Sequence[str], folder: Path) -> ValueError:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return ValueError(f"{len(names)} {kind} without a partner in {folder}: {shown}")


def camvid_pairs(root: PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of a SegNet-style CamVid folder: ``root/{split}/*.png`` with
    ``root/{split}annot/<same name>`` (labels 0..10, 11 = void), sorted by name.

    Raises:
        FileNotFoundError: ``root/{split}`` or ``root/{split}annot`` is missing.
        ValueError: an image without a label or a label without an image, or no images at all.
    """
    root = Path(root)
    image_dir = _require_dir(root / split, f"CamVid image folder for split {split!r}")
    label_dir = _require_dir(root / f"{split}annot", f"CamVid label folder for split {split!r}")
    images = {p.name: p for p in image_dir.iterdir() if is_image_file(p)}
    labels = {p.name: p for p in label_dir.iterdir() if is_image_file(p)}
    if not images:
        raise ValueError(f"no images in {image_dir}")
    if missing := sorted(set(images) - set(labels)):
        raise _unpaired_error("images", missing, image_dir)
    if extra := sorted(set(labels) - set(images)):
        raise _unpaired_error("labels", extra, label_dir)
    return [(images[name], labels[name]) for name in sorted(images)]


def cityscapes_pairs(root: PathLike, split: str = "train") -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of Cityscapes: ``root/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` with
    ``root/gtFine/{split}/<city>/*_gtFine_labelTrainIds.png`` (trainIds 0..18, 255 = void), sorted.

    Raises:
        FileNotFoundError: the split folders are missing.
        ValueError: an image without its ``labelTrainIds`` file (or the reverse), or no images at all.
    """
    root = Path(root)
    image_dir = _require_dir(root / "leftImg8bit" / split, f"Cityscapes image folder for split {split!r}")
    label_dir = _require_dir(root / "gtFine" / split, f"Cityscapes label folder for split {split!r}")
    images = {p.relative_to(image_dir).as_posix()[: -len(_CITYSCAPES_IMAGE)]: p for p in image_dir.glob("*/*")}
    images = {k: p for k, p in images.items() if p.name.endswith(_CITYSCAPES_IMAGE)}
    labels = {p.relative_to(label_dir).as_posix()[: -len(_CITYSCAPES_LABEL)]: p for p in label_dir.glob("*/*")}
    labels = {k: p for k, p in labels.items() if p.name.endswith(_CITYSCAPES_LABEL)}
    if not images:
        raise ValueError(f"no *{_CITYSCAPES_IMAGE} images in {image_dir}/<city>/")
    if missing := sorted(set(images) - set(labels)):
        raise _unpaired_error(f"images (no *{_CITYSCAPES_LABEL})", missing, image_dir)
    if extra := sorted(set(labels) - set(images)):
        raise _unpaired_error("labels", extra, label_dir)
    return [(images[key], labels[key]) for key in sorted(images)]


def folder_pairs(images: PathLike, labels: PathLike) -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs of two folders, paired by file stem (extensions may differ), sorted.

    Raises:
        FileNotFoundError: a folder is missing.
        ValueError: two files with the same stem in one folder, unpaired files, or no images.
    """
    folders = {
        "images": _require_dir(Path(images), "image folder"),
        "labels": _require_dir(Path(labels), "label folder"),
    }
    by_stem: dict[str, dict[str, Path]] = {}
    for kind, folder in folders.items():
        stems: dict[str, Path] = {}
        for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
            if path.stem in stems:
                raise ValueError(
                    f"two {kind} with the stem {path.stem!r} in {folder}: {stems[path.stem].name}, {path.name}"
                )
            stems[path.stem] = path
        by_stem[kind] = stems
    if not by_stem["images"]:
        raise ValueError(f"no images in {folders['images']}")
    if missing := sorted(set(by_stem["images"]) - set(by_stem["labels"])):
        raise _unpaired_error("images", [by_stem["images"][s].name for s in missing], folders["images"])
    if extra := sorted(set(by_stem["labels"]) - set(by_stem["images"])):
        raise _unpaired_error("labels", [by_stem["labels"][s].name for s in extra], folders["labels"])
    return [(by_stem["images"][s], by_stem["labels"][s]) for s in sorted(by_stem["images"])]


def labelled_pairs(
    layout: str,
    *,
    root: PathLike | None = None,
    split: str = "train",
    images: PathLike | None = None,
    labels: PathLike | None = None,
) -> list[tuple[Path, Path]]:
    """Dispatch to :func:`camvid_pairs`, :func:`cityscapes_pairs` (both need ``root``, ``split``) or
    :func:`folder_pairs` (needs ``images``, ``labels``)."""
    if layout in ("camvid", "cityscapes"):
        if root is None:
            raise ValueError(f"layout {layout!r} needs 'root'")
        return (camvid_pairs if layout == "camvid" else cityscapes_pairs)(root, split)
    if layout == "folders":
        if images is None or labels is None:
            raise ValueError("layout 'folders' needs both 'images' and 'labels' folders")
        return folder_pairs(images, labels)
    raise ValueError(f"unknown labelled layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
