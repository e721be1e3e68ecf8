"""DICOM -> HU -> grey levels, on pydicom's real CT slice and on DICOMs written here."""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit

from conftest import write_dicom
from flexunet.dataset.dicom import read_dicom_hu, read_dicom_meta, three_window_rgb, window
from flexunet.utils.errors import DataError

CT_SMALL = get_testdata_file("CT_small.dcm")  # 128x128 int16, RescaleSlope 1, RescaleIntercept -1024


# --------------------------------------------------------------------------- window


def test_window_is_linear_and_clipped() -> None:
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 3000.0])
    # brain c40 w80: lo = 0, grey = hu / 80 * 255, rounded, clipped
    assert window(hu, 40, 80).tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert window(hu, 40, 80).dtype == np.uint8


def test_three_windows_are_brain_subdural_bone() -> None:
    hu = np.array([[10.0, 365.0]])
    rgb = three_window_rgb(hu)
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    # HU 10: brain 10/80*255 = 31.9; subdural (10+20)/200*255 = 38.3; bone (10+800)/2800*255 = 73.8
    assert rgb[0, 0].tolist() == [32, 38, 74]
    # HU 365: brain and subdural saturate; bone (365+800)/2800*255 = 106.1
    assert rgb[0, 1].tolist() == [255, 255, 106]


# --------------------------------------------------------------------------- the real CT slice


def test_ct_small_hu_and_meta() -> None:
    hu, meta = read_dicom_hu(CT_SMALL)
    assert hu.shape == (128, 128) and hu.dtype == np.float32
    # stored 175 / 487 / 1928 at these pixels, intercept -1024
    assert hu[0, 0] == -849 and hu[32, 32] == -537 and hu[64, 64] == 904
    assert meta["patient_id"] == "1CT1" and meta["modality"] == "CT" and meta["instance_number"] == 1
    assert meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468))
    assert meta["series_uid"].startswith("1.3.6.1.4.1.5962")
    assert meta["rescale"] == (1.0, -1024.0)


def test_ct_small_known_hu_to_grey_levels() -> None:
    hu, _ = read_dicom_hu(CT_SMALL)
    brain = window(hu, 40, 80)
    # HU 29 -> 29/80*255 = 92.4; HU 4 -> 12.75; HU 10 -> 31.9; HU -21 below the window; HU 904 above
    assert [hu[0, 49], hu[0, 50], hu[0, 51]] == [29, 4, 10]
    assert [brain[0, 49], brain[0, 50], brain[0, 51], brain[100, 60], brain[64, 64]] == [92, 13, 32, 0, 255]
    bone = three_window_rgb(hu)[..., 2]
    # HU 904 -> (904+800)/2800*255 = 155.2; HU -849 below -800 -> 0
    assert bone[64, 64] == 155 and bone[0, 0] == 0


def test_meta_without_pixels(tmp_path: Path) -> None:
    meta = read_dicom_meta(CT_SMALL)
    assert meta["patient_id"] == "1CT1"
    path = write_dicom(tmp_path / "h.dcm", np.zeros((4, 4)), pixels=False)
    assert read_dicom_meta(path)["series_uid"] == "1.2.3.4"


def test_meta_slice_position_along_the_normal(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "p.dcm", np.zeros((4, 4)), pixels=False)
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [-10.0, 3.0, 42.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]        # coronal: the normal is (0, 1, 0)
    ds.SliceThickness = 2.5
    ds.save_as(path)
    meta = read_dicom_meta(path)
    assert meta["slice_position"] == pytest.approx(3.0) and meta["slice_thickness"] == 2.5


# --------------------------------------------------------------------------- synthetic DICOMs


def test_synthetic_rescale(tmp_path: Path) -> None:
    stored = np.array([[0, 1024], [1064, 2000]])
    hu, meta = read_dicom_hu(write_dicom(tmp_path / "a.dcm", stored, slope=2.0, intercept=-2048.0))
    assert hu.tolist() == [[-2048, 0], [80, 1952]]
    assert meta == {"patient_id": "P7", "series_uid": "1.2.3.4", "pixel_spacing": (0.5, 0.75),
                    "modality": "CT", "instance_number": 5, "rescale": (2.0, -2048.0),
                    "slice_position": None, "slice_thickness": None}


def test_hu_of_the_synthetic_dicoms_are_stored_times_slope_plus_intercept(tmp_path: Path) -> None:
    """The synthetic set's DICOMs read back as the float32 rescale did before pydicom's apply_modality_lut
    took it over, value for value (and as the HU synth drew: the PNG is their brain window)."""
    from flexunet.synthetic.synth import dataset_root, synthesize

    synthesize(tmp_path, 4, 5, size=48, progress=False)
    paths = sorted((dataset_root(tmp_path) / "DICOM").glob("*.dcm"))
    assert len(paths) == 4
    for path in paths:
        ds = pydicom.dcmread(path)
        before = ds.pixel_array.astype(np.float32) * np.float32(ds.RescaleSlope) + np.float32(ds.RescaleIntercept)
        hu, meta = read_dicom_hu(path)
        assert hu.dtype == np.float32 and np.array_equal(hu, before)
        assert meta["rescale"] == (1.0, -1024.0) and hu.min() < -900 and hu.max() > 1000   # air and bone
        png = np.asarray(Image.open(path.parent.parent / "PNG" / f"{path.stem}.png"))[..., 0]
        assert np.abs(window(hu, 40, 80).astype(int) - png).max() <= 1


def test_a_modality_lut_gives_the_hu_and_no_rescale_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Modality LUT Sequence maps stored values through its table (the rescale tags do not apply)."""
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1], [2, 7]]), slope=None, intercept=None)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [4, 0, 16]                                      # 4 entries from stored value 0
    item.LUTData = [10, 20, 30, 1000]
    item["LUTData"].VR = "US"
    ds.ModalityLUTSequence = [item]
    ds.save_as(path)
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.dicom"):
        hu, meta = read_dicom_hu(path)
    assert hu.tolist() == [[10, 20], [30, 1000]] and hu.dtype == np.float32   # past the table: its last entry
    assert meta["rescale"] is None and "RescaleSlope" not in caplog.text


def test_missing_rescale_uses_defaults_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dicom(tmp_path / "norescale.dcm", np.array([[40, -5]]), slope=None, intercept=None)
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.dicom"):
        hu, _ = read_dicom_hu(path)
    assert hu.tolist() == [[40, -5]]
    assert "norescale.dcm" in caplog.text and "slope 1, intercept 0" in caplog.text


def test_non_ct_modality_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dicom(tmp_path / "mr.dcm", np.zeros((2, 2)), modality="MR")
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.dicom"):
        read_dicom_hu(path)
    assert "Modality is MR, not CT" in caplog.text


def test_missing_pixel_data_is_a_data_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "empty.dcm", np.zeros((2, 2)), pixels=False)
    with pytest.raises(DataError, match=r"empty\.dcm: no pixel data.*export"):
        read_dicom_hu(path)


def test_undecodable_transfer_syntax_is_a_data_error(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "jpeg.dcm", np.zeros((2, 2)), syntax=JPEGBaseline8Bit)
    with pytest.raises(DataError, match=r"jpeg\.dcm: pixel data cannot be decoded.*JPEG Baseline.*convert") as err:
        read_dicom_hu(path)
    assert "\n" not in str(err.value)


def test_not_a_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "text.dcm"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"text\.dcm: not a DICOM file"):
        read_dicom_hu(path)


def test_the_dicom_writer_round_trips_hu_and_header_facts_through_the_reader(tmp_path):
    from flexunet.dataset.dicom import CTSlice, dicom_bytes

    hu = np.array([[-1024, 0, 40], [80, 1000, 3071], [-5, 7, 35]], np.int16)  # (3, 3): air .. bone, the 12-bit top
    info = CTSlice(uid_sources=("test", "7"), series_key=2, slice_index=4, patient_name="T^1", patient_id="P-2",
                   sex="F", age=61, spacing_mm=0.7, location_mm=12.5, thickness_mm=5.0, window=(40.0, 80.0),
                   rescale_intercept=-1024)
    path = tmp_path / "s.dcm"
    path.write_bytes(dicom_bytes(hu, info))
    back, meta = read_dicom_hu(path)
    assert np.array_equal(back, hu.astype(np.float32))
    assert meta["patient_id"] == "P-2" and meta["pixel_spacing"] == (0.7, 0.7) and meta["instance_number"] == 5
    assert meta["slice_position"] == 12.5 and meta["slice_thickness"] == 5.0
    again = CTSlice(**{**info.__dict__, "slice_index": 5})   # the same series, the next slice
    other = pydicom.dcmread(path), pydicom.dcmread(BytesIO(dicom_bytes(hu, again)))
    assert other[0].SeriesInstanceUID == other[1].SeriesInstanceUID
    assert other[0].SOPInstanceUID != other[1].SOPInstanceUID
    assert dicom_bytes(hu, info) == path.read_bytes()   # deterministic: the same inputs, the same bytes
