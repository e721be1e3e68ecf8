"""How sure a whole-set Dice is: a percentile bootstrap interval over patients (or slices).

The figure is the one ``flexunet evaluate`` reports as the whole-set Dice of a class:
``2 TP / (2 TP + FP + FN)`` on counts summed over the set
(:func:`flexunet.model.metrics.dice_from_counts`).  Its interval answers "how much would this
figure move on another set of the same size, drawn the same way": the set's *units* are drawn
with replacement ``resamples`` times, each draw's counts summed and its Dice computed, and
the interval is the middle ``level`` of those Dice values (the percentile bootstrap).

A unit is a patient when the caller knows the patient of every slice: slices of one patient
share anatomy, scanner and lesions, so they move together, and resampling them one by one
would count one patient's luck many times and make the interval too narrow.  Without
patients, or with a single patient, the units are the slices (the result says so).

Pure numpy: per-unit counts are summed once (``np.add.at``), the draws become a (resamples,
units) matrix of multiplicities (``np.bincount``), and every draw's sums are one matrix
product, so 1000 draws over 1000 slices take milliseconds.  The same seed gives the same
interval.

No interval (``low``/``high`` None, ``note`` says why) when no unit's reference holds the
class: its Dice is then undefined (in neither mask) or 0 from false alarms alone, and no
resampling of the set can say how it would fare on lesions.  Draws in which the class is in
neither mask have no Dice and are left out of the percentiles (``valid`` counts the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SINGULAR = {"patients": "patient", "series": "series", "slices": "slice"}
FEW_UNITS = 10                   # below this many units a bootstrap can only recombine what little it has

DEFINITION = ("95% percentile bootstrap interval of the whole-set Dice (counts summed over the set): the "
              "patients (when the manifest names them; else the slices) are drawn with replacement 1000 times, "
              "each draw's counts summed and its Dice computed; the interval holds the middle 95% of those "
              "values. It shows how much the figure could move on another set of this size: two figures "
              "whose intervals overlap widely are not shown to differ by this set.")


@dataclass(frozen=True)
class Interval:
    """The bootstrap interval of one class's whole-set Dice."""

    dice: float                  # the point estimate: Dice of the summed counts (NaN: in neither mask)
    low: float | None            # None: no interval (``note`` says why)
    high: float | None
    unit: str                    # what was resampled: "patients", "series" or "slices"
    units: int                   # how many of them
    units_with_class: int        # of which hold the class in the reference
    valid: int = 0               # draws with a Dice (the class in one of the masks)
    note: str | None = None

    def text(self, digits: int = 2) -> str:
        """``0.62 [0.51, 0.71] over 9 patients`` (``0.00 (no interval)``: :func:`notes` says why)."""
        point = "n/a" if np.isnan(self.dice) else f"{self.dice:.{digits}f}"
        if self.low is None:
            return f"{point} (no interval)"
        held = "" if self.units_with_class == self.units else f" ({self.units_with_class} with the class)"
        return f"{point} [{self.low:.{digits}f}, {self.high:.{digits}f}] over {self.units} {self.unit}{held}"

    def as_json(self) -> dict[str, Any]:
        """The keys evaluation.json carries per class."""
        return {"dice_ci95": None if self.low is None else [self.low, self.high], "ci_unit": self.unit,
                "ci_units": self.units, "ci_units_with_class": self.units_with_class, "ci_note": self.note}

    @classmethod
    def from_json(cls, dice: float, entry: Mapping[str, Any]) -> Interval:
        """The interval :meth:`as_json` wrote into ``entry`` (no interval when its keys are missing)."""
        ci = entry.get("dice_ci95")
        dice = float("nan") if dice is None else float(dice)
        note = entry.get("ci_note") or (None if ci else "not computed (written by an older flexunet)")
        return cls(dice, ci[0] if ci else None, ci[1] if ci else None, str(entry.get("ci_unit", "slices")),
                   int(entry.get("ci_units", 0)), int(entry.get("ci_units_with_class", 0)), 0, note)


def notes(named: Mapping[str, Interval]) -> list[str]:
    """The notes of several classes' intervals, said once: a note every class shares as it is, others
    after their class's name (``ischemic: the class is in no reference mask ...``)."""
    found = {name: iv.note for name, iv in named.items() if iv.note}
    if found and len(found) == len(named) and len(set(found.values())) == 1:
        return [next(iter(found.values()))]
    return [f"{name}: {note}" for name, note in found.items()]


def unit_sums(counts: np.ndarray, groups: Sequence[Any] | None) -> tuple[np.ndarray, int]:
    """Per-slice counts (slices, ...) summed per group: ((groups, ...), number of groups).

    ``groups`` None: every slice its own unit.
    """
    counts = np.asarray(counts, np.float64)
    if groups is None:
        return counts, counts.shape[0]
    labels, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    if index.size != counts.shape[0]:
        raise ValueError(f"{index.size} group labels for {counts.shape[0]} slices")
    out = np.zeros((labels.size, *counts.shape[1:]), np.float64)
    np.add.at(out, index, counts)
    return out, labels.size


def draw_weights(units: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, units) multiplicities: row r counts how often each unit was drawn in draw r."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, units, size=(resamples, units))
    rows = np.arange(resamples)[:, None] * units
    return np.bincount((rows + picks).ravel(), minlength=resamples * units).reshape(resamples, units)


def dice_intervals(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, groups: Sequence[Any] | None = None,
                   unit: str = "patients", resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> list[Interval]:
    """Per class (column), the bootstrap interval of the whole-set Dice of per-slice counts (slices, classes).

    ``groups``: a label per slice (its patient, named ``unit``); None, or a single label, resamples
    the slices instead (a single patient's note says its slices are not independent).
    """
    if len(tp) == 0:
        raise ValueError("no slices to resample")
    tp, fp, fn = (np.asarray(c, np.float64).reshape(len(c), -1) for c in (tp, fp, fn))
    note = None
    if groups is not None and len(set(map(str, groups))) < 2:
        note = (f"one {SINGULAR.get(unit, unit)} only: resampled over its slices, which are not independent, so "
                f"the interval is too narrow")
        groups = None
    if groups is None:
        unit = "slices"
    stacked, n = unit_sums(np.stack([tp, fp, fn], axis=1), groups)       # (units, 3, classes)
    weights = draw_weights(n, resamples, seed).astype(np.float64)
    sums = (weights @ stacked.reshape(n, -1)).reshape(resamples, *stacked.shape[1:])   # (resamples, 3, classes)
    tail = (1.0 - level) / 2.0 * 100.0
    out = []
    for c in range(tp.shape[1]):
        u_tp, u_fp, u_fn = stacked[:, 0, c], stacked[:, 1, c], stacked[:, 2, c]
        total = 2 * u_tp.sum() + u_fp.sum() + u_fn.sum()
        point = float(2 * u_tp.sum() / total) if total else float("nan")
        holding = int(((u_tp + u_fn) > 0).sum())
        if holding == 0:
            why = ("the class is in no reference mask" + (": its Dice of 0 comes from false alarms alone"
                                                          if total else " and never predicted"))
            out.append(Interval(point, None, None, unit, n, 0, 0, why))
            continue
        denom = 2 * sums[:, 0, c] + sums[:, 1, c] + sums[:, 2, c]
        ok = denom > 0
        values = 2 * sums[ok, 0, c] / denom[ok]
        low, high = np.percentile(values, [tail, 100.0 - tail])
        few = None if note or n >= FEW_UNITS else (f"only {n} {unit}: a bootstrap over so few is rough and tends "
                                                   f"to be too narrow")
        out.append(Interval(point, float(low), float(high), unit, n, holding, int(ok.sum()), note or few))
    return out
