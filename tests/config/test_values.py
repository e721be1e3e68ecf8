"""The value kinds and the literal reader under the config dialect, without a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexunet.config.values import Expected, Float, Int, Pair, PathKind, Seq, Str, format_value, literal


def test_a_sequence_or_pair_fails_whole_with_the_containers_expectation():
    seq, pair = Seq(Int(lo=1), min_len=2), Pair(Int(lo=1))
    assert seq([1, 2, 3], Path(".")) == (1, 2, 3) and pair((3, 5), Path(".")) == (3, 5)
    for kind, bad in ((seq, [1, 0]), (seq, [1]), (pair, (1, 0)), (pair, (1, 2, 3)), (pair, "ab")):
        with pytest.raises(Expected) as exc:
            kind(bad, Path("."))
        assert str(exc.value) == kind.expected   # not the item's "an integer >= 1"
    assert seq.expected == "a list or tuple of integer >= 1s (at least 2)"


def test_bounds_and_choices_are_checked_and_described():
    assert Float(lo=0.0, hi=1.0, hi_open=True).expected == "a number in [0.0, 1.0)"
    with pytest.raises(Expected):
        Float(lo=0.0, hi=1.0, hi_open=True)(1.0, Path("."))
    with pytest.raises(Expected):
        Int()(True, Path("."))   # a bool is not an integer here
    assert Str(("adam", "sgd"), lower=True, keep_case=True)("Adam", Path(".")) == "Adam"
    assert PathKind()("data/x", Path("/base")) == Path("/base/data/x")


def test_literals_are_read_never_run():
    assert literal("{(0,0,0): 0, (0,255,0): 1}") == {(0, 0, 0): 0, (0, 255, 0): 1}
    assert literal("0.5  ; a comment") == 0.5
    with pytest.raises(Expected, match="never run"):
        literal("__import__('os').system('true')")
    with pytest.raises(Expected, match='write strings in quotes, e.g. "adam"'):
        literal("adam")
    with pytest.raises(Expected, match="appears twice"):
        literal("{1: 0, 1: 1}")
    assert format_value((Path("/a"),)) == "('/a',)"
