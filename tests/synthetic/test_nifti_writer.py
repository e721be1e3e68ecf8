"""flexunet.synthetic.nifti_writer: the synthetic patients as NIfTI volumes in nnU-Net's raw layout."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import cli, one_error, snapshot
from flexunet.dataset.dicom import read_dicom_hu
from flexunet.dataset.masks import STROKE_RGB_MAP, read_mask
from flexunet.dataset.nifti import axial_slices, read_labels, read_volume
from flexunet.synthetic.nifti_writer import DATASET_NAME, held_out, synthesize_nifti
from flexunet.synthetic.synth import CLASS_NAMES, FIRST_ID, dataset_root, synthesize

SEED, COUNT, SIZE = 5, 24, 64


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("nifti")
    return out, synthesize_nifti(out, COUNT, SEED, size=SIZE, progress=False)


def test_layout_dataset_json_and_held_out_cases(written):
    out, summary = written
    root = out / DATASET_NAME
    doc = json.loads((root / "dataset.json").read_text())
    assert doc["labels"] == {"background": 0, "ischemic": 1, "hemorrhagic": 2} and doc["channel_names"] == {"0": "CT"}
    assert doc["file_ending"] == ".nii.gz" and doc["numTraining"] == len(summary["training"])
    assert len(summary["test"]) == held_out(summary["patients"]) >= 1
    assert summary["test"] == [c for c in summary["cases"]][-len(summary["test"]):]   # the last patients
    for case in summary["training"]:
        assert (root / "imagesTr" / f"{case}_0000.nii.gz").is_file() and (root / "labelsTr" / f"{case}.nii.gz").is_file()
    for case in summary["test"]:
        assert (root / "imagesTs" / f"{case}_0000.nii.gz").is_file() and (root / "labelsTs" / f"{case}.nii.gz").is_file()
    assert sum(c["slices"] for c in summary["cases"].values()) == COUNT
    assert json.loads((root / "synth.json").read_text())["cases"] == summary["cases"]


def test_volumes_hold_the_slices_of_the_slice_dataset_and_their_known_volumes(written, tmp_path):
    out, summary = written
    synthesize(tmp_path, COUNT, SEED, size=SIZE, progress=False)
    slices = dataset_root(tmp_path)
    first = 0
    for case, record in summary["cases"].items():
        folder = out / DATASET_NAME
        sub = record["subset"]
        image = read_volume(folder / f"images{sub}" / f"{case}_0000.nii.gz")
        labels = read_labels(folder / f"labels{sub}" / f"{case}.nii.gz", image, CLASS_NAMES)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")          # stored as a DICOM series is
        for k, (hu, index) in enumerate(zip(axial_slices(image.data), axial_slices(labels.data))):
            slice_id = str(FIRST_ID + first + k)
            assert np.array_equal(hu, read_dicom_hu(slices / "DICOM" / f"{slice_id}.dcm")[0])
            assert np.array_equal(index, read_mask(slices / "MASKS" / f"{slice_id}.png", STROKE_RGB_MAP).index)
        voxel = np.prod(image.zooms) / 1000
        for k, name in enumerate(CLASS_NAMES[1:], start=1):
            assert record["volumes_ml"][name] == pytest.approx(float((labels.data == k).sum()) * voxel, rel=1e-5)
        assert record["patient_id"] == f"SYN{SEED}-{int(case[-3:]):04d}"
        first += record["slices"]


def test_the_cli_writes_the_same_bytes_and_refuses_a_second_run(written, tmp_path, capsys):
    out, _ = written
    rc, _, err = cli(capsys, "synth", str(tmp_path), "--format", "nifti", "--count", str(COUNT), "--seed", str(SEED),
                     "--size", str(SIZE), "--workers", "2")
    assert rc == 0, err
    same = {k: v for k, v in snapshot(tmp_path / DATASET_NAME).items() if k != "synth.json"}
    assert same == {k: v for k, v in snapshot(out / DATASET_NAME).items() if k != "synth.json"}
    line = one_error(capsys, "synth", str(tmp_path), "--format", "nifti", "--count", "6")
    assert "holds an earlier synthetic set" in line
