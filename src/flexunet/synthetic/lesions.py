"""Knobs of the synthetic stroke-CT set, and the unlabelled look-alikes it can draw.

``SynthOptions`` holds what ``flexunet synth`` can make harder than the demo's data:
lesion contrast (HU), lesion size, the share of slices allowed lesions, noise, image
look-alikes that carry no label.  Its defaults are the demo's data: with them the
phantom draws exactly the same random numbers and writes the same bytes.

Look-alikes (``lookalikes=True``), drawn before the lesions and never labelled:

- periventricular hypodensity (leukoaraiosis): soft caps in the white matter beside the
  frontal and occipital horns, 3-8 HU below white matter: what a subtle infarct also is;
- calcifications: 1-3 small spots of 120-400 HU in the deep grey nuclei or the midline
  (pineal, choroid plexus): bright and compact like a small haemorrhage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from flexunet.utils.errors import DataError

Range = tuple[float, float]


@dataclass(frozen=True)
class SynthOptions:
    """What the phantom draws; the defaults are the demo's data.

    ischemic_hu: drop below white matter of an infarct (lo, hi) in HU: a few HU is subtle.
    hemorrhage_hu: value of a haemorrhage (lo, hi) in HU.
    lesion_size: in-plane radius (lo, hi) in mm of every lesion at its widest slice
        (None: the demo's ranges, 4.5-30 mm ischemic, 4-25 mm haemorrhagic).
    prevalence: share of slices allowed their patient's lesions (1: all of them; the
        others are drawn without lesions, so the share of lesion slices is at most this).
    noise: noise sd in HU (None: 2.5-3.5 HU drawn per patient).
    lookalikes: draw unlabelled periventricular hypodensities and calcifications.
    """

    ischemic_hu: Range = (8.0, 14.0)
    hemorrhage_hu: Range = (60.0, 80.0)
    lesion_size: Range | None = None
    prevalence: float = 1.0
    noise: float | None = None
    lookalikes: bool = False

    def __post_init__(self) -> None:
        for name, lo, hi in (("ischemic_hu", 0.5, 40.0), ("hemorrhage_hu", 30.0, 200.0),
                             ("lesion_size", 1.0, 60.0)):
            value = getattr(self, name)
            if value is None and name == "lesion_size":
                continue
            if not _is_range(value, lo, hi):
                raise DataError(f"synth: {name} = {value!r}; expected LO,HI with {lo} <= LO <= HI <= {hi}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if not _is_number(self.prevalence) or not 0.0 <= self.prevalence <= 1.0:
            raise DataError(f"synth: prevalence = {self.prevalence!r}; expected a share between 0 and 1")
        if self.noise is not None and (not _is_number(self.noise) or not 0.0 <= self.noise <= 50.0):
            raise DataError(f"synth: noise = {self.noise!r}; expected a noise sd in HU between 0 and 50")
        if not isinstance(self.lookalikes, bool):
            raise DataError(f"synth: lookalikes = {self.lookalikes!r}; expected True or False")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_OPTIONS

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def radius_range(self, ischemic: bool) -> Range:
        if self.lesion_size is not None:
            return self.lesion_size
        return (4.5, 30.0) if ischemic else (4.0, 25.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def _is_range(value: object, lo: float, hi: float) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_number, value))
            and lo <= float(value[0]) <= float(value[1]) <= hi)


DEFAULT_OPTIONS = SynthOptions()


def parse_range(text: str) -> Range:
    """``"3,6"`` -> (3.0, 6.0); ``"5"`` -> (5.0, 5.0) (for the CLI)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise DataError(f"synth: {text!r}; expected a number or LO,HI") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise DataError(f"synth: {text!r}; expected a number or LO,HI")
    return values[0], values[1]


# --------------------------------------------------------------------------- look-alikes


def draw_lookalikes(hu: np.ndarray, parenchyma: np.ndarray, white: np.ndarray, u: np.ndarray, v: np.ndarray,
                    spacing_mm: float, ventricle_factor: float, rng: np.random.Generator) -> None:
    """Unlabelled periventricular hypodensities and calcifications, into ``hu`` in place.

    ``u``, ``v``: the brain's normalised frame (brain = unit disc); ``parenchyma``/``white``:
    masks of brain tissue / white matter; ``ventricle_factor``: 0..1, how much of the lateral
    ventricles this slice holds (caps sit beside them).
    """
    if ventricle_factor > 0.1 and rng.random() < 0.7:
        drop = rng.uniform(3.0, 8.0)
        for side in (-1.0, 1.0):
            for cv, sign in ((-0.32, -1.0), (0.36, 1.0)):           # frontal and occipital caps
                if rng.random() < 0.25:
                    continue
                cu = side * rng.uniform(0.12, 0.2)
                ru, rv = rng.uniform(0.05, 0.1), rng.uniform(0.06, 0.12)
                d = ((u - cu) / ru) ** 2 + ((v - cv - sign * 0.03) / rv) ** 2
                w = np.exp(-d * 1.5).astype(np.float32) * white
                hu -= np.float32(drop) * w
    for _ in range(int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1]))):
        if rng.random() < 0.5:                                      # deep grey nuclei
            cu, cv = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.32), rng.uniform(-0.12, 0.12)
        else:                                                       # pineal / choroid plexus
            cu, cv = rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.3)
        radius_mm = rng.uniform(1.0, 2.5)
        value = rng.uniform(120.0, 400.0)
        # distance in mm: u, v are fractions of the brain's half-axes (about 60-70 mm)
        dist = np.hypot((u - cu) * 65.0, (v - cv) * 75.0)
        w = np.clip((radius_mm + 0.5 * spacing_mm - dist) / max(spacing_mm, 0.5), 0.0, 1.0)
        w = (w * parenchyma).astype(np.float32)
        hu += w * (np.float32(value) - hu)
