"""The synthetic head-CT phantom: patients, 3-D lesions and one rendered slice in Hounsfield units.

Each slice is drawn in millimetres, then sampled on the pixel grid, so the same seed
gives the same anatomy at any ``size``:

1. a patient: head half-axes, position and tilt, scalp and skull thickness, grey/white
   matter values, ventricle size, sulcal pattern, pixel spacing and 3-D lesions;
2. a slice of that patient: a height ``h`` in the head (head and ventricles change size
   smoothly from slice to slice), tissue layers by depth below the scalp (skin, fat,
   bone, CSF, cortex, white matter), sulci, interhemispheric fissure, ventricles, deep
   grey nuclei, a smooth texture;
3. lesions: irregular blobs (lobes with random radial harmonics) whose cross-section
   shrinks towards their ends in z.  Ischemia (class 1) pulls parenchyma 8-14 HU below
   white matter and blurs the grey/white difference, with a soft edge; haemorrhage
   (class 2) sets 60-80 HU with a sharp edge.  The mask is where the same smooth shape
   reaches one half, so label and drawn intensity agree; haemorrhage wins overlaps;
4. partial-volume blur, correlated noise, rounding to integer HU.

Harder sets: ``SynthOptions`` (flexunet.synthetic.lesions) sets the lesion contrast and size,
the share of slices with lesions, the noise and unlabelled look-alikes; its defaults are
the demo's data, byte for byte (its extra draws come from ``default_rng([seed, 2, i])``).

Randomness: patient ``p`` draws from ``default_rng([seed, 0, p])`` and slice ``i`` from
``default_rng([seed, 1, i])``, so slice ``i`` does not depend on ``count``.  Nothing here
writes a file: :mod:`flexunet.synthetic.synth` writes the dataset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from flexunet.synthetic.lesions import DEFAULT_OPTIONS, SynthOptions, draw_lookalikes
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

RESCALE_INTERCEPT = -1024
HU_MAX = 3071                       # stored values 0..4095 (12 bits)
SLICE_THICKNESS_MM = 5.0
MIN_LESION_RADIUS_MM = 2.4          # 2.5 px at 256 px (spacing ~0.94 mm)
MIN_LESION_PIXELS = 4

# tissue codes of the ideal (noise-free) slice; >= CSF is inside the skull, >= GM is parenchyma
AIR, SKIN, FAT, BONE, CSF, GM, WM = range(7)
ISCHEMIC, HEMORRHAGIC = 1, 2


# --------------------------------------------------------------------------- the scene


@dataclass(frozen=True)
class Lesion:
    """One 3-D lesion of a patient, in the brain's normalised frame (brain = unit disc)."""

    kind: int                       # ISCHEMIC or HEMORRHAGIC
    u: float                        # centre, lateral, in brain half-widths
    v: float                        # centre, antero-posterior, in brain half-lengths
    radius_mm: float                # in-plane radius at its widest slice
    z: float                        # centre along the patient's slices (slice units)
    half_depth: float               # half extent in slices
    aspect: float                   # >= 1: squash of the second axis
    angle: float                    # in-plane orientation, radians
    lobes: tuple[tuple[float, float, float], ...]   # (offset a, offset b, scale) in radii
    harmonics: np.ndarray           # (lobes, K, 2): amplitude, phase of cos(k*phi + phase)
    value_hu: float                 # ischemic: drop below white matter; haemorrhage: HU
    edge_mm: float                  # width of the soft edge (signed-distance units)


@dataclass(frozen=True)
class Patient:
    """Everything fixed for one patient's series of slices."""

    index: int
    n_slices: int
    spacing512_mm: float            # pixel spacing at 512 px; field of view = 512 * this
    half_width_mm: float            # outer head half-axes at the widest slice
    half_length_mm: float
    centre_mm: tuple[float, float]  # head centre offset from the image centre
    tilt: float                     # radians
    outline: np.ndarray             # (K, 2) harmonics of the head outline
    scalp_mm: float
    skull_mm: float
    csf_mm: float
    gm_hu: float
    wm_hu: float
    atrophy: float                  # 0..1: wider sulci and ventricles
    vent_scale: float
    sulci: int
    sulcus_phase: float
    sulcus_depth_mm: float
    folds: np.ndarray               # (M, 5): kx, ky (rad/mm), k_h, phase, amplitude of sulcal bends
    h0: float                       # height of slice 0 in the head, -1 (base) .. 1 (vertex)
    dh: float
    noise_hu: float
    lesions: tuple[Lesion, ...]
    age: int
    sex: str

    def spacing_mm(self, size: int) -> float:
        return self.spacing512_mm * 512.0 / size

    def height(self, j: int) -> float:
        return self.h0 + j * self.dh


def make_patient(seed: int, index: int, options: SynthOptions = DEFAULT_OPTIONS) -> Patient:
    """Patient ``index`` of the dataset drawn from ``seed`` (independent of every other)."""
    rng = np.random.default_rng([seed, 0, index])
    n_slices = int(rng.integers(5, 11))
    half_width = rng.uniform(70.0, 82.0)
    half_length = half_width * rng.uniform(1.14, 1.24)
    spacing = rng.uniform(0.45, 0.50)
    fov_half = 256.0 * spacing
    slack = max(fov_half - half_length - 8.0, 0.0)
    centre = (rng.uniform(-0.4, 0.4) * slack, rng.uniform(-0.5, 0.5) * slack)
    k = np.arange(2, 6)
    outline = np.stack([rng.uniform(0.0, 0.02, k.size) / (k - 1), rng.uniform(0, 2 * np.pi, k.size)], 1)
    atrophy = float(rng.beta(2.0, 3.0))
    m = 6
    wave = 2 * np.pi / rng.uniform(18.0, 45.0, m)
    heading = rng.uniform(0, 2 * np.pi, m)
    folds = np.stack([wave * np.cos(heading), wave * np.sin(heading), rng.uniform(-4.0, 4.0, m),
                      rng.uniform(0, 2 * np.pi, m), rng.uniform(0.3, 0.8, m)], 1)
    head_half_height = rng.uniform(88.0, 100.0)
    patient = Patient(
        index=index, n_slices=n_slices, spacing512_mm=float(spacing),
        half_width_mm=float(half_width), half_length_mm=float(half_length),
        centre_mm=(float(centre[0]), float(centre[1])), tilt=float(rng.normal(0.0, np.radians(7.0))),
        outline=outline, scalp_mm=float(rng.uniform(3.0, 6.0)), skull_mm=float(rng.uniform(5.0, 8.0)),
        csf_mm=float(rng.uniform(0.8, 1.6) + atrophy), gm_hu=float(rng.uniform(36.0, 41.0)),
        wm_hu=float(rng.uniform(26.0, 30.0)), atrophy=atrophy,
        vent_scale=float(rng.uniform(0.75, 1.0) + 0.7 * atrophy), sulci=int(rng.integers(34, 46)),
        sulcus_phase=float(rng.uniform(0, 2 * np.pi)), sulcus_depth_mm=float(rng.uniform(9.0, 16.0)),
        folds=folds,
        h0=float(rng.uniform(-0.3, 0.15)), dh=float(SLICE_THICKNESS_MM / head_half_height),
        noise_hu=float(rng.uniform(2.5, 3.5)), lesions=_make_lesions(rng, n_slices, options),
        age=int(rng.integers(35, 90)), sex=str(rng.choice(["M", "F"])),
    )
    if options.noise is not None:             # after every draw: the anatomy stays the same
        patient = dataclasses.replace(patient, noise_hu=float(options.noise))
    return patient


def _make_lesions(rng: np.random.Generator, n_slices: int, options: SynthOptions) -> tuple[Lesion, ...]:
    if rng.random() < 0.05:                     # a normal scan
        return ()
    n_ischemic = int(rng.choice(4, p=[0.2, 0.3, 0.3, 0.2]))
    n_hemorrhagic = int(rng.choice(3, p=[0.3, 0.45, 0.25]))
    plan = [ISCHEMIC] * max(n_ischemic, n_hemorrhagic == 0) + [HEMORRHAGIC] * n_hemorrhagic
    # spread the lesions along the series (one slot each) so few slices are left empty
    slots = (rng.permutation(len(plan)) + rng.uniform(0.0, 1.0, len(plan))) * n_slices / len(plan) - 0.5
    lesions: list[Lesion] = []
    for kind, z in zip(plan, slots):
        host = next((les for les in lesions if les.kind == ISCHEMIC), None)
        if kind == HEMORRHAGIC and host is not None and rng.random() < 0.4:
            lesions.append(_transformation(rng, host, options))   # haemorrhage inside an infarct
        else:
            lesions.append(_lesion(rng, kind, float(z), options))
    return tuple(lesions)


def _lesion(rng: np.random.Generator, kind: int, z: float, options: SynthOptions) -> Lesion:
    lo, hi = options.radius_range(kind == ISCHEMIC)
    radius = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if kind == ISCHEMIC:
        rho = rng.uniform(0.3, 0.8)
    else:
        rho = rng.uniform(0.0, 0.45) if rng.random() < 0.5 else rng.uniform(0.45, 0.8)
    rho = min(rho, max(0.0, 0.9 - radius / 70.0))
    theta = rng.uniform(0, 2 * np.pi)
    half_depth_mm = max(radius * rng.uniform(1.0, 1.8), rng.uniform(10.0, 18.0))
    return _shape(rng, kind, radius, rho * math.cos(theta), rho * math.sin(theta),
                  z, half_depth_mm / SLICE_THICKNESS_MM, options)


def _transformation(rng: np.random.Generator, host: Lesion, options: SynthOptions) -> Lesion:
    radius = host.radius_mm * rng.uniform(0.35, 0.7)
    if options.lesion_size is not None:     # a bleed in an infarct keeps to the asked sizes too
        radius = min(max(radius, options.lesion_size[0]), options.lesion_size[1])
    shift = (host.radius_mm - radius) * 0.5 / 65.0
    return _shape(rng, HEMORRHAGIC, radius, host.u + rng.uniform(-shift, shift),
                  host.v + rng.uniform(-shift, shift), host.z, host.half_depth * rng.uniform(0.6, 0.9), options)


def _shape(rng: np.random.Generator, kind: int, radius: float, u: float, v: float,
           z: float, half_depth: float, options: SynthOptions) -> Lesion:
    n_lobes = int(rng.choice([1, 1, 2, 3]))
    lobes = [(0.0, 0.0, 1.0)]
    for _ in range(n_lobes - 1):
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.3, 0.7)
        lobes.append((d * math.cos(a), d * math.sin(a), rng.uniform(0.4, 0.75)))
    k = np.arange(2, 7)
    amp = rng.uniform(0.0, 0.22 if kind == ISCHEMIC else 0.15, (n_lobes, k.size)) / (k - 1) ** 0.8
    harmonics = np.stack([amp, rng.uniform(0, 2 * np.pi, amp.shape)], -1)
    if kind == ISCHEMIC:
        value, edge = rng.uniform(*options.ischemic_hu), 1.5 + 0.25 * radius
    else:
        value, edge = rng.uniform(*options.hemorrhage_hu), 0.8
    return Lesion(kind=kind, u=float(u), v=float(v), radius_mm=float(radius), z=float(z),
                  half_depth=float(max(half_depth, 1.2)), aspect=float(rng.uniform(1.0, 1.8)),
                  angle=float(rng.uniform(0, np.pi)), lobes=tuple(lobes), harmonics=harmonics,
                  value_hu=float(value), edge_mm=float(edge))


def plan_slices(seed: int, count: int, options: SynthOptions = DEFAULT_OPTIONS) -> list[tuple[Patient, int]]:
    """(patient, slice index within the patient) of global slices 0..count-1."""
    plan: list[tuple[Patient, int]] = []
    p = 0
    while len(plan) < count:
        patient = make_patient(seed, p, options)
        plan.extend((patient, j) for j in range(patient.n_slices))
        p += 1
    return plan[:count]


# --------------------------------------------------------------------------- one slice


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
