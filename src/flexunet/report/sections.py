"""The report's sections read from files: header, dataset statistics, training curves, the evaluation
tables (every number with its path into evaluation.json), volumes and calibration, epoch montages."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from flexunet.config.loader import Config
from flexunet.dataset.stats import dataset_stats
from flexunet.model.inspection import describe_members
from flexunet.model.intervals import Interval, notes as interval_notes
from flexunet.model.run_folder import best_model_path, member_dir, read_meta
from flexunet.report.data import PredictionRule, dataset_dir_of, epoch_montages, read_json
from flexunet.report.html import Build, esc, figure_html, fmt, has, html_table, lookup, note, value_cell, warning
from flexunet.report.plots import plot_dice, plot_learning_rate, plot_loss
from flexunet.utils.errors import DataError


POOLED_EXPLANATION = (
    "dice_coef_multiclass (the original's figure) pools the pixels of every class, background included, into "
    "one Dice; background is most of a CT slice, so a model that predicts only background already scores "
    "about 0.97-0.99. The per-class figures leave background out and score each lesion class on its own.")


def _mtime(path: Path | None) -> str:
    if path is None or not Path(path).exists():
        return "n/a"
    return _dt.datetime.fromtimestamp(Path(path).stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")


def _run_line(cfg: Config) -> str:
    """How the run trained: its epochs, best epoch, averaged epochs and ending, or with ``[model] members``
    (no run state of its own) each member's."""
    meta = read_meta(cfg.train.model_dir) or {}
    if meta.get("members"):
        return (f"the model is the mean of the softmax outputs of {len(meta['members'])} networks trained apart: "
                f"{describe_members(meta['members'], cfg.train.monitor)}")
    state = read_json(cfg.train.model_dir / "last_checkpoint" / "state.json") or {}
    run = f"{state.get('epoch', 'n/a')} epoch(s) trained"
    if state.get("best_epoch"):
        run += f"; best {cfg.train.monitor} {fmt(state.get('best'), 4)} at epoch {state['best_epoch']}"
    if meta.get("averaged_epochs"):  # [train] average_best
        run += f"; the model is the mean of the weights of epochs {', '.join(map(str, meta['averaged_epochs']))}"
    if state.get("stopped_by"):
        run += f"; stopped by {state['stopped_by']}"
    return run


def header_html(b: Build) -> str:
    cfg, m, ev = b.cfg, b.cfg.model, b.evaluation
    model_path = best_model_path(cfg.train.model_dir)
    names = ", ".join(cfg.class_names)
    params = b.model.count_params() if b.model is not None else None
    summary = (f"{m.model}: {fmt(params)} parameters, input {m.image_height}x{m.image_width}x{m.image_channels}, "
               f"{m.num_classes} classes ({names}), loss {m.loss}, optimizer {m.optimizer} "
               f"(learning rate {m.learning_rate:g}), {m.num_layers} levels from {m.base_filters} filters")
    run = _run_line(cfg)
    dataset, how = dataset_dir_of(cfg)
    dates = [("report written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")),
             ("best model saved", _mtime(model_path)),
             ("evaluated", _mtime(b.eval_dir / "evaluation.json"))]
    paths = [("config", cfg.path or cfg.source), ("best model", model_path), ("evaluation", b.eval_dir),
             ("test images", ev.get("test_images_dir", cfg.test.images_dir)),
             ("dataset", f"{dataset} ({how})" if dataset else how),
             ("epoch-change montages", cfg.train.epoch_change_infer_dir)]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in dates + paths)
    stale = warning(b.stale, "stale-model") if b.stale else ""
    return (f'<p class="summary"><strong>{esc(summary)}</strong></p>{stale}<p>{esc(run)}; evaluated on '
            f'{fmt(ev.get("num_images"))} test images at {esc("x".join(map(str, ev.get("resolution", []))))} '
            f"pixels.</p><table>{rows}</table>")


def dataset_section(b: Build) -> str:
    folder, how = dataset_dir_of(b.cfg)
    if folder is None:
        return b.note(f"Dataset statistics skipped: {how}.")
    if not folder.is_dir():
        return b.note(f"Dataset statistics skipped: {folder} ({how}) does not exist.")
    try:
        stats = dataset_stats(folder, b.tmp / "dataset", b.cfg.mask.rgb_map, b.cfg.class_names,
                              progress=b.progress, mask_format=b.cfg.mask.format)
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


def curves_section(b: Build) -> str:
    """The training curves: the run's, or with ``[model] members`` each member's from its own folder."""
    cfg = b.cfg
    if cfg.model.members == 1:
        return _curves(b, cfg.train.eval_dir, cfg.train.model_dir, "", "curves")
    return "".join(f"<h3>Member {k} (seed {cfg.train.seed + k - 1})</h3>"
                   + _curves(b, folder, folder, f"member {k}: ", f"curves-{k}")
                   for k in range(1, cfg.model.members + 1)
                   for folder in [member_dir(cfg.train.model_dir, k)])


def _curves(b: Build, eval_dir: Path, model_dir: Path, caption: str, sub: str) -> str:
    path = eval_dir / "history.json"
    hist = read_json(path)
    if not hist or not hist.get("epochs"):
        return b.note(f"No training curves: {path} not found or empty (written by `flexunet train`).")
    state = read_json(model_dir / "last_checkpoint" / "state.json") or {}
    best = state.get("best_epoch")
    figs = [figure_html(b.add(plot_loss(hist, b.cfg.model.loss, best, b.tmp / sub / "loss.png")),
                        f"{caption}training and validation loss"),
            figure_html(b.add(plot_dice(hist, b.cfg, best, b.tmp / sub / "dice.png")),
                        f"{caption}per-class Dice, training and validation")]
    if hist.get("learning_rate"):
        figs.append(figure_html(b.add(plot_learning_rate(hist, best, b.tmp / sub / "learning_rate.png")),
                                f"{caption}learning rate"))
    collapse = hist.get("collapse") or {}  # the collapse guard's line, when it fired
    warning = f"<p><strong>{esc(collapse['message'])}</strong></p>" if collapse.get("message") else ""
    return (f"{warning}<p>{len(hist['epochs'])} epoch(s) from {esc(path)}. Dice during training is accumulated "
            f"over each epoch's pixels (per class, background left out).</p>{''.join(figs)}")


# (label, path under classes.<name>, path under mean_foreground or None, digits)
EvalRow = tuple[str, str, str | None, int]


def _per_image_rows(label: str, key: str, digits: int, median: bool = True) -> tuple[EvalRow, ...]:
    """The per-image mean (with its macro average) and, when asked, the median of one metric."""
    mean: EvalRow = (f"{label} per image: mean", f"per_image.{key}.mean", f"per_image_{key}", digits)
    if not median:
        return (mean,)
    return mean, (f"{label} per image: median", f"per_image.{key}.median", None, digits)


EVAL_ROWS: tuple[EvalRow, ...] = (
    *_per_image_rows("Dice", "dice", 3),
    *_per_image_rows("IoU", "iou", 3),
    *_per_image_rows("Precision", "precision", 3, median=False),
    *_per_image_rows("Recall", "recall", 3, median=False),
    *_per_image_rows("HD95 (px)", "hd95_px", 2),
    *_per_image_rows("HD95 (mm)", "hd95_mm", 2),
    *_per_image_rows("NSD at 1 px", "nsd", 3, median=False),
    ("Images scored for Dice (n valid)", "per_image.dice.n_valid", None, 0),
    ("Images with the class in neither mask (n empty)", "n_empty", None, 0),
    ("Images with the class in the reference", "slices_with_class", None, 0),
    ("Whole-set Dice (summed counts)", "whole_set.dice", "whole_set_dice", 3),
    ("Whole-set IoU", "whole_set.iou", "whole_set_iou", 3),
    ("Whole-set precision", "whole_set.precision", "whole_set_precision", 3),
    ("Whole-set recall", "whole_set.recall", "whole_set_recall", 3),
    ("Whole-set NSD at 1 px", "whole_set.nsd", "whole_set_nsd", 3),
    ("Reference lesions", "lesions.ref_lesions", None, 0),
    ("Lesions detected", "lesions.detected", None, 0),
    ("Lesion-wise recall", "lesions.recall", None, 3),
    ("Lesion-wise precision", "lesions.precision", None, 3),
    ("Lesion-wise F1", "lesions.f1", "lesion_f1", 3),
    ("Slices without the class", "false_positive_slices.slices_without_class", None, 0),
    ("... of which with a false positive", "false_positive_slices.slices_with_false_positive", None, 0),
    ("False-positive slice rate", "false_positive_slices.rate", None, 3),
)


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


def evaluation_section(b: Build) -> str:
    ev = b.evaluation
    classes = list(ev["classes"])
    has_mm = any(has(ev, f"classes.{c}.per_image.hd95_mm.mean") and
                 lookup(ev, f"classes.{c}.per_image.hd95_mm.mean") is not None for c in classes)
    head = "<tr><th>measure</th>" + "".join(f"<th>{esc(c)}</th>" for c in classes) + \
        "<th>mean of the foreground classes</th></tr>"
    rows = []
    for label, sub, macro, digits in EVAL_ROWS:
        if "hd95_mm" in sub and not has_mm:
            continue
        cells = [value_cell(ev, f"classes.{c}.{sub}", digits) if has(ev, f"classes.{c}.{sub}")
                 else "<td>n/a</td>" for c in classes]
        macro_key = f"mean_foreground.{macro}" if macro else None
        cells.append(value_cell(ev, macro_key, digits) if macro_key and has(ev, macro_key) else "<td></td>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(cells)}</tr>")
        if sub == "whole_set.dice":
            rows.append(_interval_row(ev, classes))
    mm_note = "" if has_mm else " HD95 in mm is not shown: no test image has a known pixel spacing."
    parts = [
        warning(b.stale) if b.stale else "",
        f"<p>{fmt(ev.get('num_images'))} test images of {esc(ev.get('test_images_dir', ''))}, scored at the "
        f"model's input resolution ({esc('x'.join(map(str, ev.get('resolution', []))))}).{esc(mm_note)}</p>",
        f'<table id="per-class" data-source="evaluation.json">{head}{"".join(rows)}</table>',
        _interval_note(ev, classes),
        _pooled_table(ev),
        _leak_note(ev),
        '<h3>Rules</h3>',
        f'<p class="rule"><strong>Empty masks.</strong> {esc(ev.get("empty_rule", "not stated"))}</p>',
    ]
    for key, name in (("hd95_definition", "HD95"), ("nsd_definition", "NSD"), ("lesion_definition", "Lesions"),
                      ("interval_definition", "Intervals")):
        if ev.get(key):
            parts.append(f'<p class="rule"><strong>{name}.</strong> {esc(ev[key])}</p>')
    if ev.get("prediction"):
        parts.append(f'<p class="rule"><strong>Prediction.</strong> {esc(prediction_text(ev["prediction"], classes))}</p>')
    parts.append("<h3>Confusion matrix</h3>" + _confusion(b))
    return "\n".join(parts)


def prediction_text(prediction: Mapping[str, Any], classes: list[str]) -> str:
    """How the scored masks were predicted, as `flexunet infer` writes them: flips and the smallest component
    kept per class (evaluation.json's ``prediction``, read as :class:`PredictionRule`)."""
    rule = PredictionRule.of(prediction)
    flips, weight, sizes, source = rule.flips, rule.weight, rule.sizes, rule.sizes_from
    text = (f"averaged over {len(flips)} mirror image(s) and the original" if flips else "one pass, no mirroring")
    if weight > 1.0:
        text += (f"; a pixel is marked as a lesion class where that class's probability is above 1/{weight:g} of "
                 f"background's (foreground_weight {weight:g})")
    if isinstance(sizes, list) and len(sizes) == len(classes) + 1 and any(sizes[1:]):
        chosen = "chosen on the validation set when training ended" if source == "postprocess.json" else f"from {source}"
        removed = ", ".join(f"{c} under {n} px" for c, n in zip(classes, sizes[1:]) if n)
        text += f"; predicted components removed: {removed} ({chosen})"
    elif isinstance(sizes, int) and sizes > 1:          # evaluation.json of an older version: one size
        text += f"; predicted components under {sizes} px removed"
    else:
        text += "; every predicted component kept"
    return text + "."


def _interval_row(ev: Mapping[str, Any], classes: list[str]) -> str:
    """The whole-set Dice's 95% interval per class: [low, high] over N patients (or slices), n/a when there
    is none (:func:`_interval_note` says why)."""
    cells = []
    for c in classes:
        entry = ev["classes"][c]
        if "dice_ci95" not in entry:
            cells.append("<td>n/a</td>")
            continue
        iv = Interval.from_json(lookup(ev, f"classes.{c}.whole_set.dice"), entry)
        shown = f"[{fmt(iv.low)}, {fmt(iv.high)}] over {iv.units} {iv.unit}" if iv.low is not None else "n/a"
        cells.append(f'<td class="num" data-key="classes.{esc(c)}.dice_ci95" '
                     f'data-value="{esc(json.dumps(entry["dice_ci95"]))}">{esc(shown)}</td>')
    return f"<tr><th>{esc('Whole-set Dice: 95% interval')}</th>{''.join(cells)}<td></td></tr>"


def _interval_note(ev: Mapping[str, Any], classes: list[str]) -> str:
    """How to read the intervals, and what limits them (few patients, one patient, a class absent)."""
    have = {c: ev["classes"][c] for c in classes if "dice_ci95" in ev["classes"][c]}
    if not have:
        return note("evaluation.json has no intervals (written by an older flexunet); run `flexunet evaluate` "
                    "again to see how sure the whole-set Dice is.")
    first = next(iter(have.values()))
    text = (f"The interval shows how far the whole-set Dice could move on another test set of this size "
            f"({first.get('ci_units')} {first.get('ci_unit')}, drawn again 1000 times): two figures whose "
            f"intervals overlap widely are not shown to differ by this set.")
    named = {c: Interval.from_json(lookup(ev, f"classes.{c}.whole_set.dice"), e) for c, e in have.items()}
    return note(text + "".join(f" {line[0].upper()}{line[1:]}." for line in interval_notes(named)))


def _pooled_table(ev: Mapping[str, Any]) -> str:
    seed = ev.get("seed_metrics") or {}
    rows = []
    if "loss" in seed:
        rows.append(f"<tr><th>{esc(seed.get('loss_name', 'loss'))} (loss on the test set)</th>"
                    f"{value_cell(ev, 'seed_metrics.loss', 4)}</tr>")
    if "dice_coef_multiclass" in seed:
        rows.append('<tr class="pooled"><th>dice_coef_multiclass (original, pooled, background included)</th>'
                    f"{value_cell(ev, 'seed_metrics.dice_coef_multiclass', 4)}</tr>")
    if has(ev, "mean_foreground.per_image_dice"):
        rows.append("<tr><th>Dice per image, mean of the foreground classes (honest)</th>"
                    f"{value_cell(ev, 'mean_foreground.per_image_dice', 4)}</tr>")
    if has(ev, "mean_foreground.whole_set_dice"):
        rows.append("<tr><th>Whole-set Dice, mean of the foreground classes</th>"
                    f"{value_cell(ev, 'mean_foreground.whole_set_dice', 4)}</tr>")
    if not rows:
        return note("evaluation.json has no seed_metrics: the original's figures are not shown.")
    return ("<h3>The original's figure beside the honest ones</h3>"
            f'<table id="pooled" data-source="evaluation.json">{"".join(rows)}</table>'
            f'<p class="note">{esc(POOLED_EXPLANATION)}</p>')


def _confusion(b: Build) -> str:
    ev = b.evaluation
    parts = []
    png = b.eval_dir / "confusion_matrix.png"
    if png.is_file():
        parts.append(figure_html(b.copy(png, "confusion_matrix.png"),
                                 "confusion matrix: rows = reference, columns = prediction"))
    if has(ev, "confusion_matrix.counts") and has(ev, "confusion_matrix.labels"):
        labels = ev["confusion_matrix"]["labels"]
        head = "<tr><th>reference \\ prediction</th>" + "".join(f"<th>{esc(n)}</th>" for n in labels) + "</tr>"
        rows = [f"<tr><th>{esc(name)}</th>"
                + "".join(value_cell(ev, f"confusion_matrix.counts.{i}.{j}") for j in range(len(labels))) + "</tr>"
                for i, name in enumerate(labels)]
        parts.append(f'<table id="confusion" data-source="evaluation.json">{head}{"".join(rows)}</table>')
    return "".join(parts) or b.note(f"No confusion matrix in {b.eval_dir}.")


def epochs_section(b: Build) -> str:
    folder = b.cfg.train.epoch_change_infer_dir
    montages = epoch_montages(folder)
    if not montages:
        return b.note(f"No epoch-change montages in {folder} (set [train] epoch_change_infer = True to record "
                      f"the predictions of a few [infer] images after every epoch).")
    figs = [figure_html(b.copy(path, f"epochs/{path.name}"), f"epoch {n}", "wide") for n, path in montages]
    return (f"<p>{len(montages)} montage(s) from {esc(folder)}: the same [infer] images predicted after each "
            f"epoch.</p>" + "".join(figs))


def review_section(b: Build, uncertain_html: Callable[[Build, Mapping[str, Any]], str]) -> str:
    """Per-patient volumes with the Bland-Altman plot, calibration with the reliability diagram, and the most
    uncertain slices with their entropy maps (evaluation.json's ``volumes``, ``calibration``, ``uncertainty``);
    ``uncertain_html`` draws the last (the gallery's: it predicts again)."""
    ev = b.evaluation
    if "calibration" not in ev:
        return b.note("evaluation.json has no volumes or calibration (written by an older flexunet); run "
                      "`flexunet evaluate` again to see them.")
    return "\n".join([_volume_tables(b, ev.get("volumes") or {}), _calibration_html(b, ev["calibration"]),
                      uncertain_html(b, ev.get("uncertainty") or {})])


def _volume_tables(b: Build, volumes: Mapping[str, Any]) -> str:
    parts = ["<h3>Lesion volume per patient</h3>"]
    rows = volumes.get("per_patient") or []
    if not rows:
        parts.append(b.note("No volumes: no test slice has a patient, a pixel spacing and a slice spacing in "
                            "prepare's manifest (DICOM-sourced data gives them)."))
    else:
        parts.append(html_table("volumes", ("patient", "series", "class", "slices", "reference mL", "predicted mL",
                                        "absolute error mL", "relative error"),
                            [[r["patient"], r["series"], r["class"], r["slices"], r["reference_ml"],
                              r["predicted_ml"], r["abs_error_ml"], r["rel_error"]] for r in rows]))
        stats = volumes.get("agreement") or {}
        parts.append(html_table("volume-agreement", ("class", "series", "bias mL", "limits of agreement mL",
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


def _calibration_html(b: Build, calibration: Mapping[str, Any]) -> str:
    classes = calibration.get("classes") or {}
    parts = ["<h3>Calibration</h3>",
             html_table("calibration", ("class", "expected calibration error"),
                    [[n, c.get("ece")] for n, c in classes.items()]),
             f'<p class="rule">{esc(calibration.get("definition", ""))}</p>']
    png = b.eval_dir / "reliability.png"
    if png.is_file():
        parts.append(figure_html(b.copy(png, "reliability.png"), "reliability diagram"))
    return "".join(parts)
