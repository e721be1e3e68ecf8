"""Lesions of the "territory" synthetic family, drawn into a :class:`flexunet.synthetic.head.Section`.

- Territorial infarcts (class 1): the part of a hemisphere an artery feeds (anterior, middle
  or posterior cerebral artery, or one branch of the middle one): an angular sector of the brain
  from a deep edge out to the cortex, its edges wandering and fuzzy (3-10 mm), narrowing towards
  the cortex at the ends of its height.  The core is 2.5-12 HU below the parenchyma it replaces
  and the grey/white difference fades inside it (the insular ribbon and lentiform signs).
- Lacunar infarcts (class 1): small ovoid spots of 2.5-7 mm in the deep grey and white matter,
  5-12 HU below their surroundings, with a soft edge.
- Haemorrhages (class 2): deep (basal ganglia, thalamus) or lobar clots of 2-5 lobes with
  wavy outlines, 50-90 HU with a sharp edge and a mottled inside, in a rim of oedema 2-8 mm wide
  and 3-9 HU below the parenchyma; the oedema is not labelled.  Punctate bleeds: 1.8-3.5 mm.

The label is where the lesion's drawn weight reaches one half, so label and intensity agree;
a haemorrhage wins over an infarct.  :class:`Spot` also serves the family's look-alikes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flexunet.synthetic.head import CSF, GM, Section, bell
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

ISCHEMIC, HEMORRHAGIC = 1, 2
MIN_PIXELS = 4                      # labelled pieces smaller than this are left unlabelled


def smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class Territory:
    """A sector of one hemisphere: an infarct (acute, labelled) or an old one (unlabelled look-alike)."""

    side: float                     # -1: x < 0, +1: x > 0
    alpha: tuple[float, float]      # angular extent (0 front .. pi back), at the widest height
    rho_in: float                   # deep edge (brain unit disc), at the widest height
    edge: float                     # fuzzy edge width (radians and unit-disc radius)
    h: float                        # centre height
    half_h: float                   # half extent in height
    wobble: np.ndarray              # (K, 4): radial and height frequency, phase, amplitude (radians)
    drop_hu: float                  # acute: HU below the parenchyma; old: the HU it becomes
    pull: float                     # acute: share of the grey/white difference lost
    mottle: tuple[float, float, float]  # kx, ky (rad/mm), phase of the core's unevenness
    old: bool = False


@dataclass(frozen=True)
class Spot:
    """A small ovoid: lacune, punctate bleed, calcification (3-D: fades over ``half_mm`` in height)."""

    u: float
    v: float
    z_mm: float
    radius_mm: float
    half_mm: float
    value_hu: float                 # drop below the surroundings (drop=True) or the HU it becomes
    edge_mm: float
    drop: bool
    aspect: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class Bleed:
    """A multi-lobed clot: lobes (du, dv in unit disc, dz mm, radius mm) around a centre."""

    u: float
    v: float
    z_mm: float
    lobes: np.ndarray               # (L, 4)
    wobble: np.ndarray              # (L, K, 2): amplitude, phase of cos(k phi + phase), k = 2..
    value_hu: float
    mottle_hu: float
    oedema_mm: float
    oedema_hu: float
    side: float                     # 0: deep (may cross nothing), else the hemisphere it keeps to


# --------------------------------------------------------------------------- drawing


def territory_weight(t: Territory, sec: Section, midline_mm: float) -> np.ndarray:
    """0..1: how much of the sector each pixel is (0 outside the hemisphere and the parenchyma)."""
    f = bell(sec.h, t.h, t.half_h)
    if f <= 0:
        return np.zeros(sec.hu.shape, np.float32)
    grow = math.sqrt(f)
    alpha = sec.alpha.copy()
    for kr, kh, phase, amp in t.wobble:
        alpha += np.float32(amp) * np.sin(np.float32(kr) * sec.rho + np.float32(kh * sec.h + phase))
    mid, half = (t.alpha[0] + t.alpha[1]) / 2, (t.alpha[1] - t.alpha[0]) / 2 * grow
    rho_in = 1.0 - (1.0 - t.rho_in) * grow
    w = (smoothstep((alpha - (mid - half)) / t.edge + 0.5) * smoothstep(((mid + half) - alpha) / t.edge + 0.5)
         * smoothstep((sec.rho - rho_in) / t.edge + 0.5))
    keep = sec.parenchyma & ((sec.x - np.float32(midline_mm)) * np.float32(t.side) > 0)
    return (w * keep).astype(np.float32)


def draw_territory(t: Territory, sec: Section, wm_hu: float, midline_mm: float) -> np.ndarray:
    """Apply ``t`` to ``sec.hu`` in place; where its weight reaches one half (bool)."""
    w = territory_weight(t, sec, midline_mm)
    if t.old:
        sec.hu += w * (np.float32(t.drop_hu) - sec.hu)
    else:
        kx, ky, phase = t.mottle
        drop = t.drop_hu * (1.0 + 0.3 * np.cos(np.float32(kx) * sec.x + np.float32(ky) * sec.y + np.float32(phase)))
        sec.hu -= w * (drop + np.float32(t.pull) * np.maximum(sec.hu - np.float32(wm_hu), 0.0))
    return w >= 0.5


def spot_weight(s: Spot, sec: Section, z_mm: float, spacing_mm: float) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The spot's weight in its bounding box, and the box (an empty box where the slice misses it)."""
    frac = 1.0 - ((z_mm - s.z_mm) / s.half_mm) ** 2
    radius = s.radius_mm * math.sqrt(max(frac, 0.0))
    if frac <= 0.1 or radius < 0.5:
        return np.zeros((0, 0), np.float32), (slice(0, 0), slice(0, 0))
    box = _box(sec, s.u, s.v, radius * max(s.aspect, 1.0) + s.edge_mm + 2 * spacing_mm)
    c, sn = math.cos(s.angle), math.sin(s.angle)
    du, dv = (sec.u[box] - s.u) * sec.brain_mm, (sec.v[box] - s.v) * sec.brain_mm
    a, b = c * du + sn * dv, (-sn * du + c * dv) * s.aspect
    edge = max(s.edge_mm, 0.5 * spacing_mm)
    return smoothstep((radius - np.hypot(a, b)) / edge + 0.5).astype(np.float32), box


def draw_spot(s: Spot, sec: Section, z_mm: float, spacing_mm: float, allowed: np.ndarray) -> np.ndarray:
    """Apply ``s`` to ``sec.hu`` in place (only where ``allowed``); where its weight reaches one half."""
    inside = np.zeros(sec.hu.shape, bool)
    w, box = spot_weight(s, sec, z_mm, spacing_mm)
    if w.size == 0:
        return inside
    w = w * allowed[box]
    if s.drop:
        sec.hu[box] -= w * np.float32(s.value_hu)
    else:
        sec.hu[box] += w * (np.float32(s.value_hu) - sec.hu[box])
    inside[box] = w >= 0.5
    return inside


def _box(sec: Section, u: float, v: float, reach_mm: float) -> tuple[slice, slice]:
    """The rows and columns within ``reach_mm`` of (u, v) (from the unit-disc coordinates)."""
    d = np.hypot(sec.u - np.float32(u), sec.v - np.float32(v)) * np.float32(sec.brain_mm)
    rows, cols = np.nonzero(d <= reach_mm)
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


def bleed_distance(b: Bleed, sec: Section, z_mm: float, box: tuple[slice, slice]) -> np.ndarray:
    """Signed distance (mm, > 0 inside) to the clot's outline in ``box``."""
    du, dv = (sec.u[box] - b.u) * sec.brain_mm, (sec.v[box] - b.v) * sec.brain_mm
    dist = np.full(du.shape, -np.inf, np.float32)
    for (lu, lv, lz, radius), harm in zip(b.lobes, b.wobble):
        frac = 1.0 - ((z_mm - b.z_mm - lz) / max(radius, 1.0)) ** 2
        if frac <= 0.05:
            continue
        pa, pb = du - lu * sec.brain_mm, dv - lv * sec.brain_mm
        phi = np.arctan2(pb, pa)
        g = np.ones_like(phi)
        for k, (amp, phase) in enumerate(harm, start=2):
            g += np.float32(amp) * np.cos(k * phi + np.float32(phase))
        dist = np.maximum(dist, np.float32(radius * math.sqrt(frac)) * g - np.hypot(pa, pb))
    return dist


def draw_bleed(b: Bleed, sec: Section, z_mm: float, spacing_mm: float, midline_mm: float) -> np.ndarray:
    """Its oedema (unlabelled) and clot into ``sec.hu`` in place; where the clot is (bool)."""
    inside = np.zeros(sec.hu.shape, bool)
    reach = float(np.max(b.lobes[:, 3]) * 1.4 + np.max(np.hypot(b.lobes[:, 0], b.lobes[:, 1])) * sec.brain_mm)
    box = _box(sec, b.u, b.v, reach + b.oedema_mm + 2 * spacing_mm)
    if box[0].stop == 0:
        return inside
    dist = bleed_distance(b, sec, z_mm, box)
    if not np.isfinite(dist).any() or dist.max() <= 0:
        return inside
    allowed = (sec.dd[box] >= 0) & (sec.tissue[box] >= CSF)        # intracranial, never bone
    if b.side:
        allowed &= (sec.x[box] - np.float32(midline_mm)) * np.float32(b.side) > 0
    rim = np.exp(-np.maximum(-dist, 0.0) / b.oedema_mm) * (dist < 0) * (sec.tissue[box] >= GM) * allowed
    sec.hu[box] -= rim.astype(np.float32) * np.float32(b.oedema_hu)
    w = np.clip(dist / max(0.6, 0.5 * spacing_mm) + 0.5, 0.0, 1.0) * allowed
    grain = np.cos(sec.x[box] * 0.9 + sec.y[box] * 0.6) * np.cos(sec.y[box] * 0.7 - sec.x[box] * 0.4)
    value = np.float32(b.value_hu) + np.float32(b.mottle_hu) * grain
    sec.hu[box] += w.astype(np.float32) * (value - sec.hu[box])
    inside[box] = w >= 0.5
    return inside


def drop_specks(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its connected pieces of fewer than MIN_PIXELS pixels."""
    pieces, n = ndimage.label(mask)
    if n == 0:
        return mask
    keep = np.bincount(pieces.ravel(), minlength=n + 1) >= MIN_PIXELS
    keep[0] = False
    return keep[pieces]


# --------------------------------------------------------------------------- drawing them at random

# name: (share, alpha range of the sector's start, of its end, deep edge range)
TERRITORIES = {
    "aca": (0.15, (0.0, 0.0), (0.45, 0.65), (0.35, 0.6)),
    "mca": (0.2, (0.55, 0.75), (2.0, 2.3), (0.25, 0.45)),
    "mca-branch": (0.45, None, None, (0.45, 0.75)),
    "pca": (0.2, (2.3, 2.5), (math.pi, math.pi), (0.4, 0.65)),
}


def make_territory(rng: np.random.Generator, h: float, old: bool = False) -> Territory:
    """An infarct sector (a fixed number of draws); ``old``: the unlabelled chronic kind."""
    names = list(TERRITORIES)
    name = names[int(rng.choice(len(names), p=[TERRITORIES[n][0] for n in names]))]
    _, start, end, deep = TERRITORIES[name]
    centre, half = rng.uniform(0.8, 2.0), rng.uniform(0.2, 0.4)
    a0 = rng.uniform(*start) if start else centre - half
    a1 = rng.uniform(*end) if end else centre + half
    k = 3
    wobble = np.stack([rng.uniform(2.0, 8.0, k), rng.uniform(-8.0, 8.0, k), rng.uniform(0, 2 * np.pi, k),
                       rng.uniform(0.02, 0.07, k)], 1)
    side = float(rng.choice([-1.0, 1.0]))
    drop = rng.uniform(2.5, 5.0) if rng.random() < 0.3 else rng.uniform(5.0, 12.0)
    turn = rng.uniform(0, 2 * np.pi)
    wave = 2 * np.pi / rng.uniform(20.0, 40.0)
    return Territory(side=side, alpha=(float(a0), float(a1)), rho_in=float(rng.uniform(*deep)),
                     edge=float(rng.uniform(0.06, 0.16)), h=float(h), half_h=float(rng.uniform(0.12, 0.32)),
                     wobble=wobble, drop_hu=float(drop), pull=float(rng.uniform(0.3, 0.8)),
                     mottle=(float(wave * math.cos(turn)), float(wave * math.sin(turn)), float(rng.uniform(0, 6.3))),
                     old=old)


def deep_point(rng: np.random.Generator) -> tuple[float, float]:
    """A point of the deep grey or white matter (unit disc)."""
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.42)), float(rng.uniform(-0.25, 0.25))


def make_lacune(rng: np.random.Generator, z_mm: float) -> Spot:
    """A lacunar infarct (labelled ischemic)."""
    u, v = deep_point(rng)
    return Spot(u=u, v=v, z_mm=z_mm, radius_mm=float(rng.uniform(2.5, 7.0)), half_mm=float(rng.uniform(4.0, 9.0)),
                value_hu=float(rng.uniform(5.0, 12.0)), edge_mm=float(rng.uniform(1.0, 2.5)), drop=True,
                aspect=float(rng.uniform(1.0, 1.8)), angle=float(rng.uniform(0, np.pi)))


def make_bleed(rng: np.random.Generator, z_mm: float) -> Bleed | Spot:
    """A deep, lobar or punctate haemorrhage (labelled haemorrhagic)."""
    kind = rng.random()
    if kind < 0.2:                                               # punctate
        u, v = _anywhere(rng, 0.85)
        return Spot(u=u, v=v, z_mm=z_mm, radius_mm=float(rng.uniform(1.8, 3.5)), half_mm=float(rng.uniform(3.0, 6.0)),
                    value_hu=float(rng.uniform(55.0, 85.0)), edge_mm=0.4, drop=False)
    if kind < 0.6:                                               # deep: basal ganglia, thalamus
        u, v = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.38)), float(rng.uniform(-0.1, 0.22))
        radius, side = rng.uniform(5.0, 18.0), 0.0
    else:                                                        # lobar
        u, v = _anywhere(rng, 0.75, 0.45)
        radius, side = rng.uniform(5.0, 22.0), float(np.sign(u) or 1.0)
    n = int(rng.integers(2, 6))
    turn = rng.uniform(0, 2 * np.pi, n)
    reach = rng.uniform(0.2, 0.7, n) * radius / 65.0
    lobes = np.stack([reach * np.cos(turn), reach * np.sin(turn), rng.uniform(-0.4, 0.4, n) * radius,
                      radius * rng.uniform(0.45, 0.9, n)], 1)
    lobes[0] = (0.0, 0.0, 0.0, radius)
    k = np.arange(2, 6)
    wobble = np.stack([rng.uniform(0.0, 0.14, (n, k.size)) / (k - 1) ** 0.7,
                       rng.uniform(0, 2 * np.pi, (n, k.size))], -1)
    return Bleed(u=u, v=v, z_mm=z_mm, lobes=lobes, wobble=wobble, value_hu=float(rng.uniform(50.0, 90.0)),
                 mottle_hu=float(rng.uniform(1.0, 5.0)), oedema_mm=float(rng.uniform(2.0, 8.0)),
                 oedema_hu=float(rng.uniform(3.0, 9.0)), side=side)


def _anywhere(rng: np.random.Generator, outer: float, inner: float = 0.0) -> tuple[float, float]:
    r, a = rng.uniform(inner, outer), rng.uniform(0, 2 * np.pi)
    return float(r * math.cos(a)), float(r * math.sin(a))
