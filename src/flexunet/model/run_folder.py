"""The run folder (``[train] model_dir``): its files and its metadata (the trained model in it:
:mod:`flexunet.model.trained`).

A run folder is the truth about the network it holds:

1. ``train_eval_infer.config`` (the resolved config the run used) fixes the architecture
   keys of ``[model]`` and what the inputs and outputs mean (:data:`RUN_KEYS`);
   :func:`apply_run` takes them from there and says, one line per key, where the config
   given on the command line differs (``strict``: an error instead);
2. ``model_meta.json`` (beside the best model and inside ``last_checkpoint/``, and embedded
   in the best model file) records those keys, the class names and colours, versions, the
   split's hash and which best-model file is current: the one the run wrote last;
3. :func:`flexunet.model.trained.load_trained` builds the network from the run's keys and loads the weights
   strictly: every layer gets its weights, every stored weight is used, shapes match.

A run folder written before the metadata existed still loads: the newest best-model file
wins, and the weights are checked the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Mapping

from flexunet import __version__
from flexunet.config.loader import Config, _validate, load_config
from flexunet.dataset.records import find_split, sha256
from flexunet.utils.errors import ConfigError, FlexUNetError
from flexunet.utils.io import json_text, write_json

log = logging.getLogger(__name__)

BEST_KERAS = "best_model.keras"
BEST_WEIGHTS = "best_model.weights.h5"
BEST_NAMES = (BEST_KERAS, BEST_WEIGHTS)
CHECKPOINT = "last_checkpoint"
SAVED_CONFIG = "train_eval_infer.config"
META = "model_meta.json"
META_IN_KERAS = "flexunet_meta.json"   # member of the .keras zip
META_ATTR = "flexunet_meta"            # root attribute of a .weights.h5 file
MEMBERS = "members"                    # [model] members: member k is a run folder of its own in members/k/

ARCHITECTURE_KEYS = ("model", "image_width", "image_height", "image_channels", "input_normalize",
                     "centre_intensity", "normalization", "num_classes", "base_filters", "max_filters",
                     "base_kernels", "num_layers", "dropout_rate", "dilation", "activation", "final_activation", "members")
# (section, key) the run folder decides: the network, and what its inputs and outputs mean
RUN_KEYS: tuple[tuple[str, str], ...] = (
    *(("model", k) for k in ARCHITECTURE_KEYS),
    ("image", "color_order"), ("mask", "rgb_map"), ("dataset", "class_names"),
    ("prepare", "window_center"), ("prepare", "window_width"), ("prepare", "three_windows"),
)


def best_model_name(cfg: Config) -> str:
    """The best-model file a run with this config writes."""
    return BEST_WEIGHTS if cfg.train.save_weights_only else BEST_KERAS


# --------------------------------------------------------------------------- the saved config


def saved_config(model_dir: str | Path) -> Config | None:
    """The resolved config a run saved in ``model_dir`` (None when there is none)."""
    path = Path(model_dir) / SAVED_CONFIG
    if not path.is_file():
        return None
    quiet = logging.getLogger("flexunet.config.loader")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # keys a later version no longer knows are not the user's concern here
    try:
        return load_config(path)
    except ConfigError as exc:
        raise FlexUNetError(f"{path}: the run's saved config cannot be read ({exc}); expected the file "
                            f"'flexunet train' wrote (restore it, or train again with --overwrite)") from None
    finally:
        quiet.setLevel(level)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def differences(cfg: Config, run: Config, keys=RUN_KEYS) -> list[tuple[str, str, Any, Any]]:
    """``(section, key, given, run)`` for each run key where the two configs differ."""
    out = []
    for section, key in keys:
        given, used = getattr(getattr(cfg, section), key), getattr(getattr(run, section), key)
        if given != used:
            out.append((section, key, given, used))
    return out


def merge(cfg: Config, values: Mapping[tuple[str, str], Any]) -> Config:
    """``cfg`` with ``{(section, key): value}`` replaced (several sections at once), validated."""
    by_section: dict[str, dict[str, Any]] = {}
    for (section, key), value in values.items():
        by_section.setdefault(section, {})[key] = value
    changes = {s: dataclasses.replace(getattr(cfg, s), **kv) for s, kv in by_section.items()}
    out = dataclasses.replace(cfg, **changes)
    _validate(out)
    return out


def apply_run(cfg: Config, strict: bool = False, extra_keys: tuple[tuple[str, str], ...] = ()) -> Config:
    """``cfg`` with the run folder's :data:`RUN_KEYS` (and ``extra_keys``); one line per differing key.

    With ``strict`` a difference is a ConfigError naming every differing key.  A folder
    without a saved config (not trained yet) leaves ``cfg`` as it is.
    """
    model_dir = cfg.train.model_dir
    run = saved_config(model_dir)
    if run is None:
        return cfg
    diffs = differences(cfg, run, RUN_KEYS + tuple(extra_keys))
    if not diffs:
        return cfg
    saved = model_dir / SAVED_CONFIG
    lines = [f"{saved}: [{s}] {k}: the run was trained with {_shown(used)}, the config says {_shown(given)}; "
             f"using {_shown(used)}" for s, k, given, used in diffs]
    if strict:
        keys = ", ".join(f"[{s}] {k}" for s, k, _, _ in diffs)
        raise ConfigError(f"{saved}: the config differs from the run in {keys} (the run was trained with "
                          f"{'; '.join(f'{k} = {_shown(u)}' for _, k, _, u in diffs)}); --strict: set the "
                          f"run's values or drop --strict to use them")
    for line in lines:
        log.warning(line)
    return merge(cfg, {(s, k): used for s, k, _, used in diffs})


# --------------------------------------------------------------------------- metadata


def split_hash(cfg: Config) -> str | None:
    """SHA-256 of the split.json the training subset belongs to (:func:`records.find_split`), else None."""
    path = find_split(cfg.train.images_dir, cfg)
    return sha256(path) if path is not None else None


def metadata(cfg: Config, best_name: str, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record a best model and a checkpoint carry: enough to run the model without guessing."""
    import keras
    import tensorflow as tf

    m = cfg.model
    colours = {index: list(rgb) for rgb, index in cfg.mask.rgb_map.items()}
    state = state or {}
    return {
        "format": 1,
        "best_model": best_name,
        "epoch": state.get("epoch"), "best_epoch": state.get("best_epoch"),
        "monitor": cfg.train.monitor, "best": state.get("best"),
        "averaged_epochs": state.get("averaged_epochs"),  # [train] average_best: the epochs the best model averages
        "members": state.get("members"),  # [model] members: each member's seed, epochs and best epoch
        "input": {"height": m.image_height, "width": m.image_width, "channels": m.image_channels,
                  "normalize": m.input_normalize, "color_order": cfg.image.color_order},
        "classes": [{"index": i, "name": name, "colour": colours.get(i)} for i, name in enumerate(cfg.class_names)],
        "config": {f"{s}.{k}": _jsonable(getattr(getattr(cfg, s), k)) for s, k in RUN_KEYS},
        "split_sha256": split_hash(cfg),
        "speed": state.get("speed"),   # XLA and the precision the run trained in, and why (autotune.settle)
        "versions": {"flexunet": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def embed_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Put ``meta`` inside a model file: a root attribute of .weights.h5, a member of the .keras zip."""
    text = json_text(meta, indent=1)
    if path.name.endswith(".keras"):
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr(META_IN_KERAS, text)
    else:
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs[META_ATTR] = text


_EXPECTED_META = f"the {META} 'flexunet train' writes"


def _kind_of(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false", type(None): "null",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with a metadata record's types (None when nothing): the keys flexunet reads."""
    if not isinstance(meta, dict):
        return f"{_kind_of(meta)}, not an object"
    int_ = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
    num = (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
    str_ = (lambda v: isinstance(v, str), "a string")
    bool_ = (lambda v: isinstance(v, bool), "true or false")
    obj = (lambda v: isinstance(v, dict), "an object")
    arr = (lambda v: isinstance(v, list), "an array")

    def check(doc: dict, key: str, kind: tuple, where: str, required: bool = False,
              nullable: bool = True) -> str | None:
        if key not in doc:
            return f"no '{where}{key}'" if required else None
        value = doc[key]
        if (value is None and nullable and not required) or kind[0](value):
            return None
        return f"'{where}{key}' is {_kind_of(value)}, expected {kind[1]}"

    # (key, kind, required, null allowed)
    top = [("best_model", str_, True, False), ("format", int_, False, True), ("epoch", int_, False, True),
           ("best_epoch", int_, False, True), ("best", num, False, True), ("monitor", str_, False, True),
           ("input", obj, False, False), ("classes", arr, False, False), ("config", obj, False, False),
           ("split_sha256", str_, False, True), ("versions", obj, False, False)]
    for key, kind, required, nullable in top:
        problem = check(meta, key, kind, "", required, nullable)
        if problem:
            return problem
    for key, kind in (("height", int_), ("width", int_), ("channels", int_), ("normalize", bool_),
                      ("color_order", str_)):
        problem = check(meta.get("input") or {}, key, kind, "input.")
        if problem:
            return problem
    problem = check(meta, "members", arr, "")
    if problem:
        return problem
    for i, entry in enumerate(meta.get("members") or []):
        if not isinstance(entry, dict):
            return f"'members.{i}' is {_kind_of(entry)}, expected an object"
    for i, entry in enumerate(meta.get("classes") or []):
        if not isinstance(entry, dict):
            return f"'classes.{i}' is {_kind_of(entry)}, expected an object"
        for key, kind in (("index", int_), ("name", str_)):
            problem = check(entry, key, kind, f"classes.{i}.", required=True)
            if problem:
                return problem
        colour = entry.get("colour")
        if colour is not None and not (isinstance(colour, list) and len(colour) == 3
                                       and all(int_[0](c) for c in colour)):
            return f"'classes.{i}.colour' is not [r, g, b]"
    return None


def parse_meta(text: str | bytes, source: str | Path) -> dict[str, Any]:
    """A metadata record read from ``source``; a FlexUNetError saying it is damaged (not JSON, or keys of
    the wrong type) and what was expected."""
    try:
        meta = json.loads(text)
    except ValueError as exc:
        reason = (f"{exc.msg}: line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                  else str(exc))
        raise _damaged_meta(source, f", not valid JSON ({reason}; truncated?)") from None
    problem = _meta_problem(meta)
    if problem:
        raise _damaged_meta(source, f" model metadata ({problem})")
    return meta


def _damaged_meta(source: str | Path, what: str) -> FlexUNetError:
    return FlexUNetError(f"{source}: damaged{what}; expected {_EXPECTED_META} (restore it, or train again)")


def _read_meta_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise FlexUNetError(f"{path}: cannot be read ({exc.strerror}); expected {_EXPECTED_META}") from None
    return parse_meta(text, path)


def read_meta(target: str | Path) -> dict[str, Any] | None:
    """The metadata of a run folder, a checkpoint folder or a model file (None when it has none).

    Metadata that is there but damaged (truncated JSON, keys of the wrong type) is a FlexUNetError
    naming the file.
    """
    target = Path(target)
    if target.is_dir():
        path = target / META
        if path.is_file():
            return _read_meta_file(path)
        return None
    if target.name == META:
        return _read_meta_file(target)
    if target.suffix == ".json":
        try:
            meta = json.loads(target.read_text())
        except (OSError, ValueError):
            raise FlexUNetError(f"{target}: not readable as JSON (damaged or not JSON); expected a {META} written "
                                f"by 'flexunet train'") from None
        if not (isinstance(meta, dict) and "best_model" in meta):
            return None
        problem = _meta_problem(meta)
        if problem:
            raise _damaged_meta(target, f" model metadata ({problem})")
        return meta
    if target.name.endswith(".keras"):
        try:
            with zipfile.ZipFile(target) as zf:
                if META_IN_KERAS in zf.namelist():
                    return parse_meta(zf.read(META_IN_KERAS), f"{target} ({META_IN_KERAS} inside)")
        except (zipfile.BadZipFile, OSError, EOFError):
            raise FlexUNetError(f"{target}: not a .keras model file (not a zip archive, or truncated)") from None
    elif target.name.endswith(".h5"):
        import h5py

        try:
            with h5py.File(target, "r") as f:
                text = f.attrs.get(META_ATTR)
        except OSError:
            raise FlexUNetError(f"{target}: not an HDF5 weights file") from None
        if text is not None:
            return parse_meta(text, f"{target} (attribute {META_ATTR})")
    sibling = target.parent / META
    if sibling.is_file():
        meta = _read_meta_file(sibling)
        if meta.get("best_model") == target.name:
            return meta
    return None


def write_meta(model_dir: Path, meta: Mapping[str, Any]) -> None:
    write_json(Path(model_dir) / META, dict(meta))


def drop_stale_best(model_dir: Path, current: str) -> None:
    """Remove the other kind of best-model file, so the file written last is the only one."""
    for name in BEST_NAMES:
        if name != current and (Path(model_dir) / name).exists():
            (Path(model_dir) / name).unlink()
            log.info("%s: removed the older %s (this run now saves %s)", model_dir, name, current)


# --------------------------------------------------------------------------- the best model


def member_dir(model_dir: str | Path, k: int) -> Path:
    """Member ``k``'s run folder (1..K) in a ``[model] members`` run folder."""
    return Path(model_dir) / MEMBERS / str(k)


def best_model_path(model_dir: str | Path) -> Path:
    """The best model a run left in ``model_dir``: the one its metadata names, else the newest."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir) if (model_dir / META).is_file() else None
    if meta and (model_dir / str(meta.get("best_model"))).is_file():
        return model_dir / meta["best_model"]
    found = [model_dir / n for n in BEST_NAMES if (model_dir / n).is_file()]
    if not found:
        raise FlexUNetError(f"{model_dir}: no {BEST_KERAS} or {BEST_WEIGHTS}; expected a folder written by "
                            f"'flexunet train' (check [train] model_dir)")
    return max(found, key=lambda p: p.stat().st_mtime_ns)
