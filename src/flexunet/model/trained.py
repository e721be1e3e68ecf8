"""The trained model of a run folder: loaded from the run's own network keys, its weights checked
against the network layer by layer (every layer gets its weights, every stored weight is used,
shapes and stored layer settings match), or a lone ``.keras`` file loaded as it was saved.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Iterable

from flexunet.config.loader import Config
from flexunet.model.precision import count_agreement, decide, inference_precision, precision_policy, write_record
from flexunet.model.run_folder import SAVED_CONFIG, best_model_path, saved_config
from flexunet.utils.errors import FlexUNetError

log = logging.getLogger(__name__)


def model_sha256(path: str | Path) -> str:
    """SHA-256 of a model file (read in chunks): evaluation.json records the one evaluated, so ``report``
    can tell when the run folder's best model has changed since."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _h5_signature(f) -> dict[str, list[tuple[int, ...]]]:
    """``{layer name: [weight shapes]}`` of a Keras 3 weights file (h5py File)."""
    out: dict[str, list[tuple[int, ...]]] = {}
    layers = f.get("layers")
    if layers is None:
        return out
    for key in layers:
        group = layers[key]
        vars_ = group.get("vars")
        name = str(vars_.attrs.get("name", key)) if vars_ is not None else key
        shapes = [tuple(vars_[i].shape) for i in sorted(vars_, key=int)] if vars_ is not None else []
        out[name] = shapes
    return out


def file_signature(path: Path) -> dict[str, list[tuple[int, ...]]]:
    """Layer names and weight shapes stored in a .weights.h5 or .keras file."""
    import h5py

    try:
        if path.name.endswith(".keras"):
            with zipfile.ZipFile(path) as zf:
                data = _io.BytesIO(zf.read("model.weights.h5"))
            with h5py.File(data, "r") as f:
                return _h5_signature(f)
        with h5py.File(path, "r") as f:
            return _h5_signature(f)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise FlexUNetError(f"{path}: cannot be read as a Keras model or weights file "
                            f"({' '.join(str(exc).split())[:200]}); expected a file written by "
                            f"'flexunet train'") from None


def model_signature(model) -> dict[str, list[tuple[int, ...]]]:
    return {layer.name: [tuple(int(d) for d in w.shape) for w in layer.weights] for layer in model.layers}


def check_weights(path: Path, model, saved: Path | None = None) -> None:
    """Refuse, naming the layer, a weights file that does not fit ``model`` exactly."""
    stored, built = file_signature(path), model_signature(model)
    hint = f"; the run's config is {saved}" if saved is not None else ""
    for name, shapes in built.items():
        if name not in stored:
            raise FlexUNetError(f"{path}: layer '{name}' of the network has no weights in the file; expected a "
                                f"file trained with the same [model] settings{hint}")
        if [tuple(s) for s in stored[name]] != shapes:
            raise FlexUNetError(f"{path}: layer '{name}' holds weights of shapes {stored[name]}, the network "
                                f"expects {shapes}; expected a file trained with the same [model] "
                                f"settings{hint}")
    extra = [n for n in stored if n not in built]
    if extra:
        raise FlexUNetError(f"{path}: layer '{extra[0]}' in the file is not in the network"
                            f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; expected a file "
                            f"trained with the same [model] settings{hint}")


_LAYER_KEYS = ("filters", "kernel_size", "dilation_rate", "activation", "rate", "scale", "strides")


def check_keras_config(path: Path, model) -> None:
    """Refuse a .keras file whose stored layer settings differ from the built network's."""
    try:
        with zipfile.ZipFile(path) as zf:
            stored = json.loads(zf.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return  # the weights check has already read this archive; nothing more to compare
    layers = {entry.get("config", {}).get("name"): entry.get("config", {})
              for entry in stored.get("config", {}).get("layers", [])}
    for layer in model.layers:
        have = layers.get(layer.name)
        if have is None:
            continue
        want = layer.get_config()
        for key in _LAYER_KEYS:
            if key in want and key in have and _norm(want[key]) != _norm(have[key]):
                raise FlexUNetError(f"{path}: layer '{layer.name}' was saved with {key} = {have[key]!r}, the "
                                    f"network has {want[key]!r}; expected a file trained with the same "
                                    f"[model] settings")


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def load_trained(cfg: Config, precision: str | None = None):
    """The trained best model of ``[train] model_dir``, built from the run's own [model] keys (not compiled),
    at ``precision`` (default: the run's record, :func:`flexunet.model.precision.inference_precision`:
    float32 unless the run trained lower and its predictions agree with float32's).

    A ``.keras`` file without the run's saved config beside it is its own truth: it is loaded
    as it was saved (safe mode: a file holding Python code is refused, never run).
    """
    from flexunet.model.network import build_model

    model_dir = Path(cfg.train.model_dir)
    path = best_model_path(model_dir)
    run = saved_config(model_dir)
    if run is None and path.name.endswith(".keras"):
        return _load_keras_file(path)
    settings = run.model if run is not None else cfg.model
    with precision_policy(precision or inference_precision(model_dir)):
        model = build_model(settings, seed=cfg.train.seed)
    saved = model_dir / SAVED_CONFIG if run is not None else None
    check_weights(path, model, saved)
    if path.name.endswith(".keras"):
        check_keras_config(path, model)
    try:
        model.load_weights(path)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise FlexUNetError(f"{path}: cannot be loaded as a FlexUNet model ({reason}); expected the best "
                            f"model written by 'flexunet train'") from None
    return model


def _load_keras_file(path: Path):
    import keras

    try:  # safe_mode: a file holding Python code (a Lambda layer) is refused, never run
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise FlexUNetError(f"{path}: cannot be loaded as a FlexUNet model ({reason}); expected the "
                            f"best_model.keras written by 'flexunet train'") from None


def check_precision(cfg: Config, trained: str, batches: Iterable[Any]) -> dict[str, Any]:
    """The run's best model on ``batches`` (the validation images, float32 (B, H, W, C)) in float32 and in
    ``trained``, the precision it trained in: the precision record (:mod:`flexunet.model.precision`),
    written to the run folder and returned.  A run trained in float32 predicts nothing here."""
    agree = total = images = 0
    if trained != "float32":
        reference, lower = load_trained(cfg, "float32"), load_trained(cfg, trained)
        for x in batches:
            a, b = count_agreement(reference.predict_on_batch(x), lower.predict_on_batch(x))
            agree, total, images = agree + a, total + b, images + len(x)
    record = decide(trained, agree, total, images)
    write_record(cfg.train.model_dir, record)
    if trained != "float32":
        log.info("precision: inference and evaluation run this model in %s (%s)", record["inference"], record["why"])
    return record
