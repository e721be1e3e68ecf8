"""flexunet.model.inspection: ``flexunet inspect`` prints the network and its figures and writes nothing."""

from __future__ import annotations

import subprocess
import sys

from conftest import TINY_RUN_CONFIG, snapshot
from flexunet.cli.main import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexunet", *args], capture_output=True, text=True, timeout=300)


def test_inspect_prints_the_summary_and_writes_nothing(write_config, tiny_config_text, tmp_path, capsys):
    path = write_config(tiny_config_text)
    assert main(["inspect", str(path), "--set", f"train.model_dir={tmp_path / 'm'}",
                 "--set", "model.base_filters=8"]) == 0
    out = capsys.readouterr().out
    assert "Parameters:" in out and "Forward GFLOPs per image:" in out and "enc0_conv1" in out
    assert not (tmp_path / "m").exists()  # a model_dir made here would be refused by train as a previous run


def test_inspect_writes_nothing_into_any_model_dir(write_config, tiny_config_text, tmp_path, capsys):
    """summary.txt went into any model_dir: it replaced a user's summary.txt, landed among input images,
    and in a new model_dir it made `flexunet train` refuse the folder (a summary.txt it did not write)."""
    path = write_config(tiny_config_text)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.txt").write_text("the user's summary")
    before = snapshot(tmp_path)
    for model_dir in (mine, tmp_path / "new", tmp_path):
        assert main(["inspect", str(path), "--set", f"train.model_dir={model_dir}"]) == 0
        captured = capsys.readouterr()
        assert "Parameters:" in captured.out
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


def test_inspect_stroke_config_reports_the_original_figures(stroke_config_path, tmp_path):
    result = run_cli("inspect", str(stroke_config_path), "--no-save")
    assert result.returncode == 0, result.stderr
    assert "Parameters: 124,996,883" in result.stdout
    assert "Forward GFLOPs per image: 115.68" in result.stdout


def test_inspect_makes_no_model_dir(tmp_path, capsys):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(TINY_RUN_CONFIG)
    capsys.readouterr()
    assert main(["inspect", str(config)]) == 0
    assert "Parameters:" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_inspect_leaves_a_run_folder_as_it_is(tiny_project, capsys):
    models = tiny_project.parent / "models"
    (models / "summary.txt").write_text("the run's own\n")
    before = snapshot(models)
    capsys.readouterr()
    assert main(["inspect", str(tiny_project)]) == 0
    printed = capsys.readouterr().out
    assert snapshot(models) == before and "Parameters: " in printed


def test_train_writes_the_summary_inspect_prints(tiny_run, capsys):
    written = (tiny_run / "models" / "summary.txt").read_text()  # by train: no inspect has run on this project
    capsys.readouterr()
    assert main(["inspect", str(tiny_run / "train_eval_infer.config")]) == 0
    assert written == capsys.readouterr().out


def test_inspect_names_each_member_of_a_members_model() -> None:
    from flexunet.model.inspection import describe_meta

    meta = {"best_model": "best_model.keras", "monitor": "val_loss",
            "members": [{"seed": 7, "epoch": 45, "best_epoch": 40, "best": 0.25, "averaged_epochs": [38, 40]},
                        {"seed": 8, "epoch": 30, "best_epoch": 22, "best": None, "averaged_epochs": None}]}
    text = describe_meta(meta, "models")
    assert ("the mean of 2 members: member 1 (seed 7): 45 epoch(s), best val_loss 0.25 at epoch 40, mean of "
            "epochs 38, 40; member 2 (seed 8): 30 epoch(s), best at epoch 22\n") in text
    assert "members" not in describe_meta({**meta, "members": None}, "models")
