"""One image through a trained model: file -> model input -> softmax -> class indices at the image's size.

The one place prediction is written; ``flexunet infer``, the epoch-change callback, the
report and the benchmark all call it, so they feed the network exactly as training did:

1. :func:`read_input`: a file as uint8 RGB (DICOM through the ``[prepare]`` window(s));
2. :func:`model_input`: ``[image] color_order``, ``[model] image_channels`` and the bilinear
   resize to the model size, float32 0..255, by the very function the training pipeline
   uses (:func:`flexunet.preprocessing.images.model_image`);
3. :func:`predict_probs` / :func:`predict_indices` (optionally averaged over flips), or
   :func:`predict_tiled` for images of any size; :func:`decide`: the class of each pixel from a
   softmax, the one decision `infer`, `evaluate`, the report and the end of training take
   (``[infer] foreground_weight``);
4. :func:`resize_indices`: class indices back to the image's size (nearest);
   :func:`remove_small_components`; :func:`overlay_image`: the mask over the image.

TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flexunet.config.loader import Config
from flexunet.dataset.dicom import read_dicom_hu, window_rgb
from flexunet.dataset.masks import palette_colours
from flexunet.model.metrics import EIGHT
from flexunet.utils.io import DICOM_SUFFIXES, read_image
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

# --------------------------------------------------------------------------- the input


def read_input(path: Path, cfg: Config) -> np.ndarray:
    """An input file as uint8 (H, W, 3) RGB; DICOM through the [prepare] window(s)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        hu, _ = read_dicom_hu(path)
        return window_rgb(hu, cfg.prepare.window_center, cfg.prepare.window_width, cfg.prepare.three_windows)
    return read_image(path, 3)


def model_input(rgb: np.ndarray, cfg: Config, resize: bool = True) -> np.ndarray:
    """A uint8 RGB image as the network takes it, bit for bit as training fed it: float32
    (image_height, image_width, channels), 0..255 (``resize=False``: at the image's own size)."""
    from flexunet.preprocessing.images import model_image

    return model_image(rgb, cfg, resize).numpy()


def model_batch(originals: Sequence[np.ndarray], cfg: Config) -> np.ndarray:
    """:func:`model_input` of each image, stacked: float32 (B, image_height, image_width, channels)."""
    return np.stack([model_input(rgb, cfg) for rgb in originals])


# --------------------------------------------------------------------------- prediction


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` with zero images appended up to ``size`` along axis 0 (unchanged when it has that many)."""
    batch = np.asarray(batch)
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)])


def tta_flips(cfg: Config) -> tuple[int, ...]:
    """The batch axes flip TTA mirrors: those the training augmentation mirrored (``[augmentor] hflip``:
    2, columns; ``vflip``: 1, rows), so a model never sees a mirror image it was not trained on (an
    axial slice's front and back are not interchangeable); horizontal alone where it mirrored none."""
    axes = tuple(axis for axis, on in ((2, cfg.augmentor.hflip), (1, cfg.augmentor.vflip)) if on)
    return axes or (2,)


def prediction_flips(cfg: Config) -> tuple[int, ...]:
    """The mirrors ``infer`` averages a prediction over, and so ``evaluate``, the end of training's
    validation pass and the post-processing record: :func:`tta_flips` with ``[infer] flip_tta``, or with
    ``[infer] uncertainty`` (its entropy is over the flips, and the mask is the flips' mean); none else."""
    return tta_flips(cfg) if cfg.infer.flip_tta or cfg.infer.uncertainty else ()


def predict_probs(model: Any, batch: np.ndarray, flip_tta: bool | Sequence[int] = False,
                  pad_to: int | None = None) -> np.ndarray:
    """Softmax (B, H, W, K) of a float32 batch (B, H, W, C); with ``flip_tta`` averaged over flips.

    ``flip_tta``: the batch axes to mirror (:func:`tta_flips`), True for both (rows and columns),
    False or () for none.  ``pad_to``: a shorter batch is padded with zero images to that many and
    the padding dropped from the result, so a model's predict function is traced for one batch shape.
    """
    count = len(batch)
    if pad_to is not None and count < pad_to:
        return predict_probs(model, pad_batch(batch, pad_to), flip_tta)[:count]
    batch = np.asarray(batch, np.float32)
    axes = (2, 1) if flip_tta is True else tuple(flip_tta or ())
    probs = np.asarray(model.predict_on_batch(batch), np.float32)
    for axis in axes:
        mirrored = np.asarray(model.predict_on_batch(np.ascontiguousarray(np.flip(batch, axis))), np.float32)
        probs = probs + np.flip(mirrored, axis)
    return probs / (1 + len(axes)) if axes else probs


def decide(probs: np.ndarray, foreground_weight: float = 1.0) -> np.ndarray:
    """uint8 class indices (..., H, W) of a softmax (..., H, W, K): the argmax after each foreground class's
    probability is multiplied by ``foreground_weight`` (``[infer] foreground_weight``; 1: the plain argmax).
    A pixel goes to a lesion class once that class's probability exceeds background's / weight."""
    probs = np.asarray(probs)
    if foreground_weight != 1.0:
        scale = np.full(probs.shape[-1], foreground_weight, np.float32)
        scale[0] = 1.0
        probs = probs * scale
    return probs.argmax(-1).astype(np.uint8)


def predict_indices(model: Any, batch: np.ndarray, flip_tta: bool | Sequence[int] = False,
                    foreground_weight: float = 1.0) -> np.ndarray:
    """Class indices (B, H, W) uint8 of a float32 batch (B, H, W, C) of 0..255 images (:func:`decide`)."""
    return decide(predict_probs(model, batch, flip_tta), foreground_weight)


def resize_indices(index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Class indices (H', W') resized (nearest) to ``shape[:2]`` = (H, W); unchanged when already that size."""
    h, w = shape[:2]
    index = np.asarray(index)
    if index.shape == (h, w):
        return index
    return np.asarray(Image.fromarray(index).resize((w, h), Image.NEAREST))


def remove_small_components(index: np.ndarray, min_size: int | Sequence[int]) -> tuple[np.ndarray, int]:
    """Set 8-connected foreground components smaller than ``min_size`` pixels to 0 (one size for every class,
    or one per class index: :class:`flexunet.model.postprocess.ComponentSizes`); return (mask, removed)."""
    index = np.asarray(index)
    sizes = list(min_size) if isinstance(min_size, (tuple, list)) else [min_size] * (int(index.max(initial=0)) + 1)
    if max(sizes, default=0) <= 1:
        return index, 0
    out = index.copy()
    removed = 0
    for k in np.unique(index):
        size = sizes[k] if k < len(sizes) else 0
        if k == 0 or size <= 1:
            continue
        labels, n = ndimage.label(index == k, structure=EIGHT)
        counts = np.bincount(labels.ravel(), minlength=n + 1)
        small = counts < size
        small[0] = False
        if small.any():
            out[small[labels]] = 0
            removed += int(small.sum())
    return out, removed


# --------------------------------------------------------------------------- tiling


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of windows of ``min(tile, length)`` covering ``[0, length)``, neighbours overlapping >= ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def ramp(size: int, width: int) -> np.ndarray:
    """1-D blending weights: rising linearly over ``width`` pixels at both ends, 1 between, > 0 everywhere."""
    i = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(i + 1, size - i) / (width + 1), 0.0, 1.0)


def _model_size(model: Any) -> tuple[int | None, int | None]:
    shape = model.inputs[0].shape
    return shape[1], shape[2]


def predict_tiled(model: Any, image: np.ndarray, cfg: Config, tile: int, overlap: int,
                  batch_size: int, flip_tta: bool | Sequence[int] = False) -> np.ndarray:
    """Softmax (H, W, K) of one image of any size, tile by tile, overlaps blended with linear ramps.

    ``image`` is uint8 RGB (a :func:`read_input`).  Each tile (``tile`` square, smaller at a
    short side) goes through :func:`model_input` (resized to the model input when the model
    has a fixed input size), is predicted, resized back and weighted by the product of two
    :func:`ramp` windows; the weighted sum is divided by the summed weights.
    """
    import tensorflow as tf

    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    mh, mw = _model_size(model)
    fixed = mh is not None and mw is not None
    weight = np.outer(ramp(th, overlap), ramp(tw, overlap)).astype(np.float32)[..., None]
    boxes = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
    total = np.zeros((h, w, cfg.model.num_classes), np.float32)
    weights = np.zeros((h, w, 1), np.float32)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first:first + batch_size]
        batch = np.stack([model_input(image[y:y + th, x:x + tw], cfg, resize=fixed) for y, x in chunk])
        probs = predict_probs(model, batch, flip_tta, pad_to=batch_size)
        if probs.shape[1:3] != (th, tw):
            probs = tf.image.resize(probs, (th, tw), method="bilinear").numpy()
        for (y, x), p in zip(chunk, probs):
            total[y:y + th, x:x + tw] += p * weight
            weights[y:y + th, x:x + tw] += weight
    return total / weights


# --------------------------------------------------------------------------- the overlay


def blend(rgb: np.ndarray, index: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """uint8 (H, W, 3): ``colours[index]`` blended at ``alpha`` over ``rgb`` where ``index`` > 0, rounded."""
    base = np.asarray(rgb[..., :3], np.float32)
    mixed = base * (1.0 - alpha) + np.asarray(colours)[index].astype(np.float32) * alpha
    return np.where((np.asarray(index) > 0)[..., None], mixed, base).round().clip(0, 255).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay_image(rgb: np.ndarray, index: np.ndarray, rgb_map: dict, class_names: Sequence[str],
                  alpha: float) -> Image.Image:
    """The mask blended over the image (background left as is), with a legend of the foreground classes
    (none when ``class_names`` is empty)."""
    colours = palette_colours(rgb_map)
    img = Image.fromarray(blend(rgb, index, colours, alpha), "RGB")
    entries = [(k, class_names[k]) for k in range(1, len(class_names))]
    if not entries:  # no names given: no legend
        return img
    draw = ImageDraw.Draw(img, "RGBA")
    size = max(10, min(img.size) // 32)
    font = _font(size)
    pad, box = max(2, size // 4), size
    width = max(int(draw.textlength(name, font=font)) for _, name in entries) + box + 3 * pad
    draw.rectangle([0, 0, width, pad + len(entries) * (box + pad)], fill=(0, 0, 0, 160))
    for row, (k, name) in enumerate(entries):
        y = pad + row * (box + pad)
        draw.rectangle([pad, y, pad + box, y + box], fill=tuple(int(c) for c in colours[k]) + (255,),
                       outline=(255, 255, 255, 255))
        draw.text((2 * pad + box, y), name, fill=(255, 255, 255, 255), font=font)
    return img
