"""flexunet.training.folds: [train] member_folds, each member k >= 2 validating on a fold of its own."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, interrupt_member, make_train_project, train_config_text
from flexunet.config.loader import load_config
from flexunet.model.inspection import inspect_target
from flexunet.model.run_folder import read_meta
from flexunet.training.folds import FOLD_RECORD, draw_folds, training_groups
from flexunet.training.train import train
from flexunet.utils.errors import FlexUNetError


def _pairs(folder: str, names: list[str]) -> list[tuple[Path, Path]]:
    return [(Path(folder) / "images" / n, Path(folder) / "masks" / n) for n in names]


def _manifest(folder: Path, groups: dict[str, str]) -> None:
    """folder/manifest.json giving each slice id its patient, as prepare writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [{"id": name, "group": g, "group_kind": "patient"} for name, g in groups.items()]
    (folder / "manifest.json").write_text(json.dumps({"items": items}))


def _cfg(tmp_path: Path, members: int = 3):
    return load_config(make_train_project(tmp_path / "p", train_config_text(
        model={"members": members}, train={"member_folds": True})))


def test_a_fold_takes_whole_patients_as_many_slices_as_valid_and_one_seed_repeats_it(tmp_path) -> None:
    cfg = _cfg(tmp_path)
    names = [f"{i:03d}.png" for i in range(24)]            # 8 patients of 3 slices
    patient = {Path(n).stem: f"P{i // 3}" for i, n in enumerate(names)}
    _manifest(tmp_path / "d" / "train", patient)
    train = _pairs(str(tmp_path / "d" / "train"), names)
    valid = _pairs(str(tmp_path / "d" / "valid"), ["v0.png", "v1.png", "v2.png", "v3.png", "v4.png", "v5.png"])
    counts = np.zeros((30, 3), np.int64)
    counts[:, 0] = 100
    counts[:12, 1] = 5                                      # patients 0-3 show ischemic, 4-7 hemorrhagic
    counts[12:24, 2] = 5

    folds = draw_folds(cfg, train, valid, counts)
    assert [f.k for f in folds] == [2, 3] and all(f.unit == "patients" for f in folds)
    for fold in folds:
        in_fold = {patient[train[i][0].stem] for i in fold.valid}
        assert in_fold == set(fold.groups)                 # whole patients: none of theirs is left in training
        assert not in_fold & {patient[train[i][0].stem] for i in fold.train if i < 24}
        assert set(fold.train) | set(fold.valid) == set(range(30)) and not set(fold.train) & set(fold.valid)
        assert set(range(24, 30)) <= set(fold.train)        # [valid] trains member k
        assert len(fold.valid) == 6                          # as large as [valid]: two patients
        shown = {1 if int(g[1:]) < 4 else 2 for g in fold.groups}
        assert shown == {1, 2}                               # stratified: a patient of each lesion class
    assert draw_folds(cfg, train, valid, counts) == folds    # one seed, the same folds


def test_without_a_manifest_each_slice_is_its_own_group_said_once(tmp_path, caplog) -> None:
    cfg = _cfg(tmp_path, members=2)
    train = _pairs(str(tmp_path / "none"), ["a.png", "b.png", "c.png", "d.png"])
    with caplog.at_level(logging.WARNING, logger="flexunet.training.folds"):
        unit, groups = training_groups(cfg, train)
    assert (unit, groups) == ("slices", ["a", "b", "c", "d"])
    assert len(caplog.records) == 1 and "may share patients" in caplog.records[0].getMessage()


def test_one_training_patient_cannot_give_a_fold(tmp_path) -> None:
    cfg = _cfg(tmp_path, members=2)
    _manifest(tmp_path / "d" / "train", {"a": "P1", "b": "P1"})
    train = _pairs(str(tmp_path / "d" / "train"), ["a.png", "b.png"])
    with pytest.raises(FlexUNetError, match=r"member_folds.*at least 2 training patients"):
        draw_folds(cfg, train, _pairs("v", ["v.png"]), np.ones((3, 3), np.int64))


def test_train_with_member_folds_records_each_members_data_and_pools_their_validation(tmp_path, capsys, caplog):
    path = make_train_project(tmp_path / "p", train_config_text(
        model={"members": 2}, train={"member_folds": True, "epochs": 2}))
    valid = tmp_path / "p" / "data" / "valid"
    for kind in ("images", "masks"):                       # names apart from the training slices', as split gives
        for f in sorted((valid / kind).iterdir()):
            f.rename(f.with_name(f"2{f.name[1:]}"))
    cfg = load_config(path)
    with caplog.at_level(logging.INFO, logger="flexunet.training"):
        summary = train(cfg, progress=False)
    said = "\n".join(r.getMessage() for r in caplog.records)
    record = json.loads((cfg.train.model_dir / "members" / "2" / FOLD_RECORD).read_text())
    train_names = sorted(p.name for p in (tmp_path / "p" / "data" / "train" / "images").iterdir())
    valid_names = sorted(p.name for p in (valid / "images").iterdir())
    assert record["unit"] == "slices" and len(record["valid"]) == 4 and set(record["valid"]) <= set(train_names)
    assert set(valid_names) <= set(record["train"]) and not set(record["valid"]) & set(record["train"])
    assert sorted(record["train"] + record["valid"]) == sorted(train_names + valid_names)
    assert not (cfg.train.model_dir / "members" / "1" / FOLD_RECORD).exists()
    meta = read_meta(cfg.train.model_dir)
    assert meta["members"][0]["fold"] is None and meta["members"][1]["fold"] == {
        "unit": "slices", "groups": sorted(Path(n).stem for n in record["valid"])}
    assert "validated on its own fold of 4 training slices" in inspect_target(cfg.train.model_dir)
    chosen = json.loads((cfg.train.model_dir / "postprocess.json").read_text())
    assert chosen["slices"] == 8                             # member 1 on [valid] + member 2 on its fold
    assert "validates on a fold of 4 training slices" in said and "(8 slices, out of fold" in said
    assert set(summary["valid_intervals"]) == set(cfg.class_names[1:])
    rc, _, err = cli(capsys, "evaluate", str(path))
    assert rc == 0, err


def test_a_resumed_run_pools_the_member_that_had_ended_with_the_one_that_went_on(tmp_path, capsys, monkeypatch):
    from flexunet.training import members

    path = make_train_project(tmp_path / "p", train_config_text(
        model={"members": 2}, train={"member_folds": True, "epochs": 2}))
    real = interrupt_member(monkeypatch, 8)                         # member 2
    rc, _, err = cli(capsys, "train", str(path))
    assert rc != 0 and "interrupted" in err
    cfg = load_config(path)
    first = json.loads((cfg.train.model_dir / "members" / "1" / "postprocess.json").read_text())
    monkeypatch.setattr(members, "fit_network", real)
    rc, _, err = cli(capsys, "train", str(path), "--resume")
    assert rc == 0, err
    chosen = json.loads((cfg.train.model_dir / "postprocess.json").read_text())
    assert chosen["slices"] == 8                        # member 1's pass again (its run had ended) + member 2's
    assert json.loads((cfg.train.model_dir / "members" / "1" / "postprocess.json").read_text()) == first
    assert len(json.loads((cfg.train.model_dir / "members" / "2" / FOLD_RECORD).read_text())["valid"]) == 4
