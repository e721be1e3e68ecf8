"""``flexunet export``: the best model as a deployable file, checked against the Keras model.

Formats:

* ``keras``: a ``.keras`` file without optimizer state (``keras.models.load_model``);
* ``savedmodel``: a TensorFlow SavedModel folder (``model.export``) for TF Serving, with a
  ``serve`` endpoint taking float32 (N, H, W, C) images in 0..255;
* ``onnx``: an ONNX file through tf2onnx (the optional ``onnx`` extra:
  ``pip install 'flexunet[onnx]'``), checked with onnxruntime.

The export is written beside its target under a temporary name, reloaded, run on sample
inputs and compared with the Keras model (max absolute difference <= ``ATOL``); only then
is it renamed into place.  Default targets: ``<[train] model_dir>/export/model.keras``,
``.../export/saved_model/``, ``.../export/model.onnx``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config
from flexunet.model.trained import load_trained
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import remove_path, swap_dir
from flexunet.utils.outputs import (OWNER_FILE, check_output_file, check_whole_dir, claim_output_dir, claim_output_file,
                                    is_run_folder, overlap)

log = logging.getLogger(__name__)

FORMATS = ("keras", "savedmodel", "onnx")
DEFAULT_NAMES = {"keras": "model.keras", "savedmodel": "saved_model", "onnx": "model.onnx"}
ATOL = 1e-5
ONNX_OPSET = 17


def sample_inputs(model: Any, count: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic float32 images in 0..255 of the model's input shape."""
    _, h, w, c = model.inputs[0].shape
    h, w = h or 64, w or 64
    return np.random.default_rng(seed).uniform(0.0, 255.0, (count, h, w, c)).astype(np.float32)


def check_same(reference: np.ndarray, exported: np.ndarray, what: str, atol: float = ATOL) -> float:
    """Max absolute difference; a FlexUNetError when it exceeds ``atol``."""
    reference, exported = np.asarray(reference), np.asarray(exported)
    if reference.shape != exported.shape:
        raise FlexUNetError(f"{what}: output shape {exported.shape}, expected {reference.shape} as the "
                            f"Keras model; the export is not usable")
    diff = float(np.max(np.abs(reference - exported)))
    if not diff <= atol:
        raise FlexUNetError(f"{what}: outputs differ from the Keras model by up to {diff:.3g} "
                            f"(tolerance {atol:g}); the export is not faithful")
    return diff


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as exc:
        raise FlexUNetError(f"--format onnx needs the optional 'onnx' extra (tf2onnx, onnxruntime; "
                            f"{exc.name or exc} is missing): pip install 'flexunet[onnx]'") from None
    return tf2onnx, onnxruntime


def _save_keras(model: Any, tmp: Path) -> Callable[[np.ndarray], np.ndarray]:
    import keras

    model.save(tmp)
    loaded = keras.models.load_model(tmp, compile=False)
    return lambda x: np.asarray(loaded.predict_on_batch(x))


def _save_savedmodel(model: Any, tmp: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    model.export(str(tmp), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(tmp))
    return lambda x: np.asarray(loaded.serve(tf.constant(x)))


def _save_onnx(model: Any, tmp: Path) -> Callable[[np.ndarray], np.ndarray]:
    tf2onnx, ort = _onnx_modules()
    import tensorflow as tf

    _, h, w, c = model.inputs[0].shape
    spec = (tf.TensorSpec((None, h, w, c), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"softmax": model(image, training=False)}

    tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET, output_path=str(tmp))
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: x})[0])


_SAVERS = {"keras": _save_keras, "savedmodel": _save_savedmodel, "onnx": _save_onnx}


def _target(cfg: Config, fmt: str, out: Path | None, overwrite: bool) -> Path:
    target = Path(out) if out is not None else Path(cfg.train.model_dir) / "export" / DEFAULT_NAMES[fmt]
    if fmt == "keras" and target.suffix != ".keras":
        raise FlexUNetError(f"{target}: a Keras export needs a file name ending in .keras")
    if fmt == "onnx" and target.suffix != ".onnx":
        raise FlexUNetError(f"{target}: an ONNX export needs a file name ending in .onnx")
    if fmt == "savedmodel" and target.exists() and not target.is_dir():
        raise FlexUNetError(f"{target}: is a file; a SavedModel export is a folder — give a folder path")
    if fmt != "savedmodel" and target.is_dir():
        raise FlexUNetError(f"{target}: is a folder; expected a file path for --format {fmt}")
    _check_run_folders(cfg, target)
    inputs = input_folders(cfg)
    if fmt == "savedmodel":  # a folder built whole: new, empty, or export's own earlier SavedModel
        check_whole_dir(target, "export", overwrite, "--out", inputs)
    else:
        check_output_file(target, "export", overwrite, "--out", inputs)
    return target


def _check_run_folders(cfg: Config, target: Path) -> None:
    """An export goes under its own run's <model_dir>/export/ or outside every run folder: it must
    never replace a trained model, this run's or another's."""
    model_dir = Path(cfg.train.model_dir)
    relation = overlap(target, model_dir)
    if relation and overlap(target, model_dir / "export") != "is inside":
        raise FlexUNetError(f"--out {target}: {relation} the run folder {model_dir}; an export goes under "
                            f"{model_dir / 'export'} or outside the run folder (it must never replace the "
                            f"trained model)")
    for parent in target.resolve().parents:
        if is_run_folder(parent) and not overlap(parent, model_dir):
            raise FlexUNetError(f"--out {target}: lies inside {parent}, the run folder of another training run; "
                                f"`flexunet export` writes only under {model_dir / 'export'} or outside run folders")


def export_model(cfg: Config, fmt: str, out: Path | None = None, model: Any = None,
                 overwrite: bool = False) -> Path:
    """Export the best model (or ``model``) as ``fmt``; verify it against Keras; return its path.

    The target is a new path, or export's own earlier export with ``overwrite``; never a file or
    folder it did not write, never inside a run folder but under its own run's export/
    (flexunet.utils.outputs)."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise FlexUNetError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    target = _target(cfg, fmt, out, overwrite)
    if fmt == "onnx":
        _onnx_modules()  # fail before loading the model
    if model is None:
        model = load_trained(cfg, "float32")  # a deployable model: float32, whatever the run trained in
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    remove_path(tmp)
    try:
        run = _SAVERS[fmt](model, tmp)
        x = sample_inputs(model)
        diff = check_same(np.asarray(model.predict_on_batch(x)), run(x), f"{target} ({fmt})")
        if tmp.is_dir():  # a folder swapped whole, its record inside
            claim_output_dir(tmp, "export", [p.name for p in tmp.iterdir() if p.name != OWNER_FILE])
            swap_dir(tmp, target)
        else:
            os.replace(tmp, target)
            claim_output_file(target, "export")
    finally:
        remove_path(tmp)
    log.info("exported %s model to %s (max |difference| from Keras on %d sample images: %.2g)", fmt, target,
             len(x), diff)
    return target
