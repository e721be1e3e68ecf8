"""What a training run saves, so a resumed run continues exactly.

1. the best model (atomically, its metadata embedded and as model_meta.json beside it);
2. the last-epoch checkpoint ``last_checkpoint/``: weights, optimizer variables, the dropout
   generators' states and the run state (epoch, best value, counters, history), swapped in
   as one folder; :func:`recover_checkpoint` puts it back after a crash inside the swap and
   :func:`load_checkpoint` restores it, every file checked before the model changes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flexunet.config.loader import Config
from flexunet.model.run_folder import CHECKPOINT, best_model_path, drop_stale_best, embed_meta, metadata, write_meta
from flexunet.model.trained import check_weights
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import atomic_write, swap_dir, write_json

if TYPE_CHECKING:  # annotations only: this module never imports Keras
    import keras

log = logging.getLogger(__name__)


def monitor_mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def initial_state(cfg: Config) -> dict:
    mode = monitor_mode(cfg.train.monitor)
    return {"epoch": 0, "best": math.inf if mode == "min" else -math.inf, "best_epoch": None,
            "reducer_wait": 0, "stop_wait": 0, "history": {}, "stopped_by": None, "kept_epochs": []}


def save_best(model: keras.Model, path: Path, cfg: Config, state: dict) -> None:
    """The best model with its metadata (embedded and as model_meta.json); the other kind's file goes."""
    meta = metadata(cfg, path.name, state)
    save_model(model, path, meta)
    write_meta(path.parent, meta)
    drop_stale_best(path.parent, path.name)


def current_best_name(best_path: Path) -> str:
    """The best-model file the run folder holds now (after a switch of kind, the older one until improved)."""
    try:
        return best_model_path(best_path.parent).name
    except FlexUNetError:
        return best_path.name


def save_model(model: keras.Model, path: Path, meta: dict | None = None) -> None:
    """Save a full model (.keras) or weights (.weights.h5) atomically, ``meta`` embedded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else ".keras"
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name.removesuffix(suffix)}{suffix}")
    try:
        if suffix == ".keras":
            model.save(tmp)
        else:
            model.save_weights(tmp)
        if meta is not None:
            embed_meta(tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(model: keras.Model, model_dir: Path, state: dict, meta: dict | None = None) -> None:
    """The resume point: weights, optimizer variables and state, swapped in as one folder.

    state.json is written last, so a folder holding it is complete.  A crash between the
    two renames leaves ``.last_checkpoint.old-*`` (and the complete ``.tmp-*``), which
    :func:`recover_checkpoint` puts back.
    """
    final = model_dir / CHECKPOINT
    tmp = model_dir / f".{CHECKPOINT}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_weights(tmp / "model.weights.h5")
        opt_vars = {f"v{i}": np.asarray(v.value) for i, v in enumerate(model.optimizer.variables)}
        with atomic_write(tmp / "optimizer.npz") as fh:
            np.savez(fh, **opt_vars)
        with atomic_write(tmp / "rng.npz") as fh:  # dropout seed-generator states: not among the weights
            np.savez(fh, **{f"v{i}": np.asarray(v.value) for i, v in enumerate(_rng_variables(model))})
        if meta is not None:
            write_json(tmp / "model_meta.json", meta)
        write_json(tmp / "state.json", state)
        swap_dir(tmp, final)  # on failure the previous checkpoint stays the resume point
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_checkpoint(model_dir: Path) -> Path | None:
    """After a crash inside :func:`save_checkpoint`'s swap, put the newest complete checkpoint back.

    Returns the restored folder's former name, or None when nothing needed restoring.
    """
    final = model_dir / CHECKPOINT
    leftovers = sorted(model_dir.glob(f".{CHECKPOINT}.*-*"))
    restored = None
    if not final.exists():
        candidates = []
        for p in leftovers:
            try:
                epoch = int(json.loads((p / "state.json").read_text())["epoch"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # incomplete: state.json is written last
            candidates.append((epoch, p.name.startswith(f".{CHECKPOINT}.tmp-"), p))
        if candidates:
            epoch, _, restored = max(candidates)
            os.replace(restored, final)
            log.warning("%s: restored the checkpoint of epoch %d from %s (a previous run stopped while "
                        "saving it)", final, epoch, restored.name)
    if final.exists():  # the resume point is whole: what killed runs left half-written goes
        for p in leftovers:
            if p != restored:
                shutil.rmtree(p, ignore_errors=True)
    return restored


def _rng_variables(model: keras.Model) -> list:
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def load_checkpoint(model: keras.Model, model_dir: Path, cfg: Config | None = None) -> dict:
    """Restore weights and optimizer state; return the saved run state (with ``cfg``, the nulls JSON
    holds for non-finite numbers read back: no best yet -> +-inf as :func:`initial_state`, history -> NaN)."""
    folder = model_dir / CHECKPOINT
    for name in ("model.weights.h5", "optimizer.npz", "rng.npz"):
        if not (folder / name).is_file():
            raise FlexUNetError(f"{folder / name}: missing, so the checkpoint cannot be resumed exactly; restore "
                                f"the file, or start a new run with --overwrite (evaluate and infer can still "
                                f"use the best model as it is)")
    state = read_state(folder / "state.json")  # every file is read and checked before the model changes
    check_weights(folder / "model.weights.h5", model, model_dir / "train_eval_infer.config")
    values = _read_arrays(folder / "optimizer.npz")
    rng_values = _read_arrays(folder / "rng.npz")
    model.optimizer.build(model.trainable_variables)  # built, it takes its stored variables (none skipped)
    if len(values) != len(model.optimizer.variables):
        raise FlexUNetError(f"{folder}: optimizer state has {len(values)} variables, the configured "
                            f"optimizer {len(model.optimizer.variables)}; expected the config the run was "
                            f"started with (compare {model_dir / 'train_eval_infer.config'}: [model] "
                            f"optimizer and the model keys must not change) — or start again with --overwrite")
    rng = _rng_variables(model)
    if len(rng_values) < len(rng):
        raise _damaged(folder / "rng.npz", f"{len(rng_values)} of the {len(rng)} random-generator states")
    try:
        model.load_weights(folder / "model.weights.h5")
    except (ValueError, OSError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise FlexUNetError(f"{folder / 'model.weights.h5'}: cannot be loaded into the configured model "
                            f"({reason}); expected the config the run was started with (see "
                            f"{model_dir / 'train_eval_infer.config'}) — or start again with "
                            f"--overwrite") from None
    for var, value in zip(model.optimizer.variables, values):
        var.assign(value)
    for var, value in zip(rng, rng_values):
        var.assign(value)
    return state if cfg is None else _finite_state(state, cfg)


_RESUME_HINT = ("the checkpoint cannot be resumed; restore the file, or start a new run with --overwrite (evaluate "
                "and infer can still use the best model as it is)")


def _damaged(path: Path, what: str) -> FlexUNetError:
    return FlexUNetError(f"{path}: damaged ({what}); expected the file 'flexunet train' wrote — {_RESUME_HINT}")


def _read_arrays(path: Path) -> list[np.ndarray]:
    """``v0, v1, ...`` of a checkpoint's .npz, in order; a FlexUNetError naming the file when it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [f"v{i}" for i in range(len(data.files))]
            if sorted(data.files) != sorted(names):
                raise _damaged(path, f"holds {', '.join(sorted(data.files)[:3]) or 'no arrays'}, not v0, v1, ...")
            return [np.asarray(data[name]) for name in names]
    except FlexUNetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise _damaged(path, f"not a readable .npz archive: {' '.join(str(exc).split())[:120]}; truncated?") \
            from None


def read_state(path: Path) -> dict:
    """A checkpoint's state.json, checked: an object with an integer ``epoch`` >= 0 and, where present,
    the types :func:`initial_state` gives each key; a FlexUNetError naming the file when it is damaged."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        reason = (f"{exc.msg}: line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError)
                  else str(exc))
        raise _damaged(path, f"not valid JSON: {reason}; truncated?") from None
    problem = _state_problem(state)
    if problem:
        raise _damaged(path, problem)
    return state


def _state_problem(state) -> str | None:
    if not isinstance(state, dict):
        return "not a JSON object"

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not (is_int(state.get("epoch")) and state["epoch"] >= 0):
        return f"'epoch' is {state.get('epoch')!r}, expected an integer >= 0"
    checks = {"best": (lambda v: v is None or is_num(v), "a number or null"),
              "best_epoch": (lambda v: v is None or is_int(v), "an integer or null"),
              "reducer_wait": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
              "stop_wait": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
              "lr_factor": (lambda v: is_num(v) and v > 0, "a number > 0"),
              "stopped_by": (lambda v: v is None or isinstance(v, str), "a string or null"),
              "collapse": (lambda v: v is None or isinstance(v, dict), "an object or null"),
              "kept_epochs": (lambda v: isinstance(v, list) and all(
                  isinstance(p, list) and len(p) == 2 and is_int(p[0]) and is_num(p[1]) for p in v),
                  "a list of [epoch, value] pairs"),
              "history": (lambda v: isinstance(v, dict) and all(
                  isinstance(k, str) and isinstance(x, list) and all(e is None or is_num(e) for e in x)
                  for k, x in v.items()), "an object of lists of numbers")}
    for key, (ok, expected) in checks.items():
        if key in state and not ok(state[key]):
            return f"'{key}' is {json.dumps(state[key])[:60]}, expected {expected}"
    return None


def _finite_state(state: dict, cfg: Config) -> dict:
    """state.json as the run keeps it in memory: JSON's nulls back to the non-finite numbers they were."""
    for key, value in initial_state(cfg).items():  # a key an older state.json lacks: its starting value
        state.setdefault(key, value)
    if state.get("best") is None:
        state["best"] = initial_state(cfg)["best"]
    state["history"] = {k: [math.nan if v is None else v for v in values] if isinstance(values, list) else values
                        for k, values in (state.get("history") or {}).items()}
    return state
