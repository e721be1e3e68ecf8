"""flexunet.dataset.nifti: volumes to canonical axial slices and back, spacing, and the one-line refusals."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from conftest import NIFTI_SHAPE, NIFTI_ZOOMS, nifti_truth, ras_affine, stored_as, write_nifti
from flexunet.dataset.nifti import (axial_slices, case_name, from_axial_slices, like_input, read_labels,
                                    read_volume, to_original)
from flexunet.utils.errors import DataError

NAMES = ("background", "bright", "dark")


def test_axial_slices_are_read_as_a_ct_slice_is_shown():
    # (X=3, Y=2, Z=2) canonical: slice k, row r (anterior first), column c (patient's right first)
    data = np.arange(12).reshape(3, 2, 2)
    slices = axial_slices(data)
    assert slices.shape == (2, 2, 3)
    assert slices[0, 0, 0] == data[2, 1, 0]      # top left: most anterior (y max), patient's right (x max)
    assert slices[1, 1, 2] == data[0, 0, 1]      # bottom right of slice 1: posterior, patient's left
    assert np.array_equal(from_axial_slices(slices), data)


@pytest.mark.parametrize("orientation", ["LPS", "ZXY"])
def test_any_voxel_order_gives_the_canonical_slices_and_a_label_volume_in_its_own(tmp_path, orientation):
    hu, labels = nifti_truth(1)
    canonical = read_volume(write_nifti(tmp_path / "ras.nii.gz", hu))
    path = write_nifti(tmp_path / "img.nii.gz", *stored_as(hu, orientation))
    label_path = write_nifti(tmp_path / "lab.nii.gz", *stored_as(labels, orientation))
    volume = read_volume(path)
    assert np.array_equal(axial_slices(volume.data), axial_slices(canonical.data))
    assert volume.zooms == pytest.approx(NIFTI_ZOOMS) and volume.pixel_spacing == pytest.approx((0.9, 0.8))
    assert np.array_equal(read_labels(label_path, volume, NAMES).data, labels)

    out = tmp_path / "pred.nii.gz"
    out.write_bytes(like_input(labels, volume))
    written = nib.load(out)
    stored, affine = stored_as(labels, orientation)
    assert written.shape == volume.shape and np.array_equal(written.affine, nib.load(path).affine)
    assert np.allclose(written.affine, affine) and written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(written.dataobj), stored)
    assert np.array_equal(to_original(volume.data, volume), np.asanyarray(nib.load(path).dataobj))


def test_slice_positions_follow_the_header(tmp_path):
    volume = read_volume(write_nifti(tmp_path / "v.nii", *stored_as(nifti_truth()[0], "LPS")))
    assert volume.slice_count == NIFTI_SHAPE[2]
    assert [volume.slice_position(k) for k in range(3)] == pytest.approx([-40.0, -35.0, -30.0])


def test_case_names_drop_the_channel_suffix():
    assert case_name("a/case_007_0000.nii.gz") == "case_007" and case_name("x.nii") == "x"


# --------------------------------------------------------------------------- one line each


def _image(tmp_path):
    return read_volume(write_nifti(tmp_path / "img.nii.gz", nifti_truth()[0]))


def test_a_4d_image_says_how_many_volumes_and_what_is_expected(tmp_path):
    four = np.zeros((*NIFTI_SHAPE, 3), np.int16)
    with pytest.raises(DataError, match=r"img4\.nii\.gz: a 4-D image of 3 volumes or channels \(shape 32x28x6x3\); "
                                        r"expected one 3-D volume per file .*CASE_0000, CASE_0001"):
        read_volume(write_nifti(tmp_path / "img4.nii.gz", four))
    single = read_volume(write_nifti(tmp_path / "one.nii.gz", four[..., :1]))      # a 4th axis of 1 is a volume
    assert single.data.shape == NIFTI_SHAPE


def test_a_label_of_another_shape_or_grid_is_refused(tmp_path):
    image = _image(tmp_path)
    labels = nifti_truth()[1]
    with pytest.raises(DataError, match=r"short\.nii\.gz: label volume is 32x28x5 voxels but its image img\.nii\.gz "
                                        r"is 32x28x6; expected the same shape"):
        read_labels(write_nifti(tmp_path / "short.nii.gz", labels[..., :5]), image, NAMES)
    moved = ras_affine(shift=(-10.0, 30.0, -40.0))
    with pytest.raises(DataError, match=r"moved\.nii\.gz: label affine differs from its image img\.nii\.gz's by up "
                                        r"to 2 mm .*expected the same voxel grid"):
        read_labels(write_nifti(tmp_path / "moved.nii.gz", labels, moved), image, NAMES)


def test_a_label_value_outside_the_classes_is_named(tmp_path):
    labels = nifti_truth()[1]
    labels[0, 0, :2] = 5
    with pytest.raises(DataError, match=r"odd\.nii\.gz: label value 5 is not a class \(2 voxels\); expected 0\.\.2 "
                                        r"\(background, bright, dark\)"):
        read_labels(write_nifti(tmp_path / "odd.nii.gz", labels), _image(tmp_path), NAMES)
    halves = labels.astype(np.float32)
    halves[:] = np.where(labels == 5, 0.5, labels)
    with pytest.raises(DataError, match=r"half\.nii\.gz: label value 0\.5 is not a class index"):
        read_labels(write_nifti(tmp_path / "half.nii.gz", halves), _image(tmp_path), NAMES)


def test_an_unreadable_file_is_one_line(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", nifti_truth()[0])
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "text.nii"
    text.write_text("not a volume\n")
    for path in (cut, text, tmp_path / "gone.nii.gz"):
        with pytest.raises(DataError) as err:
            read_volume(path)
        assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    tail = tmp_path / "tail.nii.gz"                      # a header, then too few voxels
    tail.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(DataError, match=r"tail\.nii\.gz: voxel data cannot be read \(.*\); the file may be truncated"):
        read_volume(tail)
    raw = tmp_path / "raw.nii.gz"
    raw.write_bytes(gzip.compress(b"\0" * 400))
    with pytest.raises(DataError, match=r"raw\.nii\.gz: cannot be read as NIfTI"):
        read_volume(raw)
