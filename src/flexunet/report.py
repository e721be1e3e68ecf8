"""``flexunet report``: one self-contained HTML page of a finished run.

``build_report(cfg)`` reads what the earlier stages left and writes
``<[report] output_dir>/report.html`` plus every picture it shows in ``figures/``
beside it (relative links only: no network, no external CSS or JavaScript).  The output
folder must be the report's own: a folder that holds its inputs (eval_dir, the run folder,
the evaluated images) is refused, a non-empty folder it did not write needs ``--overwrite``
(its files are then kept beside the report), and a ``figures/`` folder it did not write
is never replaced.  The gallery shows the images the evaluation scored (the folders
evaluation.json records), checked by the leak guard as ``evaluate`` checks them.  The page:

1. header: the model (parameters, input size, classes, loss), dates and paths;
2. dataset statistics (:func:`flexunet.stats.dataset_stats` on ``[report] dataset_dir``,
   else ``[split] output_dir/name``, else the folder above ``[train] images_dir`` when it
   is a split's ``train/``); skipped with a note when there is no such folder;
3. training and validation curves from ``history.json``: loss, per-class Dice, learning rate;
4. the evaluation table per foreground class from ``evaluation.json``, the original's
   pooled ``dice_coef_multiclass`` beside it, the confusion matrix and the empty-mask rule;
5. a gallery of test slices (image / ground truth / prediction / overlay) for the best,
   median and worst per-image mean foreground Dice of ``per_image.csv``, predicted again
   with the best model;
6. the slice viewer (:mod:`flexunet.viewer`): every evaluated slice, one viewer per patient
   (or series, or run of names), predicted again with the best model;
7. the epoch-change montages, in epoch order.

Every number of the evaluation tables carries its exact JSON value and its dotted path
into ``evaluation.json`` (``data-key="classes.ischemic.dice.mean" data-value="0.83127"``),
so a test can check that the page shows what the evaluation computed.  Figures are built
in a temporary folder that replaces ``figures/`` whole, and the HTML is written
atomically, so a rerun replaces the previous report.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from flexunet.config import Config
from flexunet.errors import DataError, FlexUNetError
from flexunet.io import swap_dir, write_bytes, write_text
from flexunet.progress import Progress
from flexunet.plots import new_figure, save_figure

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURES = "figures"
RANKS = ("best", "median", "worst")
PANELS = ("image", "ground truth", "prediction", "overlay")
MIN_PANEL = 256   # smaller model inputs are enlarged (nearest) so the overlay's legend leaves the slice visible
POOLED_EXPLANATION = (
    "dice_coef_multiclass (the original's figure) pools the pixels of every class, background included, into "
    "one Dice; background is most of a CT slice, so a model that predicts only background already scores "
    "about 0.97-0.99. The per-class figures leave background out and score each lesion class on its own.")


class ReportError(FlexUNetError):
    """A run folder that lacks what the report needs."""


# --------------------------------------------------------------------------- inputs


def eval_dir_of(cfg: Config) -> Path:
    """Where ``flexunet evaluate`` wrote its report: ``[eval] eval_dir``, else ``[train] eval_dir``."""
    return Path(cfg.eval.eval_dir or cfg.train.eval_dir)


def load_evaluation(eval_dir: Path) -> dict[str, Any]:
    """``evaluation.json`` of ``eval_dir``; a ReportError saying how to make it when missing or unreadable."""
    path = Path(eval_dir) / "evaluation.json"
    if not path.is_file():
        raise ReportError(f"{path}: not found; run `flexunet evaluate CONFIG` first (it writes evaluation.json "
                          f"to [eval] eval_dir)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read as JSON ({exc}); run `flexunet evaluate CONFIG` again") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), dict):
        raise ReportError(f"{path}: no 'classes' table; expected the evaluation.json written by "
                          f"`flexunet evaluate CONFIG` (run it again)")
    return doc


def _number(text: str) -> float:
    return float(text) if text.strip() else float("nan")


def read_per_image(path: Path) -> list[dict[str, Any]]:
    """Rows of ``per_image.csv`` (image, class, dice...); empty cells read as NaN."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: not found; run `flexunet evaluate CONFIG` first (it writes per_image.csv "
                          f"beside evaluation.json)")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{"image": r["image"], "class": r["class"], "dice": _number(r["dice"])} for r in rows]
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise ReportError(f"{path}: unreadable ({exc}); expected the per_image.csv written by "
                          f"`flexunet evaluate CONFIG` (run it again)") from None


def image_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per image, the mean Dice over its foreground classes (NaN ones left out).

    Images where every class is NaN (absent from both masks) are left out entirely.
    """
    per: dict[str, list[float]] = {}
    for row in rows:
        per.setdefault(row["image"], []).append(float(row["dice"]))
    out = {}
    for name, values in per.items():
        valid = [v for v in values if not math.isnan(v)]
        if valid:
            out[name] = float(np.mean(valid))
    return out


def rank_images(means: Mapping[str, float], per_rank: int) -> dict[str, list[tuple[str, float]]]:
    """The best, median and worst images by mean Dice, ``per_rank`` each, no image twice.

    With fewer than ``3 * per_rank`` images each rank gets ``len // 3`` (at least one for
    best, then worst, then median while images last).  Best is listed best first, worst
    worst first, median around the middle of the ranking (ties: by name).
    """
    order = sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))
    n = len(order)
    if per_rank <= 0 or n == 0:
        return {rank: [] for rank in RANKS}
    k = min(per_rank, max(1, n // 3))
    best = order[:k]
    worst = order[max(k, n - k):][::-1]
    middle = order[k:max(k, n - k)]
    start = max(0, (len(middle) - k) // 2)
    return {"best": best, "median": middle[start:start + k], "worst": worst}


def dataset_dir_of(cfg: Config) -> tuple[Path | None, str]:
    """The split dataset to describe, and which setting named it."""
    if cfg.report.dataset_dir is not None:
        return Path(cfg.report.dataset_dir), "[report] dataset_dir"
    if cfg.split.output_dir is not None:
        return Path(cfg.split.output_dir) / cfg.split.name, "[split] output_dir/name"
    images = cfg.train.images_dir
    if images is not None and Path(images).parent.name == "train":
        return Path(images).parent.parent, "the folder above [train] images_dir"
    return None, "no [report] dataset_dir, [split] output_dir or split-style [train] images_dir"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); left out of the report", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


# --------------------------------------------------------------------------- html helpers


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def lookup(doc: Any, key: str) -> Any:
    """The value at a dotted path (list items by index): ``classes.ischemic.dice.mean``."""
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def value_cell(doc: Mapping[str, Any], key: str, digits: int = 3, attr: str = "data-key") -> str:
    """A table cell showing the value at ``key`` with its exact JSON value in ``data-value``."""
    value = lookup(doc, key)
    return (f'<td class="num" {attr}="{esc(key)}" data-value="{esc(json.dumps(value))}">'
            f"{fmt(value, digits)}</td>")


def figure_html(rel: str, caption: str, cls: str = "fig") -> str:
    src = esc(rel)
    return (f'<figure class="{cls}"><a href="{src}"><img src="{src}" alt="{esc(caption)}"></a>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.5em 3em;color:#1d232b;line-height:1.45}
h1{margin:.8em 0 .2em}h2{border-bottom:2px solid #d7dde4;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #d7dde4;padding:.25em .6em;text-align:left}th{background:#f1f4f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#5b6570;font-size:.92em}
.pooled{background:#fff7e0}.rule{background:#f6f8fa;border-left:4px solid #9aa7b4;padding:.4em .8em}
figure{display:inline-block;margin:.4em;vertical-align:top}figure img{max-width:100%;border:1px solid #d7dde4}
figure.fig img{max-width:560px}figure.wide img{max-width:1150px}figcaption{font-size:.85em;color:#5b6570}
.case{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.3em;margin:.4em 0 1em}
.case figure img{width:180px;image-rendering:pixelated}.case .info{min-width:220px;font-size:.9em}
code{background:#f1f4f7;padding:0 .25em}
"""


# --------------------------------------------------------------------------- drawing




def _class_colours(cfg: Config) -> list[tuple[float, float, float]]:
    from flexunet.masks import palette_colours

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
    from flexunet.losses import metric_suffix

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


# --------------------------------------------------------------------------- the report


@dataclass
class _Build:
    """What the sections share while the report is built in a temporary figures folder."""

    cfg: Config
    tmp: Path                        # the figures folder being built
    evaluation: dict[str, Any]
    eval_dir: Path
    progress: bool
    model: Any = None
    figures: list[str] = field(default_factory=list)   # paths relative to the figures folder
    notes: list[str] = field(default_factory=list)
    gallery: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {rank: [] for rank in RANKS})
    dataset: dict[str, Any] | None = None
    test_folders: tuple[Path, Path] | None = None      # (images, masks) the evaluation scored, None: [test]
    viewer: dict[str, Any] | None = None               # grouping kind and the slice names of each viewer
    # hooks for other sections: extra per-slice layers computed from the softmax (H, W, K) -> (H, W) in 0..1,
    # e.g. {"uncertainty": entropy}, and a text per group (patient volumes) shown beside the Dice table
    viewer_layers: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    viewer_notes: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path) -> str:
        """Register a written figure; return its path relative to the HTML."""
        rel = path.relative_to(self.tmp).as_posix()
        self.figures.append(rel)
        return f"{FIGURES}/{rel}"

    def copy(self, source: Path, rel: str) -> str:
        target = self.tmp / rel
        write_bytes(target, Path(source).read_bytes())
        return self.add(target)

    def note(self, text: str) -> str:
        self.notes.append(text)
        log.info("report: %s", text)
        return note(text)


def evaluated_folders(cfg: Config, evaluation: Mapping[str, Any]) -> tuple[Path, Path] | None:
    """The (images, masks) folders the evaluation scored, as evaluation.json records them (with a
    warning when [test] now differs); None for an evaluation.json without them ([test] is used)."""
    images, masks = evaluation.get("test_images_dir"), evaluation.get("test_masks_dir")
    if images and masks:
        images, masks = Path(images), Path(masks)
        if cfg.test.images_dir is not None and Path(cfg.test.images_dir).resolve() != images.resolve():
            log.warning("report: the evaluation scored %s, not [test] images_dir = %s; the report shows the "
                        "evaluated images (run `flexunet evaluate` again to report on %s)", images,
                        cfg.test.images_dir, cfg.test.images_dir)
        return images, masks
    log.warning("report: evaluation.json does not say which folders it scored (written by an older flexunet); "
                "the gallery uses [test] images_dir — run `flexunet evaluate` again to be sure they match")
    return None


def _check_output(cfg: Config, out: Path, eval_dir: Path, folders: tuple[Path, Path] | None,
                  overwrite: bool) -> None:
    """The report writes report.html and figures/ only into a folder of its own (see README: report)."""
    from flexunet.io import check_output_dir

    shown = folders or (cfg.test.images_dir, cfg.test.masks_dir)
    check_output_dir(out, "report", [eval_dir, cfg.train.model_dir, *shown], overwrite,
                     what="[report] output_dir", writes=(REPORT_FILE,), replaces=(FIGURES,))


def build_report(cfg: Config, progress: bool = True, overwrite: bool = False,
                 allow_overlap: bool = False) -> dict[str, Any]:
    """Write ``report.html`` and its figures to ``[report] output_dir``; return what was written.

    Returns ``html`` (the page), ``figures`` (every PNG it shows, under ``figures/``),
    ``output_dir``, ``sections`` (their ids), ``gallery`` (per rank: image, mean Dice
    from per_image.csv, and the per-class Dice of the prediction made for the page),
    ``dataset`` (the statistics, or None), ``viewer`` (grouping kind and the slice names of
    each viewer, or None) and ``notes`` (what was skipped and why).
    """
    from flexunet.datarecord import check_test_images
    from flexunet.io import claim_output_dir, list_files
    from flexunet.run import load_trained

    eval_dir = eval_dir_of(cfg)
    evaluation = load_evaluation(eval_dir)
    per_image = read_per_image(eval_dir / "per_image.csv")
    folders = evaluated_folders(cfg, evaluation)
    out = Path(cfg.report.output_dir)
    _check_output(cfg, out, eval_dir, folders, overwrite)
    images = folders[0] if folders else cfg.test.images_dir
    if images is not None and Path(images).is_dir():
        check_test_images(cfg.train.model_dir, list_files(images), allow_overlap, "report")
    claim_output_dir(out, "report", [REPORT_FILE, FIGURES])
    tmp = out / f".{FIGURES}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        b = _Build(cfg, tmp, evaluation, eval_dir, progress, model=load_trained(cfg), test_folders=folders)
        _viewer_hooks(b)
        steps: list[tuple[str, str, Callable[[], str]]] = [
            ("dataset", "Dataset", lambda: _dataset_section(b)),
            ("curves", "Training curves", lambda: _curves_section(b)),
            ("evaluation", "Evaluation", lambda: _evaluation_section(b)),
            ("review", "Volumes and uncertainty", lambda: review_section(b)),
            ("gallery", "Gallery", lambda: _gallery_section(b, per_image)),
            ("viewer", "Slice viewer", lambda: _viewer_section(b)),
            ("epochs", "Epoch-change montages", lambda: _epochs_section(b)),
        ]
        bodies = [(sid, title, make()) for sid, title, make in
                  Progress(steps, "report", enabled=progress, unit="section")]
        page = _page(b, bodies)
        swap_dir(tmp, out / FIGURES)
        write_text(out / REPORT_FILE, page)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    html_path = out / REPORT_FILE
    log.info("wrote %s (%d figures in %s)", html_path, len(b.figures), out / FIGURES)
    return {"html": html_path, "figures": [out / FIGURES / rel for rel in b.figures], "output_dir": out,
            "sections": ["header", *(sid for sid, _, _ in bodies)], "gallery": b.gallery, "dataset": b.dataset,
            "viewer": b.viewer, "notes": b.notes}


def _page(b: _Build, bodies: Sequence[tuple[str, str, str]]) -> str:
    cfg = b.cfg
    title = f"FlexUNet report: {cfg.path.parent.name if cfg.path else cfg.source}"
    nav = " ".join(f'<a href="#{sid}">{esc(t)}</a>' for sid, t, _ in bodies)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f'<section id="header"><h1>{esc(title)}</h1>{_header(b)}<nav>{nav}</nav></section>',
    ]
    for sid, heading, body in bodies:
        parts.append(f'<section id="{sid}"><h2>{esc(heading)}</h2>\n{body}\n</section>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- 1. header


def _mtime(path: Path | None) -> str:
    if path is None or not Path(path).exists():
        return "n/a"
    return _dt.datetime.fromtimestamp(Path(path).stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")


def _header(b: _Build) -> str:
    from flexunet.run import best_model_path

    cfg, m, ev = b.cfg, b.cfg.model, b.evaluation
    model_path = best_model_path(cfg.train.model_dir)
    names = ", ".join(cfg.class_names)
    params = b.model.count_params() if b.model is not None else None
    summary = (f"{m.model}: {fmt(params)} parameters, input {m.image_height}x{m.image_width}x{m.image_channels}, "
               f"{m.num_classes} classes ({names}), loss {m.loss}, optimizer {m.optimizer} "
               f"(learning rate {m.learning_rate:g}), {m.num_layers} levels from {m.base_filters} filters")
    state = _read_json(cfg.train.model_dir / "last_checkpoint" / "state.json") or {}
    run = f"{state.get('epoch', 'n/a')} epoch(s) trained"
    if state.get("best_epoch"):
        run += f"; best {cfg.train.monitor} {fmt(state.get('best'), 4)} at epoch {state['best_epoch']}"
    if state.get("stopped_by"):
        run += f"; stopped by {state['stopped_by']}"
    dataset, how = dataset_dir_of(cfg)
    dates = [("report written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
             ("best model saved", _mtime(model_path)),
             ("evaluated", _mtime(b.eval_dir / "evaluation.json"))]
    paths = [("config", cfg.path or cfg.source), ("best model", model_path), ("evaluation", b.eval_dir),
             ("test images", ev.get("test_images_dir", cfg.test.images_dir)),
             ("dataset", f"{dataset} ({how})" if dataset else how),
             ("epoch-change montages", cfg.train.epoch_change_infer_dir)]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in dates + paths)
    return (f'<p class="summary"><strong>{esc(summary)}</strong></p><p>{esc(run)}; evaluated on '
            f'{fmt(ev.get("num_images"))} test images at {esc("x".join(map(str, ev.get("resolution", []))))} '
            f"pixels.</p><table>{rows}</table>")


# --------------------------------------------------------------------------- 2. dataset


def _dataset_section(b: _Build) -> str:
    from flexunet.stats import dataset_stats

    folder, how = dataset_dir_of(b.cfg)
    if folder is None:
        return b.note(f"Dataset statistics skipped: {how}.")
    if not folder.is_dir():
        return b.note(f"Dataset statistics skipped: {folder} ({how}) does not exist.")
    try:
        stats = dataset_stats(folder, b.tmp / "dataset", b.cfg.mask.rgb_map, b.cfg.class_names,
                              progress=b.progress)
    except DataError as exc:
        return b.note(f"Dataset statistics skipped: {exc}")
    b.dataset = {k: v for k, v in stats.items() if k != "files"}
    names = stats["class_names"]
    head = ("<tr><th rowspan=2>subset</th><th rowspan=2>images</th><th rowspan=2>masks</th>"
            f"<th colspan={len(names)}>slices showing the class</th><th colspan={len(names)}>pixels</th></tr><tr>"
            + "".join(f"<th>{esc(n)}</th>" for n in names) * 2 + "</tr>")
    rows = []
    for subset in stats["subsets"]:
        base = f"subsets.{subset}"
        cells = [value_cell(stats, f"{base}.{k}", attr="data-stats-key") for k in ("images", "masks")]
        cells += [value_cell(stats, f"{base}.slices_with_class.{n}", attr="data-stats-key") for n in names]
        cells += [value_cell(stats, f"{base}.pixels.{n}", attr="data-stats-key") for n in names]
        rows.append(f"<tr><th>{esc(subset)}</th>{''.join(cells)}</tr>")
    figs = []
    for path in stats["files"]:
        path = Path(path)
        if path.suffix == ".png":
            figs.append(figure_html(b.add(path), path.stem.replace("_", " ")))
    return (f"<p>{esc(folder)} ({esc(how)})</p>"
            f'<table data-source="stats.json">{head}{"".join(rows)}</table>{"".join(figs)}')


# --------------------------------------------------------------------------- 3. curves


def _curves_section(b: _Build) -> str:
    path = b.cfg.train.eval_dir / "history.json"
    hist = _read_json(path)
    if not hist or not hist.get("epochs"):
        return b.note(f"No training curves: {path} not found or empty (written by `flexunet train`).")
    state = _read_json(b.cfg.train.model_dir / "last_checkpoint" / "state.json") or {}
    best = state.get("best_epoch")
    figs = [figure_html(b.add(plot_loss(hist, b.cfg.model.loss, best, b.tmp / "curves" / "loss.png")),
                        "training and validation loss"),
            figure_html(b.add(plot_dice(hist, b.cfg, best, b.tmp / "curves" / "dice.png")),
                        "per-class Dice, training and validation")]
    if hist.get("learning_rate"):
        figs.append(figure_html(b.add(plot_learning_rate(hist, best, b.tmp / "curves" / "learning_rate.png")),
                                "learning rate"))
    collapse = hist.get("collapse") or {}  # the collapse guard's line, when it fired
    warning = f"<p><strong>{esc(collapse['message'])}</strong></p>" if collapse.get("message") else ""
    return (f"{warning}<p>{len(hist['epochs'])} epoch(s) from {esc(path)}. Dice during training is accumulated "
            f"over each epoch's pixels (per class, background left out).</p>{''.join(figs)}")


# --------------------------------------------------------------------------- 4. evaluation


# (label, path under classes.<name>, path under mean_foreground or None, digits)
EVAL_ROWS: tuple[tuple[str, str, str | None, int], ...] = (
    ("Dice per image: mean", "per_image.dice.mean", "per_image_dice", 3),
    ("Dice per image: median", "per_image.dice.median", None, 3),
    ("IoU per image: mean", "per_image.iou.mean", "per_image_iou", 3),
    ("IoU per image: median", "per_image.iou.median", None, 3),
    ("Precision per image: mean", "per_image.precision.mean", "per_image_precision", 3),
    ("Recall per image: mean", "per_image.recall.mean", "per_image_recall", 3),
    ("HD95 (px) per image: mean", "per_image.hd95_px.mean", "per_image_hd95_px", 2),
    ("HD95 (px) per image: median", "per_image.hd95_px.median", None, 2),
    ("HD95 (mm) per image: mean", "per_image.hd95_mm.mean", "per_image_hd95_mm", 2),
    ("HD95 (mm) per image: median", "per_image.hd95_mm.median", None, 2),
    ("Images scored for Dice (n valid)", "per_image.dice.n_valid", None, 0),
    ("Images with the class in neither mask (n empty)", "n_empty", None, 0),
    ("Images with the class in the reference", "slices_with_class", None, 0),
    ("Whole-set Dice (summed counts)", "whole_set.dice", "whole_set_dice", 3),
    ("Whole-set IoU", "whole_set.iou", "whole_set_iou", 3),
    ("Whole-set precision", "whole_set.precision", "whole_set_precision", 3),
    ("Whole-set recall", "whole_set.recall", "whole_set_recall", 3),
    ("Reference lesions", "lesions.ref_lesions", None, 0),
    ("Lesions detected", "lesions.detected", None, 0),
    ("Lesion-wise recall", "lesions.recall", None, 3),
    ("Lesion-wise precision", "lesions.precision", None, 3),
    ("Lesion-wise F1", "lesions.f1", "lesion_f1", 3),
    ("Slices without the class", "false_positive_slices.slices_without_class", None, 0),
    ("... of which with a false positive", "false_positive_slices.slices_with_false_positive", None, 0),
    ("False-positive slice rate", "false_positive_slices.rate", None, 3),
)


def _has(doc: Any, key: str) -> bool:
    try:
        lookup(doc, key)
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return True


def _leak_note(ev: Mapping[str, Any]) -> str:
    """What the leak guard found when the evaluation ran (evaluation.json's leak_check)."""
    leak = ev.get("leak_check") or {}
    if not leak.get("checked"):
        return note("The test images were not checked against the training data (no data_record.json in the "
                    "run folder, or an evaluation.json written before the check).")
    if leak.get("overlapping"):
        return note(f"{leak['overlapping']} test image(s) are images the model trained or validated on "
                    f"(scored with --allow-overlap): these figures overstate the model.")
    return ""


def _evaluation_section(b: _Build) -> str:
    ev = b.evaluation
    classes = list(ev["classes"])
    has_mm = any(_has(ev, f"classes.{c}.per_image.hd95_mm.mean") and
                 lookup(ev, f"classes.{c}.per_image.hd95_mm.mean") is not None for c in classes)
    head = "<tr><th>measure</th>" + "".join(f"<th>{esc(c)}</th>" for c in classes) + \
        "<th>mean of the foreground classes</th></tr>"
    rows = []
    for label, sub, macro, digits in EVAL_ROWS:
        if "hd95_mm" in sub and not has_mm:
            continue
        cells = [value_cell(ev, f"classes.{c}.{sub}", digits) if _has(ev, f"classes.{c}.{sub}")
                 else "<td>n/a</td>" for c in classes]
        macro_key = f"mean_foreground.{macro}" if macro else None
        cells.append(value_cell(ev, macro_key, digits) if macro_key and _has(ev, macro_key) else "<td></td>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
    mm_note = "" if has_mm else " HD95 in mm is not shown: no test image has a known pixel spacing."
    parts = [
        f"<p>{fmt(ev.get('num_images'))} test images of {esc(ev.get('test_images_dir', ''))}, scored at the "
        f"model's input resolution ({esc('x'.join(map(str, ev.get('resolution', []))))}).{esc(mm_note)}</p>",
        f'<table id="per-class" data-source="evaluation.json">{head}{"".join(rows)}</table>',
        _pooled_table(ev),
        _leak_note(ev),
        '<h3>Rules</h3>',
        f'<p class="rule"><strong>Empty masks.</strong> {esc(ev.get("empty_rule", "not stated"))}</p>',
    ]
    for key, name in (("hd95_definition", "HD95"), ("lesion_definition", "Lesions")):
        if ev.get(key):
            parts.append(f'<p class="rule"><strong>{name}.</strong> {esc(ev[key])}</p>')
    parts.append("<h3>Confusion matrix</h3>" + _confusion(b))
    return "\n".join(parts)


def _pooled_table(ev: Mapping[str, Any]) -> str:
    seed = ev.get("seed_metrics") or {}
    rows = []
    if "loss" in seed:
        rows.append(f"<tr><th>{esc(seed.get('loss_name', 'loss'))} (loss on the test set)</th>"
                    f"{value_cell(ev, 'seed_metrics.loss', 4)}</tr>")
    if "dice_coef_multiclass" in seed:
        rows.append('<tr class="pooled"><th>dice_coef_multiclass (original, pooled, background included)</th>'
                    f"{value_cell(ev, 'seed_metrics.dice_coef_multiclass', 4)}</tr>")
    if _has(ev, "mean_foreground.per_image_dice"):
        rows.append("<tr><th>Dice per image, mean of the foreground classes (honest)</th>"
                    f"{value_cell(ev, 'mean_foreground.per_image_dice', 4)}</tr>")
    if _has(ev, "mean_foreground.whole_set_dice"):
        rows.append("<tr><th>Whole-set Dice, mean of the foreground classes</th>"
                    f"{value_cell(ev, 'mean_foreground.whole_set_dice', 4)}</tr>")
    if not rows:
        return note("evaluation.json has no seed_metrics: the original's figures are not shown.")
    return ("<h3>The original's figure beside the honest ones</h3>"
            f'<table id="pooled" data-source="evaluation.json">{"".join(rows)}</table>'
            f'<p class="note">{esc(POOLED_EXPLANATION)}</p>')


def _confusion(b: _Build) -> str:
    ev = b.evaluation
    parts = []
    png = b.eval_dir / "confusion_matrix.png"
    if png.is_file():
        parts.append(figure_html(b.copy(png, "confusion_matrix.png"),
                                 "confusion matrix: rows = reference, columns = prediction"))
    if _has(ev, "confusion_matrix.counts") and _has(ev, "confusion_matrix.labels"):
        labels = ev["confusion_matrix"]["labels"]
        head = "<tr><th>reference \\ prediction</th>" + "".join(f"<th>{esc(n)}</th>" for n in labels) + "</tr>"
        rows = [f"<tr><th>{esc(name)}</th>"
                + "".join(value_cell(ev, f"confusion_matrix.counts.{i}.{j}") for j in range(len(labels))) + "</tr>"
                for i, name in enumerate(labels)]
        parts.append(f'<table id="confusion" data-source="evaluation.json">{head}{"".join(rows)}</table>')
    return "".join(parts) or b.note(f"No confusion matrix in {b.eval_dir}.")


# --------------------------------------------------------------------------- 5. gallery


def _gallery_section(b: _Build, per_image: Sequence[Mapping[str, Any]]) -> str:
    cfg = b.cfg
    k = cfg.report.gallery_per_rank
    if k == 0:
        return b.note("Gallery off: [report] gallery_per_rank = 0.")
    means = image_means(per_image)
    excluded = len({r["image"] for r in per_image}) - len(means)
    ranks = rank_images(means, k)
    if not means:
        return b.note("Gallery empty: no test image has a foreground class in either mask.")
    try:
        pairs = _test_pairs(cfg, b.test_folders)
    except FlexUNetError as exc:
        return b.note(f"Gallery skipped: {exc}")
    chosen = [(rank, i, name, mean) for rank in RANKS for i, (name, mean) in enumerate(ranks[rank], start=1)]
    missing = [name for _, _, name, _ in chosen if name not in pairs]
    for name in missing:
        b.note(f"Gallery: {name} of per_image.csv is no longer in the evaluated folder; left out.")
    chosen = [c for c in chosen if c[2] in pairs]
    images = _predict_cases(b, [pairs[name] for _, _, name, _ in chosen])
    dice_by_image: dict[str, dict[str, float]] = {}
    for row in per_image:
        dice_by_image.setdefault(row["image"], {})[row["class"]] = row["dice"]
    parts = [f"<p>Test slices ranked by their mean foreground Dice (from per_image.csv; classes absent from both "
             f"masks left out; {excluded} image(s) with no class in either mask excluded). Predictions: the best "
             f"model, predicted again for this page. Columns: image, ground truth, prediction, prediction over "
             f"the image.</p>"]
    if len(means) < 3 * k:
        parts.append(note(f"{len(means)} ranked image(s) for {k} per rank: {min(k, max(1, len(means) // 3))} "
                          f"per rank shown, none twice."))
    for rank in RANKS:
        parts.append(f'<h3 id="gallery-{rank}">{rank.capitalize()}</h3>')
        cases = [(c, imgs) for c, imgs in zip(chosen, images) if c[0] == rank]
        if not cases:
            parts.append(note(f"No image left for the {rank} rank."))
        for (_, i, name, mean), (shown, truth, pred) in cases:
            panels = _panels(cfg, shown, truth, pred)
            parts.append(_case(b, rank, i, name, mean, truth, pred, panels, dice_by_image[name]))
    return "\n".join(parts)


def _test_pairs(cfg: Config, folders: tuple[Path, Path] | None) -> dict[str, tuple[Path, Path]]:
    """The pairs of the folders the evaluation scored (``folders``), else of [test]."""
    from flexunet.data import subset_pairs
    from flexunet.io import pair_by_name

    if folders is None:
        pairs = subset_pairs(cfg, "test")
    else:
        pairs = pair_by_name(folders[0], folders[1], (cfg.mask.mask_file_format,))
    return {image.name: (image, mask) for image, mask in pairs}


def _predict_pairs(b: _Build, pairs: Sequence[tuple[Path, Path]]
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image as shown, ground truth, softmax) per pair, at the model's input size, as evaluation sees them;
    predicted in batches of [eval] batch_size (the gallery and the viewer both read the slices this way)."""
    import tensorflow as tf
    from PIL import Image

    from flexunet.data import decode_mask
    from flexunet.predict import model_batch, predict_probs, read_input

    cfg = b.cfg
    h, w = cfg.model.image_height, cfg.model.image_width
    step = max(1, cfg.eval.batch_size)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        originals = [read_input(image, cfg) for image, _ in chunk]
        probs = predict_probs(b.model, model_batch(originals, cfg))
        for (_, mask), rgb, prob in zip(chunk, originals, probs):
            shown = np.asarray(Image.fromarray(rgb[..., :3]).resize((w, h), Image.BILINEAR))
            yield shown, decode_mask(tf.constant(str(mask)), cfg).numpy(), prob


def _predict_cases(b: _Build, pairs: Sequence[tuple[Path, Path]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image as shown, ground truth, prediction) per pair, at the model's input size, as evaluation sees them."""
    return [(shown, truth, prob.argmax(-1).astype(np.uint8)) for shown, truth, prob in _predict_pairs(b, pairs)]


def _case(b: _Build, rank: str, i: int, name: str, mean: float, truth: np.ndarray, pred: np.ndarray,
          panels: Sequence[Any], csv_dice: Mapping[str, float]) -> str:
    from flexunet.io import save_image
    from flexunet.metrics import image_scores

    cfg = b.cfg
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)
    base = b.tmp / "gallery" / f"{rank}_{i}_{stem}"
    figs = []
    for label, picture in zip(PANELS, panels):
        path = Path(f"{base}_{label.replace(' ', '_')}.png")
        save_image(path, picture)
        figs.append(figure_html(b.add(path), label))
    scores = image_scores(truth, pred, cfg.model.num_classes)["dice"]
    shown_dice = {n: float(scores[k]) for k, n in enumerate(cfg.class_names) if k > 0}
    for n, value in shown_dice.items():
        expected = csv_dice.get(n, float("nan"))
        if not (math.isnan(value) and math.isnan(expected)) and not abs(value - expected) <= 1e-4:
            log.warning("gallery %s: %s Dice of the new prediction %.4f differs from per_image.csv's %.4f: "
                        "the model, the image or its mask changed since `flexunet evaluate` (retrained, or "
                        "files replaced); run `flexunet evaluate` again", name, n, value, expected)
    b.gallery[rank].append({"image": name, "mean_dice": mean, "dice": dict(csv_dice), "predicted_dice": shown_dice})
    info = "".join(f"<tr><th>{esc(n)}</th><td class=\"num\" data-csv-image=\"{esc(name)}\" data-csv-class=\"{esc(n)}\" "
                   f"data-value=\"{esc(json.dumps(None if math.isnan(v) else v))}\">{fmt(v)}</td></tr>"
                   for n, v in csv_dice.items())
    return (f'<div class="case" data-rank="{rank}" data-image="{esc(name)}"><div class="info">'
            f"<strong>{esc(rank)} {i}: {esc(name)}</strong><br>mean foreground Dice {fmt(mean)}"
            f'<table data-source="per_image.csv"><tr><th>class</th><th>Dice</th></tr>{info}</table></div>'
            f'{"".join(figs)}</div>')


def _panels(cfg: Config, shown: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> list[Any]:
    """Image, ground truth, prediction and overlay pictures, enlarged by a whole factor up to MIN_PANEL."""
    from flexunet.masks import index_to_rgb
    from flexunet.predict import overlay_image

    factor = max(1, math.ceil(MIN_PANEL / min(truth.shape)))

    def big(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, factor, 0), factor, 1)

    shown, truth, pred = big(shown), big(truth), big(pred)
    rgb_map = cfg.mask.rgb_map
    return [shown, index_to_rgb(truth, rgb_map), index_to_rgb(pred, rgb_map),
            overlay_image(shown, pred, rgb_map, cfg.class_names, cfg.infer.overlay_alpha)]


# --------------------------------------------------------------------------- 6. slice viewer


def _viewer_section(b: _Build) -> str:
    """One viewer per patient (else series, else run of names) over every evaluated slice."""
    from flexunet.viewer import group_slices, viewer_group_html, viewer_page_parts

    cfg = b.cfg
    try:
        pairs = _test_pairs(cfg, b.test_folders)
    except FlexUNetError as exc:
        return b.note(f"Slice viewer skipped: {exc}")
    if not pairs:
        return b.note("Slice viewer empty: the evaluated folder holds no image.")
    images_dir = b.test_folders[0] if b.test_folders else cfg.test.images_dir
    kind, groups = group_slices(pairs, images_dir)
    b.viewer = {"kind": kind, "groups": groups}
    parts = []
    items = Progress(list(groups.items()), "viewer", enabled=b.progress, unit="group")
    for i, (title, names) in enumerate(items):
        slices = _viewer_slices(b, [pairs[n] for n in names])
        parts.append(viewer_group_html(i, title, slices, cfg.class_names, b.tmp / "viewer" / f"g{i}",
                                       f"{FIGURES}/viewer/g{i}", b.viewer_notes.get(title)))
    how = {"patient": "per patient (from the split's manifest)", "series": "per series (from the split's manifest)",
           "name": "per file-name prefix", "run": "in runs of consecutive file names (no patient is known)"}[kind]
    intro = (f"<p>{len(pairs)} evaluated slice(s) in {len(groups)} viewer(s), grouped {esc(how)}; predictions of "
             f"the best model, made again for this page. Click or tab into a view, then scroll with the mouse "
             f"wheel, the arrow keys, Page Up/Down or Home/End; slice images load when the slider reaches them."
             f"</p>")
    return intro + viewer_page_parts(parts, cfg.class_names, next(iter(b.viewer_layers), None))


def _viewer_hooks(b: _Build) -> None:
    """The viewer's extra layer (the softmax's normalised entropy) and each patient's volumes as its note."""
    from flexunet.uncertainty import entropy_map

    b.viewer_layers.setdefault("uncertainty", entropy_map)
    rows = ((b.evaluation.get("volumes") or {}).get("per_patient")) or []
    notes: dict[str, list[str]] = {}
    for r in rows:
        notes.setdefault(str(r["patient"]), []).append(
            f"{r['class']}: reference {r['reference_ml']:.2f} mL, predicted {r['predicted_ml']:.2f} mL")
    for patient, parts in notes.items():
        b.viewer_notes.setdefault(patient, "Volumes — " + "; ".join(parts))


def _viewer_slices(b: _Build, pairs: Sequence[tuple[Path, Path]]) -> list[Any]:
    """The viewer's slices of ``pairs``: image, truth, prediction, per-class Dice and the extra layers."""
    from flexunet.metrics import image_scores
    from flexunet.viewer import ViewerSlice

    cfg = b.cfg
    out = []
    for (image, _), (shown, truth, prob) in zip(pairs, _predict_pairs(b, pairs)):
        pred = prob.argmax(-1).astype(np.uint8)
        dice = image_scores(truth, pred, cfg.model.num_classes)["dice"]
        out.append(ViewerSlice(image.name, shown, truth, pred,
                               {n: float(dice[k]) for k, n in enumerate(cfg.class_names) if k > 0},
                               {name: f(prob) for name, f in b.viewer_layers.items()}))
    return out


# --------------------------------------------------------------------------- 6. montages


def epoch_montages(folder: Path) -> list[tuple[int, Path]]:
    """``Epoch_<n>_montage.png`` of ``folder`` as (n, path), in epoch order."""
    found = []
    for path in Path(folder).glob("Epoch_*_montage.png") if Path(folder).is_dir() else []:
        match = re.fullmatch(r"Epoch_(\d+)_montage\.png", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _epochs_section(b: _Build) -> str:
    folder = b.cfg.train.epoch_change_infer_dir
    montages = epoch_montages(folder)
    if not montages:
        return b.note(f"No epoch-change montages in {folder} (set [train] epoch_change_infer = True to record "
                      f"the predictions of a few [infer] images after every epoch).")
    figs = [figure_html(b.copy(path, f"epochs/{path.name}"), f"epoch {n}", "wide") for n, path in montages]
    return (f"<p>{len(montages)} montage(s) from {esc(folder)}: the same [infer] images predicted after each "
            f"epoch.</p>" + "".join(figs))


# --------------------------------------------------------------------------- volumes and uncertainty (issue 16)


def review_section(b: _Build) -> str:
    """Per-patient volumes with the Bland-Altman plot, calibration with the reliability diagram, and the most
    uncertain slices with their entropy maps (evaluation.json's ``volumes``, ``calibration``, ``uncertainty``)."""
    ev = b.evaluation
    if "calibration" not in ev:
        return b.note("evaluation.json has no volumes or calibration (written by an older flexunet); run "
                      "`flexunet evaluate` again to see them.")
    return "\n".join([_volume_tables(b, ev.get("volumes") or {}), _calibration_html(b, ev["calibration"]),
                      _uncertain_html(b, ev.get("uncertainty") or {})])


def _table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v) if not isinstance(v, str) else esc(v)}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f'<table id="{table_id}" data-source="evaluation.json"><tr>{head}</tr>{body}</table>'


def _volume_tables(b: _Build, volumes: Mapping[str, Any]) -> str:
    parts = ["<h3>Lesion volume per patient</h3>"]
    rows = volumes.get("per_patient") or []
    if not rows:
        parts.append(b.note("No volumes: no test slice has a patient, a pixel spacing and a slice spacing in "
                            "prepare's manifest (DICOM-sourced data gives them)."))
    else:
        parts.append(_table("volumes", ("patient", "series", "class", "slices", "reference mL", "predicted mL",
                                        "absolute error mL", "relative error"),
                            [[r["patient"], r["series"], r["class"], r["slices"], r["reference_ml"],
                              r["predicted_ml"], r["abs_error_ml"], r["rel_error"]] for r in rows]))
        stats = volumes.get("agreement") or {}
        parts.append(_table("volume-agreement", ("class", "series", "bias mL", "limits of agreement mL",
                                                 "mean absolute error mL", "mean relative error", "Pearson r"),
                            [[n, a["n"], a["bias_ml"], f"{fmt(a['loa_low_ml'])} .. {fmt(a['loa_high_ml'])}",
                              a["mean_abs_error_ml"], a["mean_rel_error"], a["pearson_r"]]
                             for n, a in stats.items()]))
        png = b.eval_dir / "bland_altman.png"
        if png.is_file():
            parts.append(figure_html(b.copy(png, "bland_altman.png"),
                                     "Bland-Altman: predicted - reference volume against their mean"))
    for reason in volumes.get("skipped") or []:
        parts.append(note(f"No volume: {reason}"))
    return "".join(parts)


def _calibration_html(b: _Build, calibration: Mapping[str, Any]) -> str:
    classes = calibration.get("classes") or {}
    parts = ["<h3>Calibration</h3>",
             _table("calibration", ("class", "expected calibration error"),
                    [[n, c.get("ece")] for n, c in classes.items()]),
             f'<p class="rule">{esc(calibration.get("definition", ""))}</p>']
    png = b.eval_dir / "reliability.png"
    if png.is_file():
        parts.append(figure_html(b.copy(png, "reliability.png"), "reliability diagram"))
    return "".join(parts)


def _uncertain_html(b: _Build, uncertainty: Mapping[str, Any], shown: int = 4) -> str:
    parts = ["<h3>Where the model is unsure</h3>",
             f"<p>Rank correlation (Spearman) of the slice uncertainty score with the slice's Dice: "
             f"{fmt(uncertainty.get('spearman_score_vs_dice'))} over {fmt(uncertainty.get('n'))} slices "
             f"(negative: the score points at the slices the model gets wrong).</p>",
             f'<p class="rule">{esc(uncertainty.get("definition", ""))}</p>']
    top = (uncertainty.get("most_uncertain") or [])[:shown]
    pairs = _test_pairs(b.cfg, b.test_folders)
    for i, row in enumerate(top):
        if row["name"] not in pairs:
            continue
        rel = _uncertainty_strip(b, pairs[row["name"]][0], i)
        parts.append(figure_html(rel, f"{row['name']}: score {fmt(row['score'])}, Dice {fmt(row['dice'])} "
                                      f"(image | entropy of the softmax)"))
    return "".join(parts)


def _uncertainty_strip(b: _Build, image: Path, i: int) -> str:
    """The slice beside its normalised-entropy heatmap, at the model's size."""
    from PIL import Image

    from flexunet.io import save_image
    from flexunet.predict import model_input, predict_probs, read_input
    from flexunet.uncertainty import entropy_map, heatmap

    cfg = b.cfg
    rgb = read_input(image, cfg)
    probs = predict_probs(b.model, model_input(rgb, cfg)[None])[0]
    heat = heatmap(entropy_map(probs))
    h, w = heat.shape[:2]
    shown = np.asarray(Image.fromarray(rgb[..., :3]).resize((w, h), Image.BILINEAR))
    path = b.tmp / f"uncertain_{i}.png"
    save_image(path, np.concatenate([shown, heat], axis=1))
    return b.add(path)
