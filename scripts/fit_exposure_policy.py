"""Fit the auto-exposure policy of ``scl_lle.exposure`` on real multi-exposure sequences (training data only).

Data: ``$SCL_LLE_SHARED/data/train_exposure_SICE_sequences`` (228 scenes, each photographed at several
exposures; ``files.tsv`` gives the sequence and the exposure rank). No evaluation set is read.

For each sequence the *reference* exposure is the member whose brightness histogram carries the most information
(the largest entropy of its 64-bin histogram: detail neither crushed into black nor clipped into white), taken
only when it is an inner member (a sequence whose entropy still grows at its brightest or darkest end says
nothing about where the right level is). Every member of such a sequence is a training example: its features
(``exposure_features`` of the same thumbnail the enhancer uses) and the target ``max(m, reference mean)``: a darker
member should be lifted to the reference, a brighter one left alone. The policy ``log target = max(log m,
features . w)`` is fitted by least squares in log brightness (L-BFGS), and checked by 5-fold cross-validation
over sequences (no scene in both the fitting and the checking part) against a constant target (the median
reference brightness). Prints the folds' errors and the weights to put in ``AUTO_POLICY``.

    python scripts/fit_exposure_policy.py [--shared ../shared] [--folds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np
import torch

from scl_lle.evaluation import load_image
from scl_lle.exposure import AUTO_MAX, AUTO_POLICY, exposure_features, mean_brightness, thumbnail_factor

HISTOGRAM_BINS = 64
RIDGE = 1e-4  # a touch of shrinkage on the shape weights; the fit is well determined without it


def entropy(image: torch.Tensor) -> float:
    """Entropy (bits) of the 64-bin histogram of the per-pixel brightness of ``(1, 3, h, w)``."""
    counts = torch.histc(image.float().mean(dim=1), bins=HISTOGRAM_BINS, min=0.0, max=1.0)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())


def load_sequences(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: sequence id, mean brightness, histogram entropy and policy features, on the thumbnail."""
    rows = list(csv.DictReader(open(root / "files.tsv", encoding="utf-8"), delimiter="\t"))
    sequence, brightness, information, features = [], [], [], []
    for row in rows:
        image = load_image(root / row["dest_path"])
        factor = thumbnail_factor(*image.shape[-2:])
        thumb = image[..., ::factor, ::factor]  # as Enhancer._gain samples it
        sequence.append(int(row["sequence"]))
        brightness.append(float(mean_brightness(thumb)[0]))
        information.append(entropy(thumb))
        features.append(exposure_features(thumb)[0].double().numpy())
    return np.array(sequence), np.array(brightness), np.array(information), np.stack(features)


def references(sequence: np.ndarray, brightness: np.ndarray, information: np.ndarray) -> dict[int, float]:
    """Mean brightness of each sequence's most informative inner member."""
    out = {}
    for s in np.unique(sequence):
        members = np.flatnonzero(sequence == s)
        if len(members) < 3:
            continue
        best = members[np.argmax(information[members])]
        if brightness[best] in (brightness[members].max(), brightness[members].min()):
            continue
        out[int(s)] = float(brightness[best])
    return out


def fit(features: np.ndarray, log_mean: np.ndarray, log_target: np.ndarray) -> np.ndarray:
    """Weights of ``max(log m, features . w)`` closest to ``log_target`` in the least-squares sense."""
    x, lm, y = (torch.tensor(a) for a in (features, log_mean, log_target))
    w = torch.tensor(AUTO_POLICY, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        predicted = torch.maximum(lm, (x @ w).clamp(max=float(np.log(AUTO_MAX))))
        loss = (predicted - y).square().mean() + RIDGE * w[1:].square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().numpy()


def predict(w: np.ndarray, features: np.ndarray, log_mean: np.ndarray) -> np.ndarray:
    return np.exp(np.maximum(log_mean, np.minimum(features @ w, np.log(AUTO_MAX))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.environ.get("SCL_LLE_SHARED", "../shared"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = Path(args.shared) / "data" / "train_exposure_SICE_sequences"
    if not (root / "files.tsv").is_file():
        print(f"not found: {root / 'files.tsv'} (set --shared or SCL_LLE_SHARED)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    sequence, brightness, information, features = load_sequences(root)
    ref = references(sequence, brightness, information)
    keep = np.isin(sequence, list(ref))
    seq, m, x = sequence[keep], brightness[keep], features[keep]
    target = np.maximum(m, np.array([ref[s] for s in seq]))
    lm, y = np.log(m), np.log(target)
    print(f"{len(brightness)} photos in {len(np.unique(sequence))} sequences; {len(ref)} with an inner reference")
    print(f"reference brightness: median {np.median(list(ref.values())):.3f}, "
          f"5-95%: {np.percentile(list(ref.values()), 5):.3f}-{np.percentile(list(ref.values()), 95):.3f}")

    names = np.array(sorted(ref))
    folds = np.random.default_rng(args.seed).permutation(len(names)) % args.folds
    errors, constant_errors, dark_errors = [], [], []
    for k in range(args.folds):
        held = np.isin(seq, names[folds == k])
        w = fit(x[~held], lm[~held], y[~held])
        error = predict(w, x[held], lm[held]) - target[held]
        level = min(np.median(target[~held & (m < target)]), AUTO_MAX)
        constant = np.maximum(m[held], level) - target[held]
        errors.append(np.abs(error).mean())
        constant_errors.append(np.abs(constant).mean())
        dark = m[held] < 0.5 * target[held]
        dark_errors.append(np.abs(error[dark]).mean())
        print(f"fold {k}: mean |error| {errors[-1]:.4f} (constant target: {constant_errors[-1]:.4f}); "
              f"photos darker than half their reference: {dark_errors[-1]:.4f}")
    print(f"cross-validated mean |target error|: {np.mean(errors):.4f} (constant: {np.mean(constant_errors):.4f})")
    w = fit(x, lm, y)
    print("AUTO_POLICY = (" + ", ".join(f"{v:.4f}" for v in w) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
