"""flexunet.inference.uncertainty: entropy maps' range and shape, slice scores, ECE on a constructed case, ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexunet.inference.uncertainty import (Calibration, ece_from_counts, entropy_map, heatmap, reliability_counts,
                                           slice_score, spearman)


def test_entropy_is_zero_when_certain_and_one_when_uniform() -> None:
    probs = np.zeros((2, 3, 4), np.float32)          # (H, W, K)
    probs[..., 0] = 1.0
    probs[1, 2] = 0.25                               # one uniform pixel
    e = entropy_map(probs)
    assert e.shape == (2, 3) and e.dtype == np.float32
    assert e[0, 0] == pytest.approx(0.0, abs=1e-6) and e[1, 2] == pytest.approx(1.0)
    # two classes at 0.5 / 0.5 of three: log(2) / log(3)
    half = np.array([[[0.5, 0.5, 0.0]]])
    assert entropy_map(half)[0, 0] == pytest.approx(math.log(2) / math.log(3), rel=1e-5)


def test_slice_score_over_foreground_or_doubtful_pixels() -> None:
    entropy = np.array([[0.0, 0.2], [0.8, 0.0]], np.float32)
    prediction = np.array([[0, 1], [0, 0]])
    assert slice_score(entropy, prediction) == pytest.approx((0.2 + 0.8) / 2)
    assert slice_score(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


def test_heatmap_range_and_shape() -> None:
    rgb = heatmap(np.array([[0.0, 1.0, 2.0]]))
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255] == rgb[0, 2].tolist()


def test_ece_on_a_constructed_case() -> None:
    # four pixels at p = 0.25, one positive: calibrated (gap 0); two at 0.95, one positive: gap 0.45
    prob = np.array([0.25, 0.25, 0.25, 0.25, 0.95, 0.95])
    positive = np.array([1, 0, 0, 0, 1, 0], bool)
    count, correct, confidence = reliability_counts(prob, positive)
    assert count[2] == 4 and count[9] == 2 and correct[2] == 1 and correct[9] == 1
    assert ece_from_counts(count, correct, confidence) == pytest.approx(2 / 6 * 0.45)
    assert math.isnan(ece_from_counts(*reliability_counts(np.array([]), np.array([], bool))))


def test_calibration_accumulates_per_class() -> None:
    cal = Calibration(2)
    probs = np.zeros((1, 2, 2))
    probs[0, 0] = [1.0, 0.0]
    probs[0, 1] = [0.0, 1.0]
    cal.add(probs, np.array([[0, 1]]))               # confident and right: perfectly calibrated
    assert cal.ece(0) == pytest.approx(0.0) and cal.ece(1) == pytest.approx(0.0)
    cal.add(probs, np.array([[1, 0]]))               # confident and wrong: half the pixels off by 1
    assert cal.ece(1) == pytest.approx(0.5)
    assert [b["pixels"] for b in cal.diagram(1)] == [2, 2]


def test_spearman_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, float("nan")], [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    # ties share their average rank: x ranks (0.5, 0.5, 2), y ranks (0, 1, 2)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.corrcoef([0.5, 0.5, 2], [0, 1, 2])[0, 1])
    # ties on both sides, by hand: x ranks (3.5, 1, 3.5, 2), y ranks (1.5, 1.5, 3, 4); an infinite pair is dropped
    assert spearman([3, 1, 3, 2, math.inf], [1, 1, 2, 3, 0]) == pytest.approx(
        np.corrcoef([3.5, 1, 3.5, 2], [1.5, 1.5, 3, 4])[0, 1])
    assert math.isnan(spearman([1, 2, float("nan"), 4], [5, 6, 7, float("nan")]))   # two pairs left
