"""flexunet.cli.main: help, user errors as one line and exit 2, config errors and missing folders named."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import pytest

from conftest import cli, line_of, one_error, pipeline_config_text
from flexunet.cli.main import COMMANDS, main


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
    code = ("import sys\nfrom flexunet.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
            "assert 'flexunet.cli.commands' not in sys.modules, 'the stage modules loaded'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_user_error_is_one_line_exit_2_no_traceback(write_config, tiny_config_text, tmp_path):
    text = tiny_config_text.replace("num_layers = 3", "num_layers = 0")
    path = write_config(text)
    result = run_cli("inspect", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines == [f"flexunet inspect: error: {path}:{line_of(text, 'num_layers')} [model] num_layers = 0: "
                     f"expected an integer >= 1"]
    assert list(tmp_path.iterdir()) == [path]  # nothing written


def test_missing_config_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.config")]) == 2
    assert "config file not found" in capsys.readouterr().err


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
    probe = ("import logging, os, sys\nfrom flexunet.cli.main import main\ncode = main(sys.argv[1:])\n"
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
    from flexunet.cli.commands import HANDLERS

    assert [name for name, *_ in COMMANDS] == list(HANDLERS)


# --------------------------------------------------------------------------- config through the CLI
CLI_CONFIG = pipeline_config_text()


@pytest.mark.parametrize("edit,expected", [
    (("[model]\n", "[model\n"), r":1: expected a section header like \[model\]"),
    (("num_classes = 3\n", ""), r"\[model\] num_classes: missing; expected an integer >= 2"),
    (("epochs = 1\n", "epochs = 'one'\n"), r":\d+ \[train\] epochs = 'one': expected an integer >= 1"),
    (("epochs = 1\n", "epochs = 0\n"), r":\d+ \[train\] epochs = 0: expected an integer >= 1"),
    (("num_classes = 3\n", "num_classes = 4\n"), r"\[mask\] rgb_map = .*one colour per class index 0..3"),
    (("size = 32\n", "size = __import__('os').system('touch PWNED')\n"),
     r"\[prepare\] size = __import__.*never run"),
])
def test_config_errors_are_one_line_with_file_and_line(tmp_path, capsys, monkeypatch, edit, expected):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "flexunet.config"
    config.write_text(CLI_CONFIG.replace(*edit, 1))
    line = one_error(capsys, "split", str(config))
    assert line.startswith(f"flexunet split: error: {config}")
    assert re.search(expected, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flexunet.config"]   # nothing written, nothing run


def test_unknown_section_and_misspelt_key_warn_with_did_you_mean(tmp_path, capsys):
    config = tmp_path / "flexunet.config"
    config.write_text(CLI_CONFIG.replace("epochs = 1", "epohcs = 1") + "\n[tarin]\nepochs = 2\n")
    rc, lines, err = cli(capsys, "split", str(config))
    assert f"warning: {config}:" in err and "unknown key 'epohcs' ignored; did you mean 'epochs'?" in err
    assert "unknown section [tarin] ignored; did you mean 'train'?" in err
    assert rc == 2 and len(lines) == 1 and "run prepare first" in lines[0]   # then the missing master


@pytest.mark.parametrize("command,key", [
    ("prepare", r"\[prepare\] raw_dir = \"./raw\": expected an existing raw dataset folder"),
    ("split", r"\[prepare\] output_dir = \"./master\": expected the master dataset folder"),
    ("augment", r"\[train\] images_dir = \"./dataset/Stroke/train/images\": expected an existing"),
    ("train", r"\[train\] images_dir = \"./dataset/Stroke/train/images\": expected an existing"),
    ("evaluate", r"\[test\] images_dir = \"./dataset/Stroke/test/images\": expected an existing"),
    ("infer", r"\[infer\] images_dir = \"./dataset/Stroke/mini_test/images\": expected an existing"),
])
def test_a_missing_folder_is_named_by_the_command_that_needs_it(tmp_path, capsys, command, key):
    config = tmp_path / "flexunet.config"
    config.write_text(CLI_CONFIG)
    line = one_error(capsys, command, str(config))
    assert re.search(key, line) and "does not exist" in line, line
