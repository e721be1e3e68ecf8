"""What ``flexunet evaluate`` adds for a reader: volumes per patient, calibration, uncertainty vs Dice.

:class:`Review` collects, image by image, the model's softmax, the reference and the
prediction, and gives three sections of evaluation.json:

- ``calibration``: per class, the expected calibration error of its probability (one-vs-rest
  over pixels, :data:`flexunet.inference.uncertainty.BINS` bins) and the reliability diagram's bins;
- ``uncertainty``: the Spearman rank correlation of each slice's uncertainty score (mean
  normalised entropy, :func:`flexunet.inference.uncertainty.slice_score`) with its Dice (mean over the
  foreground classes present in the reference or the prediction); negative means the score
  points at the slices the model gets wrong;
- ``volumes``: per patient and series (geometry from prepare's manifest: patient, series,
  slice position or thickness, pixel spacing at the model's size; a NIfTI case is one), reference
  and predicted mL per class with signed, absolute and relative errors and the 3-D Dice over the
  volume's slices, and per class the agreement (bias, limits of agreement, Pearson r).  A series
  whose spacing is missing or uneven gets no volume, with its reason in ``skipped``.

Figures: ``reliability.png`` and ``bland_altman.png``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flexunet.inference.uncertainty import Calibration, entropy_map, slice_score, spearman
from flexunet.inference.volumes import SliceGeometry, agreement, counts_volumes, group_series
from flexunet.utils.errors import DataError
from flexunet.utils.plots import new_figure, png_bytes

log = logging.getLogger(__name__)

def manifest_geometry(manifest: Path | None, spacings: dict[str, tuple[float, float]]) -> dict[str, SliceGeometry]:
    """Per test image name with a pixel spacing (at the model's size): its geometry from the manifest."""
    if manifest is None or not spacings:
        return {}
    try:
        items = {str(r["id"]): r for r in json.loads(manifest.read_text(encoding="utf-8"))["items"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); no volumes", manifest, exc)
        return {}
    out = {}
    for name, spacing in spacings.items():
        row = items.get(Path(name).stem)
        if row is None or not row.get("patient_id"):
            continue
        out[name] = SliceGeometry(name, str(row["patient_id"]), str(row.get("series_uid") or "unknown"),
                                  tuple(spacing), row.get("slice_position"), row.get("slice_thickness"),
                                  row.get("instance_number"))
    return out


def slice_dice(reference: np.ndarray, prediction: np.ndarray, num_classes: int) -> float:
    """Mean Dice over foreground classes present in either mask; NaN when neither has foreground."""
    values = []
    for k in range(1, num_classes):
        r, p = reference == k, prediction == k
        total = int(r.sum() + p.sum())
        if total:
            values.append(2.0 * int((r & p).sum()) / total)
    return float(np.mean(values)) if values else float("nan")


class Review:
    """Collects calibration, per-slice uncertainty and Dice, and per-slice class counts."""

    def __init__(self, class_names: Sequence[str], geometry: dict[str, SliceGeometry]) -> None:
        self.class_names = list(class_names)
        self.geometry = geometry
        self.calibration = Calibration(len(class_names))
        self.slices: list[dict[str, Any]] = []
        self.counts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}   # reference, predicted, both

    def add(self, name: str, probs: np.ndarray, reference: np.ndarray, prediction: np.ndarray) -> None:
        k = len(self.class_names)
        self.calibration.add(probs, reference)
        score = slice_score(entropy_map(probs), prediction)
        self.slices.append({"name": name, "score": score, "dice": slice_dice(reference, prediction, k)})
        if name in self.geometry:
            self.counts[name] = (np.bincount(reference.ravel(), minlength=k)[:k],
                                 np.bincount(prediction.ravel(), minlength=k)[:k],
                                 np.bincount(reference[reference == prediction].ravel(), minlength=k)[:k])

    def report(self) -> dict[str, Any]:
        return {"calibration": self._calibration(), "uncertainty": self._uncertainty(),
                "volumes": self._volumes()}

    def _calibration(self) -> dict[str, Any]:
        return {"definition": "one-vs-rest per class over pixels, 10 equal-width probability bins; "
                              "ECE = sum over bins of pixel share x |fraction of the class - mean probability|",
                "classes": {name: {"ece": self.calibration.ece(k), "reliability": self.calibration.diagram(k)}
                            for k, name in enumerate(self.class_names)}}

    def _uncertainty(self) -> dict[str, Any]:
        scores = [s["score"] for s in self.slices]
        dices = [s["dice"] for s in self.slices]
        ranked = sorted(self.slices, key=lambda s: (-s["score"], s["name"]))
        return {"definition": "slice score = mean normalised entropy of the model's softmax (no flips) over "
                              "predicted-foreground or "
                              "entropy > 0.5 pixels; Dice = mean over foreground classes in either mask; "
                              "slices with no foreground in either are left out",
                "spearman_score_vs_dice": spearman(scores, dices),
                "n": int(sum(math.isfinite(d) for d in dices)),
                "most_uncertain": ranked[:10]}

    def _volumes(self) -> dict[str, Any]:
        rows, skipped = [], []
        known = [self.geometry[n] for n in self.counts]
        if known and all(g.position is None and g.thickness is None for g in known):
            # PNG-sourced slices carry no spacing between slices: say so once, not once per patient
            log.info("no volumes: the evaluated slices carry no slice positions or thickness (DICOM-sourced "
                     "data with ImagePositionPatient or SliceThickness gives volumes)")
            return {"per_patient": [], "agreement": {}, "skipped": ["no slice positions or thickness"],
                    "source": "prepare manifest (no slice geometry)"}
        for (patient, series), members in group_series([self.geometry[n] for n in self.counts]).items():
            try:
                ref = counts_volumes(members, [self.counts[m.name][0] for m in members], self.class_names)
                pred = counts_volumes(members, [self.counts[m.name][1] for m in members], self.class_names)
            except DataError as exc:
                log.warning("no volume: %s", exc)
                skipped.append(str(exc))
                continue
            voxels = np.sum([self.counts[m.name] for m in members], axis=0)     # (3, K) summed over the slices
            for k, name in enumerate(self.class_names[1:], start=1):
                r, p = ref[name], pred[name]
                both = voxels[0, k] + voxels[1, k]
                rows.append({"patient": patient, "series": series, "class": name, "slices": len(members),
                             "reference_ml": r, "predicted_ml": p, "error_ml": p - r, "abs_error_ml": abs(p - r),
                             "rel_error": abs(p - r) / r if r > 0 else float("nan"),
                             "dice_3d": 2.0 * float(voxels[2, k]) / float(both) if both else float("nan")})
        stats = {name: agreement([r["reference_ml"] for r in rows if r["class"] == name],
                                 [r["predicted_ml"] for r in rows if r["class"] == name])
                 for name in self.class_names[1:]} if rows else {}
        return {"per_patient": rows, "agreement": stats, "skipped": skipped,
                "source": "prepare manifest (patient, series, slice position / thickness, pixel spacing)"}


def reliability_png(calibration: dict[str, Any]) -> bytes:
    """Reliability diagram: fraction of the class against mean probability per bin, one line per class."""
    fig = new_figure(5.0, 4.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for name, c in calibration["classes"].items():
        bins = c["reliability"]
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                    label=f"{name} (ECE {c['ece']:.3f})")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of pixels of the class")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability diagram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def bland_altman_png(volumes: dict[str, Any]) -> bytes:
    """Bland-Altman plot: predicted - reference mL against their mean, per class, with bias and limits."""
    names = list(volumes["agreement"])
    fig = new_figure(4.6 * max(1, len(names)), 4.2)
    for i, name in enumerate(names or ["(no volumes)"], start=1):
        ax = fig.add_subplot(1, max(1, len(names)), i)
        rows = [r for r in volumes["per_patient"] if r["class"] == name]
        mean = [(r["reference_ml"] + r["predicted_ml"]) / 2 for r in rows]
        diff = [r["predicted_ml"] - r["reference_ml"] for r in rows]
        ax.scatter(mean, diff, s=18)
        stats = volumes["agreement"].get(name, {})
        for key, style in (("bias_ml", "-"), ("loa_low_ml", "--"), ("loa_high_ml", "--")):
            if math.isfinite(stats.get(key, float("nan"))):
                ax.axhline(stats[key], color="grey", linestyle=style, linewidth=1)
        ax.set_xlabel("mean of reference and predicted (mL)")
        ax.set_ylabel("predicted - reference (mL)")
        ax.set_title(name)
    fig.tight_layout()
    return png_bytes(fig)
