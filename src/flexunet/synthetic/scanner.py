"""Scanner profiles: how one CT scanner's images differ from another's, for either synthetic family.

A :class:`ScannerProfile` is a distribution of per-patient scanner settings *relative to the
family's own scanner* ("standard": no change).  Each patient draws one :class:`ScannerSettings`
from it; every slice of that patient is then changed the same way, in this order:

1. reconstruction kernel: a Gaussian blur (a soft kernel, thicker slices: more partial volume)
   or an unsharp mask (a sharp kernel: crisper edges, louder fine noise);
2. extra noise, streaky as filtered back-projection makes it (:func:`streak_noise`);
3. calibration: ``HU' = gain * HU + offset`` (the water point moves by ``offset``).

``flexunet synth --scanner NAME`` picks a profile; the generalisation benchmark trains on
"standard" patients and tests on patients of a shifted profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flexunet.utils.errors import DataError
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

Range = tuple[float, float]
SUBSAMPLES = 4                      # samples of a projection profile per pixel (streak_noise)


@dataclass(frozen=True)
class ScannerProfile:
    """Per-patient ranges of a scanner's differences from the family's own scanner."""

    name: str
    description: str
    gain: Range = (1.0, 1.0)            # multiplies HU about water (0 HU)
    offset_hu: Range = (0.0, 0.0)       # added after the gain: a calibration shift
    noise_hu: Range = (0.0, 0.0)        # sd of added streaky noise
    blur_mm: Range = (0.0, 0.0)         # Gaussian sigma: softer kernel, thicker slices
    sharpen: Range = (0.0, 0.0)         # unsharp-mask amount: sharper kernel

    @property
    def is_identity(self) -> bool:
        return all(getattr(self, k) == (v, v) for k, v in (("gain", 1.0), ("offset_hu", 0.0), ("noise_hu", 0.0),
                                                            ("blur_mm", 0.0), ("sharpen", 0.0)))


@dataclass(frozen=True)
class ScannerSettings:
    """One patient's draw from a :class:`ScannerProfile`."""

    gain: float = 1.0
    offset_hu: float = 0.0
    noise_hu: float = 0.0
    blur_mm: float = 0.0
    sharpen: float = 0.0


PROFILES: dict[str, ScannerProfile] = {p.name: p for p in (
    ScannerProfile("standard", "the family's own scanner, unchanged"),
    ScannerProfile("sharp", "a sharp (bone-leaning) kernel at a lower dose, calibrated a few HU high",
                   gain=(1.03, 1.07), offset_hu=(2.0, 5.0), noise_hu=(3.0, 5.0), sharpen=(0.5, 0.9)),
    ScannerProfile("soft", "a smooth kernel and thick slices (more partial volume), calibrated low",
                   gain=(0.93, 0.97), offset_hu=(-4.0, -2.0), noise_hu=(1.0, 2.0), blur_mm=(0.7, 1.1)),
)}
STANDARD = PROFILES["standard"]


def scanner_profile(name: str | ScannerProfile) -> ScannerProfile:
    """The profile called ``name`` (a profile is returned as it is); a one-line error otherwise."""
    if isinstance(name, ScannerProfile):
        return name
    if name not in PROFILES:
        raise DataError(f"synth: scanner = {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def draw_settings(profile: ScannerProfile, rng: np.random.Generator) -> ScannerSettings:
    """One patient's settings: each field uniform in its range (five draws, always)."""
    values = [rng.uniform(*getattr(profile, k)) for k in ("gain", "offset_hu", "noise_hu", "blur_mm", "sharpen")]
    return ScannerSettings(*(float(v) for v in values))


def apply_settings(hu: np.ndarray, settings: ScannerSettings, spacing_mm: float,
                   rng: np.random.Generator) -> np.ndarray:
    """``hu`` (float) changed by ``settings`` (kernel, noise, calibration); float32, same shape."""
    out = np.asarray(hu, np.float32)
    if settings.blur_mm > 0:
        out = ndimage.gaussian_filter(out, settings.blur_mm / spacing_mm)
    if settings.sharpen > 0:
        out = out + np.float32(settings.sharpen) * (out - ndimage.gaussian_filter(out, 1.0 / spacing_mm + 0.5))
    if settings.noise_hu > 0:
        out = out + np.float32(settings.noise_hu) * streak_noise(out.shape[0], spacing_mm, rng)
    return (np.float32(settings.gain) * out + np.float32(settings.offset_hu)).astype(np.float32)


def streak_noise(size: int, spacing_mm: float, rng: np.random.Generator, views: int = 36,
                 grain_mm: float = 0.8, anisotropy: float = 0.6) -> np.ndarray:
    """Unit-sd noise of a filtered back-projection: (size, size) float32.

    Each of ``views`` projection angles carries a 1-D white noise profile, high-passed (the ramp
    filter's effect) and smoothed to ``grain_mm``; smearing every profile back across the image
    and summing makes the streaky, correlated texture of CT noise.  ``anisotropy`` weights the
    views along one random direction more (dense bone in the beam path): more streaks that way.
    """
    n = int(math.ceil(size * math.sqrt(2.0))) + 4
    grid = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    fine = np.arange(n * SUBSAMPLES) / SUBSAMPLES            # the profile sampled finely: nearest ~ linear
    heavy = rng.uniform(0.0, math.pi)
    out = np.zeros((size, size), np.float32)
    for k in range(views):
        angle = (k + rng.uniform(0.0, 1.0)) * math.pi / views
        profile = rng.standard_normal(n).astype(np.float32)
        profile = ndimage.gaussian_filter1d(profile, max(grain_mm / spacing_mm, 0.4))
        profile -= ndimage.gaussian_filter1d(profile, max(4.0 * grain_mm / spacing_mm, 1.5))
        weight = 1.0 + anisotropy * math.cos(angle - heavy) ** 8
        table = (weight * np.interp(fine, np.arange(n), profile)).astype(np.float32)
        along_cols = (grid * math.cos(angle) * SUBSAMPLES).astype(np.float32)
        along_rows = ((grid * math.sin(angle) + n / 2.0) * SUBSAMPLES + 0.5).astype(np.float32)
        out += table[(along_rows[:, None] + along_cols[None, :]).astype(np.int32)]
    return out / np.float32(max(float(out.std()), 1e-6))


def shifted(hu: np.ndarray, profile: ScannerProfile, spacing_mm: float, patient_rng: np.random.Generator,
            slice_rng: np.random.Generator) -> np.ndarray:
    """Integer HU ``hu`` as a scanner of ``profile`` would show it (int16; unchanged for "standard")."""
    if profile.is_identity:
        return hu
    settings = draw_settings(profile, patient_rng)
    out = apply_settings(hu.astype(np.float32), settings, spacing_mm, slice_rng)
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)
