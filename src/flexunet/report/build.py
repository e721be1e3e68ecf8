"""``flexunet report``: one self-contained HTML page of a finished run.

``build_report(cfg)`` reads what the earlier stages left and writes
``<[report] output_dir>/report.html`` plus every picture it shows in ``figures/``
beside it (relative links only: no network, no external CSS or JavaScript).  The output
folder must be the report's own: a folder that holds its inputs (eval_dir, the run folder,
the evaluated images) is refused, a non-empty folder it did not write needs ``--overwrite``
(its files are then kept beside the report), and a ``figures/`` folder it did not write
is never replaced.  The gallery shows the images the evaluation scored (the folders
evaluation.json records), checked by the leak guard as ``evaluate`` checks them.  The page:

1. header: the model (parameters, input size, classes, loss), dates and paths; a warning (there,
   on the console and atop the evaluation) when evaluation.json's ``model_sha256`` is not the
   current best model's: the figures are then an earlier model's;
2. dataset statistics (:func:`flexunet.dataset.stats.dataset_stats` on ``[report] dataset_dir``,
   else ``[split] output_dir/name``, else the folder above ``[train] images_dir`` when it
   is a split's ``train/``); skipped with a note when there is no such folder;
3. training and validation curves from ``history.json``: loss, per-class Dice, learning rate;
4. the evaluation table per foreground class from ``evaluation.json``, the original's
   pooled ``dice_coef_multiclass`` beside it, the confusion matrix and the empty-mask rule;
5. a gallery of test slices (image / ground truth / prediction / overlay) for the best,
   median and worst per-image mean foreground Dice of ``per_image.csv``, predicted again
   with the best model;
6. the slice viewer (:mod:`flexunet.report.viewer`): every evaluated slice, one viewer per patient
   (or series, or run of names), predicted again with the best model;
7. the epoch-change montages, in epoch order.

Every number of the evaluation tables carries its exact JSON value and its dotted path
into ``evaluation.json`` (``data-key="classes.ischemic.dice.mean" data-value="0.83127"``),
so a test can check that the page shows what the evaluation computed.  Figures are built
in a temporary folder that replaces ``figures/`` whole, and the HTML is written
atomically, so a rerun replaces the previous report.

This module assembles the page; ``report.data`` reads its inputs, ``report.html`` holds the
HTML pieces, ``report.plots`` the curves, ``report.sections`` the sections read from files
and ``report.gallery`` those that predict again (gallery, slice viewer, uncertain slices).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config
from flexunet.dataset.leak_record import check_test_images
from flexunet.model.trained import load_trained
from flexunet.report.data import eval_dir_of, evaluated_folders, load_evaluation, model_mismatch, read_per_image
from flexunet.report.gallery import gallery_section, uncertain_html, viewer_hooks, viewer_section
from flexunet.report.html import CSS, FIGURES, Build, esc
from flexunet.report.sections import (curves_section, dataset_section, epochs_section, evaluation_section, header_html,
                                      review_section)
from flexunet.utils.io import list_files, swap_dir, write_text
from flexunet.utils.outputs import check_output_dir, claim_output_dir
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def _check_output(cfg: Config, out: Path, eval_dir: Path, folders: tuple[Path, Path] | None,
                  overwrite: bool) -> None:
    """The report writes report.html and figures/ only into a folder of its own (docs/safety.md: the ownership rule)."""
    shown = folders or (cfg.test.images_dir, cfg.test.masks_dir)
    inputs = [("[eval] eval_dir", eval_dir), ("[train] model_dir", cfg.train.model_dir), *shown,
              *input_folders(cfg)]
    check_output_dir(out, "report", inputs, overwrite,
                     what="[report] output_dir", writes=(REPORT_FILE,), replaces=(FIGURES,))


def build_report(cfg: Config, progress: bool = True, overwrite: bool = False,
                 allow_overlap: bool = False) -> dict[str, Any]:
    """Write ``report.html`` and its figures to ``[report] output_dir``; return what was written.

    Returns ``html`` (the page), ``figures`` (every PNG it shows, under ``figures/``),
    ``output_dir``, ``sections`` (their ids), ``gallery`` (per rank: image, mean Dice
    from per_image.csv, and the per-class Dice of the prediction made for the page),
    ``dataset`` (the statistics, or None), ``viewer`` (grouping kind and the slice names of
    each viewer, or None), ``notes`` (what was skipped and why) and ``stale`` (why evaluation.json's
    figures may not be the current best model's, or None when it records that model's SHA-256).
    """
    eval_dir = eval_dir_of(cfg)
    evaluation = load_evaluation(eval_dir)
    per_image = read_per_image(eval_dir / "per_image.csv")
    folders = evaluated_folders(cfg, evaluation)
    out = Path(cfg.report.output_dir)
    _check_output(cfg, out, eval_dir, folders, overwrite)
    images = folders[0] if folders else cfg.test.images_dir
    if images is not None and Path(images).is_dir():
        check_test_images(cfg.train.model_dir, list_files(images), allow_overlap, "report")
    stale = model_mismatch(cfg, evaluation)
    if stale:  # on the console now, and on the page beside the figures
        log.warning("report: %s", stale)
    claim_output_dir(out, "report", [REPORT_FILE, FIGURES])
    tmp = out / f".{FIGURES}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        b = Build(cfg, tmp, evaluation, eval_dir, progress, model=load_trained(cfg), test_folders=folders,
                  stale=stale)
        viewer_hooks(b)
        steps: list[tuple[str, str, Callable[[], str]]] = [
            ("dataset", "Dataset", lambda: dataset_section(b)),
            ("curves", "Training curves", lambda: curves_section(b)),
            ("evaluation", "Evaluation", lambda: evaluation_section(b)),
            ("review", "Volumes and uncertainty", lambda: review_section(b, uncertain_html)),
            ("gallery", "Gallery", lambda: gallery_section(b, per_image)),
            ("viewer", "Slice viewer", lambda: viewer_section(b)),
            ("epochs", "Epoch-change montages", lambda: epochs_section(b)),
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
            "viewer": b.viewer, "notes": b.notes, "stale": stale}


def _page(b: Build, bodies: Sequence[tuple[str, str, str]]) -> str:
    cfg = b.cfg
    title = f"FlexUNet report: {cfg.path.parent.name if cfg.path else cfg.source}"
    nav = " ".join(f'<a href="#{sid}">{esc(t)}</a>' for sid, t, _ in bodies)
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f'<section id="header"><h1>{esc(title)}</h1>{header_html(b)}<nav>{nav}</nav></section>',
    ]
    for sid, heading, body in bodies:
        parts.append(f'<section id="{sid}"><h2>{esc(heading)}</h2>\n{body}\n</section>')
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
