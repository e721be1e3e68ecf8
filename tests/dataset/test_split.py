"""split: grouped, seeded, stratified subsets; the pure assignment first, then the folders."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flexunet.config.loader import Config, parse_config
from flexunet.utils.errors import ConfigError, DataError, FlexUNetError
from flexunet.dataset.split import SUBSETS, assign_groups, assign_subsets, choose_mini_test, split_dataset

RATIO_SETS = [(0.80, 0.15, 0.05), (0.6, 0.2, 0.2), (0.34, 0.33, 0.33)]


def synthetic_rows(seed: int, n_groups: int = 40) -> list[dict]:
    """In-memory manifest rows: n_groups patients of 1..8 slices, classes drawn per slice."""
    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        for s in range(rng.randint(1, 8)):
            rows.append({"id": f"g{g}_s{s}", "group": f"P{g}",
                         "classes": [0] + sorted(rng.sample([1, 2], rng.randint(0, 2)))})
    return rows


def subsets_of_groups(rows: list[dict], subsets: list[str]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for row, sub in zip(rows, subsets):
        seen.setdefault(row["group"], set()).add(sub)
    return seen


# --------------------------------------------------------------------------- pure assignment


@pytest.mark.parametrize("ratios", RATIO_SETS)
def test_groups_stay_whole_subsets_filled_ratios_respected(ratios: tuple[float, float, float]) -> None:
    for seed in range(20):
        rows = synthetic_rows(seed)
        subsets = assign_subsets(rows, ratios, seed, "patient")
        assert all(len(s) == 1 for s in subsets_of_groups(rows, subsets).values())
        for name, ratio in zip(SUBSETS, ratios):
            share = subsets.count(name) / len(rows)
            assert share > 0 and abs(share - ratio) < 0.05, (seed, name, share)


def test_deterministic_per_seed() -> None:
    rows = synthetic_rows(3)
    first = assign_subsets(rows, (0.8, 0.15, 0.05), 137)
    assert assign_subsets(rows, (0.8, 0.15, 0.05), 137) == first
    assert assign_subsets(list(reversed(rows)), (0.8, 0.15, 0.05), 137) == list(reversed(first))
    others = {tuple(assign_subsets(rows, (0.8, 0.15, 0.05), seed)) for seed in range(5)}
    assert len(others) > 1


def test_stratified_rare_class_reaches_every_subset() -> None:
    for seed in range(10):
        # 30 patients; only 10 show class 2
        rows = [{"id": f"{g}_{s}", "group": f"P{g}", "classes": [0, 2] if g < 10 else [0, 1]}
                for g in range(30) for s in range(3)]
        subsets = assign_subsets(rows, (0.6, 0.2, 0.2), seed)
        rare = [sub for row, sub in zip(rows, subsets) if 2 in row["classes"]]
        assert [rare.count(name) for name in SUBSETS] == [18, 6, 6]


def test_slice_grouping_ignores_patients() -> None:
    rows = [{"id": f"s{i}", "group": "P0", "classes": [0]} for i in range(10)]
    subsets = assign_subsets(rows, (0.6, 0.2, 0.2), 1, group_by="slice")
    assert set(subsets) == set(SUBSETS)


def test_too_few_groups() -> None:
    with pytest.raises(ValueError):
        assign_groups({"P0": 5, "P1": 3}, (0.8, 0.15, 0.05), 0)
    # a zero ratio needs no group
    assert sorted(assign_groups({"P0": 5, "P1": 3}, (0.5, 0.5, 0.0), 0).values()) == [0, 1]


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=3, max_size=30),
       labels=st.lists(st.sampled_from(["0", "1", "2", "1+2"]), min_size=30, max_size=30),
       ratios=st.sampled_from(RATIO_SETS), seed=st.integers(0, 2**31))
def test_every_subset_non_empty_with_three_groups(sizes: list[int], labels: list[str],
                                                  ratios: tuple[float, float, float], seed: int) -> None:
    groups = {f"G{i}": n for i, n in enumerate(sizes)}
    strata = {f"G{i}": labels[i] for i in range(len(sizes))}
    assignment = assign_groups(groups, ratios, seed, strata)
    assert set(assignment) == set(groups)
    assert set(assignment.values()) == {0, 1, 2}


def test_mini_test_shows_every_class() -> None:
    rows = [{"classes": [0]}] * 6 + [{"classes": [0, 1]}] * 3 + [{"classes": [0, 2]}]
    for seed in range(10):
        chosen = choose_mini_test(rows, 4, seed)
        assert len(chosen) == 4 and len(set(chosen)) == 4
        assert set().union(*(rows[i]["classes"] for i in chosen)) == {0, 1, 2}
    assert len(choose_mini_test(rows, 20, 0)) == len(rows)
    assert choose_mini_test(rows, 0, 0) == [] and choose_mini_test([], 3, 0) == []


# --------------------------------------------------------------------------- folders

CONFIG = """
[model]
num_classes = 3
num_layers = 3
image_width = 64
image_height = 64
[dataset]
class_names = ["background", "ischemic", "hemorrhagic"]
[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
[train]
seed = 7
[prepare]
output_dir = "master"
[split]
output_dir = "dataset"
name = "Stroke"
ratios = (0.5, 0.25, 0.25)
mini_test_count = 3
"""
COLOURS = {1: (0, 255, 0), 2: (0, 0, 255)}


def make_cfg(tmp_path: Path, *overrides: str) -> Config:
    return parse_config(CONFIG, base_dir=tmp_path, overrides=overrides)


def make_master(tmp_path: Path, n_patients: int = 8, per_patient: int = 3) -> list[dict]:
    """A master folder as prepare writes it: 8x8 slices, masks and manifest.json."""
    master = tmp_path / "master"
    (master / "images").mkdir(parents=True)
    (master / "masks").mkdir()
    rows = []
    for p in range(n_patients):
        for s in range(per_patient):
            sid = f"p{p}s{s}"
            classes = [0] + ([1] if (p + s) % 2 else []) + ([2] if (p + s) % 3 == 0 else [])
            mask = np.zeros((8, 8, 3), np.uint8)
            for c in classes[1:]:
                mask[c, :] = COLOURS[c]
            Image.fromarray(np.full((8, 8, 3), 10 * p + s, np.uint8)).save(master / "images" / f"{sid}.png")
            Image.fromarray(mask).save(master / "masks" / f"{sid}.png")
            rows.append({"id": sid, "image": f"images/{sid}.png", "mask": f"masks/{sid}.png",
                         "group": f"patient{p}", "group_kind": "patient", "classes": classes})
    doc = {"version": 1, "rgb_map": [[[0, 0, 0], 0], [[0, 255, 0], 1], [[0, 0, 255], 2]], "items": rows}
    (master / "manifest.json").write_text(json.dumps(doc))
    return rows


def test_split_writes_grouped_subsets_split_json_and_mini_test(tmp_path: Path) -> None:
    rows = make_master(tmp_path)
    summary = split_dataset(make_cfg(tmp_path))
    out = tmp_path / "dataset" / "Stroke"
    assert summary["output_dir"] == out and sum(summary["counts"].values()) == len(rows)
    doc = json.loads((out / "split.json").read_text())
    assert doc["seed"] == 7 and doc["ratios"] == [0.5, 0.25, 0.25] and doc["group_by"] == "patient"
    assert doc["rgb_map"] == [[[0, 0, 0], 0], [[0, 255, 0], 1], [[0, 0, 255], 2]]
    assert doc["class_names"] == ["background", "ischemic", "hemorrhagic"]
    group_of = {r["id"] + ".png": r["group"] for r in rows}
    owner: dict[str, str] = {}
    for name in SUBSETS:
        sub = doc["subsets"][name]
        files = sorted(p.name for p in (out / name / "images").iterdir())
        assert files == sorted(sub["files"]) and sub["count"] == len(files) > 0
        assert files == sorted(p.name for p in (out / name / "masks").iterdir())
        for f in files:
            assert owner.setdefault(group_of[f], name) == name          # a patient in one subset only
            src = tmp_path / "master" / "masks" / f
            assert (out / name / "masks" / f).read_bytes() == src.read_bytes()
        assert sorted(sub["groups"]) == sorted({group_of[f] for f in files})
        assert sub["slices_with_class"]["background"] == len(files)
        assert sum(sub["class_combinations"].values()) == len(files)
    test_classes = set().union(*(r["classes"] for r in rows if r["id"] + ".png" in doc["subsets"]["test"]["files"]))
    mini = sorted(p.name for p in (out / "mini_test" / "images").iterdir())
    assert mini == sorted(doc["mini_test"]) and len(mini) == 3
    assert set(mini) <= set(doc["subsets"]["test"]["files"])
    shown = set().union(*(r["classes"] for r in rows if r["id"] + ".png" in mini))
    assert shown == test_classes
    assert sorted(p.name for p in (out / "mini_test" / "masks").iterdir()) == mini


def test_split_is_deterministic_and_refuses_existing_output(tmp_path: Path) -> None:
    make_master(tmp_path)
    split_dataset(make_cfg(tmp_path))
    out = tmp_path / "dataset" / "Stroke"
    first = json.loads((out / "split.json").read_text())["subsets"]
    with pytest.raises(FlexUNetError, match=r"Stroke: holds the output of an earlier `flexunet split`; pass "
                                            r"--overwrite"):
        split_dataset(make_cfg(tmp_path))
    split_dataset(make_cfg(tmp_path), overwrite=True)
    assert json.loads((out / "split.json").read_text())["subsets"] == first
    split_dataset(make_cfg(tmp_path, "train.seed=8"), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["Stroke"]  # no leftovers


def test_master_is_never_modified(tmp_path: Path) -> None:
    make_master(tmp_path)
    master = tmp_path / "master"
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in master.rglob("*") if p.is_file()}
    split_dataset(make_cfg(tmp_path))
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in master.rglob("*") if p.is_file()} == before


def test_too_few_patients_is_a_clear_error(tmp_path: Path) -> None:
    make_master(tmp_path, n_patients=2, per_patient=4)
    with pytest.raises(DataError, match=r"2 patient group\(s\) cannot fill 3 .*group_by = \"slice\""):
        split_dataset(make_cfg(tmp_path))
    assert not (tmp_path / "dataset" / "Stroke").exists()
    summary = split_dataset(make_cfg(tmp_path, "split.group_by=slice"))
    assert all(n > 0 for n in summary["counts"].values())


def test_master_without_manifest_groups_by_slice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_master(tmp_path, n_patients=2, per_patient=4)
    (tmp_path / "master" / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.split"):
        summary = split_dataset(make_cfg(tmp_path))
    assert "no manifest.json" in caplog.text
    assert sum(summary["counts"].values()) == 8 and sum(summary["groups"].values()) == 8


def test_rgb_map_must_match_the_master(tmp_path: Path) -> None:
    make_master(tmp_path)
    cfg = parse_config(CONFIG.replace("(0,0,255):2", "(255,0,0):2"), base_dir=tmp_path)
    with pytest.raises(DataError, match=r"manifest\.json: masks were written with rgb_map"):
        split_dataset(cfg)


def test_missing_master_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[prepare\] output_dir.*run prepare first"):
        split_dataset(make_cfg(tmp_path))


def test_mask_format_must_match_the_master(tmp_path: Path) -> None:
    make_master(tmp_path)                              # colour masks (manifest without mask_format)
    with pytest.raises(DataError) as err:
        split_dataset(make_cfg(tmp_path, "mask.format=index"))
    assert "masks were written as rgb masks but the config's [mask] format is index" in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "dataset").exists()
    summary = split_dataset(make_cfg(tmp_path))
    assert json.loads((summary["output_dir"] / "split.json").read_text())["mask_format"] == "rgb"
