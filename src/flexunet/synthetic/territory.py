"""The "territory" synthetic family: a second stroke-CT generator, designed apart from the phantom.

``flexunet synth OUT --family territory`` writes the same raw layout as the phantom family
(:mod:`flexunet.synthetic.synth`), from another model of everything in it:

- the head and its tissues: :mod:`flexunet.synthetic.head` (a superellipse skull with diploe,
  gyri from the zero lines of a 3-D random field, asymmetric ventricles, deep grey nuclei,
  Sylvian fissures, falx, tentorium, skull-base bone);
- the lesions: :mod:`flexunet.synthetic.strokes` (vascular-territory infarcts with fuzzy
  edges, lacunar infarcts; multi-lobed deep and lobar haemorrhages with an oedema rim, punctate
  bleeds);
- unlabelled look-alikes of both classes: :mod:`flexunet.synthetic.mimics`;
- a scanner per patient (this module): resolution blur 0.45-0.9 mm, kernel sharpening,
  beam-hardening brightening of 2-5 HU along the inner table (or darkening) and cupping,
  streaky filtered-back-projection noise of 3-6 HU, a calibration gain of 0.97-1.03 and offset of
  -3..3 HU; a :class:`flexunet.synthetic.scanner.ScannerProfile` then shifts it (``--scanner``).

Randomness: patient ``p`` draws its anatomy and lesions from ``default_rng([seed, 20, p])``,
its scanner from ``[seed, 22, p]`` and its profile's shift from ``[seed, 23, p]``; slice ``i``
its noise from ``[seed, 21, i]`` and ``[seed, 24, i]``.  Slices are 5 mm apart, 6-10 a patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexunet.dataset.dicom import CTSlice
from flexunet.synthetic.head import Head, Section, make_head, section
from flexunet.synthetic.mimics import Mimics, draw_mimics, make_mimics
from flexunet.synthetic.phantom import HU_MAX, RESCALE_INTERCEPT, SLICE_THICKNESS_MM, SliceSeries
from flexunet.synthetic.scanner import STANDARD, ScannerProfile, ScannerSettings, apply_settings, draw_settings
from flexunet.synthetic.strokes import (HEMORRHAGIC, ISCHEMIC, Bleed, Spot, Territory, draw_bleed, draw_spot,
                                        draw_territory, drop_specks, make_bleed, make_lacune, make_territory)

FAMILY = "territory"
WINDOW = (40.0, 80.0)


@dataclass(frozen=True)
class Patient(SliceSeries):
    """Everything fixed for one patient's series of slices."""

    index: int
    n_slices: int
    spacing512_mm: float            # pixel spacing at 512 px
    h0: float                       # height of slice 0 (-1 skull base .. 1 vertex)
    dh: float
    half_height_mm: float
    head: Head
    infarcts: tuple[Territory, ...]
    lacunes: tuple[Spot, ...]
    bleeds: tuple[Bleed | Spot, ...]
    mimics: Mimics
    scanner: ScannerSettings
    beam_hu: float                  # added along the inner table (beam hardening)
    beam_mm: float
    cupping_hu: float               # the middle of the brain this much darker than its rim
    age: int
    sex: str

    def z_mm(self, j: int) -> float:
        return self.height(j) * self.half_height_mm


def make_patient(seed: int, index: int) -> Patient:
    """Patient ``index`` of the set drawn from ``seed`` (independent of every other)."""
    rng = np.random.default_rng([seed, 20, index])
    n_slices = int(rng.integers(6, 11))
    half_height = float(rng.uniform(88.0, 100.0))
    dh = SLICE_THICKNESS_MM / half_height
    h0 = float(min(rng.uniform(-0.5, -0.05), 0.75 - (n_slices - 1) * dh))
    h_range = (h0, h0 + (n_slices - 1) * dh)
    z_range = (h_range[0] * half_height, h_range[1] * half_height)
    spacing = float(rng.uniform(0.42, 0.48))
    head = make_head(rng)
    age, sex = int(rng.integers(35, 92)), str(rng.choice(["M", "F"]))
    n_infarcts = int(rng.choice(3, p=[0.35, 0.5, 0.15]))
    n_lacunes = int(rng.choice(3, p=[0.55, 0.3, 0.15]))
    n_bleeds = int(rng.choice(3, p=[0.4, 0.45, 0.15]))
    if rng.random() < 0.08:                                     # a normal scan
        n_infarcts = n_lacunes = n_bleeds = 0
    elif n_infarcts + n_lacunes + n_bleeds == 0:
        n_infarcts, n_bleeds = (1, 0) if rng.random() < 0.5 else (0, 1)
    infarcts = tuple(make_territory(rng, float(rng.uniform(*h_range))) for _ in range(n_infarcts))
    lacunes = tuple(make_lacune(rng, float(rng.uniform(*z_range))) for _ in range(n_lacunes))
    bleeds = tuple(make_bleed(rng, float(rng.uniform(*z_range))) for _ in range(n_bleeds))
    mimics = make_mimics(rng, head, age, z_range, h_range, [t.side for t in infarcts])
    own = np.random.default_rng([seed, 22, index])
    scanner = ScannerSettings(gain=float(own.uniform(0.97, 1.03)), offset_hu=float(own.uniform(-3.0, 3.0)),
                              noise_hu=float(own.uniform(3.0, 6.0)), blur_mm=float(own.uniform(0.45, 0.9)),
                              sharpen=float(own.uniform(0.0, 0.4)))
    return Patient(index=index, n_slices=n_slices, spacing512_mm=spacing, h0=h0, dh=dh, half_height_mm=half_height,
                   head=head, infarcts=infarcts, lacunes=lacunes, bleeds=bleeds, mimics=mimics, scanner=scanner,
                   beam_hu=float(own.uniform(-2.0, 5.0)), beam_mm=float(own.uniform(5.0, 12.0)),
                   cupping_hu=float(own.uniform(-2.0, 2.0)), age=age, sex=sex)


def plan_slices(seed: int, count: int) -> list[tuple[Patient, int]]:
    """(patient, slice index within the patient) of global slices 0..count-1."""
    plan: list[tuple[Patient, int]] = []
    p = 0
    while len(plan) < count:
        patient = make_patient(seed, p)
        plan.extend((patient, j) for j in range(patient.n_slices))
        p += 1
    return plan[:count]


def draw_lesions(patient: Patient, sec: Section, z_mm: float, spacing_mm: float) -> np.ndarray:
    """The patient's lesions crossing this slice, into ``sec.hu`` in place; the class index mask."""
    head = patient.head
    ischemic = np.zeros(sec.hu.shape, bool)
    hemorrhagic = np.zeros(sec.hu.shape, bool)
    for t in patient.infarcts:
        ischemic |= draw_territory(t, sec, head.wm_hu, head.midline_mm)
    for s in patient.lacunes:
        ischemic |= draw_spot(s, sec, z_mm, spacing_mm, sec.parenchyma)
    for b in patient.bleeds:
        if isinstance(b, Spot):
            hemorrhagic |= draw_spot(b, sec, z_mm, spacing_mm, sec.dd >= 0)
        else:
            hemorrhagic |= draw_bleed(b, sec, z_mm, spacing_mm, head.midline_mm)
    label = np.zeros(sec.hu.shape, np.uint8)
    label[drop_specks(ischemic & ~hemorrhagic)] = ISCHEMIC
    label[drop_specks(hemorrhagic)] = HEMORRHAGIC
    return label


def render_slice(patient: Patient, j: int, size: int, seed: int, i: int,
                 profile: ScannerProfile = STANDARD) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``j`` of ``patient`` (global slice ``i``): (HU int16 (size, size), class index uint8)."""
    sp = patient.spacing_mm(size)
    z = patient.z_mm(j)
    sec = section(patient.head, patient.height(j), z, size, sp)
    draw_mimics(patient.mimics, patient.head, sec, z, sp)
    label = draw_lesions(patient, sec, z, sp)
    hu = scanned(patient, sec.hu, sec.dd, sec.rho, sp, np.random.default_rng([seed, 21, i]))
    if not profile.is_identity:
        shift = draw_settings(profile, np.random.default_rng([seed, 23, patient.index]))
        hu = apply_settings(hu, shift, sp, np.random.default_rng([seed, 24, i]))
    return np.clip(np.rint(hu), RESCALE_INTERCEPT, HU_MAX).astype(np.int16), label


def scanned(patient: Patient, hu: np.ndarray, dd: np.ndarray, rho: np.ndarray, spacing_mm: float,
            rng: np.random.Generator) -> np.ndarray:
    """The ideal slice as this patient's scanner shows it (float32): beam hardening, then
    :func:`flexunet.synthetic.scanner.apply_settings` (blur, sharpening, streaky noise, calibration)."""
    brain = dd >= 0
    hu = hu + np.where(brain, patient.beam_hu * np.exp(-np.maximum(dd, 0.0) / patient.beam_mm)
                       - patient.cupping_hu * (1.0 - np.minimum(rho, 1.0) ** 2), 0.0).astype(np.float32)
    return apply_settings(hu, patient.scanner, spacing_mm, rng)


def patient_id(seed: int, index: int) -> str:
    """The DICOM PatientID of patient ``index``."""
    return f"SYT{seed}-{index:04d}"


def ct_slice(patient: Patient, j: int, seed: int, size: int, profile: ScannerProfile = STANDARD) -> CTSlice:
    """What the DICOM file of slice ``j`` of ``patient`` says beside its pixels."""
    return CTSlice(uid_sources=("flexunet-synth", FAMILY, profile.name, str(seed)), series_key=patient.index,
                   slice_index=j, patient_name=f"SYNTH^T{patient.index:04d}",
                   patient_id=patient_id(seed, patient.index),
                   sex=patient.sex, age=patient.age, spacing_mm=patient.spacing_mm(size),
                   location_mm=round(patient.z_mm(j), 3), thickness_mm=SLICE_THICKNESS_MM, window=WINDOW,
                   rescale_intercept=RESCALE_INTERCEPT, manufacturer=f"FlexUNet synthetic ({profile.name} scanner)",
                   description="Synthetic non-contrast head CT (territory family)")
