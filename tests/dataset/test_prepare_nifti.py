"""flexunet.dataset.prepare_nifti: nnU-Net's raw layout and NIfTI pairs -> the master dataset, a patient per volume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import NIFTI_SECTIONS, cli, config_text, make_nnunet, nifti_truth, one_error, stored_as, write_nifti
from flexunet.dataset.masks import read_mask
from flexunet.dataset.nifti import axial_slices
from flexunet.utils.io import read_image

TRUTH_ML = [float((nifti_truth(n)[1] == k).sum()) * 0.8 * 0.9 * 5.0 / 1000 for n in range(3) for k in (1, 2)]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """raw/ in nnU-Net's layout (3 labelled LPS volumes, 1 in imagesTs/) and its config; returns the config."""
    make_nnunet(tmp_path / "raw")
    config = tmp_path / "n.config"
    config.write_text(config_text(**NIFTI_SECTIONS))
    return config


def manifest(config: Path) -> dict:
    return json.loads((config.parent / "master" / "manifest.json").read_text())


def test_nnunet_layout_is_prepared_a_patient_per_volume(project, capsys):
    rc, _, err = cli(capsys, "prepare", str(project))
    assert rc == 0, err
    doc = manifest(project)
    assert doc["class_names"] == ["background", "bright", "dark"] and doc["layout"] == "nnU-Net"
    assert doc["unlabelled"] == [str(project.parent / "raw" / "imagesTs" / "case3_0000.nii.gz")]
    assert doc["source"] == "nifti" and doc["window"] == [127.5, 255.0] and "RAS+" in doc["orientation"]
    rows = doc["items"]
    assert len(rows) == 3 * 6 and {r["patient_id"] for r in rows} == {"case0", "case1", "case2"}
    first = next(r for r in rows if r["id"] == "case1_0002")
    assert first["group"] == "case1" and first["slice_index"] == 2 and first["slice_thickness"] == 5.0
    assert first["pixel_spacing"] == pytest.approx([0.9, 0.8]) and first["original_size"] == [28, 32]
    # the slice as a CT slice is shown, windowed so grey = HU, the padding at the top and bottom
    hu, labels = nifti_truth(1)
    image = read_image(project.parent / "master" / first["image"])[2:30, :, 0]
    assert np.array_equal(image, axial_slices(hu)[2].clip(0, 255))
    index = read_mask(project.parent / "master" / first["mask"], {(0, 0, 0): 0, (1, 1, 1): 1, (2, 2, 2): 2},
                      mask_format="index").index
    assert np.array_equal(index[2:30], axial_slices(labels)[2]) and not index[:2].any()
    volumes = [sum(r["pixels"][k] for r in rows if r["patient_id"] == f"case{n}") * 0.8 * 0.9 * 5.0 / 1000
               for n in range(3) for k in (1, 2)]
    assert volumes == pytest.approx(TRUTH_ML)


def test_the_split_keeps_each_volume_whole_and_takes_the_class_names(project, capsys):
    assert cli(capsys, "prepare", str(project))[0] == 0
    assert cli(capsys, "split", str(project))[0] == 0
    split = json.loads((project.parent / "dataset" / "N" / "split.json").read_text())
    assert split["class_names"] == ["background", "bright", "dark"]
    assert sorted(g for s in split["subsets"].values() for g in s["groups"]) == ["case0", "case1", "case2"]
    for subset in split["subsets"].values():
        cases = {name.rsplit("_", 1)[0] for name in subset["files"]}
        assert len(cases) == 1 and len(subset["files"]) == 6


def test_a_folder_of_pairs_with_classes_given(tmp_path, capsys):
    for n in range(2):
        hu, labels = nifti_truth(n)
        write_nifti(tmp_path / "raw" / "images" / f"p{n}.nii", *stored_as(hu, "ZXY"))
        write_nifti(tmp_path / "raw" / "labels" / f"p{n}.nii", *stored_as(labels, "ZXY"))
    config = tmp_path / "n.config"
    config.write_text(config_text(**NIFTI_SECTIONS))
    rc, _, err = cli(capsys, "prepare", str(config), "--classes", "infarct,bleed")
    assert rc == 0, err
    doc = manifest(config)
    assert doc["layout"] == "pairs" and doc["class_names"] == ["background", "infarct", "bleed"]
    assert sum(r["pixels"][1] for r in doc["items"]) == sum((nifti_truth(n)[1] == 1).sum() for n in range(2))


# --------------------------------------------------------------------------- one line each


def test_a_label_whose_shape_differs_from_its_image_is_one_line(project, capsys):
    labels = nifti_truth(1)[1][..., :5]
    write_nifti(project.parent / "raw" / "labelsTr" / "case1.nii.gz", *stored_as(labels, "LPS"))
    line = one_error(capsys, "prepare", str(project))
    assert "labelsTr/case1.nii.gz: label volume is 32x28x5 voxels but its image case1_0000.nii.gz is 32x28x6" in line


def test_a_4d_image_is_one_line(project, capsys):
    hu = np.stack([nifti_truth(0)[0]] * 2, -1)
    write_nifti(project.parent / "raw" / "imagesTr" / "case0_0000.nii.gz", hu)
    line = one_error(capsys, "prepare", str(project))
    assert "case0_0000.nii.gz: a 4-D image of 2 volumes or channels (shape 32x28x6x2); expected one 3-D" in line


def test_a_label_with_an_unknown_value_is_one_line(project, capsys):
    labels = nifti_truth(2)[1]
    labels[3, 3, 3] = 7
    write_nifti(project.parent / "raw" / "labelsTr" / "case2.nii.gz", *stored_as(labels, "LPS"))
    line = one_error(capsys, "prepare", str(project))
    assert "case2.nii.gz: label value 7 is not a class (1 voxels); expected 0..2 (background, bright, dark)" in line


def test_dataset_json_must_agree_with_num_classes_and_hold_one_channel(project, capsys):
    path = project.parent / "raw" / "dataset.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "labels": {"background": 0, "lesion": 1}}))
    line = one_error(capsys, "prepare", str(project))
    assert "dataset.json: 2 labels (background, lesion) but [model] num_classes = 3" in line
    path.write_text(json.dumps({**doc, "channel_names": {"0": "CT", "1": "PET"}}))
    assert "dataset.json: 2 channels (CT, PET); expected one CT channel" in one_error(capsys, "prepare", str(project))


def test_raw_dir_may_be_the_parent_of_the_dataset_folder(project, capsys):
    shutil.move(project.parent / "raw", project.parent / "Dataset001_X")
    (project.parent / "raw").mkdir()
    shutil.move(project.parent / "Dataset001_X", project.parent / "raw" / "Dataset001_X")
    assert cli(capsys, "prepare", str(project))[0] == 0
    assert manifest(project)["raw_root"] == str(project.parent / "raw" / "Dataset001_X")


def test_three_windows_make_an_rgb_slice_as_for_dicom(project, capsys):
    from flexunet.dataset.dicom import three_window_rgb

    rc, _, err = cli(capsys, "prepare", str(project), "--set", "prepare.three_windows=True")
    assert rc == 0, err
    doc = manifest(project)
    assert doc["window"] == "three_windows"
    image = read_image(project.parent / "master" / "images" / "case0_0003.png")[2:30]
    assert np.array_equal(image, three_window_rgb(axial_slices(nifti_truth(0)[0])[3]))
