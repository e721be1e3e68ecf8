"""Segmentation metrics: count first, compute second (pure numpy, shared by training and evaluation).

Counts are per class: true positives, false positives, false negatives (and true
negatives where needed).  Every metric is a small function of counts written with plain
arithmetic, so the same function serves numpy arrays (evaluation, tests) and tensors
(the training metrics).

The empty-mask rule (FlexUNet's own, the one nnU-Net's evaluation also applies): for a
class absent from both reference and prediction, Dice and IoU are undefined -> NaN,
excluded from means (``nanmean``) and counted; a class absent from the reference but
predicted scores 0 (a false alarm counts against the model).  MONAI's ``DiceMetric``
differs: with its default ``ignore_empty=True`` a class absent from the reference is NaN
even when it is predicted (false alarms on empty slices are not scored), and with
``ignore_empty=False`` it scores 1 when both are empty.

Beyond the overlap figures (per image with :func:`image_scores`, per class over the set
with :class:`MetricAccumulator`):

* HD95 (:func:`hd95`): the larger of the two directed 95th percentiles of the distances
  from the boundary pixels of one mask to the nearest boundary pixel of the other;
  boundary = mask pixels with a 4-neighbour outside the mask (the image edge is outside);
  in pixels, or in mm with a pixel spacing; NaN when either mask is empty.  This is the
  definition of MONAI's ``compute_hausdorff_distance(percentile=95)`` (undirected).
  medpy's ``hd95`` instead takes the 95th percentile of both directions' distances
  pooled, which is smaller when one direction holds the outliers; DeepMind's
  surface-distance (``compute_robust_hausdorff``) weights each boundary element by its
  surfel length/area.  Neither is what this function computes.
* NSD (:func:`surface_dice`), normalised surface Dice at 1 px: :data:`NSD_DEFINITION`.
* lesion-wise detection (:func:`lesion_counts`): 8-connected components; a reference
  lesion is detected when a predicted pixel of its class overlaps it, a predicted
  component is a true positive when it overlaps a reference lesion.
* false-positive rate: among slices without the class in the reference, the fraction
  where it is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

EMPTY_RULE = ("Dice/IoU of a class absent from both reference and prediction is NaN: excluded from "
              "means and counted as 'n_empty'; absent from the reference but predicted scores 0. "
              "Precision and recall follow the same rule: NaN when the class is in neither mask, 0 when it "
              "is in only one of them (a miss or a false alarm). HD95 is NaN (excluded) unless the class is "
              "in both masks.")


def confusion_counts(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) pixel counts: row = reference class, column = predicted class."""
    ref = np.asarray(reference, np.int64).ravel()
    pred = np.asarray(prediction, np.int64).ravel()
    return np.bincount(ref * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def counts_from_confusion(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (tp, fp, fn) from a confusion matrix."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    return tp, confusion.sum(0) - tp, confusion.sum(1) - tp


def dice_from_counts(tp, fp, fn):
    """2 tp / (2 tp + fp + fn); NaN (0/0) where the class is in neither mask."""
    return (2 * tp) / (2 * tp + fp + fn)


def iou_from_counts(tp, fp, fn):
    """tp / (tp + fp + fn); NaN (0/0) where the class is in neither mask."""
    return tp / (tp + fp + fn)


def precision_from_counts(tp, fp):
    return tp / (tp + fp)


def recall_from_counts(tp, fn):
    return tp / (tp + fn)


def safe(fn, *counts):
    """Evaluate a count metric on numpy arrays without 0/0 warnings (NaN stays NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return fn(*(np.asarray(c, np.float64) for c in counts))


# --------------------------------------------------------------------------- one image

SCORES = ("dice", "iou", "precision", "recall")
COUNTS = ("tp", "fp", "fn", "tn")
LESION_COUNTS = ("ref_lesions", "detected", "pred_components", "pred_matched")
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)   # boundary: a 4-neighbour outside the mask
EIGHT = np.ones((3, 3), bool)                                # lesions: 8-connected components
NSD_TOLERANCE_PX = 1.5
NSD_DEFINITION = ("normalised surface Dice at 1 px: the share of the boundary pixels of both masks that lie within "
                  "one pixel of the other mask's boundary (an 8-neighbour: centres at most 1.5 px apart; boundary "
                  "as for HD95); a boundary off by one pixel scores near 1 where Dice drops on thin lesions; NaN "
                  "when the class is in neither mask, 0 when it is in only one. Whole-set: summed over the images")


def class_counts(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per-class pixel counts of one image: ``tp``, ``fp``, ``fn``, ``tn``, each int64 (num_classes,)."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    confusion = confusion_counts(reference, prediction, num_classes)
    tp, fp, fn = counts_from_confusion(confusion)
    tn = confusion.sum() - tp - fp - fn
    return {k: v.astype(np.int64) for k, v in zip(COUNTS, (tp, fp, fn, tn))}


def scores_from_counts(tp, fp, fn) -> dict[str, np.ndarray]:
    """Dice, IoU, precision and recall with the empty rule (:data:`EMPTY_RULE`).

    NaN where the class is in neither mask (tp = fp = fn = 0); 0 where it is in only one
    of them (the 0/0 of precision on a miss, or of recall on a false alarm, becomes 0).
    """
    tp, fp, fn = (np.asarray(c, np.float64) for c in (tp, fp, fn))
    neither = (tp + fp + fn) == 0
    out = {}
    for name, value in (("dice", safe(dice_from_counts, tp, fp, fn)), ("iou", safe(iou_from_counts, tp, fp, fn)),
                        ("precision", safe(precision_from_counts, tp, fp)),
                        ("recall", safe(recall_from_counts, tp, fn))):
        out[name] = np.where(neither, np.nan, np.nan_to_num(value, nan=0.0))
    return out


def image_scores(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Counts and scores of one image, per class: tp, fp, fn, tn, dice, iou, precision, recall."""
    counts = class_counts(reference, prediction, num_classes)
    return {**counts, **scores_from_counts(counts["tp"], counts["fp"], counts["fn"])}


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image edge counts as outside)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_FOUR, border_value=0)


def _spacing(spacing: Sequence[float] | None) -> tuple[float, float]:
    if spacing is None:
        return (1.0, 1.0)
    row, col = (float(s) for s in spacing)
    if not (row > 0 and col > 0):
        raise ValueError(f"pixel spacing must be positive, got {spacing}")
    return (row, col)


def _both_ways(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None):
    """(reference -> prediction, prediction -> reference) boundary distances; None when either mask is empty."""
    ref, pred = np.asarray(reference, bool), np.asarray(prediction, bool)
    if ref.shape != pred.shape:
        raise ValueError(f"reference {ref.shape} and prediction {pred.shape} differ in shape")
    if not ref.any() or not pred.any():
        return None
    ref_edge, pred_edge, sampling = boundary(ref), boundary(pred), _spacing(spacing)   # each edge once
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)[ref_edge]
    to_ref = ndimage.distance_transform_edt(~ref_edge, sampling=sampling)[pred_edge]
    return to_pred, to_ref


def _hd95_of(both, percentile: float = 95.0) -> float:
    if both is None:
        return float("nan")
    return float(max(np.percentile(both[0], percentile), np.percentile(both[1], percentile)))


def _surface_counts(reference: np.ndarray, prediction: np.ndarray, both, tolerance: float) -> tuple[int, int]:
    """(boundary pixels within ``tolerance`` of the other mask's boundary, all boundary pixels of both)."""
    if both is None:   # one or both masks empty: every boundary pixel there is unmatched
        return 0, int(boundary(reference).sum() + boundary(prediction).sum())
    return int((both[0] <= tolerance).sum() + (both[1] <= tolerance).sum()), int(both[0].size + both[1].size)


def surface_dice(reference: np.ndarray, prediction: np.ndarray, tolerance: float = NSD_TOLERANCE_PX) -> float:
    """Normalised surface Dice: the share of both masks' boundary pixels within ``tolerance`` pixels of
    the other mask's boundary (:data:`NSD_DEFINITION`); NaN when both masks are empty, 0 when one is.
    """
    return _ratio(*_surface_counts(reference, prediction, _both_ways(reference, prediction), tolerance))


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None,
         percentile: float = 95.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two binary masks.

    ``max(P95(d(ref -> pred)), P95(d(pred -> ref)))`` over boundary pixels; NaN when
    either mask is empty.  Pixels, or the unit of ``spacing`` = (row, col).
    """
    return _hd95_of(_both_ways(reference, prediction, spacing), percentile)


def lesion_counts(reference: np.ndarray, prediction: np.ndarray) -> dict[str, int]:
    """Lesion-wise counts of one class in one image (8-connected components).

    ``ref_lesions``: reference components; ``detected``: those overlapped by a predicted
    pixel; ``pred_components``: predicted components; ``pred_matched``: those overlapping
    a reference lesion.
    """
    ref, pred = np.asarray(reference, bool), np.asarray(prediction, bool)
    ref_labels, n_ref = ndimage.label(ref, structure=EIGHT)
    pred_labels, n_pred = ndimage.label(pred, structure=EIGHT)
    overlap = ref & pred
    return {"ref_lesions": int(n_ref), "detected": int(np.unique(ref_labels[overlap]).size),
            "pred_components": int(n_pred), "pred_matched": int(np.unique(pred_labels[overlap]).size)}


def detection_scores(ref_lesions: float, detected: float, pred_components: float,
                     pred_matched: float) -> dict[str, float]:
    """Lesion-wise recall (detected / ref_lesions), precision (pred_matched / pred_components), F1.

    Same empty rule as the pixel scores: NaN with no lesion on either side, 0 when only
    one side has any.
    """
    if ref_lesions == 0 and pred_components == 0:
        return {"recall": float("nan"), "precision": float("nan"), "f1": float("nan")}
    recall = detected / ref_lesions if ref_lesions else 0.0
    precision = pred_matched / pred_components if pred_components else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"recall": float(recall), "precision": float(precision), "f1": float(f1)}


def _ratio(matched, total) -> float:
    return float(matched / total) if total else float("nan")


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """mean, median, std and n_valid of the non-NaN values (NaN figures when none is valid)."""
    arr = np.asarray(values, np.float64).ravel()
    valid = arr[~np.isnan(arr)]
    if valid.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "std": nan, "n_valid": 0}
    return {"mean": float(valid.mean()), "median": float(np.median(valid)), "std": float(valid.std()),
            "n_valid": int(valid.size)}


# --------------------------------------------------------------------------- a whole set


@dataclass
class ImageRecord:
    """Everything measured on one image; arrays are per class (index = class)."""

    name: str
    counts: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    hd95_px: np.ndarray
    hd95_mm: np.ndarray
    lesions: dict[str, np.ndarray]
    surface: np.ndarray   # (num_classes, 2): boundary pixels within the NSD tolerance, all boundary pixels
    spacing: tuple[float, float] | None = None


@dataclass
class MetricAccumulator:
    """Collects per-image figures and summed counts; :meth:`summary` gives the report.

    ``add`` takes class-index arrays (H, W) of one image; ``spacing`` ((row, col) mm of a
    pixel at this resolution) adds HD95 in mm for that image.
    """

    num_classes: int
    class_names: Sequence[str] | None = None
    records: list[ImageRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = self.class_names
        if names is None:
            names = ["background"] + [f"class_{i}" for i in range(1, self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        self.class_names = tuple(names)
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, reference: np.ndarray, prediction: np.ndarray, name: str = "",
            spacing: Sequence[float] | None = None) -> ImageRecord:
        reference, prediction = np.asarray(reference), np.asarray(prediction)
        counts = class_counts(reference, prediction, self.num_classes)
        self.confusion += confusion_counts(reference, prediction, self.num_classes)
        sp = _spacing(spacing) if spacing is not None else None
        c = self.num_classes
        px, mm = np.full(c, np.nan), np.full(c, np.nan)
        lesions = {k: np.zeros(c, np.int64) for k in LESION_COUNTS}
        surface = np.zeros((c, 2), np.int64)
        for k in range(1, c):
            ref_k, pred_k = reference == k, prediction == k
            both = _both_ways(ref_k, pred_k)
            px[k] = _hd95_of(both)
            surface[k] = _surface_counts(ref_k, pred_k, both, NSD_TOLERANCE_PX)
            if sp is not None and not np.isnan(px[k]):
                mm[k] = px[k] * sp[0] if sp[0] == sp[1] else hd95(ref_k, pred_k, sp)
            for key, value in lesion_counts(ref_k, pred_k).items():
                lesions[key][k] = value
        record = ImageRecord(name, counts, scores_from_counts(counts["tp"], counts["fp"], counts["fn"]),
                             px, mm, lesions, surface, sp)
        self.records.append(record)
        return record

    # -- reading ------------------------------------------------------------------------
    def _stack(self, getter) -> np.ndarray:
        return np.stack([getter(r) for r in self.records]) if self.records else np.zeros((0, self.num_classes))

    def per_image_rows(self) -> list[dict[str, Any]]:
        """One row per image and foreground class (NaN where a figure is undefined)."""
        rows = []
        for r in self.records:
            for k in range(1, self.num_classes):
                rows.append({
                    "image": r.name, "class_index": k, "class": self.class_names[k],
                    "ref_pixels": int(r.counts["tp"][k] + r.counts["fn"][k]),
                    "pred_pixels": int(r.counts["tp"][k] + r.counts["fp"][k]),
                    **{key: int(r.counts[key][k]) for key in COUNTS},
                    **{key: float(r.scores[key][k]) for key in SCORES},
                    "hd95_px": float(r.hd95_px[k]), "hd95_mm": float(r.hd95_mm[k]),
                    "nsd": _ratio(*r.surface[k]),
                    **{key: int(r.lesions[key][k]) for key in LESION_COUNTS},
                })
        return rows

    def summary(self) -> dict[str, Any]:
        """Per foreground class: per-image figures, whole-set figures, lesions, FP rate; and the confusion matrix."""
        c = self.num_classes
        counts = {k: self._stack(lambda r, k=k: r.counts[k]).astype(np.int64) for k in COUNTS}
        scores = {k: self._stack(lambda r, k=k: r.scores[k]) for k in SCORES}
        hd_px, hd_mm = self._stack(lambda r: r.hd95_px), self._stack(lambda r: r.hd95_mm)
        lesions = {k: self._stack(lambda r, k=k: r.lesions[k]).astype(np.int64) for k in LESION_COUNTS}
        surface = (np.stack([r.surface for r in self.records]) if self.records
                   else np.zeros((0, c, 2), np.int64))
        ref_pixels = counts["tp"] + counts["fn"]
        pred_pixels = counts["tp"] + counts["fp"]
        totals = {k: v.sum(0) for k, v in counts.items()}
        whole = scores_from_counts(totals["tp"], totals["fp"], totals["fn"])
        classes: dict[str, Any] = {}
        for k in range(1, c):
            neither = (ref_pixels[:, k] == 0) & (pred_pixels[:, k] == 0)
            per_image = {m: summarize(scores[m][:, k]) for m in SCORES}
            per_image["hd95_px"] = summarize(hd_px[:, k])
            per_image["hd95_mm"] = summarize(hd_mm[:, k])
            per_image["nsd"] = summarize([_ratio(*s) for s in surface[:, k]])
            lesion_totals = {key: int(lesions[key][:, k].sum()) for key in LESION_COUNTS}
            without = ref_pixels[:, k] == 0
            false_alarm = without & (pred_pixels[:, k] > 0)
            classes[self.class_names[k]] = {
                "index": k,
                "slices_with_class": int((ref_pixels[:, k] > 0).sum()),
                "n_empty": int(neither.sum()),
                "per_image": per_image,
                "whole_set": {**{m: float(whole[m][k]) for m in SCORES},
                              **{key: int(totals[key][k]) for key in COUNTS},
                              "nsd": _ratio(*surface[:, k].sum(0))},
                "lesions": {**lesion_totals, **detection_scores(*(lesion_totals[key] for key in LESION_COUNTS))},
                "false_positive_slices": {
                    "slices_without_class": int(without.sum()),
                    "slices_with_false_positive": int(false_alarm.sum()),
                    "rate": float(false_alarm.sum() / without.sum()) if without.any() else float("nan"),
                    "mean_false_positive_pixels": (float(pred_pixels[without, k].mean()) if without.any()
                                                   else float("nan")),
                },
            }
        foreground = list(classes.values())

        def macro(get) -> float:
            values = [get(v) for v in foreground]
            return summarize(values)["mean"]

        return {
            "num_images": len(self.records),
            "images_with_spacing": sum(r.spacing is not None for r in self.records),
            "empty_rule": EMPTY_RULE,
            "classes": classes,
            "mean_foreground": {
                **{f"per_image_{m}": macro(lambda v, m=m: v["per_image"][m]["mean"]) for m in SCORES},
                "per_image_hd95_px": macro(lambda v: v["per_image"]["hd95_px"]["mean"]),
                "per_image_hd95_mm": macro(lambda v: v["per_image"]["hd95_mm"]["mean"]),
                "per_image_nsd": macro(lambda v: v["per_image"]["nsd"]["mean"]),
                "whole_set_nsd": macro(lambda v: v["whole_set"]["nsd"]),
                **{f"whole_set_{m}": macro(lambda v, m=m: v["whole_set"][m]) for m in SCORES},
                "lesion_f1": macro(lambda v: v["lesions"]["f1"]),
            },
            "confusion_matrix": {"rows": "reference", "columns": "prediction",
                                 "labels": list(self.class_names), "counts": self.confusion.tolist()},
        }
