"""Paired image/mask transforms: pure functions, no files; the pipeline and the offline stage use them.

Every geometric transform is a *coordinate map*: for each output pixel, where to read
in the source.  A transform (or a chain of them) builds ONE map, from ONE seeded random
field where it is random, and that map is applied to the image with bilinear sampling
and to the mask with nearest sampling only, so image and mask stay aligned and a mask
never gains a class.  (The original tool warped image and mask with two different,
unseeded random fields, and resampled colour masks bilinearly.)  Intensity transforms
(sharpen, brighten, vary_intensity) change the image only.

1. transforms on ``(image (H, W[, C]) uint8, mask (H, W) class indices)`` pairs:
   :func:`hflip`, :func:`vflip`, :func:`rotate`, :func:`shrink`, :func:`shear`,
   :func:`elastic`, :func:`grid_distort`, :func:`barrel_distort`, :func:`sharpen`,
   :func:`brighten`; :func:`vary_intensity` (image only, online);
2. online augmentation: :func:`random_augment` draws a random subset of the ``[augmentor]``
   transforms for generator-mode training (``flexunet.preprocessing.pipeline``); the offline stage that writes
   named variants to disk is :mod:`flexunet.dataset.augment`.

Displacements are in pixels, as in the original (``alpha = 1300, sigmoid = 8`` were
chosen for 512 x 512 slices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from flexunet.config.loader import Config
from flexunet.dataset.paste import paste_lesion
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

Pair = tuple[np.ndarray, np.ndarray]

# --------------------------------------------------------------------------- coordinate maps


@dataclass(frozen=True)
class _Step:
    """One geometric step: output coordinates -> source coordinates.

    ``fill``: sources outside the frame take the fill value (image background, mask 0);
    otherwise they take the nearest edge pixel (deformations, which should not open holes).
    """

    fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    fill: bool = True


def _compose(shape: tuple[int, int], steps: Sequence[_Step]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows, cols (clamped to the frame) and validity of steps applied in order."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    valid = np.ones((h, w), bool)
    # image_k(p) = image_{k-1}(step_k(p)): walk from the last step back to the source
    for step in reversed(steps):
        rows, cols = step.fn(rows, cols)
        if step.fill:
            valid &= (rows >= -0.5) & (rows <= h - 0.5) & (cols >= -0.5) & (cols <= w - 0.5)
        rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    return rows, cols, valid


def _background(image: np.ndarray) -> np.ndarray:
    """Per-channel median of the outermost pixel ring: the fill for uncovered image areas."""
    ring = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return np.median(ring.reshape(-1, image.shape[-1]), axis=0)


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim not in (2, 3) or mask.ndim != 2 or image.shape[:2] != mask.shape:
        raise ValueError(f"expected image (H, W[, C]) and mask (H, W) of the same size, "
                         f"got image {image.shape} and mask {mask.shape}")


def _warp(image: np.ndarray, mask: np.ndarray, steps: Sequence[_Step], blur: float = 0.0) -> Pair:
    """Apply the composed map: image bilinear (after an optional blur), mask nearest."""
    _check_pair(image, mask)
    img = image.astype(np.float64).reshape(image.shape[:2] + (-1,))
    if not steps and not blur:
        return image.copy(), mask.copy()
    fill = _background(img)
    if blur:
        img = ndimage.gaussian_filter(img, sigma=(blur, blur, 0))
    rows, cols, valid = _compose(mask.shape, steps)
    coords = np.stack([rows, cols])
    out = np.stack([ndimage.map_coordinates(img[..., ch], coords, order=1, mode="nearest")
                    for ch in range(img.shape[-1])], axis=-1)
    out[~valid] = fill
    # nearest: the rounded coordinate is one of the four pixels the bilinear sample mixes
    out_mask = mask[np.rint(rows).astype(np.intp), np.rint(cols).astype(np.intp)]
    out_mask[~valid] = 0
    return _to_dtype(out.reshape(image.shape), image.dtype), out_mask


def _centre(shape: tuple[int, int]) -> tuple[float, float]:
    return (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0


def _hflip_step(shape: tuple[int, int]) -> _Step:
    w = shape[1]
    return _Step(lambda r, c: (r, (w - 1) - c))


def _vflip_step(shape: tuple[int, int]) -> _Step:
    h = shape[0]
    return _Step(lambda r, c: ((h - 1) - r, c))


def _rotate_step(shape: tuple[int, int], angle: float) -> _Step:
    """Counter-clockwise on screen (as cv2.getRotationMatrix2D) about the image centre."""
    cy, cx = _centre(shape)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def fn(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = r - cy, c - cx
        return sin * dx + cos * dy + cy, cos * dx - sin * dy + cx

    return _Step(fn)


def _shrink_step(shape: tuple[int, int], factor: float) -> _Step:
    cy, cx = _centre(shape)
    return _Step(lambda r, c: (cy + (r - cy) / factor, cx + (c - cx) / factor))


def _shear_step(shape: tuple[int, int], factor: float) -> _Step:
    """The original's centred vertical shear: a column at x moves by factor * (x - centre)."""
    cx = _centre(shape)[1]
    return _Step(lambda r, c: (r - factor * (c - cx), c))


def _field_step(dr: np.ndarray, dc: np.ndarray, sign: float) -> _Step:
    """source = p + sign * displacement(p); the field is interpolated between pixels."""

    def fn(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.stack([r, c])
        return (r + sign * ndimage.map_coordinates(dr, coords, order=1, mode="nearest"),
                c + sign * ndimage.map_coordinates(dc, coords, order=1, mode="nearest"))

    return _Step(fn, fill=False)


def _elastic_step(shape: tuple[int, int], alpha: float, sigma: float, rng: np.random.Generator) -> _Step:
    """Simard et al. 2003: uniform noise smoothed by a Gaussian (sigma px), scaled by alpha px."""
    dr = ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, shape), sigma, mode="constant", cval=0.0) * alpha
    dc = ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, shape), sigma, mode="constant", cval=0.0) * alpha
    return _field_step(dr, dc, +1.0)


def _grid_step(shape: tuple[int, int], amount: float, rsigma: float, rng: np.random.Generator) -> _Step:
    """The original's distortion: gradient of Gaussian-smoothed (rsigma px) normal noise,
    each component scaled to a largest displacement of ``amount * max(H, W)`` pixels.

    The field is so smooth that it is computed on a grid ``rsigma / 4`` times coarser and
    interpolated; its scale is normalised away, so only its shape matters.
    """
    h, w = shape
    step = max(1, int(rsigma // 4))
    coarse = (-(-h // step) + 1, -(-w // step) + 1)
    noise = rng.standard_normal(coarse)
    reach = amount * max(h, w)
    fields = []
    for order in ((1, 0), (0, 1)):
        f = ndimage.gaussian_filter(noise, rsigma / step, order=order)
        rows, cols = np.mgrid[0:h, 0:w] / step
        f = ndimage.map_coordinates(f, np.stack([rows, cols]), order=1, mode="nearest")
        peak = float(np.abs(f).max())
        fields.append(f * (reach / peak) if peak > 0 else f)
    return _field_step(fields[0], fields[1], -1.0)


def _radial_step(shape: tuple[int, int], radius: float, amount: float,
                 center: tuple[float, float]) -> _Step:
    """Inside a disc of ``radius * W`` px around ``center`` (relative x, y), a pixel at
    distance d reads at distance d * sin(pi d / 2R) ** amount: amount > 0 magnifies the
    middle (barrel), amount < 0 pinches it (pincushion).  Continuous at the rim."""
    h, w = shape
    cx, cy = center[0] * (w - 1), center[1] * (h - 1)
    big_r = radius * w

    def fn(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = r - cy, c - cx
        d = np.hypot(dx, dy)
        inside = (d > 0) & (d < big_r)
        factor = np.ones_like(d)
        factor[inside] = np.sin(np.pi * d[inside] / big_r / 2.0) ** amount
        return cy + factor * dy, cx + factor * dx

    return _Step(fn)


# --------------------------------------------------------------------------- transforms


def hflip(image: np.ndarray, mask: np.ndarray) -> Pair:
    """Mirror left-right."""
    return _warp(image, mask, [_hflip_step(mask.shape)])


def vflip(image: np.ndarray, mask: np.ndarray) -> Pair:
    """Mirror top-bottom."""
    return _warp(image, mask, [_vflip_step(mask.shape)])


def rotate(image: np.ndarray, mask: np.ndarray, angle: float) -> Pair:
    """Rotate ``angle`` degrees counter-clockwise about the centre; size kept, corners
    filled with the image's border background and mask class 0."""
    return _warp(image, mask, [_rotate_step(mask.shape, angle)])


def shrink(image: np.ndarray, mask: np.ndarray, factor: float) -> Pair:
    """Scale by ``factor`` about the centre (< 1 shrinks and pads, > 1 zooms in)."""
    return _warp(image, mask, [_shrink_step(mask.shape, factor)])


def shear(image: np.ndarray, mask: np.ndarray, factor: float) -> Pair:
    """Vertical shear about the centre column (the original's shear)."""
    return _warp(image, mask, [_shear_step(mask.shape, factor)])


def elastic(image: np.ndarray, mask: np.ndarray, alpha: float, sigma: float,
            rng: np.random.Generator) -> Pair:
    """Elastic deformation ([deformation] alpha, sigmoid): one field for image and mask."""
    return _warp(image, mask, [_elastic_step(mask.shape, alpha, sigma, rng)])


def grid_distort(image: np.ndarray, mask: np.ndarray, amount: float, rsigma: float, sigma: float,
                 rng: np.random.Generator) -> Pair:
    """Smooth random distortion of relative strength ``amount`` ([distortion]
    distortions, gaussian_filter_rsigma); the image is also smoothed by ``sigma`` px
    (gaussian_filter_sigma), the mask never."""
    return _warp(image, mask, [_grid_step(mask.shape, amount, rsigma, rng)], blur=sigma)


def barrel_distort(image: np.ndarray, mask: np.ndarray, radius: float, amount: float,
                   center: tuple[float, float] | Sequence[tuple[float, float]] = (0.5, 0.5)) -> Pair:
    """Barrel (amount > 0) or pincushion (amount < 0) distortion about ``center``.

    A sequence of centres applies one after the other (as the original's numbered
    outputs did), still as one composed map sampled once.
    """
    centres = [center] if np.ndim(center) == 1 else list(center)
    return _warp(image, mask, [_radial_step(mask.shape, radius, amount, tuple(c)) for c in centres])


def _sharpened(image: np.ndarray, k: float) -> np.ndarray:
    """The original's 3x3 kernel (-k around, 1 + 8k centre): x + 9k (x - local mean)."""
    img = image.astype(np.float64)
    size = (3, 3) + (1,) * (img.ndim - 2)
    local_sum = ndimage.uniform_filter(img, size=size, mode="mirror") * 9.0
    return _to_dtype(img + k * (9.0 * img - local_sum), image.dtype)


def sharpen(image: np.ndarray, mask: np.ndarray, k: float) -> Pair:
    """Unsharp mask of strength ``k`` on the image; the mask is returned unchanged."""
    _check_pair(image, mask)
    return _sharpened(image, k), mask


def brighten(image: np.ndarray, mask: np.ndarray, alpha: float, beta: float) -> Pair:
    """``alpha * x + beta`` clipped to 0..255 on the image; the mask is returned unchanged."""
    _check_pair(image, mask)
    out = np.clip(image.astype(np.float64) * alpha + beta, 0, 255)
    return _to_dtype(out, image.dtype), mask


def vary_intensity(image: np.ndarray, gain: float, offset: float, noise: float,
                   rng: np.random.Generator, kernel: float = 0.0, gamma: float = 0.0,
                   lowres: float = 0.0) -> np.ndarray:
    """A random scanner look: resolution, reconstruction kernel, contrast gain, gamma, brightness shift, noise.

    The largest change of each is given; the draws are uniform (noise: its standard deviation).
    ``kernel`` k: an amount drawn from -k .. k; below 0 the slice is blurred toward a Gaussian of sigma
    1 px (a soft kernel, thicker slices), above 0 sharpened by the same unsharp mask (a sharp kernel).
    ``gamma`` g: a gamma drawn from 1/(1+g) .. 1+g on the grey levels within the body.  ``lowres`` r:
    in half the draws the slice is shrunk to a zoom drawn from 1-r .. 1 by nearest neighbour and
    enlarged back by linear interpolation (nnU-Net's simulated low resolution, which enlarges by cubic
    interpolation: linear never rings brighter than the slice): a coarser scan's lost detail, small
    lesions' contrast spread thin.  Black
    pixels (outside the body of a windowed CT slice) stay black; the noise is the same in every
    channel, so a grey image stays grey.  Online augmentation: the network cannot take one scanner's
    or one patient's grey levels or sharpness for a class, only contrasts within the image.  A knob
    at 0 draws nothing, so configs without it see the same random stream.
    """
    img = image.astype(np.float64).reshape(image.shape[:2] + (-1,))      # (H, W, C), C = 1 for a 2-D image
    body = img.max(axis=-1, keepdims=True) > 0
    if lowres > 0 and rng.random() < 0.5:
        zoom = rng.uniform(1.0 - lowres, 1.0)
        small = ndimage.zoom(img, (zoom, zoom, 1), order=0)
        img = np.clip(ndimage.zoom(small, (img.shape[0] / small.shape[0], img.shape[1] / small.shape[1], 1),
                                   order=1), 0, 255)
    if kernel > 0:
        amount = rng.uniform(-kernel, kernel)
        smooth = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0))
        img = np.clip(img + amount * (img - smooth), 0, 255)
    g = rng.uniform(1.0 - gain, 1.0 + gain)
    b = rng.uniform(-offset, offset)
    sd = rng.uniform(0.0, noise)
    centre = float(img[body[..., 0]].mean()) if body.any() else 0.0
    grain = rng.standard_normal(body.shape) * sd
    scaled = (img - centre) * g + centre
    if gamma > 0:
        power = math.exp(rng.uniform(-math.log1p(gamma), math.log1p(gamma)))
        scaled = 255.0 * (np.clip(scaled, 0, 255) / 255.0) ** power
    out = np.where(body, np.clip(scaled + b + grain, 0, 255), image.astype(np.float64).reshape(img.shape))
    return _to_dtype(out.reshape(image.shape), image.dtype)


# --------------------------------------------------------------------------- online


def random_augment(image: np.ndarray, mask: np.ndarray, cfg: Config, rng: np.random.Generator,
                   p: float = 0.5) -> Pair:
    """A random subset of the enabled transforms, each with probability ``p``.

    A lesion copy-paste (``[augmentor] lesion_paste``, :mod:`flexunet.dataset.paste`) comes first.
    The geometric ones are composed into one map (one bilinear resampling of the image,
    one nearest of the mask); sharpen, brighten and ``[augmentor] intensity`` then touch the
    image only.  For generator-mode training (call it through ``tf.numpy_function``).
    """
    _check_pair(image, mask)
    if not cfg.generator.augmentation:
        return image, mask
    a, shape = cfg.augmentor, mask.shape
    steps: list[_Step] = []
    blur = 0.0

    def take(enabled: bool, options: Sequence = (None,)) -> bool:
        return bool(enabled) and len(options) > 0 and rng.random() < p

    def pick(options: Sequence) -> object:
        return options[int(rng.integers(len(options)))]

    if take(a.lesion_paste):
        image, mask = paste_lesion(image, mask, rng)

    if take(a.hflip):
        steps.append(_hflip_step(shape))
    if take(a.vflip):
        steps.append(_vflip_step(shape))
    if take(a.rotation, a.angles):
        steps.append(_rotate_step(shape, float(pick(a.angles))))
    if take(True, a.shrinks):
        steps.append(_shrink_step(shape, float(pick(a.shrinks))))
    if take(True, a.shears):
        steps.append(_shear_step(shape, float(pick(a.shears))))
    d = cfg.deformation
    if take(a.deformation):
        steps.append(_elastic_step(shape, d.alpha, float(pick(d.sigmoids or (d.sigmoid,))), rng))
    g = cfg.distortion
    if take(a.distortion, g.distortions):
        steps.append(_grid_step(shape, float(pick(g.distortions)), g.gaussian_filter_rsigma, rng))
        blur = g.gaussian_filter_sigma
    for flag, s in ((a.barrdistortion, cfg.barrdistortion), (a.pincdistortion, cfg.pincdistortion)):
        if take(flag, s.centers):
            steps.append(_radial_step(shape, s.radius, s.amount, tuple(pick(s.centers))))
    image, mask = _warp(image, mask, steps, blur)
    if take(a.sharpening):
        image, mask = sharpen(image, mask, cfg.sharpening.k)
    if take(a.brightening):
        image, mask = brighten(image, mask, cfg.brightening.alpha, cfg.brightening.beta)
    if take(a.intensity):
        i = cfg.intensity
        image = vary_intensity(image, i.gain, i.offset, i.noise, rng, i.kernel, i.gamma, i.lowres)
    return image, mask
