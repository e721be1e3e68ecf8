"""``flexunet demo``: the whole pipeline on a synthetic stroke-CT set, on a laptop, in minutes.

synth -> prepare -> split -> augment -> train -> evaluate -> infer -> report, driven by the
demo config shipped in the package (written into the demo folder, so every stage can be
re-run by hand on it).  Re-running into the same folder replaces the previous demo; a
folder that is not a FlexUNet demo folder is never touched.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from flexunet.config.loader import load_config
from flexunet.dataset import augment, prepare, split
from flexunet.evaluation import evaluate
from flexunet.inference import infer
from flexunet.report import build
from flexunet.synthetic import synth
from flexunet.synthetic.demo_config import demo_config_text
from flexunet.training import train
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import write_text
from flexunet.utils.outputs import check_not_inside_others

log = logging.getLogger(__name__)

MARKER = ".flexunet-demo"
CONFIG_NAME = "train_eval_infer.config"
DEFAULT_COUNT = 240


def _claim_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FlexUNetError(f"{out}: is a file; expected a folder for the demo")
    check_not_inside_others(out, "demo", "--out")  # not in a split dataset's subsets, not in a training run
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FlexUNetError(f"{out}: not empty and not a FlexUNet demo folder; choose another --out "
                            f"(the demo only replaces folders it created)")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("created by flexunet demo; re-running the demo replaces this folder's content\n")


def run_demo(out: Path, size: int = 256, epochs: int | None = None, count: int = DEFAULT_COUNT,
             seed: int = 137, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Run every stage into ``out``; returns the evaluation figures and the report path."""
    if size < 32 or size % 16:
        raise FlexUNetError(f"--size {size}: expected a multiple of 16, at least 32 (the demo net has 5 levels)")
    if epochs is not None and epochs < 1:
        raise FlexUNetError(f"--epochs {epochs}: expected an integer >= 1")
    out = Path(out).resolve()
    _claim_folder(out)
    config_path = out / CONFIG_NAME
    write_text(config_path, demo_config_text(size, epochs))
    cfg = load_config(config_path)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def stage(name: str, what: str, fn: Callable[[], object]) -> object:
        echo(f"[{len(timings) + 1}/8] {name}: {what}")
        t0 = time.perf_counter()
        try:
            result = fn()
        except FlexUNetError as exc:
            raise _as_demo_refusal(exc, out) from None
        timings[name] = time.perf_counter() - t0
        echo(f"      {name} done in {timings[name]:.1f} s")
        return result

    # each stage is looked up on its module when it runs (a stage replaced there is the one run)
    stage("synth", f"{count} synthetic CT slices at {size} px -> {out / 'raw'}",
          lambda: synth.synthesize(out / "raw", count=count, seed=seed, size=size, overwrite=True,
                                   progress=progress))
    stage("prepare", "pair PNG/ and MASKS/, pad, resize, check colours",
          lambda: prepare.prepare_dataset(cfg, overwrite=True, progress=progress))
    stage("split", "group by patient into train / valid / test",
          lambda: split.split_dataset(cfg, overwrite=True))
    stage("augment", "offline flips of the train subset",
          lambda: augment.augment_dataset(cfg, overwrite=True, progress=progress))
    stage("train", f"{cfg.train.epochs} epochs of a {cfg.model.num_layers}-level FlexUNet",
          lambda: train.train(cfg, overwrite=True, progress=progress))
    evaluation = stage("evaluate", "test subset: per-class Dice, IoU, HD95, lesion detection",
                       lambda: evaluate.evaluate_model(cfg, progress=progress))
    stage("infer", f"palette masks and overlays for {cfg.infer.images_dir.relative_to(out)}/",
          lambda: infer.infer_images(cfg, progress=progress))
    report = stage("report", "HTML report", lambda: build.build_report(cfg, progress=progress))
    total = time.perf_counter() - start
    classes = _class_figures(evaluation)
    echo("")
    echo(f"FlexUNet demo finished in {total / 60:.1f} min. Test-set figures (whole-set Dice from summed counts; "
         f"per-image mean in brackets):")
    for name, fig in classes.items():
        echo(f"  {name:<12} Dice {fig['dice']:.3f}  IoU {fig['iou']:.3f}  (per-image Dice {fig['per_image_dice']:.3f})"
             f"  {fig['interval']}")
    echo(f"  seed's dice_coef_multiclass (pools background): {evaluation['dice_coef_multiclass']:.4f}")
    for line in _review_lines(evaluation["report"]):
        echo(line)
    echo(f"Report: {report['html']}")
    echo(f"Config for re-running any stage: {config_path}")
    return {"out": out, "config": config_path, "seconds": total, "timings": timings, "classes": classes,
            "report": report["html"], "evaluation": evaluation}


def _as_demo_refusal(exc: FlexUNetError, out: Path) -> FlexUNetError:
    """A stage's refusal as the demo's user can act on it: the demo has no --overwrite, so advice to pass
    it is replaced by what can be done (move the files the demo did not write, or another --out)."""
    text = str(exc)
    if "--overwrite" not in text:
        return exc
    kept = "; ".join(part for part in text.split("; ") if "--overwrite" not in part)
    new = type(exc)(f"{kept}; flexunet demo writes only beside its own files and has no --overwrite: move the "
                    f"files it did not write out of {out}, or run the demo with another --out")
    return new


def _class_figures(evaluation: dict) -> dict[str, dict[str, float | str]]:
    out = {}
    for name, c in evaluation["report"]["classes"].items():
        whole = c["whole_set"]
        ci = c.get("dice_ci95")
        out[name] = {"dice": _num(whole["dice"]), "iou": _num(whole["iou"]),
                     "per_image_dice": _num(c["per_image"]["dice"]["mean"]),
                     "interval": (f"95% interval of the Dice [{ci[0]:.3f}, {ci[1]:.3f}] over {c['ci_units']} "
                                  f"{c['ci_unit']}" if ci else "")}
    return out


def _review_lines(report: dict) -> list[str]:
    """Calibration error per class, uncertainty vs Dice, and volume agreement per class, one line each."""
    if "calibration" not in report:
        return []
    eces = ", ".join(f"{n} {_num(c['ece']):.4f}" for n, c in report["calibration"]["classes"].items())
    u = report["uncertainty"]
    lines = [f"  calibration error (ECE): {eces}",
             f"  uncertainty score vs slice Dice: Spearman {_num(u['spearman_score_vs_dice']):.3f} over {u['n']} "
             f"slices (negative: the score points at the slices to check)"]
    for name, a in report["volumes"]["agreement"].items():
        lines.append(f"  {name:<12} volume over {a['n']} series: mean abs error {_num(a['mean_abs_error_ml']):.2f} mL, "
                     f"bias {_num(a['bias_ml']):.2f} mL, r {_num(a['pearson_r']):.3f}")
    return lines


def _num(value) -> float:
    return float("nan") if value is None else float(value)
