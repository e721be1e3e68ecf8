"""Evaluation metrics against hand-computed values and independent (brute-force) computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexunet.model.metrics import (EMPTY_RULE, MetricAccumulator, boundary, detection_scores, hd95, image_scores,
                              lesion_counts, scores_from_counts, summarize, surface_dice)

nan = float("nan")


def grid(rows: list[str]) -> np.ndarray:
    """A class-index array from strings of digits, one string per row."""
    return np.array([[int(ch) for ch in row] for row in rows], np.int64)


# --------------------------------------------------------------------------- counts and overlap scores


def test_scores_by_hand_with_the_three_empty_cases():
    # class 1: tp 1, fp 0, fn 1; class 2: in the prediction only (false alarm); both 4x4
    ref = grid(["1100", "0000", "0000", "0000"])
    pred = grid(["1000", "0020", "0000", "0000"])
    s = image_scores(ref, pred, 3)
    assert s["tp"].tolist() == [13, 1, 0] and s["fp"].tolist() == [1, 0, 1] and s["fn"].tolist() == [1, 1, 0]
    assert s["tn"].tolist() == [1, 14, 15]
    assert s["dice"][1] == pytest.approx(2 / 3)
    assert s["iou"][1] == pytest.approx(1 / 2)
    assert s["precision"][1] == pytest.approx(1.0)
    assert s["recall"][1] == pytest.approx(1 / 2)
    # reference empty, prediction not: 0 for every score (a false alarm)
    assert [s[m][2] for m in ("dice", "iou", "precision", "recall")] == [0.0, 0.0, 0.0, 0.0]

    # prediction empty, reference not: 0 (a miss) - precision's 0/0 is 0 too
    miss = image_scores(grid(["0200", "0000"]), grid(["0000", "0000"]), 3)
    assert [miss[m][2] for m in ("dice", "iou", "precision", "recall")] == [0.0, 0.0, 0.0, 0.0]
    # both empty: NaN for every score
    both = image_scores(grid(["0000", "0000"]), grid(["0000", "0000"]), 3)
    assert all(math.isnan(both[m][2]) for m in ("dice", "iou", "precision", "recall"))
    assert all(math.isnan(both[m][1]) for m in ("dice", "iou", "precision", "recall"))
    assert "NaN" in EMPTY_RULE and "0" in EMPTY_RULE


def test_scores_from_counts_match_set_formulas_on_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref = rng.integers(0, 3, (12, 9))
        pred = rng.integers(0, 3, (12, 9))
        s = image_scores(ref, pred, 3)
        for k in range(3):
            a, b = ref == k, pred == k
            inter = (a & b).sum()
            assert s["dice"][k] == pytest.approx(2 * inter / (a.sum() + b.sum()))
            assert s["iou"][k] == pytest.approx(inter / (a | b).sum())
            assert s["precision"][k] == pytest.approx(inter / b.sum())
            assert s["recall"][k] == pytest.approx(inter / a.sum())


def test_scores_from_counts_accepts_scalars():
    s = scores_from_counts(0, 0, 0)
    assert math.isnan(float(s["dice"]))
    assert float(scores_from_counts(3, 1, 2)["dice"]) == pytest.approx(6 / 9)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        image_scores(np.zeros((4, 4), int), np.zeros((4, 5), int), 2)


# --------------------------------------------------------------------------- HD95


def brute_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary by explicit neighbour checks: a mask pixel with a 4-neighbour outside (or off the image)."""
    h, w = mask.shape
    out = np.zeros_like(mask, bool)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if not (0 <= yy < h and 0 <= xx < w) or not mask[yy, xx]:
                    out[y, x] = True
    return out


def brute_hd95(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0)) -> float:
    """All pairwise distances between the boundary pixels of a and b; max of the two directed P95."""
    if not a.any() or not b.any():
        return nan
    pa = np.argwhere(brute_boundary(a)) * np.asarray(spacing)
    pb = np.argwhere(brute_boundary(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def test_boundary_matches_the_explicit_definition():
    rng = np.random.default_rng(0)
    mask = rng.random((15, 17)) > 0.4
    np.testing.assert_array_equal(boundary(mask), brute_boundary(mask))


def test_hd95_by_hand():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[1, 1] = True
    b[4, 5] = True                              # 3 rows, 4 columns away: a 3-4-5 triangle
    assert hd95(a, b) == pytest.approx(5.0)
    assert hd95(a, b, spacing=(0.5, 2.0)) == pytest.approx(math.hypot(1.5, 8.0))
    assert hd95(a, a) == 0.0
    assert math.isnan(hd95(a, np.zeros_like(a)))    # empty prediction
    assert math.isnan(hd95(np.zeros_like(a), b))    # empty reference
    assert math.isnan(hd95(np.zeros_like(a), np.zeros_like(a)))  # both empty


@pytest.mark.parametrize("seed", range(6))
def test_hd95_agrees_with_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(16, 40, 2)
    a = rng.random((h, w)) > 0.7
    b = np.roll(a, rng.integers(-4, 5), axis=1) | (rng.random((h, w)) > 0.9)
    spacing = tuple(rng.uniform(0.3, 1.5, 2))
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b), abs=1e-9)
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), abs=1e-9)


@pytest.mark.parametrize("name", ["hd95", "nsd"])
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(3, 14), st.integers(3, 14), st.floats(0.05, 0.95))
def test_boundary_metrics_agree_with_brute_force_property(name, seed, h, w, density):
    metric, brute = {"hd95": (hd95, brute_hd95), "nsd": (surface_dice, brute_nsd)}[name]
    rng = np.random.default_rng(seed)
    a = rng.random((h, w)) < density
    b = rng.random((h, w)) < density
    expected = brute(a, b)
    got = metric(a, b)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-9)


def brute_nsd(a: np.ndarray, b: np.ndarray, tolerance: float = 1.5) -> float:
    """All pairwise boundary distances: the share of both boundaries within ``tolerance`` of the other."""
    ea, eb = np.argwhere(brute_boundary(a)), np.argwhere(brute_boundary(b))
    if len(ea) + len(eb) == 0:
        return nan
    if len(ea) == 0 or len(eb) == 0:
        return 0.0
    d = np.sqrt(((ea[:, None, :] - eb[None, :, :]) ** 2).sum(-1))
    return float(((d.min(1) <= tolerance).sum() + (d.min(0) <= tolerance).sum()) / (len(ea) + len(eb)))


def test_a_mask_one_pixel_off_keeps_its_surface_dice_and_loses_overlap():
    ref = np.zeros((12, 12), bool)
    ref[3:6, 2:9] = True                          # a lesion 3 px thick
    shifted = np.roll(ref, 1, axis=0)              # the same lesion one row lower
    assert surface_dice(ref, shifted) == 1.0       # every boundary pixel within 1 px of the other's
    assert surface_dice(ref, np.roll(shifted, 1, axis=1)) == 1.0   # a diagonal neighbour is within one pixel too
    assert image_scores(ref.astype(int), shifted.astype(int), 2)["dice"][1] == pytest.approx(2 * 14 / 42)
    two_off = np.roll(ref, 2, axis=0)              # two rows: the far rows' pixels no longer match
    assert surface_dice(ref, two_off) == pytest.approx(brute_nsd(ref, two_off)) and surface_dice(ref, two_off) < 1
    assert math.isnan(surface_dice(np.zeros_like(ref), np.zeros_like(ref)))   # neither: undefined
    assert surface_dice(ref, np.zeros_like(ref)) == 0.0                        # a miss
    assert surface_dice(np.zeros_like(ref), ref) == 0.0                        # a false alarm


def test_whole_set_surface_dice_sums_the_boundary_counts_of_the_images():
    a_ref = np.zeros((10, 10), int)
    a_ref[2:5, 2:8] = 1
    b_ref = np.zeros((10, 10), int)
    b_ref[1:9, 1:9] = 1
    a_pred, b_pred = np.roll(a_ref, 3, axis=1), b_ref.copy()
    acc = MetricAccumulator(2, ["background", "lesion"])
    acc.add(a_ref, a_pred, "a.png")
    acc.add(b_ref, b_pred, "b.png")
    acc.add(np.zeros((10, 10), int), np.zeros((10, 10), int), "empty.png")
    lesion = acc.summary()["classes"]["lesion"]
    edges = [brute_boundary(m == 1).sum() for m in (a_ref, a_pred, b_ref, b_pred)]
    matched_a = brute_nsd(a_ref == 1, a_pred == 1) * (edges[0] + edges[1])
    assert lesion["whole_set"]["nsd"] == pytest.approx((matched_a + edges[2] + edges[3]) / sum(edges))
    assert lesion["per_image"]["nsd"]["n_valid"] == 2      # the empty image is not scored
    assert lesion["per_image"]["nsd"]["mean"] == pytest.approx((brute_nsd(a_ref == 1, a_pred == 1) + 1) / 2)
    assert [r["nsd"] for r in acc.per_image_rows()][:2] == [pytest.approx(brute_nsd(a_ref == 1, a_pred == 1)), 1.0]


# --------------------------------------------------------------------------- lesions


def test_lesion_counts_by_hand():
    ref = grid(["1100000",
                "1100000",
                "0000000",
                "0000011",
                "0000011"])
    pred = grid(["0100000",   # overlaps the first lesion
                 "0000000",
                 "0001000",   # a false component, touching nothing
                 "0000000",
                 "0000000"])
    c = lesion_counts(ref == 1, pred == 1)
    assert c == {"ref_lesions": 2, "detected": 1, "pred_components": 2, "pred_matched": 1}
    d = detection_scores(*c.values())
    assert d == {"recall": 0.5, "precision": 0.5, "f1": 0.5}


def test_lesions_are_8_connected():
    diagonal = grid(["100", "010", "001"]) == 1
    assert lesion_counts(diagonal, diagonal)["ref_lesions"] == 1


def test_detection_scores_empty_rule():
    assert all(math.isnan(v) for v in detection_scores(0, 0, 0, 0).values())
    assert detection_scores(0, 0, 3, 0) == {"recall": 0.0, "precision": 0.0, "f1": 0.0}  # false alarms only
    assert detection_scores(2, 0, 0, 0) == {"recall": 0.0, "precision": 0.0, "f1": 0.0}  # misses only
    assert detection_scores(4, 3, 2, 2)["f1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)


# --------------------------------------------------------------------------- aggregation


def test_summarize_ignores_nan():
    s = summarize([1.0, nan, 0.0, 0.5])
    assert s == {"mean": 0.5, "median": 0.5, "std": pytest.approx(np.std([1, 0, 0.5])), "n_valid": 3}
    empty = summarize([nan, nan])
    assert empty["n_valid"] == 0 and math.isnan(empty["mean"])


def test_accumulator_per_image_and_whole_set_figures():
    names = ("background", "ischemic", "hemorrhagic")
    acc = MetricAccumulator(3, names)
    # image A: ischemic tp 1 fn 1 (Dice 2/3); hemorrhagic absent from both
    acc.add(grid(["1100", "0000", "0000", "0000"]), grid(["1000", "0000", "0000", "0000"]), "a.png")
    # image B: ischemic perfect, 8 pixels (Dice 1); hemorrhagic a false alarm of 2 pixels
    ref_b = grid(["1111", "1111", "0000", "0000"])
    acc.add(ref_b, grid(["1111", "1111", "0022", "0000"]), "b.png", spacing=(0.5, 0.5))
    # image C: neither class anywhere
    acc.add(np.zeros((4, 4), int), np.zeros((4, 4), int), "c.png")
    rep = acc.summary()
    isch, hem = rep["classes"]["ischemic"], rep["classes"]["hemorrhagic"]
    assert isch["per_image"]["dice"]["mean"] == pytest.approx((2 / 3 + 1) / 2)
    assert isch["per_image"]["dice"]["median"] == pytest.approx((2 / 3 + 1) / 2)
    assert isch["per_image"]["dice"]["n_valid"] == 2 and isch["n_empty"] == 1
    assert isch["whole_set"]["dice"] == pytest.approx(2 * 9 / (2 * 9 + 0 + 1))  # summed counts: tp 9, fn 1
    assert isch["whole_set"]["tp"] == 9 and isch["whole_set"]["fn"] == 1
    assert hem["per_image"]["dice"]["n_valid"] == 1 and hem["per_image"]["dice"]["mean"] == 0.0
    assert hem["n_empty"] == 2
    # false-positive rate: hemorrhagic absent from all 3 references, predicted on 1
    assert hem["false_positive_slices"] == {"slices_without_class": 3, "slices_with_false_positive": 1,
                                            "rate": pytest.approx(1 / 3),
                                            "mean_false_positive_pixels": pytest.approx(2 / 3)}
    assert isch["false_positive_slices"]["slices_without_class"] == 1
    assert isch["false_positive_slices"]["rate"] == 0.0
    # HD95: image A: reference edge {(0,0), (0,1)} -> prediction {(0,0)}: distances [0, 1], whose
    # 95th percentile (linear interpolation) is 0.95; image B 0; mm only for B
    assert isch["per_image"]["hd95_px"]["n_valid"] == 2
    assert isch["per_image"]["hd95_px"]["mean"] == pytest.approx((0.95 + 0.0) / 2)
    assert isch["per_image"]["hd95_mm"] == {"mean": 0.0, "median": 0.0, "std": 0.0, "n_valid": 1}
    assert isch["lesions"]["ref_lesions"] == 2 and isch["lesions"]["f1"] == 1.0
    assert hem["lesions"]["pred_components"] == 1 and hem["lesions"]["precision"] == 0.0
    cm = np.array(rep["confusion_matrix"]["counts"])
    assert cm.sum() == 48 and cm[2, 2] == 0 and cm[0, 2] == 2 and cm[1, 0] == 1
    assert rep["empty_rule"] == EMPTY_RULE and rep["num_images"] == 3 and rep["images_with_spacing"] == 1
    rows = acc.per_image_rows()
    assert len(rows) == 3 * 2                        # one row per image and foreground class
    assert rows[0]["image"] == "a.png" and rows[0]["class"] == "ischemic" and rows[0]["tp"] == 1
    assert math.isnan(rows[1]["dice"])               # a.png, hemorrhagic: both empty


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one():
    # reference: one pixel; prediction: the same pixel and one 10 columns away (each pixel is its own boundary)
    ref = np.zeros((12, 20), bool)
    ref[5, 5] = True
    pred = ref.copy()
    pred[5, 15] = True
    # ref -> pred: [0]; pred -> ref: [0, 10] -> P95 = 9.5 (linear interpolation); the larger is 9.5.
    # medpy's hd95 pools both directions: P95 of [0, 0, 10] = 9.0
    assert hd95(ref, pred) == pytest.approx(9.5)
    assert hd95(pred, ref) == pytest.approx(9.5)
