"""The precision a network is built and run at: the Keras policy, and the run folder's record of the
precision its trained model predicts at.

1. :func:`policy_name` / :func:`precision_policy`: float32, or the mixed policy of a lower precision
   (``mixed_bfloat16``, ``mixed_float16``: float32 variables, lower-precision arithmetic; the softmax,
   losses, metrics and BatchNorm statistics stay float32, :mod:`flexunet.model.network`);
2. :data:`RECORD` (``precision.json`` in ``[train] model_dir``, beside ``model_meta.json``): at the
   end of a run trained in bfloat16 or float16 its best model predicts the validation images twice,
   in float32 and in its training precision (:func:`flexunet.model.trained.check_precision`); where the
   class indices agree on at least :data:`AGREEMENT` of the pixels, inference and evaluation run it in
   its training precision, else in float32.  :func:`inference_precision` reads the decision: a run
   without a record (trained in float32, stopped before its end, or older) runs in float32.

Pure bookkeeping: Keras is imported only inside :func:`precision_policy`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from flexunet.utils.io import read_json_record, write_json

log = logging.getLogger(__name__)

RECORD = "precision.json"
AGREEMENT = 0.999          # share of pixels whose class must be the same as float32's
LOWER = ("bfloat16", "float16")


def policy_name(precision: str | None) -> str:
    """The Keras dtype policy of a precision: "float32" (also for None and an unresolved "auto") or
    "mixed_bfloat16" / "mixed_float16"."""
    return f"mixed_{precision}" if precision in LOWER else "float32"


@contextlib.contextmanager
def precision_policy(precision: str | None) -> Iterator[None]:
    """Layers built inside take ``precision``'s policy; the global policy is restored after."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy_name(precision))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def model_precision(model: Any) -> str:
    """The precision a built model computes in: its first layer with weights' compute dtype (float32 for an
    object without Keras layers)."""
    for layer in getattr(model, "layers", ()):
        if getattr(layer, "weights", None):
            return str(layer.dtype_policy.compute_dtype)
    return "float32"


def count_agreement(reference: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    """Pixels whose argmax class is the same in two softmax batches (B, H, W, K), and all pixels."""
    a, b = np.asarray(reference).argmax(-1), np.asarray(other).argmax(-1)
    return int((a == b).sum()), int(a.size)


def decide(trained: str, agree: int, total: int, images: int) -> dict[str, Any]:
    """The record: the precision inference uses, and why."""
    base = {"trained": trained, "threshold": AGREEMENT}
    if trained not in LOWER:
        return {**base, "inference": "float32", "why": "trained in float32"}
    if not total:
        return {**base, "inference": "float32", "images": 0,
                "why": f"no validation image to compare {trained} with float32 on: float32"}
    share = agree / total
    ok = share >= AGREEMENT
    why = (f"the class of {share:.3%} of the {total} pixels of {images} validation image(s) is the same in "
           f"{trained} and float32 ({'>=' if ok else '<'} {AGREEMENT:.1%}): "
           + (f"run in {trained}" if ok else "run in float32"))
    return {**base, "inference": trained if ok else "float32", "agreement": share, "pixels": total,
            "images": images, "why": why}


def write_record(model_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(model_dir) / RECORD
    write_json(path, record)
    return path


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The run folder's record (None when it has none, or an unreadable one: float32 is then used)."""
    return read_json_record(Path(model_dir) / RECORD, "the model runs in float32")


def inference_precision(model_dir: Path) -> str:
    """The precision the run's trained model predicts at: its training precision where the record says
    it agrees with float32, else float32."""
    record = read_record(model_dir) or {}
    chosen = record.get("inference")
    return chosen if chosen in LOWER else "float32"
