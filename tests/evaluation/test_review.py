"""flexunet.evaluation.review: per-volume figures, counted over a volume's slices (hand-computed cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexunet.evaluation.review import Review
from flexunet.inference.volumes import SliceGeometry


def one_hot(index: np.ndarray) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[index]


def test_a_volume_gets_its_3d_dice_and_volume_error_per_class():
    # one patient, two 4x4 slices 2 mm apart, 1 mm pixels: class 1 in 4 + 2 reference and 3 + 2 predicted
    # pixels, 2 + 1 of them shared -> 3-D Dice 2 * 3 / (6 + 5) = 6/11; class 2 in neither -> NaN
    ref_a, pred_a = np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
    ref_a[0, :4] = 1
    pred_a[0, :2], pred_a[3, 3] = 1, 1
    ref_b, pred_b = np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
    ref_b[1, :2] = 1
    pred_b[1, 1:3] = 1
    geometry = {name: SliceGeometry(name, "case0", "case0_0000.nii.gz", (1.0, 1.0), position, 2.0)
                for name, position in (("a.png", 0.0), ("b.png", 2.0))}
    review = Review(["background", "lesion", "bleed"], geometry)
    for name, ref, pred in (("a.png", ref_a, pred_a), ("b.png", ref_b, pred_b)):
        review.add(name, one_hot(pred), ref, pred)
    rows = {r["class"]: r for r in review.report()["volumes"]["per_patient"]}
    lesion = rows["lesion"]
    assert lesion["dice_3d"] == pytest.approx(6 / 11)
    assert lesion["reference_ml"] == pytest.approx(6 * 2 / 1000) and lesion["predicted_ml"] == pytest.approx(5 * 2 / 1000)
    assert lesion["error_ml"] == pytest.approx(-0.002) and lesion["rel_error"] == pytest.approx(1 / 6)
    assert lesion["patient"] == "case0" and lesion["series"] == "case0_0000.nii.gz" and lesion["slices"] == 2
    assert math.isnan(rows["bleed"]["dice_3d"]) and rows["bleed"]["error_ml"] == 0.0
