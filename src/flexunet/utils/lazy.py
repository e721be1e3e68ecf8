"""Third-party modules too slow to import at start-up, imported where first used.

Every command loads every stage module (``flexunet.cli.commands``), so a module whose import
takes a large share of a second (scipy.ndimage: about 0.4 s) is bound at the module top as a
:class:`LazyModule` and imported on its first attribute access: ``flexunet split`` never pays
for it.  TensorFlow and Keras stay behind the function-level imports of their own boundary
(flexunet.cli.main quiets them first).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for the module ``name``; the first attribute read imports it (thread-safe: Python's
    import lock), later reads go straight to it."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
