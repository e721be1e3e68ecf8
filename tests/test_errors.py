"""Issue 24 (items 5, 7, tracebacks): bad values and damaged files get one line, nothing left behind.

One tiny trained and evaluated project for the module (32 px, one epoch); each test copies it,
runs one command through ``flexunet.cli.main.main`` (stderr captured) or a real process where the
traceback itself is the point, and checks the exit status, the one ``flexunet <command>:``
line, that no traceback was printed and that the files are as they were.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import TRAIN_CONFIG, disk_full_on, leftovers, make_tiny_dataset, snapshot
from flexunet.cli.main import main
from flexunet.utils.errors import FlexUNetError

CONFIG = TRAIN_CONFIG.replace("epochs = 3", "epochs = 1").replace("deterministic = True", "deterministic = False")


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() points the flexunet logger at the current stderr; put it back afterwards."""
    logger = logging.getLogger("flexunet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def cli(capsys, *args: str) -> tuple[int, list[str], str]:
    """``flexunet -q ARGS`` in-process: (exit status, the ``flexunet <command>`` lines, all of stderr)."""
    capsys.readouterr()
    rc = main(["-q", *args])
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.startswith("flexunet ")], err


def one_error(capsys, *args: str, rc: int = 2) -> str:
    code, lines, err = cli(capsys, *args)
    assert code == rc, err
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def run_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flexunet", "-q", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def one_process_error(result: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert result.returncode == rc, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """config + data + models/ (1 epoch) + eval/ + evaluation.csv; returns the project folder."""
    root = tmp_path_factory.mktemp("errors")
    for subset, n, seed in (("train", 8, 1), ("valid", 4, 2), ("test", 4, 3)):
        make_tiny_dataset(root / "data" / subset, n=n, seed=seed)
    (root / "train_eval_infer.config").write_text(CONFIG)
    logger = logging.getLogger("flexunet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        assert main(["-q", "train", str(root / "train_eval_infer.config")]) == 0
        assert main(["-q", "evaluate", str(root / "train_eval_infer.config")]) == 0
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    return root


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A copy of the trained project; returns its config."""
    shutil.copytree(trained, tmp_path / "p")
    return tmp_path / "p" / "train_eval_infer.config"


# --------------------------------------------------------------------------- 1. the seed


def test_a_seed_beyond_numpys_range_is_refused_before_anything_is_made(tmp_path):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(CONFIG)
    line = one_process_error(run_process("train", str(config), "--set", "train.seed=4294967296", cwd=tmp_path))
    assert line == ("flexunet train: error: --set [train] seed = 4294967296: expected an integer in "
                    "[0, 4294967295]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]   # no model_dir


def test_the_seed_range_ends_where_numpys_does(tmp_path):
    from flexunet.config.loader import parse_config
    from flexunet.utils.errors import ConfigError

    assert parse_config(CONFIG.replace("seed = 7", f"seed = {2**32 - 1}")).train.seed == 2**32 - 1
    np.random.seed(2**32 - 1)  # the largest seed the config accepts is one numpy takes
    for bad in (2**32, -1):
        with pytest.raises(ConfigError, match=r"\[train\] seed = .*: expected an integer in \[0, 4294967295\]"):
            parse_config(CONFIG.replace("seed = 7", f"seed = {bad}"))


# --------------------------------------------------------------------------- 2. TF_CONFIG


@pytest.mark.parametrize("value,why", [
    ('{"cluster": ', "not valid JSON"),
    ("[1]", "an array, not an object"),
    ('{"cluster": {"worker": "host:1"}}', '"cluster" is not an object of task type -> list'),
    ('{"task": {"type": "worker", "index": "0"}}', '"task" "index" is not an integer >= 0'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "names no address"),
])
def test_a_malformed_tf_config_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, value, why):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(CONFIG)
    monkeypatch.setenv("TF_CONFIG", value)
    line = one_error(capsys, "train", str(config), "--set", "train.strategy='multiworker'")
    assert line.startswith('flexunet train: error: TF_CONFIG environment variable (read for [train] strategy = '
                           '"multiworker"): '), line
    assert why in line and line.endswith('"task": {"type": "worker", "index": 0}}'), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_a_well_formed_tf_config_still_names_the_chief(monkeypatch):
    from flexunet.training.distribute import is_chief, tf_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config() == {} and is_chief()
    cluster = {"worker": ["a:1", "b:1"]}
    for index, chief in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert is_chief() is chief


# --------------------------------------------------------------------------- 3. damaged files


def _truncate(path: Path) -> None:
    """Cut a file in half, as a disk filling up or a copy cut short would."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("command", ["evaluate", "infer"])
def test_a_truncated_model_meta_is_one_line_for_evaluate_and_infer(project, capsys, command):
    root = project.parent
    meta = root / "models" / "model_meta.json"
    _truncate(meta)
    before = snapshot(root)
    line = one_error(capsys, command, str(project), "--overwrite")
    assert line.startswith(f"flexunet {command}: error: {meta}: damaged, not valid JSON ("), line
    assert "expected the model_meta.json 'flexunet train' writes" in line
    assert snapshot(root) == before and not (root / "out").exists()


def test_a_truncated_model_meta_is_one_line_for_inspect_in_a_real_process(project):
    meta = project.parent / "models" / "model_meta.json"
    _truncate(meta)
    for target in (meta.parent, meta):
        line = one_process_error(run_process("inspect", str(target), cwd=project.parent))
        assert line.startswith(f"flexunet inspect: error: {meta}: damaged, not valid JSON ("), line


@pytest.mark.parametrize("change,problem", [
    ({"classes": "lesion"}, "'classes' is a string, expected an array"),
    ({"input": [32, 32]}, "'input' is an array, expected an object"),
    ({"best_model": 3}, "'best_model' is a number, expected a string"),
    ({"classes": [{"index": "1", "name": "x"}]}, "'classes.0.index' is a string, expected an integer"),
])
def test_model_meta_of_the_wrong_types_is_one_line(project, capsys, tmp_path, change, problem):
    meta_path = project.parent / "models" / "model_meta.json"
    meta = {**json.loads(meta_path.read_text()), **change}
    meta_path.write_text(json.dumps(meta))
    before = snapshot(project.parent)
    expected = f"{meta_path}: damaged model metadata ({problem}); expected the model_meta.json"
    assert expected in one_error(capsys, "evaluate", str(project), "--overwrite")
    assert expected in one_error(capsys, "inspect", str(meta_path.parent))
    loose = tmp_path / "some.json"  # any JSON file given to inspect
    loose.write_text(json.dumps(meta))
    assert f"{loose}: damaged model metadata ({problem})" in one_error(capsys, "inspect", str(loose))
    assert snapshot(project.parent) == before


@pytest.mark.parametrize("name,damage,problem", [
    ("state.json", "truncate", "damaged (not valid JSON: "),
    ("state.json", {"epoch": "1", "history": {}}, "damaged ('epoch' is '1', expected an integer >= 0)"),
    ("state.json", {"epoch": 1, "history": {"loss": "low"}}, "damaged ('history' is {\"loss\": \"low\"}, "
                                                             "expected an object of lists of numbers)"),
    ("optimizer.npz", "truncate", "damaged (not a readable .npz archive: "),
    ("rng.npz", "truncate", "damaged (not a readable .npz archive: "),
])
def test_a_damaged_checkpoint_file_is_one_line_for_train_resume(project, capsys, name, damage, problem):
    root = project.parent
    path = root / "models" / "last_checkpoint" / name
    if damage == "truncate":
        _truncate(path)
    else:
        path.write_text(json.dumps(damage))
    before = snapshot(root)
    line = one_error(capsys, "train", str(project), "--resume", "--set", "train.epochs=2")
    assert line.startswith(f"flexunet train: error: {path}: {problem}"), line
    assert line.endswith("restore the file, or start a new run with --overwrite (evaluate and infer can still "
                         "use the best model as it is)")
    assert snapshot(root) == before and not leftovers(root)


def test_state_json_checks_keep_a_plain_state(tmp_path):
    from flexunet.training.checkpoint import read_state

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"epoch": 2, "best": None, "best_epoch": 1, "history": {"loss": [0.5, None]},
                                "stopped_by": None, "lr_factor": 0.5}))
    assert read_state(path)["epoch"] == 2
    path.write_text("[]")
    with pytest.raises(FlexUNetError, match=r"state.json: damaged \(not a JSON object\)"):
        read_state(path)


# --------------------------------------------------------------------------- 4. evaluate writes all or nothing


def _mark_previous(root: Path) -> dict[str, str]:
    """Put recognisable previous results in place (a rerun would otherwise write the same bytes)."""
    (root / "evaluation.csv").write_text("previous\n")
    (root / "eval" / "per_image.csv").write_text("previous\n")
    return {**snapshot(root / "eval"), "evaluation.csv": snapshot(root)["evaluation.csv"]}


def _results(root: Path) -> dict[str, str]:
    return {**snapshot(root / "eval"), "evaluation.csv": snapshot(root)["evaluation.csv"]}


def test_evaluate_on_an_unwritable_eval_dir_keeps_evaluation_csv(project, capsys, monkeypatch):
    root = project.parent
    before = _mark_previous(root)
    real = tempfile.mkstemp
    eval_dir = root / "eval"

    def no_write_access(*args, **kwargs):  # the tests run as root, where chmod cannot take write access away
        if Path(kwargs.get("dir", "")) == eval_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(eval_dir / "x.tmp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_write_access)
    line = one_error(capsys, "evaluate", str(project), rc=1)
    assert line == (f"flexunet evaluate: error: {eval_dir / 'evaluation.json'}: Permission denied; previous results "
                    f"were left as they were")
    assert _results(root) == before and not leftovers(root)


@pytest.mark.parametrize("full", ["evaluation.csv", "evaluation.json", "bland_altman.png"])
def test_a_full_disk_during_evaluate_leaves_every_previous_result(project, capsys, monkeypatch, full):
    root = project.parent
    before = _mark_previous(root)
    hit = disk_full_on(monkeypatch, lambda p: p.name == full)
    line = one_error(capsys, "evaluate", str(project), rc=1)
    assert hit and line.endswith(f"{hit[0]}: No space left on device; previous results were left as they were")
    assert _results(root) == before and not leftovers(root)


def test_evaluate_then_replaces_both_together(project, capsys):
    root = project.parent
    before = _mark_previous(root)
    assert cli(capsys, "evaluate", str(project))[0] == 0
    now = _results(root)
    assert now["evaluation.csv"] != before["evaluation.csv"] and now["per_image.csv"] != before["per_image.csv"]
    assert (root / "evaluation.csv").read_text().startswith("ce_dice,")


# --------------------------------------------------------------------------- 5. inspect writes nothing


def test_inspect_makes_no_model_dir(tmp_path, capsys):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(CONFIG)
    capsys.readouterr()
    assert main(["inspect", str(config)]) == 0
    assert "Parameters:" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_inspect_leaves_a_run_folder_as_it_is(project, capsys):
    models = project.parent / "models"
    (models / "summary.txt").write_text("the run's own\n")
    before = snapshot(models)
    capsys.readouterr()
    assert main(["inspect", str(project)]) == 0
    printed = capsys.readouterr().out
    assert snapshot(models) == before and "Parameters: " in printed


def test_train_writes_the_summary_inspect_prints(trained, capsys):
    written = (trained / "models" / "summary.txt").read_text()  # by train: no inspect has run on this project
    capsys.readouterr()
    assert main(["inspect", str(trained / "train_eval_infer.config")]) == 0
    assert written == capsys.readouterr().out


# --------------------------------------------------------------------------- 6. the demo has no --overwrite


def test_a_demo_refusal_says_what_the_demo_user_can_do(tmp_path, capsys, monkeypatch):
    """A foreign file in the demo's eval folder: evaluate's real refusal, reworded (the other stages stubbed)."""
    import flexunet.dataset.augment
    import flexunet.evaluation.evaluate
    import flexunet.dataset.prepare
    import flexunet.dataset.split
    import flexunet.synthetic.synth
    import flexunet.training.train

    out = tmp_path / "demo"
    (out / "eval").mkdir(parents=True)
    (out / ".flexunet-demo").write_text("created by flexunet demo\n")
    (out / "eval" / "notes.txt").write_text("mine\n")
    for module, name in ((flexunet.synthetic.synth, "synthesize"), (flexunet.dataset.prepare, "prepare_dataset"),
                         (flexunet.dataset.split, "split_dataset"), (flexunet.dataset.augment, "augment_dataset"),
                         (flexunet.training.train, "train")):
        monkeypatch.setattr(module, name, lambda *a, **k: None)
    monkeypatch.setattr(flexunet.evaluation.evaluate, "evaluate_model",  # its first check of eval_dir, as it is
                        lambda cfg, **k: flexunet.evaluation.evaluate.check_outputs(cfg, cfg.train.eval_dir, False))
    code, lines, err = cli(capsys, "demo", "--out", str(out), "--size", "32")
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"flexunet demo: error: [eval] eval_dir = {out / 'eval'}: holds 1 entry `flexunet "
                           f"evaluate` did not write (notes.txt); "), line
    assert "pass --overwrite" not in line
    assert line.endswith(f"flexunet demo writes only beside its own files and has no --overwrite: move the files "
                         f"it did not write out of {out}, or run the demo with another --out")
    assert (out / "eval" / "notes.txt").read_text() == "mine\n"


# --------------------------------------------------------------------------- 7. class names


@pytest.mark.parametrize("names,why", [
    ('["background", "lesion", "lesion"]', "'lesion' appears twice"),
    ('["background", "lesion", "Lesion"]', "'lesion' and 'Lesion' differ only in case"),
    ('["Background", "background", "lesion"]', "'Background' and 'background' differ only in case"),
    ('["background", "core lesion", "core-lesion"]', "'core lesion' and 'core-lesion' would both be logged as "
                                                     "dice_core_lesion"),
])
def test_class_names_must_differ(tmp_path, capsys, names, why):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(CONFIG.replace('class_names = ["background", "bright", "dark"]', f"class_names = {names}"))
    line = one_error(capsys, "train", str(config))
    assert line == (f"flexunet train: error: {config}:14 [dataset] class_names = {names}: expected a different "
                    f"name for each class (case and punctuation aside); {why}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_distinct_class_names_keep_their_metric_names():
    from flexunet.config.loader import class_metric_names, parse_config

    cfg = parse_config(CONFIG.replace('"bright", "dark"', '"Core Lesion", "penumbra-2"'))
    assert class_metric_names(cfg.class_names)[:2] == ["dice_core_lesion", "dice_penumbra_2"]


def test_plan_classes_must_differ_too():
    from flexunet.planning.colours import class_names_for

    with pytest.raises(FlexUNetError, match="'lesion' and 'Lesion' differ only in case"):
        class_names_for([(0, 0, 0), (0, 255, 0), (0, 0, 255)], ["lesion", "Lesion"])


# --------------------------------------------------------------------------- 8. report after a new model


def _report_page(root: Path) -> str:
    return (root / "report" / "report.html").read_text()


def test_report_warns_when_the_evaluation_is_an_earlier_models(project, capsys):
    root = project.parent
    off = ("--set", "report.gallery_per_rank=0")
    code, lines, err = cli(capsys, "report", str(project), *off)
    assert code == 0 and "earlier model" not in err, err
    assert 'class="warning"' not in _report_page(root)
    recorded = json.loads((root / "eval" / "evaluation.json").read_text())["model_sha256"]
    from flexunet.model.trained import model_sha256

    assert recorded == model_sha256(root / "models" / "best_model.keras")

    assert cli(capsys, "train", str(project), "--overwrite", "--set", "train.seed=8")[0] == 0  # a new model
    code, lines, err = cli(capsys, "report", str(project), *off)
    warning = (f"these figures were computed for an earlier model: {root / 'models' / 'best_model.keras'} has "
               f"changed since evaluation.json was written; run flexunet evaluate again")
    assert code == 0 and f"warning: report: {warning}" in err.splitlines(), err
    page = _report_page(root)
    assert page.count(f"<strong>Warning:</strong> {warning}") == 2      # atop the page and atop the evaluation
    assert page.index('id="stale-model"') < page.index('id="per-class"')

    evaluation = root / "eval" / "evaluation.json"                      # an evaluation.json without the hash
    evaluation.write_text(json.dumps({k: v for k, v in json.loads(evaluation.read_text()).items()
                                      if k != "model_sha256"}))
    code, lines, err = cli(capsys, "report", str(project), *off)
    assert code == 0 and "evaluation.json does not record which model it evaluated" in err, err
    assert "does not record which model it evaluated" in _report_page(root)
