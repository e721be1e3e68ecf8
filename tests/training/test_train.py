"""flexunet.training.train: learning, resume, determinism, refusals, a run that fails or is stopped.

(The input pipeline: preprocessing/test_pipeline.py; losses and metrics: model/test_losses.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import (TRAIN_SECTIONS, cli, config_text, inputs_snapshot, leftovers, make_train_project, one_error,
                      pipeline_run_copy, run_command, snapshot, tensorboard_scalars, write_pipeline_config)
from flexunet.config.loader import load_config
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.outputs import OWNER_FILE, claim_output_dir


def _history(cfg):
    return json.loads((cfg.train.eval_dir / "history.json").read_text())


def test_reducer_waits_reducer_patience_epochs(train_project):
    from flexunet.training.callbacks import RunController, current_lr
    from flexunet.training.checkpoint import initial_state
    from flexunet.model.network import compile_model, configure_runtime

    cfg = load_config(train_project, ["train.learning_rate_reducer=True", "train.reducer_patience=3",
                                      "train.reducer_factor=0.5", "train.patience=0"])
    configure_runtime(cfg)
    model = compile_model(cfg)
    model.optimizer.build(model.trainable_variables)
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras")
    ctl.set_model(model)
    lrs = []
    for epoch, val_loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 0.5, 0.6]):
        ctl.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        lrs.append(current_lr(model))
    # bad epochs 2,3,4 -> reduce after epoch 4; bad 5,6,7 -> reduce after epoch 7; epoch 8 improves
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025, 0.0025])


def test_a_new_best_model_drops_the_records_made_for_the_previous_one(train_project):
    """postprocess.json and precision.json are chosen and checked on the best model at a run's end: a resumed
    run that saves a better model and stops before its end must not apply them to the new one."""
    from flexunet.model.network import compile_model, configure_runtime
    from flexunet.training.callbacks import RunController
    from flexunet.training.checkpoint import initial_state

    cfg = load_config(train_project, ["train.patience=0"])
    configure_runtime(cfg)
    model = compile_model(cfg)
    model.optimizer.build(model.trainable_variables)
    cfg.train.model_dir.mkdir(parents=True, exist_ok=True)
    records = [cfg.train.model_dir / name for name in ("postprocess.json", "precision.json")]
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras")
    ctl.set_model(model)
    ctl.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    for path in records:
        path.write_text("{}")
    ctl.on_epoch_end(1, {"loss": 1.0, "val_loss": 1.2})                 # not better: the records stay
    assert all(path.exists() for path in records)
    ctl.on_epoch_end(2, {"loss": 1.0, "val_loss": 0.8})                 # a new best model: they go
    assert not any(path.exists() for path in records)
    assert (cfg.train.model_dir / "best_model.keras").exists()


def test_tiny_model_learns(train_project, monkeypatch):
    import flexunet.training.callbacks as callbacks
    from flexunet.training.train import train

    drawn: list[tuple[str, int]] = []  # (plot, epochs it shows)
    plot = callbacks._plot
    monkeypatch.setattr(callbacks, "_plot", lambda path, title, hist, *keys: (
        drawn.append((path.name, len(hist["loss"]))), plot(path, title, hist, *keys)))
    cfg = load_config(train_project, ["train.epochs=30", "train.patience=0", "train.deterministic=False",
                                      "model.learning_rate=0.02", "train.epoch_change_infer=True"])
    summary = train(cfg, progress=False)
    # the curve plots: drawn after the first epoch and, showing all 30, at the end; not after each sub-second epoch
    assert drawn[:2] == [("train_losses.png", 1), ("train_metrics.png", 1)]
    assert drawn[-2:] == [("train_losses.png", 30), ("train_metrics.png", 30)] and len(drawn) < 30, drawn
    hist = _history(cfg)
    # learned, and still learned at the end: both classes found (one class alone plateaus near 0.48)
    assert max(hist["val_mean_dice"]) > 0.9 and hist["val_mean_dice"][-1] > 0.85, hist["val_mean_dice"]
    assert hist["loss"][-1] < 0.2 * hist["loss"][0], hist["loss"]
    assert summary["epochs"] == 30
    assert summary["timing"]["train_steps"] > 0 and min(summary["timing"].values()) >= 0
    # the best epoch's validation Dice again, from one pass of the best model, with its bootstrap interval
    best = summary["best_epoch"] - 1
    for name, iv in summary["valid_intervals"].items():
        assert iv["dice"] == pytest.approx(hist[f"val_dice_{name}"][best], abs=1e-4), name
        assert iv["ci_unit"] == "slices" and iv["ci_units"] == len(list((cfg.valid.images_dir).iterdir()))
        assert iv["dice_ci95"][0] <= iv["dice"] <= iv["dice_ci95"][1]
    # the same pass chose the post-processing: keeping every component it scores the Dice above
    record = json.loads((cfg.train.model_dir / "postprocess.json").read_text())
    assert len(record["min_component_size"]) == 3 and record["slices"] == iv["ci_units"]
    assert record["decision"] == {"foreground_weight": 1.0, "flip_tta_axes": []}   # the masks it was chosen for
    for k, (name, iv) in enumerate(summary["valid_intervals"].items(), start=1):
        scores = record["classes"][name]["valid_dice"]
        assert scores["0"] == pytest.approx(iv["dice"], abs=1e-9)
        chosen = record["min_component_size"][k]
        assert scores[str(chosen)] == max(scores.values()) or chosen == 0
    assert (cfg.train.model_dir / "best_model.keras").is_file()
    losses = (cfg.train.eval_dir / "train_losses.csv").read_text().splitlines()
    assert losses[0] == "epoch, loss, val_loss" and len(losses) == 31
    metrics = (cfg.train.eval_dir / "train_metrics.csv").read_text().splitlines()
    assert metrics[0] == "epoch,dice_coef_multiclass,val_dice_coef_multiclass," and metrics[1].endswith(",")
    assert (cfg.train.eval_dir / "train_losses.png").is_file()
    assert (cfg.train.model_dir / "train_eval_infer.config").is_file()
    assert sorted(p.name for p in cfg.train.epoch_change_infer_dir.glob("Epoch_30_*")) == [
        "Epoch_30_1000.png", "Epoch_30_1001.png", "Epoch_30_1002.png", "Epoch_30_1003.png", "Epoch_30_montage.png"]


def test_training_with_the_defaults_as_shipped_learns_and_says_its_auto_choices(tmp_path, caplog):
    """[train] deterministic, jit_compile, mixed_precision and tensorboard left at their defaults (False, "auto",
    "auto", True): the run measures (or finds cached) the
    faster setting, says it and records it in the run's config, writes TensorBoard logs, and learns.
    64 training images of 32 px, batch 2: 32 steps per epoch, 3 epochs."""
    import logging

    from flexunet.config.loader import parse_config
    from flexunet.training.train import train

    sections = {name: dict(keys) for name, keys in TRAIN_SECTIONS.items()}
    for key in ("deterministic", "tensorboard"):
        del sections["train"][key]
    sections["train"].update(epochs=3, batch_size=2)
    cfg = load_config(make_train_project(tmp_path, config_text(**sections), train_images=64))
    t = cfg.train
    assert (t.deterministic, t.jit_compile, t.mixed_precision, t.tensorboard) == (False, "auto", "auto", True)
    with caplog.at_level(logging.INFO, logger="flexunet.training.autotune"):
        summary = train(cfg, progress=False)
    assert summary["epochs"] == 3
    said = [r.getMessage() for r in caplog.records if r.name == "flexunet.training.autotune"]
    assert len(said) == 1 and said[0].startswith("auto: XLA "), said
    run = parse_config((t.model_dir / "train_eval_infer.config").read_text(), base_dir=tmp_path).train
    assert run.jit_compile in (True, False) and run.mixed_precision in (None, "float16", "bfloat16")
    assert f"-> {'on' if run.jit_compile else 'off'}" in said[0] or "nothing to measure" in said[0]
    logs = tensorboard_scalars(t.model_dir / "logs" / "train"), tensorboard_scalars(t.model_dir / "logs" / "validation")
    assert len(logs[0]["epoch_loss"]) == len(logs[1]["epoch_loss"]) == 3 and "epoch_mean_dice" in logs[1]
    hist = _history(cfg)
    assert hist["loss"][-1] < 0.5 * hist["loss"][0] and hist["val_loss"][-1] < hist["val_loss"][0]
    assert hist["val_dice_bright"][-1] > 0.5 and hist["val_dice_dark"][-1] > 0.5, hist


def test_stop_and_resume_equals_uninterrupted_and_runs_are_deterministic(train_project, tmp_path):
    from flexunet.training.train import train

    overrides = ["train.epochs=4", "train.patience=0", "train.learning_rate_reducer=True",
                 "train.reducer_patience=1", "model.dropout_rate=0.1",
                 "train.output_bias='prior'"]  # resuming must not set the trained bias back to the prior
    full = load_config(train_project, overrides + [f"train.model_dir={tmp_path / 'full'}",
                                                   f"train.eval_dir={tmp_path / 'full_eval'}"])
    train(full, progress=False)
    # a run stopped after 2 epochs and resumed: bit-identical to the uninterrupted one, which holds only if
    # two runs of one seed are identical (deterministic) and the resume restores the weights, optimizer,
    # schedule, reducer, bias and data order exactly
    part = overrides + [f"train.model_dir={tmp_path / 'part'}", f"train.eval_dir={tmp_path / 'part_eval'}"]
    train(load_config(train_project, part[1:] + ["train.epochs=2"]), progress=False)
    resumed = load_config(train_project, part)
    train(resumed, resume=True, progress=False)
    assert _history(resumed) == _history(full)


def test_prior_output_bias_makes_the_first_prediction_the_class_shares(train_project):
    from flexunet.model.network import build_model
    from flexunet.model.network import prior_bias

    cfg = load_config(train_project)
    model = build_model(cfg.model, seed=1)
    head = model.get_layer("head")
    head.set_weights([np.zeros_like(head.get_weights()[0]), head.get_weights()[1]])
    bias = prior_bias(model, [900, 90, 10])  # pixels per class: shares 0.9, 0.09, 0.01
    assert bias == pytest.approx(np.log([0.9, 0.09, 0.01]), abs=1e-6)
    probs = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probs[0, 5, 7], [0.9, 0.09, 0.01], rtol=1e-5)
    # a class absent from the training masks gets a finite, very low bias (not log 0)
    assert prior_bias(model, [99, 1, 0])[2] == pytest.approx(np.log(1e-6))


def test_second_run_into_a_used_model_dir_is_refused(train_project):
    from flexunet.training.train import train

    cfg = load_config(train_project, ["train.epochs=1"])
    train(cfg, progress=False)
    best = cfg.train.model_dir / "best_model.keras"
    before = (best.stat().st_mtime_ns, best.read_bytes())
    with pytest.raises(FlexUNetError, match=r"holds a previous run of `flexunet train` \(.*\); use --resume .* "
                                            r"or --overwrite"):
        train(cfg, progress=False)
    assert (best.stat().st_mtime_ns, best.read_bytes()) == before  # the refused run left the model alone
    train(cfg, overwrite=True, progress=False)
    with pytest.raises(FlexUNetError, match="nothing to resume"):
        train(load_config(train_project, ["train.model_dir=./elsewhere"]), resume=True, progress=False)


def test_missing_tensorboard_is_one_line_before_any_epoch(train_project, monkeypatch, capsys):
    from flexunet.cli.main import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: find_spec -> None
    model_dir = train_project.parent / "tb_models"
    assert main(["train", str(train_project), "--set", f"train.model_dir={model_dir}",
                 "--set", "train.tensorboard=True"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["flexunet train: error: --set [train] tensorboard = True: needs the tensorboard package, which "
                   "is not installed; install it with pip install 'tensorboard>=2.21,<2.22' (the cpu and gpu "
                   "extras include it) or set [train] tensorboard = False"]
    assert not model_dir.exists()  # refused before anything was written


def test_train_overwrite_removes_only_what_a_run_writes(train_project):
    from flexunet.training.train import RUN_FILES, _prepare_model_dir

    cfg = load_config(train_project)
    models = cfg.train.model_dir
    (models / "last_checkpoint").mkdir(parents=True)
    (models / "best_model.keras").write_bytes(b"old model")
    (models / "my_notes.txt").write_text("keep me")
    (models / "my_folder").mkdir()
    _prepare_model_dir(cfg, resume=False, overwrite=False)  # no record of train's: the user's files, no run
    claim_output_dir(models, "train", RUN_FILES)             # now a run of train's, as train records it
    with pytest.raises(FlexUNetError, match="holds a previous run of `flexunet train`.*use --resume .* or "
                                            "--overwrite"):
        _prepare_model_dir(cfg, resume=False, overwrite=False)
    assert (models / "best_model.keras").read_bytes() == b"old model"
    _prepare_model_dir(cfg, resume=False, overwrite=True)
    assert sorted(p.name for p in models.iterdir()) == [OWNER_FILE, "my_folder", "my_notes.txt"]
    assert "my_notes.txt" not in RUN_FILES


def test_a_model_dir_of_the_users_files_is_not_a_previous_run(train_project):
    """model_dir = "." in the user's project folder: a true message, and nothing of theirs lost (issue 24)."""
    from flexunet.training.train import train

    root = train_project.parent
    (root / "logs").mkdir()
    (root / "logs" / "notes.txt").write_text("mine")
    (root / "summary.txt").write_text("mine too")
    before = snapshot(root)
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"\[train\] model_dir = .*: contains the input folder .*data"):
            train(load_config(train_project, [f"train.model_dir={root}"]), overwrite=overwrite, progress=False)
        assert snapshot(root) == before
    users = root / "mine"
    users.mkdir()
    for name in ("logs", "summary.txt", "notes.txt"):
        (users / name).write_text("mine")
    before = snapshot(root)
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"mine: already holds 2 entries of the names `flexunet train` "
                                                r"writes, not written by it \(logs, summary.txt\)"):
            train(load_config(train_project, [f"train.model_dir={users}"]), overwrite=overwrite, progress=False)
    (users / "logs").unlink()
    (users / "summary.txt").unlink()
    before = snapshot(root)
    with pytest.raises(FlexUNetError, match=r"mine: holds 1 entry `flexunet train` did not write \(notes.txt\); "
                                            r"choose a new folder, or pass --overwrite to write beside them"):
        train(load_config(train_project, [f"train.model_dir={users}"]), progress=False)
    assert snapshot(root) == before
    for key in ("model_dir", "eval_dir", "epoch_change_infer_dir"):      # never into the training images
        with pytest.raises(FlexUNetError, match=rf"\[train\] {key} = .*images: is the input folder"):
            sets = [f"train.{key}={root / 'data/train/images'}", "train.epoch_change_infer=True",
                    f"infer.images_dir={root / 'data/test/images'}"]
            train(load_config(train_project, sets), overwrite=True, progress=False)
    assert snapshot(root) == before


def _record(cfg):
    return json.loads((cfg.train.model_dir / "data_record.json").read_text())


def test_resume_on_changed_training_data_is_refused_and_changes_nothing(train_project):
    import shutil

    from PIL import Image

    from flexunet.training.train import train

    cfg = load_config(train_project, ["train.epochs=1"])
    train(cfg, progress=False)
    data = train_project.parent / "data"
    train_dir = data / "train"
    for sub in ("images", "masks"):       # one pair added (a valid one), one removed, one mask edited
        shutil.copy(data / "valid" / sub / "1000.png", train_dir / sub / "2000.png")
        (train_dir / sub / "1007.png").unlink()
    mask = np.array(Image.open(train_dir / "masks" / "1003.png"))
    mask[:4, :4] = (0, 255, 0)
    Image.fromarray(mask).save(train_dir / "masks" / "1003.png")
    before = snapshot(train_project.parent)
    resumed = load_config(train_project, ["train.epochs=2"])
    with pytest.raises(FlexUNetError) as err:
        train(resumed, resume=True, progress=False)
    line = str(err.value)
    assert line.startswith(f"{cfg.train.model_dir}: the training data changed since the run trained on it "
                           f"(1 train image added, 1 removed, 1 changed (e.g. train 2000.png added, "
                           f"train 1007.png removed, train 1003.png changed)")
    assert "--overwrite" in line and "--allow-data-change" in line and "\n" not in line
    assert snapshot(train_project.parent) == before   # data, record, checkpoint, curves: all as they were


def test_a_continued_run_keeps_what_the_first_phase_trained_on(train_project, caplog):
    import logging
    import shutil

    from flexunet.dataset.leak_record import check_test_images
    from flexunet.utils.errors import DataError
    from flexunet.training.train import train

    cfg = load_config(train_project, ["train.epochs=1"])
    train(cfg, progress=False)
    first = {e["name"]: e for e in _record(cfg)["subsets"]["train"]}
    data = train_project.parent / "data"
    for sub in ("images", "masks"):       # a re-split: a train image goes to test
        shutil.move(data / "train" / sub / "1002.png", data / "test" / sub / "moved.png")
    test_images = sorted((data / "test" / "images").glob("*.png"))
    assert check_test_images(cfg.train.model_dir, test_images, True, "evaluate")["overlapping"] == 1

    resumed = load_config(train_project, ["train.epochs=2"])
    with caplog.at_level(logging.WARNING, logger="flexunet.training.train"):
        summary = train(resumed, resume=True, allow_data_change=True, progress=False)
    assert summary["epochs"] == 2
    assert "the training data changed after epoch 1: 1 train image removed" in caplog.text
    record = _record(cfg)
    train_entries = record["subsets"]["train"]
    assert [e["name"] for e in train_entries if "until_epoch" not in e] == [f"{i}.png" for i in
                                                                           (1000, 1001, 1003, 1004, 1005, 1006, 1007)]
    gone = [e for e in train_entries if "until_epoch" in e]
    assert [(e["name"], e["until_epoch"]) for e in gone] == [("1002.png", 1)]
    assert gone[0]["sha256"] == first["1002.png"]["sha256"]
    assert all(e["mask_sha256"] for e in train_entries)
    assert record["changes"] == [{"after_epoch": 1, "summary": "1 train image removed (e.g. train 1002.png removed)",
                                  "train": {"added": [], "removed": ["1002.png"], "changed": []},
                                  "valid": {"added": [], "removed": [], "changed": []}}]
    with pytest.raises(DataError, match=r"1 of 5 test image\(s\) .* moved.png is the same bytes as 1002.png "
                                        r"\(train until epoch 1\)"):
        check_test_images(cfg.train.model_dir, test_images, False, "evaluate")
    # a plain resume on the same data trains on and leaves the record as it was
    path = cfg.train.model_dir / "data_record.json"
    written = (path.stat().st_mtime_ns, path.read_bytes())
    assert train(load_config(train_project, ["train.epochs=3"]), resume=True, progress=False)["epochs"] == 3
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written


def test_a_class_no_training_or_validation_mask_holds_is_a_warning_naming_it(train_project, caplog):
    """num_classes = 4 over masks of three classes: class 3 is warned about by name as training starts."""
    import logging

    from flexunet.training.train import train, warn_absent_classes

    text = train_project.read_text().replace("num_classes = 3", "num_classes = 4")
    text = text.replace('["background", "bright", "dark"]', '["background", "bright", "dark", "calcified"]')
    train_project.write_text(text.replace("(0,0,255):2}", "(0,0,255):2, (255,0,0):3}"))
    cfg = load_config(train_project, ["train.epochs=1", "train.on_collapse=warn"])
    with caplog.at_level(logging.WARNING, logger="flexunet.training.train"):
        train(cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if r.name == "flexunet.training.train"]
    assert len(said) == 1 and said[0].startswith('class 3 "calcified" (colour (255, 0, 0)) is in none of the 8 '
                                                 'training and 4 validation masks')
    # without class names: the index; with index masks: the value; present classes: no word
    unnamed = load_config(train_project, ["dataset.class_names=None", "mask.format=index"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flexunet.training.train"):
        assert warn_absent_classes(unnamed, np.array([[5, 1, 0, 0], [5, 0, 2, 0]]), 1) == [3]
        assert warn_absent_classes(unnamed, np.array([[5, 1, 1, 1]]), 1) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("class 3 (value 3) is in none of the 1 training and 1 validation masks")


def test_two_images_of_one_stem_are_refused_by_train(synth_project, capsys):
    images = synth_project.parent / "dataset/D/train/images"
    first = sorted(images.glob("*.png"))[0]
    Image.open(first).save(images / f"{first.stem}.jpg")
    assert run_command(synth_project, "train", "--overwrite", "--set",
                       f"train.model_dir={synth_project.parent / 'models2'}") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.jpg" in err and f"{first.stem}.png" in err
    assert not (synth_project.parent / "models2").exists()


def test_resume_after_a_resplit_is_refused_and_a_continued_run_keeps_the_leak_check(synth_project, capsys):
    """Issue 24, case 6: train --resume after split --overwrite with another seed."""
    root = synth_project.parent
    assert run_command(synth_project, "split", "--overwrite", "--set", "train.seed=8") == 0
    before = inputs_snapshot(synth_project)
    capsys.readouterr()
    assert run_command(synth_project, "train", "--resume", "--set", "train.epochs=2") == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"flexunet train: error: {root / 'models'}: the training data changed since the "
                               f"run trained on it (") and "--overwrite" in lines[0]
    assert " train images added, " in lines[0] and "--allow-data-change" in lines[0]
    assert inputs_snapshot(synth_project) == before   # the data and the run as they were
    assert run_command(synth_project, "train", "--allow-data-change") == 2
    assert "--allow-data-change: only with --resume" in capsys.readouterr().err

    assert run_command(synth_project, "train", "--resume", "--allow-data-change", "--set", "train.epochs=2") == 0
    assert "the training data changed after epoch 1" in capsys.readouterr().err
    assert run_command(synth_project, "evaluate") == 2   # the first split's images now in test are still caught
    err = capsys.readouterr().err
    assert "test image(s) are images the model trained" in err and "until epoch 1)" in err


# --------------------------------------------------------------------------- a run that fails or is stopped
# on conftest's pipeline: its split data, and its one-epoch run copied where the run continues


def test_nan_loss_stops_with_the_epoch_and_a_hint(tmp_path, capsys, pipeline):
    config = write_pipeline_config(tmp_path, data=str(pipeline["dataset"]))
    line = one_error(capsys, "train", str(config), "--set", "model.optimizer='sgd'",
                     "--set", "model.learning_rate=1e30")
    assert line.startswith("flexunet train: error: loss became NaN at epoch 1, batch ")
    assert "no epoch had completed, so no checkpoint was saved" in line
    assert "lower [model] learning_rate (now 1e+30) or set [model] clipvalue" in line
    assert not (tmp_path / "models" / "last_checkpoint").exists()      # no NaN weights to resume from
    assert not (tmp_path / "models" / "best_model.keras").exists()


def test_nan_in_a_later_epoch_keeps_the_earlier_ones(tmp_path, capsys, pipeline, monkeypatch):
    import flexunet.model.losses

    config = pipeline_run_copy(pipeline, tmp_path)
    kept = snapshot(tmp_path / "models")
    history = (tmp_path / "eval" / "history.json").read_text()
    real = flexunet.model.losses.make_loss

    def nan_loss(cfg):
        loss = real(cfg)
        return lambda y_true, y_pred: loss(y_true, y_pred) * float("nan")

    monkeypatch.setattr(flexunet.model.losses, "make_loss", nan_loss)
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2")
    assert line.startswith("flexunet train: error: loss became NaN at epoch 2, batch 1; epochs 1..1 are "
                           f"saved in {tmp_path / 'models'};")
    assert "start again with --overwrite (--resume would continue with the saved learning rate)" in line
    now = snapshot(tmp_path / "models")
    assert {k: now[k] for k in kept if k != "train_eval_infer.config"} == \
        {k: v for k, v in kept.items() if k != "train_eval_infer.config"}   # checkpoint, best model as they were
    assert (tmp_path / "eval" / "history.json").read_text() == history


def _spawn_training(tmp_path: Path, pipeline, epochs: int, patience: int = 10) -> tuple[subprocess.Popen, Path]:
    """`flexunet train` in a real process, with epochs long enough (about a second) to land a signal inside one."""
    config = write_pipeline_config(tmp_path, data=str(pipeline["dataset"]))
    args = [sys.executable, "-m", "flexunet", "-q", "train", str(config), "--set", f"train.epochs={epochs}",
            "--set", "train.batch_size=2", "--set", "train.steps_per_epoch=60", "--set", f"train.patience={patience}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Ctrl-C as a terminal sends it: to a process whose SIGINT is not ignored. A suite started as a background
    # job of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and so would this child.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, config


def _wait_for_epoch(proc: subprocess.Popen, state: Path, epoch: int, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        if proc.poll() is not None:
            pytest.fail(f"training ended before epoch {epoch}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint of epoch {epoch} within {timeout} s")


def test_kill_9_mid_epoch_then_resume_loses_nothing(tmp_path, capsys, pipeline):
    proc, config = _spawn_training(tmp_path, pipeline, epochs=2)
    state = tmp_path / "models" / "last_checkpoint" / "state.json"
    try:
        _wait_for_epoch(proc, state, 1)
        time.sleep(0.2)                                                 # into epoch 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())
    assert saved["epoch"] == 1                                          # killed before epoch 2 ended
    rc, lines, err = cli(capsys, "train", str(config), "--resume", "--set", "train.epochs=2",
                         "--set", "train.batch_size=2", "--set", "train.steps_per_epoch=60")
    assert rc == 0 and not lines, err
    history = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert history["epochs"] == [1, 2]
    for key, values in saved["history"].items():                       # epoch 1 exactly as it was
        assert history[key][0] == values[0]
    assert json.loads(state.read_text())["epoch"] == 2
    assert not leftovers(tmp_path / "models")


def test_ctrl_c_exits_cleanly_with_the_checkpoint_intact(tmp_path, pipeline):
    # many epochs and no early stopping: however fast an epoch is on this machine, the signal lands inside one
    proc, _ = _spawn_training(tmp_path, pipeline, epochs=500, patience=0)
    state = tmp_path / "models" / "last_checkpoint" / "state.json"
    try:
        _wait_for_epoch(proc, state, 1)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (err, state.read_text())   # the state says how far a run that ended got
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("flexunet ")]
    saved = json.loads(state.read_text())["epoch"]
    assert saved >= 1
    assert lines == [f"flexunet train: interrupted during epoch {saved + 1}; epochs 1..{saved} are saved in "
                     f"{tmp_path / 'models'}; continue with: flexunet train CONFIG --resume"], err
    checkpoint = tmp_path / "models" / "last_checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.weights.h5", "model_meta.json", "optimizer.npz",
                                                            "rng.npz", "state.json"]
    assert (tmp_path / "models" / "best_model.keras").is_file() and not leftovers(tmp_path)


def test_weight_averaging_validates_saves_and_resumes_the_averaged_weights(train_project, tmp_path):
    """[train] ema: the best model on disk is the one validation scored (the averaged weights, not the raw ones),
    and a run stopped and resumed equals an uninterrupted one (the checkpoint holds the averages swapped in)."""
    from flexunet.model.network import compile_model, configure_runtime
    from flexunet.model.run_folder import best_model_path
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs
    from flexunet.training.train import train

    overrides = ["train.epochs=4", "train.patience=0", "train.ema=0.9"]
    full = load_config(train_project, overrides + [f"train.model_dir={tmp_path / 'full'}",
                                                   f"train.eval_dir={tmp_path / 'full_eval'}"])
    train(full, progress=False)
    hist = _history(full)
    plain = load_config(train_project, ["train.epochs=1", "train.patience=0", f"train.model_dir={tmp_path / 'plain'}",
                                        f"train.eval_dir={tmp_path / 'plain_eval'}"])
    train(plain, progress=False)  # the same first epoch without averaging: the averages were validated
    assert _history(plain)["val_loss"][0] != pytest.approx(hist["val_loss"][0], rel=1e-3)

    configure_runtime(full)
    model = compile_model(full)
    model.load_weights(best_model_path(full.train.model_dir))
    best = int(np.argmin(hist["val_loss"]))
    scored = model.evaluate(make_dataset(full, subset_pairs(full, "valid"), training=False), verbose=0,
                            return_dict=True)
    assert scored["loss"] == pytest.approx(hist["val_loss"][best], rel=1e-4)

    part = overrides + [f"train.model_dir={tmp_path / 'part'}", f"train.eval_dir={tmp_path / 'part_eval'}"]
    train(load_config(train_project, part[1:] + ["train.epochs=2"]), progress=False)
    resumed = load_config(train_project, part)
    train(resumed, resume=True, progress=False)
    assert _history(resumed) == _history(full)


def test_best_epochs_average_is_the_mean_of_the_k_best_and_survives_a_resume(train_project, tmp_path):
    """[train] average_best = 2: the model a run ends with is the element-wise mean of the weights of its
    2 epochs (of 3) with the lowest validation loss (read here from each epoch's checkpoint), a run resumed
    epoch by epoch ends with the same one, and its metadata names the epochs."""
    from flexunet.model.network import compile_model, configure_runtime
    from flexunet.model.run_folder import best_model_path, read_meta
    from flexunet.training.checkpoint import load_checkpoint
    from flexunet.training.train import train

    def run(name, epochs, resume=False):
        cfg = load_config(train_project, ["train.patience=0", "train.average_best=2", f"train.epochs={epochs}",
                                          f"train.model_dir={tmp_path / name}", f"train.eval_dir={tmp_path / (name + '_eval')}"])
        train(cfg, resume=resume, progress=False)
        return cfg

    full = run("full", 3)
    configure_runtime(full)
    model = compile_model(full)
    per_epoch = []
    for epochs in range(1, 4):  # the same run, resumed after every epoch: each epoch's weights are in its checkpoint
        stepped = run("stepped", epochs, resume=epochs > 1)
        load_checkpoint(model, stepped.train.model_dir, stepped)
        per_epoch.append(model.get_weights())
    losses = _history(full)["val_loss"]
    best = sorted(np.argsort(losses)[:2] + 1)
    expected = [np.mean([per_epoch[e - 1][i] for e in best], axis=0) for i in range(len(per_epoch[0]))]
    for cfg in (full, stepped):
        model.load_weights(best_model_path(cfg.train.model_dir))
        for got, want in zip(model.get_weights(), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert read_meta(best_model_path(cfg.train.model_dir))["averaged_epochs"] == [int(e) for e in best]
        assert sorted(p.name for p in (cfg.train.model_dir / "best_epochs").iterdir()) == \
            [f"epoch-{e:03d}.npz" for e in best]
    assert not np.allclose(per_epoch[best[0] - 1][0], expected[0])  # the mean is not one epoch's weights
