"""The FlexUNet builder reproduces the original network."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flexunet.config.loader import load_config, parse_config
from flexunet.model.network import build_model, forward_flops, levels


def test_stroke_config_parameter_counts(stroke_config_path):
    m = load_config(stroke_config_path).model
    assert build_model(m).count_params() == 124_996_883
    assert build_model(dataclasses.replace(m, normalization=True)).count_params() == 125_045_779


def test_kernel_and_dilation_schedule(stroke_config_path):
    m = load_config(stroke_config_path).model
    assert [lv.kernel for lv in levels(m)] == [9, 7, 5, 3, 3, 3, 3, 3]
    assert [lv.filters for lv in levels(m)] == [16, 32, 64, 128, 256, 512, 1024, 2048]
    assert [lv.dropout for lv in levels(m)] == pytest.approx([0.04 * i for i in range(8)])
    m2 = dataclasses.replace(m, dilation=(3, 3), max_filters=256)
    assert [lv.dilation for lv in levels(m2)][:5] == [3, 2, 1, 1, 1]
    assert max(lv.filters for lv in levels(m2)) == 256


def test_layer_layout_of_a_small_model(tiny_config_text):
    m = parse_config(tiny_config_text).model
    model = build_model(m)
    names = [layer.name for layer in model.layers]
    assert names.count("enc0_pool") == 1 and "enc2_pool" not in names  # no pool at the bridge
    assert model.get_layer("enc0_conv1").kernel_initializer.__class__.__name__ == "HeNormal"
    assert model.get_layer("dec0_up").strides == (2, 2)
    assert model.get_layer("softmax").dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("layers_,size", [(1, 16), (2, 32), (4, 64)])
def test_output_shape_for_several_depths(tiny_config_text, layers_, size):
    text = tiny_config_text.replace("num_layers = 3", f"num_layers = {layers_}")
    text = text.replace("image_width = 64", f"image_width = {size}").replace("image_height = 64",
                                                                             f"image_height = {size // 2}" if layers_ < 4 else f"image_height = {size}")
    m = parse_config(text).model
    model = build_model(m)
    x = np.random.default_rng(0).uniform(0, 255, (2, m.image_height, m.image_width, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, m.image_height, m.image_width, 3)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_input_normalize_scales_inputs(tiny_config_text):
    m = parse_config(tiny_config_text).model
    assert "input_normalize" in [layer.name for layer in build_model(m).layers]
    raw = dataclasses.replace(m, input_normalize=False)
    assert "input_normalize" not in [layer.name for layer in build_model(raw).layers]


def _brain(rng, offset: float = 0.0) -> np.ndarray:
    """A 32x32 RGB 'slice' (0..255): black air around a brain of greys 60..180 (plus ``offset``) and a white bone
    rim, as a brain window shows it."""
    x = np.zeros((32, 32, 3), "float32")
    x[4:28, 4:28] = 255.0                                                 # bone
    x[6:26, 6:26] = rng.uniform(60, 180, (20, 20, 1)) + offset            # brain, the same grey in R, G, B
    return x


def test_centre_intensity_cancels_a_calibration_offset(tiny_config_text):
    """The layer subtracts the image's mean mid-grey: the brain shifted by +25 grey levels comes out as it did
    without the shift; air and bone (outside 5-95%) do not enter the mean; a blank image passes unchanged."""
    from flexunet.model.network import CentreIntensity

    rng = np.random.default_rng(3)
    x = _brain(rng)
    shifted = x.copy()
    shifted[6:26, 6:26] += 25.0
    layer = CentreIntensity(255.0)
    out = np.asarray(layer(np.stack([x, shifted, np.zeros_like(x)])))
    brain = x[6:26, 6:26, 0]
    np.testing.assert_allclose(out[0, 6:26, 6:26, 0], brain - brain.mean(), atol=1e-3)
    np.testing.assert_allclose(out[1, 6:26, 6:26], out[0, 6:26, 6:26], atol=1e-3)
    np.testing.assert_allclose(out[0, 0, 0], -brain.mean() * np.ones(3), atol=1e-3)     # air: 0 minus the mean
    np.testing.assert_array_equal(out[2], 0.0)
    # three windows: one HU offset is a different grey offset in each channel; each channel's cancels
    windows = x.copy()
    windows[6:26, 6:26, 1] *= 0.5                                          # the brain, greyer in window 2
    moved = windows.copy()
    moved[6:26, 6:26] += np.array([25.0, 12.5, 4.0], "float32")
    out = np.asarray(layer(np.stack([windows, moved])))
    np.testing.assert_allclose(out[1, 6:26, 6:26], out[0, 6:26, 6:26], atol=1e-3)
    np.testing.assert_allclose(out[0, 6:26, 6:26, 1], windows[6:26, 6:26, 1] - windows[6:26, 6:26, 1].mean(),
                               atol=1e-3)
    # in the network, after input_normalize: the brain's centred grey is the same whatever the offset
    cfg = parse_config(tiny_config_text, overrides=["model.centre_intensity=True", "model.image_width=32",
                                                    "model.image_height=32"])
    model = build_model(cfg.model)
    names = [layer.name for layer in model.layers]
    assert names.index("centre_intensity") == names.index("input_normalize") + 1
    import keras

    probe = keras.Model(model.inputs[0], model.get_layer("centre_intensity").output)
    centred = np.asarray(probe(np.stack([x, shifted])))
    np.testing.assert_allclose(centred[0, 6:26, 6:26], centred[1, 6:26, 6:26], atol=1e-5)
    assert "centre_intensity" not in [layer.name for layer in build_model(parse_config(tiny_config_text).model).layers]


def test_a_keras_file_with_centre_intensity_loads_as_saved(tiny_config_text, tmp_path):
    """The layer is registered with Keras: a .keras file holding it loads (safe mode) and predicts the same;
    under a mixed policy it computes in float32."""
    from flexunet.model.precision import precision_policy
    from flexunet.model.trained import _load_keras_file

    cfg = parse_config(tiny_config_text, overrides=["model.centre_intensity=True", "model.image_width=32",
                                                    "model.image_height=32"])
    model = build_model(cfg.model)
    path = tmp_path / "best_model.keras"
    model.save(path)
    x = np.stack([_brain(np.random.default_rng(i), 10.0 * i) for i in range(2)])
    np.testing.assert_allclose(np.asarray(_load_keras_file(path)(x)), np.asarray(model(x)), atol=1e-6)
    with precision_policy("bfloat16"):
        mixed = build_model(cfg.model)
    assert mixed.get_layer("centre_intensity").dtype_policy.compute_dtype == "float32"


def test_forward_flops_by_hand(tiny_config_text):
    # one level: two 3x3 convs (3->4, 4->4) at 64x64 and the 1x1 head 4->3
    m = dataclasses.replace(parse_config(tiny_config_text).model, num_layers=1)
    expected = 2 * 64 * 64 * 9 * (3 * 4 + 4 * 4) + 2 * 64 * 64 * 4 * 3
    assert forward_flops(build_model(m)) == expected


def test_under_a_mixed_policy_softmax_losses_metrics_and_batchnorm_stay_float32(tiny_config_text):
    """A tiny model built under mixed_bfloat16: convolutions compute in bfloat16; the output layer, the BatchNorm
    variables (moving statistics included), the loss and the metrics' counts are float32; one step trains."""
    import keras

    from flexunet.model.network import compile_model
    from flexunet.model.precision import precision_policy

    cfg = parse_config(tiny_config_text, overrides=["model.normalization=True", "model.image_width=32",
                                                    "model.image_height=32"])
    with precision_policy("bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        model = compile_model(cfg)
    assert keras.mixed_precision.global_policy().name == "float32"     # restored after
    assert model.get_layer("enc0_conv1").dtype_policy.compute_dtype == "bfloat16"
    assert model.get_layer("softmax").dtype_policy.compute_dtype == "float32" and model.output.dtype == "float32"
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and all(v.dtype == "float32" for layer in bn for v in layer.variables)
    assert {v.name for v in bn[0].variables} >= {"moving_mean", "moving_variance"}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, (2, 32, 32))]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert str(model.predict_on_batch(x).dtype) == "float32"
    assert keras.backend.standardize_dtype(model.loss(y, model(x, training=False)).dtype) == "float32"
    counts = [v for m in model.metrics for v in m.variables]
    assert counts and all(v.dtype == "float32" for v in counts)
    moving = bn[0].moving_mean.numpy()
    assert moving.dtype == np.float32 and np.any(moving != 0)          # the statistics did move, in float32


def test_members_are_networks_side_by_side_whose_output_is_the_mean_of_theirs(tiny_config_text):
    from flexunet.model.network import combine_members

    m = dataclasses.replace(parse_config(tiny_config_text).model, normalization=True, centre_intensity=True)
    nets = [build_model(m) for _ in range(3)]
    for k, net in enumerate(nets):   # BatchNorm statistics too: every stored variable must be copied
        bn = next(layer for layer in net.layers if "bn" in layer.name)
        bn.set_weights([w + 0.1 * (k + 1) for w in bn.get_weights()])
    combined = combine_members(m, nets)
    assert combined.count_params() == 3 * nets[0].count_params()
    names = {layer.name for layer in combined.layers}
    assert {"image", "input_normalize", "centre_intensity", "softmax", "m1_head", "m3_enc0_conv1"} <= names
    assert not names & {"head", "enc0_conv1"}                     # one network's names belong to members=1
    x = np.random.default_rng(0).uniform(0, 255, (2, m.image_height, m.image_width, m.image_channels))
    mean = np.mean([net.predict_on_batch(x.astype("float32")) for net in nets], axis=0)
    np.testing.assert_allclose(combined.predict_on_batch(x.astype("float32")), mean, atol=1e-6)
    assert [layer.name for layer in build_model(m).layers] == [layer.name for layer in nets[0].layers]
