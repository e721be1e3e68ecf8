"""``[train] average_best = K``: the model a run ends with is the mean of the weights of its K best epochs.

One epoch's validation loss over a few dozen slices is noisy, so which epoch ranks first is partly
chance, and one set of weights carries that epoch's quirks.  The K epochs with the best monitored
values are kept as they come (``best_epochs/epoch-NNN.npz`` in ``[train] model_dir``, each written
whole; one pushed out of the K is removed; ``state["kept_epochs"]`` says which, so ``--resume`` goes
on ranking where it stopped).  When training ends, the best model becomes their element-wise mean,
BatchNorm's moving statistics included, saved over the single best epoch's; the run's metadata lists
the epochs (``averaged_epochs``).  Until then, and in a run interrupted before its end, the best model
is the single best epoch, as without the option.  Measured: docs/generalisation.md, eleventh round.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flexunet.utils.io import atomic_write, remove_path

if TYPE_CHECKING:  # annotations only: this module never imports Keras
    import keras

log = logging.getLogger(__name__)

FOLDER = "best_epochs"


def epoch_file(model_dir: Path, epoch: int) -> Path:
    return model_dir / FOLDER / f"epoch-{epoch:03d}.npz"


def keep(model: keras.Model, model_dir: Path, state: dict, epoch: int, value: float, k: int, mode: str) -> None:
    """Rank ``epoch`` (1-based) by its monitored ``value`` among the kept; save its weights when it is
    among the ``k`` best (``mode`` "min" or "max"), remove the files of epochs no longer among them."""
    if not math.isfinite(value):
        return
    kept = [[int(e), float(v)] for e, v in state.get("kept_epochs", []) if int(e) != epoch]
    ranked = sorted(kept + [[epoch, float(value)]], key=lambda ev: ev[1] if mode == "min" else -ev[1])[:k]
    if any(e == epoch for e, _ in ranked):
        weights = model.get_weights()
        with atomic_write(epoch_file(model_dir, epoch)) as fh:
            np.savez(fh, *weights)
    state["kept_epochs"] = ranked
    wanted = {epoch_file(model_dir, e).name for e, _ in ranked}
    for path in (model_dir / FOLDER).glob("epoch-*.npz"):
        if path.name not in wanted:
            remove_path(path)


def mean_weights(model_dir: Path, state: dict) -> tuple[list[np.ndarray], list[int]] | None:
    """The element-wise mean of the kept epochs' weights and those epochs, in order; None when fewer than
    two are there (a kept epoch whose file is gone is left out with a warning)."""
    sums: list[np.ndarray] | None = None
    used = []
    for epoch, _ in state.get("kept_epochs", []):
        path = epoch_file(model_dir, int(epoch))
        try:
            with np.load(path) as data:
                arrays = [data[f"arr_{i}"] for i in range(len(data.files))]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: epoch %d left out of the average: %s", path, epoch, exc)
            continue
        if sums is None:
            sums, dtypes = [a.astype(np.float64) for a in arrays], [a.dtype for a in arrays]
        elif len(arrays) != len(sums) or any(a.shape != s.shape for a, s in zip(arrays, sums)):
            log.warning("%s: epoch %d left out of the average: other weight shapes", path, epoch)
            continue
        else:
            for s, a in zip(sums, arrays):
                s += a
        used.append(int(epoch))
    if sums is None or len(used) < 2:
        return None
    return [(s / len(used)).astype(d) for s, d in zip(sums, dtypes)], sorted(used)


def average_into(model: Any, model_dir: Path, state: dict) -> bool:
    """Put the mean of the kept epochs' weights into ``model`` and record the epochs in ``state``
    (``averaged_epochs``); False, with the model unchanged, when fewer than two epochs are kept."""
    found = mean_weights(model_dir, state)
    if found is None:
        return False
    weights, epochs = found
    model.set_weights(weights)
    state["averaged_epochs"] = epochs
    log.info("the best model is the mean of the weights of the %d best epochs by the monitored value: %s",
             len(epochs), ", ".join(map(str, epochs)))
    return True
