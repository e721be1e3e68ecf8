"""Foreground oversampling: the asked share of each epoch from foreground slices, deterministic, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from flexunet.config.loader import load_config

# 20 slices: 0-9 background only, 10-15 hold class 1, 16-17 hold class 2 (the rarest), 18-19 both
PRESENCE = np.zeros((20, 3), bool)
PRESENCE[:, 0] = True
PRESENCE[10:16, 1] = PRESENCE[18:, 1] = True
PRESENCE[16:, 2] = True


def _cfg(train_project, share: float, seed: int = 7):
    return load_config(train_project, [f"train.foreground_oversampling={share}", f"train.seed={seed}"])


@pytest.mark.parametrize("share", [0.25, 0.5, 1.0])
def test_each_batch_draws_the_asked_share_from_foreground_slices(train_project, share):
    from flexunet.preprocessing.pipeline import epoch_order

    order = epoch_order(_cfg(train_project, share), PRESENCE, epoch=0, batch_size=4)
    assert len(order) == 20  # steps per epoch unchanged
    drawn = [PRESENCE[order[b:b + 4], 1:].any(1) for b in range(0, 20, 4)]
    # the first round(share * 4) slots of every batch are oversampled foreground slices
    for batch in drawn:
        assert batch[:round(share * 4)].all()
    # and foreground slices (8 of 20, 40%) make up at least the asked share of the epoch
    assert np.concatenate(drawn).mean() >= share


def test_oversampled_slots_cycle_classes_from_the_rarest(train_project):
    from flexunet.preprocessing.pipeline import epoch_order

    order = epoch_order(_cfg(train_project, 0.5), PRESENCE, epoch=3, batch_size=4)
    oversampled = [i for b in range(0, 20, 4) for i in order[b:b + 2]]  # 2 of 4 slots per batch
    assert all(PRESENCE[i, 2] for i in oversampled[0::2])  # class 2 (4 slices) before class 1 (8)
    assert all(PRESENCE[i, 1] for i in oversampled[1::2])


def test_order_is_deterministic_per_seed_and_epoch(train_project):
    from flexunet.preprocessing.pipeline import epoch_order

    cfg = _cfg(train_project, 0.33)
    a = [epoch_order(cfg, PRESENCE, e, 4).tolist() for e in range(3)]
    assert a == [epoch_order(cfg, PRESENCE, e, 4).tolist() for e in range(3)]
    assert a[0] != a[1] != a[2]
    assert a[0] != epoch_order(_cfg(train_project, 0.33, seed=8), PRESENCE, 0, 4).tolist()


def test_no_foreground_anywhere_draws_uniformly(train_project):
    from flexunet.preprocessing.pipeline import epoch_order

    order = epoch_order(_cfg(train_project, 0.5), PRESENCE[:10], epoch=0, batch_size=4)
    assert sorted(order.tolist()) == list(range(10))  # a plain permutation


def test_pipeline_follows_the_order_and_resumes_exactly(train_project):
    from flexunet.preprocessing.pipeline import check_masks, epoch_order, make_dataset, subset_pairs

    cfg = load_config(train_project, ["train.foreground_oversampling=0.5", "train.cache=True"])
    pairs = subset_pairs(cfg, "train")
    presence = check_masks(cfg, pairs) > 0
    assert presence.shape == (8, 3) and presence.all()  # every fixture slice holds both classes

    def stream(epochs):
        return [y.numpy() for _, y in make_dataset(cfg, pairs, training=True, epochs=epochs, presence=presence)]

    full = stream((0, 3))
    assert len(full) == 3 * 2  # 8 slices, batch 4: steps per epoch unchanged
    resumed = stream((2, 3))
    assert all(np.array_equal(a, b) for a, b in zip(full[4:], resumed))
    # the masks arrive in epoch_order's order
    masks = {i: make_dataset(cfg, [pairs[i]], training=False, batch_size=1) for i in range(8)}
    expected = [next(iter(masks[int(i)]))[1].numpy()[0] for i in epoch_order(cfg, presence, 0, 4)]
    got = np.concatenate(full[:2])
    assert all(np.array_equal(e, g) for e, g in zip(expected, got))
