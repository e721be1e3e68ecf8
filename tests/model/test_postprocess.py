"""The post-processing a run chooses on its validation set (flexunet.model.postprocess)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from flexunet.model.postprocess import (RECORD, ComponentChooser, candidate_sizes, component_sizes, read_record,
                                        write_record)
from flexunet.model.predict import remove_small_components


def _whole_set_dice(refs, preds, k, size):
    tp = total = 0
    for ref, pred in zip(refs, preds):
        kept = remove_small_components(pred, [0, size, size])[0]
        tp += int(((kept == k) & (ref == k)).sum())
        total += int((kept == k).sum() + (ref == k).sum())
    return 2 * tp / total


def test_the_chooser_scores_what_removing_the_components_gives():
    rng = np.random.default_rng(3)
    chooser, refs, preds = ComponentChooser(3, 32, 32), [], []
    for _ in range(12):
        ref = (rng.random((32, 32)) < 0.1) * rng.integers(1, 3, (32, 32))
        pred = np.where(rng.random((32, 32)) < 0.8, ref, (rng.random((32, 32)) < 0.1) * 2)
        chooser.add(ref.astype(np.uint8), pred.astype(np.uint8))
        refs.append(ref)
        preds.append(pred.astype(np.uint8))
    for k in (1, 2):
        for size in (0, 2, 3, 4):
            assert chooser.dice(k, size) == pytest.approx(_whole_set_dice(refs, preds, k, size)), (k, size)


def test_two_choosers_merged_score_as_one_fed_both_passes():
    rng = np.random.default_rng(5)
    whole, parts = ComponentChooser(3, 32, 32), [ComponentChooser(3, 32, 32), ComponentChooser(3, 32, 32)]
    for i in range(10):
        ref = ((rng.random((32, 32)) < 0.1) * rng.integers(1, 3, (32, 32))).astype(np.uint8)
        pred = np.where(rng.random((32, 32)) < 0.7, ref, (rng.random((32, 32)) < 0.1) * 2).astype(np.uint8)
        whole.add(ref, pred)
        parts[i % 2].add(ref, pred)
    parts[0].merge(parts[1])
    assert parts[0].slices == whole.slices == 10
    names = ["background", "ischemic", "hemorrhagic"]
    assert parts[0].choose(names) == whole.choose(names)
    assert parts[0].dice(2, 3) == pytest.approx(whole.dice(2, 3)) and parts[1].slices == 5


def _slice(lesion: bool, specks: int) -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((128, 128), np.uint8)
    if lesion:
        ref[40:60, 40:60] = 1
    pred = ref.copy()
    for i in range(specks):               # 2x2 false alarms, far from the lesion
        pred[100 + 4 * (i // 5):102 + 4 * (i // 5), 4 * (i % 5) + 2:4 * (i % 5) + 4] = 2
    return ref, pred


def test_specks_that_cost_dice_are_removed_and_a_class_without_them_keeps_all():
    chooser = ComponentChooser(3, 128, 128)
    for i in range(10):
        chooser.add(*_slice(lesion=True, specks=0))
        chooser.add(*_slice(lesion=False, specks=3))
    record = chooser.choose(["background", "ischemic", "hemorrhagic"])
    assert record["min_component_size"] == [0, 0, 0]        # no hemorrhagic reference: every size scores 0
    chooser = ComponentChooser(3, 128, 128)
    for i in range(10):
        ref, pred = _slice(lesion=True, specks=0)
        ref[80:90, 80:90] = 2                                # a real hemorrhage of 100 px, found
        pred[80:90, 80:90] = 2
        chooser.add(ref, pred)
        chooser.add(*_slice(lesion=False, specks=4))         # and 2x2 specks elsewhere
    record = chooser.choose(["background", "ischemic", "hemorrhagic"])
    assert record["min_component_size"] == [0, 0, 5]         # the smallest size that removes 4-px specks
    scores = record["classes"]["hemorrhagic"]["valid_dice"]
    assert scores["0"] == pytest.approx(2 * 1000 / (1000 + 160 + 1000)) and scores["5"] == 1.0
    assert record["classes"]["ischemic"]["min_component_size"] == 0     # nothing to gain: keep all


def test_a_gain_under_the_threshold_keeps_every_component():
    chooser = ComponentChooser(2, 128, 128)
    ref = np.zeros((128, 128), np.uint8)
    ref[10:110, 10:110] = 1                                  # 10000 px found; one speck of 1 px: gain < 0.001
    pred = ref.copy()
    pred[120, 120] = 1
    chooser.add(ref, pred)
    assert chooser.choose(["background", "lesion"])["min_component_size"] == [0, 0]


def test_candidate_sizes_scale_with_the_input_area():
    assert candidate_sizes(128, 128) == (0, 3, 5, 8, 12, 20)
    assert candidate_sizes(256, 256) == (0, 12, 20, 32, 48, 80)
    assert candidate_sizes(32, 32)[0] == 0 and min(candidate_sizes(32, 32)[1:]) >= 2


def test_sizes_come_from_the_setting_or_the_record_scaled_to_the_mask(tmp_path, caplog):
    assert component_sizes(7, tmp_path, 3, (128, 128)).at() == (7, 7, 7)    # a number: every class, as given
    assert component_sizes(7, tmp_path, 3, (128, 128)).at((512, 512)) == (7, 7, 7)   # in the mask's own pixels
    assert component_sizes("auto", tmp_path, 3, (128, 128)).at() == (0, 0, 0)    # no record: keep all
    write_record(tmp_path, {"min_component_size": [0, 5, 12]})
    assert component_sizes("auto", tmp_path, 3, (128, 128)).at() == (0, 5, 12)
    assert component_sizes("auto", tmp_path, 3, (128, 128)).at((512, 512)) == (0, 80, 192)   # written at 512 px
    (tmp_path / RECORD).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert read_record(tmp_path) is None
    assert "postprocess.json: unreadable; every predicted component is kept" in caplog.text
    (tmp_path / RECORD).write_text(json.dumps({"min_component_size": "big"}))
    assert component_sizes("auto", tmp_path, 3, (128, 128)).at() == (0, 0, 0)


def test_sizes_chosen_for_masks_decided_otherwise_are_used_with_a_warning(tmp_path, caplog):
    chosen_for = {"foreground_weight": 3.0, "flip_tta_axes": [2]}
    write_record(tmp_path, {"min_component_size": [0, 5, 12], "decision": chosen_for})
    with caplog.at_level(logging.WARNING):
        assert component_sizes("auto", tmp_path, 3, (128, 128), dict(chosen_for)).at() == (0, 5, 12)
        assert not caplog.records                                        # decided alike: nothing to say
        sizes = component_sizes("auto", tmp_path, 3, (128, 128), {"foreground_weight": 1.0, "flip_tta_axes": []})
    assert sizes.at() == (0, 5, 12)
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "the smallest components kept were chosen for masks decided with foreground_weight 3.0 and flip TTA on "
        "axes 2; this command decides with foreground_weight 1.0 and no flip TTA, so the removal may not suit "
        "its masks (train again with these [infer] settings, or set [infer] min_component_size)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):                                # a number in the config: no record read
        component_sizes(4, tmp_path, 3, (128, 128), {"foreground_weight": 1.0, "flip_tta_axes": []})
    assert not caplog.records


def test_per_class_sizes_remove_only_their_class():
    index = np.zeros((16, 16), np.uint8)
    index[0:2, 0:2] = 1          # 4 px of class 1
    index[8:10, 8:10] = 2        # 4 px of class 2
    out, removed = remove_small_components(index, [0, 5, 0])
    assert removed == 1 and not (out == 1).any() and (out == 2).sum() == 4
    assert remove_small_components(index, 5)[1] == 2
