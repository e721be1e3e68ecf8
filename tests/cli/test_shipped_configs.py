"""Every shipped config, as users run it: train -> evaluate -> infer -> report through the CLI.

Each config is copied unchanged into a temporary project laid out as its relative paths
expect (so its data, model, eval and infer folders resolve as they would for a user), and
only what makes the run small is overridden with ``--set``: image size, filters, levels,
epochs, batch size.  Every feature the config switches on stays on: TensorBoard (the
original's default), XLA (the stroke config's jit_compile), epoch-change inference, the
learning-rate reducer, weights-only checkpoints, the demo's cache.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, STROKE_CONFIG, make_tiny_dataset
from flexunet.cli.main import main

# the original TensorFlow-FlexUNet config: beside the repository in CI (../shared/seed), else our copy
ORIGINAL_CONFIG = next(p for p in (ROOT.parent / "shared" / "seed" / "train_eval_infer.config",
                                   ROOT / "tests" / "data" / "original_train_eval_infer.config") if p.is_file())
DEMO_CONFIG = ROOT / "src" / "flexunet" / "configs" / "demo.config"

SMALL = ["model.image_width=32", "model.image_height=32", "model.base_filters=4", "model.num_layers=2",
         "train.epochs=1", "train.batch_size=4", "eval.batch_size=4"]


def _dataset(root: Path) -> None:
    """root/{train,valid,test}/{images,masks} and root/mini_test/images: 32 px colour-mask slices."""
    for subset, n, seed in (("train", 8, 1), ("valid", 4, 2), ("test", 4, 3)):
        make_tiny_dataset(root / subset, n=n, size=32, seed=seed)
    (root / "mini_test" / "images").mkdir(parents=True)
    for image in sorted((root / "test" / "images").iterdir())[:2]:
        shutil.copy(image, root / "mini_test" / "images" / image.name)


def _project(tmp_path: Path, config: Path, config_dir: str, dataset_dir: str) -> Path:
    """Copy ``config`` byte for byte to tmp_path/config_dir and a tiny dataset to tmp_path/dataset_dir."""
    target = tmp_path / config_dir / "train_eval_infer.config"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config, target)
    _dataset(tmp_path / dataset_dir)
    return target


def _run_pipeline(config: Path, extra: list[str] = ()) -> None:
    overrides = [arg for kv in [*SMALL, *extra] for arg in ("--set", kv)]
    for command in ("train", "evaluate", "infer", "report"):
        assert main(["--quiet", command, str(config), *overrides]) == 0, command


def _scalars(log_dir: Path) -> dict[str, list[float]]:
    """Scalar series from TensorBoard event files, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    for tag in acc.Tags()["tensors"]:  # tf.summary.scalar (TF2) stores scalars as tensor events
        out[tag] = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    return out


def _check_outputs(config: Path, model_dir: Path, eval_dir: Path, infer_in: Path, infer_out: Path,
                   best: str, report_dir: Path) -> None:
    assert (model_dir / best).is_file()
    with open(eval_dir / "train_losses.csv") as fh:
        rows = list(csv.reader(fh, skipinitialspace=True))
    assert rows[0] == ["epoch", "loss", "val_loss"] and np.isfinite(float(rows[1][1]))
    # the original's two-line evaluation file and the honest report beside it
    evaluation = (config.parent / "evaluation.csv").read_text().splitlines()
    assert len(evaluation) == 2 and evaluation[1].startswith("dice_coef_multiclass,")
    assert (eval_dir / "evaluation.json").is_file() and (eval_dir / "per_image.csv").is_file()
    inputs = sorted(p.name for p in infer_in.iterdir())
    assert sorted(p.name for p in infer_out.glob("*.png")) == inputs
    for name in inputs:  # palette PNGs at the input's size
        with Image.open(infer_out / name) as mask, Image.open(infer_in / name) as image:
            assert mask.mode == "P" and mask.size == image.size
    assert (report_dir / "report.html").stat().st_size > 1000


def _check_tensorboard(model_dir: Path) -> None:
    logs = model_dir / "logs"
    assert list(logs.rglob("events.out.tfevents.*")), f"no event files under {logs}"
    train, valid = _scalars(logs / "train"), _scalars(logs / "validation")
    assert len(train["epoch_loss"]) == 1 and np.isfinite(train["epoch_loss"][0])
    assert len(valid["epoch_loss"]) == 1 and "epoch_mean_dice" in valid


@pytest.mark.slow
def test_original_config_runs_as_written(tmp_path):
    # its paths: ../../../dataset/Stroke/... and ./mini_test, ./models, ./eval beside the config
    config = _project(tmp_path, ORIGINAL_CONFIG, "a/b/c", "dataset/Stroke")
    shutil.copytree(tmp_path / "dataset/Stroke/mini_test", config.parent / "mini_test")
    assert config.read_bytes() == ORIGINAL_CONFIG.read_bytes()
    _run_pipeline(config)
    here = config.parent
    _check_outputs(config, here / "models", here / "eval", here / "mini_test/images", here / "mini_test_output",
                   "best_model.weights.h5", here / "report")
    _check_tensorboard(here / "models")  # the original leaves tensorboard unset: on by default
    assert list((here / "epoch_change_infer").glob("Epoch_1_*.png"))
    header = (here / "eval" / "train_metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,dice_coef_multiclass,val_dice_coef_multiclass,"


@pytest.mark.slow
def test_stroke_config_runs_as_written(tmp_path):
    # its paths: ../../dataset/Stroke/... relative to configs/stroke-ct/
    config = _project(tmp_path, STROKE_CONFIG, "configs/stroke-ct", "dataset/Stroke")
    _run_pipeline(config)
    here = config.parent
    _check_outputs(config, here / "models", here / "eval", tmp_path / "dataset/Stroke/mini_test/images",
                   here / "mini_test_output", "best_model.weights.h5", here / "report")
    _check_tensorboard(here / "models")  # no tensorboard key: on by default
    assert list((here / "epoch_change_infer").glob("Epoch_1_*.png"))


@pytest.mark.slow
def test_demo_config_runs_as_written(tmp_path):
    config = _project(tmp_path, DEMO_CONFIG, "demo", "demo/dataset/Demo")
    _run_pipeline(config)
    here = config.parent
    _check_outputs(config, here / "models", here / "eval", here / "dataset/Demo/mini_test/images",
                   here / "mini_test_output", "best_model.keras", here / "report")
    assert not (here / "models" / "logs").exists()  # the demo config switches TensorBoard off
    overlays = sorted(p.name for p in (here / "mini_test_output" / "overlays").iterdir())  # overlays = True
    assert overlays == sorted(p.name for p in (here / "dataset/Demo/mini_test/images").iterdir())
