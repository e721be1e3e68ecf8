"""io.py: atomic writes."""

from __future__ import annotations

import stat

import pytest

from flexunet.io import atomic_write, write_text


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path):
    from flexunet import io

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
