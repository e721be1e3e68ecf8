"""Lesion volumes per patient and series, from predicted (or reference) slice masks.

1. :func:`group_series` puts slices of one (patient, series) together, ordered by their
   position along the slice normal (DICOM ImagePositionPatient / SliceLocation), else by
   instance number, else by name;
2. :func:`slice_spacing` finds the distance between slices: the spacing of the positions
   (method ``positions``) or, when positions are missing, SliceThickness (method
   ``thickness``).  It refuses with one line when neither exists or the positions are not
   evenly spaced (steps differing by more than :data:`SPACING_TOLERANCE` relative);
3. :func:`volume_ml`: pixels x row spacing x column spacing x slice spacing / 1000;
4. :func:`abc2_ml`: the ABC/2 bedside estimate of the largest 3-D lesion: A and B its extents
   along the principal axes of its largest cross-section, C the number of slices it spans
   x slice spacing, volume = A*B*C/2.

Pure numpy; imports nothing of ours but the errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from flexunet.utils.errors import DataError
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

SPACING_TOLERANCE = 0.01          # relative: steps may differ by 1% (rounding of positions in headers)
VOLUME_COLUMNS = ("patient", "series", "class", "slices", "ml", "method")


@dataclass(frozen=True)
class SliceGeometry:
    """What a volume needs to know of one slice."""

    name: str
    patient: str
    series: str
    pixel_spacing: tuple[float, float] | None     # (row, col) mm
    position: float | None = None                  # mm along the slice normal
    thickness: float | None = None                 # mm
    instance: int | None = None


def geometry_from_meta(name: str, meta: dict[str, Any]) -> SliceGeometry:
    """A :class:`SliceGeometry` from :func:`flexunet.dataset.dicom.read_dicom_meta`'s dictionary."""
    return SliceGeometry(name, meta.get("patient_id") or "unknown", meta.get("series_uid") or "unknown",
                         meta.get("pixel_spacing"), meta.get("slice_position"), meta.get("slice_thickness"),
                         meta.get("instance_number"))


def group_series(slices: Sequence[SliceGeometry]) -> dict[tuple[str, str], list[SliceGeometry]]:
    """Slices by (patient, series), each list ordered by position, else instance number, else name."""
    groups: dict[tuple[str, str], list[SliceGeometry]] = {}
    for s in slices:
        groups.setdefault((s.patient, s.series), []).append(s)
    for key, members in groups.items():
        if all(s.position is not None for s in members):
            members.sort(key=lambda s: (s.position, s.name))
        elif all(s.instance is not None for s in members):
            members.sort(key=lambda s: (s.instance, s.name))
        else:
            members.sort(key=lambda s: s.name)
    return dict(sorted(groups.items()))


def slice_spacing(series: Sequence[SliceGeometry]) -> tuple[float, str]:
    """``(mm between slices, method)`` of one ordered series; :class:`DataError` when unknown or uneven."""
    where = f"patient {series[0].patient} series {series[0].series}"
    positions = [s.position for s in series]
    if len(series) > 1 and all(p is not None for p in positions):
        steps = np.diff(np.asarray(positions, np.float64))
        step = float(np.median(steps))
        if step <= 0 or np.any(np.abs(steps - step) > SPACING_TOLERANCE * step):
            raise DataError(f"{where}: slices are not evenly spaced (steps {_steps_text(steps)} mm between "
                            f"{series[0].name} .. {series[-1].name}); expected one spacing — a volume would "
                            f"be a guess; check for missing or duplicate slices, or set [infer] volumes = False")
        return step, "positions"
    thickness = {s.thickness for s in series}
    if None not in thickness and len(thickness) == 1:
        return float(thickness.pop()), "thickness"
    positions_text = ("a single slice (positions cannot give a spacing)" if len(series) == 1
                      else "no slice positions (ImagePositionPatient / SliceLocation)")
    raise DataError(f"{where}: {positions_text} and "
                    f"{'different' if len(thickness - {None}) > 1 else 'no'} SliceThickness on "
                    f"{series[0].name} .. {series[-1].name}; expected one of them to give the spacing between "
                    f"slices — or set [infer] volumes = False")


def _steps_text(steps: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" for v in np.round(steps[:6], 3))
    return shown + (", ..." if len(steps) > 6 else "")


def check_pixel_spacing(series: Sequence[SliceGeometry]) -> tuple[float, float]:
    """The one pixel spacing of a series; :class:`DataError` when missing or different between slices."""
    spacings = {s.pixel_spacing for s in series}
    if None in spacings or len(spacings) != 1:
        what = "no PixelSpacing on some slices" if None in spacings else f"different PixelSpacing {sorted(spacings)}"
        raise DataError(f"patient {series[0].patient} series {series[0].series}: {what}; expected one pixel "
                        f"spacing per series — or set [infer] volumes = False")
    return spacings.pop()


def voxel_ml(pixel_spacing: tuple[float, float], spacing: float) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm^3)."""
    return pixel_spacing[0] * pixel_spacing[1] * spacing / 1000.0


def volume_ml(pixels: int, pixel_spacing: tuple[float, float], spacing: float) -> float:
    """``pixels`` voxels in mL."""
    return float(pixels) * voxel_ml(pixel_spacing, spacing)


def _extents_mm(rows: np.ndarray, cols: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[float, float]:
    """Extents (major, minor) of a pixel set along its principal axes, pixel edges included, in mm."""
    pts = np.stack([rows * pixel_spacing[0], cols * pixel_spacing[1]], axis=1).astype(np.float64)
    centred = pts - pts.mean(0)
    if len(pts) > 1:
        _, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, ::-1].T                       # major axis first
    else:
        axes = np.eye(2)
    out = []
    for u in axes:
        proj = centred @ u
        pixel = abs(u[0]) * pixel_spacing[0] + abs(u[1]) * pixel_spacing[1]   # one pixel's width along u
        out.append(float(proj.max() - proj.min() + pixel))
    return out[0], out[1]


def abc2_ml(stack: np.ndarray, pixel_spacing: tuple[float, float], spacing: float) -> float:
    """ABC/2 in mL of the largest 6-connected component of a boolean (slices, H, W) stack; 0 when empty.

    A, B: extents along the principal axes of the component's largest cross-section (mm);
    C: the number of slices it spans x ``spacing`` (mm).
    """
    stack = np.asarray(stack, bool)
    labels, n = ndimage.label(stack)
    if n == 0:
        return 0.0
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    lesion = labels == largest
    areas = lesion.sum(axis=(1, 2))
    rows, cols = np.nonzero(lesion[int(np.argmax(areas))])
    a, b = _extents_mm(rows, cols, pixel_spacing)
    c = int((areas > 0).sum()) * spacing
    return a * b * c / 2.0 / 1000.0


def hemorrhage_classes(class_names: Sequence[str]) -> list[int]:
    """Indices of classes named like a haemorrhage (ABC/2 is a haemorrhage estimate)."""
    words = ("hemorrh", "haemorrh", "bleed", "hematoma", "haematoma")
    return [k for k, name in enumerate(class_names)
            if k > 0 and (any(w in name.lower() for w in words) or name.lower() == "ich")]


def series_volumes(series: Sequence[SliceGeometry], masks: Sequence[np.ndarray], class_names: Sequence[str],
                   abc2_classes: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Rows of ``volumes.csv`` for one ordered series and its class-index masks (same order).

    One row per foreground class (``method`` = how the slice spacing was found), plus an
    ``abc2`` row (``<class> ABC/2``) for each class of ``abc2_classes``.
    """
    spacing, method = slice_spacing(series)
    pixel_spacing = check_pixel_spacing(series)
    first = series[0]
    rows = []
    for k in range(1, len(class_names)):
        pixels = [int((np.asarray(m) == k).sum()) for m in masks]
        rows.append({"patient": first.patient, "series": first.series, "class": class_names[k],
                     "slices": sum(p > 0 for p in pixels), "ml": round(volume_ml(sum(pixels), pixel_spacing,
                                                                               spacing), 4),
                     "method": f"{method} ({spacing:g} mm)"})
    shapes = {np.shape(m) for m in masks}
    for k in abc2_classes:
        if 0 < k < len(class_names) and len(shapes) == 1:
            stack = np.stack([np.asarray(m) == k for m in masks])
            rows.append({"patient": first.patient, "series": first.series, "class": f"{class_names[k]} ABC/2",
                         "slices": int(stack.any(axis=(1, 2)).sum()),
                         "ml": round(abc2_ml(stack, pixel_spacing, spacing), 4),
                         "method": f"abc/2, {method} ({spacing:g} mm)"})
    return rows


def counts_volumes(series: Sequence[SliceGeometry], counts: Sequence[np.ndarray], class_names: Sequence[str]
                   ) -> dict[str, float]:
    """mL per foreground class name of one ordered series from per-slice pixel counts per class."""
    spacing, _ = slice_spacing(series)
    pixel_spacing = check_pixel_spacing(series)
    total = np.sum(np.asarray(counts, np.int64), axis=0)
    return {class_names[k]: volume_ml(int(total[k]), pixel_spacing, spacing) for k in range(1, len(class_names))}


def agreement(reference: Sequence[float], predicted: Sequence[float]) -> dict[str, float]:
    """Bland-Altman and error figures of paired volumes: bias (mean of predicted - reference), limits of
    agreement (bias +- 1.96 SD of the differences), mean absolute error, mean relative error (over pairs
    with a reference > 0), Pearson r (NaN with < 3 pairs or no spread) and n."""
    ref, pred = np.asarray(reference, np.float64), np.asarray(predicted, np.float64)
    diff = pred - ref
    n = len(ref)
    sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
    bias = float(diff.mean()) if n else float("nan")
    positive = ref > 0
    r = float("nan")
    if n >= 3 and ref.std() > 0 and pred.std() > 0:
        r = float(np.corrcoef(ref, pred)[0, 1])
    return {"n": n, "bias_ml": bias, "loa_low_ml": bias - 1.96 * sd, "loa_high_ml": bias + 1.96 * sd,
            "mean_abs_error_ml": float(np.abs(diff).mean()) if n else float("nan"),
            "mean_rel_error": float((np.abs(diff[positive]) / ref[positive]).mean()) if positive.any()
            else float("nan"),
            "pearson_r": r}
