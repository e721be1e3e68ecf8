"""The report's sections that predict again with the best model: the gallery of best, median and
worst test slices, the slice viewer over every evaluated slice, and the most uncertain slices."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from flexunet.config.loader import Config
from flexunet.dataset.masks import index_to_rgb, read_config_mask
from flexunet.inference.uncertainty import entropy_map, heatmap
from flexunet.model.metrics import image_scores
from flexunet.model.predict import (decide, model_batch, model_input, overlay_image, predict_probs, read_input,
                                    remove_small_components)
from flexunet.report.data import RANKS, PredictionRule, image_means, rank_images
from flexunet.report.html import FIGURES, Build, esc, figure_html, fmt, note
from flexunet.report.viewer import ViewerSlice, group_slices, viewer_group_html, viewer_page_parts
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import pair_by_name, save_image
from flexunet.utils.progress import Progress

log = logging.getLogger("flexunet.report.build")


PANELS = ("image", "ground truth", "prediction", "overlay")


MIN_PANEL = 256   # smaller model inputs are enlarged (nearest) so the overlay's legend leaves the slice visible


def gallery_section(b: Build, per_image: Sequence[Mapping[str, Any]]) -> str:
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
        pairs = evaluated_pairs(cfg, b.test_folders)
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
             f"model, predicted again for this page as the evaluation predicted them (its mirroring and removed "
             f"components). Columns: image, ground truth, prediction, prediction over the image.</p>"]
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


def evaluated_pairs(cfg: Config, folders: tuple[Path, Path] | None) -> dict[str, tuple[Path, Path]]:
    """The pairs of the folders the evaluation scored (``folders``), else of [test]."""
    from flexunet.preprocessing.pipeline import subset_pairs

    if folders is None:
        pairs = subset_pairs(cfg, "test")
    else:
        pairs = pair_by_name(folders[0], folders[1], (cfg.mask.mask_file_format,))
    return {image.name: (image, mask) for image, mask in pairs}


def _predict_pairs(b: Build, pairs: Sequence[tuple[Path, Path]]
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image as shown, ground truth, softmax) per pair, at the model's input size, as evaluation sees them;
    predicted in batches of [eval] batch_size (the gallery and the viewer both read the slices this way)."""
    from flexunet.preprocessing.images import model_mask  # TensorFlow: loaded on first use

    cfg = b.cfg
    h, w = cfg.model.image_height, cfg.model.image_width
    step = max(1, cfg.eval.batch_size)
    for start in range(0, len(pairs), step):
        chunk = pairs[start:start + step]
        originals = [read_input(image, cfg) for image, _ in chunk]
        probs = predict_probs(b.model, model_batch(originals, cfg), _evaluated_flips(b))
        for (_, mask), rgb, prob in zip(chunk, originals, probs):
            shown = np.asarray(Image.fromarray(rgb[..., :3]).resize((w, h), Image.BILINEAR))
            yield shown, model_mask(read_config_mask(mask, cfg).index, cfg).numpy(), prob


def _evaluated_flips(b: Build) -> tuple[int, ...]:
    """The mirror axes the evaluation averaged over (evaluation.json's ``prediction``; none when absent)."""
    return PredictionRule.of(b.evaluation.get("prediction")).flips


def _as_evaluated(b: Build, prob: np.ndarray) -> np.ndarray:
    """The class indices of a softmax as the evaluation scored them (:class:`PredictionRule`): its decision
    (``foreground_weight``), then the predicted components it removed."""
    rule = PredictionRule.of(b.evaluation.get("prediction"))
    return remove_small_components(decide(prob, rule.weight), rule.sizes)[0]


def _predict_cases(b: Build, pairs: Sequence[tuple[Path, Path]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image as shown, ground truth, prediction) per pair, at the model's input size, as evaluation scored them."""
    return [(shown, truth, _as_evaluated(b, prob)) for shown, truth, prob in _predict_pairs(b, pairs)]


def _case(b: Build, rank: str, i: int, name: str, mean: float, truth: np.ndarray, pred: np.ndarray,
          panels: Sequence[Any], csv_dice: Mapping[str, float]) -> str:
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
    factor = max(1, math.ceil(MIN_PANEL / min(truth.shape)))

    def big(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, factor, 0), factor, 1)

    shown, truth, pred = big(shown), big(truth), big(pred)
    rgb_map = cfg.mask.rgb_map
    return [shown, index_to_rgb(truth, rgb_map), index_to_rgb(pred, rgb_map),
            overlay_image(shown, pred, rgb_map, cfg.class_names, cfg.infer.overlay_alpha)]


def viewer_section(b: Build) -> str:
    """One viewer per patient (else series, else run of names) over every evaluated slice."""
    cfg = b.cfg
    try:
        pairs = evaluated_pairs(cfg, b.test_folders)
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


def viewer_hooks(b: Build) -> None:
    """The viewer's extra layer (the softmax's normalised entropy) and each patient's volumes as its note."""
    b.viewer_layers.setdefault("uncertainty", entropy_map)
    rows = ((b.evaluation.get("volumes") or {}).get("per_patient")) or []
    notes: dict[str, list[str]] = {}
    for r in rows:
        notes.setdefault(str(r["patient"]), []).append(
            f"{r['class']}: reference {r['reference_ml']:.2f} mL, predicted {r['predicted_ml']:.2f} mL")
    for patient, parts in notes.items():
        b.viewer_notes.setdefault(patient, "Volumes — " + "; ".join(parts))


def _viewer_slices(b: Build, pairs: Sequence[tuple[Path, Path]]) -> list[Any]:
    """The viewer's slices of ``pairs``: image, truth, prediction, per-class Dice and the extra layers."""
    cfg = b.cfg
    out = []
    for (image, _), (shown, truth, prob) in zip(pairs, _predict_pairs(b, pairs)):
        pred = _as_evaluated(b, prob)
        dice = image_scores(truth, pred, cfg.model.num_classes)["dice"]
        out.append(ViewerSlice(image.name, shown, truth, pred,
                               {n: float(dice[k]) for k, n in enumerate(cfg.class_names) if k > 0},
                               {name: f(prob) for name, f in b.viewer_layers.items()}))
    return out


def uncertain_html(b: Build, uncertainty: Mapping[str, Any], shown: int = 4) -> str:
    parts = ["<h3>Where the model is unsure</h3>",
             f"<p>Rank correlation (Spearman) of the slice uncertainty score with the slice's Dice: "
             f"{fmt(uncertainty.get('spearman_score_vs_dice'))} over {fmt(uncertainty.get('n'))} slices "
             f"(negative: the score points at the slices the model gets wrong).</p>",
             f'<p class="rule">{esc(uncertainty.get("definition", ""))}</p>']
    top = (uncertainty.get("most_uncertain") or [])[:shown]
    pairs = evaluated_pairs(b.cfg, b.test_folders)
    for i, row in enumerate(top):
        if row["name"] not in pairs:
            continue
        rel = _uncertainty_strip(b, pairs[row["name"]][0], i)
        parts.append(figure_html(rel, f"{row['name']}: score {fmt(row['score'])}, Dice {fmt(row['dice'])} "
                                      f"(image | entropy of the softmax)"))
    return "".join(parts)


def _uncertainty_strip(b: Build, image: Path, i: int) -> str:
    """The slice beside its normalised-entropy heatmap, at the model's size."""
    cfg = b.cfg
    rgb = read_input(image, cfg)
    probs = predict_probs(b.model, model_input(rgb, cfg)[None], _evaluated_flips(b))[0]
    heat = heatmap(entropy_map(probs))
    h, w = heat.shape[:2]
    shown = np.asarray(Image.fromarray(rgb[..., :3]).resize((w, h), Image.BILINEAR))
    path = b.tmp / f"uncertain_{i}.png"
    save_image(path, np.concatenate([shown, heat], axis=1))
    return b.add(path)
