"""The collapse guard: is the network still predicting every foreground class it should?

Pure functions of the training history (``pred_<class>`` and ``val_pred_<class>``: the share
of pixels each class is predicted on) and of each class's share of the mask pixels; the
training callback (:class:`flexunet.training.callbacks.RunController`) calls them after every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from flexunet.config.loader import Config

STARVED = 0.05  # a class predicted on under this share of the pixels its masks hold is "not predicted"
SLOW_LOSS = 0.02  # a training loss falling by less than this share per epoch is not learning it either


@dataclass(frozen=True)
class Watched:
    """A foreground class the guard watches: its metric suffix and its share of the mask pixels."""

    suffix: str
    train_share: float = 0.0  # 0: unknown, then only a class predicted nowhere counts as starved
    valid_share: float = 0.0


def _starved(pred: float, share: float) -> bool:
    return pred < STARVED * share if share > 0 else pred <= 0


def find_collapse(hist: dict, classes: dict[str, Watched], patience: int) -> dict | None:
    """A foreground class the network has stopped predicting, or None.

    A class has collapsed when, for the last ``patience`` epochs (or more) in a row, it was
    predicted on under ``STARVED`` (5%) of its share of the training mask pixels, on training
    (``pred_<class>``) and on validation (``val_pred_<class>``, when the validation masks hold
    it; a small validation set's own share is too noisy to judge by), while the training loss fell by less than ``SLOW_LOSS`` (2%) per epoch over those
    epochs: the network predicts (almost) none of it and is not getting out of it.  A rare
    class that starts late does so while the loss still falls: it is left alone.  ``all`` in
    the result: every watched class has collapsed (the network predicts background only).
    """
    losses = hist.get("loss", [])
    window = losses[-max(2, patience):]
    if len(window) < 2 or window[0] - min(window) >= SLOW_LOSS * (len(window) - 1) * abs(window[0]):
        return None
    found = []
    for name, w in classes.items():
        train, valid = hist.get(f"pred_{w.suffix}", []), hist.get(f"val_pred_{w.suffix}", [])
        run = 0
        for e in range(len(train) - 1, -1, -1):
            if not _starved(train[e], w.train_share):
                break
            if w.valid_share > 0 and e < len(valid) and not _starved(valid[e], w.train_share):
                break
            run += 1
        if run >= patience:
            found.append({"class": name, "first_epoch": len(train) - run + 1, "epoch": len(train),
                          "share": w.train_share, "pred": float(train[-1]),
                          "val_pred": float(valid[-1]) if valid else None})
    if not found:
        return None
    return {**found[0], "all": len(found) == len(classes)}


def collapse_message(cfg: Config, found: dict) -> str:
    """The guard's one line: the class, the epochs, the likely fixes."""
    m = cfg.model
    fixes = [f"a lower [model] learning_rate (now {m.learning_rate:g})"]
    if not m.normalization:
        fixes.insert(0, "[model] normalization = True")
    if m.loss not in ("ce_dice", "bce_dice_loss"):
        fixes.append('[model] loss = "ce_dice"')
    if cfg.train.output_bias != "prior":
        fixes.append('[train] output_bias = "prior"')
    fixes.append("or a config written by `flexunet plan`")
    share = f" ({100 * found['share']:.3g}% of the training pixels)" if found.get("share") else ""
    where = f"{100 * found['pred']:.3g}% of the training"
    if found.get("val_pred") is not None:
        where += f", {100 * found['val_pred']:.3g}% of the validation"
    return (f"collapse: class '{found['class']}'{share} was predicted on under {STARVED:.0%} of its pixels in "
            f"epochs {found['first_epoch']}-{found['epoch']} (epoch {found['epoch']}: {where} pixels) while the "
            f"loss hardly fell: the network predicts {'background only' if found['all'] else 'none of it'}; "
            f"likely fixes: {', '.join(fixes)}")
