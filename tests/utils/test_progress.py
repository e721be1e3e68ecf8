"""flexunet.utils.progress: what the progress bar prints, on a terminal and in a log."""

from __future__ import annotations

import io
import re
import sys

import pytest

import flexunet.utils.progress as progress
from flexunet.utils.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """time.perf_counter as progress sees it: set ``clock.now`` by hand."""
    class Clock:
        now = 0.0

    monkeypatch.setattr(progress.time, "perf_counter", lambda: Clock.now)
    return Clock


def counts(text: str) -> list[str]:
    return re.findall(r"(\d+/\d+) \[", text)


@pytest.mark.parametrize("total,shown", [
    (10, ["2/10", "4/10", "6/10", "8/10", "10/10"]),             # each fifth
    (100, ["20/100", "40/100", "60/100", "80/100", "100/100"]),
    (3, ["1/3", "2/3", "3/3"]),                                    # every item crosses a fifth
    (1, ["1/1"]),
])
def test_a_log_gets_a_line_each_fifth_and_one_at_the_end(capsys, total, shown):
    """(capsys's stderr is no terminal, as a log file or CI's is not.)"""
    assert list(Progress(range(total), "prepare", unit="slice")) == list(range(total))
    text = capsys.readouterr().err
    lines = text.splitlines()
    assert counts(text) == shown and len(lines) == len(shown)
    assert all(re.fullmatch(r"prepare +\d+/\d+ \[[=> ]{24}\] \d+\.\d slice/s", line) for line in lines), lines
    assert "\r" not in text


def test_the_line_shows_the_count_the_bar_and_the_rate(capsys, clock):
    bar = Progress([], "evaluate", total=4, unit="img")
    clock.now = 2.0                                               # 2 images in 2 s
    bar.update(2)
    assert capsys.readouterr().err == f"evaluate 2/4 [{'=' * 12}>{' ' * 11}] 1.0 img/s\n"
    clock.now = 8.0
    bar.update(2)                                                 # 4 in 8 s, the bar full
    assert capsys.readouterr().err == f"evaluate 4/4 [{'=' * 24}] 0.5 img/s\n"


def test_nothing_is_printed_when_disabled_or_without_a_total_in_a_log(capsys):
    assert list(Progress(range(7), "stats", enabled=False)) == list(range(7))
    assert list(Progress(iter(range(7)), "augment")) == list(range(7))     # no len(): total unknown
    assert capsys.readouterr().err == ""


def test_a_terminal_redraws_in_place_and_ends_the_line(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    list(Progress(range(3), "synth", unit="slice"))
    text = terminal.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1   # 3 redraws and the close
    assert counts(text) == ["1/3", "2/3", "3/3", "3/3"]
    list(Progress(iter(range(2)), "augment"))                     # unknown total: the count alone
    assert re.search(r"\raugment 2 \d+\.\d it/s\n$", terminal.getvalue())
