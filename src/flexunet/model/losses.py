"""Training losses and metrics (Keras 3 ops; y_true one-hot, y_pred softmax, both float32).

Losses: ``categorical_crossentropy`` (the original's), ``dice`` (soft Dice over the
foreground classes), ``ce_dice`` (their sum), ``focal`` and ``tversky``; ``class_weights``
weight the classes of any of them.

Cross-entropy and focal are computed from the logits (log-softmax), not from clipped
probabilities: the model's softmax head (``keras.activations.softmax``) leaves its input on
the output tensor as ``_keras_logits``, in the training graph, under XLA and mixed precision
alike, so a saturated softmax still has a gradient (``softmax - onehot``) where the
original's clipped log had none.  The model itself, and so every saved model, still outputs
probabilities.  Soft Dice and Tversky stay on probabilities.

Metrics: ``dice_coef_multiclass`` is the original's, kept under its name and formula for
compatibility — it pools all classes *including background*, so on lesion data it reads
0.97-0.99 even for a model that predicts nothing.  The honest ones are per foreground
class Dice and IoU (and their mean), accumulated as true/false positive counts over the
whole epoch and turned into figures by :func:`flexunet.model.metrics.dice_from_counts`, the same
function evaluation uses.
"""

from __future__ import annotations

import keras
from keras import ops

from flexunet.config.loader import Config, metric_suffix
from flexunet.model.metrics import dice_from_counts, iou_from_counts

EPS = 1e-7


def dice_coef_multiclass(y_true, y_pred, smooth: float = 1.0):
    """The original's metric: mean over the batch of (2 sum y*p + 1) / (sum y + sum p + 1)."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    axes = tuple(range(1, len(y_pred.shape)))
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return ops.mean((2.0 * intersection + smooth) / (total + smooth))


def _weights(cfg: Config):
    w = cfg.model.class_weights
    return None if w is None else ops.convert_to_tensor(list(w), "float32")


def _soft_counts(y_true, y_pred):
    """Soft per-class tp, fp, fn summed over batch and pixels: shape (C,)."""
    axes = tuple(range(len(y_pred.shape) - 1))
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return tp, fp, fn


def _class_mean(per_class, weights):
    per_class = per_class[1:]  # foreground only
    if weights is None:
        return ops.mean(per_class)
    w = weights[1:]
    return ops.sum(per_class * w) / (ops.sum(w) + EPS)


def log_probabilities(y_pred):
    """log p: log-softmax of the logits behind ``y_pred`` when it carries them, else log of clipped p."""
    logits = getattr(y_pred, "_keras_logits", None)
    if logits is not None:
        return ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return ops.log(ops.clip(ops.cast(y_pred, "float32"), EPS, 1.0 - EPS))


def make_loss(cfg: Config):
    """The loss the [model] section names, as a Keras-compatible callable."""
    name = cfg.model.loss
    weights = _weights(cfg)
    m = cfg.model

    def per_image(per_pixel):  # (B, H, W, C) -> (B,): Keras averages over the batch (and replicas)
        if weights is not None:
            per_pixel = per_pixel * weights
        return ops.mean(ops.sum(per_pixel, axis=-1), axis=tuple(range(1, len(per_pixel.shape) - 1)))

    def crossentropy(y_true, y_pred):
        return per_image(-y_true * log_probabilities(y_pred))

    def dice(y_true, y_pred):
        tp, fp, fn = _soft_counts(y_true, ops.cast(y_pred, "float32"))
        return 1.0 - _class_mean((2.0 * tp + 1.0) / (2.0 * tp + fp + fn + 1.0), weights)

    def focal(y_true, y_pred):
        log_p = log_probabilities(y_pred)
        return per_image(-y_true * ops.power(1.0 - ops.exp(log_p), m.focal_gamma) * log_p)

    def tversky(y_true, y_pred):
        tp, fp, fn = _soft_counts(y_true, ops.cast(y_pred, "float32"))
        index = (tp + 1.0) / (tp + m.tversky_alpha * fp + m.tversky_beta * fn + 1.0)
        return 1.0 - _class_mean(index, weights)

    def ce_dice(y_true, y_pred):
        return crossentropy(y_true, y_pred) + dice(y_true, y_pred)

    table = {"categorical_crossentropy": crossentropy, "dice": dice, "dice_loss": dice, "ce_dice": ce_dice,
             "bce_dice_loss": ce_dice, "focal": focal, "tversky": tversky}
    fn = table[name]
    fn.__name__ = name
    return fn


class ClassCounts(keras.metrics.Metric):
    """Dice or IoU of one class (or the foreground mean) from counts accumulated over the epoch.

    ``kind = "pred"``: the share of the pixels predicted as ``class_id`` instead.
    """

    def __init__(self, num_classes: int, kind: str = "dice", class_id: int | None = None,
                 name: str | None = None, **kwargs) -> None:
        super().__init__(name=name or f"{kind}_{class_id}", **kwargs)
        self.num_classes = num_classes
        self.kind = kind
        self.class_id = class_id
        shape = (num_classes,)
        self.tp = self.add_variable(shape, initializer="zeros", name="tp", dtype="float32")
        self.fp = self.add_variable(shape, initializer="zeros", name="fp", dtype="float32")
        self.fn = self.add_variable(shape, initializer="zeros", name="fn", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = ops.one_hot(ops.argmax(y_true, axis=-1), self.num_classes)
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        axes = tuple(range(len(pred.shape) - 1))
        tp = ops.sum(true * pred, axis=axes)
        self.tp.assign_add(tp)
        self.fp.assign_add(ops.sum(pred, axis=axes) - tp)
        self.fn.assign_add(ops.sum(true, axis=axes) - tp)

    def result(self):
        if self.kind == "pred":  # share of all pixels predicted as the class (the collapse guard reads it)
            return ((self.tp + self.fp) / ops.maximum(ops.sum(self.tp + self.fn), 1.0))[self.class_id]
        fn = dice_from_counts if self.kind == "dice" else iou_from_counts
        values = fn(self.tp, self.fp, self.fn)  # NaN where a class is in neither mask
        if self.class_id is not None:
            return values[self.class_id]
        fg = values[1:]
        valid = ops.logical_not(ops.isnan(fg))
        count = ops.sum(ops.cast(valid, "float32"))
        total = ops.sum(ops.where(valid, fg, ops.zeros_like(fg)))
        return ops.where(count > 0, total / ops.maximum(count, 1.0), float("nan"))

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(ops.zeros_like(v))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "kind": self.kind,
                "class_id": self.class_id}


def make_metrics(cfg: Config) -> list:
    """dice_coef_multiclass when [model] metrics lists it, then per foreground class Dice and IoU, their
    foreground means and each foreground class's predicted share (always: the checkpoint monitor, the curves
    and the collapse guard rely on them).

    The names are :func:`flexunet.config.loader.logged_names`'s, which the config checks ``monitor`` against.
    """
    names = cfg.class_names
    c = cfg.model.num_classes
    metrics: list = [dice_coef_multiclass] if "dice_coef_multiclass" in cfg.model.metrics else []
    for i in range(1, c):
        metrics.append(ClassCounts(c, "dice", i, name=f"dice_{metric_suffix(names[i])}"))
    for i in range(1, c):
        metrics.append(ClassCounts(c, "iou", i, name=f"iou_{metric_suffix(names[i])}"))
    metrics.append(ClassCounts(c, "dice", None, name="mean_dice"))
    metrics.append(ClassCounts(c, "iou", None, name="mean_iou"))
    for i in range(1, c):  # predicted-pixel share: 0 for epochs in a row is a collapse (callbacks.py)
        metrics.append(ClassCounts(c, "pred", i, name=f"pred_{metric_suffix(names[i])}"))
    return metrics
