"""Where the model is unsure, and whether its confidence can be trusted.

- :func:`entropy_map`: per-pixel entropy of the mean softmax (over flip TTA), divided by
  ``log(K)`` so it lies in [0, 1] (0 = certain, 1 = uniform over the K classes);
- :func:`slice_score`: one number per slice for ranking slices to review: the mean entropy
  over the pixels predicted foreground or whose entropy exceeds 0.5 (so a confident
  background slice scores 0 and a doubtful lesion scores high); 0 when there are none;
- :class:`Calibration` (with :func:`reliability_counts` and :func:`ece_from_counts`): the calibration of
  each class's probability, one-vs-rest over pixels, in equal-width confidence bins:
  ``ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|``;
- :func:`spearman`: rank correlation (average ranks for ties), NaN when undefined.

Only numpy and scipy (scipy.stats loaded on first use, utils.lazy).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from flexunet.utils.lazy import LazyModule

stats = LazyModule("scipy.stats")   # imports scipy.ndimage too: loaded when a Spearman is first asked for

BINS = 10


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """(H, W) float32 normalised entropy in [0, 1] of (H, W, K) probabilities (K >= 2)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    p = p / p.sum(-1, keepdims=True)
    k = p.shape[-1]
    return np.clip(-(p * np.log(p)).sum(-1) / math.log(k), 0.0, 1.0).astype(np.float32)


def slice_score(entropy: np.ndarray, prediction: np.ndarray, threshold: float = 0.5) -> float:
    """Mean entropy over pixels predicted foreground or above ``threshold``; 0 when there are none."""
    region = (np.asarray(prediction) > 0) | (np.asarray(entropy) > threshold)
    return float(np.asarray(entropy)[region].mean()) if region.any() else 0.0


def heatmap(values: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colour map of values in [0, 1]: black -> red -> yellow -> white."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1)
    return np.rint(rgb * 255).astype(np.uint8)


class Calibration:
    """Reliability counts of every class, accumulated image by image."""

    def __init__(self, num_classes: int, bins: int = BINS) -> None:
        self.bins = bins
        self.count = np.zeros((num_classes, bins), np.int64)
        self.correct = np.zeros((num_classes, bins), np.int64)
        self.confidence = np.zeros((num_classes, bins), np.float64)

    def add(self, probs: np.ndarray, truth: np.ndarray) -> None:
        """Add (H, W, K) probabilities and the (H, W) reference class indices of one image."""
        probs = np.asarray(probs, np.float64).reshape(-1, self.count.shape[0])
        truth = np.asarray(truth).reshape(-1)
        for k in range(self.count.shape[0]):
            c, r, s = reliability_counts(probs[:, k], truth == k, self.bins)
            self.count[k] += c
            self.correct[k] += r
            self.confidence[k] += s

    def ece(self, k: int) -> float:
        return ece_from_counts(self.count[k], self.correct[k], self.confidence[k])

    def diagram(self, k: int) -> list[dict[str, Any]]:
        """Per non-empty bin: lower edge, mean confidence, accuracy (fraction positive), pixels."""
        return [{"bin": round(b / self.bins, 4), "confidence": float(self.confidence[k, b] / n),
                 "accuracy": float(self.correct[k, b] / n), "pixels": int(n)}
                for b, n in enumerate(self.count[k]) if n > 0]


def reliability_counts(prob: np.ndarray, positive: np.ndarray, bins: int = BINS
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of ``prob``: pixels, positives, summed probability (bin b = [b/bins, (b+1)/bins))."""
    prob = np.asarray(prob, np.float64).ravel()
    which = np.clip((prob * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    correct = np.bincount(which, weights=np.asarray(positive, bool).ravel(), minlength=bins).astype(np.int64)
    confidence = np.bincount(which, weights=prob, minlength=bins)
    return count, correct, confidence


def ece_from_counts(count: np.ndarray, correct: np.ndarray, confidence: np.ndarray) -> float:
    """Expected calibration error of binned counts; NaN when there are no pixels."""
    total = count.sum()
    if total == 0:
        return float("nan")
    seen = count > 0
    gap = np.abs(correct[seen] / count[seen] - confidence[seen] / count[seen])
    return float((count[seen] / total * gap).sum())


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation of paired values (NaN pairs dropped; ties share their average rank);
    NaN with < 3 pairs or no spread."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)
