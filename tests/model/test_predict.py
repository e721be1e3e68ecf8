"""flexunet.model.predict: the input as training fed it, softmax, flips, tiles, indices back to size, overlay."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import RGB_MAP, config_text, make_cfg
from flexunet.config.loader import parse_config
from flexunet.preprocessing.pipeline import decode_image
from flexunet.model.network import build_model
from flexunet.model.postprocess import decision_of
from flexunet.model.predict import (blend, decide, model_input, overlay_image, pad_batch, predict_indices,
                              predict_probs, predict_tiled, prediction_flips, ramp, read_input, resize_indices,
                              tile_starts, tta_flips)

CONFIG = config_text()
BGR = '\n[image]\ncolor_order = "BGR"\n'


# --------------------------------------------------------------------------- the input, as training fed it


def _inputs(folder: Path, h: int, w: int) -> list[tuple[Path, Path]]:
    """(image, all-background mask) pairs of h x w: PNGs in the modes a slice comes in (RGB, grey, palette,
    opaque RGBA), a JPEG and a palette BMP (TensorFlow's own decoders read those two differently from PIL)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:h, :w]
    smooth = np.stack([(yy * 5) % 256, (xx * 7) % 256, ((yy + xx) * 3) % 256], -1).astype(np.uint8)
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    rgba = np.dstack([np.asarray(noise), np.full((h, w), 255, np.uint8)])     # opaque: check_image refuses alpha
    images = {"rgb.png": noise, "grey.png": noise.convert("L"), "rgba.png": Image.fromarray(rgba, "RGBA"),
              "palette.png": noise.convert("P", palette=Image.ADAPTIVE), "smooth.jpg": Image.fromarray(smooth),
              "palette.bmp": Image.fromarray(smooth).convert("P", palette=Image.ADAPTIVE)}
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    pairs = []
    for name, img in images.items():
        img.save(folder / "images" / name)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / "masks" / f"{name}.png")
        pairs.append((folder / "images" / name, folder / "masks" / f"{name}.png"))
    return pairs


@pytest.mark.parametrize("size", [(32, 32), (40, 52)])          # the model size; another (resized on the way)
@pytest.mark.parametrize("channels,order", [(3, "RGB"), (3, "BGR"), (1, "RGB"), (1, "BGR"), (4, "BGR")])
def test_prediction_feeds_the_model_exactly_what_training_fed_it(tmp_path, size, channels, order):
    """The same files through the tf.data pipeline and through prediction's loader: bit-identical arrays."""
    from flexunet.model.predict import model_batch
    from flexunet.preprocessing.pipeline import check_image, make_dataset

    text = CONFIG.replace("num_classes = 3", f"num_classes = 3\nimage_channels = {channels}") + (
        BGR if order == "BGR" else "")
    cfg = parse_config(text, base_dir=tmp_path)
    pairs = _inputs(tmp_path, *size)
    assert all(check_image(image) == size[::-1] for image, _ in pairs)    # all taken by training
    trained = np.concatenate([x.numpy() for x, _ in make_dataset(cfg, pairs, training=False, batch_size=4)])
    predicted = model_batch([read_input(image, cfg) for image, _ in pairs], cfg)
    assert predicted.shape == trained.shape == (len(pairs), 32, 32, channels) and predicted.dtype == np.float32
    np.testing.assert_array_equal(predicted, trained)
    np.testing.assert_array_equal(decode_image(tf.constant(str(pairs[0][0])), cfg).numpy(), predicted[0])
    if channels == 4:
        assert (trained[..., 3] == 255).all()                              # alpha stays exactly 255
    if size != (32, 32):                                                   # resized: not whole numbers any more
        assert not np.array_equal(trained, np.rint(trained))


# --------------------------------------------------------------------------- prediction


class PatternModel:
    """A fixed, position-dependent softmax: class 1 rises left to right, class 2 top to bottom."""

    inputs = [keras.KerasTensor((None, 8, 8, 3))]

    def predict_on_batch(self, x):
        b, h, w = x.shape[:3]
        logits = np.stack([np.zeros((h, w)), np.tile(np.arange(w), (h, 1)) / 2.0,
                           np.tile(np.arange(h)[:, None], (1, w)) / 3.0], -1)
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        return np.repeat(p[None], b, 0).astype(np.float32)


def test_decide_is_the_argmax_with_the_lesion_classes_weighted():
    """weight 1: the plain argmax; weight w: a lesion class wins where its probability times w is the largest,
    so p = (0.6, 0.3, 0.1) is background at 1 and class 1 at 3; background's own probability is never scaled."""
    probs = np.array([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.9, 0.06, 0.04], [0.5, 0.1, 0.4]]], np.float32)
    np.testing.assert_array_equal(decide(probs), probs.argmax(-1))
    assert decide(probs).dtype == np.uint8
    np.testing.assert_array_equal(decide(probs, 3.0), [[1, 1, 0, 2]])
    p = PatternModel().predict_on_batch(np.zeros((2, 8, 8, 3), np.float32))
    np.testing.assert_array_equal(predict_indices(PatternModel(), np.zeros((2, 8, 8, 3), np.float32), foreground_weight=4.0),
                                  decide(p, 4.0))
    assert (decide(p, 4.0) != 0).sum() > (decide(p) != 0).sum()


def test_flip_tta_averages_identity_and_flips():
    x = np.zeros((2, 8, 8, 3), np.float32)
    p = PatternModel().predict_on_batch(x)
    expected = (p + p[:, :, ::-1] + p[:, ::-1]) / 3
    np.testing.assert_allclose(predict_probs(PatternModel(), x, flip_tta=True), expected, atol=1e-7)
    np.testing.assert_allclose(predict_probs(PatternModel(), x), p)
    # only the axes asked for: columns (2) alone averages identity and the left-right mirror
    np.testing.assert_allclose(predict_probs(PatternModel(), x, flip_tta=(2,)), (p + p[:, :, ::-1]) / 2, atol=1e-7)


@pytest.mark.parametrize("hflip,vflip,axes", [(True, True, (2, 1)), (True, False, (2,)), (False, True, (1,)),
                                              (False, False, (2,))])
def test_tta_mirrors_only_what_training_mirrored(tmp_path, hflip, vflip, axes):
    cfg = make_cfg(tmp_path, augmentor={"hflip": hflip, "vflip": vflip})
    assert tta_flips(cfg) == axes



@pytest.mark.parametrize("flip_tta,uncertainty,axes", [(False, False, ()), (True, False, (2,)), (False, True, (2,)),
                                                        (True, True, (2,))])
def test_infer_evaluate_and_training_predict_with_the_same_flips(tmp_path, flip_tta, uncertainty, axes):
    """uncertainty's entropy is over the flips and its masks are their mean: evaluate must score those masks."""
    cfg = make_cfg(tmp_path, augmentor={"hflip": True, "vflip": False},
                   infer={"flip_tta": flip_tta, "uncertainty": uncertainty})
    assert prediction_flips(cfg) == axes
    assert decision_of(cfg) == {"foreground_weight": 1.0, "flip_tta_axes": list(axes)}


# --------------------------------------------------------------------------- tiling


def test_short_batch_is_padded_with_zeros_and_the_padding_dropped():
    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    padded = pad_batch(batch, 5)
    assert padded.shape == (5, 4, 4, 3) and (padded[:2] == batch).all() and not padded[2:].any()
    assert pad_batch(batch, 2) is batch

    class Seen:
        shapes: list = []

        def predict_on_batch(self, x):
            self.shapes.append(x.shape)
            return np.stack([np.full((4, 4, 2), x[i].mean()) for i in range(len(x))])

    model = Seen()
    probs = predict_probs(model, batch, flip_tta=True, pad_to=5)
    assert probs.shape == (2, 4, 4, 2) and model.shapes == [(5, 4, 4, 3)] * 3        # identity, h-flip, v-flip
    np.testing.assert_allclose(probs[:, 0, 0, 0], batch.mean(axis=(1, 2, 3)), rtol=1e-6)


def test_tile_starts_and_ramp():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(32, 32, 8) == [0]
    w = ramp(10, 3)
    assert w.tolist() == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 1, 0.75, 0.5, 0.25])
    assert (ramp(5, 0) == 1).all()


def pointwise_model(seed: int = 0) -> keras.Model:
    """Size-agnostic, receptive field 1 pixel: any tiling must give exactly the untiled output."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 1, activation="relu")(x)
    x = keras.layers.Conv2D(3, 1)(x)
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


@pytest.mark.parametrize("tile,overlap", [(32, 8), (48, 16), (40, 0)])
def test_tiled_equals_untiled_for_a_size_agnostic_pointwise_model(tmp_path, tile, overlap):
    cfg = make_cfg(tmp_path)
    model = pointwise_model()
    image = np.random.default_rng(1).integers(0, 256, (100, 75, 3), dtype=np.uint8)
    full = np.asarray(model.predict_on_batch(image[None].astype(np.float32)))[0]
    tiled = predict_tiled(model, image, cfg, tile, overlap, batch_size=3)
    np.testing.assert_allclose(tiled, full, atol=1e-5)       # no seams: blending is exact
    np.testing.assert_array_equal(tiled.argmax(-1), full.argmax(-1))


def test_tiled_unet_stays_within_tolerance_of_untiled(tmp_path):
    """A size-agnostic 3-level FlexUNet: tiles see zero padding at their edges, so outputs differ
    near tile borders; with a 24 px blended overlap the softmax stays within 0.05 (max) and 0.005 (mean)."""
    text = CONFIG.replace("num_layers = 2", "num_layers = 3")
    cfg = parse_config(text, base_dir=tmp_path)
    keras.utils.set_random_seed(1)
    fixed = build_model(cfg.model)
    free = keras.models.clone_model(fixed, input_tensors=keras.Input((None, None, 3)))
    free.set_weights(fixed.get_weights())
    image = np.random.default_rng(0).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    full = np.asarray(free.predict_on_batch(image[None].astype(np.float32)))[0]
    tiled = predict_tiled(free, image, cfg, 64, 24, batch_size=4)
    diff = np.abs(tiled - full)
    assert diff.max() < 0.05 and diff.mean() < 0.005


def test_model_input_follows_color_order_and_channels(tmp_path):
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    assert model_input(rgb, parse_config(CONFIG, base_dir=tmp_path), resize=False).tolist() == [[[10, 20, 30]]]
    bgr = parse_config(CONFIG + '\n[image]\ncolor_order = "BGR"\n', base_dir=tmp_path)
    assert model_input(rgb, bgr, resize=False).tolist() == [[[30, 20, 10]]]
    grey = parse_config(CONFIG.replace("num_classes = 3", "num_classes = 3\nimage_channels = 1"), base_dir=tmp_path)
    assert model_input(rgb, grey, resize=False).tolist() == [[[20.0]]]
    rgba = parse_config(CONFIG.replace("num_classes = 3", "num_classes = 3\nimage_channels = 4"), base_dir=tmp_path)
    assert model_input(rgb, rgba, resize=False).tolist() == [[[10, 20, 30, 255]]]
    assert model_input(rgb, rgba).shape == (32, 32, 4) and model_input(rgb, rgba).dtype == np.float32


# --------------------------------------------------------------------------- back to the image's size


def test_indices_resized_back_match_the_input_size(tmp_path):
    cfg = make_cfg(tmp_path)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model)
    originals = [np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
                 for i, (h, w) in enumerate([(40, 50), (17, 90), (32, 32)])]
    indices = predict_indices(model, np.stack([model_input(o, cfg) for o in originals]))
    assert indices.shape == (3, 32, 32) and indices.dtype == np.uint8
    for original, index in zip(originals, indices):
        back = resize_indices(index, original.shape)
        assert back.shape == original.shape[:2] and back.dtype == np.uint8
        np.testing.assert_array_equal(back, np.asarray(Image.fromarray(index).resize(
            (original.shape[1], original.shape[0]), Image.NEAREST)))
    same = indices[2]
    assert resize_indices(same, (32, 32, 3)) is same


def test_resize_indices_is_nearest_never_inventing_classes():
    index = np.zeros((4, 4), np.uint8)
    index[:2, :2], index[2:, 2:] = 1, 2
    up = resize_indices(index, (8, 8))
    assert set(np.unique(up)) == {0, 1, 2}
    np.testing.assert_array_equal(up, np.repeat(np.repeat(index, 2, 0), 2, 1))


# --------------------------------------------------------------------------- the overlay


def test_blend_colours_foreground_only_and_rounds():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    index = np.array([[0, 1], [2, 0]], np.uint8)
    colours = np.array([[0, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    out = blend(rgb, index, colours, 0.5)
    assert out[0, 0].tolist() == out[1, 1].tolist() == [100, 100, 100]     # background untouched
    assert out[0, 1].tolist() == [50, 178, 50]                             # 100*.5 + 255*.5 = 177.5 -> 178
    assert out[1, 0].tolist() == [50, 50, 178]


def test_overlay_image_legend_only_with_class_names():
    rgb = np.full((64, 64, 3), 100, np.uint8)
    index = np.zeros((64, 64), np.uint8)
    index[40:, 40:] = 1
    plain = np.asarray(overlay_image(rgb, index, RGB_MAP, (), 0.5))
    np.testing.assert_array_equal(plain, blend(rgb, index, np.array([[0, 0, 0], [0, 255, 0], [0, 0, 255]]), 0.5))
    legend = np.asarray(overlay_image(rgb, index, RGB_MAP, ("bg", "one", "two"), 0.5))
    assert (legend[:4, :4] != plain[:4, :4]).any() and (legend[40:, 40:] == plain[40:, 40:]).all()
