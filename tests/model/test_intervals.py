"""The bootstrap interval of a whole-set Dice: a hand-computed case, patients against slices, the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexunet.model.intervals import Interval, dice_intervals, draw_weights, notes, unit_sums


def _slices(n: int, seed: int, patients: int | None = None) -> tuple[np.ndarray, ...]:
    """Per-slice counts (n, 2) of class 1 (column 0 is background, all zero): lesions of 20-200 px found with
    a recall and a false-positive share drawn per slice, or per patient (its slices alike) when ``patients``."""
    rng = np.random.default_rng(seed)
    draws = patients or n
    quality = np.clip(rng.normal(0.6, 0.3, draws), 0.0, 1.0)
    per = quality[np.arange(n) * draws // n]
    ref = rng.integers(20, 200, n).astype(float)
    tp = np.round(per * ref)
    fp = np.round((1 - per) * ref * 0.5)
    zero = np.zeros(n)
    return tuple(np.stack([zero, c], 1) for c in (tp, fp, ref - tp))


def test_two_slices_by_hand():
    # slice a: found (tp 1); slice b: missed (fn 1).  Draws: aa -> Dice 1, bb -> 0, ab -> 2/3, a quarter, a
    # quarter and a half of them, so the 2.5% and 97.5% points are 0 and 1; the point estimate is 2/3
    tp, fp, fn = np.array([[1.0], [0.0]]), np.zeros((2, 1)), np.array([[0.0], [1.0]])
    (iv,) = dice_intervals(tp, fp, fn, seed=3)
    assert iv.dice == pytest.approx(2 / 3) and (iv.low, iv.high) == (0.0, 1.0)
    assert (iv.unit, iv.units, iv.units_with_class, iv.valid) == ("slices", 2, 2, 1000)
    assert "only 2 slices" in iv.note
    weights = draw_weights(2, 1000, 3)
    assert weights.shape == (1000, 2) and (weights.sum(1) == 2).all()
    assert 0.4 < (weights[:, 0] == 1).mean() < 0.6          # a and b once each: about half the draws


def test_interval_holds_the_point_narrows_with_more_units_and_repeats_with_the_seed():
    small = dice_intervals(*_slices(30, 1), seed=0)[1]
    large = dice_intervals(*_slices(300, 1), seed=0)[1]
    for iv in (small, large):
        assert iv.low < iv.dice < iv.high
        tp, fp, fn = _slices(iv.units, 1)
        assert iv.dice == pytest.approx(2 * tp[:, 1].sum() / (2 * tp[:, 1].sum() + fp[:, 1].sum() + fn[:, 1].sum()))
    # ten times the units: about a third of the width (1 / sqrt(10))
    assert (large.high - large.low) < 0.6 * (small.high - small.low)
    assert dice_intervals(*_slices(30, 1), seed=0)[1] == small
    assert dice_intervals(*_slices(30, 1), seed=1)[1] != small


def test_patients_are_resampled_whole_and_their_correlated_slices_widen_the_interval():
    # 8 patients of 10 slices; each patient's slices share its recall: resampling slices one by one
    # treats 80 slices as 80 independent cases, resampling patients sees 8
    counts = _slices(80, 2, patients=8)
    groups = [f"p{i // 10}" for i in range(80)]
    by_patient = dice_intervals(*counts, groups=groups, seed=0)[1]
    by_slice = dice_intervals(*counts, seed=0)[1]
    assert by_patient.dice == by_slice.dice
    assert (by_patient.unit, by_patient.units, by_slice.unit, by_slice.units) == ("patients", 8, "slices", 80)
    assert (by_patient.high - by_patient.low) > 2 * (by_slice.high - by_slice.low)
    summed, n = unit_sums(counts[0], groups)
    assert n == 8 and summed[:, 1].tolist() == [counts[0][i:i + 10, 1].sum() for i in range(0, 80, 10)]


def test_a_class_no_reference_holds_has_no_interval_and_says_why():
    tp = np.array([[5.0, 0.0, 0.0], [7.0, 0.0, 0.0]])
    fp = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])        # class 1 predicted once, never in a reference
    fn = np.zeros((2, 3))
    _, alarm, never = dice_intervals(tp, fp, fn, seed=0)
    assert alarm.dice == 0.0 and alarm.low is None and "false alarms alone" in alarm.note
    assert math.isnan(never.dice) and never.high is None and "never predicted" in never.note
    assert alarm.as_json()["dice_ci95"] is None and alarm.text() == "0.00 (no interval)"


def test_one_patient_is_resampled_over_its_slices_and_says_so():
    counts = _slices(12, 4)
    (_, iv) = dice_intervals(*counts, groups=["p1"] * 12, seed=0)
    assert iv.unit == "slices" and iv.units == 12 and "one patient only" in iv.note and iv.low < iv.high


def test_text_json_and_notes():
    iv = Interval(0.6234, 0.51, 0.71, "patients", 9, 7, 1000)
    assert iv.text() == "0.62 [0.51, 0.71] over 9 patients (7 with the class)"
    assert Interval.from_json(0.6234, iv.as_json()) == Interval(0.6234, 0.51, 0.71, "patients", 9, 7, 0)
    few = Interval(0.5, 0.1, 0.9, "patients", 4, 4, 1000, "only 4 patients")
    assert notes({"a": few, "b": few}) == ["only 4 patients"]
    assert notes({"a": few, "b": iv}) == ["a: only 4 patients"]
