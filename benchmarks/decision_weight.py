"""Whole-set Dice per class of trained runs when every foreground class's softmax probability is multiplied
by a weight before the argmax (weight 1: the argmax `evaluate` and `infer` use today).

Inference only: each run's best model predicts its validation and test subsets and any extra test sets
once; every weight is scored on those probabilities.  No post-processing, no flips, unless asked:
``--flips`` scores every weight twice, without and with the flip TTA ``infer`` runs with
``flip_tta = True`` (the mirrors the run's training used); ``--postprocess`` removes the small components
each run's training chose (its ``postprocess.json``), as ``evaluate`` and ``infer`` do.

    PYTHONPATH=src python benchmarks/decision_weight.py RUN/train_eval_infer.config [...] \\
        --sets standard=SHIFT_STD/master,sharp=SHIFT_SHARP/master --weights 1,1.5,2,3,5 --json out.json

An extra set is a folder with ``images/`` and ``masks/`` (scored as the run's ``[test]`` subset).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flexunet.config.loader import load_config
from flexunet.model.metrics import class_counts, scores_from_counts
from flexunet.model.postprocess import read_record
from flexunet.model.predict import decide, predict_probs, remove_small_components, tta_flips
from flexunet.model.trained import load_trained
from flexunet.preprocessing.pipeline import make_dataset, subset_pairs


def _probs(model, config: Path, folder: str | None, subset: str, flips: tuple[int, ...] = ()):
    cfg = load_config(config) if folder is None else load_config(
        config, [f"test.images_dir='{folder}/images'", f"test.masks_dir='{folder}/masks'"])
    probs, refs = [], []
    for images, onehot in make_dataset(cfg, subset_pairs(cfg, subset), training=False, batch_size=8):
        probs.append(predict_probs(model, np.asarray(images), flips))
        refs.append(np.asarray(onehot).argmax(-1))
    return np.concatenate(probs), np.concatenate(refs)


def dice_per_class(probs: np.ndarray, ref: np.ndarray, weight: float,
                   min_sizes: list[int] | None = None) -> list[float | None]:
    """Whole-set Dice of each foreground class, the classes decided as ``infer`` decides them at ``weight``
    (:func:`flexunet.model.predict.decide`), components under ``min_sizes`` (per class) removed; None for a
    class in neither the masks nor the prediction."""
    index = decide(probs, weight)
    if min_sizes:
        index = np.stack([remove_small_components(one, min_sizes)[0] for one in index])
    counts = class_counts(ref, index, probs.shape[-1])
    dice = scores_from_counts(counts["tp"], counts["fp"], counts["fn"])["dice"]
    return [None if np.isnan(d) else round(float(d), 3) for d in dice[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", type=Path, help="trained runs' configs")
    parser.add_argument("--sets", default="", help="extra test sets, name=folder, comma-separated")
    parser.add_argument("--weights", default="1,1.5,2,3,5")
    parser.add_argument("--flips", action="store_true", help="score each weight without and with flip TTA")
    parser.add_argument("--postprocess", action="store_true", help="remove the small components each run chose")
    parser.add_argument("--json", type=Path, help="write the figures and the machine as JSON (a new file)")
    args = parser.parse_args()
    if args.json is not None and args.json.exists():
        parser.error(f"--json {args.json}: exists; expected a new file (nothing is replaced)")
    weights = [float(w) for w in args.weights.split(",")]
    extra = [tuple(item.split("=", 1)) for item in args.sets.split(",") if item]
    from flexunet.utils.machine import describe

    machine = describe()
    print(f"machine: {machine}")
    rows = {}
    for config in args.configs:
        cfg = load_config(config)
        model = load_trained(cfg)
        record = read_record(cfg.train.model_dir) if args.postprocess else None
        sizes = list(record["min_component_size"]) if record else None
        sets = [("valid", None, "valid"), ("test", None, "test")] + [(n, f, "test") for n, f in extra]
        for flips in ((), tta_flips(cfg)) if args.flips else ((),):
            key = f"{config}" + (f" flips {','.join(map(str, flips))}" if flips else "")
            scored = {name: _probs(model, config, folder, subset, flips) for name, folder, subset in sets}
            rows[key] = {str(w): {name: dice_per_class(p, r, w, sizes) for name, (p, r) in scored.items()}
                         for w in weights}
            for w in weights:
                print(key, f"weight {w:g}:", "  ".join(f"{n} {'/'.join(f'{d:.3f}' if d is not None else '-' for d in v)}"
                                                       for n, v in rows[key][str(w)].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
