"""The dialect's text: INI sections of raw values (line numbers kept), ``--set`` overrides, and the keys
each settings class accepts, for :mod:`flexunet.config.loader` to check and build.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from flexunet.config.values import Expected, literal
from flexunet.utils.errors import ConfigError


@dataclass(frozen=True)
class Raw:
    text: str
    line: int | None
    source: str
    base: Path


_DELIM = re.compile(r"[=:]")


def read_ini(text: str, source: str, base: Path) -> tuple[dict[str, dict[str, Raw]], dict[str, int]]:
    """Split INI text into sections of raw values, keeping line numbers."""
    sections: dict[str, dict[str, Raw]] = {}
    section_lines: dict[str, int] = {}
    current: str | None = None
    key: str | None = None
    key_line = 0
    chunks: list[str] = []

    def flush() -> None:
        nonlocal key
        if key is not None and current is not None:
            sections[current][key] = Raw("\n".join(chunks).strip(), key_line, source, base)
        key = None

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped[0] in ";#":
            continue
        if line[0].isspace() and key is not None:
            chunks.append(stripped)  # continuation of a multi-line value
            continue
        flush()
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise ConfigError(f"{source}:{lineno}: expected a section header like [model], got {stripped!r}")
            current = stripped[1:-1].strip().lower()
            if current in sections:
                raise ConfigError(f"{source}:{lineno} [{current}]: section appears twice "
                                  f"(first at line {section_lines[current]}); expected each section once")
            sections[current] = {}
            section_lines[current] = lineno
            continue
        match = _DELIM.search(stripped)
        if match is None or not stripped[:match.start()].strip():
            raise ConfigError(f"{source}:{lineno}: expected 'key = value', a [section] header "
                              f"or a ; comment, got {stripped!r}")
        if current is None:
            raise ConfigError(f"{source}:{lineno}: '{stripped}' comes before any [section]; "
                              f"expected a section header such as [model] first")
        key = stripped[:match.start()].strip().lower()
        if key in sections[current]:
            raise ConfigError(f"{source}:{lineno} [{current}] {key}: key appears twice "
                              f"(first at line {sections[current][key].line}); expected each key once")
        key_line = lineno
        chunks = [stripped[match.end():].strip()]
    flush()
    return sections, section_lines


def section_keys(cls: type) -> dict[str, str]:
    """Accepted key -> field name, aliases included."""
    keys: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        keys[f.name] = f.name
        for alias in f.metadata.get("aliases", ()):
            keys[alias] = f.name
    return keys


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def split_override(item: str) -> tuple[str, str, str]:
    name, sep, value = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        shown = " ".join(item.splitlines())
        raise ConfigError(f"--set {shown}: expected section.key=value, e.g. --set train.epochs=3")
    section, key, value = section.strip().lower(), key.strip().lower(), value.strip()
    try:
        literal(value)
    except Expected:
        value = repr(value)  # a bare word or path on the command line is a string
    return section, key, value
