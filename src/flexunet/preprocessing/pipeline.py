"""The input pipeline: image/mask pairs from disk to batches, streamed with tf.data.

1. pairs are matched by file name (a missing partner is an error naming it);
2. per epoch, the file list is permuted with a stateless shuffle seeded by (seed, epoch),
   so a run resumed at epoch k sees exactly the order an uninterrupted run would (with
   ``foreground_oversampling``, :func:`epoch_order` fills part of each batch with
   foreground slices, just as reproducibly);
3. files are decoded in parallel, each by the one road into the model that prediction
   takes too (:mod:`flexunet.preprocessing.images`): an image read by PIL, then
   ``[image] color_order``, ``[model] image_channels`` and the bilinear resize to the model
   input; a mask decoded as ``[mask]`` says (rgb_map within ``tolerance``, ``map_unmapped``,
   or ``format = "index"``), resized nearest, then one-hot;
4. optional online augmentation (``generator = True``), seeded by (seed, epoch, index);
5. batch and prefetch.  Memory stays flat: only a few batches are ever decoded at once
   (unless ``cache = True`` keeps the decoded training set in memory).

Images stay 0..255 float32: the model's first layer rescales them when
``input_normalize`` is set, exactly as the config describes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from flexunet.config.loader import Config
from flexunet.dataset.masks import read_config_mask
from flexunet.dataset.transforms import random_augment
from flexunet.preprocessing.images import model_image, model_mask, read_index, read_rgb
from flexunet.utils.errors import ConfigError, DataError
from flexunet.utils.io import open_image, pair_by_name

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE


def subset_pairs(cfg: Config, subset: str) -> list[tuple[Path, Path]]:
    """Sorted (image, mask) pairs of [train], [valid] or [test]."""
    images = cfg.require_dir(subset, "images_dir", "folder of images")
    masks = cfg.require_dir(subset, "masks_dir", "folder of masks")
    suffixes = (cfg.mask.mask_file_format,)
    if cfg.mask.mask_file_format == ".npz":
        raise ConfigError(f"{cfg.where('mask', 'mask_file_format')}: expected \".png\" for training "
                          f"(convert .npz masks to PNG with the codec first)")
    pairs = pair_by_name(images, masks, suffixes)
    if not pairs:
        raise DataError(f"{images}: no image/mask pairs found")
    return pairs


def decode_image(path: tf.Tensor, cfg: Config) -> tf.Tensor:
    """Image file -> float32 (image_height, image_width, image_channels), 0..255, exactly as prediction
    feeds it (:func:`flexunet.preprocessing.images.model_image` of the file read by PIL)."""
    m = cfg.model
    image = model_image(read_rgb(path), cfg)
    image.set_shape((m.image_height, m.image_width, m.image_channels))
    return image


def decode_mask(path: tf.Tensor, cfg: Config) -> tf.Tensor:
    """Mask file -> uint8 class indices (image_height, image_width): decoded as ``[mask]`` says
    (:func:`flexunet.dataset.masks.read_config_mask`), then resized nearest."""
    return model_mask(read_index(path, cfg), cfg)


def _augment_fn(cfg: Config):

    def apply(image: np.ndarray, index: np.ndarray, seed: np.ndarray):
        rng = np.random.default_rng([int(s) for s in seed])
        img, msk = random_augment(np.clip(image, 0, 255).astype(np.uint8), index, cfg, rng)
        return img.astype(np.float32), msk.astype(np.uint8)

    def fn(image, index, seed):
        img, msk = tf.numpy_function(apply, [image, index, seed], [tf.float32, tf.uint8], stateful=False)
        img.set_shape(image.shape)
        msk.set_shape(index.shape)
        return img, msk

    return fn


def make_dataset(cfg: Config, pairs: list[tuple[Path, Path]], training: bool, batch_size: int | None = None,
                 epochs: tuple[int, int] | None = None, presence: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of (images float32 [B,H,W,C] 0..255, one-hot float32 [B,H,W,K]).

    ``training=False``: in the order of ``pairs``, never augmented, one pass.
    ``training=True``: ``epochs=(first, last)`` passes, each permuted by (seed, epoch) and,
    with ``generator = True``, augmented on the fly; batches never straddle two epochs.
    With ``[train] foreground_oversampling`` > 0 each epoch's order comes from
    :func:`epoch_order` instead (``presence``: bool (len(pairs), num_classes), which classes
    each mask holds, e.g. ``check_masks(...) > 0``; read from the masks when not given).
    """
    batch_size = batch_size or cfg.train.batch_size
    num_classes = cfg.model.num_classes
    images = tf.constant([str(p) for p, _ in pairs])
    masks = tf.constant([str(p) for _, p in pairs])

    def load(i, epoch):
        image = decode_image(tf.gather(images, i), cfg)
        index = decode_mask(tf.gather(masks, i), cfg)
        return image, index, tf.stack([tf.cast(cfg.train.seed, tf.int64), epoch, tf.cast(i, tf.int64)])

    def finish(image, index):
        return image, tf.one_hot(tf.cast(index, tf.int32), num_classes, dtype=tf.float32)

    if not training:
        ds = tf.data.Dataset.range(len(pairs)).map(lambda i: load(i, tf.constant(0, tf.int64))[:2],
                                                    num_parallel_calls=AUTOTUNE, deterministic=True)
        return ds.map(finish, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)

    first, last = epochs if epochs is not None else (0, cfg.train.epochs)
    augment = _augment_fn(cfg) if cfg.model.generator and cfg.generator.augmentation else None
    cache = None
    if cfg.train.cache:  # decode once; epochs then gather from memory (variables, not graph constants)
        decoded = tf.data.Dataset.range(len(pairs)).map(
            lambda i: load(i, tf.constant(0, tf.int64))[:2], num_parallel_calls=AUTOTUNE).as_numpy_iterator()
        cache = _cache_variables(decoded, len(pairs))

    orders = None
    if cfg.train.foreground_oversampling > 0:  # every epoch's order, computed once: (last - first, n)
        if presence is None:
            presence = check_masks(cfg, pairs) > 0
        orders = tf.constant(np.stack([epoch_order(cfg, presence, e, batch_size) for e in range(first, last)]))

    def one_epoch(epoch):
        if orders is None:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(pairs), dtype=tf.int64), seed=tf.stack([tf.cast(cfg.train.seed, tf.int64), epoch]))
            keys = order  # augmentation seed: (seed, epoch, slice)
        else:
            order = tf.gather(orders, epoch - first)
            keys = order + len(pairs) * tf.range(len(pairs), dtype=tf.int64)  # a slice drawn twice varies
        ds = tf.data.Dataset.from_tensor_slices((order, keys))
        if cache is not None:
            ds = ds.map(lambda i, k: (tf.cast(tf.gather(cache[0], i), tf.float32), tf.gather(cache[1], i),
                                      tf.stack([tf.cast(cfg.train.seed, tf.int64), epoch, k])))
        else:
            ds = ds.map(lambda i, k: _with_key(load(i, epoch), k), num_parallel_calls=AUTOTUNE,
                        deterministic=True)
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=AUTOTUNE, deterministic=True)
        else:
            ds = ds.map(lambda img, idx, seed: (img, idx))
        return ds.map(finish, num_parallel_calls=AUTOTUNE).batch(batch_size)

    ds = tf.data.Dataset.range(first, last).flat_map(one_epoch)
    options = tf.data.Options()
    options.deterministic = True
    # No autotune thread: destroying the iterator at the end of fit waits for that thread's timed sleep
    # (~IteratorResource -> ~LogicalThreadWrapper), which grows to about a minute, so a run would idle
    # that long after its last epoch; the step time is the same without it. AUTOTUNE then means the
    # default parallelism (the cores) and prefetch's own buffer heuristic.
    options.autotune.enabled = False
    return ds.with_options(options).prefetch(AUTOTUNE)


def _with_key(sample: tuple, key: tf.Tensor) -> tuple:
    image, index, seed = sample
    return image, index, tf.concat([seed[:2], [key]], 0)


def epoch_order(cfg: Config, presence: np.ndarray, epoch: int, batch_size: int) -> np.ndarray:
    """The slices epoch ``epoch`` draws, with ``[train] foreground_oversampling`` = s > 0 (nnU-Net's way).

    Of each batch, round(s * batch) slots (the rounding error carried on, so an epoch draws
    round(s * n) in all) go first to slices holding a foreground class: classes cycle from
    the rarest (fewest training slices) and each slot draws a random slice holding its class;
    the other slots take a random permutation in turn.  As many slices as a plain epoch, a
    slice may come twice; the order depends only on ``[train] seed`` and the epoch, so
    ``--resume`` at epoch k draws what an uninterrupted run would.
    """
    n = len(presence)
    rng = np.random.default_rng([cfg.train.seed, epoch, 13])
    counts = presence[:, 1:].sum(0)
    classes = [c + 1 for c in np.argsort(counts, kind="stable") if counts[c] > 0]  # rarest first
    holders = {c: np.flatnonzero(presence[:, c]) for c in classes}
    uniform = iter(rng.permutation(n))
    order, carry, slot = [], 0.0, 0
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        carry += cfg.train.foreground_oversampling * size
        wanted = min(size, int(np.floor(carry + 0.5))) if classes else 0
        carry -= wanted
        for _ in range(wanted):
            order.append(rng.choice(holders[classes[slot % len(classes)]]))
            slot += 1
        order.extend(next(uniform) for _ in range(size - wanted))
    return np.asarray(order, np.int64)


def _cache_variables(decoded, n: int) -> tuple[tf.Variable, tf.Variable]:
    """The decoded set as two variables filled row by row; images as uint8 while every value is whole.

    Images stored at the model size are never resampled, so they decode to whole numbers
    0..255: uint8 holds them exactly in a quarter of the memory of float32.  Rows are written
    straight into the variables, so building the cache needs its own size and one row, not
    the two or three copies a stacked array turned into a variable passes through.
    """
    def zeros(shape: tuple, dtype: tf.DType) -> tf.Variable:  # a lazy initial value: no second buffer
        return tf.Variable(lambda: tf.zeros(shape, dtype), trainable=False)

    images = masks = None
    for k, (image, index) in enumerate(decoded):
        if images is None:
            images, masks = zeros((n, *image.shape), tf.uint8), zeros((n, *index.shape), tf.as_dtype(index.dtype))
        if images.dtype == tf.uint8 and not np.array_equal(image, np.rint(image)):
            old = images  # resampled: keep float32 (the rows so far convert exactly)
            images = tf.Variable(lambda: tf.cast(old, tf.float32), trainable=False)
        # scatter_nd_update writes the row in place (a sliced assign copies the whole variable)
        images.scatter_nd_update([[k]], image[None].astype(images.dtype.as_numpy_dtype))
        masks.scatter_nd_update([[k]], index[None])
    return images, masks


def steps_per_epoch(cfg: Config, num_pairs: int, batch_size: int | None = None) -> int:
    batch_size = batch_size or cfg.train.batch_size
    return -(-num_pairs // batch_size)


# the formats the training pipeline accepts (anything else goes through `flexunet prepare` first)
PIPELINE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) of an image the training pipeline takes; else a DataError.

    The file must decode whole (not truncated, really an image) in a format the pipeline
    accepts; 16-bit images and transparent pixels are refused: training takes the 8-bit,
    opaque slices ``flexunet prepare`` writes.
    """

    if path.suffix.lower() not in PIPELINE_SUFFIXES:
        raise DataError(f"{path}: {path.suffix} images cannot be read by the training pipeline (PNG, JPEG, "
                        f"BMP or GIF only); convert them to PNG, or run them through `flexunet prepare`")
    img = open_image(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise DataError(f"{path}: {img.mode} ({'16' if img.mode.startswith('I;16') else '32'}-bit) image; "
                        f"the training pipeline reads 8-bit images only — convert the raw slices with "
                        f"`flexunet prepare` (it stretches them to 0..255 as infer does)")
    if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
        alpha = img.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise DataError(f"{path}: has transparent pixels; the training pipeline takes opaque images "
                            f"only — save the image without transparency, or run it through "
                            f"`flexunet prepare`")
    return img.size


def check_masks(cfg: Config, pairs: list[tuple[Path, Path]], workers: int = 0) -> np.ndarray:
    """Pre-flight: every image and mask decodes, they have the same size, and masks hold
    only rgb_map colours (within tolerance), or class indices below num_classes ([mask]
    format = "index").  Returns each mask's pixels per class, int64
    (len(pairs), num_classes), from the same read (oversampling and the collapse guard use it).

    tf.data would fail deep inside ``fit`` on a truncated file or a foreign colour, so both
    are caught here, once, with the file named.
    """


    num_classes = cfg.model.num_classes

    def check(pair: tuple[Path, Path]) -> np.ndarray:
        width, height = check_image(pair[0])
        index = read_config_mask(pair[1], cfg).index
        if index.shape != (height, width):
            raise DataError(f"{pair[1]}: mask is {index.shape[1]}x{index.shape[0]} but {pair[0].name} is "
                            f"{width}x{height} (WxH); expected an image and its mask of the same size")
        return np.bincount(index.ravel(), minlength=num_classes)[:num_classes]

    with ThreadPoolExecutor(max_workers=workers or 4) as pool:
        found = list(pool.map(check, pairs))
    return np.array(found, np.int64).reshape(len(pairs), num_classes)
