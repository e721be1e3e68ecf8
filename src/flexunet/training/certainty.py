"""How sure the best epoch's validation Dice is: its 95% bootstrap interval, said once when training ends.

Keras' validation pass sums each class's counts over the whole set, so the per-slice counts a
bootstrap needs are not kept.  One forward pass of the best model over the validation set (the
cost of one epoch's validation, a fraction of one training epoch) gives them; the interval is
then :func:`flexunet.model.intervals.dice_intervals` over the validation patients (from the
manifest, else the slices), seeded with ``[train] seed``.  The point estimate is the best epoch's
validation Dice computed again from the same counts, the model run as ``infer`` runs it (its flips and
decision weight: with neither, the ``val_dice_<class>`` the epoch logged).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from flexunet.config.loader import Config
from flexunet.dataset.records import find_manifest, slice_groups
from flexunet.model.intervals import Interval, dice_intervals, notes
from flexunet.model.metrics import class_counts
from flexunet.model.postprocess import ComponentChooser
from flexunet.model.predict import decide, predict_probs, prediction_flips
from flexunet.model.run_folder import best_model_path

log = logging.getLogger(__name__)


def valid_counts(model: Any, dataset: Any, batch_size: int, num_classes: int,
                 chooser: ComponentChooser | None = None, foreground_weight: float = 1.0,
                 flips: tuple[int, ...] = ()) -> np.ndarray:
    """Per-slice (tp, fp, fn) of every class over a validation dataset of (images, one-hot) batches, each
    slice predicted and its classes decided as ``infer`` does (averaged over the mirrors ``flips``,
    :func:`flexunet.model.predict.decide` at ``foreground_weight``): (slices, 3, classes); each slice
    also goes to ``chooser`` (the post-processing choice)."""
    rows = []
    for images, onehot in dataset:
        probs = predict_probs(model, np.asarray(images), flips, pad_to=batch_size)
        for ref, pred in zip(np.asarray(onehot).argmax(-1), decide(probs, foreground_weight)):
            if chooser is not None:
                chooser.add(ref, pred)
            counts = class_counts(ref, pred, num_classes)
            rows.append([counts["tp"], counts["fp"], counts["fn"]])
    return np.asarray(rows, np.float64).reshape(len(rows), 3, num_classes)


@dataclasses.dataclass
class Pool:
    """The members' own validation passes pooled (``[train] member_folds``: each is out of fold): their
    per-slice counts and slices, and one post-processing chooser fed by all of them."""

    chooser: ComponentChooser
    counts: list = dataclasses.field(default_factory=list)
    pairs: list = dataclasses.field(default_factory=list)

    def add(self, counts: np.ndarray, pairs: list[tuple[Path, Path]], chooser: ComponentChooser) -> None:
        self.counts.append(counts)
        self.pairs.extend(pairs)
        self.chooser.merge(chooser)


def best_epoch_intervals(cfg: Config, model: Any, dataset: Any, pairs: list[tuple[Path, Path]],
                         state: dict, chooser: ComponentChooser | None = None,
                         label: str | None = None, pool: Pool | None = None) -> dict[str, Interval]:
    """Per foreground class, the best epoch's validation Dice with its interval (loads the best model's
    weights into ``model`` when the last epoch was not the best); logs one line.  The same pass feeds
    ``chooser`` (:mod:`flexunet.model.postprocess`), and with ``chooser``, ``pool``.  ``label``: ``model``
    is the run's best model as it is, named so in the line (the members' mean)."""
    if not (label or state.get("best_epoch")):
        return {}
    begun = time.perf_counter()
    if label is None and state["best_epoch"] != state["epoch"]:
        model.load_weights(best_model_path(cfg.train.model_dir))
    counts = valid_counts(model, dataset, cfg.train.batch_size, cfg.model.num_classes, chooser,
                          cfg.infer.foreground_weight, prediction_flips(cfg))
    if len(counts) != len(pairs):
        log.warning("validation intervals skipped: the pass gave %d of %d slices", len(counts), len(pairs))
        return {}
    if pool is not None and chooser is not None:
        pool.add(counts, pairs, chooser)
    return counts_intervals(cfg, counts, pairs, label or f"best epoch {state['best_epoch']}", begun)


def pooled_intervals(cfg: Config, pool: Pool, label: str) -> dict[str, Interval]:
    """The pooled passes' validation Dice with its interval per foreground class; one line ({} when empty)."""
    if not pool.counts:
        return {}
    return counts_intervals(cfg, np.concatenate(pool.counts), pool.pairs, label, time.perf_counter())


def counts_intervals(cfg: Config, counts: np.ndarray, pairs: list[tuple[Path, Path]], label: str,
                     begun: float) -> dict[str, Interval]:
    """Per foreground class, the Dice of the per-slice ``counts`` of ``pairs`` with its interval over their
    patients (else slices); logs one line naming the model ``label``."""
    grouping = slice_groups(find_manifest(Path(pairs[0][0]).parent, cfg), [p.name for p, _ in pairs])
    unit, groups = grouping if grouping is not None else ("slices", None)
    found = dice_intervals(counts[:, 0], counts[:, 1], counts[:, 2], groups, unit, seed=cfg.train.seed)
    out = {cfg.class_names[k]: found[k] for k in range(1, cfg.model.num_classes)}
    log.info("%s, validation Dice with its 95%% interval: %s (%.1f s)%s", label,
             "; ".join(f"{name} {iv.text(3)}" for name, iv in out.items()), time.perf_counter() - begun,
             "".join(f"; {n}" for n in notes(out)))
    return out
