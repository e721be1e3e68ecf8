"""The synthetic head-CT phantom: patients and their 3-D lesions (a slice of them, rendered in
Hounsfield units: :mod:`flexunet.synthetic.render`).

Each slice is drawn in millimetres, then sampled on the pixel grid, so the same seed
gives the same anatomy at any ``size``.  A patient: head half-axes, position and tilt,
scalp and skull thickness, grey/white matter values, ventricle size, sulcal pattern, pixel
spacing and 3-D lesions: irregular blobs (lobes with random radial harmonics) whose
cross-section shrinks towards their ends in z, ischemic (class 1) or haemorrhagic (class 2).

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

from flexunet.synthetic.lesions import DEFAULT_OPTIONS, SynthOptions

RESCALE_INTERCEPT = -1024
HU_MAX = 3071                       # stored values 0..4095 (12 bits)
SLICE_THICKNESS_MM = 5.0
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


class SliceSeries:
    """Pixel spacing and slice heights of a patient's series (for a dataclass with these three fields)."""

    spacing512_mm: float            # pixel spacing at 512 px; field of view = 512 * this
    h0: float                       # height of slice 0 in the head, -1 (base) .. 1 (vertex)
    dh: float

    def spacing_mm(self, size: int) -> float:
        return self.spacing512_mm * 512.0 / size

    def height(self, j: int) -> float:
        return self.h0 + j * self.dh


@dataclass(frozen=True)
class Patient(SliceSeries):
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
