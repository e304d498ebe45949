"""Segmentation scores of enhanced images: confusion matrices, IoU, mean IoU, and label maps as pictures.

Label maps are integer class ids ``(H, W)`` (or any shape, as long as prediction and truth agree); the class
names come from the segmenter (:class:`~scl_lle.models.segmenter.SegmenterSpec`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

__all__ = ["MeanIoU", "class_names", "colour_labels", "confusion_matrix", "iou_from_confusion"]

#: CamVid's label colours (SegNet convention), by class id; void (11) is black.
_CAMVID_PALETTE = np.array(
    [
        [128, 128, 128],
        [128, 0, 0],
        [192, 192, 128],
        [128, 64, 128],
        [60, 40, 222],
        [128, 128, 0],
        [192, 128, 128],
        [64, 64, 128],
        [64, 0, 128],
        [64, 64, 0],
        [0, 128, 192],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """Confusion matrix ``(C, C)`` int64 (rows: true class, columns: predicted) of label maps ``pred`` and
    ``target`` (same shape, integer class ids in ``0..C-1``). Pixels whose target is ``ignore_index`` are
    left out; so are target values outside ``0..C-1``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    p = pred.reshape(-1).long().cpu()
    t = target.reshape(-1).long().cpu()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    idx = t[keep] * num_classes + p[keep]
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou_from_confusion(confusion: torch.Tensor, ignore_index: int | None = None) -> tuple[float, list[float]]:
    """Per-class IoU ``tp / (tp + fp + fn)`` and their mean from a confusion matrix (rows true, cols predicted).

    The class ``ignore_index`` (void) gets no IoU and is not in the list: its row should be empty (void pixels
    ignored); predictions of void on a labelled pixel still count as misses of the true class. Classes absent
    from both truth and prediction get NaN and are left out of the mean (NaN if none is left).
    """
    m = confusion.to(torch.float64)
    classes = [c for c in range(m.shape[0]) if c != ignore_index]
    tp = m.diagonal()
    fn = m.sum(dim=1) - tp
    fp = m.sum(dim=0) - tp
    ious = []
    for c in classes:
        denom = float(tp[c] + fp[c] + fn[c])
        ious.append(float(tp[c]) / denom if denom > 0 else float("nan"))
    valid = [v for v in ious if not math.isnan(v)]
    return (sum(valid) / len(valid) if valid else float("nan")), ious


def class_names(names: Sequence[str], ignore_index: int | None = None) -> list[str]:
    """The names of the classes :func:`iou_from_confusion` scores, in its order: ``names`` without ``ignore_index``."""
    return [name for c, name in enumerate(names) if c != ignore_index]


class MeanIoU:
    """Mean IoU over the label maps of a set, from one confusion matrix over all of them (update/compute).

    ``update(pred, target)`` adds a pair of label maps and returns their own confusion matrix; ``compute()`` is
    the mean IoU of everything seen (:func:`iou_from_confusion`), ``per_class()`` the IoU of each class.
    """

    higher_is_better: ClassVar[bool | None] = True
    name: ClassVar[str] = "mIoU"
    unit: ClassVar[str] = ""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add label maps ``pred`` and ``target`` (same shape); returns their confusion matrix ``(C, C)``."""
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confusion += cm
        return cm

    def compute(self) -> float:
        """Mean IoU over the classes present so far (NaN when none is)."""
        return iou_from_confusion(self.confusion, self.ignore_index)[0]

    def per_class(self) -> list[float]:
        """IoU of each class but ``ignore_index``, in class order (NaN for a class absent so far)."""
        return iou_from_confusion(self.confusion, self.ignore_index)[1]

    def reset(self) -> None:
        self.confusion.zero_()


def colour_labels(labels: torch.Tensor) -> np.ndarray:
    """Label map ``(H, W)`` -> ``(H, W, 3)`` uint8 picture in CamVid's colours (ids past void drawn as void)."""
    lab = labels.cpu().numpy().clip(0, len(_CAMVID_PALETTE) - 1)
    return _CAMVID_PALETTE[lab]
