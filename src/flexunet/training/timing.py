"""Where a training run's wall time goes: the epoch clock and its one-line summary."""

from __future__ import annotations

import logging
import time

import keras

log = logging.getLogger(__name__)


class EpochClock(keras.callbacks.Callback):
    """Where a run's wall time goes: training steps, validation, the other callbacks' epoch-end work
    (checkpoints, curves, epoch-change inference), before the first epoch and after the last.

    Put it first in the callback list: its ``on_epoch_end`` then runs before the others', so their
    work lands in ``epoch_end`` (the gap to the next epoch's start).  ``start`` is when the run's
    set-up began (``time.perf_counter()``); ``finish()`` closes the account when ``fit`` returns.
    """

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start
        self.seconds = {"before_first_epoch": 0.0, "train_steps": 0.0, "validation": 0.0, "epoch_end": 0.0,
                        "after_last_epoch": 0.0}
        self._begin = self._last_batch = self._end = None
        self.marks: dict[str, float] = {}  # when the end of the run reached each point (debug log)

    def mark(self, name: str) -> None:
        self.marks[name] = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.mark("train_end")

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self._end is None:
            self.seconds["before_first_epoch"] = now - self.start
        else:
            self.seconds["epoch_end"] += now - self._end
        self._begin = self._last_batch = now

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._last_batch = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._end = time.perf_counter()
        self.seconds["train_steps"] += self._last_batch - self._begin
        self.seconds["validation"] += self._end - self._last_batch

    def finish(self) -> dict[str, float]:
        """The account, once ``fit`` has returned: the rest since the last epoch's end is after_last_epoch."""
        now = time.perf_counter()
        if self._end is None:
            self.seconds["before_first_epoch"] = now - self.start
        else:
            self.seconds["after_last_epoch"] = now - self._end
            points = [("last epoch end", self._end), *sorted(self.marks.items(), key=lambda kv: kv[1]), ("done", now)]
            log.debug("after the last epoch: %s", ", ".join(f"{b[0]} +{b[1] - a[1]:.2f} s"
                                                             for a, b in zip(points, points[1:])))
        return {k: round(v, 3) for k, v in self.seconds.items()}


def timing_line(seconds: dict[str, float]) -> str:
    total = sum(seconds.values())
    outside = total - seconds["train_steps"]
    return (f"time: training steps {seconds['train_steps']:.1f} s, validation {seconds['validation']:.1f} s, "
            f"epoch-end work {seconds['epoch_end']:.1f} s, before the first epoch {seconds['before_first_epoch']:.1f} "
            f"s, after the last {seconds['after_last_epoch']:.1f} s: {outside:.1f} s of {total:.1f} s "
            f"({outside / max(total, 1e-9):.0%}) outside the training steps")
