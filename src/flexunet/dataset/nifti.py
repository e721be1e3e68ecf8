"""NIfTI volumes, read and written by nibabel: CT in Hounsfield units and label volumes as axial slices, and back.

Orientation, the one order every stage slices in:

1. a volume is reoriented to RAS+ by ``nibabel.as_closest_canonical`` (array axis x runs from the
   patient's left to right, y from posterior to anterior, z from inferior to superior); the voxel
   spacing is the canonical header's zooms;
2. axial slice ``k`` is ``z = k``, so slice 0 is the most inferior; it is shown as a CT slice is read
   (radiological, as DICOM's rows and columns): rows from anterior to posterior, columns from the
   patient's right to left (the patient's right on the image's left).  :func:`axial_slices` and
   :func:`from_axial_slices` are exact inverses;
3. :func:`to_original` maps a canonical array back to the file's own voxel order, so a label volume
   made by :func:`nifti_bytes` has the input's shape, affine and header (it overlays in 3D Slicer).

Each file that cannot be used is one line (:class:`flexunet.utils.errors.DataError`): an unreadable
file, a 4-D image, a label whose shape or affine differs from its image's, a label value outside the
classes.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
from nibabel import orientations

from flexunet.utils.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
CHANNEL_SUFFIX = re.compile(r"_\d{4}$")     # nnU-Net's channel suffix of an image file: CASE_0000.nii.gz
AFFINE_TOLERANCE = 1e-3                     # mm: a label's affine may differ from its image's by rounding only
ORIENTATION = ("RAS+ (nibabel.as_closest_canonical); axial slice k = z index from inferior to superior; "
               "rows anterior to posterior, columns from the patient's right to left (radiological)")
_RAS = orientations.axcodes2ornt(("R", "A", "S"))


# --------------------------------------------------------------------------- names


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """The file name without .nii or .nii.gz."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(name).stem


def case_name(path: str | os.PathLike) -> str:
    """The case an image file belongs to: its stem less nnU-Net's channel suffix (``CASE_0000`` -> ``CASE``)."""
    return CHANNEL_SUFFIX.sub("", nifti_stem(path))


def list_nifti(folder: str | os.PathLike) -> list[Path]:
    """The NIfTI files (.nii, .nii.gz) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Volume:
    """A volume in canonical (RAS+) order and the file it came from."""

    path: Path
    image: Any                        # the nibabel image as read: the file's shape, affine and header
    data: np.ndarray                  # canonical: float32 HU for an image, uint8 class indices for labels
    zooms: tuple[float, float, float]  # canonical voxel size x, y, z in mm
    origin_z: float                   # world z (mm) of slice 0's centre

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.image.shape[:3])

    @property
    def affine(self) -> np.ndarray:
        return self.image.affine

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) mm of an axial slice: rows run along y, columns along x."""
        return (self.zooms[1], self.zooms[0])

    @property
    def slice_count(self) -> int:
        return int(self.data.shape[2])

    def slice_position(self, k: int) -> float:
        """mm along the slice axis of slice ``k``: slice 0's world z plus k slice spacings."""
        return round(self.origin_z + k * self.zooms[2], 4)


def load_nifti(path: str | os.PathLike, what: str = "image") -> Any:
    """The nibabel image of a 3-D NIfTI file (a 4-D one whose 4th axis has length 1 is squeezed); one line
    when it cannot be read or is no single volume."""
    path = Path(path)
    try:
        img = nib.load(path)
        shape = img.shape
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as NIfTI ({_one_line(exc)}); the file may be truncated or not "
                        f"NIfTI — re-export it as .nii or .nii.gz") from None
    if len(shape) == 4 and shape[3] == 1:
        img = nib.funcs.squeeze_image(img)
    elif len(shape) > 3:
        n = int(np.prod(shape[3:]))
        raise DataError(f"{path}: a {len(shape)}-D {what} of {n} volumes or channels (shape "
                        f"{'x'.join(map(str, shape))}); expected one 3-D volume per file — nnU-Net keeps each "
                        f"channel in its own file (CASE_0000, CASE_0001, ...): split it (nibabel.four_to_three) "
                        f"and give FlexUNet the CT channel")
    if len(img.shape) != 3:
        raise DataError(f"{path}: a {len(img.shape)}-D {what} (shape {'x'.join(map(str, img.shape))}); expected "
                        f"a 3-D volume")
    return img


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _array(img: Any, path: Path, dtype: Any | None) -> np.ndarray:
    """The voxels (scaled as the header says when ``dtype`` is a float type, else as stored)."""
    try:
        if dtype is not None:
            return img.get_fdata(dtype=dtype)
        return np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: voxel data cannot be read ({_one_line(exc)}); the file may be truncated — "
                        f"re-export it") from None


def _canonical(img: Any, data: np.ndarray, path: Path) -> Volume:
    canonical = nib.as_closest_canonical(img)
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    if not all(z > 0 for z in zooms):
        raise DataError(f"{path}: voxel size {zooms} mm; expected positive voxel sizes in the header (pixdim)")
    ras = orientations.apply_orientation(data, orientations.io_orientation(img.affine))
    return Volume(path, img, np.ascontiguousarray(ras), zooms, float(canonical.affine[2, 3]))


def read_volume(path: str | os.PathLike) -> Volume:
    """An image volume: float32 voxel values (HU for CT, the header's scaling applied), canonical."""
    path = Path(path)
    img = load_nifti(path, "image")
    return _canonical(img, _array(img, path, np.float32), path)


def check_same_grid(label_img: Any, label_path: Path, image: Volume) -> None:
    """One line when a label volume's shape or affine is not its image's."""
    shape = tuple(int(n) for n in label_img.shape[:3])
    if shape != image.shape:
        raise DataError(f"{label_path}: label volume is {'x'.join(map(str, shape))} voxels but its image "
                        f"{image.path.name} is {'x'.join(map(str, image.shape))}; expected the same shape")
    gap = float(np.abs(np.asarray(label_img.affine) - np.asarray(image.affine)).max())
    if gap > AFFINE_TOLERANCE:
        raise DataError(f"{label_path}: label affine differs from its image {image.path.name}'s by up to "
                        f"{gap:.4g} mm (label {nib.aff2axcodes(label_img.affine)}, image "
                        f"{nib.aff2axcodes(image.affine)}); expected the same voxel grid — resample the label "
                        f"onto the image or fix its header")


def read_labels(path: str | os.PathLike, image: Volume, class_names: Sequence[str]) -> Volume:
    """The label volume of ``image``: uint8 class indices 0..len(class_names)-1, canonical as the image."""
    path = Path(path)
    img = load_nifti(path, "label volume")
    check_same_grid(img, path, image)
    values = _array(img, path, None)
    if values.dtype.kind == "f":
        odd = values[~np.isfinite(values) | (np.isfinite(values) & (values != np.round(values)))]
        if odd.size:
            raise DataError(f"{path}: label value {odd.flat[0]:g} is not a class index ({odd.size} voxels); "
                            f"expected whole numbers 0..{len(class_names) - 1}")
    n = len(class_names)
    bad = (values < 0) | (values >= n)
    if bad.any():
        wrong = np.unique(values[bad])
        shown = ", ".join(f"{v:g}" for v in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
        raise DataError(f"{path}: label value {shown} is not a class ({int(bad.sum())} voxels); expected "
                        f"0..{n - 1} ({', '.join(class_names)}) — check dataset.json labels or "
                        f"[model] num_classes = {n}")
    return _canonical(img, values.astype(np.uint8), path)


# --------------------------------------------------------------------------- slices and back


def axial_slices(data: np.ndarray) -> np.ndarray:
    """(K, H, W) axial slices of a canonical (X, Y, Z) array: ``slices[k, r, c] = data[X-1-c, Y-1-r, k]``."""
    return np.ascontiguousarray(np.transpose(np.asarray(data)[::-1, ::-1], (2, 1, 0)))


def from_axial_slices(slices: np.ndarray) -> np.ndarray:
    """The canonical (X, Y, Z) array of (K, H, W) axial slices (the inverse of :func:`axial_slices`)."""
    return np.ascontiguousarray(np.transpose(np.asarray(slices), (2, 1, 0))[::-1, ::-1])


def to_original(canonical: np.ndarray, volume: Volume) -> np.ndarray:
    """A canonical (X, Y, Z) array in the voxel order of ``volume``'s file (the inverse of the reorientation)."""
    back = orientations.ornt_transform(_RAS, orientations.io_orientation(volume.affine))
    return np.ascontiguousarray(orientations.apply_orientation(canonical, back))


# --------------------------------------------------------------------------- writing


def nifti_bytes(data: np.ndarray, affine: np.ndarray, header: Any = None, gz: bool = True) -> bytes:
    """A NIfTI file (gzip-compressed with a fixed time stamp, so the same data gives the same bytes)
    holding ``data`` as stored (no scaling), with ``affine`` and the fields of ``header`` (its qform
    and sform codes kept)."""
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = image_class(np.asarray(data), affine, header=header)
    img.set_data_dtype(np.asarray(data).dtype)
    img.header.set_slope_inter(np.nan, np.nan)
    img.header["cal_min"] = img.header["cal_max"] = 0     # no display range of the input's (HU) values
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def like_input(data_canonical: np.ndarray, volume: Volume, gz: bool = True) -> bytes:
    """A NIfTI file of a canonical array mapped back to ``volume``'s file: its shape, affine and header."""
    data = to_original(data_canonical, volume)
    return nifti_bytes(data, volume.affine, volume.image.header, gz)
