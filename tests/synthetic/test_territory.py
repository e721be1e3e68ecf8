"""flexunet.synthetic.territory: the second synthetic family (head, strokes, mimics, its scanner).

Tiny sets (<= 30 slices of 48-64 px) so the file runs in seconds.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import make_cfg, snapshot
from flexunet.cli.args import COMMANDS
from flexunet.dataset.prepare import prepare_dataset
from flexunet.dataset.split import split_dataset
from flexunet.synthetic.head import CSF, GM, WM, make_head, section
from flexunet.synthetic.lesions import SynthOptions
from flexunet.synthetic.mimics import Mimics
from flexunet.synthetic.scanner import PROFILES
from flexunet.synthetic.synth import DATASET_DIR, FAMILIES, dataset_root, synthesize
from flexunet.synthetic.territory import ct_slice, make_patient, patient_id, plan_slices, render_slice
from flexunet.utils.errors import DataError

SEED = 1
SIZE = 64


@pytest.fixture(scope="module")
def plan() -> list:
    return plan_slices(SEED, 30)


def without_lesions(patient):
    return dataclasses.replace(patient, infarcts=(), lacunes=(), bleeds=())


def without_mimics(patient):
    return dataclasses.replace(patient, mimics=Mimics(spots=(), old_infarct=None, leukoaraiosis_hu=0.0,
                                                      dense_artery=None, bar_hu=0.0))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", 8, SEED, size=48, progress=False, family="territory")
    synthesize(tmp_path / "b", 8, SEED, size=48, progress=False, family="territory")
    synthesize(tmp_path / "c", 8, SEED + 1, size=48, progress=False, family="territory")
    first, second, other = (snapshot(dataset_root(tmp_path / k)) for k in "abc")
    assert first == second and len(first) == 4 * 8
    assert all(first[k] != other[k] for k in first if k.startswith("DICOM"))
    assert a["family"] == "territory" and a["scanner"] == "standard"
    assert set(a["volumes_ml"]) == {patient_id(SEED, p) for p in range(a["patients"])}


def test_prepare_and_split_read_it_with_patients_grouped(tmp_path: Path) -> None:
    summary = synthesize(tmp_path / "raw", 30, SEED, size=48, progress=False, family="territory")
    assert summary["patients"] >= 3
    cfg = make_cfg(tmp_path, dataset={"class_names": ["background", "ischemic", "hemorrhagic"]},
                   train={"seed": 3},
                   prepare={"raw_dir": "./raw", "source": "png", "output_dir": "./master", "size": 48},
                   split={"output_dir": "./split", "name": "Set", "ratios": (0.5, 0.25, 0.25), "mini_test_count": 0})
    assert prepare_dataset(cfg, progress=False)["count"] == 30
    split_dataset(cfg)
    doc = json.loads((tmp_path / "split" / "Set" / "split.json").read_text())
    assert doc["group_by"] == "patient"
    where: dict[str, set[str]] = {}
    with open(tmp_path / "master" / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            subset = next(s for s in ("train", "valid", "test")
                          if (tmp_path / "split" / "Set" / s / "images" / Path(row["image"]).name).is_file())
            where.setdefault(row["group"], set()).add(subset)
    assert len(where) == summary["patients"] and all(len(s) == 1 for s in where.values())
    assert {next(iter(s)) for s in where.values()} == {"train", "valid", "test"}
    assert set(where) == set(summary["volumes_ml"])


def test_labels_only_where_lesions_are_and_lookalikes_stay_unlabelled(plan: list) -> None:
    drawn = {1: [], 2: []}
    lookalike_pixels = 0
    for i, (patient, j) in enumerate(plan):
        hu, label = render_slice(patient, j, SIZE, SEED, i)
        plain, none = render_slice(without_lesions(patient), j, SIZE, SEED, i)
        bare, _ = render_slice(without_mimics(without_lesions(patient)), j, SIZE, SEED, i)
        assert not none.any()                                    # look-alikes, falx, bone: never labelled
        lookalike_pixels += int((np.abs(plain.astype(int) - bare) > 3).sum())
        assert (hu[label == 0] == plain[label == 0]).mean() > 0.9  # the lesion changed little beside its label
        for k in (1, 2):
            drawn[k].append((hu.astype(float) - plain)[label == k])
    assert lookalike_pixels > 50
    drop, rise = np.concatenate(drawn[1]), np.concatenate(drawn[2])
    assert drop.size > 100 and rise.size > 30
    assert -16.0 < drop.mean() < -2.5                             # 2.5-12 HU below, grey/white fading
    assert rise.mean() > 15.0                                     # a clot of 50-90 HU over 22-44 HU parenchyma


def test_both_classes_and_both_kinds_of_lookalike_occur() -> None:
    kinds = {"territorial": 0, "lacunar": 0, "bleed": 0, "calcification": 0, "old lacune": 0}
    for p in range(40):
        patient = make_patient(SEED, p)
        kinds["territorial"] += len(patient.infarcts)
        kinds["lacunar"] += len(patient.lacunes)
        kinds["bleed"] += len(patient.bleeds)
        kinds["calcification"] += sum(s.value_hu > 60 for s in patient.mimics.spots)
        kinds["old lacune"] += sum(s.value_hu < 20 for s in patient.mimics.spots)
    assert all(n >= 5 for n in kinds.values()), kinds


def test_tissue_values_are_those_of_head_ct() -> None:
    head = make_head(np.random.default_rng(5))
    sec = section(head, 0.1, 9.0, 128, 1.8)
    assert 35.0 <= head.gm_hu <= 44.0 + 1e-9 and 22.0 <= head.wm_hu <= 29.0 and head.gm_hu - head.wm_hu >= 8.0
    assert 2.0 <= head.csf_hu <= 12.0
    for code, lo, hi in ((GM, 33.0, 46.0), (WM, 20.0, 31.0), (CSF, 2.0, 56.0)):
        values = sec.hu[sec.tissue == code]
        assert values.size > 20 and lo <= np.median(values) <= hi, code
    # unequal lateral ventricles: one 65-100% of the other
    assert 0.65 <= min(head.ventricles) <= max(head.ventricles) == 1.0


def test_the_dicom_names_the_patient_and_the_scanner() -> None:
    patient = make_patient(SEED, 2)
    info = ct_slice(patient, 1, SEED, 64, PROFILES["sharp"])
    assert info.patient_id == patient_id(SEED, 2) == f"SYT{SEED}-0002"
    assert "sharp" in info.manufacturer and info.location_mm == pytest.approx(patient.z_mm(1), abs=1e-3)


def test_phantom_options_and_unknown_names_are_one_line_errors(tmp_path: Path) -> None:
    for kwargs, word in ((dict(family="territory", options=SynthOptions(lookalikes=True)), "phantom family only"),
                         (dict(family="atlas"), "family = 'atlas'"), (dict(scanner="vendor-x"), "scanner = ")):
        with pytest.raises(DataError, match=word) as err:
            synthesize(tmp_path / "x", 2, 1, size=32, progress=False, **kwargs)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "x" / DATASET_DIR).exists()


def test_cli_family_and_scanner(tmp_path: Path) -> None:
    from flexunet.cli.main import main

    assert main(["-q", "synth", str(tmp_path / "a"), "--count", "2", "--size", "32", "--family", "territory",
                 "--scanner", "soft"]) == 0
    doc = json.loads((tmp_path / "a" / DATASET_DIR / "synth.json").read_text())
    assert (doc["family"], doc["scanner"], doc["count"]) == ("territory", "soft", 2)
    # the parser offers what synthesize takes
    parser = argparse.ArgumentParser()
    next(add for name, _, add in COMMANDS if name == "synth")(parser)
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices == {"family": FAMILIES, "scanner": tuple(PROFILES), "format": ("teknofest", "nifti")}
    # NIfTI volumes come from the phantom through the standard scanner only: one line for the rest
    rc = main(["-q", "synth", str(tmp_path / "b"), "--count", "2", "--size", "32", "--format", "nifti",
               "--family", "territory"])
    assert rc == 2 and not (tmp_path / "b").exists()
