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
5. write train_losses.csv, train_metrics.csv and history.json (atomically), and their plots when
   :data:`PLOT_EVERY_S` have passed since the last drawing (and once more at the end of training);
6. save the last-epoch checkpoint: weights, optimizer state, and this state
   (the best model and the checkpoint: :mod:`flexunet.training.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from flexunet.config.loader import Config, metric_suffix
from flexunet.dataset.masks import index_to_palette_image
from flexunet.model.postprocess import RECORD as POSTPROCESS_RECORD
from flexunet.model.precision import RECORD as PRECISION_RECORD
from flexunet.model.predict import model_batch, overlay_image, predict_indices, read_input, resize_indices
from flexunet.model.run_folder import metadata
from flexunet.training import averaging
from flexunet.training.checkpoint import current_best_name, monitor_mode, save_best, save_checkpoint
from flexunet.training.guard import Watched, collapse_message, find_collapse
from flexunet.utils.io import remove_path, save_image, write_json, write_text
from flexunet.utils.plots import new_figure, save_figure

log = logging.getLogger(__name__)


def current_lr(model: keras.Model) -> float:
    return float(np.asarray(model.optimizer.learning_rate.value))


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


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """``[train] ema``: the optimizer's moving averages of the weights are in the model while it is
    validated and from each epoch's end to the next epoch's start (so the best model and the checkpoint
    hold them, the raw weights waiting in the optimizer's average slots); training steps use the raw
    weights.  Unlike Keras's own callback, the last epoch does not overwrite the raw weights with the
    averages, so a finished run extended with ``--resume`` continues exactly; after ``fit`` the model
    holds raw weights again (train loads the best model's).  ``swapped``: the run resumes from a checkpoint."""

    def __init__(self, swapped: bool = False) -> None:
        super().__init__(swap_on_epoch=True)
        self._ema_weights_in_model = swapped

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


# the curve plots are redrawn after an epoch when this long has passed since the last drawing, and at the end
# of training: every epoch of a real run, not 2 figures per second of a tiny one
PLOT_EVERY_S = 20.0


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
        if shares is None:
            shares = {i: (0.0, 0.0) for i in range(1, cfg.model.num_classes)}
        self.watched = {cfg.class_names[i]: Watched(metric_suffix(cfg.class_names[i]), *shares[i]) for i in shares}
        t = cfg.train
        self.scheduled = t.lr_schedule != "constant" or t.warmup_epochs > 0
        self.plotted_at = -math.inf  # when the curve plots were last drawn (time.monotonic)
        self.plots_behind = False

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
            for record in (POSTPROCESS_RECORD, PRECISION_RECORD):   # chosen or checked for the previous best model
                remove_path(self.best_path.parent / record)
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
        if t.average_best > 1:
            averaging.keep(self.model, t.model_dir, self.state, epoch + 1, float(value), t.average_best, self.mode)
        self._guard(hist)
        if self.stop_file.exists():
            self.model.stop_training = True
            self.state["stopped_by"] = f"stop file {self.stop_file}"
            log.info("stop file %s found: training ends after epoch %d (file removed)", self.stop_file, epoch + 1)
            self.stop_file.unlink(missing_ok=True)
        # the CSVs and history.json every epoch; the plots (0.1-0.3 s each) at most every PLOT_EVERY_S, and at the end
        plots = time.monotonic() - self.plotted_at >= PLOT_EVERY_S
        write_curves(self.cfg, hist, self.state.get("collapse"), plots=plots)
        if plots:
            self.plotted_at = time.monotonic()
        self.plots_behind = not plots
        save_checkpoint(self.model, self.cfg.train.model_dir, self.state,
                        meta=metadata(self.cfg, current_best_name(self.best_path), self.state))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.plots_behind:
            plot_curves(self.cfg, self.state["history"])
            self.plots_behind = False

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
        self.cfg = cfg
        self.images = images
        self.originals = [read_input(p, cfg) for p in images]
        self.batch = model_batch(self.originals, cfg)
        self.out = cfg.train.epoch_change_infer_dir

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        size = (max(1, self.cfg.model.image_width // 2), max(1, self.cfg.model.image_height // 2))
        tiles = []
        indices = predict_indices(self.model, self.batch, foreground_weight=self.cfg.infer.foreground_weight)
        for path, original, index in zip(self.images, self.originals, indices):
            save_image(self.out / f"Epoch_{epoch + 1}_{path.stem}.png",
                       index_to_palette_image(resize_indices(index, original.shape), self.cfg.mask.rgb_map))
            small = np.asarray(Image.fromarray(original).resize(size, Image.BILINEAR))
            small_index = resize_indices(index, small.shape)
            tiles.append(np.asarray(overlay_image(small, small_index, self.cfg.mask.rgb_map, (), 0.45)))
        save_image(self.out / f"Epoch_{epoch + 1}_montage.png", np.concatenate(tiles, axis=1))


# --------------------------------------------------------------------------- files


def write_curves(cfg: Config, hist: dict, collapse: dict | None = None, plots: bool = True) -> None:
    """train_losses.csv, train_metrics.csv (the original's formats), history.json (with the collapse
    guard's finding under ``collapse`` when it fired) and, with ``plots``, their plots."""
    eval_dir = cfg.train.eval_dir
    n = len(hist.get("loss", []))
    rows = ["epoch, loss, val_loss"]
    for e in range(n):
        rows.append(f"{e + 1}, {_fmt(hist, 'loss', e)}, {_fmt(hist, 'val_loss', e)}")
    write_text(eval_dir / "train_losses.csv", "\n".join(rows) + "\n")
    m0, m1 = _curve_metrics(cfg)
    rows = [f"epoch,{m0},{m1},"]
    for e in range(n):
        rows.append(f"{e + 1},{_fmt(hist, m0, e)},{_fmt(hist, m1, e)},")
    write_text(eval_dir / "train_metrics.csv", "\n".join(rows) + "\n")
    extra = {"collapse": collapse} if collapse else {}
    write_json(eval_dir / "history.json", {"epochs": list(range(1, n + 1)), **hist, **extra})
    if plots:
        plot_curves(cfg, hist)


def _curve_metrics(cfg: Config) -> tuple[str, str]:
    """The two logged metrics train_metrics.csv and its plot show: the first two of ``[train] metrics``."""
    m0, m1 = (list(cfg.train.metrics) + ["", ""])[:2]
    return m0, m1


def plot_curves(cfg: Config, hist: dict) -> None:
    """train_losses.png and train_metrics.png: the CSVs' curves."""
    m0, m1 = _curve_metrics(cfg)
    _plot(cfg.train.eval_dir / "train_losses.png", "train_losses", hist, "loss", "val_loss")
    _plot(cfg.train.eval_dir / "train_metrics.png", "train_metrics", hist, m0, m1)


def _fmt(hist: dict, key: str, e: int) -> str:
    values = hist.get(key)
    return "" if not values or e >= len(values) else f"{values[e]:.6g}"


def _plot(path: Path, title: str, hist: dict, first: str, second: str) -> None:
    """The original's curve plot: 8x6 inches, green and red dashed lines, the CSV's stem as title."""
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
