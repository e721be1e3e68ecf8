"""flexunet.training.checkpoint: checkpoints whole or absent, recovered after a cut-short swap, resumed state."""

from __future__ import annotations

import errno
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import disk_full_on, leftovers, one_error, pipeline_run_copy, snapshot
from flexunet.training.checkpoint import _finite_state, initial_state
from flexunet.config.loader import parse_config

def test_model_and_checkpoint_saves_are_whole_or_absent(tmp_path, monkeypatch):
    import keras

    from flexunet.training.checkpoint import load_checkpoint, save_checkpoint, save_model

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax")(inputs))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.train_on_batch(np.zeros((1, 8, 8, 3), np.float32), np.full((1, 8, 8, 3), 1 / 3, np.float32))
    best = tmp_path / "best_model.keras"
    save_model(model, best)
    save_checkpoint(model, tmp_path, {"epoch": 1})
    before = snapshot(tmp_path)

    def crash(*args, **kwargs):
        Path(args[0]).write_bytes(b"half a zip")
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(model, "save", crash)
    with pytest.raises(OSError):
        save_model(model, best)
    disk_full_on(monkeypatch, lambda p: p.name == "state.json")
    with pytest.raises(OSError):
        save_checkpoint(model, tmp_path, {"epoch": 2})
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)
    assert load_checkpoint(model, tmp_path) == {"epoch": 1}


def test_a_checkpoint_swap_cut_short_is_recovered_on_resume(tmp_path):
    from flexunet.training.checkpoint import recover_checkpoint

    def checkpoint(name: str, epoch: int | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.weights.h5").write_bytes(b"w")
        if epoch is not None:
            (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
        return folder

    # killed between "last_checkpoint -> .old" and ".tmp -> last_checkpoint"
    checkpoint(".last_checkpoint.old-11", 3)
    checkpoint(".last_checkpoint.tmp-11", 4)
    checkpoint(".last_checkpoint.tmp-12", None)                          # an incomplete one: never chosen
    assert recover_checkpoint(tmp_path) == tmp_path / ".last_checkpoint.tmp-11"
    assert json.loads((tmp_path / "last_checkpoint" / "state.json").read_text()) == {"epoch": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint"]
    assert recover_checkpoint(tmp_path) is None                        # nothing to do when whole


@pytest.mark.parametrize("monitor,best", [("val_loss", math.inf), ("val_mean_dice", -math.inf)])
def test_state_json_nulls_read_back_as_the_non_finite_numbers_they_were(tmp_path, tiny_config_text, monitor, best):
    """io.write_json writes inf and NaN as null; a resumed run must compare against +-inf and keep NaN."""
    from flexunet.utils.io import write_json

    text = tiny_config_text.replace("[train]\n", f"[train]\nmonitor = \"{monitor}\"\n")
    cfg = parse_config(text, base_dir=tmp_path)
    state = {**initial_state(cfg), "epoch": 2, "history": {"loss": [0.5, math.nan], "val_dice": [0.1, 0.2]}}
    assert state["best"] == best
    write_json(tmp_path / "state.json", state)
    written = json.loads((tmp_path / "state.json").read_text())
    assert written["best"] is None and written["history"]["loss"] == [0.5, None]
    back = _finite_state(written, cfg)
    assert back["best"] == best and back["epoch"] == 2 and back["history"]["val_dice"] == [0.1, 0.2]
    assert back["history"]["loss"][0] == 0.5 and math.isnan(back["history"]["loss"][1])
    kept = _finite_state({**written, "best": 0.25}, cfg)
    assert kept["best"] == 0.25


# --------------------------------------------------------------------------- through train --resume


def test_disk_full_while_saving_the_checkpoint(tmp_path, capsys, pipeline, monkeypatch):
    config = pipeline_run_copy(pipeline, tmp_path)
    checkpoint = snapshot(tmp_path / "models" / "last_checkpoint")
    hit = disk_full_on(monkeypatch, lambda p: p.name == "state.json")
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2", rc=1)
    assert hit and line == (f"flexunet train: error: {hit[0]}: No space left on device; previous results "
                            f"were left as they were")
    assert snapshot(tmp_path / "models" / "last_checkpoint") == checkpoint
    assert json.loads((tmp_path / "models" / "last_checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not leftovers(tmp_path)
    json.loads((tmp_path / "eval" / "history.json").read_text())          # whole, whichever epoch


def test_resume_with_a_changed_optimizer_is_one_line(tmp_path, capsys, pipeline):
    config = pipeline_run_copy(pipeline, tmp_path)
    before = snapshot(tmp_path / "models")
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2",
                     "--set", "model.optimizer='sgd'")
    assert re.search(r"last_checkpoint: optimizer state has \d+ variables, the configured optimizer \d+; "
                     r"expected the config the run was started with", line), line
    assert line.endswith("or start again with --overwrite"), line
    assert snapshot(tmp_path / "models") == before


def _truncate(path: Path) -> None:
    """Cut a file in half, as a disk filling up or a copy cut short would."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name,damage,problem", [
    ("state.json", "truncate", "damaged (not valid JSON: "),
    ("state.json", {"epoch": "1", "history": {}}, "damaged ('epoch' is '1', expected an integer >= 0)"),
    ("state.json", {"epoch": 1, "history": {"loss": "low"}}, "damaged ('history' is {\"loss\": \"low\"}, "
                                                             "expected an object of lists of numbers)"),
    ("optimizer.npz", "truncate", "damaged (not a readable .npz archive: "),
    ("rng.npz", "truncate", "damaged (not a readable .npz archive: "),
])
def test_a_damaged_checkpoint_file_is_one_line_for_train_resume(tiny_project, capsys, name, damage, problem):
    root = tiny_project.parent
    path = root / "models" / "last_checkpoint" / name
    if damage == "truncate":
        _truncate(path)
    else:
        path.write_text(json.dumps(damage))
    before = snapshot(root)
    line = one_error(capsys, "train", str(tiny_project), "--resume", "--set", "train.epochs=2")
    assert line.startswith(f"flexunet train: error: {path}: {problem}"), line
    assert line.endswith("restore the file, or start a new run with --overwrite (evaluate and infer can still "
                         "use the best model as it is)")
    assert snapshot(root) == before and not leftovers(root)


def test_state_json_checks_keep_a_plain_state(tmp_path):
    from flexunet.training.checkpoint import read_state
    from flexunet.utils.errors import FlexUNetError

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"epoch": 2, "best": None, "best_epoch": 1, "history": {"loss": [0.5, None]},
                                "stopped_by": None, "lr_factor": 0.5}))
    assert read_state(path)["epoch"] == 2
    path.write_text("[]")
    with pytest.raises(FlexUNetError, match=r"state.json: damaged \(not a JSON object\)"):
        read_state(path)
