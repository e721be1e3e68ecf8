"""The report's inputs: the files ``flexunet evaluate`` and ``flexunet train`` left, read and checked.

``evaluation.json`` and ``per_image.csv`` of the eval folder (a ReportError saying how to
make them when missing), the images ranked by their mean foreground Dice for the gallery,
the dataset and the evaluated folders the page describes, and the epoch-change montages.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flexunet.config.loader import Config
from flexunet.model.run_folder import best_model_path
from flexunet.model.trained import model_sha256
from flexunet.utils.errors import FlexUNetError

log = logging.getLogger("flexunet.report.build")


RANKS = ("best", "median", "worst")


@dataclass(frozen=True)
class PredictionRule:
    """How ``evaluate`` predicted the masks it scored (evaluation.json's ``prediction``), as the report
    predicts and describes them again; a value evaluate would not write reads as the plain default."""

    flips: tuple[int, ...] = ()           # mirror axes averaged over
    weight: float = 1.0                   # [infer] foreground_weight (absent before it existed: 1)
    sizes: int | list[int] = 0            # smallest component kept, per class (one size from older versions)
    sizes_from: str = ""

    @classmethod
    def of(cls, prediction: Mapping[str, Any] | None) -> "PredictionRule":
        p = prediction if isinstance(prediction, Mapping) else {}
        flips = p.get("flip_tta_axes") or ()
        flips = tuple(int(a) for a in flips) if isinstance(flips, (list, tuple)) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in flips) else ()
        weight = p.get("foreground_weight", 1.0)
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0):
            weight = 1.0
        sizes = p.get("min_component_size") or 0
        if not (isinstance(sizes, int) or isinstance(sizes, list) and all(isinstance(n, int) for n in sizes)):
            sizes = 0
        return cls(flips, float(weight), sizes, str(p.get("min_component_size_from", "")))


class ReportError(FlexUNetError):
    """A run folder that lacks what the report needs."""


def eval_dir_of(cfg: Config) -> Path:
    """Where ``flexunet evaluate`` wrote its report: ``[eval] eval_dir``, else ``[train] eval_dir``."""
    return Path(cfg.eval.eval_dir or cfg.train.eval_dir)


def load_evaluation(eval_dir: Path) -> dict[str, Any]:
    """``evaluation.json`` of ``eval_dir``; a ReportError saying how to make it when missing or unreadable."""
    path = Path(eval_dir) / "evaluation.json"
    if not path.is_file():
        raise ReportError(f"{path}: not found; run `flexunet evaluate CONFIG` first (it writes evaluation.json "
                          f"to [eval] eval_dir)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc}); run `flexunet evaluate CONFIG` again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict):
        raise ReportError(f"{path}: no 'classes' table; expected the evaluation.json written by "
                          f"`flexunet evaluate CONFIG` (run it again)")
    return doc


def model_mismatch(cfg: Config, evaluation: Mapping[str, Any]) -> str | None:
    """A sentence when evaluation.json's figures are not known to be those of the run folder's current
    best model (its ``model_sha256`` differs from the file's, or is not recorded); None when they are."""
    current = best_model_path(cfg.train.model_dir)
    recorded = evaluation.get("model_sha256")
    if not isinstance(recorded, str) or not recorded:
        return (f"evaluation.json does not record which model it evaluated (written by an older flexunet, or for "
                f"a model passed in code), so these figures may be for an earlier model than {current}; run "
                f"flexunet evaluate again")
    if model_sha256(current) != recorded:
        return (f"these figures were computed for an earlier model: {current} has changed since evaluation.json "
                f"was written; run flexunet evaluate again")
    return None


def _number(text: str) -> float:
    return float(text) if text.strip() else float("nan")


def read_per_image(path: Path) -> list[dict[str, Any]]:
    """Rows of ``per_image.csv`` (image, class, dice...); empty cells read as NaN."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: not found; run `flexunet evaluate CONFIG` first (it writes per_image.csv "
                          f"beside evaluation.json)")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{"image": r["image"], "class": r["class"], "dice": _number(r["dice"])} for r in rows]
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise ReportError(f"{path}: unreadable ({exc}); expected the per_image.csv written by "
                          f"`flexunet evaluate CONFIG` (run it again)") from None


def image_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per image, the mean Dice over its foreground classes (NaN ones left out).

    Images where every class is NaN (absent from both masks) are left out entirely.
    """
    per: dict[str, list[float]] = {}
    for row in rows:
        per.setdefault(row["image"], []).append(float(row["dice"]))
    out = {}
    for name, values in per.items():
        valid = [v for v in values if not math.isnan(v)]
        if valid:
            out[name] = float(np.mean(valid))
    return out


def rank_images(means: Mapping[str, float], per_rank: int) -> dict[str, list[tuple[str, float]]]:
    """The best, median and worst images by mean Dice, ``per_rank`` each, no image twice.

    With fewer than ``3 * per_rank`` images each rank gets ``len // 3`` (at least one for
    best, then worst, then median while images last).  Best is listed best first, worst
    worst first, median around the middle of the ranking (ties: by name).
    """
    order = sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))
    n = len(order)
    if per_rank <= 0 or n == 0:
        return {rank: [] for rank in RANKS}
    k = min(per_rank, max(1, n // 3))
    best = order[:k]
    worst = order[max(k, n - k):][::-1]
    middle = order[k:max(k, n - k)]
    start = max(0, (len(middle) - k) // 2)
    return {"best": best, "median": middle[start:start + k], "worst": worst}


def dataset_dir_of(cfg: Config) -> tuple[Path | None, str]:
    """The split dataset to describe, and which setting named it."""
    if cfg.report.dataset_dir is not None:
        return Path(cfg.report.dataset_dir), "[report] dataset_dir"
    if cfg.split.output_dir is not None:
        return Path(cfg.split.output_dir) / cfg.split.name, "[split] output_dir/name"
    images = cfg.train.images_dir
    if images is not None and Path(images).parent.name == "train":
        return Path(images).parent.parent, "the folder above [train] images_dir"
    return None, "no [report] dataset_dir, [split] output_dir or split-style [train] images_dir"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); left out of the report", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


def evaluated_folders(cfg: Config, evaluation: Mapping[str, Any]) -> tuple[Path, Path] | None:
    """The (images, masks) folders the evaluation scored, as evaluation.json records them (with a
    warning when [test] now differs); None for an evaluation.json without them ([test] is used)."""
    images, masks = evaluation.get("test_images_dir"), evaluation.get("test_masks_dir")
    if images and masks:
        images, masks = Path(images), Path(masks)
        if cfg.test.images_dir is not None and Path(cfg.test.images_dir).resolve() != images.resolve():
            log.warning("report: the evaluation scored %s, not [test] images_dir = %s; the report shows the "
                        "evaluated images (run `flexunet evaluate` again to report on %s)", images,
                        cfg.test.images_dir, cfg.test.images_dir)
        return images, masks
    log.warning("report: evaluation.json does not say which folders it scored (written by an older flexunet); "
                "the gallery uses [test] images_dir — run `flexunet evaluate` again to be sure they match")
    return None


def epoch_montages(folder: Path) -> list[tuple[int, Path]]:
    """``Epoch_<n>_montage.png`` of ``folder`` as (n, path), in epoch order."""
    found = []
    for path in Path(folder).glob("Epoch_*_montage.png") if Path(folder).is_dir() else []:
        match = re.fullmatch(r"Epoch_(\d+)_montage\.png", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)
