"""``flexunet evaluate``: the best model on the test subset, judged per class.

1. load the best model of ``[train] model_dir`` and run ``[test]`` through the training
   pipeline (:func:`flexunet.preprocessing.pipeline.make_dataset`, no augmentation, file order);
2. write ``[eval] evaluation_csv`` exactly as the original did (two lines, no header:
   ``<loss>,<value>`` and ``dice_coef_multiclass,<value>``, each ``str(round(value, 4))``),
   the figures averaged over batches as ``keras.Model.evaluate`` averages them;
3. write the honest report to ``[eval] eval_dir`` (default ``[train] eval_dir``):

   evaluation.json       per foreground class: Dice, IoU, precision, recall and HD95 per image
                         (mean, median, n_valid, n_empty) and over the whole set (summed
                         counts); lesion-wise detection; false-positive rate on slices without
                         the class; the confusion matrix; the empty-mask rule; the original's
                         pooled dice beside them
   per_image.csv         one row per image and foreground class
   confusion_matrix.csv  pixel counts, rows = reference, columns = prediction
   confusion_matrix.png  the same, each row as a fraction of its reference pixels
   reliability.png       calibration per class; bland_altman.png  predicted vs reference volumes
                         (evaluation.json's ``calibration``, ``uncertainty`` and ``volumes``:
                         see :mod:`flexunet.evaluation.review`)
   per_volume.csv        per patient / NIfTI case and class (when the manifest groups the test slices
                         into volumes): 3-D Dice, reference and predicted mL, the error

   Per class, evaluation.json also says how sure the whole-set Dice is: ``dice_ci95`` [low, high],
   a bootstrap over the test patients (``ci_unit``, ``ci_units``: the manifest's patients, else
   the slices; :mod:`flexunet.model.intervals`), seeded with ``[train] seed``.

Figures are computed at the model's input resolution (the masks the pipeline feeds the
model).  HD95 is also given in mm when pixel spacing is known: from the ``manifest.json``
that ``flexunet prepare`` writes (found beside ``[test] images_dir``, or through the
``split.json`` of a split dataset), scaled from the file's size to the model's.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config
from flexunet.dataset.leak_record import check_test_images
from flexunet.dataset.records import find_manifest, manifest_items, slice_groups
from flexunet.evaluation.review import Review, bland_altman_png, manifest_geometry, reliability_png
from flexunet.model.intervals import DEFINITION, Interval, dice_intervals, notes
from flexunet.model.metrics import COUNTS, LESION_COUNTS, NSD_DEFINITION, SCORES, MetricAccumulator
from flexunet.model.run_folder import best_model_path
from flexunet.model.precision import model_precision
from flexunet.model.postprocess import ComponentSizes, decision_of, run_sizes
from flexunet.model.predict import decide, predict_probs, prediction_flips, remove_small_components
from flexunet.model.trained import load_trained, model_sha256
from flexunet.utils.errors import DataError
from flexunet.utils.io import StagedFiles, csv_text, staged_files
from flexunet.utils.outputs import check_output_dir, check_output_file, claim_output_dir, claim_output_file
from flexunet.utils.plots import new_figure, png_bytes
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

SEED_METRIC = "dice_coef_multiclass"


# --------------------------------------------------------------------------- the original's file


def seed_evaluation_text(loss_name: str, loss: float, dice: float) -> str:
    """The two lines of the original's evaluation.csv (``str(round(x, 4))``, '\\n' endings)."""
    return f"{loss_name},{round(float(loss), 4)}\n{SEED_METRIC},{round(float(dice), 4)}\n"


class KerasMean:
    """The running mean ``keras.Model.evaluate`` keeps for a loss or a metric.

    A loss is weighted by the batch size (Keras' loss tracker); a metric function that
    returns one value per batch (as ``dice_coef_multiclass``) counts once per batch, and
    one returning per-sample values counts each sample.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def add(self, value: Any, weight: float | None = None) -> None:
        arr = np.asarray(value, np.float64)
        if weight is not None:
            self.total += float(arr.mean()) * weight
            self.count += weight
        elif arr.ndim == 0:
            self.total += float(arr)
            self.count += 1
        else:
            self.total += float(arr.sum())
            self.count += arr.shape[0]

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


# --------------------------------------------------------------------------- pixel spacing


def pixel_spacings(cfg: Config, images: Sequence[Path]) -> tuple[dict[str, tuple[float, float]], Path | None]:
    """(row, col) mm of a pixel at the model's input size, per image file name, and the manifest used.

    Only images whose manifest row has ``pixel_spacing`` (DICOM-sourced slices) appear.
    """
    if not images:
        return {}, None

    manifest = find_manifest(Path(images[0]).parent, cfg)
    items = manifest_items(manifest, "HD95 in pixels only")
    if items is None:
        return {}, None
    try:
        by_id = {str(row["id"]): row.get("pixel_spacing") for row in items}
    except (KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: unreadable (%s); HD95 in pixels only", manifest, exc)
        return {}, None
    m = cfg.model
    out: dict[str, tuple[float, float]] = {}
    for path in images:
        spacing = by_id.get(Path(path).stem)
        if not spacing:
            continue
        with Image.open(path) as img:
            w, h = img.size
        out[Path(path).name] = (float(spacing[0]) * h / m.image_height, float(spacing[1]) * w / m.image_width)
    return out, manifest


# --------------------------------------------------------------------------- running


EVAL_FILES = ("evaluation.json", "per_image.csv", "confusion_matrix.csv", "confusion_matrix.png",
              "reliability.png", "bland_altman.png", "per_volume.csv")
VOLUME_COLUMNS = ("patient", "series", "class", "slices", "dice_3d", "reference_ml", "predicted_ml", "error_ml",
                  "rel_error")
_VOLUMES_SHOWN = 20              # per-volume lines in the log; per_volume.csv holds them all


def check_outputs(cfg: Config, eval_dir: Path, overwrite: bool) -> None:
    """eval_dir and evaluation_csv lie outside every input folder and the run folder (flexunet.utils.outputs);
    eval_dir is evaluate's (or train's curves folder), or --overwrite writes beside the files there;
    evaluation_csv is a new file or evaluate's own."""
    inputs = [*input_folders(cfg), ("[train] model_dir", cfg.train.model_dir)]
    check_output_dir(eval_dir, "evaluate", inputs, overwrite, what="[eval] eval_dir", writes=EVAL_FILES,
                     shares_with=("train",))
    check_output_file(cfg.eval.evaluation_csv, "evaluate", overwrite, "[eval] evaluation_csv", inputs,
                      own_needs_overwrite=False)


def evaluate_model(cfg: Config, model: Any = None, progress: bool = True, overwrite: bool = False,
                   allow_overlap: bool = False) -> dict[str, Any]:
    """Evaluate the best model (or ``model``) on ``[test]``; write the files; return a summary.

    Summary keys: ``loss_name``, ``loss``, ``dice_coef_multiclass`` (the original's two
    figures), ``classes`` (per foreground class: dice, iou, precision, recall and hd95_px
    per-image means, whole-set dice, lesion F1, FP-slice rate), ``num_images``,
    ``evaluation_csv``, ``eval_dir``, ``files`` and ``report`` (evaluation.json's content).
    """
    from flexunet.model.losses import dice_coef_multiclass, make_loss
    from flexunet.preprocessing.pipeline import check_masks, make_dataset, subset_pairs

    pairs = subset_pairs(cfg, "test")
    eval_dir = Path(cfg.eval.eval_dir or cfg.train.eval_dir)
    check_outputs(cfg, eval_dir, overwrite)
    check_masks(cfg, pairs)
    leaks = check_test_images(cfg.train.model_dir, [p for p, _ in pairs], allow_overlap, "evaluate",
                              warn_missing=model is None)
    model_path: Path | None = None
    model_hash: str | None = None
    if model is None:
        model_path = best_model_path(cfg.train.model_dir)
        model_hash = model_sha256(model_path)  # report compares it with the best model of its day
        model = load_trained(cfg)
    spacings, manifest = pixel_spacings(cfg, [p for p, _ in pairs])

    review = Review(cfg.class_names, manifest_geometry(manifest, spacings))
    loss_fn = make_loss(cfg)
    loss_mean, dice_mean = KerasMean(), KerasMean()
    acc = MetricAccumulator(cfg.model.num_classes, cfg.class_names)
    bar = Progress([], "evaluate", total=len(pairs), enabled=progress, unit="img")
    dataset = make_dataset(cfg, pairs, training=False, batch_size=cfg.eval.batch_size)
    seen = 0
    flips = prediction_flips(cfg)   # scored as `flexunet infer` predicts: its flips
    sizes = run_sizes(cfg)                                 # and its post-processing (model.postprocess)
    if any(sizes.at()):
        log.info("predicted components removed below: %s", sizes.text(cfg.class_names))
    for images, onehot in dataset:
        probs = predict_probs(model, np.asarray(images), flips)
        onehot = np.asarray(onehot, np.float32)
        loss_mean.add(loss_fn(onehot, probs), weight=len(probs))
        dice_mean.add(dice_coef_multiclass(onehot, probs))
        for ref, pred, p in zip(onehot.argmax(-1), decide(probs, cfg.infer.foreground_weight), probs):
            pred = remove_small_components(pred, sizes.at())[0]
            name = pairs[seen][0].name
            acc.add(ref, pred, name, spacings.get(name))
            review.add(name, p, ref, pred)
            seen += 1
        bar.update(len(probs))
    bar.close()
    if seen != len(pairs):
        raise DataError(f"{cfg.test.images_dir}: the pipeline yielded {seen} of {len(pairs)} test images")

    csv_path = Path(cfg.eval.evaluation_csv)
    report = {**_report(cfg, acc, loss_mean.value, dice_mean.value, model_path, model_hash, manifest,
                        model_precision(model), sizes),
              "leak_check": leaks, **review.report()}
    for name, interval in set_intervals(acc, slice_groups(manifest, [p.name for p, _ in pairs]),
                                        cfg.train.seed).items():
        report["classes"][name].update(interval.as_json())
    with staged_files() as staged:  # evaluation.csv and eval_dir's files replace the previous ones together
        staged.write_text(csv_path, seed_evaluation_text(cfg.model.loss, loss_mean.value, dice_mean.value))
        claim_output_file(csv_path, "evaluate")
        files = _write_report(eval_dir, acc, report, staged)
        claim_output_dir(eval_dir, "evaluate", EVAL_FILES)
    summary = {
        "loss_name": cfg.model.loss, "loss": loss_mean.value, SEED_METRIC: dice_mean.value,
        "num_images": seen, "classes": _brief(report), "evaluation_csv": csv_path, "eval_dir": eval_dir,
        "files": [csv_path, *files], "report": report,
    }
    _log_summary(summary)
    return summary


def _report(cfg: Config, acc: MetricAccumulator, loss: float, dice: float, model_path: Path | None,
            model_hash: str | None, manifest: Path | None, compute: str, sizes: ComponentSizes) -> dict[str, Any]:
    body = acc.summary()
    return {
        "model": str(model_path) if model_path is not None else None,
        "model_sha256": model_hash,   # the file evaluated: report warns when the best model is no longer it
        "compute_dtype": compute,     # float32, or the run's training precision where it agrees (model.precision)
        "prediction": {**decision_of(cfg),   # as infer predicts: its flips and foreground_weight
                       "min_component_size": list(sizes.at()), "min_component_size_from": sizes.source},
        "test_images_dir": str(Path(cfg.test.images_dir).resolve()),   # what was scored: the report shows these
        "test_masks_dir": str(Path(cfg.test.masks_dir).resolve()),
        "num_images": body.pop("num_images"),
        "resolution": [cfg.model.image_height, cfg.model.image_width],
        "pixel_spacing_source": str(manifest) if manifest is not None else None,
        "images_with_spacing": body.pop("images_with_spacing"),
        "empty_rule": body.pop("empty_rule"),
        "hd95_definition": ("symmetric 95th percentile of boundary-to-boundary distances (max of the two directed "
                 "P95), boundary = 4-connected edge pixels; NaN unless the class is in both masks"),
        "nsd_definition": NSD_DEFINITION,
        "interval_definition": DEFINITION,
        "lesion_definition": "8-connected components; a reference lesion is detected when any predicted pixel "
                   "of its class overlaps it; a predicted component is a true positive when it overlaps "
                   "a reference lesion",
        "seed_metrics": {
            "loss_name": cfg.model.loss, "loss": loss, SEED_METRIC: dice,
            "note": "the original's figures: dice_coef_multiclass pools every class including background, "
                    "so it reads near 1 even for a model that finds no lesion; judge by the per-class figures",
        },
        **body,
    }


def set_intervals(acc: MetricAccumulator, grouping: tuple[str, list[str]] | None, seed: int) -> dict[str, Interval]:
    """Per foreground class, the bootstrap interval of its whole-set Dice over ``grouping``'s units
    ((unit, group of each image), e.g. from the manifest), else over the images."""
    if not acc.records:
        return {}
    tp, fp, fn = (np.stack([r.counts[k] for r in acc.records]) for k in ("tp", "fp", "fn"))
    unit, groups = grouping if grouping is not None else ("slices", None)
    found = dice_intervals(tp, fp, fn, groups, unit, seed=seed)
    return {acc.class_names[k]: found[k] for k in range(1, acc.num_classes)}


def _brief(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, c in report["classes"].items():
        out[name] = {**{m: c["per_image"][m]["mean"] for m in SCORES},
                     "hd95_px": c["per_image"]["hd95_px"]["mean"],
                     "hd95_mm": c["per_image"]["hd95_mm"]["mean"],
                     "nsd": c["per_image"]["nsd"]["mean"],
                     "n_valid": c["per_image"]["dice"]["n_valid"], "n_empty": c["n_empty"],
                     "whole_set_dice": c["whole_set"]["dice"], "lesion_f1": c["lesions"]["f1"],
                     "whole_set_dice_ci95": c.get("dice_ci95"),
                     "fp_slice_rate": c["false_positive_slices"]["rate"]}
    return out


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _log_summary(summary: dict[str, Any]) -> None:
    log.info("evaluated %d test images (model in %s): %s %s, %s %s (original's figures, background included)",
             summary["num_images"], summary["report"]["compute_dtype"], summary["loss_name"], _fmt(summary["loss"]),
             SEED_METRIC, _fmt(summary[SEED_METRIC]))
    for name, c in summary["classes"].items():
        log.info("  %-14s Dice %s (n=%d, %d empty)  IoU %s  precision %s  recall %s  HD95 %s px  "
                 "NSD(1 px) %s  lesion F1 %s  FP-slice rate %s", name, _fmt(c["dice"]), c["n_valid"], c["n_empty"],
                 _fmt(c["iou"]), _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["hd95_px"]),
                 _fmt(c["nsd"]), _fmt(c["lesion_f1"]), _fmt(c["fp_slice_rate"]))
    report = summary["report"]
    intervals = {name: Interval.from_json(c["whole_set"]["dice"], c) for name, c in report["classes"].items()}
    for name, interval in intervals.items():   # how sure: the 95% bootstrap interval (docs/metrics.md)
        log.info("  %-14s whole-set Dice %s", name, interval.text(3))
    for line in notes(intervals):
        log.info("  (interval: %s)", line)
    if "calibration" in report:
        log.info("  calibration error (ECE): %s", ", ".join(f"{n} {_fmt(c['ece'])}" for n, c in
                                                           report["calibration"]["classes"].items()))
        u = report["uncertainty"]
        log.info("  uncertainty vs Dice: Spearman %s over %d slices (negative: the score points at bad slices)",
                 _fmt(u["spearman_score_vs_dice"]), u["n"])
        _log_volumes(report["volumes"]["per_patient"])
        for name, a in report["volumes"]["agreement"].items():
            log.info("  %-14s volume: %d series, bias %s mL (limits %s .. %s), mean abs error %s mL, r %s", name,
                     a["n"], _fmt(a["bias_ml"]), _fmt(a["loa_low_ml"]), _fmt(a["loa_high_ml"]),
                     _fmt(a["mean_abs_error_ml"]), _fmt(a["pearson_r"]))


def _log_volumes(rows: Sequence[dict[str, Any]]) -> None:
    """One line per volume: each class's 3-D Dice and reference -> predicted mL."""
    volumes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        volumes.setdefault((r["patient"], r["series"]), []).append(r)
    for (patient, _), members in list(volumes.items())[:_VOLUMES_SHOWN]:
        log.info("  volume %s (%d slices): %s", patient, members[0]["slices"], "; ".join(
            f"{r['class']} 3-D Dice {_fmt(r['dice_3d'])}, {r['reference_ml']:.2f} -> {r['predicted_ml']:.2f} mL"
            for r in members))
    if len(volumes) > _VOLUMES_SHOWN:
        log.info("  ... and %d more volumes (per_volume.csv)", len(volumes) - _VOLUMES_SHOWN)


# --------------------------------------------------------------------------- files


def _cells(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Floats with 6 decimals, NaN as an empty cell."""
    return [["" if isinstance(v, float) and math.isnan(v) else (f"{v:.6f}" if isinstance(v, float) else v)
             for v in row] for row in rows]


def _write_report(eval_dir: Path, acc: MetricAccumulator, report: dict[str, Any], staged: StagedFiles) -> list[Path]:
    """eval_dir's files, staged (they replace the previous ones when ``staged``'s block ends)."""
    eval_dir.mkdir(parents=True, exist_ok=True)
    paths = [eval_dir / name for name in ("evaluation.json", "per_image.csv", "confusion_matrix.csv",
                                          "confusion_matrix.png")]
    staged.write_json(paths[0], report)
    columns = ["image", "class_index", "class", "ref_pixels", "pred_pixels", *COUNTS, *SCORES, "hd95_px",
               "hd95_mm", "nsd", *LESION_COUNTS]
    rows = acc.per_image_rows()
    staged.write_text(paths[1], csv_text(columns, _cells([[r[c] for c in columns] for r in rows])))
    names = list(acc.class_names)
    staged.write_text(paths[2], csv_text(["reference \\ prediction", *names],
                                         [[n, *map(int, row)] for n, row in zip(names, acc.confusion)]))
    staged.write_bytes(paths[3], confusion_png(acc.confusion, names))

    paths += [eval_dir / "reliability.png", eval_dir / "bland_altman.png", eval_dir / "per_volume.csv"]
    staged.write_bytes(paths[4], reliability_png(report["calibration"]))
    staged.write_bytes(paths[5], bland_altman_png(report["volumes"]))
    staged.write_text(paths[6], csv_text(VOLUME_COLUMNS, _cells([[r[c] for c in VOLUME_COLUMNS]
                                                                 for r in report["volumes"]["per_patient"]])))
    return paths


def confusion_png(confusion: np.ndarray, names: Sequence[str]) -> bytes:
    """A confusion-matrix chart (rows normalised to the reference pixels; counts printed) as PNG bytes."""
    confusion = np.asarray(confusion, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.nan_to_num(confusion / confusion.sum(1, keepdims=True))
    n = len(names)
    fig = new_figure(1.6 * n + 2.4, 1.4 * n + 1.8)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of reference pixels")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{fraction[i, j]:.3f}\n{int(confusion[i, j]):,}", ha="center", va="center",
                    fontsize=8, color="white" if fraction[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix (pixels)")
    fig.tight_layout()
    return png_bytes(fig)
