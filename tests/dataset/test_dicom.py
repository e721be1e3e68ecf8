"""DICOM -> HU -> grey levels, on pydicom's real CT slice and on DICOMs written here."""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from flexunet.dataset.dicom import read_dicom_hu, read_dicom_meta, three_window_rgb, window
from flexunet.utils.errors import DataError

CT_SMALL = get_testdata_file("CT_small.dcm")  # 128x128 int16, RescaleSlope 1, RescaleIntercept -1024


def write_dicom(path: Path, stored: np.ndarray, *, slope: float | None = 1.0, intercept: float | None = -1024.0,
                modality: str = "CT", pixels: bool = True, syntax: str = ExplicitVRLittleEndian) -> Path:
    """A minimal single-frame int16 DICOM; slope/intercept None leaves the tag out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID, ds.InstanceNumber = modality, "P7", "1.2.3.4", 5
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [0.5, 0.75]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if pixels:
        ds.PixelData = stored.astype("<i2").tobytes()
    if syntax != ExplicitVRLittleEndian:  # a compressed syntax with bytes no decoder accepts
        ds.PixelData = encapsulate([b"not a jpeg"])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


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
