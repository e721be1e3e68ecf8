"""DICOM CT slices: Hounsfield units, header facts, and display windows.

:func:`read_dicom_hu` turns a CT slice into Hounsfield units with pydicom's
``apply_modality_lut`` (``HU = stored value * RescaleSlope + RescaleIntercept``, or the file's
Modality LUT where it has one) and the header facts the pipeline needs (patient, series, pixel
spacing).  :func:`window` maps HU to 0..255 grey levels linearly between ``center - width/2``
and ``center + width/2``; :func:`three_window_rgb` stacks the brain, subdural and bone windows as R, G and B; :func:`window_rgb`
is the image ``[prepare]`` makes of a HU slice (DICOM or NIfTI).
:func:`dicom_bytes` writes a CT slice file (the synthetic dataset's) from HU and a :class:`CTSlice`.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.pixels import apply_modality_lut

from flexunet.utils.errors import DataError

log = logging.getLogger(__name__)

# (center, width) in HU of the three classic head-CT windows, in R, G, B order.
BRAIN_WINDOW = (40.0, 80.0)
SUBDURAL_WINDOW = (80.0, 200.0)
BONE_WINDOW = (600.0, 2800.0)
THREE_WINDOWS = (BRAIN_WINDOW, SUBDURAL_WINDOW, BONE_WINDOW)


@dataclass
class DicomSlice:
    """A decoded slice: HU array, header facts and the warnings reading it raised."""

    hu: np.ndarray                                   # (H, W) float32 Hounsfield units
    meta: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _dcmread(path: Path, stop_before_pixels: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file (no DICM preamble); expected a DICOM CT slice "
                        f"(.dcm) — check the file or its extension") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: cannot be read as DICOM ({exc}); the file may be truncated or "
                        f"corrupt — re-export it") from None


def _text(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _meta(ds: Any) -> dict[str, Any]:
    spacing = None
    raw = ds.get("PixelSpacing")
    if raw is not None:
        try:
            row, col = (float(v) for v in raw)
            if row > 0 and col > 0:
                spacing = (row, col)
        except (TypeError, ValueError):
            spacing = None
    instance = ds.get("InstanceNumber")
    try:
        instance = int(instance) if instance is not None and str(instance).strip() != "" else None
    except (TypeError, ValueError):
        instance = None
    return {
        **_geometry(ds),
        "patient_id": _text(ds, "PatientID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
        "pixel_spacing": spacing,
        "modality": _text(ds, "Modality"),
        "instance_number": instance,
    }


def _floats(ds: Any, keyword: str, n: int) -> tuple[float, ...] | None:
    raw = ds.get(keyword)
    if raw is None:
        return None
    try:
        values = tuple(float(v) for v in (raw if n > 1 else [raw]))
    except (TypeError, ValueError):
        return None
    return values if len(values) == n and all(np.isfinite(values)) else None


def _geometry(ds: Any) -> dict[str, Any]:
    """Where the slice lies: ``slice_position`` (mm along the slice normal, from ImagePositionPatient
    and ImageOrientationPatient, else SliceLocation, else None) and ``slice_thickness`` (mm or None)."""
    position = None
    ipp, iop = _floats(ds, "ImagePositionPatient", 3), _floats(ds, "ImageOrientationPatient", 6)
    if ipp is not None:
        normal = np.cross(iop[:3], iop[3:]) if iop is not None else np.array([0.0, 0.0, 1.0])
        position = float(np.dot(normal, ipp))
    elif _floats(ds, "SliceLocation", 1) is not None:
        position = _floats(ds, "SliceLocation", 1)[0]
    thickness = _floats(ds, "SliceThickness", 1)
    return {"slice_position": position,
            "slice_thickness": thickness[0] if thickness is not None and thickness[0] > 0 else None}


def read_dicom_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Header facts of a DICOM file without decoding its pixels (see :func:`read_dicom_hu`)."""
    return _meta(_dcmread(Path(path), stop_before_pixels=True))


def _rescale(ds: Any, path: Path, warnings: list[str]) -> tuple[float, float]:
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    missing = [name for name, v in (("RescaleSlope", slope), ("RescaleIntercept", intercept))
               if v is None or str(v).strip() == ""]
    try:
        slope = 1.0 if "RescaleSlope" in missing else float(slope)
        intercept = 0.0 if "RescaleIntercept" in missing else float(intercept)
    except (TypeError, ValueError):
        raise DataError(f"{path}: RescaleSlope {slope!r} / RescaleIntercept {intercept!r} are not "
                        f"numbers; expected numeric rescale tags (or none at all)") from None
    if missing:
        warnings.append(f"{path}: no {' / '.join(missing)}; used the defaults slope 1, intercept 0, "
                        f"so stored values are taken as HU")
    return slope, intercept


def read_dicom(path: str | os.PathLike) -> DicomSlice:
    """Decode a DICOM slice into HU without logging; warnings are returned in the slice."""
    path = Path(path)
    ds = _dcmread(path, stop_before_pixels=False)
    meta = _meta(ds)
    warnings: list[str] = []
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{path}: no pixel data (a header-only DICOM); expected an image slice — "
                        f"export the series with its pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported encodings
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax)
        reason = " ".join(str(exc).split())  # one line
        raise DataError(f"{path}: pixel data cannot be decoded (transfer syntax {name}: {reason}); "
                        f"install the matching pydicom decoder plugin (e.g. pylibjpeg, gdcm) or "
                        f"convert the file to an uncompressed transfer syntax (gdcmconv --raw)") from None
    pixels = np.asarray(pixels)
    if pixels.ndim != 2:
        raise DataError(f"{path}: pixel data of shape {pixels.shape}; expected one greyscale slice "
                        f"(rows, columns) — split multi-frame or colour DICOMs first")
    if meta["modality"] != "CT":
        warnings.append(f"{path}: Modality is {meta['modality'] or 'missing'}, not CT; HU windows "
                        f"assume CT values")
    if ds.get("ModalityLUTSequence"):      # a table maps stored values to HU; the rescale tags do not apply
        meta["rescale"] = None
    else:
        slope, intercept = _rescale(ds, path, warnings)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept     # the defaults, where the tags are missing
        meta["rescale"] = (slope, intercept)
    hu = np.asarray(apply_modality_lut(pixels, ds), np.float32)
    return DicomSlice(hu, meta, warnings)


def read_dicom_hu(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """``(hu, meta)`` of a DICOM CT slice; its warnings are logged.

    ``hu`` is float32 (H, W) Hounsfield units; ``meta`` holds ``patient_id``,
    ``series_uid``, ``pixel_spacing`` ((row, col) mm or None), ``modality``,
    ``instance_number``, ``slice_position`` (mm along the slice normal or None),
    ``slice_thickness`` (mm or None) and ``rescale`` ((slope, intercept) used, or None where the
    file's Modality LUT gave the HU).
    """
    sl = read_dicom(path)
    for message in sl.warnings:
        log.warning(message)
    return sl.hu, sl.meta


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """uint8 grey levels: ``(hu - (center - width/2)) / width * 255``, rounded and clipped."""
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = center - width / 2.0
    grey = (np.asarray(hu, np.float64) - lo) / width * 255.0
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def three_window_rgb(hu: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: brain (c40/w80), subdural (c80/w200) and bone (c600/w2800) windows."""
    return np.stack([window(hu, c, w) for c, w in THREE_WINDOWS], axis=-1)


def window_rgb(hu: np.ndarray, center: float, width: float, three_windows: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 of a HU slice as ``[prepare]`` makes it: the three windows as R, G, B, or the one
    window (``center``, ``width``) in every channel."""
    if three_windows:
        return three_window_rgb(hu)
    return np.repeat(window(hu, center, width)[..., None], 3, axis=-1)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class CTSlice:
    """What a CT slice file says beside its pixels (the synthetic dataset's DICOM files)."""

    uid_sources: tuple[str, ...]     # UIDs are generate_uid(entropy_srcs=[*uid_sources, kind, keys...])
    series_key: int                  # one study, series and frame of reference per key (a patient)
    slice_index: int                 # 0-based place in the series: InstanceNumber is slice_index + 1
    patient_name: str
    patient_id: str
    sex: str
    age: int                         # years
    spacing_mm: float                # square pixels
    location_mm: float               # SliceLocation and the z of ImagePositionPatient
    thickness_mm: float
    window: tuple[float, float]      # (centre, width) in HU
    rescale_intercept: int           # stored value = HU - rescale_intercept, slope 1
    manufacturer: str = "FlexUNet synthetic"
    description: str = "Synthetic non-contrast head CT"
    date: str = "20210101"


def dicom_bytes(hu: np.ndarray, info: CTSlice) -> bytes:
    """A CT Image Storage file (Explicit VR Little Endian) holding square ``hu`` through the rescale."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[*info.uid_sources, *map(str, parts)])

    size, sp, key = hu.shape[0], info.spacing_mm, info.series_key
    sop = uid("sop", key, info.slice_index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = info.date
    ds.Modality, ds.Manufacturer = "CT", info.manufacturer
    ds.StudyDescription = ds.SeriesDescription = info.description
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientSex, ds.PatientAge = info.sex, f"{info.age:03d}Y"
    ds.BodyPartExamined, ds.KVP = "HEAD", 120
    ds.SliceThickness = info.thickness_mm
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study", key), uid("series", key)
    ds.FrameOfReferenceUID = uid("frame", key)
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = str(key + 1), 1, info.slice_index + 1
    ds.ImagePositionPatient = [round(-size / 2 * sp, 4), round(-size / 2 * sp, 4), info.location_mm]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = info.location_mm
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [round(sp, 6), round(sp, 6)]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = info.window
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = info.rescale_intercept, 1, "HU"
    stored = (hu.astype(np.int32) - info.rescale_intercept).astype("<u2")
    ds.add_new(0x7FE00010, "OW", stored.tobytes())
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
