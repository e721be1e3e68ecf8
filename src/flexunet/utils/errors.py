"""Errors a user can act on.

Every error that comes from bad input (a config value, a missing file, a mask with
foreign colours) is a :class:`FlexUNetError`.  The CLI prints its message as one line
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FlexUNetError(Exception):
    """A user error: the message says what is wrong and what was expected."""

    exit_code = 2


class ConfigError(FlexUNetError):
    """A config file, or a --set override, that cannot be used as written."""


class DataError(FlexUNetError):
    """An image, mask or DICOM file that cannot be used as written."""


class MaskError(DataError):
    """A mask whose colours are not in the rgb_map (beyond the tolerance)."""


class TrainingStopped(FlexUNetError):
    """Training ended on purpose or on a numerical failure (NaN loss...)."""


class Interrupted(TrainingStopped):
    """Ctrl-C (SIGINT) during training: the last completed epoch is saved; exit status 130."""

    exit_code = 130
