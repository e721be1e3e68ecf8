"""Post-processing a run chooses on its own validation set: the smallest predicted component kept, per class.

At the end of training the best model predicts the validation images once (the pass that gives the
validation interval, :mod:`flexunet.training.certainty`).  :class:`ComponentChooser` keeps, per
foreground class, the size of every predicted 8-connected component and how many of its pixels are
right; :meth:`ComponentChooser.choose` then computes the class's whole-set validation Dice with the
components smaller than each of :func:`candidate_sizes` removed.  A class keeps the size with the
highest Dice where it beats keeping every component by at least :data:`MIN_GAIN` (more than rounding),
else 0 (keep all); ties go to the smaller size.  The largest candidate is 20 px of a 128x128 input
(0.12% of it), so a choice the validation set got wrong removes only specks.  Sizes are pixels at
the model's input size.

The record, :data:`RECORD` in ``[train] model_dir``, is read where the model predicts:
``[infer] min_component_size = "auto"`` (the default) gives each class the run's choice (0 for a
run without a record), scaled to the pixels of the mask written; a number sets one size for every
class, in the written mask's pixels, as before.

Why: on noisy images (a sharper kernel, a lower dose) a net trained on another scanner marks specks
of a few pixels as lesions; removing them where the validation set says it pays is the
post-processing nnU-Net chooses the same way.  Measured in docs/generalisation.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flexunet.model.metrics import EIGHT
from flexunet.model.predict import prediction_flips
from flexunet.utils.io import read_json_record, write_json
from flexunet.utils.lazy import LazyModule

log = logging.getLogger(__name__)
ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

RECORD = "postprocess.json"
BASE_CANDIDATES = (3, 5, 8, 12, 20)   # pixels of a 128x128 input; scaled with the input's area
MIN_GAIN = 0.001                      # validation Dice a size must add over keeping every component


def candidate_sizes(height: int, width: int) -> tuple[int, ...]:
    """The sizes tried, in pixels of a ``height`` x ``width`` input (0 first: keep every component)."""
    scale = height * width / (128 * 128)
    return (0, *sorted({max(2, round(s * scale)) for s in BASE_CANDIDATES}))


class ComponentChooser:
    """Accumulates, over the validation slices, each foreground class's predicted components (size and
    correct pixels) and reference pixels; :meth:`choose` gives the record."""

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        self.num_classes = num_classes
        self.shape = (height, width)
        self.sizes: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.correct: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.reference = np.zeros(num_classes, np.int64)
        self.slices = 0

    def add(self, ref: np.ndarray, pred: np.ndarray) -> None:
        """One slice's reference and predicted (H, W) class indices."""
        self.slices += 1
        for k in range(1, self.num_classes):
            self.reference[k] += int((ref == k).sum())
            labels, n = ndimage.label(pred == k, structure=EIGHT)
            if n:
                self.sizes[k].append(np.bincount(labels.ravel(), minlength=n + 1)[1:])
                self.correct[k].append(np.bincount(labels.ravel(), weights=(ref == k).ravel(),
                                                   minlength=n + 1)[1:].astype(np.int64))

    def merge(self, other: "ComponentChooser") -> None:
        """Add the slices ``other`` accumulated (a pass of the same model shape)."""
        self.slices += other.slices
        self.reference += other.reference
        for k in range(1, self.num_classes):
            self.sizes[k] += other.sizes[k]
            self.correct[k] += other.correct[k]

    def dice(self, k: int, min_size: int) -> float | None:
        """Class ``k``'s whole-set Dice with its components smaller than ``min_size`` removed (None: the
        class is neither in the references nor in the kept predictions)."""
        sizes = np.concatenate(self.sizes[k]) if self.sizes[k] else np.zeros(0, np.int64)
        correct = np.concatenate(self.correct[k]) if self.correct[k] else np.zeros(0, np.int64)
        kept = sizes >= min_size
        total = int(sizes[kept].sum()) + int(self.reference[k])
        return 2.0 * float(correct[kept].sum()) / total if total else None

    def choose(self, class_names: Sequence[str]) -> dict[str, Any]:
        """The record: per class the size kept and the validation Dice of every candidate."""
        candidates = candidate_sizes(*self.shape)
        chosen = [0] * self.num_classes
        classes: dict[str, Any] = {}
        for k in range(1, self.num_classes):
            scores = {size: self.dice(k, size) for size in candidates}
            keep_all = scores[0]
            best = max(candidates, key=lambda s: (scores[s] if scores[s] is not None else -1.0, -s))
            if keep_all is not None and scores[best] is not None and scores[best] >= keep_all + MIN_GAIN:
                chosen[k] = best
            classes[class_names[k]] = {"min_component_size": chosen[k],
                                       "valid_dice": {str(s): d for s, d in scores.items()}}
        return {"min_component_size": chosen, "input_size": list(self.shape), "slices": self.slices,
                "min_gain": MIN_GAIN, "classes": classes,
                "why": "per class, the smallest predicted component kept is the candidate size with the highest "
                       f"whole-set validation Dice where it adds at least {MIN_GAIN} over keeping every "
                       "component, else 0 (keep all); sizes in pixels of the model's input"}


def write_record(model_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(model_dir) / RECORD
    write_json(path, record)
    return path


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The run folder's record (None where it has none; an unreadable one: a warning and None)."""
    path = Path(model_dir) / RECORD
    doc = read_json_record(path, "every predicted component is kept")
    if doc is None:
        return None
    sizes = doc.get("min_component_size")
    if not (isinstance(sizes, list) and all(isinstance(s, int) and s >= 0 for s in sizes)):
        log.warning("%s: no list of sizes under \"min_component_size\"; every predicted component is kept", path)
        return None
    return doc


@dataclass(frozen=True)
class ComponentSizes:
    """The smallest predicted component a command keeps per class (index 0, the background, unused), read
    once per command (:func:`run_sizes`).  ``model_shape``: the sizes are pixels of the model's input (the
    run's record), scaled to each mask written; None: pixels of the mask itself (a number in the config)."""

    sizes: tuple[int, ...]
    model_shape: tuple[int, int] | None
    source: str                            # "postprocess.json" or "[infer] min_component_size"

    def at(self, shape: tuple[int, int] | None = None) -> tuple[int, ...]:
        """The sizes in masks of ``shape`` pixels (default: the model's input)."""
        if self.model_shape is None or shape is None:
            return self.sizes
        scale = (shape[0] * shape[1]) / float(self.model_shape[0] * self.model_shape[1])
        return tuple(0 if s <= 1 else max(2, round(s * scale)) for s in self.sizes)

    def text(self, class_names: Sequence[str], shape: tuple[int, int] | None = None) -> str:
        """How the sizes read in a log line: "ischemic 5 px, hemorrhagic 0 px (the run's postprocess.json)"."""
        sizes = self.at(shape)
        where = "the run's postprocess.json" if self.source == RECORD else self.source
        return ", ".join(f"{class_names[k]} {sizes[k]} px" for k in range(1, len(sizes))) + f" ({where})"


def component_sizes(setting: int | str, model_dir: Path, num_classes: int, model_shape: tuple[int, int],
                    decision: dict[str, Any] | None = None) -> ComponentSizes:
    """``[infer] min_component_size`` when a number (every class, in the written mask's pixels), else
    ("auto") the run's record in pixels of the model's input of ``model_shape`` (zeros without one).
    ``decision``: how this command decides (:func:`decision_of`); a record chosen for masks decided
    otherwise is still used, with a warning."""
    if setting != "auto":
        return ComponentSizes((int(setting),) * num_classes, None, "[infer] min_component_size")
    record = read_record(model_dir)
    chosen_for = (record or {}).get("decision")
    if decision is not None and isinstance(chosen_for, dict) and chosen_for != decision:
        log.warning("%s: the smallest components kept were chosen for masks decided with %s; this command "
                    "decides with %s, so the removal may not suit its masks (train again with these [infer] "
                    "settings, or set [infer] min_component_size)", Path(model_dir) / RECORD,
                    _decision_text(chosen_for), _decision_text(decision))
    sizes = (list(record["min_component_size"]) if record else []) + [0] * num_classes
    return ComponentSizes(tuple(sizes[:num_classes]), tuple(model_shape), RECORD)


def decision_of(cfg: Any) -> dict[str, Any]:
    """How a config's commands decide a pixel's class: ``[infer] foreground_weight`` and the flip TTA axes."""
    return {"foreground_weight": float(cfg.infer.foreground_weight),
            "flip_tta_axes": list(prediction_flips(cfg))}


def _decision_text(decision: dict[str, Any]) -> str:
    axes = decision.get("flip_tta_axes") or []
    return (f"foreground_weight {decision.get('foreground_weight')} and "
            + (f"flip TTA on axes {', '.join(map(str, axes))}" if axes else "no flip TTA"))


def run_sizes(cfg: Any) -> ComponentSizes:
    """:func:`component_sizes` of a config: ``[infer] min_component_size`` and ``[train] model_dir``'s record."""
    return component_sizes(cfg.infer.min_component_size, cfg.train.model_dir, cfg.model.num_classes,
                           (cfg.model.image_height, cfg.model.image_width), decision_of(cfg))
