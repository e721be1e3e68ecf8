"""Matplotlib without pyplot: figures on the Agg canvas, written atomically as PNG.

No global pyplot state is touched, so plotting is safe from any thread or callback and
nothing needs closing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flexunet.utils.io import write_bytes


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib Figure of ``width`` x ``height`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save_figure(fig: Any, path: Path) -> Path:
    """Write the figure as PNG (atomically) and free it."""
    data = png_bytes(fig)
    fig.clear()
    write_bytes(path, data)
    return path
