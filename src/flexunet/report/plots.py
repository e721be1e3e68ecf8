"""The report's training curves: loss, per-class Dice and learning rate per epoch, the best epoch marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flexunet.config.loader import Config, metric_suffix
from flexunet.dataset.masks import palette_colours
from flexunet.utils.plots import new_figure, save_figure


def _class_colours(cfg: Config) -> list[tuple[float, float, float]]:
    colours = palette_colours(cfg.mask.rgb_map) / 255.0
    return [tuple(c) if 0.15 < c.sum() < 2.7 else (0.4, 0.4, 0.4) for c in colours]


def _epoch_axis(ax: Any, best_epoch: int | None) -> None:
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best epoch ({best_epoch})")
    ax.legend(fontsize="small")


def plot_loss(hist: Mapping[str, Any], loss_name: str, best_epoch: int | None, path: Path) -> Path:
    fig = new_figure(6.5, 4)
    ax = fig.add_subplot()
    epochs = hist["epochs"]
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if hist.get(key):
            ax.plot(epochs[:len(hist[key])], hist[key], style, marker=".", label=key)
    ax.set_title(f"Loss ({loss_name})")
    _epoch_axis(ax, best_epoch)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_dice(hist: Mapping[str, Any], cfg: Config, best_epoch: int | None, path: Path) -> Path:
    fig = new_figure(6.5, 4)
    ax = fig.add_subplot()
    epochs = hist["epochs"]
    colours = _class_colours(cfg)
    for k, name in enumerate(cfg.class_names[1:], start=1):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = hist.get(f"{prefix}dice_{metric_suffix(name)}")
            if values:
                ax.plot(epochs[:len(values)], values, style, marker=".", color=colours[k],
                        label=f"{'valid' if prefix else 'train'} {name}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Per-class Dice (solid: train, dashed: valid)")
    _epoch_axis(ax, best_epoch)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_learning_rate(hist: Mapping[str, Any], best_epoch: int | None, path: Path) -> Path:
    fig = new_figure(6.5, 3.2)
    ax = fig.add_subplot()
    values = hist["learning_rate"]
    ax.plot(hist["epochs"][:len(values)], values, "-", marker=".", color="tab:purple", label="learning rate")
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
    ax.set_title("Learning rate")
    _epoch_axis(ax, best_epoch)
    fig.tight_layout()
    return save_figure(fig, path)
