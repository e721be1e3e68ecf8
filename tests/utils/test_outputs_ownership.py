"""Issue 24, item 8: the ownership rule (flexunet.utils.outputs), one table for every writing command.

Every writing command x every hostile placement of its output x with and without --overwrite,
on one small project trained once for the module (synth -> prepare -> split -> train -> evaluate,
32 px, one epoch).  Each case runs the command in-process on a private copy of the project and
checks:

* the exit status: 2 for a refusal, with exactly one stderr line and no traceback; 0 where the
  rule allows the command;
* the user's files and every input byte-identical afterwards (sha256 of every file under the
  project, hidden files included): a refusal changes nothing at all, an allowed command only
  adds its own outputs (and replaces its own earlier ones);
* the message is true and about the rule: it gives the placement's reason (an input, the user's
  file of that name, another command's output), and it says "pass --overwrite to write beside
  them" exactly where the table allows the same case with --overwrite, which is its own test
  (the hint taken: exit 0, the user's files byte-identical); "with or without --overwrite" only
  where --overwrite is refused too.

The commands that write without a config (synth, demo, plan, stats) know their neighbours only by
the records; demo and inspect have no --overwrite.  Cases that must write nothing run on hard
links to the module's project (a write in place would still fail them); allowed ones on copies.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import config_text
from flexunet.cli.main import main
from flexunet.utils.outputs import OWNER_FILE, folder_owners

CONFIG = config_text(
    model={"base_kernels": (3, 3), "learning_rate": 0.01, "loss": "ce_dice"},
    dataset={"class_names": ["background", "ischemic", "hemorrhagic"]},
    train={"epochs": 1, "batch_size": 4, "model_dir": "./models", "eval_dir": "./eval",
           "images_dir": "./dataset/D/train/images", "masks_dir": "./dataset/D/train/masks", "seed": 7,
           "jit_compile": False, "tensorboard": False},
    valid={"images_dir": "./dataset/D/valid/images", "masks_dir": "./dataset/D/valid/masks"},
    test={"images_dir": "./dataset/D/test/images", "masks_dir": "./dataset/D/test/masks"},
    infer={"images_dir": "./dataset/D/mini_test/images", "output_dir": "./out"},
    report={"output_dir": "./report", "gallery_per_rank": 1},
    augmentor={"rotation": False, "shrinks": [], "hflip": True, "vflip": False},
    prepare={"raw_dir": "./raw", "output_dir": "./master", "size": 32, "workers": 1},
    split={"output_dir": "./dataset", "name": "D", "ratios": (0.6, 0.2, 0.2), "mini_test_count": 2})

CONFIG_NAME = "train_eval_infer.config"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The project, trained and evaluated once: raw/ master/ dataset/D/ models/ eval/ evaluation.csv."""
    root = tmp_path_factory.mktemp("ownership")
    config = root / CONFIG_NAME
    config.write_text(CONFIG)
    (root / "notes.txt").write_text("the user's notes beside the config")
    (root / ".hidden").write_text("the user's hidden file")
    assert main(["-q", "synth", str(root / "raw"), "--count", "24", "--size", "32"]) == 0
    for command in ("prepare", "split", "train", "evaluate"):
        assert main(["-q", command, str(config)]) == 0, command
    return root


@pytest.fixture
def make_project(trained, tmp_path):
    """make_project(link) -> a private copy of the trained project.  With ``link`` its files are hard
    links to the module's (fast, for cases that must write nothing: a file a refusal wrote into
    in place would fail that case all the same)."""

    def make(link: bool) -> Path:
        root = tmp_path / "p"
        shutil.copytree(trained, root, symlinks=True, copy_function=os.link if link else shutil.copy2)
        evaluation = root / "eval" / "evaluation.json"   # the folders it scored: this copy's
        text = evaluation.read_text().replace(str(trained), str(root))
        evaluation.unlink()
        evaluation.write_text(text)
        return root

    return make


# --------------------------------------------------------------------------- what is there


def tree(root: Path) -> dict[str, str]:
    """Every entry below ``root`` (hidden ones too, links not followed): file -> sha256, folder -> "dir",
    link -> "link:<target>"."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def owned_by(root: Path, rel: str, command: str) -> bool:
    """Is ``rel`` (or a folder above it) an entry ``command``'s record names, or a record itself?"""
    path = root / rel
    if path.name == OWNER_FILE:
        return True
    for parent in path.parents:
        if parent == root.parent:
            break
        child = path.relative_to(parent).parts[0]
        if child in folder_owners(parent).get(command, ()):
            return True
    return False


# --------------------------------------------------------------------------- the commands, aimed at X


def _set(key: str, value: object) -> list[str]:
    return ["--set", f"{key}='{value}'"]


def _in(x: str, name: str) -> str:
    return f"{x}/{name}"


def _split_at(x: str) -> list[str]:
    path = Path(x)
    parent, name = (Path(".."), Path.cwd().name) if x == "." else (path.parent, path.name)
    return [*_set("split.output_dir", parent), *_set("split.name", name)]


def aim(command: str, root: Path, x: str) -> list[str]:
    """The argv of ``command`` writing to the folder ``x`` (an absolute path, or "." in the project)."""
    c = str(root / CONFIG_NAME)
    dataset = str(root / "dataset" / "D")
    return {
        "infer": lambda: ["infer", c, *_set("infer.output_dir", x)],
        "evaluate": lambda: ["evaluate", c, *_set("eval.eval_dir", x)],
        "evaluate-csv": lambda: ["evaluate", c, *_set("eval.eval_dir", root / "ev-new"),
                                 *_set("eval.evaluation_csv", _in(x, "evaluation.csv"))],
        "report": lambda: ["report", c, *_set("report.output_dir", x)],
        "stats": lambda: ["stats", dataset, "--out", x],
        "plan": lambda: ["plan", dataset, "--out", _in(x, CONFIG_NAME)],
        "export-keras": lambda: ["export", c, "--out", _in(x, "model.keras")],
        "export-savedmodel": lambda: ["export", c, "--format", "savedmodel", "--out", x],
        "train-model_dir": lambda: ["train", c, *_set("train.model_dir", x)],
        "train-eval_dir": lambda: ["train", c, *_set("train.model_dir", root / "run-new"), *_set("train.eval_dir", x)],
        "prepare": lambda: ["prepare", c, *_set("prepare.output_dir", x)],
        "split": lambda: ["split", c, *_split_at(x)],
        "synth": lambda: ["synth", x, "--count", "2", "--size", "32"],
        "synth-nifti": lambda: ["synth", x, "--format", "nifti", "--count", "2", "--size", "32"],
        "augment": lambda: ["augment", c, *_set("train.images_dir", _in(x, "images")),
                            *_set("train.masks_dir", _in(x, "masks"))],
        "demo": lambda: ["demo", "--out", x, "--count", "8", "--size", "32", "--epochs", "1"],
        "inspect": lambda: ["inspect", c, *_set("train.model_dir", x)],
    }[command]()


# the names a command writes into its folder: a user's files of those names (user-collide)
COLLIDING = {
    "infer": ["{stem}.png"],
    "evaluate": ["evaluation.json"],
    "evaluate-csv": ["evaluation.csv"],
    "report": ["report.html", "figures/poster.png"],
    "stats": ["stats.json"],
    "plan": [CONFIG_NAME, "fingerprint.json"],
    "export-keras": ["model.keras"],
    "export-savedmodel": ["saved_model.pb"],
    "train-model_dir": ["summary.txt", "logs/my.log"],
    "train-eval_dir": ["history.json", "train_losses.csv"],
    "prepare": ["images/x.png", "masks/x.png"],
    "split": ["train/images/x.png", "split.json"],
    "synth": ["STROKE-DATASET/PNG/1.png"],
    "synth-nifti": ["Dataset001_SynthStroke/dataset.json"],
    "demo": [CONFIG_NAME],
    "inspect": ["summary.txt"],
}


def place(placement: str, command: str, root: Path, monkeypatch) -> str:
    """Make the placement in the project (the user's files as it needs) and return X."""
    dataset = root / "dataset" / "D"
    test_images = dataset / "test" / "images"
    if placement == "input":
        return str(dataset / "test" if command == "augment" else test_images)
    if placement == "inside-input":
        return str(test_images / "sub")
    if placement == "dataset-root":
        return str(root / "dataset")
    if placement == "project-root":
        return str(root)
    if placement == "dot":
        monkeypatch.chdir(root)
        return "."
    if placement == "symlink":
        link = root / "link"
        link.symlink_to(dataset / "test" if command == "augment" else test_images, target_is_directory=True)
        return str(link)
    if placement == "run-folder":
        (root / "models" / "notes.txt").write_text("the user's notes beside the run")
        return str(root / "models")
    if placement == "mini-test":
        return str(dataset / "mini_test" if command == "augment" else dataset / "mini_test" / "masks")
    if placement == "curves":
        return str(root / "eval")
    if command == "augment":   # its folder is the train folder: the user's files among the originals
        train = dataset / "train"
        if placement == "user-collide":
            stem = sorted((train / "images").iterdir())[0].stem
            for sub in ("images", "masks"):
                (train / sub / f"hflipped_{stem}.png").write_bytes(b"the user's own flip")
        (train / "images" / "notes.txt").write_text("the user's notes among the images")
        (train / "masks" / ".hidden").write_text("the user's hidden file")
        return str(train)
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's notes")
    (mine / ".hidden").write_text("the user's hidden file")
    (mine / "sub").mkdir()
    (mine / "sub" / "deep.txt").write_text("the user's deeper file")
    if placement == "user-collide":
        stem = sorted((dataset / "mini_test" / "images").iterdir())[0].stem
        for name in COLLIDING[command]:
            path = mine / name.format(stem=stem)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"the user's {name}".encode())
    else:
        assert placement == "user-beside", placement
    return str(mine)


PLACEMENTS = ("input", "inside-input", "dataset-root", "project-root", "dot", "user-collide", "user-beside",
              "symlink", "run-folder", "mini-test", "curves")

# Per placement (in PLACEMENTS' order), without / with --overwrite: R refused (exit 2, nothing changed),
# O allowed (exit 0, the user's files and the inputs byte-identical), - no such case (demo and inspect
# have no --overwrite; augment's folder is the train folder).  inspect: P prints (exit 0) and writes
# nothing (train writes the run's summary.txt itself).
TABLE = {
    #                   input inside dsroot proot dot collide beside symlink run  mini curves
    "infer":             "RR   RR     RR     RR    RR  RR      RO     RR      RR   RR   RR",
    "evaluate":          "RR   RR     RR     RR    RR  RR      RO     RR      RR   RR   OO",
    "evaluate-csv":      "RR   RR     OO     OO    OO  RR      OO     RR      RR   RR   OO",
    "report":            "RR   RR     RR     RR    RR  RR      RO     RR      RR   RR   RR",
    "stats":             "RR   RR     RR     RR    RR  RR      RO     RR      RR   RR   RR",
    "plan":              "RR   RR     OO     RR    RR  RR      OO     RR      RR   RR   OO",
    "export-keras":      "RR   RR     OO     OO    OO  RR      OO     RR      RR   RR   OO",
    "export-savedmodel": "RR   RR     RR     RR    RR  RR      RR     RR      RR   RR   RR",
    "train-model_dir":   "RR   RR     RR     RR    RR  RR      RO     RR      RO   RR   RR",
    "train-eval_dir":    "RR   RR     RR     RR    RR  RR      RO     RR      RO   RR   OO",
    "prepare":           "RR   RR     RR     RR    RR  RR      RR     RR      RR   RR   RR",
    "split":             "RR   RR     RR     RR    RR  RR      RR     RR      RR   RR   RR",
    "synth":             "RR   RR     OO     OO    OO  RR      OO     RR      RR   RR   OO",
    "synth-nifti":       "RR   RR     OO     OO    OO  RR      OO     RR      RR   RR   OO",
    "augment":           "RR   --     --     --    --  RR      OO     RR      --   RR   --",
    "demo":              "R-   R-     R-     R-    R-  R-      R-     R-      R-   R-   R-",
    "inspect":           "P-   P-     P-     P-    P-  P-      P-     P-      P-   P-   P-",
}


# what a refusal in each placement must be about (one of these), so that a case refused for another
# reason (a missing mask, a bad path) does not pass for the rule
_INPUT = r"input folder|written by `flexunet split`|would land in the|builds this folder whole"
REASONS = {
    "input": _INPUT, "inside-input": _INPUT, "symlink": _INPUT, "mini-test": _INPUT,
    "dataset-root": r"contains the input folder|builds this folder whole|not empty",
    "project-root": r"contains the (input|run) folder|exists and was not written by|not empty",
    "dot": r"contains the (input|run) folder|exists and was not written by|not empty",
    "user-beside": r"pass --overwrite to write beside them|builds this folder whole|not empty",
    "run-folder": r"model_dir|run folder|`flexunet train` run|written by `flexunet train`|outputs of `flexunet train`|"
                  r"builds this folder whole|not empty|\(notes\.txt\)",
    "curves": r"outputs of `flexunet (train|evaluate)`|eval_dir|builds this folder whole|not empty",
}


def reason(command: str, placement: str, project: Path) -> str:
    if placement != "user-collide":
        return REASONS[placement]
    if command in ("augment", "demo"):
        return {"augment": "named as augmented copies were not written by `flexunet augment`",
                "demo": "not empty"}[command]
    stem = sorted((project / "dataset" / "D" / "mini_test" / "images").iterdir())[0].stem
    return re.escape(COLLIDING[command][0].format(stem=stem).split("/")[0])


def expected(command: str, placement: str, overwrite: bool) -> str:
    return TABLE[command].split()[PLACEMENTS.index(placement)][int(overwrite)]


def _cases():
    for command in TABLE:
        for placement in PLACEMENTS:
            for overwrite in (False, True):
                outcome = expected(command, placement, overwrite)
                if outcome != "-":
                    yield pytest.param(command, placement, overwrite, outcome,
                                       id=f"{command}-{placement}-{'overwrite' if overwrite else 'plain'}")


def no_demo_run(monkeypatch):
    """A demo the rule fails to refuse stops at its first stage instead of running for minutes."""
    import flexunet.synthetic.synth

    def refuse(*args, **kwargs):
        raise AssertionError("the demo was not refused")

    monkeypatch.setattr(flexunet.synthetic.synth, "synthesize", refuse)


@pytest.fixture
def fake_probe(monkeypatch):
    """plan without timing real networks (as tests/test_plan.py does)."""
    import flexunet.planning.plan

    monkeypatch.setattr(flexunet.planning.plan, "probe_speed",
                        lambda candidates, size, channels, num_classes: {c: 0.04 * c.base_filters for c in candidates})


@pytest.mark.parametrize("command, placement, overwrite, outcome", list(_cases()))
def test_the_rule(command, placement, overwrite, outcome, make_project, monkeypatch, capsys, fake_probe):
    project = make_project(link=outcome in "RP")
    if command == "demo":
        no_demo_run(monkeypatch)
    x = place(placement, command, project, monkeypatch)
    argv = aim(command, project, x) + (["--overwrite"] if overwrite else [])
    before = tree(project)
    own = command.split("-")[0]
    own_before = {rel for rel in before if owned_by(project, rel, own)} if outcome == "O" else set()
    capsys.readouterr()
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    after = tree(project)
    assert "Traceback" not in err, err
    if outcome == "R":
        lines = err.strip().splitlines()
        assert code == 2, (code, err)
        assert len(lines) == 1 and lines[0].startswith(f"flexunet {argv[0]}: error: "), err
        assert re.search(reason(command, placement, project), err), err
        assert after == before, f"a refusal changed the project: {_diff(before, after)}"
        # the message is true: it offers --overwrite exactly where --overwrite lifts the refusal
        hint = "pass --overwrite to write beside them" in err
        assert hint == (not overwrite and expected(command, placement, True) == "O"), err
        if "with or without --overwrite" in err:
            assert expected(command, placement, not overwrite) in "R-", err
        return
    assert code == 0, err
    if outcome == "P":      # inspect: printed, nothing written
        assert after == before, _diff(before, after)
        return
    assert after != before, f"{command} wrote nothing"
    changed = {rel for rel, digest in before.items() if after.get(rel) != digest and rel not in own_before}
    assert not changed, f"{command} changed or removed files it did not write: {sorted(changed)}"


def _diff(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {"added": sorted(after.keys() - before.keys()), "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k])}


def test_inspect_of_a_run_folder_or_a_model_file_writes_nothing(make_project, capsys):
    project = make_project(link=True)
    before = tree(project)
    for target in (project / "models", project / "models" / "best_model.keras"):
        assert main(["-q", "inspect", str(target)]) == 0
        assert "classes" in capsys.readouterr().out
    assert main(["-q", "inspect", str(project / CONFIG_NAME), "--no-save"]) == 0
    assert tree(project) == before
