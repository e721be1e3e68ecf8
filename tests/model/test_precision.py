"""flexunet.model.precision: the policy a network is built in, and the run's record of the precision its trained
model predicts at (checked once at the end of training; inference and evaluation follow it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexunet.config.loader import load_config
from flexunet.model import precision
from flexunet.model.precision import RECORD, count_agreement, decide, inference_precision, policy_name
from flexunet.model.trained import check_precision, load_trained
from conftest import make_train_project


def test_policy_names():
    assert [policy_name(p) for p in (None, "auto", "float32", "bfloat16", "float16")] == [
        "float32", "float32", "float32", "mixed_bfloat16", "mixed_float16"]


def test_agreement_counts_pixels_of_the_same_class():
    a = np.zeros((1, 2, 2, 3))
    a[..., 0] = 1.0                       # class 0 everywhere
    b = a.copy()
    b[0, 1, 1] = [0.2, 0.7, 0.1]          # one pixel of four now class 1
    assert count_agreement(a, b) == (3, 4)


def test_the_decision_and_its_threshold():
    assert decide("float32", 0, 0, 0)["inference"] == "float32"
    assert decide("bfloat16", 0, 0, 0)["inference"] == "float32"             # nothing to compare on
    ok = decide("bfloat16", 9990, 10000, 3)
    assert ok["inference"] == "bfloat16" and ok["agreement"] == pytest.approx(0.999) and ">= 99.9%" in ok["why"]
    low = decide("bfloat16", 9989, 10000, 3)
    assert low["inference"] == "float32" and "< 99.9%" in low["why"]
    assert decide("float16", 10, 10, 1)["inference"] == "float16"


def test_a_missing_or_damaged_record_means_float32(tmp_path):
    assert inference_precision(tmp_path) == "float32"
    (tmp_path / RECORD).write_text("{not json")
    assert inference_precision(tmp_path) == "float32"
    (tmp_path / RECORD).write_text(json.dumps({"inference": "float64"}))
    assert inference_precision(tmp_path) == "float32"
    (tmp_path / RECORD).write_text(json.dumps({"inference": "bfloat16"}))
    assert inference_precision(tmp_path) == "bfloat16"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny run trained in bfloat16 (emulated on a CPU without it: slow, but the same arithmetic), 3 epochs."""
    from flexunet.training.train import train

    cfg = load_config(make_train_project(tmp_path_factory.mktemp("bf16")),
                      ["train.epochs=3", "train.mixed_precision='bfloat16'", "train.jit_compile=False"])
    train(cfg, progress=False)
    return cfg


def _conv_dtype(model) -> str:
    return model.get_layer("enc0_conv1").dtype_policy.compute_dtype


def test_a_bf16_run_that_agrees_with_float32_is_evaluated_and_inferred_in_bf16(bf16_run):
    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.inference.infer import infer_images

    cfg = bf16_run
    record = json.loads((cfg.train.model_dir / RECORD).read_text())
    assert record["trained"] == "bfloat16" and record["images"] == 4 and record["pixels"] == 4 * 32 * 32
    assert record["agreement"] >= precision.AGREEMENT and record["inference"] == "bfloat16"
    meta = json.loads((cfg.train.model_dir / "model_meta.json").read_text())
    assert meta["speed"]["precision"] == "bfloat16"
    assert _conv_dtype(load_trained(cfg)) == "bfloat16" and _conv_dtype(load_trained(cfg, "float32")) == "float32"
    assert evaluate_model(cfg, progress=False, overwrite=True)["report"]["compute_dtype"] == "bfloat16"
    assert infer_images(cfg, progress=False, overwrite=True)["compute_dtype"] == "bfloat16"


def test_a_bf16_run_that_disagrees_runs_in_float32(bf16_run, monkeypatch):
    """Forced: two pixels in a thousand differ (the check is run again on the same run folder)."""
    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    cfg = bf16_run
    monkeypatch.setattr("flexunet.model.trained.count_agreement", lambda a, b: (998 * len(a), 1000 * len(a)))
    batches = (x for x, _ in make_dataset(cfg, subset_pairs(cfg, "valid"), training=False))
    record = check_precision(cfg, "bfloat16", batches)
    assert record["inference"] == "float32" and record["agreement"] < precision.AGREEMENT
    assert json.loads((cfg.train.model_dir / RECORD).read_text()) == json.loads(json.dumps(record))
    assert _conv_dtype(load_trained(cfg)) == "float32"
    assert evaluate_model(cfg, progress=False, overwrite=True)["report"]["compute_dtype"] == "float32"
