"""flexunet export: each format round-trips to the Keras model's outputs (atol 1e-5)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from flexunet.config.loader import parse_config
from flexunet.utils.errors import FlexUNetError
from flexunet.inference.export import check_same, export_model, sample_inputs
from flexunet.model.network import build_model

CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
num_layers = 2

[train]
model_dir = "models"

[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
"""


@pytest.fixture
def trained(tmp_path: Path):
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    keras.utils.set_random_seed(0)
    model = build_model(cfg.model)
    (tmp_path / "models").mkdir()
    model.save(tmp_path / "models" / "best_model.keras")
    x = np.random.default_rng(7).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    return cfg, tmp_path, np.asarray(model.predict_on_batch(x)), x


def test_keras_export_round_trips(trained):
    cfg, root, expected, x = trained
    path = export_model(cfg, "keras")
    assert path == root / "models" / "export" / "model.keras" and path.is_file()
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(np.asarray(loaded.predict_on_batch(x)), expected, atol=1e-5)
    custom = export_model(cfg, "keras", out=root / "deploy" / "stroke.keras")
    assert custom.is_file() and not list((root / "deploy").glob(".tmp-*"))


def test_savedmodel_export_round_trips_and_replaces_an_old_one(trained):
    import tensorflow as tf

    cfg, root, expected, x = trained
    path = export_model(cfg, "savedmodel")
    assert path == root / "models" / "export" / "saved_model" and (path / "saved_model.pb").is_file()
    loaded = tf.saved_model.load(str(path))          # keep a reference: its variables live with it
    served = loaded.serve(tf.constant(x))
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-5)
    with pytest.raises(FlexUNetError, match="holds the output of an earlier `flexunet export`; pass --overwrite"):
        export_model(cfg, "savedmodel")
    again = export_model(cfg, "savedmodel", overwrite=True)  # its own earlier export: replaced whole
    assert again == path and (path / "saved_model.pb").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["saved_model"]


def test_onnx_export_round_trips_or_names_the_extra(trained):
    cfg, root, expected, x = trained
    available = all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnxruntime"))
    if os.environ.get("CI") and not available:  # CI installs the onnx extra: the round trip must run there
        pytest.fail("CI: the 'onnx' extra (tf2onnx, onnxruntime) is not installed; "
                    ".ci/run installs .[cpu,test,onnx]")
    if not available:
        with pytest.raises(FlexUNetError, match=r"'onnx' extra.*pip install 'flexunet\[onnx\]'"):
            export_model(cfg, "onnx")
        assert not (root / "models" / "export" / "model.onnx").exists()
        return
    import onnxruntime

    path = export_model(cfg, "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_onnx_without_the_extra_names_it(trained, monkeypatch):
    cfg, root, _, _ = trained
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if the extra were not installed
    with pytest.raises(FlexUNetError, match=r"'onnx' extra.*tf2onnx is missing.*pip install 'flexunet\[onnx\]'"):
        export_model(cfg, "onnx")
    assert not (root / "models" / "export" / "model.onnx").exists()


def test_bad_format_and_paths_are_clear_errors(trained):
    cfg, root, _, _ = trained
    with pytest.raises(FlexUNetError, match="--format tflite: expected one of keras, savedmodel, onnx"):
        export_model(cfg, "tflite")
    with pytest.raises(FlexUNetError, match=r"model\.h5: a Keras export needs a file name ending in \.keras"):
        export_model(cfg, "keras", out=root / "model.h5")
    (root / "models" / "best_model.keras").unlink()
    with pytest.raises(FlexUNetError, match="best_model"):
        export_model(cfg, "keras")


def test_train_curves_folder_is_no_run_folder_and_another_run_is(trained):
    """eval_dir (train's curves) was refused as "the run folder of another training run"."""
    from flexunet.utils.outputs import claim_output_dir

    cfg, root, _, _ = trained
    claim_output_dir(root / "eval", "train", ["history.json", "train_losses.csv"])
    claim_output_dir(root / "old_run", "train", ["best_model.keras", "last_checkpoint"])
    with pytest.raises(FlexUNetError, match="lies inside .*old_run, the run folder of another training run"):
        export_model(cfg, "keras", out=root / "old_run" / "model.keras")
    assert export_model(cfg, "keras", out=root / "eval" / "model.keras").is_file()


def test_check_same_refuses_a_different_output(trained):
    _, _, expected, _ = trained
    assert check_same(expected, expected + 1e-7, "x") <= 1e-6
    with pytest.raises(FlexUNetError, match="differ from the Keras model"):
        check_same(expected, expected + 1e-3, "x")
    with pytest.raises(FlexUNetError, match="shape"):
        check_same(expected, expected[:1], "x")


def test_sample_inputs_are_deterministic(trained):
    cfg, _, _, _ = trained
    model = build_model(cfg.model)
    a, b = sample_inputs(model), sample_inputs(model)
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.float32 and np.array_equal(a, b)
    assert 0 <= a.min() and a.max() <= 255


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    cfg = parse_config(CONFIG, base_dir=tmp_path)
    mine = tmp_path / "my_models"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"my_models: holds 1 entry `flexunet export` did not write "
                                                r"\(precious.txt\); it builds this folder whole"):
            export_model(cfg, "savedmodel", out=mine, model=object(), overwrite=overwrite)
    assert (mine / "precious.txt").read_text() == "keep me"
