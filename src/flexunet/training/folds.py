"""``[train] member_folds``: each member of ``[model] members`` validates on data of its own.

1. member 1 trains on ``[train]`` and validates on ``[valid]``, as every member does without folds;
2. member k >= 2 validates on a fold of the training patients about as large as ``[valid]``, drawn as
   ``flexunet split`` draws a subset (:func:`flexunet.dataset.split.assign_groups`: whole patients, from
   the split's manifest, stratified by the lesion classes a patient shows, seeded with ``seed + k - 1``),
   and trains on the other training patients and ``[valid]``: the members learn from different patients
   and pick their best epochs on different ones;
3. no slice is in a member's training and its validation; without patient groups (no manifest behind
   the training folder) each slice is its own group, said in one warning.

Each member's validation is out of fold, so the run's post-processing and validation interval come from
those passes pooled (:mod:`flexunet.training.members`): ``[valid]`` is no longer unseen by the mean.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from flexunet.config.loader import Config
from flexunet.dataset.records import find_manifest, slice_groups
from flexunet.dataset.split import assign_groups, stratum_key
from flexunet.utils.errors import FlexUNetError

log = logging.getLogger(__name__)

MAX_SHARE = 0.5   # a fold takes at most half of the training slices
FOLD_RECORD = "member_fold.json"   # in member k's folder: what it trained and validated on


@dataclasses.dataclass(frozen=True)
class Fold:
    """What member ``k`` trains and validates on: indices into the run's train + valid pairs (the order of
    ``RunData.counts``) and the fold's groups."""

    k: int
    train: tuple[int, ...]
    valid: tuple[int, ...]
    groups: tuple[str, ...]
    unit: str          # "patients", "series" or "slices"

    def record(self, pairs: list[tuple[Path, Path]]) -> dict[str, Any]:
        """What the member's folder says it trained and validated on (member_fold.json)."""
        return {"member": self.k, "unit": self.unit, "fold_groups": list(self.groups),
                "train": [pairs[i][0].name for i in self.train], "valid": [pairs[i][0].name for i in self.valid],
                "why": "[train] member_folds: this member validated on a fold of the run's training "
                       f"{self.unit} and trained on the other training {self.unit} and the run's [valid]"}


def training_groups(cfg: Config, train_pairs: list[tuple[Path, Path]]) -> tuple[str, list[str]]:
    """(unit, the group of each training slice): patients or series from the split's manifest, else each
    slice its own group (a warning: a fold may then share patients with the member's training)."""
    names = [p.name for p, _ in train_pairs]
    found = slice_groups(find_manifest(Path(train_pairs[0][0]).parent, cfg), names)
    if found is not None:
        return found
    log.warning("[train] member_folds: no manifest gives the patients of %s (a folder made by `flexunet split` "
                "has one): each member's fold is drawn slice by slice, so it may share patients with that "
                "member's training and pick its best epoch optimistically", Path(train_pairs[0][0]).parent)
    return "slices", [Path(n).stem for n in names]


def draw_folds(cfg: Config, train_pairs: list, valid_pairs: list, counts: np.ndarray) -> list[Fold]:
    """The fold of every member k = 2..K (``cfg.model.members``); ``counts``: pixels per class of every
    train, then valid mask (the strata: the lesion classes each training group shows)."""
    unit, groups = training_groups(cfg, train_pairs)
    sizes: dict[str, int] = {}
    shown: dict[str, set[int]] = {}
    for i, g in enumerate(groups):
        sizes[g] = sizes.get(g, 0) + 1
        shown.setdefault(g, set()).update(int(c) for c in np.flatnonzero(counts[i]))
    if len(sizes) < 2:
        raise FlexUNetError(f"{cfg.where('train', 'member_folds')}: needs at least 2 training {unit} to draw a "
                            f"fold from ({Path(train_pairs[0][0]).parent} holds {len(sizes)}); set it to False")
    share = min(MAX_SHARE, len(valid_pairs) / len(train_pairs))
    strata = {g: stratum_key(c) for g, c in shown.items()}
    n_train = len(train_pairs)
    folds = []
    for k in range(2, cfg.model.members + 1):
        inside = assign_groups(sizes, (1.0 - share, share), cfg.train.seed + k - 1, strata)
        fold = {g for g, subset in inside.items() if subset == 1}
        valid = tuple(i for i, g in enumerate(groups) if g in fold)
        train = tuple(i for i, g in enumerate(groups) if g not in fold) + tuple(range(n_train, n_train + len(valid_pairs)))
        folds.append(Fold(k, train, valid, tuple(sorted(fold)), unit))
    return folds


def fold_data(data: Any, fold: Fold) -> Any:
    """The run's data (``RunData``) as member ``fold.k`` sees it: its train and valid pairs and their counts."""
    pairs = data.train_pairs + data.valid_pairs
    order = list(fold.train) + list(fold.valid)
    return dataclasses.replace(data, train_pairs=[pairs[i] for i in fold.train],
                               valid_pairs=[pairs[i] for i in fold.valid], counts=data.counts[order])
