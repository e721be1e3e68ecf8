"""flexunet.training.checkpoint: checkpoints whole or absent, recovered after a cut-short swap, resumed state."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import disk_full_on, leftovers, snapshot
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
