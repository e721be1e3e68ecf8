"""The head and tissue model of the "territory" synthetic family (:mod:`flexunet.synthetic.territory`).

Designed apart from the phantom family's (:mod:`flexunet.synthetic.phantom`): a head is a
superellipse with a wider occiput, whose cross-section follows ``(1 - |h|^p)^(1/p)`` over the
height ``h`` (-1 skull base .. 1 vertex), skull thickest in front and behind, a diploe between two
cortical tables, temporalis muscle at the sides of the scalp.  Inside:

- gyri and sulci from the zero lines of a 3-D random field (a sum of plane waves in x, y, z):
  sulci are CSF where the field crosses zero within the sulcal depth, grey matter a ribbon along
  the surface and the sulci; white matter the rest, with a slow shading of +-1.5 HU;
- grey matter 35-44 HU, white 22-29 HU (at least 8 HU apart), CSF 2-12 HU, per patient;
- Sylvian fissures with the insular cortex, caudate, lentiform and thalamus at mid heights;
- lateral ventricles of unequal size (one 65-100% of the other) beside a shifted midline, the
  third ventricle, temporal horns, the falx in the interhemispheric fissure, the tentorium;
- at the skull base, bone cut partly by the slice (petrous ridges, sphenoid wings): islands of
  150-950 HU inside the head's outline.

Coordinates: ``x`` lateral, ``y`` posterior (mm, the head's own frame); ``u, v`` the brain's unit
disc; ``alpha`` the angle in a hemisphere from the front (0) over the side (pi/2) to the back (pi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AIR, SCALP, BONE, CSF, GM, WM, DEEP = range(7)      # tissue codes; >= GM is parenchyma


@dataclass(frozen=True)
class Head:
    """One patient's anatomy (everything but lesions and look-alikes)."""

    half_width_mm: float            # outer half-axes at the widest cross-section
    half_length_mm: float
    squareness: float               # superellipse exponent: 2 is an ellipse
    egg: float                      # widening towards the back
    bumps: np.ndarray               # (K, 2): amplitude, phase of the outline's harmonics 3..
    centre_mm: tuple[float, float]
    yaw: float                      # radians
    dome: float                     # p of the cross-section profile over the height
    scalp_mm: float
    skull_mm: float
    csf_mm: float
    table_hu: float                 # cortical bone
    diploe_hu: float
    gm_hu: float
    wm_hu: float
    csf_hu: float
    atrophy: float                  # 0..1: wider sulci, fissures and ventricles
    gyri: np.ndarray                # (M, 5): kx, ky, kz (rad/mm), phase, amplitude
    shading: np.ndarray             # (L, 4): kx, ky (rad/mm), phase, HU amplitude
    sulcus_depth_mm: float
    cortex_mm: float
    ventricles: tuple[float, float]  # left, right size
    midline_mm: float               # shift of the midline structures (+ right)
    sylvian: tuple[float, float]    # angle (alpha) where each Sylvian fissure meets the surface


def make_head(rng: np.random.Generator) -> Head:
    """A head drawn from ``rng`` (a fixed number of draws)."""
    half_width = rng.uniform(66.0, 80.0)
    atrophy = float(rng.beta(1.6, 3.0))
    m = 40
    wave = 2 * np.pi / rng.uniform(11.0, 24.0, m)
    heading = rng.uniform(0.0, 2 * np.pi, m)
    tilt = rng.uniform(-0.6, 0.6, m)
    gyri = np.stack([wave * np.cos(heading) * np.cos(tilt), wave * np.sin(heading) * np.cos(tilt),
                     wave * np.sin(tilt), rng.uniform(0, 2 * np.pi, m), rng.uniform(0.5, 1.0, m)], 1)
    slow = 2 * np.pi / rng.uniform(50.0, 120.0, 3)
    turn = rng.uniform(0.0, 2 * np.pi, 3)
    shading = np.stack([slow * np.cos(turn), slow * np.sin(turn), rng.uniform(0, 2 * np.pi, 3),
                        rng.uniform(0.4, 0.9, 3)], 1)
    wm = rng.uniform(22.0, 29.0)
    k = np.arange(3, 8)
    small = rng.uniform(0.65, 1.0)
    return Head(
        half_width_mm=float(half_width), half_length_mm=float(half_width * rng.uniform(1.12, 1.28)),
        squareness=float(rng.uniform(2.0, 2.7)), egg=float(rng.uniform(0.02, 0.09)),
        bumps=np.stack([rng.uniform(0.0, 0.012, k.size), rng.uniform(0, 2 * np.pi, k.size)], 1),
        centre_mm=(float(rng.uniform(-10.0, 10.0)), float(rng.uniform(-8.0, 8.0))),
        yaw=float(rng.uniform(-0.14, 0.14)), dome=float(rng.uniform(2.2, 3.2)),
        scalp_mm=float(rng.uniform(3.5, 7.0)), skull_mm=float(rng.uniform(4.5, 7.5)),
        csf_mm=float(rng.uniform(0.6, 1.4) + 2.0 * atrophy), table_hu=float(rng.uniform(1500.0, 1900.0)),
        diploe_hu=float(rng.uniform(500.0, 850.0)), gm_hu=float(max(rng.uniform(35.0, 44.0), wm + 8.0)),
        wm_hu=float(wm), csf_hu=float(rng.uniform(2.0, 12.0)), atrophy=atrophy, gyri=gyri, shading=shading,
        sulcus_depth_mm=float(rng.uniform(12.0, 20.0)), cortex_mm=float(rng.uniform(2.6, 3.8)),
        ventricles=(1.0, float(small)) if rng.random() < 0.5 else (float(small), 1.0),
        midline_mm=float(rng.normal(0.0, 1.2)), sylvian=(float(rng.uniform(0.9, 1.25)),
                                                          float(rng.uniform(0.9, 1.25))),
    )


@dataclass
class Section:
    """One slice of a head: pixel coordinates, HU before lesions, tissue codes."""

    x: np.ndarray                   # mm, lateral (head frame)
    y: np.ndarray                   # mm, posterior
    u: np.ndarray                   # brain unit disc, lateral
    v: np.ndarray                   # brain unit disc, posterior
    rho: np.ndarray                 # normalised radius: 1 at the brain's surface
    alpha: np.ndarray               # 0 front .. pi back, in either hemisphere
    dd: np.ndarray                  # mm below the brain's surface (< 0 outside the brain)
    brain_mm: float                 # mean brain radius on this slice (mm per unit of u, v)
    h: float
    hu: np.ndarray
    tissue: np.ndarray

    @property
    def parenchyma(self) -> np.ndarray:
        return self.tissue >= GM


def cross_section(head: Head, h: float) -> float:
    """The head's in-plane scale at height ``h``."""
    return float(max(1.0 - abs(h) ** head.dome, 0.04) ** (1.0 / head.dome))


def section(head: Head, h: float, z_mm: float, size: int, spacing_mm: float) -> Section:
    """The anatomy of the slice at height ``h`` (``z_mm``: the same height in mm, for the gyri)."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) - size / 2) * np.float32(spacing_mm)
    x0, y0 = axis[None, :] - np.float32(head.centre_mm[0]), axis[:, None] - np.float32(head.centre_mm[1])
    c, s = np.float32(math.cos(head.yaw)), np.float32(math.sin(head.yaw))
    x, y = c * x0 + s * y0, -s * x0 + c * y0
    r = np.maximum(np.hypot(x, y), np.float32(1e-3))
    phi = np.arctan2(y, x)
    scale = cross_section(head, h)
    a = head.half_width_mm * scale * (1.0 + head.egg * np.sin(phi))
    b = head.half_length_mm * scale
    n = head.squareness
    outer = (np.abs(np.cos(phi) / a) ** n + np.abs(np.sin(phi) / b) ** n) ** (-1.0 / n)
    for k, (amp, phase) in enumerate(head.bumps, start=3):
        outer = outer * (1.0 + np.float32(amp) * np.cos(k * phi + np.float32(phase)))
    slant = 1.0 / math.sqrt(max(1.0 - min(abs(h), 0.97) ** 2 * 0.8, 0.2))   # the vault cut obliquely
    skull = head.skull_mm * slant * (0.7 + 0.6 * np.sin(phi) ** 2)           # thick front and back
    scalp = head.scalp_mm * slant
    inner = outer - scalp - skull
    surface = inner - head.csf_mm
    depth = outer - r
    dd = (surface - r).astype(np.float32)
    rho = (r / np.maximum(surface, 1.0)).astype(np.float32)
    brain_mm = float(np.median(surface))
    u, v = (rho * np.cos(phi)).astype(np.float32), (rho * np.sin(phi)).astype(np.float32)
    alpha = np.arctan2(np.abs(x), -y).astype(np.float32)
    tissue = np.select([depth < 0, depth < scalp, depth < scalp + skull, dd < 0],
                       [AIR, SCALP, BONE, CSF], WM).astype(np.uint8)
    sec = Section(x, y, u, v, rho, alpha, dd, brain_mm, h, np.zeros(x.shape, np.float32), tissue)
    _scalp_and_bone(head, sec, depth, scalp, skull, phi)
    _brain(head, sec, *_gyral_field(head, x0[0].astype(np.float64), y0[:, 0].astype(np.float64), z_mm))
    _skull_base(head, sec)
    return sec


def _scalp_and_bone(head: Head, sec: Section, depth: np.ndarray, scalp: float, skull: np.ndarray,
                    phi: np.ndarray) -> None:
    muscle = np.cos(phi) ** 4                                       # temporalis at the sides
    scalp_hu = np.where(depth < 1.0, 40.0, -80.0 + 125.0 * muscle)
    t = np.clip((depth - scalp) / skull, 0.0, 1.0)
    bone_hu = head.diploe_hu + (head.table_hu - head.diploe_hu) * np.abs(2.0 * t - 1.0) ** 2.5
    sec.hu[:] = np.select([sec.tissue == AIR, sec.tissue == SCALP, sec.tissue == BONE],
                          [-1000.0, scalp_hu, bone_hu], head.csf_hu)


def _gyral_field(head: Head, cols: np.ndarray, rows: np.ndarray, z_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The gyral field (unit sd) and its in-plane gradient's length (per mm) on the pixel grid.

    ``cols``, ``rows``: the grid's x and y (mm, image axes, about the head's centre).  Each plane
    wave ``exp(i(k . (x, y) + kz z + phase))`` in the head's turned frame is a product of a wave
    along the columns and one along the rows, so the sum over waves is one matrix product.
    """
    kx, ky, kz, phase, amp = head.gyri.T
    c, s = math.cos(head.yaw), math.sin(head.yaw)
    along_cols = np.exp(1j * (np.outer(kx * c - ky * s, cols) + (kz * z_mm + phase)[:, None]))   # (M, W)
    along_rows = np.exp(1j * np.outer(rows, kx * s + ky * c))                                      # (H, M)
    f = (along_rows @ (amp[:, None] * along_cols)).real
    gx = -(along_rows @ ((amp * kx)[:, None] * along_cols)).imag
    gy = -(along_rows @ ((amp * ky)[:, None] * along_cols)).imag
    norm = math.sqrt(float((amp ** 2).sum()) / 2.0)
    return (f / norm).astype(np.float32), (np.hypot(gx, gy) / norm).astype(np.float32)


def _segment_distance(u: np.ndarray, v: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    du, dv = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * du + (v - p[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return np.hypot(u - p[0] - t * du, v - p[1] - t * dv)


def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float,
            angle: float = 0.0) -> np.ndarray:
    """(u, v) inside the ellipse centred at (cu, cv) with radii (ru, rv) turned by ``angle``."""
    c, s = math.cos(angle), math.sin(angle)
    a, b = (u - cu) * c + (v - cv) * s, -(u - cu) * s + (v - cv) * c
    return (a / ru) ** 2 + (b / rv) ** 2 < 1.0


def bell(h: float, centre: float, half: float) -> float:
    """1 at ``centre``, 0 beyond ``half`` from it (a parabola)."""
    return float(np.clip(1.0 - ((h - centre) / half) ** 2, 0.0, 1.0))


def _brain(head: Head, sec: Section, f: np.ndarray, grad: np.ndarray) -> None:
    brain = sec.dd >= 0
    near = np.abs(f) / np.maximum(grad, np.float32(0.02))            # mm to the nearest zero line
    kx, ky, phase, _ = head.shading[0]
    depth = head.sulcus_depth_mm * (0.6 + 0.4 * np.cos(kx * sec.x + ky * sec.y + phase))
    width = 0.8 + 2.2 * head.atrophy
    cortex = head.cortex_mm
    grey = (sec.dd < cortex) | ((near < width / 2 + cortex) & (sec.dd < depth + cortex))
    csf = (near < width / 2) & (sec.dd < depth)
    mid = head.midline_mm / sec.brain_mm
    u, v, h = sec.u - np.float32(mid), sec.v, sec.h
    syl = bell(h, -0.1, 0.3)
    if syl > 0:
        for side, angle in zip((-1.0, 1.0), head.sylvian):
            start = (side * math.sin(angle), -math.cos(angle))
            d = _segment_distance(sec.u, v, start, (side * 0.55, -0.05)) * sec.brain_mm
            csf |= d < (1.0 + 1.5 * head.atrophy) * syl
            grey |= d < (1.0 + 1.5 * head.atrophy + cortex + 0.5) * syl
    deep = _deep_grey(u, v, h)
    ventricles = _ventricles(head, u, v, h)
    fissure = (np.abs(sec.x - np.float32(head.midline_mm)) < (0.6 + 1.2 * head.atrophy)) & ~_central(u, v, h)
    tissue = sec.tissue
    tissue[brain & grey] = GM
    tissue[brain & deep] = DEEP
    tissue[brain & (csf | ventricles | fissure)] = CSF
    hu = sec.hu
    shade = np.zeros(hu.shape, np.float32)
    for kx, ky, phase, amp in head.shading:
        shade += np.float32(amp) * np.cos(np.float32(kx) * sec.x + np.float32(ky) * sec.y + np.float32(phase))
    hu[tissue == WM] = head.wm_hu
    hu[tissue == GM] = head.gm_hu
    hu[tissue == DEEP] = head.gm_hu - 2.0
    hu[tissue == CSF] = head.csf_hu
    hu += np.where(tissue >= GM, shade, np.float32(0.0))
    falx = brain & (np.abs(sec.x - np.float32(head.midline_mm)) < 0.45) & ~_central(u, v, h)
    hu[falx] = 55.0
    tent = bell(h, -0.45, 0.2)
    if tent > 0:                                                    # the tentorium: a V open backwards
        d = np.minimum(_segment_distance(u, v, (-0.55, 0.55), (0.0, 0.2)),
                       _segment_distance(u, v, (0.55, 0.55), (0.0, 0.2))) * sec.brain_mm
        hu[brain & (d < 0.8)] = 50.0 * tent + head.wm_hu * (1 - tent)


def _central(u: np.ndarray, v: np.ndarray, h: float) -> np.ndarray:
    """Where the falx stops: the corpus callosum and the deep midline, at mid heights."""
    reach = 0.42 * math.sqrt(bell(h, 0.05, 0.5))
    return np.abs(v - 0.03) < reach


def _deep_grey(u: np.ndarray, v: np.ndarray, h: float) -> np.ndarray:
    out = np.zeros(u.shape, bool)
    g, t = bell(h, -0.05, 0.28), bell(h, -0.12, 0.2)
    for side in (-1.0, 1.0):
        if g > 0.1:
            out |= ellipse(u, v, side * 0.15, -0.2, 0.06 * g, 0.09 * g)                 # caudate head
            out |= ellipse(u, v, side * 0.33, -0.02, 0.075 * g, 0.19 * g, side * 0.25)   # lentiform
        if t > 0.1:
            out |= ellipse(u, v, side * 0.1, 0.16, 0.075 * t, 0.1 * t)                  # thalamus
    return out


def _ventricles(head: Head, u: np.ndarray, v: np.ndarray, h: float) -> np.ndarray:
    out = np.zeros(u.shape, bool)
    vf = bell(h, 0.12, 0.4)
    grow = 1.0 + 1.3 * head.atrophy
    if vf > 0.05:
        reach = 0.32 * math.sqrt(vf)
        for side, size in zip((-1.0, 1.0), head.ventricles):
            centre = side * (0.07 + 0.05 * (v / 0.3) ** 2 + 0.03 * np.clip(v / 0.3, 0.0, 1.0))
            half = vf * size * grow * (0.022 + 0.025 * np.clip((v - 0.12) / 0.2, 0.0, 1.0)
                                       + 0.012 * np.clip((-0.15 - v) / 0.15, 0.0, 1.0))
            out |= (np.abs(u - centre) < half) & (v > -reach) & (v < reach * 1.1)
    third = bell(h, -0.15, 0.15)
    if third > 0.05:
        out |= (np.abs(u) < 0.012 * grow * third + 0.004) & (v > -0.02) & (v < 0.15)
    temporal = bell(h, -0.32, 0.12)
    if temporal > 0.05:
        for side, size in zip((-1.0, 1.0), head.ventricles):
            out |= ellipse(u, v, side * 0.5, 0.05, 0.02 * grow * size * temporal, 0.07 * temporal, side * 0.5)
    fourth = bell(h, -0.55, 0.15)
    if fourth > 0.05:
        out |= ellipse(u, v, 0.0, 0.45, 0.06 * fourth, 0.035 * fourth)
    return out


def _skull_base(head: Head, sec: Section) -> None:
    """Bone cut partly by the slice near the skull base: petrous ridges and sphenoid wings."""
    part = float(np.clip((-0.3 - sec.h) / 0.25, 0.0, 1.0))
    if part <= 0:
        return
    u, v = sec.u, sec.v
    width = 1.0 + 3.0 * part                                       # mm: more of the bone in deeper slices
    bone = np.zeros(u.shape, np.float32)
    for side in (-1.0, 1.0):
        for p, q in (((side * 0.85, 0.45), (side * 0.25, 0.12)),    # petrous ridge
                     ((side * 0.8, -0.2), (side * 0.3, -0.3))):      # sphenoid wing
            d = _segment_distance(u, v, p, q) * sec.brain_mm
            bone = np.maximum(bone, np.clip((width - d) / 2.0, 0.0, 1.0))
    inside = sec.dd >= -head.csf_mm
    value = 150.0 + 800.0 * part
    sec.hu[:] = np.where(inside, sec.hu + bone * (np.float32(value) - sec.hu), sec.hu)
    sec.tissue[inside & (bone > 0.5)] = BONE
