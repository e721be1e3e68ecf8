"""One slice of ``flexunet prepare``: read (PNG, or DICOM through the window), check against its
mask, pad to a square, resize (images by area or bilinear, masks by nearest only), write both and
return the slice's manifest row.  Runs in the worker processes: a :class:`SliceJob` carries
everything it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from flexunet.dataset.dicom import read_dicom, read_dicom_meta, window_rgb
from flexunet.dataset.masks import read_mask, save_mask
from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.utils.io import read_image, safe_output_path, save_image


@dataclass(frozen=True)
class SliceOutput:
    """How every prepared slice is windowed and written, whatever its source (picklable): ``[prepare]``
    size, resize and window, ``[mask]`` colours and format, and the folder."""

    out_dir: Path
    size: int
    image_resize: str
    window_center: float
    window_width: float
    three_windows: bool
    rgb_map: Mapping[tuple[int, int, int], int]
    mask_format: str = "rgb"

    @classmethod
    def of(cls, cfg: Any, out_dir: Path) -> "SliceOutput":
        p = cfg.prepare
        return cls(out_dir, p.size, p.image_resize, p.window_center, p.window_width, p.three_windows,
                   dict(cfg.mask.rgb_map), cfg.mask.format)

    def window(self, hu: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 of a HU slice in ``[prepare]``'s window(s)."""
        return window_rgb(hu, self.window_center, self.window_width, self.three_windows)

    def write(self, slice_id: str, image: np.ndarray, index: np.ndarray) -> dict[str, Any]:
        """:func:`write_pair` of one slice into ``out_dir``."""
        return write_pair(self.out_dir, slice_id, image, index, self.size, self.image_resize, self.rgb_map,
                          self.mask_format)


@dataclass(frozen=True)
class SliceJob:
    """Everything a worker needs for one slice (picklable)."""

    id: str
    image: Path                   # PNG/<id>.png or DICOM/<id>.dcm
    mask: Path
    header: Path | None           # DICOM/<id>.dcm to read the group from (png source)
    source: str
    tolerance: float
    output: SliceOutput


def border_background(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the one-pixel border of an (H, W, C) image (uint8)."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]], axis=0)
    return np.median(border, axis=0).round().astype(np.uint8)


def pad_to_square(array: np.ndarray, fill: np.ndarray | int) -> np.ndarray:
    """Centre ``array`` (H, W[, C]) in a square of side max(H, W) filled with ``fill``."""
    h, w = array.shape[:2]
    side = max(h, w)
    if h == w:
        return array
    out = np.empty((side, side) + array.shape[2:], array.dtype)
    out[...] = fill
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = array
    return out


def resize_image(image: np.ndarray, size: int, method: str) -> np.ndarray:
    """Square (S, S, 3) uint8 -> (size, size, 3): "area" (box average; bilinear when
    enlarging) or "bilinear"."""
    if image.shape[0] == size:
        return image
    shrink = image.shape[0] > size
    resample = Image.Resampling.BOX if method == "area" and shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((size, size), resample), np.uint8)


def resize_mask(index: np.ndarray, size: int) -> np.ndarray:
    """Square (S, S) class indices -> (size, size) by nearest neighbour only."""
    if index.shape[0] == size:
        return index
    img = Image.fromarray(index.astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.NEAREST), np.uint8)


def write_pair(out_dir: Path, slice_id: str, image: np.ndarray, index: np.ndarray, size: int, image_resize: str,
               rgb_map: Mapping[tuple[int, int, int], int], mask_format: str) -> dict[str, Any]:
    """Pad an (H, W, 3) uint8 image and its (H, W) class indices to a square, resize them to ``size`` and write
    ``images/<id>.png`` and ``masks/<id>.png`` under ``out_dir``; the manifest fields they give (image,
    mask, classes, pixels per class, original_size)."""
    h, w = index.shape
    image = resize_image(pad_to_square(image, border_background(image)), size, image_resize)
    index = resize_mask(pad_to_square(index, 0), size)
    image_out = safe_output_path(out_dir / "images", f"{slice_id}.png")
    mask_out = safe_output_path(out_dir / "masks", f"{slice_id}.png")
    save_image(image_out, image)
    save_mask(mask_out, index, rgb_map, mask_format)
    num_classes = max(rgb_map.values()) + 1
    pixels = np.bincount(index.ravel(), minlength=num_classes)[:num_classes]
    return {"image": f"images/{image_out.name}", "mask": f"masks/{mask_out.name}",
            "classes": [int(c) for c in np.flatnonzero(pixels)], "pixels": [int(n) for n in pixels],
            "original_size": [h, w]}


def scaled_spacing(spacing: Any, shape: tuple[int, ...], size: int) -> tuple[float, float]:
    """(row, col) mm of a pixel of an (H, W) slice once padded to a square and resized to ``size``."""
    scale = max(shape[:2]) / size
    return (round(float(spacing[0]) * scale, 6), round(float(spacing[1]) * scale, 6))


def _load_image(job: SliceJob, notes: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    if job.source == "dicom":
        sl = read_dicom(job.image)
        notes.extend(sl.warnings)
        return job.output.window(sl.hu), sl.meta
    meta: dict[str, Any] = {}
    if job.header is not None:
        try:
            meta = read_dicom_meta(job.header)
        except FlexUNetError as exc:
            notes.append(f"{exc}; grouping {job.id} by its slice id")
    return read_image(job.image, 3), meta


def _group(job: SliceJob, meta: Mapping[str, Any]) -> tuple[str, str]:
    if meta.get("patient_id"):
        return str(meta["patient_id"]), "patient"
    if meta.get("series_uid"):
        return str(meta["series_uid"]), "series"
    return job.id, "slice"


def process_slice(job: SliceJob) -> dict[str, Any]:
    """Read, check, pad, resize and write one slice; return its manifest row.

    The row carries ``_notes`` (warnings to log) and ``_unmapped`` (colour -> pixels).
    """
    notes: list[str] = []
    image, meta = _load_image(job, notes)
    decoded = read_mask(job.mask, job.output.rgb_map, job.tolerance, map_unmapped=True,
                        mask_format=job.output.mask_format)
    if image.shape[:2] != decoded.index.shape:
        raise DataError(f"{job.mask}: mask is {decoded.index.shape[1]}x{decoded.index.shape[0]} but "
                        f"{job.image.name} is {image.shape[1]}x{image.shape[0]} (WxH); expected the same size")
    written = job.output.write(job.id, image, decoded.index)
    spacing = meta.get("pixel_spacing")
    if spacing is not None:
        spacing = scaled_spacing(spacing, decoded.index.shape, job.output.size)
    group, group_kind = _group(job, meta)
    return {
        "id": job.id,
        **written,
        "source_image": str(job.image),
        "source_mask": str(job.mask),
        "group": group,
        "group_kind": group_kind,
        "patient_id": meta.get("patient_id"),
        "series_uid": meta.get("series_uid"),
        "instance_number": meta.get("instance_number"),
        "slice_position": meta.get("slice_position"),
        "slice_thickness": meta.get("slice_thickness"),
        "pixel_spacing": list(spacing) if spacing is not None else None,
        "unmapped_pixels": decoded.unmapped_pixels,
        "_notes": notes,
        "_unmapped": decoded.unmapped,
    }
