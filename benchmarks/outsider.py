"""Outsider: a third synthetic brain-CT family, for checking FlexUNet's ``plan`` rules.

Written apart from ``flexunet.synthetic`` and the project's generalisation benchmark (none of their
code or documents were read), so that data made another way can confirm rules tuned on the project's
own families; needs numpy, scipy and pillow only. It models axial non-contrast head CT, each patient a
stack of consecutive slices from skull base to vertex with its own head shape, pose, atrophy, lesions
and scanner. Anatomy: scalp, skull, skull-base bone, radial sulci lined by grey matter, white matter,
deep nuclei, ventricles changing with height, fissures, cisterns. Ischemic (label 1): territory wedges
and lacunes 3-12 HU below white matter, soft edges. Hemorrhagic (label 2): clots, subdural crescents,
subarachnoid and intraventricular blood. Unlabelled look-alikes: old infarcts, white-matter hypodensity,
beam hardening, falx, sinus, calcifications, dense MCA, bone. Scanner: blur, correlated noise, gain,
offset, cupping; ``sharp`` is sharper, noisier and 3-6 HU up, ``soft`` blurrier, quieter and 3-6 HU
down; a seed gives the same patients whatever the scanner. Images: brain window (centre 36, width 80
HU); masks: class indices 0, 1, 2.

Usage: python benchmarks/outsider.py OUT --seed S [--count 240] [--size 128] [--scanner standard|sharp|soft] [--flat]
"""

import argparse
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

WINDOW_CENTRE, WINDOW_WIDTH = 36.0, 80.0
# scanner kind: blur factor, noise factor, extra calibration offset range (HU)
SCANNERS = {"standard": (1.0, 1.0, (0.0, 0.0)), "sharp": (0.55, 1.6, (3.0, 6.0)), "soft": (1.7, 0.55, (-6.0, -3.0))}
# heights (0 skull base .. 1 vertex) where each lesion kind can sit, and how often each kind is drawn
ISCHEMIC_Z = {"mca": (0.22, 0.7), "aca": (0.45, 0.9), "pca": (0.18, 0.5), "lacune": (0.28, 0.75)}
BLEED_Z = {"ganglia": (0.3, 0.55), "thalamus": (0.3, 0.5), "lobar": (0.3, 0.85), "cerebellar": (0.05, 0.22),
           "sdh": (0.1, 0.95), "sah": (0.15, 0.9), "ivh": (0.32, 0.65)}
BLEED_ODDS = {"ganglia": .17, "thalamus": .08, "lobar": .17, "cerebellar": .05, "sdh": .25, "sah": .15, "ivh": .13}


def ramp(sd, edge):
    """Soft indicator of a signed distance (positive inside), 0.5 on the boundary."""
    return np.clip(0.5 + sd / edge, 0.0, 1.0)


def paint(hu, w, value):
    return hu + w * (value - hu)


def bump(z, zc, zh):
    """Cross-section factor, at height z, of a body centred at zc with half-height zh."""
    return float(np.sqrt(max(0.0, 1.0 - ((z - zc) / zh) ** 2)))


def angdiff(a, b):
    return np.angle(np.exp(1j * (a - b)))


def capsule(x, y, p0, p1, r, r1=None):
    """Signed distance to a segment from p0 to p1 whose radius goes from r to r1 (positive inside)."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return r + t * ((r if r1 is None else r1) - r) - np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def ellipse(x, y, c, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (positive inside)."""
    return (1.0 - np.hypot((x - c[0]) / rx, (y - c[1]) / ry)) * min(rx, ry) if min(rx, ry) > 0 else -np.ones_like(x)


def wobble(rng, kmax, amp):
    """Random Fourier series over harmonics 2..kmax, a function of an angle."""
    ks = np.arange(2, kmax + 1)
    a, ph = rng.normal(0.0, amp, ks.size) / np.sqrt(ks), rng.uniform(0, 2 * np.pi, ks.size)
    return lambda t: sum(ai * np.cos(k * t + p) for ai, k, p in zip(a, ks, ph))


def smooth_noise(rng, shape, sigma, mode="reflect"):
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode=mode)
    return f / (f.std() + 1e-9)


def pick(rng, table, odds, zs):
    """A lesion kind whose height range meets the slice stack, and a centre height in both."""
    kinds = [k for k in odds if table[k][0] < zs[-1] and table[k][1] > zs[0]]
    if not kinds:
        return None, None
    kind = kinds[rng.choice(len(kinds), p=np.array([odds[k] for k in kinds]) / sum(odds[k] for k in kinds))]
    return kind, rng.uniform(max(zs[0], table[kind][0]), min(zs[-1], table[kind][1]))


def ischemic(rng, kind, zc, wm):
    s = int(rng.choice([-1, 1]))
    L = NS(kind=kind, side=s, zc=zc, target=wm - (3 + 9 * rng.beta(1.6, 1.2)), blur=rng.uniform(1.0, 2.4),
           rough=wobble(rng, 7, 0.25), label=1)
    if kind == "lacune":
        L.shape, L.r, L.zh = "blob", rng.uniform(0.035, 0.075), rng.uniform(0.04, 0.09)
        L.c = (s * rng.uniform(0.1, 0.32), rng.uniform(-0.25, 0.25))
        L.target, L.blur = wm - rng.uniform(6, 12), rng.uniform(0.6, 1.2)
        return L
    L.shape, L.zh, L.mid = "wedge", rng.uniform(0.1, 0.25), kind != "mca"
    # centre angle (rad), half-width range (rad), deepest reach range (fraction of the head radius)
    tc, hw, q_in = {"mca": ((0 if s > 0 else np.pi) + rng.uniform(-0.3, 0.3), (0.3, 0.75), (0.15, 0.5)),
                    "aca": (-np.pi / 2 + s * 0.3, (0.2, 0.35), (0.35, 0.6)),
                    "pca": (np.pi / 2 - s * 0.35, (0.25, 0.4), (0.3, 0.5))}[kind]
    L.tc, L.hw, L.q_in = tc, rng.uniform(*hw), rng.uniform(*q_in)
    return L


def bleed(rng, kind, zc):
    s = int(rng.choice([-1, 1]))
    B = NS(kind=kind, side=s, zc=zc, hu=rng.uniform(55, 88), rough=wobble(rng, 6, 0.25), push=0.0, shape=kind,
           blur=0.5, zh=rng.uniform(0.15, 0.35))
    if kind in ("ganglia", "thalamus", "lobar", "cerebellar"):
        t, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.55) * np.sqrt(1 - ((zc - 0.42) / 0.8) ** 2)
        B.c = {"ganglia": (s * rng.uniform(0.2, 0.32), rng.uniform(-0.15, 0.05)),
               "thalamus": (s * rng.uniform(0.08, 0.16), rng.uniform(0.05, 0.18)),
               "lobar": (rr * np.cos(t), rr * np.sin(t)),
               "cerebellar": (s * rng.uniform(0.15, 0.35), rng.uniform(0.45, 0.6))}[kind]
        B.shape, B.r = "blob", rng.uniform(0.05, 0.14 if kind in ("thalamus", "cerebellar") else 0.22)
        B.zh, B.push = max(0.06, B.r * rng.uniform(0.6, 1.2)), max(0.0, B.r - 0.1) * 0.6
        B.edema, B.edema_hu = rng.uniform(0.015, 0.05), rng.uniform(3, 8)
    elif kind == "sdh":
        B.tc, B.hw, B.T = (0 if s > 0 else np.pi) + rng.uniform(-.9, .9), rng.uniform(.5, 1.2), rng.uniform(.03, .1)
        B.zh, B.hu, B.mixed, B.push = rng.uniform(0.2, 0.45), rng.uniform(50, 80), rng.random() < 0.3, 0.9 * B.T
    elif kind == "sah":
        B.hu, B.tc = rng.uniform(45, 70), rng.uniform(0, 2 * np.pi)
        B.region = rng.choice(["basal", "sylvian"] if zc < 0.4 else ["sylvian", "interhemispheric", "convexity"]
                              if zc < 0.55 else ["interhemispheric", "convexity"])
    else:
        B.level, B.hu = rng.uniform(-0.2, 0.35), rng.uniform(50, 75)
    return B


def draw_patient(rng, n):
    a = rng.beta(2, 3)  # atrophy
    p = NS(cx=0.5 + rng.uniform(-0.06, 0.06), cy=0.5 + rng.uniform(-0.05, 0.05), scale=rng.uniform(0.36, 0.44),
           rot=rng.uniform(-0.2, 0.2), aspect=rng.uniform(0.74, 0.86), outline=wobble(rng, 5, 0.02),
           skull_var=wobble(rng, 4, 0.15), scalp=rng.uniform(0.05, 0.08), skull=rng.uniform(0.045, 0.07),
           bone=rng.uniform(900, 1500), soft=rng.uniform(25, 45), atrophy=a, gap=0.006 + 0.03 * a,
           gm=rng.uniform(36, 42), csf=rng.uniform(2, 9), tex=rng.uniform(0.7, 1.5), ctx=rng.uniform(0.03, 0.045),
           sulc_w=0.35 + 0.5 * a, sulc_depth=rng.uniform(0.13, 0.2) + 0.05 * a, fiss_w=0.01 + 0.025 * a,
           vent=(0.6 + 1.4 * a) * rng.uniform(0.8, 1.2, 2), rim=rng.uniform(0, 4), bh=-rng.uniform(8, 25),
           dz=rng.uniform(0.05, 0.08), isch=[], bleed=[], old=[])
    p.wm = p.gm - rng.uniform(6, 11)
    p.z = rng.uniform(0.03, max(0.04, 0.95 - p.dz * (n - 1))) + p.dz * np.arange(n)
    for _ in range(rng.choice(4, p=[0.5, 0.35, 0.125, 0.025])):  # half the patients have ischemia
        kind, zc = pick(rng, ISCHEMIC_Z, {"mca": 0.35, "aca": 0.12, "pca": 0.18, "lacune": 0.35}, p.z)
        if kind:
            p.isch.append(ischemic(rng, kind, zc, p.wm))
    for _ in range(rng.choice(3, p=[0.58, 0.336, 0.084])):  # 42 % of patients bleed, independently of ischemia
        kind, zc = pick(rng, BLEED_Z, BLEED_ODDS, p.z)
        if kind:
            p.bleed.append(bleed(rng, kind, zc))
            if kind in ("ganglia", "thalamus") and rng.random() < 0.3 and p.z[0] < 0.6:
                p.bleed.append(bleed(rng, "ivh", np.clip(zc + 0.1, 0.35, 0.6)))
    if rng.random() < 0.2:  # old infarct: CSF-like, sharply bounded, not labelled
        kind, zc = pick(rng, ISCHEMIC_Z, {"mca": 0.4, "pca": 0.2, "lacune": 0.4}, p.z)
        if kind:
            p.old.append(NS(**{**vars(ischemic(rng, kind, zc, p.wm)), "target": p.csf + rng.uniform(3, 10),
                               "blur": 0.5, "label": 0}))
    looks = [(0.15 + 0.5 * a, 3, 8), (0.6, 120, 400), (0.5, 90, 200), (0.12, 80, 160), (0.15, 100, 200)]  # odds, HU
    p.leuko, p.pineal, p.choroid, p.bgcalc, p.falx = [rng.uniform(lo, hi) * (rng.random() < o) for o, lo, hi in looks]
    p.falx, p.sinus = p.falx or rng.uniform(55, 90), rng.uniform(50, 65)
    p.dense_mca = int(rng.choice([-1, 1])) if rng.random() < (0.35 if p.isch else 0.1) else 0
    return p


def lesion_weight(L, g, z):
    """Soft weight of a wedge or blob lesion on this slice, or None where it is absent."""
    b = bump(z, L.zc, L.zh)
    if b == 0.0:
        return None
    if L.shape == "blob":  # outline: radius wobbling with the angle round the centre
        dx, dy = g.um - L.c[0], g.vn - L.c[1]
        sd = L.r * b * (1 + L.rough(np.arctan2(dy, dx))) - np.hypot(dx, dy)
    else:
        hw, q_in = L.hw * b * (1 + L.rough(g.q * 9.0)), L.q_in * (1 + L.rough(3 * g.theta))
        sd = np.minimum(np.minimum((hw - np.abs(angdiff(g.theta, L.tc))) * g.q, g.q - q_in), g.d + g.e)
        sd = np.minimum(sd, L.side * g.um) if L.mid else sd  # ACA and PCA stay in their hemisphere
    return ndi.gaussian_filter(ramp(sd + 0.015 * g.noise, g.e), L.blur * g.k)


def ventricles(p, um, vn, z):
    """Signed distance to the ventricles: tapered capsules, each present over a height band."""
    parts = []  # start, end, radius at start and end, centre height, half-height
    for f, s in zip(p.vent, (-1, 1)):
        parts += [((s * 0.05, -0.08), (s * 0.14, -0.34), 0.03 * f, 0.045 * f, 0.46, 0.15),  # frontal horn
                  ((s * 0.1, -0.1), (s * 0.15, 0.22), 0.035 * f, 0.04 * f, 0.58, 0.13),     # body
                  ((s * 0.16, 0.15), (s * 0.22, 0.48), 0.055 * f, 0.02 * f, 0.42, 0.12),    # atrium, occipital horn
                  ((s * 0.42, -0.05), (s * 0.36, 0.12), 0.015 * f, 0.015 * f, 0.3, 0.08)]   # temporal horn
    f = p.vent.mean()  # third and fourth ventricles
    parts += [((0, -0.1), (0, 0.1), 0.018 * f, 0.018 * f, 0.36, 0.08),
              ((0, 0.38), (0, 0.44), 0.035 * f, 0.02 * f, 0.15, 0.08)]
    sds = [capsule(um, vn, p0, p1, r0 * bump(z, zc, zh), r1 * bump(z, zc, zh))
           for p0, p1, r0, r1, zc, zh in parts if bump(z, zc, zh) > 0]
    return np.maximum.reduce(sds + [np.full(um.shape, -1.0)])


def render(p, z, rng, size):
    """Hounsfield image and label mask of one slice at height z."""
    k, shape = size / 128.0, (size, size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    X, Y = (xx / size - p.cx) / p.scale, (yy / size - p.cy) / p.scale
    un, vn = (np.cos(p.rot) * X + np.sin(p.rot) * Y) / p.aspect, -np.sin(p.rot) * X + np.cos(p.rot) * Y
    zs, theta = np.sqrt(np.clip(1 - ((z - 0.42) / 0.8) ** 2, 0.2, 1)), np.arctan2(vn, un)
    q, e = np.hypot(un, vn) / (zs * (1 + p.outline(theta))), 1.0 / (p.scale * size)  # e: one pixel
    shift = np.clip(sum(-B.side * B.push * bump(z, B.zc, 1.5 * B.zh) for B in p.bleed), -0.1, 0.1)
    um = un - shift * np.exp(-(vn / 0.6) ** 2)  # midline shift by mass effect
    base = float(np.clip((0.26 - z) / 0.1, 0, 1))  # skull-base bone strength
    skull_t = p.skull * (1 + 0.4 * np.sin(theta) ** 2 + p.skull_var(theta)) \
        * (1 + 1.2 * max(0.0, 0.25 - z) / 0.25 + 1.5 * max(0.0, z - 0.8) / 0.2)
    q_so, q_si = 1 - p.scalp, 1 - p.scalp - skull_t  # outer and inner table
    sdh = {id(B): B.T * bump(z, B.zc, B.zh) * np.cos(np.pi / 2 * np.clip(angdiff(theta, B.tc) / B.hw, -1, 1)) ** 0.6
           for B in p.bleed if B.kind == "sdh"}
    d = q_si - p.gap - np.maximum.reduce([*sdh.values(), 0 * q]) - q  # depth below the brain surface
    g = NS(um=um, vn=vn, q=q, theta=theta, d=d, e=e, k=k, noise=smooth_noise(rng, shape, 3 * k))
    hu = paint(np.full(shape, -1000.0), ramp(1 - q, e), p.soft)
    hu = paint(hu, ramp(np.minimum(q - (1 - 0.6 * p.scalp), (1 - 0.4 * p.scalp) - q), e), -70.0)
    diploe = np.clip(1 - np.abs(q - (q_so + q_si) / 2) / (skull_t / 2), 0, 1)
    hu = paint(hu, ramp(q_so - q, e), p.bone * (1 - 0.5 * diploe))
    w_ic = ramp(q_si - q, e)  # intracranial
    hu, w_br = paint(hu, w_ic, p.csf), ramp(d, e) * w_ic
    # sulci: zero lines of a noise field smooth along depth and rough along the rim; grey matter lines them
    polar = smooth_noise(rng, (256, 40), (2.0, 9.0), mode="wrap")
    S = np.abs(ndi.map_coordinates(polar, [(theta % (2 * np.pi)) / (2 * np.pi) * 256, np.clip(d / 0.3 * 39, 0, 39)],
                                   order=1, mode="grid-wrap"))
    taper = np.clip(1 - d / p.sulc_depth, 0, 1)
    w_sul = ramp(p.sulc_w * taper ** 0.7 - 0.08 - S, 0.1) * w_br
    lining = np.sqrt(np.clip(1 - d / (p.sulc_depth + p.ctx), 0, 1))
    gmw = np.maximum(ramp(p.ctx - d, e), ramp((p.sulc_w + 0.5) * lining - 0.1 - S, 0.15))
    for s in (-1, 1):  # caudate, lentiform, thalamus
        for c, rx, ry, zc, zh in (((s * 0.16, -0.24), 0.06, 0.09, 0.45, 0.15),
                                  ((s * 0.3, -0.04), 0.07, 0.17, 0.38, 0.12), ((s * 0.1, 0.13), 0.08, 0.1, 0.38, 0.1)):
            gmw = np.maximum(gmw, 0.85 * ramp(ellipse(um, vn, c, rx * bump(z, zc, zh), ry * bump(z, zc, zh)), e))
    fossa = ramp(vn - 0.05 - 0.5 * (np.abs(un) - 0.12), e) * float(z < 0.26)  # cerebellum
    gmw = np.maximum(gmw, 0.7 * fossa) * (1 - ramp(ellipse(um, vn, (0, 0.12), 0.11, 0.1), e) * float(z < 0.38))
    par = p.wm + (p.gm - p.wm) * gmw + p.tex * smooth_noise(rng, shape, 1.2 * k)
    sd_v = ventricles(p, um, vn, z)
    if p.leuko:  # periventricular caps and deep white-matter patches (unlabelled)
        caps = ramp(sd_v + 0.07 * (1 + 0.5 * g.noise), 2 * e) * ramp(np.abs(vn) - 0.12, 0.05)
        patches = ramp(smooth_noise(rng, shape, 1.5 * k) - 1.6, 0.4) * ramp(d - 0.12, 0.05) * float(z > 0.5)
        par = paint(par, 0.9 * np.maximum(caps, patches), p.wm - p.leuko)
    isch, blood = np.zeros(shape), np.zeros(shape)  # label weights
    for L in p.isch + p.old:
        w = lesion_weight(L, g, z)
        if w is not None:
            par = paint(par, w, L.target + p.tex * g.noise * 0.5)
            isch = np.maximum(isch, w * L.label)
    hu = paint(hu, w_br, par)
    cc = ramp(0.38 * bump(z, 0.5, 0.16) - np.abs(vn + 0.02), 0.03)  # corpus callosum interrupts the fissure
    fiss = ramp(p.fiss_w + 0.02 * taper - np.abs(um), e) * (1 - cc) * w_ic
    sw = (0.01 + 0.02 * p.atrophy) * bump(z, 0.37, 0.13)
    sylv = sum(ramp(capsule(um, vn, (s * 0.42, -0.02), (s * 0.95, -0.12), sw, 2 * sw) + 0.005 * g.noise, e)
               for s in (-1, 1))
    cb, midbrain = bump(z, 0.3, 0.09), ramp(ellipse(um, vn, (0, 0.12), 0.11, 0.09), e)
    cist = np.maximum(ramp(ellipse(um, vn, (0, -0.1), 0.09 * cb, 0.07 * cb), e),
                      ramp(ellipse(um, vn, (0, 0.12), 0.15 * cb, 0.13 * cb), e) * (1 - midbrain))
    w_ext = np.maximum.reduce([w_sul * (1 - 0.8 * isch), fiss, np.minimum(sylv, 1), cist]) * w_ic
    w_v = ramp(sd_v, e) * w_ic
    w_csf = np.maximum(w_ext, w_v)
    hu = paint(hu, w_csf, p.csf)
    for B in p.bleed:
        b = bump(z, B.zc, B.zh)
        if b == 0.0:
            continue
        if B.kind == "sdh":
            w = ramp(np.minimum(q_si - q, q - q_si + sdh[id(B)]), e) * (sdh[id(B)] > 0.2 * e)
            val = B.hu - 25 * (g.noise > 0.6) if B.mixed else B.hu
        elif B.kind == "sah":
            region = {"sylvian": ramp(0.25 - np.hypot(um - B.side * 0.55, vn + 0.05), 0.05),
                      "interhemispheric": ramp(0.1 - np.abs(um), 0.03) * (vn < 0.1),
                      "convexity": ramp(0.5 - np.abs(angdiff(theta, B.tc)), 0.1) * ramp(0.2 - d, 0.05),
                      "basal": ramp(0.45 - np.hypot(um, vn), 0.05)}[B.region]
            w, val = w_ext * region * b, B.hu
        elif B.kind == "ivh":
            w, val = w_v * ramp(vn - B.level, 0.04), B.hu
        else:
            w = lesion_weight(B, g, z)
            ring = lesion_weight(NS(**{**vars(B), "r": B.r + B.edema}), g, z)
            hu = paint(hu, 0.8 * np.clip(ring - w, 0, 1) * w_br, p.wm - B.edema_hu)
            w, val = w * w_ic, B.hu + 3 * g.noise
        hu = paint(hu, w, val)
        blood = np.maximum(blood, w)
    # hyperdense look-alikes: falx, superior sagittal sinus, calcifications, dense MCA
    hu = paint(hu, 0.8 * ramp(0.7 * e - np.abs(um), e) * (1 - cc) * w_ic, p.falx)
    sinus = ramp(0.03 - np.abs(um), e) * ramp(0.05 - (q_si - q), e) * w_ic
    hu = paint(hu, sinus * (np.abs(np.abs(theta) - np.pi / 2) < 0.2), p.sinus)
    dots = [((0, 0.2), 0.022, 0.4, 0.06, p.pineal)] + [((s * 0.2, 0.33), 0.025, 0.45, 0.08, p.choroid) for s in (-1, 1)]
    for c, r, zc, zh, val in dots + [((s * 0.27, -0.05), 0.025, 0.38, 0.08, p.bgcalc) for s in (-1, 1)]:
        if val and bump(z, zc, zh) > 0:
            hu = paint(hu, ramp(ellipse(um, vn, c, r * bump(z, zc, zh), r * bump(z, zc, zh)), e), val)
    if p.dense_mca and bump(z, 0.26, 0.07) > 0:
        hu = paint(hu, ramp(capsule(um, vn, (p.dense_mca * .08, -.08), (p.dense_mca * .45, -.05), .015), e), 65.0)
    # skull base: bone with air cells and a beam-hardening bar; everywhere a dark rim under the inner table
    bone = np.zeros(shape)
    if base > 0:
        for s in (-1, 1):
            petrous = capsule(un, vn, (s * 0.1, 0.04), (s * 0.62, 0.34), 0.025 * base, 0.1 * base)
            wing = capsule(un, vn, (s * 0.1, -0.26), (s * 0.6, -0.16), 0.035 * base, 0.01)
            bone = np.maximum.reduce([bone, ramp(petrous + 0.015 * g.noise, e), ramp(wing + 0.01 * g.noise, e)])
        bone = np.maximum(bone, ramp(capsule(un, vn, (0, -0.02), (0, 0.12), 0.05 * base) + 0.01 * g.noise, e))
        bone = np.maximum(bone, ramp(-0.95 + 5 * max(0.0, 0.12 - z) - vn, e) * w_ic)
        air = (smooth_noise(rng, shape, 1.5 * k) > 0.8) & ((np.abs(un) > 0.4) | (vn < -0.5))
        hu = paint(hu, bone * w_ic, np.where(air, -800.0, p.bone * 0.9))
        hu += p.bh * base * ramp(0.05 - np.abs(vn - 0.24), 0.03) * ramp(0.45 - np.abs(un), 0.05) * w_ic
    hu -= p.rim * ramp(0.03 - d, e) * w_br

    lab = np.zeros(shape, np.uint8)
    lab[(isch > 0.5) & (w_br > 0.5) & (w_csf < 0.5) & (bone < 0.5)] = 1
    lab[(blood > 0.5) & (bone < 0.5)] = 2
    regions, n = ndi.label(lab > 0)
    lab[(np.bincount(regions.ravel(), minlength=n + 1) < 4)[regions]] = 0  # no specks under 4 px
    return hu, lab, q


def draw_scanner(rng, mode):
    blur_x, noise_x, (lo, hi) = SCANNERS[mode]
    return NS(psf=rng.uniform(0.45, 0.95) * blur_x, tex=rng.uniform(0.4, 0.9) * np.sqrt(blur_x),
              noise=rng.uniform(2.0, 4.0) * noise_x, gain=rng.uniform(0.97, 1.03),
              offset=rng.uniform(-2, 2) + rng.uniform(lo, hi), cup=rng.uniform(-3, 3))


def scan(hu, q, sc, rng, k):
    """Scanner blur, calibration, cupping and correlated noise, then the brain window."""
    hu = ndi.gaussian_filter(np.clip(hu, -1024, 2000), sc.psf * k)
    n = ndi.gaussian_filter(rng.standard_normal(hu.shape), sc.tex * k)
    hu = sc.gain * hu + sc.offset + sc.cup * np.clip(1 - q * q, 0, 1) + n * (sc.noise / n.std())
    return np.clip(np.round((hu - WINDOW_CENTRE + WINDOW_WIDTH / 2) * 255 / WINDOW_WIDTH), 0, 255).astype(np.uint8)


def plan_patients(seed, count, split):
    """Slices per patient (5-10, summing to count) and each patient's subset."""
    rng, counts = np.random.default_rng([seed, 0]), []
    while sum(counts) < count:
        counts.append(int(rng.integers(5, 11)))
    counts[-1] -= sum(counts) - count
    if counts[-1] < 3 and len(counts) > 1:  # too few for a patient: joins the one before
        last = counts.pop()
        counts[-1] += last
    subsets, done = [""] * len(counts), 0
    for pid in rng.permutation(len(counts)) if split else []:  # whole patients, about 70/15/15
        subsets[pid] = "train" if done < 0.70 * count else "valid" if done < 0.85 * count else "test"
        done += counts[pid]
    if split and "test" not in subsets and "valid" in subsets:  # tiny sets: a valid patient goes to test
        subsets[subsets.index("valid")] = "test"
    return counts, subsets


def generate(out, seed, count, size, scanner, split):
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    counts, subsets = plan_patients(seed, count, split)
    stats = []
    for pid, (n, subset) in enumerate(zip(counts, subsets)):
        p = draw_patient(np.random.default_rng([seed, pid + 1, 0]), n)
        sc = draw_scanner(np.random.default_rng([seed, pid + 1, 1]), scanner)
        r_anat, r_noise = np.random.default_rng([seed, pid + 1, 2]), np.random.default_rng([seed, pid + 1, 3])
        for dirname in ("images", "masks"):
            (out / subset / dirname).mkdir(parents=True, exist_ok=True)
        for i, z in enumerate(p.z):
            hu, lab, q = render(p, z, r_anat, size)
            name = f"p{pid:03d}_s{i:02d}.png"
            Image.fromarray(scan(hu, q, sc, r_noise, size / 128.0), mode="L").save(out / subset / "images" / name)
            Image.fromarray(lab, mode="L").save(out / subset / "masks" / name)
            stats.append((subset or "all", pid, {c: np.bincount(ndi.label(lab == c)[0].ravel())[1:] for c in (1, 2)}))
    return stats


def summarise(stats):
    lines = [f"{'subset':<6} {'slices':>6} {'patients':>8} {'ischemic':>9} {'hemorr.':>8} {'none':>6}  (of slices)"]
    for subset in [s for s in ("train", "valid", "test", "all") if s in {r[0] for r in stats}]:
        rows = [r for r in stats if r[0] == subset]
        has = np.array([[r[2][1].size > 0, r[2][2].size > 0] for r in rows])
        lines.append(f"{subset:<6} {len(rows):>6} {len({r[1] for r in rows}):>8} {has[:, 0].mean():>9.2f}"
                     f" {has[:, 1].mean():>8.2f} {(~has.any(1)).mean():>6.2f}")
    for c, name in ((1, "ischemic"), (2, "hemorrhagic")):
        regions, per_slice = [x for r in stats for x in r[2][c]], [r[2][c].sum() for r in stats if r[2][c].size]
        lines.append(f"{name}: {len(regions)} regions in {len(per_slice)} slices, median region "
                     f"{np.median(regions or [0]):.0f} px, median per slice {np.median(per_slice or [0]):.0f} px")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder (must be new or empty)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", "--patients-slices", dest="count", type=int, default=240, help="total slices")
    ap.add_argument("--size", type=int, default=128, help="image side in px")
    ap.add_argument("--scanner", choices=sorted(SCANNERS), default="standard")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--split", dest="split", action="store_true", default=True, help="train/valid/test (default)")
    mode.add_argument("--flat", dest="split", action="store_false", help="OUT/images and OUT/masks, no split")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(summarise(generate(args.out, args.seed, args.count, args.size, args.scanner, args.split)))
    print(f"{args.out}: seed {args.seed}, {args.size} px, scanner {args.scanner}, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
