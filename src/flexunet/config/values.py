"""The value checking under the config dialect: kinds, literals and how a value is written back.

A :class:`Kind` says what a key accepts (a description for messages and a converter);
``Int``, ``Float``, ``Str``, ``PathKind``, ``Seq`` and the others build them, and
:func:`opt` declares a settings field with its default, kind and one-line doc.
:func:`literal` reads a value through :func:`ast.literal_eval` only: nothing in a
config is ever executed.  A kind or the literal reader raises :class:`Expected` with
what was expected; the reader (``flexunet.config.loader``) turns it into a ConfigError that
names the file, line, section and key.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

class Expected(Exception):
    """Raised by a kind: the value is not what the key expects."""


@dataclass(frozen=True)
class Kind:
    """What a key accepts: a description for messages and a converter."""

    expected: str
    convert: Callable[[Any, Path], Any]

    def __call__(self, value: Any, base: Path) -> Any:
        return self.convert(value, base)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bounds_text(lo: Any, hi: Any, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def Int(lo: int | None = None, hi: int | None = None) -> Kind:
    expected = "an integer" + _bounds_text(lo, hi)

    def convert(v: Any, base: Path) -> int:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise Expected(expected)
        return v

    return Kind(expected, convert)


def Float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
          hi_open: bool = False) -> Kind:
    expected = "a number" + _bounds_text(lo, hi, lo_open, hi_open)

    def convert(v: Any, base: Path) -> float:
        if not _is_number(v) or v != v:
            raise Expected(expected)
        v = float(v)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise Expected(expected)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise Expected(expected)
        return v

    return Kind(expected, convert)


def Bool() -> Kind:
    def convert(v: Any, base: Path) -> bool:
        if not isinstance(v, bool):
            raise Expected("True or False")
        return v

    return Kind("True or False", convert)


def Str(choices: Iterable[str] | None = None, lower: bool = False, keep_case: bool = False) -> Kind:
    """A string; ``lower`` matches choices case-insensitively (``keep_case`` keeps it as written)."""
    options = tuple(choices) if choices is not None else None
    expected = ("one of " + ", ".join(f'"{c}"' for c in options)) if options else "a quoted string"

    def convert(v: Any, base: Path) -> str:
        if not isinstance(v, str):
            raise Expected(expected)
        key = v.lower() if lower else v
        if options is not None and key not in options:
            raise Expected(expected)
        return v if keep_case else key

    return Kind(expected, convert)


def PathKind() -> Kind:
    """A path string; relative paths resolve against ``base`` (the config's folder)."""

    def convert(v: Any, base: Path) -> Path:
        if not isinstance(v, str) or not v.strip():
            raise Expected("a quoted path")
        p = Path(os.path.expanduser(v.strip()))
        return Path(os.path.normpath(p if p.is_absolute() else base / p))

    return Kind("a quoted path", convert)


def Optional(kind: Kind) -> Kind:
    def convert(v: Any, base: Path) -> Any:
        return None if v is None else kind(v, base)

    return Kind(f"None or {kind.expected}", convert)


def Auto(kind: Kind) -> Kind:
    """``kind``, or the string "auto" (the value is then chosen by measurement at run time)."""
    expected = f'"auto" or {kind.expected}'

    def convert(v: Any, base: Path) -> Any:
        if isinstance(v, str) and v.lower() == "auto":
            return "auto"
        try:
            return kind(v, base)
        except Expected:
            raise Expected(expected) from None

    return Kind(expected, convert)


def _each(item: Kind, values: list | tuple, base: Path, expected: str) -> tuple:
    """Every value through ``item``; one bad value fails the whole with the container's ``expected``."""
    try:
        return tuple(item(x, base) for x in values)
    except Expected:
        raise Expected(expected) from None


def Seq(item: Kind, min_len: int = 0) -> Kind:
    expected = f"a list or tuple of {item.expected.removeprefix('a ').removeprefix('an ')}s"
    if min_len:
        expected += f" (at least {min_len})"

    def convert(v: Any, base: Path) -> tuple:
        if not isinstance(v, (list, tuple)) or len(v) < min_len:
            raise Expected(expected)
        return _each(item, v, base, expected)

    return Kind(expected, convert)


def Pair(item: Kind) -> Kind:
    expected = f"a pair ({item.expected}, {item.expected})"

    def convert(v: Any, base: Path) -> tuple:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise Expected(expected)
        return _each(item, v, base, expected)

    return Kind(expected, convert)


def RgbMap() -> Kind:
    expected = "a dict {(r,g,b): class_index} with 0..255 colour components"

    def convert(v: Any, base: Path) -> dict:
        if not isinstance(v, dict) or not v:
            raise Expected(expected)
        out: dict[tuple[int, int, int], int] = {}
        for colour, index in v.items():
            if (not isinstance(colour, tuple) or len(colour) != 3
                    or not all(_is_int(c) and 0 <= c <= 255 for c in colour)
                    or not _is_int(index) or index < 0):
                raise Expected(expected)
            out[colour] = index
        return out

    return Kind(expected, convert)


def ClassWeights() -> Kind:
    return Optional(Seq(Float(lo=0.0), min_len=1))


# --------------------------------------------------------------------------- fields


def opt(default: Any, kind: Kind, doc: str = "", aliases: tuple[str, ...] = ()) -> Any:
    """Declare a config key: its default, its kind, a one-line doc and accepted aliases."""
    return field(default=default, metadata={"kind": kind, "doc": doc, "aliases": aliases})


POS_INT = Int(lo=1)
NONNEG_INT = Int(lo=0)
POS_FLOAT = Float(lo=0.0, lo_open=True)
OPT_PATH = Optional(PathKind())


# --------------------------------------------------------------------------- literals


_INLINE_COMMENT = re.compile(r"\s+[;#][^'\"]*$")
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError)


def literal(raw: str) -> Any:
    """A Python literal, or Expected; never evaluates anything else."""
    for text in (raw, _INLINE_COMMENT.sub("", raw)):
        try:
            tree = ast.parse(text, mode="eval")
            value = ast.literal_eval(tree)
        except _LITERAL_ERRORS:
            continue
        _check_dict_keys(tree)
        return value
    if raw.isidentifier() and raw not in ("True", "False", "None"):
        raise Expected(f'a Python literal; write strings in quotes, e.g. "{raw}"')
    if not raw:
        raise Expected("a value after '='")
    raise Expected("a Python literal (quoted string, number, True/False, None, tuple, list or dict); "
                    "expressions and calls are never run")


def _check_dict_keys(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            seen = set()
            for k in node.keys:
                if k is None:
                    continue
                key = ast.literal_eval(k)
                try:
                    if key in seen:
                        raise Expected(f"each dict key once; {key!r} appears twice")
                    seen.add(key)
                except TypeError:  # unhashable key: literal_eval already refused it
                    pass


def format_value(value: Any) -> str:
    """A value as the dialect writes it (paths as quoted strings, 1-tuples with their comma)."""
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


