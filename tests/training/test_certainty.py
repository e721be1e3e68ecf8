"""flexunet.training.certainty: the best epoch's validation Dice, scored again per slice with its interval.

The "colour model" of conftest picks class 1 where an image is green, so the figures follow from how
the validation images are painted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import GREEN, colour_model, make_cfg
from flexunet.training.certainty import best_epoch_intervals

CLASSES = ("background", "ischemic", "hemorrhagic")


def _valid_set(root: Path) -> None:
    """a: a 4x4 green lesion, painted green (found); b: the same lesion on a grey image (missed)."""
    for kind in ("images", "masks"):
        (root / "valid" / kind).mkdir(parents=True)
    for name, painted in (("a.png", True), ("b.png", False)):
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[4:8, 4:8] = GREEN
        image = np.full((32, 32, 3), 60, np.uint8)
        if painted:
            image[4:8, 4:8] = GREEN
        Image.fromarray(image).save(root / "valid" / "images" / name)
        Image.fromarray(mask).save(root / "valid" / "masks" / name)


def test_the_best_epochs_weights_are_scored_not_the_last_ones(tmp_path: Path) -> None:
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    _valid_set(tmp_path)
    cfg = make_cfg(tmp_path, dataset={"class_names": CLASSES}, train={"model_dir": "models", "batch_size": 2},
                   valid={"images_dir": "valid/images", "masks_dir": "valid/masks"})
    (tmp_path / "models").mkdir()
    colour_model().save(tmp_path / "models" / "best_model.keras")           # the best epoch's model
    last = colour_model()                                                     # the last epoch's: background only
    last.get_layer("head").set_weights([np.zeros((1, 1, 3, 3), np.float32), np.array([12.75, 0, 0], np.float32)])
    pairs = subset_pairs(cfg, "valid")
    data = make_dataset(cfg, pairs, training=False)

    as_is = best_epoch_intervals(cfg, last, data, pairs, {"best_epoch": 2, "epoch": 2})   # the last was the best
    assert as_is["ischemic"].dice == 0.0
    found = best_epoch_intervals(cfg, last, data, pairs, {"best_epoch": 1, "epoch": 2})   # loads the best
    ischemic = found["ischemic"]
    assert ischemic.dice == pytest.approx(2 * 16 / (2 * 16 + 16))           # a found, b missed: 16 px each
    assert (ischemic.unit, ischemic.units, ischemic.low, ischemic.high) == ("slices", 2, 0.0, 1.0)
    assert found["hemorrhagic"].low is None                                   # in no mask: no interval
    assert best_epoch_intervals(cfg, last, data, pairs, {"best_epoch": None, "epoch": 0}) == {}


class _LeftHalfModel:
    """Class 1 at 0.8 in the left half of every image, background at 0.9 in the right: not mirror-symmetric."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        n, h, w = batch.shape[:3]
        probs = np.zeros((n, h, w, 3), np.float32)
        probs[:, :, : w // 2] = (0.2, 0.8, 0.0)
        probs[:, :, w // 2:] = (0.9, 0.1, 0.0)
        return probs


def test_the_validation_pass_predicts_with_the_flips_infer_uses() -> None:
    from flexunet.training.certainty import valid_counts

    onehot = np.zeros((1, 4, 4, 3), np.float32)
    onehot[..., 0] = 1.0
    onehot[:, :, :2] = (0.0, 1.0, 0.0)                                     # the left half is class 1
    data = [(np.zeros((1, 4, 4, 1), np.float32), onehot)]
    plain = valid_counts(_LeftHalfModel(), data, 1, 3)
    assert plain[0, :, 1].tolist() == [8, 0, 0]                            # tp, fp, fn: found as it is
    mirrored = valid_counts(_LeftHalfModel(), data, 1, 3, flips=(2,))
    assert mirrored[0, :, 1].tolist() == [0, 0, 8]                         # averaged with its mirror: 0.45 < 0.55
