"""Fit the auto-exposure policy of ``scl_lle.engine.exposure`` on real multi-exposure sequences (training data only).

Data: ``$SCL_LLE_SHARED/data/train_exposure_SICE_sequences`` (228 scenes, each photographed at several
exposures; ``files.tsv`` gives the sequence). No evaluation set is read.

What a sequence says. Its *best* member is the one whose brightness histogram carries the most information (the
largest entropy of a 64-bin histogram: detail neither crushed into black nor clipped into white); a sequence is
used only when that member is an inner one (if the entropy still grows at the darkest or brightest end, the
sequence does not show where the right level is). Members whose entropy is within ``ACCEPTABLE`` (15%) of the
best are acceptably exposed; members darker than all of those are *under-exposed*.

The policy (``auto_target``): ``target = m + p * max(level - m, 0)`` with ``m`` the photo's mean brightness,
``level`` the median brightness of the best members and ``p`` a logistic regression on ``exposure_features`` (of
the same thumbnail the enhancer uses) predicting "under-exposed". Checked by 5-fold cross-validation over
sequences (no scene in both the fitting and the checking part): accuracy and log-loss of ``p``, and the mean
error of the target against the sequence's answer (the best member's brightness for an under-exposed photo, its
own brightness otherwise), beside two simpler policies. Prints the constants for ``scl_lle/engine/exposure.py``.

``--compare-levels`` also asks whether ``level`` should depend on the photo (docs/MODEL_CARD.md, "NIQE and the
exposure level"): cross-validated error of the best member's brightness, predicted for each under-exposed photo
by one constant, by the shape of its histogram (the log quantile ratios of ``exposure_features``), by the
brightness the network gives it at full strength, and by both (least squares on the logs).

    python scripts/fit_exposure_policy.py [--shared ../shared] [--folds 5] [--seed 0] [--compare-levels]
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
from pathlib import Path

import numpy as np
import torch

from scl_lle.core.colour import mean_brightness
from scl_lle.engine.exposure import exposure_features, thumbnail_factor
from scl_lle.evaluation.datasets import load_image

HISTOGRAM_BINS = 64
ACCEPTABLE = 0.85  # a member whose histogram entropy is at least this share of its sequence's best is acceptable
RIDGE = 1e-4  # a touch of shrinkage on the non-constant weights


def sequences_root(shared: str) -> Path | None:
    """The SICE sequences folder under ``shared``; ``None``, after saying so on stderr, where it is missing."""
    root = Path(shared) / "data" / "train_exposure_SICE_sequences"
    if (root / "files.tsv").is_file():
        return root
    print(f"not found: {root / 'files.tsv'} (set --shared or SCL_LLE_SHARED)", file=sys.stderr)
    return None


def entropy(image: torch.Tensor) -> float:
    """Entropy (bits) of the 64-bin histogram of the per-pixel brightness of ``(1, 3, h, w)``."""
    counts = torch.histc(image.float().mean(dim=1), bins=HISTOGRAM_BINS, min=0.0, max=1.0)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def thumbnail(path: Path) -> torch.Tensor:
    """The thumbnail ``(1, 3, h, w)`` the engine solves the exposure on: every f-th pixel (``picture_gain``)."""
    image = load_image(path)
    factor = thumbnail_factor(*image.shape[-2:])
    return image[..., ::factor, ::factor]


def load_sequences(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: sequence id, mean brightness, histogram entropy and policy features, on the thumbnail."""
    with open(root / "files.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    sequence, brightness, information, features = [], [], [], []
    for row in rows:
        thumb = thumbnail(root / row["dest_path"])
        sequence.append(int(row["sequence"]))
        brightness.append(float(mean_brightness(thumb)[0]))
        information.append(entropy(thumb))
        features.append(exposure_features(thumb)[0].double().numpy())
    return np.array(sequence), np.array(brightness), np.array(information), np.stack(features)


def label_sequences(
    sequence: np.ndarray, brightness: np.ndarray, information: np.ndarray, acceptable_share: float = ACCEPTABLE
) -> tuple[np.ndarray, np.ndarray]:
    """Per photo: under-exposed (1.0), not (0.0) or unusable sequence (NaN); and its sequence's best brightness."""
    under = np.full(len(sequence), np.nan)
    best = np.full(len(sequence), np.nan)
    for s in np.unique(sequence):
        members = np.flatnonzero(sequence == s)
        if len(members) < 3:
            continue
        top = members[np.argmax(information[members])]
        if brightness[top] in (brightness[members].max(), brightness[members].min()):
            continue
        acceptable = members[information[members] >= acceptable_share * information[top]]
        under[members] = brightness[members] < brightness[acceptable].min()
        best[members] = brightness[top]
    return under, best


def fit(features: np.ndarray, under: np.ndarray) -> np.ndarray:
    """Logistic-regression weights for P(under-exposed | features)."""
    x, y = torch.tensor(features), torch.tensor(under)
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y) + RIDGE * w[1:].square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().numpy()


def targets(w: np.ndarray, level: float, features: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(features @ w)))
    return brightness + p * np.maximum(level - brightness, 0.0)


#: The per-photo level models ``--compare-levels`` checks: what a photo's level is predicted from.
LEVEL_MODELS = ("constant", "histogram shape", "network at full strength", "shape and network", "network, proportional")


def full_strength_brightness(root: Path) -> np.ndarray:
    """Per photo of ``files.tsv`` (its order): mean brightness of the default network's output at full strength
    (``exposure="off"``, the curves alone) on the photo's thumbnail."""
    from scl_lle import Enhancer

    with open(root / "files.tsv", encoding="utf-8") as handle:
        paths = [row["dest_path"] for row in csv.DictReader(handle, delimiter="\t")]
    enhancer = Enhancer(device="cpu", exposure="off", finish=False)
    with torch.no_grad():
        return np.array([float(mean_brightness(enhancer(thumbnail(root / path)))[0]) for path in paths])


def level_designs(features: np.ndarray, network: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per :data:`LEVEL_MODELS` name, the design matrix (a row per photo) of a least-squares fit of the log level
    and a fixed offset added to it (the log of the network's level for "network, proportional": the level is
    that times a constant)."""
    one, zero = features[:, :1], np.zeros(len(features))
    shape = features[:, [0, 2, 3, 4]]  # the constant and the three log quantile ratios
    log_network = np.log(network)
    designs = (one, shape, np.c_[one, log_network], np.c_[shape, log_network], one)
    offsets = (zero, zero, zero, zero, log_network)
    return dict(zip(LEVEL_MODELS, zip(designs, offsets, strict=True), strict=True))


def fit_level(design: np.ndarray, offset: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Least-squares weights (a touch of ridge) predicting ``log(best) - offset`` from ``design``."""
    gram = design.T @ design + RIDGE * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ (np.log(best) - offset))


def compare_levels(
    designs: dict[str, tuple[np.ndarray, np.ndarray]], seq: np.ndarray, best: np.ndarray, folds: int, seed: int
) -> None:
    """Print, per level model, the mean |predicted level - best member's brightness| over the under-exposed photos
    (the rows of ``designs``; ``seq``: their sequences), cross-validated over sequences, and its weights."""
    names = np.unique(seq)
    fold = np.random.default_rng(seed).permutation(len(names)) % folds
    print(f"level of the {len(seq)} under-exposed photos ({len(names)} sequences), {folds}-fold cross-validation:")
    for name, (design, offset) in designs.items():
        errors = []
        for k in range(folds):
            held = np.isin(seq, names[fold == k])
            w = fit_level(design[~held], offset[~held], best[~held])
            errors.append(np.abs(np.exp(design[held] @ w + offset[held]) - best[held]))
        weights = ", ".join(f"{v:.3f}" for v in fit_level(design, offset, best))
        print(f"  {name}: mean |level - best| {np.concatenate(errors).mean():.4f} (weights on the logs: {weights})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("SCL_LLE_SHARED", "../shared"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--acceptable",
        type=float,
        default=ACCEPTABLE,
        help=f"share of the best entropy that is still acceptably exposed (default: {ACCEPTABLE})",
    )
    parser.add_argument(
        "--targets-on",
        action="append",
        default=[],
        metavar="GLOB",
        help="also print the median auto target the fitted policy gives the images matching GLOB (repeatable), "
        "e.g. '../shared/data/seg_CamVid_SegNet_subset/test/0001TP_*.png'",
    )
    parser.add_argument(
        "--compare-levels",
        action="store_true",
        help="also compare per-photo level models (runs the default network on every thumbnail: 2-5 min on 2 cores)",
    )
    args = parser.parse_args(argv)
    root = sequences_root(args.shared)
    if root is None:
        return 2
    torch.set_num_threads(2)
    sequence, brightness, information, features = load_sequences(root)
    under, best = label_sequences(sequence, brightness, information, args.acceptable)
    keep = ~np.isnan(under)
    seq, m, x, y, ref = sequence[keep], brightness[keep], features[keep], under[keep], best[keep]
    answer = np.where(y == 1, ref, m)  # what the sequence says the photo should become
    names = np.unique(seq)
    print(
        f"{len(brightness)} photos in {len(np.unique(sequence))} sequences; {len(names)} sequences used "
        f"({len(m)} photos, {y.mean():.0%} of them under-exposed)"
    )
    levels = np.array([ref[seq == s][0] for s in names])
    print(
        f"best-member brightness: median {np.median(levels):.3f}, 5-95%: "
        f"{np.percentile(levels, 5):.3f}-{np.percentile(levels, 95):.3f}"
    )

    folds = np.random.default_rng(args.seed).permutation(len(names)) % args.folds
    scores = {"accuracy": [], "log-loss": [], "policy": [], "lift all to level": [], "no change": []}
    for k in range(args.folds):
        held = np.isin(seq, names[folds == k])
        w = fit(x[~held], y[~held])
        level = float(np.median(levels[folds != k]))
        p = 1.0 / (1.0 + np.exp(-(x[held] @ w)))
        scores["accuracy"].append(float(((p > 0.5) == (y[held] == 1)).mean()))
        scores["log-loss"].append(float(-np.mean(y[held] * np.log(p + 1e-12) + (1 - y[held]) * np.log(1 - p + 1e-12))))
        scores["policy"].append(float(np.abs(targets(w, level, x[held], m[held]) - answer[held]).mean()))
        scores["lift all to level"].append(float(np.abs(np.maximum(m[held], level) - answer[held]).mean()))
        scores["no change"].append(float(np.abs(m[held] - answer[held]).mean()))
    print(f"{args.folds}-fold cross-validation over sequences (mean over folds):")
    print(
        f"  under-exposed classifier: accuracy {np.mean(scores['accuracy']):.3f}, "
        f"log-loss {np.mean(scores['log-loss']):.3f}"
    )
    for name in ("policy", "lift all to level", "no change"):
        print(f"  mean |target - sequence's answer|, {name}: {np.mean(scores[name]):.4f}")
    w = fit(x, y)
    print("AUTO_POLICY = (" + ", ".join(f"{v:.3f}" for v in w) + ")")
    print(f"AUTO_LEVEL = {np.median(levels):.3f}")
    shape_weights = None
    if args.compare_levels:
        dark = y == 1
        designs = level_designs(x[dark], full_strength_brightness(root)[keep][dark])
        compare_levels(designs, seq[dark], ref[dark], args.folds, args.seed)
        shape_weights = fit_level(*designs["histogram shape"], ref[dark])
    for pattern in args.targets_on:
        paths = sorted(glob.glob(pattern))
        brightness_of, features_of = thumbnail_features(paths)
        chosen = targets(w, float(np.median(levels)), features_of, brightness_of)
        print(
            f"{pattern}: {len(paths)} images, input brightness median {np.median(brightness_of):.3f}, "
            f"auto target median {np.median(chosen):.3f}"
        )
        under_here = features_of @ w > 0  # the policy finds them more likely under-exposed than not
        if shape_weights is not None and under_here.any():
            shape_levels = np.exp(features_of[under_here][:, [0, 2, 3, 4]] @ shape_weights)
            print(f"  {under_here.sum()} under-exposed: level by histogram shape, median {np.median(shape_levels):.3f}")
    return 0


def thumbnail_features(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean brightness and policy features of each image's thumbnail."""
    thumbs = [thumbnail(Path(path)) for path in paths]
    brightness = [float(mean_brightness(thumb)[0]) for thumb in thumbs]
    return np.array(brightness), np.stack([exposure_features(thumb)[0].double().numpy() for thumb in thumbs])


if __name__ == "__main__":
    sys.exit(main())
