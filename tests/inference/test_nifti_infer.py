"""flexunet.inference.nifti_infer: a label volume per NIfTI volume, over the input exactly; volumes; per-slice PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import make_cfg, nifti_truth, save, stored_as, write_nifti
from flexunet.dataset.masks import read_mask
from flexunet.dataset.nifti import axial_slices
from flexunet.inference.infer import infer_images
from flexunet.utils.errors import DataError
from flexunet.utils.outputs import OWNER_FILE

VOXEL_ML = 0.8 * 0.9 * 5.0 / 1000


def intensity_model():
    """A Keras model of any input size whose 1x1 convolution reads the grey level x (mean of the channels):
    logits (0, 0.1 (x - 200), 0.1 (50 - x)): class 1 above 200, class 2 below 50, background between."""
    import keras

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 1, name="head")
    x = conv(inputs)
    w = np.array([[[[0, 0.1 / 3, -0.1 / 3]] * 3]], np.float32)
    conv.set_weights([w, np.array([0, -20, 5], np.float32)])
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


@pytest.fixture(scope="module")
def model():
    return intensity_model()


def cfg_for(tmp_path: Path, **infer):
    return make_cfg(tmp_path, model={"image_width": 32, "image_height": 32},
                    prepare={"window_center": 127.5, "window_width": 255.0, "size": 32},
                    infer={"images_dir": "./in", "output_dir": "./out", **infer},
                    tiledinfer={"images_dir": "./in", "output_dir": "./tiles"})


@pytest.mark.parametrize("orientation", ["LPS", "ZXY"])
def test_a_label_volume_lies_over_its_input(tmp_path, model, orientation):
    for n in range(2):
        write_nifti(tmp_path / "in" / f"case{n}_0000.nii.gz", *stored_as(nifti_truth(n)[0], orientation))
    summary = infer_images(cfg_for(tmp_path, uncertainty=True), model=model, progress=False)
    assert summary["images"] == 12 and summary["volumes_predicted"] == 2
    for n in range(2):
        source = nib.load(tmp_path / "in" / f"case{n}_0000.nii.gz")
        written = nib.load(tmp_path / "out" / f"case{n}.nii.gz")
        assert written.shape == source.shape and np.array_equal(written.affine, source.affine)
        assert written.header["sform_code"] == source.header["sform_code"] and written.get_data_dtype() == np.uint8
        assert np.array_equal(np.asanyarray(written.dataobj), stored_as(nifti_truth(n)[1], orientation)[0])
        doubt = nib.load(tmp_path / "out" / "uncertainty" / f"case{n}.nii.gz")
        assert doubt.shape == source.shape and np.array_equal(doubt.affine, source.affine)
        assert 0.0 <= float(doubt.get_fdata().min()) and float(doubt.get_fdata().max()) <= 1.0
    with open(tmp_path / "out" / "volumes.csv", newline="") as fh:
        rows = {(r["patient"], r["class"]): r for r in csv.DictReader(fh)}
    for n in range(2):
        for k, name in ((1, "class_1"), (2, "class_2")):
            assert float(rows[(f"case{n}", name)]["ml"]) == pytest.approx(
                (nifti_truth(n)[1] == k).sum() * VOXEL_ML, rel=1e-4)
    assert rows[("case0", "class_1")]["method"] == "positions (5 mm)"
    assert (tmp_path / "out" / "uncertain_slices.csv").read_text().count("case1 slice") == 6


def test_png_format_keeps_the_per_slice_masks(tmp_path, model):
    write_nifti(tmp_path / "in" / "case0_0000.nii.gz", *stored_as(nifti_truth(0)[0], "LPS"))
    cfg = cfg_for(tmp_path, overlays=True)
    summary = infer_images(cfg, model=model, progress=False, fmt="png")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"case0_{k:04d}.png" for k in range(6)]
    truth = axial_slices(nifti_truth(0)[1])
    for k in range(6):
        index = read_mask(tmp_path / "out" / f"case0_{k:04d}.png", cfg.mask.rgb_map).index
        assert np.array_equal(index, truth[k])
    assert len(summary["overlays"]) == 6 and (tmp_path / "out" / "volumes.csv").is_file()


def test_inputs_that_cannot_be_predicted_as_asked_are_one_line(tmp_path, model):
    write_nifti(tmp_path / "in" / "a.nii.gz", nifti_truth(0)[0])
    cfg = cfg_for(tmp_path)
    with pytest.raises(DataError, match=r"NIfTI volumes with --tiled; expected image slices"):
        infer_images(cfg, model=model, tiled=True, progress=False)
    save(tmp_path / "in" / "b.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"holds NIfTI volumes \(a\.nii\.gz, \.\.\.\) and image slices \(b\.png"):
        infer_images(cfg, model=model, progress=False)
    (tmp_path / "in" / "a.nii.gz").unlink()
    with pytest.raises(DataError, match=r"--format nifti: .* holds image slices \(b\.png, \.\.\.\); expected NIfTI"):
        infer_images(cfg, model=model, progress=False, fmt="nifti")


def test_a_bad_volume_leaves_no_output(tmp_path, model):
    write_nifti(tmp_path / "in" / "a.nii.gz", nifti_truth(0)[0])
    write_nifti(tmp_path / "in" / "b.nii.gz", np.zeros((32, 28, 6, 2), np.int16))
    with pytest.raises(DataError, match=r"b\.nii\.gz: a 4-D image of 2 volumes"):
        infer_images(cfg_for(tmp_path), model=model, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_window_other_than_the_training_slices_is_warned(tmp_path, model, caplog):
    import json
    import logging

    (tmp_path / "master" / "images").mkdir(parents=True)
    (tmp_path / "master" / "manifest.json").write_text(json.dumps({
        "source": "nifti", "window": [40.0, 80.0], "size": 32,
        "items": [{"id": "a", "image": "images/a.png", "mask": "masks/a.png"}]}))
    write_nifti(tmp_path / "in" / "a.nii.gz", nifti_truth(0)[0])
    cfg = make_cfg(tmp_path, model={"image_width": 32, "image_height": 32},
                   train={"images_dir": "./master/images"},
                   prepare={"window_center": 127.5, "window_width": 255.0, "size": 32},
                   infer={"images_dir": "./in", "output_dir": "./out"})
    with caplog.at_level(logging.WARNING, logger="flexunet.inference.nifti_infer"):
        infer_images(cfg, model=model, progress=False)
    said = [r.getMessage() for r in caplog.records if r.name == "flexunet.inference.nifti_infer"]
    assert len(said) == 1 and "prepared with window [40.0, 80.0] (now [127.5, 255.0])" in said[0]


def test_label_volumes_never_replace_a_users_file(tmp_path, model):
    """The ownership rule for NIfTI outputs: a folder of the user's files, one named as a label volume."""
    import hashlib

    from flexunet.utils.errors import FlexUNetError

    write_nifti(tmp_path / "in" / "case0_0000.nii.gz", *stored_as(nifti_truth(0)[0], "LPS"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "case0.nii.gz").write_bytes(b"the user's own segmentation")
    (out / "notes.txt").write_text("the user's notes")
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"case0\.nii\.gz"):
            infer_images(cfg_for(tmp_path), model=model, progress=False, overwrite=overwrite)
        assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == digest
    (out / "case0.nii.gz").unlink()                # beside the notes only: refused, then allowed with --overwrite
    with pytest.raises(FlexUNetError, match="pass --overwrite to write beside them"):
        infer_images(cfg_for(tmp_path), model=model, progress=False)
    infer_images(cfg_for(tmp_path), model=model, progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "the user's notes" and nib.load(out / "case0.nii.gz").shape
    infer_images(cfg_for(tmp_path), model=model, progress=False, overwrite=True)     # its own, replaced
    assert sorted(p.name for p in out.iterdir()) == sorted(["case0.nii.gz", "notes.txt", "volumes.csv",
                                                            OWNER_FILE])
