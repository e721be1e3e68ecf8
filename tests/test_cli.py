"""The command line: help, user errors as one line and exit 2, inspect."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from flexunet.cli import COMMANDS, main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexunet", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_for_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name, *_ in COMMANDS:
        assert name in out
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0


def test_help_does_not_import_tensorflow():
    code = ("import sys\nfrom flexunet.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_user_error_is_one_line_exit_2_no_traceback(write_config, tiny_config_text, tmp_path):
    path = write_config(tiny_config_text.replace("num_layers = 3", "num_layers = 0"))
    result = run_cli("inspect", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [f"flexunet inspect: error: {path}:7 [model] num_layers = 0: expected an integer >= 1"]
    assert list(tmp_path.iterdir()) == [path]  # nothing written


def test_missing_config_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.config")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_inspect_prints_and_saves_summary(write_config, tiny_config_text, tmp_path, capsys):
    path = write_config(tiny_config_text)
    assert main(["inspect", str(path), "--set", f"train.model_dir={tmp_path / 'm'}",
                 "--set", "model.base_filters=8"]) == 0
    out = capsys.readouterr().out
    assert "Parameters:" in out and "Forward GFLOPs per image:" in out
    summary = (tmp_path / "m" / "summary.txt").read_text()
    assert summary == out
    assert "enc0_conv1" in summary


def test_inspect_stroke_config_reports_the_original_figures(stroke_config_path, tmp_path):
    result = run_cli("inspect", str(stroke_config_path), "--no-save")
    assert result.returncode == 0, result.stderr
    assert "Parameters: 124,996,883" in result.stdout
    assert "Forward GFLOPs per image: 115.68" in result.stdout


def test_strict_turns_unknown_keys_into_errors(write_config, tiny_config_text, tmp_path, capsys):
    path = write_config(tiny_config_text.replace("[train]", "[train]\nepohcs = 3"))
    args = ["inspect", str(path), "--no-save"]
    assert main(["--strict", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'epohcs' ignored; did you mean 'epochs'?" in err[0]
    assert "--strict" in err[0]
    assert main(args) == 0  # without --strict: a warning, and the command runs


TF_NOISE = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "port.cc", "retracing", "UserWarning")


def test_tensorflow_chatter_is_hidden_by_default_and_shown_with_verbose(write_config, tiny_config_text, tmp_path):
    import os
    import re

    path = write_config(tiny_config_text)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    probe = ("import logging, os, sys\nfrom flexunet.cli import main\ncode = main(sys.argv[1:])\n"
             "print('TF_CPP_MIN_LOG_LEVEL', os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
             "print('tf logger', logging.getLogger('tensorflow').level)\nraise SystemExit(code)\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", probe, *args, "inspect", str(path), "--no-save"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert "Parameters:" in quiet.stdout
    assert not [ln for ln in quiet.stderr.splitlines() if any(n in ln for n in TF_NOISE)], quiet.stderr
    assert not re.search(r"^[IWE]\d{4} ", quiet.stderr, re.M), quiet.stderr  # no absl-format C++ lines
    assert "TF_CPP_MIN_LOG_LEVEL 3" in quiet.stdout and f"tf logger {logging.ERROR}" in quiet.stdout

    verbose = run("--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "TF_CPP_MIN_LOG_LEVEL None" in verbose.stdout  # nothing forced: TensorFlow logs as it would
    assert f"tf logger {logging.ERROR}" not in verbose.stdout


def test_every_command_of_the_parser_has_a_handler():
    from flexunet.cli import HANDLERS

    assert [name for name, *_ in COMMANDS] == list(HANDLERS)
