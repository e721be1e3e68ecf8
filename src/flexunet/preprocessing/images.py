"""The one road of an image and its mask into the model, for training and for every prediction.

An image file is read by :func:`flexunet.utils.io.read_image` (PIL) as uint8 (H, W, 3) RGB,
and :func:`model_image` turns that into what the network takes.  The tf.data pipeline
calls both per file (:func:`read_rgb`), and so do prediction, evaluation's report, the
epoch-change callback and the benchmark (``flexunet.model.predict.model_input``), on the
same CPU kernels: the model sees bit-identical arrays for the same file, whichever way
it comes.  (TensorFlow's own decoders are not used: they read JPEGs with another DCT and
palette BMPs wrongly, so they would differ from PIL.)

A mask file is decoded by :func:`flexunet.dataset.masks.read_config_mask` (``[mask]``
rgb_map, tolerance, map_unmapped, format), the decode every stage uses, and
:func:`model_mask` resizes the class indices (nearest) to the model size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from flexunet.config.loader import Config
from flexunet.dataset.masks import read_config_mask
from flexunet.utils.io import read_image


def model_image(rgb: Any, cfg: Config, resize: bool = True) -> tf.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (image_height, image_width, image_channels), 0..255.

    In order: ``[image] color_order``; ``[model] image_channels`` (1: the channel mean,
    2: the first two); the bilinear, antialiased resize to the model size (none with
    ``resize=False``, for a model of free size); for 4 channels a constant 255 alpha,
    added after the resize so it stays exactly 255; clipped to 0..255.  Always computed on
    the CPU, where tf.data runs it, so a GPU's kernels never make prediction differ.
    """
    m = cfg.model
    with tf.device("/CPU:0"):
        image = tf.convert_to_tensor(rgb, tf.uint8)
        if cfg.image.color_order == "BGR":
            image = image[..., ::-1]
        image = tf.cast(image, tf.float32)
        if m.image_channels == 1:
            image = tf.reduce_mean(image, -1, keepdims=True)
        elif m.image_channels == 2:
            image = image[..., :2]
        if resize:
            image = tf.image.resize(image, (m.image_height, m.image_width), method="bilinear", antialias=True)
        if m.image_channels == 4:
            image = tf.concat([image, tf.fill(tf.shape(image[..., :1]), 255.0)], -1)
        return tf.clip_by_value(image, 0.0, 255.0)


def model_mask(index: Any, cfg: Config) -> tf.Tensor:
    """uint8 class indices (H, W) -> uint8 (image_height, image_width), resized nearest."""
    m = cfg.model
    with tf.device("/CPU:0"):
        index = tf.convert_to_tensor(index, tf.uint8)
        resized = tf.image.resize(index[..., None], (m.image_height, m.image_width), method="nearest")[..., 0]
    resized.set_shape((m.image_height, m.image_width))
    return resized


def _path(p: bytes | np.ndarray) -> Path:
    p = p.item() if isinstance(p, np.ndarray) else p     # eager calls pass a 0-d array
    return Path(p.decode("utf-8") if isinstance(p, bytes) else str(p))


def read_rgb(path: tf.Tensor) -> tf.Tensor:
    """An image file (a string tensor) as uint8 (H, W, 3) RGB, read as prediction reads it (by PIL)."""
    rgb = tf.numpy_function(lambda p: read_image(_path(p), 3), [path], tf.uint8, stateful=False)
    rgb.set_shape((None, None, 3))
    return rgb


def read_index(path: tf.Tensor, cfg: Config) -> tf.Tensor:
    """A mask file (a string tensor) as uint8 class indices (H, W) at its own size, by ``read_config_mask``."""
    index = tf.numpy_function(lambda p: read_config_mask(_path(p), cfg).index, [path], tf.uint8, stateful=False)
    index.set_shape((None, None))
    return index
