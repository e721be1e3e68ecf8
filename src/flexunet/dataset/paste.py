"""Lesion copy-paste within a slice: a lesion seen elsewhere in the same tissue (online augmentation).

``[augmentor] lesion_paste = True`` (online only, ``[model] generator = True``): in half the training
images that hold a lesion, one lesion (a connected component of the mask's foreground, up to a
quarter of the image side across) is copied to another place of the same slice:

- the place is tissue like the lesion's surroundings: every pixel under the lesion and a ring of 2 px
  around it is within 40 grey levels of the mean of the lesion's own ring (no skull, air, ventricle
  or other lesion under it), and the two rings' means are within 12 grey levels, so a hypodense
  infarct stays hypodense to what is around it; the copy is shifted by the difference;
- the lesion's own pixels replace the image there, its 2-px ring is blended in (2/3, 1/3), so a
  soft edge stays soft; the mask gets the lesion's classes on its own pixels.

Where the slice has no lesion or 20 random places do not fit, the pair is returned unchanged.  The
point: a lesion class is learnt by what it looks like, not by where the training patients had it
(a look-alike that sits where lesions rarely did, e.g. a calcification beside the ventricles, is not
then the only bright spot the net has seen there).
"""

from __future__ import annotations

import numpy as np

from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

TRIES = 20
LEVEL_TOLERANCE = 12.0      # grey levels between the ring means of the source and the place
PIXEL_TOLERANCE = 40.0      # grey levels between any pixel under the place and the source ring's mean
RING = 2                    # px around the lesion that are blended in and must be tissue


def paste_lesion(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` with one lesion copied to another fitting place of the slice (new arrays), or the
    inputs unchanged.  ``image``: (H, W, C) grey levels 0..255; ``mask``: (H, W) class indices."""
    fg = mask > 0
    if not fg.any():
        return image, mask
    labels, count = ndimage.label(fg, structure=np.ones((3, 3)))
    lesion = labels == int(rng.integers(1, count + 1))
    rows, cols = np.nonzero(lesion)
    h, w = mask.shape
    if np.ptp(rows) + 1 > h // 4 or np.ptp(cols) + 1 > w // 4:
        return image, mask
    grey = image.astype(np.float64).mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)
    near = ndimage.binary_dilation(lesion, iterations=1) & ~lesion & ~fg
    far = ndimage.binary_dilation(lesion, iterations=RING) & ~lesion & ~near & ~fg
    ring_r, ring_c = np.nonzero(near | far)
    if ring_r.size == 0:
        return image, mask
    level = grey[ring_r, ring_c].mean()
    free = (np.abs(grey - level) <= PIXEL_TOLERANCE) & ~fg
    foot_r, foot_c = np.nonzero(ndimage.binary_dilation(lesion, iterations=RING))
    r0, r1, c0, c1 = foot_r.min(), foot_r.max(), foot_c.min(), foot_c.max()
    for _ in range(TRIES):
        dy = int(rng.integers(-r0, h - r1))
        dx = int(rng.integers(-c0, w - c1))
        if abs(dy) + abs(dx) <= 2 * RING or not free[foot_r + dy, foot_c + dx].all():
            continue
        shift = grey[ring_r + dy, ring_c + dx].mean() - level
        if abs(shift) <= LEVEL_TOLERANCE:
            return _paste(image, mask, lesion, near, far, dy, dx, shift)
    return image, mask


def _paste(image, mask, lesion, near, far, dy, dx, shift):
    out_image = image.astype(np.float64).copy()
    out_mask = mask.copy()
    planes = out_image if out_image.ndim == 3 else out_image[..., None]
    source = image.astype(np.float64) if image.ndim == 3 else image.astype(np.float64)[..., None]
    for region, alpha in ((lesion, 1.0), (near, 2.0 / 3.0), (far, 1.0 / 3.0)):
        r, c = np.nonzero(region)
        planes[r + dy, c + dx] = alpha * (source[r, c] + shift) + (1.0 - alpha) * planes[r + dy, c + dx]
    r, c = np.nonzero(lesion)
    out_mask[r + dy, c + dx] = mask[r, c]
    out_image = np.clip(out_image, 0, 255)
    if np.issubdtype(image.dtype, np.integer):
        out_image = np.rint(out_image)
    return out_image.astype(image.dtype), out_mask
