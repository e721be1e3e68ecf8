"""Losses: hand-computed values on 2x2 pixels and 3 classes, and a gradient where the old CE had none."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from flexunet.config.loader import parse_config
from flexunet.model.losses import EPS, make_loss

CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
loss = "{loss}"
focal_gamma = 2.0
tversky_alpha = 0.3
tversky_beta = 0.7

[mask]
rgb_map = {{(0,0,0):0, (0,255,0):1, (0,0,255):2}}
"""

# one image of 2x2 pixels (pixel order: row by row); the softmax of log(P) is P itself
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25]], np.float32)
TRUE = [0, 1, 2, 0]


def _loss(name: str):
    return make_loss(parse_config(CONFIG.format(loss=name)))


def _inputs():
    y_true = tf.constant(np.eye(3, dtype=np.float32)[TRUE].reshape(1, 2, 2, 3))
    y_pred = keras.activations.softmax(tf.constant(np.log(P).reshape(1, 2, 2, 3)))  # carries its logits
    return y_true, y_pred


# soft counts per foreground class, from P and TRUE by hand:
# class 1: tp = 0.8, fp = 0.2 + 0.2 + 0.25 = 0.65, fn = 1 - 0.8 = 0.2
# class 2: tp = 0.6, fp = 0.1 + 0.1 + 0.25 = 0.45, fn = 1 - 0.6 = 0.4
EXPECTED = {
    "categorical_crossentropy": -(math.log(0.7) + math.log(0.8) + math.log(0.6) + math.log(0.5)) / 4,
    "focal": -(0.3 ** 2 * math.log(0.7) + 0.2 ** 2 * math.log(0.8) + 0.4 ** 2 * math.log(0.6)
               + 0.5 ** 2 * math.log(0.5)) / 4,
    "dice": 1 - ((2 * 0.8 + 1) / (2 * 0.8 + 0.65 + 0.2 + 1) + (2 * 0.6 + 1) / (2 * 0.6 + 0.45 + 0.4 + 1)) / 2,
    "tversky": 1 - ((0.8 + 1) / (0.8 + 0.3 * 0.65 + 0.7 * 0.2 + 1)
                    + (0.6 + 1) / (0.6 + 0.3 * 0.45 + 0.7 * 0.4 + 1)) / 2,
}
EXPECTED["ce_dice"] = EXPECTED["categorical_crossentropy"] + EXPECTED["dice"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values_by_hand(name):
    y_true, y_pred = _inputs()
    value = float(np.mean(_loss(name)(y_true, y_pred)))
    assert value == pytest.approx(EXPECTED[name], rel=1e-5)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "focal"])
def test_plain_probabilities_give_the_same_value(name):
    """A tensor without logits (e.g. a loaded model's output) falls back to the clipped log."""
    y_true, _ = _inputs()
    plain = tf.constant(P.reshape(1, 2, 2, 3))
    assert not hasattr(plain, "_keras_logits")
    assert float(np.mean(_loss(name)(y_true, plain))) == pytest.approx(EXPECTED[name], rel=1e-5)


def _old_clipped_ce(y_true, y_pred):
    """The original's cross-entropy: log of probabilities clipped to [EPS, 1 - EPS]."""
    clipped = tf.clip_by_value(y_pred, EPS, 1.0 - EPS)
    return tf.reduce_mean(tf.reduce_sum(-y_true * tf.math.log(clipped), -1), axis=(1, 2))


def test_saturated_softmax_still_has_a_gradient():
    # every pixel predicts background with a logit gap of 40; pixel 0 is really class 1
    logits = tf.Variable(np.tile(np.array([40.0, 0.0, 0.0], np.float32), (1, 2, 2, 1)))
    onehot = np.eye(3, dtype=np.float32)[[1, 0, 0, 0]].reshape(1, 2, 2, 3)
    y_true = tf.constant(onehot)
    new_ce = _loss("categorical_crossentropy")

    grads = {}
    for name, fn in (("old", _old_clipped_ce), ("new", new_ce)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(fn(y_true, keras.activations.softmax(logits)))
        grads[name] = tape.gradient(loss, logits).numpy()

    np.testing.assert_array_equal(grads["old"], 0.0)  # the clip cut it: a dead network stays dead
    softmax = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(grads["new"], (softmax - onehot) / 4, atol=1e-7)  # mean over 4 pixels
    assert grads["new"][0, 0, 0, 1] == pytest.approx(-0.25)  # pushes the true class up
    assert float(loss) == pytest.approx(40.0 / 4, rel=1e-4)  # -log softmax = 40 on one pixel of four


def test_ce_from_logits_trains_a_saturated_head_out_of_collapse():
    """The loss sees the logits through a compiled model's softmax head, as in training."""
    inputs = keras.Input((2, 2, 1))
    head = keras.layers.Conv2D(3, 1, bias_initializer=keras.initializers.Constant([40.0, 0.0, 0.0]),
                               kernel_initializer="zeros")
    outputs = keras.layers.Activation("softmax", dtype="float32")(head(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(1.0), loss=_loss("categorical_crossentropy"))
    x = np.ones((1, 2, 2, 1), np.float32)
    y = np.eye(3, dtype=np.float32)[[1, 1, 1, 1]].reshape(1, 2, 2, 3)
    before = head.bias.numpy().copy()
    model.fit(x, y, epochs=1, verbose=0)
    assert head.bias.numpy()[1] > before[1]  # moved; with the clipped CE its gradient is exactly 0


# --------------------------------------------------------------------------- class weights (0.5, 2, 1)

W = (0.5, 2.0, 1.0)
D1, D2 = (2 * 0.8 + 1) / (2 * 0.8 + 0.65 + 0.2 + 1), (2 * 0.6 + 1) / (2 * 0.6 + 0.45 + 0.4 + 1)
T1, T2 = (0.8 + 1) / (0.8 + 0.3 * 0.65 + 0.7 * 0.2 + 1), (0.6 + 1) / (0.6 + 0.3 * 0.45 + 0.7 * 0.4 + 1)
WEIGHTED = {  # per pixel the true class's weight times its term; Dice and Tversky: a weighted foreground mean
    "categorical_crossentropy": -(0.5 * math.log(0.7) + 2 * math.log(0.8) + 1 * math.log(0.6)
                                  + 0.5 * math.log(0.5)) / 4,
    "focal": -(0.5 * 0.3 ** 2 * math.log(0.7) + 2 * 0.2 ** 2 * math.log(0.8) + 1 * 0.4 ** 2 * math.log(0.6)
               + 0.5 * 0.5 ** 2 * math.log(0.5)) / 4,
    "dice": 1 - (2 * D1 + 1 * D2) / 3,
    "tversky": 1 - (2 * T1 + 1 * T2) / 3,
}
WEIGHTED["ce_dice"] = WEIGHTED["categorical_crossentropy"] + WEIGHTED["dice"]


@pytest.mark.parametrize("name", sorted(WEIGHTED))
def test_weighted_loss_values_by_hand(name):
    cfg = parse_config(CONFIG.format(loss=name).replace("[mask]", f"class_weights = {W}\n\n[mask]"))
    assert cfg.model.class_weights == W
    y_true, y_pred = _inputs()
    assert float(np.mean(make_loss(cfg)(y_true, y_pred))) == pytest.approx(WEIGHTED[name], rel=1e-5)


# --------------------------------------------------------------------------- metrics


def test_dice_coef_multiclass_matches_its_formula():
    from flexunet.model.losses import dice_coef_multiclass

    rng = np.random.default_rng(0)
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, (2, 4, 4))]
    p = rng.dirichlet([1, 1, 1], (2, 4, 4)).astype("float32")
    per_image = [(2 * (y[i] * p[i]).sum() + 1) / (y[i].sum() + p[i].sum() + 1) for i in range(2)]
    assert float(dice_coef_multiclass(y, p)) == pytest.approx(np.mean(per_image), rel=1e-6)
    # background-dominated: predicting all background on a 1%-lesion image still scores ~0.99
    y = np.zeros((1, 10, 10, 3), "float32")
    y[..., 0] = 1
    y[0, 0, 0] = [0, 1, 0]
    pred = np.zeros_like(y)
    pred[..., 0] = 1
    assert float(dice_coef_multiclass(y, pred)) > 0.98


def test_per_class_dice_and_iou_match_hand_counts(train_project):
    from flexunet.config.loader import load_config
    from flexunet.model.losses import make_metrics

    cfg = load_config(train_project)
    metrics = {m.name: m for m in make_metrics(cfg)[1:]}
    true = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 0, 2], [1, 0, 1, 0]])
    y, p = np.eye(3, dtype="float32")[true][None], np.eye(3, dtype="float32")[pred][None]
    for metric in metrics.values():  # two updates of halves = one update of the whole: epoch accumulation
        metric.update_state(y[:, :1], p[:, :1])
        metric.update_state(y[:, 1:], p[:, 1:])
    # class 1: tp 2, fp 1, fn 1 -> dice 4/6, iou 2/4; class 2: tp 1, fp 0, fn 1 -> dice 2/3, iou 1/2
    assert float(metrics["dice_bright"].result()) == pytest.approx(4 / 6)
    assert float(metrics["iou_bright"].result()) == pytest.approx(0.5)
    assert float(metrics["dice_dark"].result()) == pytest.approx(2 / 3)
    assert float(metrics["iou_dark"].result()) == pytest.approx(0.5)
    assert float(metrics["mean_dice"].result()) == pytest.approx((4 / 6 + 2 / 3) / 2)
