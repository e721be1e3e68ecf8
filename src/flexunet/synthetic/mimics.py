"""Unlabelled look-alikes of the "territory" synthetic family: what a model must not call a lesion.

Hypodense, like an infarct:

- old lacunes: 1.5-4 mm spots of near-CSF density in the deep grey and white matter (an acute
  lacunar infarct is only 5-12 HU below its surroundings);
- an old territorial infarct (encephalomalacia): a sector 3-8 HU above CSF with a sharp edge,
  in one patient of seven;
- periventricular white-matter hypodensity (leukoaraiosis), 3-8 HU, more often with age;
- the interpetrous dark band of beam hardening across the posterior fossa (skull-base slices).

Hyperdense, like a haemorrhage:

- calcifications (pineal, choroid plexus, pallidum, a falx plaque): 1-3.5 mm, 70-610 HU;
- a hyperdense middle cerebral artery (clot in the vessel, 55-75 HU) in the Sylvian fissure;
- the falx and tentorium and the bone at the skull base (drawn with the head:
  :mod:`flexunet.synthetic.head`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from flexunet.synthetic.head import CSF, WM, Head, Section, bell
from flexunet.synthetic.strokes import Spot, Territory, deep_point, draw_spot, draw_territory, make_territory


@dataclass(frozen=True)
class Mimics:
    """One patient's look-alikes."""

    spots: tuple[Spot, ...]         # lacunes and calcifications (absolute HU)
    old_infarct: Territory | None
    leukoaraiosis_hu: float         # 0: none
    dense_artery: tuple[float, float, float] | None   # side, height, HU
    bar_hu: float                   # interpetrous band's drop at the skull base


def make_mimics(rng: np.random.Generator, head: Head, age: int, z_range: tuple[float, float],
                h_range: tuple[float, float], ischemic_sides: list[float]) -> Mimics:
    """A patient's look-alikes (a fixed number of draws, whatever is drawn)."""
    spots: list[Spot] = []
    for _ in range(int(rng.choice(5, p=[0.35, 0.25, 0.2, 0.12, 0.08]))):       # old lacunes
        u, v = deep_point(rng)
        spots.append(Spot(u=u, v=v, z_mm=float(rng.uniform(*z_range)), radius_mm=float(rng.uniform(1.5, 4.0)),
                          half_mm=float(rng.uniform(2.5, 6.0)), value_hu=float(head.csf_hu + rng.uniform(1.0, 6.0)),
                          edge_mm=0.5, drop=False))
    for _ in range(int(rng.choice(4, p=[0.25, 0.35, 0.25, 0.15]))):            # calcifications
        where = rng.random()
        if where < 0.3:                                              # pineal
            u, v, z, value = rng.uniform(-0.03, 0.03), rng.uniform(0.2, 0.28), rng.uniform(-0.2, 0.0), 300.0
        elif where < 0.6:                                            # choroid plexus, in the atria
            u, v, z, value = rng.choice([-1, 1]) * rng.uniform(0.17, 0.24), rng.uniform(0.25, 0.33), \
                rng.uniform(0.0, 0.2), 200.0
        elif where < 0.85:                                           # pallidum: faint, both sides
            u, v, z, value = rng.choice([-1, 1]) * rng.uniform(0.25, 0.32), rng.uniform(-0.05, 0.05), \
                rng.uniform(-0.15, 0.05), 60.0
        else:                                                        # falx plaque
            u, v, z, value = 0.0, rng.choice([-1, 1]) * rng.uniform(0.45, 0.8), rng.uniform(0.0, 0.5), 250.0
        spots.append(Spot(u=float(u), v=float(v), z_mm=float(z * _half_height(z_range, h_range)),
                          radius_mm=float(rng.uniform(1.0, 3.5)), half_mm=float(rng.uniform(2.0, 5.0)),
                          value_hu=float(value * rng.uniform(1.0, 2.0) + 10.0), edge_mm=0.4, drop=False,
                          aspect=float(rng.uniform(1.0, 2.5)), angle=float(rng.uniform(0, np.pi))))
    old = make_territory(rng, float(rng.uniform(*h_range)), old=True)
    old = dataclasses.replace(old, drop_hu=head.csf_hu + float(rng.uniform(3.0, 8.0)), edge=0.03, half_h=0.15)
    old = old if rng.random() < 0.15 else None
    leuko = float(rng.uniform(3.0, 8.0)) if rng.random() < min(max((age - 45) / 45.0, 0.0), 0.8) else 0.0
    artery_side, artery_hu = float(rng.choice([-1.0, 1.0])), float(rng.uniform(55.0, 75.0))
    artery = (ischemic_sides[0], -0.1, artery_hu) if ischemic_sides and rng.random() < 0.4 else \
        ((artery_side, -0.1, artery_hu) if rng.random() < 0.08 else None)
    return Mimics(spots=tuple(spots), old_infarct=old, leukoaraiosis_hu=leuko, dense_artery=artery,
                  bar_hu=float(rng.uniform(4.0, 12.0)))


def _half_height(z_range: tuple[float, float], h_range: tuple[float, float]) -> float:
    """mm per unit of height."""
    return (z_range[1] - z_range[0]) / max(h_range[1] - h_range[0], 1e-6)


def draw_mimics(m: Mimics, head: Head, sec: Section, z_mm: float, spacing_mm: float) -> None:
    """The look-alikes crossing this slice, into ``sec.hu`` in place (no label)."""
    if m.leukoaraiosis_hu > 0:
        vf = bell(sec.h, 0.15, 0.4)
        if vf > 0:
            w = np.zeros(sec.hu.shape, np.float32)
            for side in (-1.0, 1.0):
                for cv in (-0.3, 0.36):                              # beside the frontal horns and the atria
                    d = ((sec.u - side * 0.17) / 0.11) ** 2 + ((sec.v - cv) / 0.13) ** 2
                    w = np.maximum(w, np.exp(-1.5 * d))
            sec.hu -= np.float32(m.leukoaraiosis_hu * vf) * w * (sec.tissue == WM)
    if m.old_infarct is not None:
        draw_territory(m.old_infarct, sec, head.wm_hu, head.midline_mm)
    intracranial = sec.dd >= 0
    for spot in m.spots:
        draw_spot(spot, sec, z_mm, spacing_mm, intracranial)
    if m.dense_artery is not None:
        side, h, value = m.dense_artery
        f = bell(sec.h, h, 0.12)
        if f > 0:
            angle = head.sylvian[0 if side < 0 else 1]
            p = np.array([side * 0.52, -0.08])
            q = np.array([side * math.sin(angle) * 0.85, -math.cos(angle) * 0.85])
            t = np.clip(((sec.u - p[0]) * (q - p)[0] + (sec.v - p[1]) * (q - p)[1]) / float(((q - p) ** 2).sum()),
                        0.0, 1.0)
            d = np.hypot(sec.u - p[0] - t * (q - p)[0], sec.v - p[1] - t * (q - p)[1]) * sec.brain_mm
            w = np.clip((1.0 * f + 0.3 - d) / max(spacing_mm, 0.5), 0.0, 1.0) * intracranial
            sec.hu += w.astype(np.float32) * (np.float32(value) - sec.hu)
    bar = bell(sec.h, -0.55, 0.2)
    if bar > 0:                                                      # beam hardening between the petrous bones
        d = np.abs(sec.v - 0.3) * sec.brain_mm
        sec.hu -= np.float32(m.bar_hu * bar) * np.exp(-(d / 4.0) ** 2) * (sec.tissue >= CSF) * intracranial
