"""A dependency-free progress bar for anything a person waits for (stderr, TTY-aware)."""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Progress:
    """``for x in Progress(items, "prepare"): ...`` draws ``prepare  42/100 [=====>   ] 3.1 it/s``.

    On a terminal the bar redraws in place after every item and ends with a newline; elsewhere
    (CI, logs) it prints a line each time another fifth of the items is done (at 20%, 40%, ...,
    100%: at most five lines, the last at the end) so logs stay short, and nothing when the
    total is unknown.  ``enabled=False`` silences it.
    """

    def __init__(self, items: Iterable[T], label: str, total: int | None = None,
                 enabled: bool = True, unit: str = "it") -> None:
        self.items = items
        self.label = label
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        self.enabled = enabled
        self.unit = unit
        self.count = 0
        self.start = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._last_fifth = 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def __iter__(self) -> Iterator[T]:
        self.start = time.perf_counter()
        for item in self.items:
            yield item
            self.update()
        self.close()

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        if self._tty:
            sys.stderr.write("\r" + self._line())
            sys.stderr.flush()
        elif self.total:
            fifth = min(5, (5 * self.count) // self.total)
            if fifth > self._last_fifth:
                self._last_fifth = fifth
                sys.stderr.write(self._line() + "\n")

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\r" + self._line() + "\n")
            sys.stderr.flush()

    def _line(self) -> str:
        rate = f"{self.rate:.1f} {self.unit}/s"
        if not self.total:
            return f"{self.label} {self.count} {rate}"
        width = 24
        done = int(width * self.count / self.total)
        bar = "=" * done + (">" if done < width else "") + " " * max(0, width - done - 1)
        return f"{self.label} {self.count:>{len(str(self.total))}}/{self.total} [{bar}] {rate}"
