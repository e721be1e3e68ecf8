"""One slice of a phantom patient (:mod:`flexunet.synthetic.phantom`), rendered in Hounsfield units.

1. a slice of the patient: a height ``h`` in the head (head and ventricles change size
   smoothly from slice to slice), tissue layers by depth below the scalp (skin, fat,
   bone, CSF, cortex, white matter), sulci, interhemispheric fissure, ventricles, deep
   grey nuclei, a smooth texture;
2. lesions: the patient's 3-D lesions cut at the slice.  Ischemia (class 1) pulls parenchyma
   8-14 HU below white matter and blurs the grey/white difference, with a soft edge;
   haemorrhage (class 2) sets 60-80 HU with a sharp edge.  The mask is where the same smooth
   shape reaches one half, so label and drawn intensity agree; haemorrhage wins overlaps;
3. partial-volume blur, correlated noise, rounding to integer HU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from flexunet.synthetic.lesions import DEFAULT_OPTIONS, SynthOptions, draw_lookalikes
from flexunet.synthetic.phantom import HU_MAX, ISCHEMIC, RESCALE_INTERCEPT, Lesion, Patient
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

MIN_LESION_RADIUS_MM = 2.4          # 2.5 px at 256 px (spacing ~0.94 mm)
MIN_LESION_PIXELS = 4

# tissue codes of the ideal (noise-free) slice; >= CSF is inside the skull, >= GM is parenchyma
AIR, SKIN, FAT, BONE, CSF, GM, WM = range(7)


@dataclass
class _Frame:
    """Per-pixel coordinates of one slice (mm, head frame: x lateral, y posterior)."""

    xr: np.ndarray
    yr: np.ndarray
    r: np.ndarray
    theta: np.ndarray
    depth: np.ndarray               # below the skin (mm); < 0 outside the head
    brain_axes: tuple[float, float]


def _frame(patient: Patient, j: int, size: int) -> _Frame:
    sp = patient.spacing_mm(size)
    scale = math.sqrt(max(1.0 - patient.height(j) ** 2, 0.05))
    a, b = patient.half_width_mm * scale, patient.half_length_mm * scale
    xs = ((np.arange(size, dtype=np.float32) + 0.5) - size / 2) * np.float32(sp)
    x = xs[None, :] - np.float32(patient.centre_mm[0])
    y = xs[:, None] - np.float32(patient.centre_mm[1])
    c, s = np.float32(math.cos(patient.tilt)), np.float32(math.sin(patient.tilt))
    xr, yr = c * x + s * y, -s * x + c * y
    r = np.maximum(np.hypot(xr, yr), np.float32(1e-3))
    theta = np.arctan2(yr, xr)
    outline = r / np.sqrt((xr / np.float32(a)) ** 2 + (yr / np.float32(b)) ** 2 + np.float32(1e-12))
    bumps = np.ones_like(r)
    for k, (amp, phase) in enumerate(patient.outline, start=2):
        bumps += np.float32(amp) * np.cos(k * theta + np.float32(phase))
    inner = patient.scalp_mm + patient.skull_mm + patient.csf_mm
    return _Frame(xr, yr, r, theta, outline * bumps - r, (a - inner, b - inner))


def _anatomy(patient: Patient, j: int, f: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """Ideal HU (float32) and tissue codes (uint8) of slice ``j``, before lesions and blur."""
    d = f.depth
    scalp, skull = patient.scalp_mm, patient.skull_mm
    bone_t = np.clip((d - scalp) / skull, 0.0, 1.0)
    dd = d - scalp - skull - patient.csf_mm               # depth below the cortical surface
    tissue = np.select([d < 0, d < 1.2, d < scalp, d < scalp + skull, dd < 0],
                       [AIR, SKIN, FAT, BONE, CSF], WM).astype(np.uint8)
    hu = np.select([tissue == AIR, tissue == SKIN, tissue == FAT, tissue == BONE, tissue == CSF],
                   [-1000.0, 45.0, -90.0, 1750.0 - 1000.0 * np.sin(np.pi * bone_t) ** 2, 7.0],
                   patient.wm_hu).astype(np.float32)
    brain = dd >= 0
    h = patient.height(j)
    u, v = f.xr / f.brain_axes[0], f.yr / f.brain_axes[1]
    near, depth = _sulcus_distance(patient, h, f, dd)
    thick = 2.5 + 1.5 * (0.5 + 0.5 * np.cos(2 * np.pi * near / 9.0))     # thicker on gyral crowns
    grey = (dd < thick) | ((near < 2.8) & (dd < depth + 2.5)) | _deep_grey(h, u, v)
    tissue[brain & grey] = GM
    width = (0.7 + 1.6 * patient.atrophy) * (1.0 - 0.5 * np.clip(dd / depth, 0.0, 1.0))
    sulci = (near < width / 2) & (dd < depth)
    csf = brain & (sulci | _fissure(patient, h, f.xr, v) | _ventricles(patient, h, u, v))
    tissue[csf] = CSF
    hu[tissue == GM] = patient.gm_hu
    hu[tissue == CSF] = 7.0
    falx = brain & (np.abs(f.xr) < 0.4) & (np.abs(v) > _ventricle_factor(h) * 0.45)
    hu[falx] = 55.0
    return hu, tissue


def _ventricle_factor(h: float) -> float:
    return float(np.clip(1.0 - ((h - 0.05) / 0.38) ** 2, 0.0, 1.0))


def _sulcus_distance(patient: Patient, h: float, f: _Frame,
                     dd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) to the nearest sulcus, and that sulcus' depth (mm).

    Sulci are the lines ``phi = 2 pi k`` of a mostly radial phase ``phi = n theta + bends``;
    the bends are a few slow plane waves in (x, y, h), so sulci wander and change smoothly
    from slice to slice.
    """
    n = patient.sulci
    phi = n * f.theta + np.float32(patient.sulcus_phase) + np.float32(0.08) * dd
    for kx, ky, kh, phase, amp in patient.folds:
        phi += np.float32(amp) * np.sin(np.float32(kx) * f.xr + np.float32(ky) * f.yr
                                        + np.float32(kh * h + phase))
    k = np.round(phi / np.float32(2 * np.pi))
    near = np.abs(phi - np.float32(2 * np.pi) * k) / n * f.r
    depth = patient.sulcus_depth_mm * (0.35 + 0.65 * (0.5 + 0.5 * np.sin(2.3 * k + patient.sulcus_phase)))
    return near, depth.astype(np.float32)


def _fissure(patient: Patient, h: float, xr: np.ndarray, v: np.ndarray) -> np.ndarray:
    width = 1.2 + 1.5 * patient.atrophy
    return (np.abs(xr) < width / 2) & (np.abs(v) > _ventricle_factor(h) * 0.45)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float,
             angle: float = 0.0) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    a, b = (u - cu) * c + (v - cv) * s, -(u - cu) * s + (v - cv) * c
    return (a / ru) ** 2 + (b / rv) ** 2 < 1.0


def _ventricles(patient: Patient, h: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    vf = _ventricle_factor(h)
    out = np.zeros(u.shape, bool)
    if vf <= 0.05:
        return out
    k = patient.vent_scale * math.sqrt(vf)
    for side in (-1.0, 1.0):
        out |= _ellipse(u, v, side * 0.11 * k, -0.02, 0.065 * k, 0.30 * k, -side * 0.2)
        out |= _ellipse(u, v, side * 0.19 * k, 0.22 * k, 0.07 * k, 0.09 * k)
    third = float(np.clip(1.0 - ((h + 0.05) / 0.2) ** 2, 0.0, 1.0))
    if third > 0.05:
        out |= _ellipse(u, v, 0.0, 0.06, 0.02 * patient.vent_scale * third, 0.1 * third)
    return out


def _deep_grey(h: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    g = float(np.clip(1.0 - ((h + 0.05) / 0.3) ** 2, 0.0, 1.0))
    out = np.zeros(u.shape, bool)
    if g > 0.05:
        for side in (-1.0, 1.0):
            out |= _ellipse(u, v, side * 0.27, 0.0, 0.09 * g, 0.2 * g, side * 0.3)
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lesion_distance(les: Lesion, dx: np.ndarray, dy: np.ndarray, radius: float, z: float) -> np.ndarray:
    """Signed distance (mm, > 0 inside) to the lesion outline on a slice."""
    c, s = math.cos(les.angle), math.sin(les.angle)
    a, b = c * dx + s * dy, (-s * dx + c * dy) * les.aspect
    dist = np.full(dx.shape, -np.inf, np.float32)
    for (oa, ob, scale), harm in zip(les.lobes, les.harmonics):
        pa, pb = a - oa * radius, b - ob * radius
        phi = np.arctan2(pb, pa)
        g = np.ones_like(phi)
        for k, (amp, phase) in enumerate(harm, start=2):
            g += np.float32(amp) * np.cos(k * phi + np.float32(phase + 0.4 * z))
        dist = np.maximum(dist, scale * radius * g - np.hypot(pa, pb))
    return dist


def _draw_lesions(hu: np.ndarray, tissue: np.ndarray, patient: Patient, j: int,
                  f: _Frame, size: int) -> np.ndarray:
    """Apply each lesion crossing slice ``j`` to ``hu`` in place; return the class index mask."""
    label = np.zeros(hu.shape, np.uint8)
    sp = patient.spacing_mm(size)
    c, s = math.cos(patient.tilt), math.sin(patient.tilt)
    order = sorted(patient.lesions, key=lambda les: les.kind)     # haemorrhage last: it wins
    for les in order:
        frac = 1.0 - ((j - les.z) / les.half_depth) ** 2
        radius = les.radius_mm * math.sqrt(max(frac, 0.0))
        if frac < 0.2 or radius < MIN_LESION_RADIUS_MM:
            continue
        lx, ly = les.u * f.brain_axes[0], les.v * f.brain_axes[1]
        col = (c * lx - s * ly + patient.centre_mm[0]) / sp + size / 2 - 0.5
        row = (s * lx + c * ly + patient.centre_mm[1]) / sp + size / 2 - 0.5
        reach = (radius * 1.6 + les.edge_mm) / sp + 2
        r0, r1 = max(int(row - reach), 0), min(int(row + reach) + 2, size)
        c0, c1 = max(int(col - reach), 0), min(int(col + reach) + 2, size)
        if r0 >= r1 or c0 >= c1:
            continue
        box = (slice(r0, r1), slice(c0, c1))
        dist = _lesion_distance(les, f.xr[box] - lx, f.yr[box] - ly, radius, j)
        allowed = tissue[box] >= GM if les.kind == ISCHEMIC else tissue[box] >= CSF
        if abs(les.u) > 0.08:                                   # the falx bounds a hemisphere
            allowed &= f.xr[box] * np.float32(les.u) > 0
        w = _smoothstep(0.5 + dist / les.edge_mm) * allowed
        inside = _drop_specks(w, (dist >= 0) & allowed)
        if not inside.any():
            continue
        if les.kind == ISCHEMIC:
            hu[box] -= w * (0.7 * (hu[box] - patient.wm_hu) + les.value_hu)
        else:
            hu[box] += w * (les.value_hu - hu[box])
        label[box][inside] = les.kind
    return label


def _drop_specks(w: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Zero ``w`` (in place) on pieces holding < MIN_LESION_PIXELS labelled pixels; the kept labels."""
    pieces, n = ndimage.label(w > 0)
    if n == 0:
        return inside
    small = np.bincount(pieces[inside], minlength=n + 1) < MIN_LESION_PIXELS
    small[0] = True
    drop = small[pieces]
    w[drop] = 0.0
    return inside & ~drop


def render_slice(patient: Patient, j: int, size: int, rng: np.random.Generator,
                 options: SynthOptions = DEFAULT_OPTIONS,
                 extra: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``j`` of ``patient``: (HU int16 (size, size), class index uint8 (size, size)).

    ``extra`` draws what ``options`` adds to the demo's data (is this slice allowed its
    lesions, the look-alikes), so ``rng``'s draws, and the demo's data, stay the same.
    """
    f = _frame(patient, j, size)
    hu, tissue = _anatomy(patient, j, f)
    n = max(size // 32, 4)
    texture = ndimage.zoom(rng.standard_normal((n, n)).astype(np.float32), size / n, order=1)
    hu += np.where(tissue >= GM, 1.5 * texture[:size, :size], 0.0).astype(np.float32)
    if not options.is_default:
        extra = extra if extra is not None else np.random.default_rng([patient.index, j, 2])
        if extra.random() >= options.prevalence:
            patient = dataclasses.replace(patient, lesions=())
        if options.lookalikes:
            draw_lookalikes(hu, tissue >= GM, tissue == WM, f.xr / f.brain_axes[0], f.yr / f.brain_axes[1],
                            patient.spacing_mm(size), _ventricle_factor(patient.height(j)), extra)
    label = _draw_lesions(hu, tissue, patient, j, f, size)
    sp = patient.spacing_mm(size)
    hu = ndimage.gaussian_filter(hu, sigma=0.5 / sp * 1.2)          # partial-volume blur
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), sigma=0.35 / sp + 0.3)
    hu += noise * np.float32(patient.noise_hu / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(hu), RESCALE_INTERCEPT, HU_MAX).astype(np.int16), label
