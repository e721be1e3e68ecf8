"""Training callbacks with explicit, saveable state, so a resumed run continues exactly.

:class:`RunController` sets each epoch's learning rate from ``[train] lr_schedule`` and
``warmup_epochs`` (:func:`scheduled_lr`, times the reducer's factor; a function of the epoch,
so exact on ``--resume``), and does at each epoch end, in this order:

1. record the epoch's logs and learning rate in the history;
2. if the monitored value improved: save the best model (atomically), reset the counters;
   else count a bad epoch; after ``reducer_patience`` bad epochs multiply the learning rate
   by ``reducer_factor``; after ``patience`` bad epochs stop (EarlyStopping);
3. the collapse guard (:func:`flexunet.training.guard.find_collapse`): warn, or stop with ``on_collapse = "stop"``;
4. honour the stop file (``break_training`` beside the config);
5. write train_losses.csv, train_metrics.csv, their plots and history.json (atomically);
6. save the last-epoch checkpoint: weights, optimizer state, and this state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from flexunet.config.loader import Config
from flexunet.utils.errors import FlexUNetError
from flexunet.training.guard import Watched, collapse_message, find_collapse
from flexunet.utils.io import atomic_write, save_image, swap_dir, write_json, write_text
from flexunet.model.run_folder import CHECKPOINT

log = logging.getLogger(__name__)


def current_lr(model: keras.Model) -> float:
    return float(np.asarray(model.optimizer.learning_rate.value))


def monitor_mode(monitor: str) -> str:
    return "min" if "loss" in monitor else "max"


def initial_state(cfg: Config) -> dict:
    mode = monitor_mode(cfg.train.monitor)
    return {"epoch": 0, "best": math.inf if mode == "min" else -math.inf, "best_epoch": None,
            "reducer_wait": 0, "stop_wait": 0, "history": {}, "stopped_by": None}


def scheduled_lr(cfg: Config, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based) before the reducer's factor.

    1. warm-up: epoch e < ``warmup_epochs`` = W runs at (e + 1) / (W + 1) of ``[model] learning_rate``;
    2. then over the remaining ``epochs - W`` epochs, with progress p = (e - W) / (epochs - W):
       constant (the rate itself), poly ``(1 - p) ** 0.9`` or cosine ``(1 + cos(pi p)) / 2``.
    """
    t, base = cfg.train, cfg.model.learning_rate
    if epoch < t.warmup_epochs:
        return base * (epoch + 1) / (t.warmup_epochs + 1)
    progress = min(1.0, (epoch - t.warmup_epochs) / max(1, t.epochs - t.warmup_epochs))
    if t.lr_schedule == "poly":
        return base * (1.0 - progress) ** 0.9
    if t.lr_schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base


class RunController(keras.callbacks.Callback):
    """LR schedule, best checkpoint, LR reducer, early stopping, collapse guard, stop file, CSVs, resume point."""

    def __init__(self, cfg: Config, state: dict, best_path: Path,
                 shares: dict[int, tuple[float, float]] | None = None) -> None:
        """``shares``: class id -> its share of the training and validation mask pixels, for the
        foreground classes the training masks hold (the guard watches these; None: all, shares unknown)."""
        super().__init__()
        self.cfg = cfg
        self.state = state
        self.best_path = best_path
        self.mode = monitor_mode(cfg.train.monitor)
        self.stop_file = cfg.base_dir / "break_training"
        from flexunet.model.losses import metric_suffix

        if shares is None:
            shares = {i: (0.0, 0.0) for i in range(1, cfg.model.num_classes)}
        self.watched = {cfg.class_names[i]: Watched(metric_suffix(cfg.class_names[i]), *shares[i]) for i in shares}
        t = cfg.train
        self.scheduled = t.lr_schedule != "constant" or t.warmup_epochs > 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.scheduled:
            self.model.optimizer.learning_rate.assign(scheduled_lr(self.cfg, epoch) * self.state.get("lr_factor", 1.0))

    # 1-6 ---------------------------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        t = self.cfg.train
        if not math.isfinite(float(logs.get("loss", 0.0))):
            # NanGuard stopped this epoch: record nothing, so the checkpoint, best model and
            # curves keep the last good epoch and --resume never starts from NaN weights
            self.model.stop_training = True
            return
        lr = current_lr(self.model)
        logs["learning_rate"] = lr
        hist = self.state["history"]
        for key, value in logs.items():
            hist.setdefault(key, []).append(float(value))
        self.state["epoch"] = epoch + 1

        value = logs.get(t.monitor)
        if value is None:
            raise KeyError(f"[train] monitor = {t.monitor!r} is not among the logged values "
                           f"{sorted(logs)}")
        improved = value < self.state["best"] if self.mode == "min" else value > self.state["best"]
        if improved:
            log.info("epoch %d: %s improved %.5g -> %.5g; best model saved", epoch + 1, t.monitor,
                     self.state["best"], value)
            self.state.update(best=float(value), best_epoch=epoch + 1, reducer_wait=0, stop_wait=0)
            save_best(self.model, self.best_path, self.cfg, self.state)
        else:
            self.state["reducer_wait"] += 1
            self.state["stop_wait"] += 1
            if t.learning_rate_reducer and self.state["reducer_wait"] >= max(1, t.reducer_patience):
                new_lr = lr * t.reducer_factor
                self.model.optimizer.learning_rate.assign(new_lr)
                self.state["lr_factor"] = self.state.get("lr_factor", 1.0) * t.reducer_factor  # scales the schedule
                self.state["reducer_wait"] = 0
                log.info("epoch %d: %s did not improve for %d epochs; learning rate %.3g -> %.3g", epoch + 1,
                         t.monitor, t.reducer_patience, lr, new_lr)
            if t.patience and self.state["stop_wait"] >= t.patience:
                self.model.stop_training = True
                self.state["stopped_by"] = f"early stopping after {t.patience} epochs without improvement"
        self._guard(hist)
        if self.stop_file.exists():
            self.model.stop_training = True
            self.state["stopped_by"] = f"stop file {self.stop_file}"
            log.info("stop file %s found: training ends after epoch %d (file removed)", self.stop_file, epoch + 1)
            self.stop_file.unlink(missing_ok=True)
        write_curves(self.cfg, hist, self.state.get("collapse"))
        save_checkpoint(self.model, self.cfg.train.model_dir, self.state,
                        meta=run_metadata(self.cfg, current_best_name(self.best_path), self.state))

    def _guard(self, hist: dict) -> None:
        """3. the collapse guard: one line, once per collapse; with on_collapse = "stop", a network that
        predicts background only stops (one class collapsed while others are learning: a warning)."""
        found = find_collapse(hist, self.watched, self.cfg.train.collapse_patience)
        known = self.state.get("collapse") or {}
        key = ("class", "first_epoch", "all")
        if found is None or [known.get(k) for k in key] == [found[k] for k in key]:
            return
        found["message"] = collapse_message(self.cfg, found)
        found["action"] = self.cfg.train.on_collapse if found["all"] else "warn"
        self.state["collapse"] = found
        if found["action"] == "warn":
            log.warning("%s", found["message"])
        else:  # train raises TrainingStopped with the line when fit returns
            self.model.stop_training = True
            self.state["stopped_by"] = f"collapse of class '{found['class']}'"


class NanGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss and remember where it happened."""

    def __init__(self) -> None:
        super().__init__()
        self.where: tuple[int, int] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


class EpochChangeInferencer(keras.callbacks.Callback):
    """After each epoch: predict the first N images of [infer] images_dir (Epoch_<n>_<name>.png + montage).

    Inputs are read and fed exactly as ``flexunet infer`` does; the montage shows each
    prediction over its image, side by side, at half the model size.
    """

    def __init__(self, cfg: Config, images: list[Path]) -> None:
        super().__init__()
        from flexunet.model.predict import model_batch, read_input

        self.cfg = cfg
        self.images = images
        self.originals = [read_input(p, cfg) for p in images]
        self.batch = model_batch(self.originals, cfg)
        self.out = cfg.train.epoch_change_infer_dir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from PIL import Image

        from flexunet.dataset.masks import index_to_palette_image
        from flexunet.model.predict import overlay_image, predict_indices, resize_indices

        size = (max(1, self.cfg.model.image_width // 2), max(1, self.cfg.model.image_height // 2))
        tiles = []
        for path, original, index in zip(self.images, self.originals, predict_indices(self.model, self.batch)):
            save_image(self.out / f"Epoch_{epoch + 1}_{path.stem}.png",
                       index_to_palette_image(resize_indices(index, original.shape), self.cfg.mask.rgb_map))
            small = np.asarray(Image.fromarray(original).resize(size, Image.BILINEAR))
            small_index = resize_indices(index, small.shape)
            tiles.append(np.asarray(overlay_image(small, small_index, self.cfg.mask.rgb_map, (), 0.45)))
        save_image(self.out / f"Epoch_{epoch + 1}_montage.png", np.concatenate(tiles, axis=1))


# --------------------------------------------------------------------------- files


def save_best(model: keras.Model, path: Path, cfg: Config, state: dict) -> None:
    """The best model with its metadata (embedded and as model_meta.json); the other kind's file goes."""
    from flexunet.model.run_folder import drop_stale_best, write_meta

    meta = run_metadata(cfg, path.name, state)
    save_model(model, path, meta)
    write_meta(path.parent, meta)
    drop_stale_best(path.parent, path.name)


def current_best_name(best_path: Path) -> str:
    """The best-model file the run folder holds now (after a switch of kind, the older one until improved)."""
    from flexunet.model.run_folder import best_model_path

    try:
        return best_model_path(best_path.parent).name
    except FlexUNetError:
        return best_path.name


def run_metadata(cfg: Config, best_name: str, state: dict) -> dict:
    from flexunet.model.run_folder import metadata

    return metadata(cfg, best_name, state)


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
            from flexunet.model.run_folder import embed_meta

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
    from flexunet.model.trained import check_weights

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
    import zipfile

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


def write_curves(cfg: Config, hist: dict, collapse: dict | None = None) -> None:
    """train_losses.csv, train_metrics.csv (the original's formats), their plots, history.json
    (with the collapse guard's finding under ``collapse`` when it fired)."""
    eval_dir = cfg.train.eval_dir
    n = len(hist.get("loss", []))
    rows = ["epoch, loss, val_loss"]
    for e in range(n):
        rows.append(f"{e + 1}, {_fmt(hist, 'loss', e)}, {_fmt(hist, 'val_loss', e)}")
    write_text(eval_dir / "train_losses.csv", "\n".join(rows) + "\n")
    m0, m1 = (list(cfg.train.metrics) + ["", ""])[:2]
    rows = [f"epoch,{m0},{m1},"]
    for e in range(n):
        rows.append(f"{e + 1},{_fmt(hist, m0, e)},{_fmt(hist, m1, e)},")
    write_text(eval_dir / "train_metrics.csv", "\n".join(rows) + "\n")
    extra = {"collapse": collapse} if collapse else {}
    write_json(eval_dir / "history.json", {"epochs": list(range(1, n + 1)), **hist, **extra})
    _plot(eval_dir / "train_losses.png", "train_losses", hist, "loss", "val_loss")
    _plot(eval_dir / "train_metrics.png", "train_metrics", hist, m0, m1)


def _fmt(hist: dict, key: str, e: int) -> str:
    values = hist.get(key)
    return "" if not values or e >= len(values) else f"{values[e]:.6g}"


def _plot(path: Path, title: str, hist: dict, first: str, second: str) -> None:
    """The original's curve plot: 8x6 inches, green and red dashed lines, the CSV's stem as title."""
    from flexunet.utils.plots import new_figure, save_figure

    fig = new_figure(8, 6)
    ax = fig.add_subplot(1, 1, 1)
    for key, colour in ((first, "green"), (second, "red")):
        if hist.get(key):
            ax.plot(range(1, len(hist[key]) + 1), hist[key], linestyle="--", color=colour, label=key)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    save_figure(fig, path)
