"""The cost of the whole-set Dice's bootstrap interval (flexunet.model.intervals), with timeit.

    PYTHONPATH=src python benchmarks/interval_cost.py

Per-slice counts of 3 classes (the cost does not depend on their values): 36 slices of 4 patients
(a 15% test split of the demo) and 1000 slices of 125 patients, resampled by patient and by slice,
1000 draws each; the best of 5 repeats.
"""

from __future__ import annotations

import timeit

import numpy as np

from flexunet.model.intervals import dice_intervals


def counts(slices: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 400, (slices, 3)).astype(float)
    tp = np.floor(ref * rng.uniform(0.3, 1.0, (slices, 3)))
    return tp, np.floor(ref * rng.uniform(0.0, 0.3, (slices, 3))), ref - tp


def main() -> None:
    for slices, patients, number in ((36, 4, 200), (1000, 125, 20)):
        data = counts(slices)
        groups = [f"p{i * patients // slices}" for i in range(slices)]
        for label, g in ((f"by patient ({patients})", groups), ("by slice", None)):
            best = min(timeit.repeat(lambda: dice_intervals(*data, g), number=number, repeat=5)) / number
            print(f"{slices} slices, resampled {label}: {best * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
