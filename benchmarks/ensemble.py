"""Ensemble benchmark: do several trained runs of one config, averaged, beat one run?

Each run folder (a config trained with another ``[train] seed``; same data) predicts every test set
as ``flexunet evaluate`` does (its flips, the lesion weight at the decision and its own post-processing;
the figures match its ``evaluation.json``), then the runs' softmaxes are averaged and decided the same
way, with a post-processing chosen for the average on the validation set as training chooses a run's.
One row per test set: whole-set Dice per class (summed counts) of each run, the mean of the runs (what
one user's run scores on average), the mean over every pair averaged, and all runs averaged (each
average with its own post-processing). Test sets: ``own`` (the config's [test] folders) or folders
holding images/ and masks/.

    PYTHONPATH=src python benchmarks/ensemble.py RUN_A RUN_B RUN_C --sets own,/data/others-sharp

A run folder is the folder of its train_eval_infer.config (as the generalisation benchmark writes
them). Evaluation only: minutes for a few hundred 128-px slices.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from flexunet.config.loader import Config, load_config
from flexunet.model.metrics import class_counts, dice_from_counts
from flexunet.model.postprocess import ComponentChooser, run_sizes
from flexunet.model.predict import decide, predict_probs, prediction_flips, remove_small_components
from flexunet.model.trained import load_trained
from flexunet.preprocessing.pipeline import make_dataset, subset_pairs
from flexunet.utils.machine import describe


def run_probs(config: Path, model, test_set: str,
              subset: str = "test") -> tuple[np.ndarray, np.ndarray, list[int], float]:
    """(truth indices, softmax, post-processing sizes, lesion weight) of one run's ``model`` on one test set
    (or on its [valid] folders: ``subset = "valid"``)."""
    overrides = [] if test_set == "own" else [f"test.images_dir='{test_set}/images'",
                                              f"test.masks_dir='{test_set}/masks'"]
    cfg = load_config(config, overrides)
    flips = prediction_flips(cfg)
    truth, probs = [], []
    for images, onehot in make_dataset(cfg, subset_pairs(cfg, subset), training=False, batch_size=8):
        truth.append(np.asarray(onehot).argmax(-1).astype(np.uint8))
        probs.append(predict_probs(model, np.asarray(images, np.float32), flips))
    return np.concatenate(truth), np.concatenate(probs), list(run_sizes(cfg).at()), cfg.infer.foreground_weight


def same_truth(results: list[tuple], where: str) -> np.ndarray:
    """The masks every run read (they must be one set); exits naming ``where`` when they differ."""
    truth = results[0][0]
    if not all(np.array_equal(r[0], truth) for r in results):
        sys.exit(f"{where}: the runs read different masks; expected runs of one config and data")
    return truth


def averaged_sizes(valid: list[tuple], members: tuple[int, ...], cfg: Config) -> list[int]:
    """The smallest component kept per class for the average of runs ``members``, chosen on the [valid] set
    (``valid``: :func:`run_probs` of every run on it) by the rule training uses for one run
    (:class:`flexunet.model.postprocess.ComponentChooser`)."""
    truth, weight = valid[0][0], valid[0][3]
    mean = sum(valid[k][1] for k in members) / len(members)
    chooser = ComponentChooser(cfg.model.num_classes, *truth.shape[1:])
    for ref, pred in zip(truth, decide(mean, weight)):
        chooser.add(ref, pred)
    return list(chooser.choose(cfg.class_names)["min_component_size"])


def dice(probs: np.ndarray, truth: np.ndarray, sizes: list[int], weight: float, classes: int) -> np.ndarray:
    """Whole-set Dice of each foreground class (summed counts, as ``evaluate``'s; NaN for a class in neither)."""
    pred = decide(probs, weight)
    if max(sizes, default=0) > 1:
        pred = np.stack([remove_small_components(p, sizes)[0] for p in pred])
    counts = class_counts(truth, pred, classes)
    with np.errstate(invalid="ignore"):
        return dice_from_counts(counts["tp"], counts["fp"], counts["fn"])[1:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each holding train_eval_infer.config)")
    p.add_argument("--sets", default="own", help="comma-separated: own, or folders with images/ and masks/")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("give at least two run folders")
    configs = [run / "train_eval_infer.config" for run in args.runs]
    print(f"machine: {describe()}")
    names = [run.name for run in args.runs]
    models = [load_trained(load_config(c)) for c in configs]   # each loaded once, for every set
    valid = [run_probs(c, m, "own", "valid") for c, m in zip(configs, models)]
    same_truth(valid, "the validation sets")
    everyone = tuple(range(len(configs)))
    couples = list(itertools.combinations(everyone, 2))
    first = load_config(configs[0])
    sizes = {members: averaged_sizes(valid, members, first) for members in couples + [everyone]}
    print(f"post-processing of the averaged runs, chosen on validation: smallest component kept {sizes[everyone]}")
    print("| test set | " + " | ".join(names) + " | mean of runs | pairs averaged | all averaged |")
    print("|---" * (len(names) + 4) + "|")
    for test_set in args.sets.split(","):
        results = [run_probs(c, m, test_set) for c, m in zip(configs, models)]
        truth, weight = same_truth(results, test_set), results[0][3]
        classes = results[0][1].shape[-1]
        singles = [dice(probs, truth, sizes, weight, classes) for _, probs, sizes, _ in results]
        pairs = [dice((results[a][1] + results[b][1]) / 2, truth, sizes[(a, b)], weight, classes)
                 for a, b in couples]
        together = dice(sum(r[1] for r in results) / len(results), truth, sizes[everyone], weight, classes)
        cell = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
        print(f"| {test_set} | " + " | ".join(cell(s) for s in singles)
              + f" | {cell(np.mean(singles, 0))} | {cell(np.mean(pairs, 0))} | {cell(together)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
