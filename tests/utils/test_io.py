"""io.py: atomic writes."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from flexunet.utils.errors import DataError
from flexunet.utils.io import (atomic_write, json_text, safe_output_path, swap_dir, write_json,
                         write_text)


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    from flexunet.utils import io

    plain = tmp_path / "plain.txt"
    with open(plain, "w") as fh:  # created under the same umask the module read at import
        fh.write("x")
    written = tmp_path / "report.html"
    write_text(written, "<html></html>")
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~io._UMASK == stat.S_IMODE(plain.stat().st_mode)
    assert written.read_text() == "<html></html>"


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("new, half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# --------------------------------------------------------------------------- the JSON policy


def test_write_json_writes_no_bare_nan_or_infinity(tmp_path):
    doc = {"nan": math.nan, "inf": math.inf, "neg": -math.inf, "np": np.float32("nan"), "ok": np.float64(0.5),
           "arr": np.array([1.0, np.nan]), "nested": [{"x": (math.inf, 2)}], "path": Path("a/b")}
    write_json(tmp_path / "x.json", doc)
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} token"))
    assert back == {"nan": None, "inf": None, "neg": None, "np": None, "ok": 0.5, "arr": [1.0, None],
                    "nested": [{"x": [None, 2]}], "path": "a/b"}
    assert json_text({"v": float("nan")}) == '{"v": null}'


# --------------------------------------------------------------------------- folders swapped in whole


def _tree(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(name)
    return folder


def test_swap_dir_puts_the_new_folder_in_whole_and_leaves_nothing_beside(tmp_path):
    target = _tree(tmp_path / "out", "old.txt")
    swap_dir(_tree(tmp_path / ".new", "new.txt"), target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    swap_dir(_tree(tmp_path / ".fresh", "f.txt"), tmp_path / "absent")            # no target yet
    assert (tmp_path / "absent" / "f.txt").read_text() == "f.txt"


def test_swap_dir_puts_the_old_folder_back_when_the_new_cannot_go_in(tmp_path, monkeypatch):
    target = _tree(tmp_path / "out", "old.txt")
    real = os.replace

    def failing(src, dst):
        if Path(src).name == ".new":
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        swap_dir(_tree(tmp_path / ".new", "new.txt"), target)
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]


def test_atomic_write_leaves_the_previous_file_when_it_fails(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "previous\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]


# --------------------------------------------------------------------------- names from inputs


@pytest.mark.parametrize("name,expected", [
    ("../../etc/passwd.png", "passwd.png"),
    ("/etc/cron.d/evil.png", "evil.png"),
    ("..\\..\\windows\\evil.png", "evil.png"),
    ("a/../../b.png", "b.png"),
    ("plain.png", "plain.png"),
])
def test_safe_output_path_stays_in_the_output_folder(tmp_path, name, expected):
    out = tmp_path / "out"
    path = safe_output_path(out, name)
    assert path == out / expected and path.resolve().parent == out.resolve()


@pytest.mark.parametrize("name", ["", ".", "..", "../", "a/.."])
def test_safe_output_path_refuses_names_without_a_file(tmp_path, name):
    with pytest.raises(DataError, match="not a usable file name"):
        safe_output_path(tmp_path, name)
