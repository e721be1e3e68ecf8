"""The run folder is the truth for the network: notices, --strict, strict weights, one best model, metadata."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import (BLUE, GREEN, TRAIN_CONFIG, ini_value, make_train_project, one_error, one_process_error,
                      run_process, snapshot, train_config_text)
from flexunet.cli.main import main
from flexunet.config.loader import load_config, parse_config
from flexunet.utils.errors import FlexUNetError

SWAPPED_MAP = ini_value({(0, 0, 0): 0, BLUE: 1, GREEN: 2})    # the run's green and blue, swapped


def _project(root: Path) -> Path:
    return make_train_project(root, train_config_text(train={"epochs": 2}))


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory) -> Path:
    """Trained with --set model.normalization=True, weights only (the original's dialect)."""
    cfg = _project(tmp_path_factory.mktemp("bn"))
    assert main(["-q", "train", str(cfg), "--set", "model.normalization=True",
                 "--set", "train.save_weights_only=True"]) == 0
    return cfg


@pytest.fixture(scope="module")
def filters_run(tmp_path_factory) -> Path:
    """Trained with --set model.base_filters=8, full .keras model."""
    cfg = _project(tmp_path_factory.mktemp("filters"))
    assert main(["-q", "train", str(cfg), "--set", "model.base_filters=8"]) == 0
    return cfg


@pytest.fixture(scope="module")
def centre_run(tmp_path_factory) -> Path:
    """Trained with --set model.centre_intensity=True, full .keras model."""
    cfg = _project(tmp_path_factory.mktemp("centre"))
    assert main(["-q", "train", str(cfg), "--set", "model.centre_intensity=True"]) == 0
    return cfg


def _masks(folder: Path) -> dict[str, bytes]:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)).tobytes() for p in sorted(folder.glob("*.png"))}


def _infer(cfg: Path, out: str, *sets: str, strict: bool = False) -> int:
    args = (["--strict"] if strict else []) + ["infer", str(cfg), "--set", f"infer.output_dir={cfg.parent / out}"]
    for item in sets:
        args += ["--set", item]
    return main(args)


@pytest.mark.parametrize("run, override", [("bn_run", "model.normalization=True"),
                                           ("filters_run", "model.base_filters=8"),
                                           ("centre_run", "model.centre_intensity=True")])
def test_infer_with_the_plain_config_equals_the_overrides_repeated(run, override, request, capsys):
    cfg = request.getfixturevalue(run)
    key = override.split("=")[0].split(".")[1]
    assert _infer(cfg, "out_repeated", override) == 0
    assert f"[model] {key}" not in capsys.readouterr().err  # nothing differs: no notice
    assert _infer(cfg, "out_plain") == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if f"[model] {key}:" in line]
    assert len(notices) == 1 and "the run was trained with" in notices[0] and "using" in notices[0]
    plain, repeated = _masks(cfg.parent / "out_plain"), _masks(cfg.parent / "out_repeated")
    assert len(plain) == 4 and plain == repeated


def test_strict_refuses_a_differing_key_and_writes_nothing(bn_run, capsys):
    assert _infer(bn_run, "out_strict", strict=True) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "[model] normalization" in err and "--strict" in err
    assert not (bn_run.parent / "out_strict").exists()


def _evaluate(cfg: Path, out: str, *sets: str, strict: bool = False) -> int:
    args = (["--strict"] if strict else []) + ["-q", "evaluate", str(cfg), "--set",
                                               f"eval.eval_dir={cfg.parent / out}"]
    for item in sets:
        args += ["--set", item]
    return main(args)


def _dice(cfg: Path, out: str) -> str:
    """Per-class whole-set Dice and the original's figure, as text (NaN compares equal)."""
    doc = json.loads((cfg.parent / out / "evaluation.json").read_text())
    figures = {name: c["whole_set"]["dice"] for name, c in doc["classes"].items()}
    return json.dumps([figures, doc["seed_metrics"]["dice_coef_multiclass"]])


def test_evaluate_with_the_plain_config_or_swapped_colours_scores_as_the_run(bn_run, capsys):
    assert _evaluate(bn_run, "ev_repeated", "model.normalization=True") == 0
    assert _evaluate(bn_run, "ev_plain") == 0
    assert "[model] normalization:" in capsys.readouterr().err
    assert _evaluate(bn_run, "ev_swapped", "model.normalization=True", f"mask.rgb_map={SWAPPED_MAP}") == 0
    err = capsys.readouterr().err
    assert "[mask] rgb_map:" in err and "[model] normalization" not in err
    assert _dice(bn_run, "ev_plain") == _dice(bn_run, "ev_repeated") == _dice(bn_run, "ev_swapped")
    assert _evaluate(bn_run, "ev_strict", strict=True) == 2
    assert not (bn_run.parent / "ev_strict").exists()


def test_colour_order_and_input_size_come_from_the_run(bn_run, capsys):
    """BGR, a wider input and one channel on an RGB 32-px model: a notice each, the run's masks."""
    assert _infer(bn_run, "out_base") == 0
    capsys.readouterr()
    for i, override in enumerate(("image.color_order=BGR", "model.image_width=64", "model.image_channels=1")):
        assert _infer(bn_run, f"out_{i}", override) == 0
        err = capsys.readouterr().err
        section, key = override.split("=")[0].split(".")
        assert f"[{section}] {key}:" in err and "Traceback" not in err
        assert _masks(bn_run.parent / f"out_{i}") == _masks(bn_run.parent / "out_base")


# --------------------------------------------------------------------------- strict weights


def _tiny_cfg(**model: object):
    return parse_config(TRAIN_CONFIG, overrides=[f"model.{key}={value!r}" for key, value in model.items()])


@pytest.mark.parametrize("saved, built, layer", [
    ({}, {"normalization": True}, "enc0_bn1"),            # the network's BN layer has no weights in the file
    ({"normalization": True}, {}, "enc0_bn1"),            # the file's BN layer is not in the network
    ({"base_filters": 8}, {}, "enc0_conv1"),              # shapes differ
])
def test_a_weights_file_that_does_not_fit_is_refused_naming_the_layer(tmp_path, saved, built, layer):
    from flexunet.model.network import build_model
    from flexunet.model.trained import check_weights

    path = tmp_path / "best_model.weights.h5"
    build_model(_tiny_cfg(**saved).model).save_weights(path)
    with pytest.raises(FlexUNetError, match=f"'{layer}'"):
        check_weights(path, build_model(_tiny_cfg(**built).model))
    check_weights(path, build_model(_tiny_cfg(**saved).model))  # the same settings fit


def test_load_trained_refuses_a_replaced_weights_file(bn_run, tmp_path):
    from flexunet.model.network import build_model
    from flexunet.model.trained import load_trained

    run_dir = tmp_path / "run"
    shutil.copytree(bn_run.parent / "models", run_dir)
    (run_dir / "model_meta.json").unlink()  # an old run folder: no metadata
    build_model(_tiny_cfg().model).save_weights(run_dir / "best_model.weights.h5")  # no BN
    cfg = load_config(bn_run, [f"train.model_dir={run_dir}"])
    with pytest.raises(FlexUNetError, match="'enc0_bn1'"):
        load_trained(cfg)


# --------------------------------------------------------------------------- one best model


def test_switching_save_weights_only_on_resume_loads_the_newest_best(tmp_path):
    from flexunet.model.trained import load_trained
    from flexunet.model.run_folder import best_model_path, read_meta

    cfg = _project(tmp_path)
    assert main(["-q", "train", str(cfg), "--set", "train.epochs=1"]) == 0
    models = tmp_path / "models"
    assert (models / "best_model.keras").is_file()
    assert main(["-q", "train", str(cfg), "--resume", "--set", "train.epochs=3",
                 "--set", "train.save_weights_only=True"]) == 0
    state = json.loads((models / "last_checkpoint" / "state.json").read_text())
    assert state["best_epoch"] > 1  # the resumed epochs improved (deterministic run)
    assert not (models / "best_model.keras").exists()
    assert best_model_path(models) == models / "best_model.weights.h5"
    assert read_meta(models)["best_model"] == "best_model.weights.h5"
    assert read_meta(models / "last_checkpoint")["best_model"] == "best_model.weights.h5"
    assert read_meta(models / "best_model.weights.h5")["best_epoch"] == state["best_epoch"]
    model = load_trained(load_config(cfg))
    import h5py

    with h5py.File(models / "best_model.weights.h5") as f:
        head = next(f["layers"][k]["vars"] for k in f["layers"] if f["layers"][k]["vars"].attrs["name"] == "head")
        np.testing.assert_array_equal(model.get_layer("head").get_weights()[0], head["0"][()])


def test_without_metadata_the_newest_best_file_wins(tmp_path):
    from flexunet.model.run_folder import best_model_path

    old, new = tmp_path / "best_model.keras", tmp_path / "best_model.weights.h5"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (1_000_000, 1_000_000))
    assert best_model_path(tmp_path) == new
    os.utime(new, (500_000, 500_000))
    assert best_model_path(tmp_path) == old


# --------------------------------------------------------------------------- resume


def test_resume_records_the_learning_rate_it_really_used(tmp_path, capsys):
    cfg = _project(tmp_path)
    assert main(["-q", "train", str(cfg), "--set", "train.epochs=1"]) == 0
    saved = tmp_path / "models" / "train_eval_infer.config"
    assert main(["--strict", "-q", "train", str(cfg), "--resume", "--set", "train.epochs=2",
                 "--set", "model.learning_rate=0.5"]) == 2
    assert "[model] learning_rate" in capsys.readouterr().err
    assert main(["train", str(cfg), "--resume", "--set", "train.epochs=2", "--set", "model.learning_rate=0.5",
                 "--set", "model.base_filters=8"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"\[model\] learning_rate: the run was trained with 0\.01, the config says 0\.5; using 0\.01",
                     err)
    assert "[model] base_filters: the run was trained with 4, the config says 8; using 4" in err
    assert load_config(saved).model.learning_rate == 0.01 and load_config(saved).model.base_filters == 4
    assert "; resumed after epoch 1 at learning rate 0.01" in saved.read_text()


@pytest.mark.parametrize("name", ["rng.npz", "optimizer.npz"])
def test_resume_without_a_checkpoint_file_is_one_line(bn_run, tmp_path, capsys, name):
    shutil.copytree(bn_run.parent, tmp_path / "p")
    cfg = tmp_path / "p" / bn_run.name
    (tmp_path / "p" / "models" / "last_checkpoint" / name).unlink()
    assert main(["-q", "train", str(cfg), "--resume", "--set", "train.epochs=3",
                 "--set", "model.normalization=True"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "--overwrite" in err


# --------------------------------------------------------------------------- metadata


def test_best_model_and_checkpoint_carry_metadata_and_inspect_prints_it(bn_run, capsys):
    from flexunet.model.run_folder import read_meta

    models = bn_run.parent / "models"
    for target in (models, models / "best_model.weights.h5", models / "last_checkpoint"):
        meta = read_meta(target)
        assert meta["config"]["model.normalization"] is True
        assert meta["input"] == {"height": 32, "width": 32, "channels": 3, "normalize": True, "color_order": "RGB"}
        assert [c["name"] for c in meta["classes"]] == ["background", "bright", "dark"]
        assert meta["classes"][1]["colour"] == [0, 255, 0]
        assert meta["versions"]["tensorflow"]
    (models / "model_meta.json").rename(models / "moved.json")
    try:  # the embedded copy alone describes the file
        assert read_meta(models / "best_model.weights.h5")["best_model"] == "best_model.weights.h5"
    finally:
        (models / "moved.json").rename(models / "model_meta.json")
    capsys.readouterr()
    assert main(["inspect", str(models / "best_model.weights.h5")]) == 0
    out = capsys.readouterr().out
    assert "input: 32x32x3, RGB" in out and "1: bright  colour (0, 255, 0)" in out
    assert "model.normalization = True" in out
    for target in (models, models / "model_meta.json", models / "last_checkpoint"):
        assert main(["inspect", str(target)]) == 0
        assert "model.normalization = True" in capsys.readouterr().out
    assert main(["inspect", str(bn_run.parent / "data")]) == 2
    assert "carries no FlexUNet metadata" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_that_does_not_fit_the_run_config(bn_run, tmp_path, capsys):
    shutil.copytree(bn_run.parent, tmp_path / "p")
    saved = tmp_path / "p" / "models" / "train_eval_infer.config"
    saved.write_text(saved.read_text().replace("normalization = True", "normalization = False"))
    before = (tmp_path / "p" / "models" / "last_checkpoint" / "state.json").read_text()
    assert main(["-q", "train", str(tmp_path / "p" / bn_run.name), "--resume", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.weights.h5: layer 'enc0_bn1'" in err
    assert (tmp_path / "p" / "models" / "last_checkpoint" / "state.json").read_text() == before


def test_a_keras_file_that_does_not_fit_the_run_is_refused(filters_run, tmp_path):
    from flexunet.model.network import build_model
    from flexunet.model.trained import load_trained

    run_dir = tmp_path / "run"
    shutil.copytree(filters_run.parent / "models", run_dir)
    build_model(_tiny_cfg().model).save(run_dir / "best_model.keras")   # 4 filters; the run has 8
    with pytest.raises(FlexUNetError, match="'enc0_conv1'"):
        load_trained(load_config(filters_run, [f"train.model_dir={run_dir}"]))


def test_evaluate_a_wider_run_with_the_plain_config_equals_the_override_repeated(filters_run, capsys):
    assert _evaluate(filters_run, "ev_repeated", "model.base_filters=8") == 0
    assert _evaluate(filters_run, "ev_plain") == 0
    assert "[model] base_filters: the run was trained with 8, the config says 4; using 8" in capsys.readouterr().err
    assert _dice(filters_run, "ev_plain") == _dice(filters_run, "ev_repeated")


def test_metadata_records_the_split_hash(tmp_path):
    import hashlib

    from flexunet.model.run_folder import metadata

    cfg = parse_config(TRAIN_CONFIG, base_dir=tmp_path)
    assert metadata(cfg, "best_model.keras")["split_sha256"] is None
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "split.json").write_text('{"seed": 7}')
    assert metadata(cfg, "best_model.keras")["split_sha256"] == hashlib.sha256(b'{"seed": 7}').hexdigest()


# --------------------------------------------------------------------------- damaged files: one line each
# conftest's tiny_project: a copy of a run trained for one epoch and evaluated


def _truncate(path: Path) -> None:
    """Cut a file in half, as a disk filling up or a copy cut short would."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("command", ["evaluate", "infer"])
def test_a_truncated_model_meta_is_one_line_for_evaluate_and_infer(tiny_project, capsys, command):
    root = tiny_project.parent
    meta = root / "models" / "model_meta.json"
    _truncate(meta)
    before = snapshot(root)
    line = one_error(capsys, command, str(tiny_project), "--overwrite")
    assert line.startswith(f"flexunet {command}: error: {meta}: damaged, not valid JSON ("), line
    assert "expected the model_meta.json 'flexunet train' writes" in line
    assert snapshot(root) == before and not (root / "out").exists()


def test_a_truncated_model_meta_is_one_line_for_inspect_in_a_real_process(tiny_project):
    meta = tiny_project.parent / "models" / "model_meta.json"
    _truncate(meta)
    for target in (meta.parent, meta):
        line = one_process_error(run_process("inspect", str(target), cwd=tiny_project.parent))
        assert line.startswith(f"flexunet inspect: error: {meta}: damaged, not valid JSON ("), line


@pytest.mark.parametrize("change,problem", [
    ({"classes": "lesion"}, "'classes' is a string, expected an array"),
    ({"input": [32, 32]}, "'input' is an array, expected an object"),
    ({"best_model": 3}, "'best_model' is a number, expected a string"),
    ({"classes": [{"index": "1", "name": "x"}]}, "'classes.0.index' is a string, expected an integer"),
    ({"members": {"seed": 7}}, "'members' is an object, expected an array"),
    ({"members": [7, 8]}, "'members.0' is a number, expected an object"),
])
def test_model_meta_of_the_wrong_types_is_one_line(tiny_project, capsys, tmp_path, change, problem):
    meta_path = tiny_project.parent / "models" / "model_meta.json"
    meta = {**json.loads(meta_path.read_text()), **change}
    meta_path.write_text(json.dumps(meta))
    before = snapshot(tiny_project.parent)
    expected = f"{meta_path}: damaged model metadata ({problem}); expected the model_meta.json"
    assert expected in one_error(capsys, "evaluate", str(tiny_project), "--overwrite")
    assert expected in one_error(capsys, "inspect", str(meta_path.parent))
    loose = tmp_path / "some.json"  # any JSON file given to inspect
    loose.write_text(json.dumps(meta))
    assert f"{loose}: damaged model metadata ({problem})" in one_error(capsys, "inspect", str(loose))
    assert snapshot(tiny_project.parent) == before


def test_a_model_file_holding_code_is_refused_not_run(infer_project, capsys):
    import keras

    config, root = infer_project
    marker = root / "PWNED"
    inputs = keras.Input((32, 32, 3))
    payload = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")   # no closure: serialisable
    outputs = keras.layers.Lambda(payload)(inputs)
    model_path = root / "models" / "best_model.keras"
    keras.Model(inputs, outputs).save(model_path)
    marker.unlink(missing_ok=True)                  # saving traced the lambda once
    line = one_error(capsys, "infer", str(config))
    assert "best_model.keras: cannot be loaded as a FlexUNet model" in line and "Lambda" in line
    assert not marker.exists() and not (root / "out").exists()
