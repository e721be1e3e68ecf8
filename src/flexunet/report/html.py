"""The report's HTML pieces: escaping, numbers with their JSON path, figures, tables, the style sheet,
and :class:`Build`, what the sections share while the page is built (figures folder, notes)."""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from flexunet.config.loader import Config
from flexunet.utils.io import write_bytes
from flexunet.report.data import RANKS

log = logging.getLogger("flexunet.report.build")


FIGURES = "figures"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def lookup(doc: Any, key: str) -> Any:
    """The value at a dotted path (list items by index): ``classes.ischemic.dice.mean``."""
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def value_cell(doc: Mapping[str, Any], key: str, digits: int = 3, attr: str = "data-key") -> str:
    """A table cell showing the value at ``key`` with its exact JSON value in ``data-value``."""
    value = lookup(doc, key)
    return (f'<td class="num" {attr}="{esc(key)}" data-value="{esc(json.dumps(value))}">'
            f"{fmt(value, digits)}</td>")


def figure_html(rel: str, caption: str, cls: str = "fig") -> str:
    src = esc(rel)
    return (f'<figure class="{cls}"><a href="{src}"><img src="{src}" alt="{esc(caption)}"></a>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def warning(text: str, element_id: str = "") -> str:
    """A paragraph that stands out: what makes the page's figures doubtful."""
    attr = f' id="{esc(element_id)}"' if element_id else ""
    return f'<p class="warning"{attr}><strong>Warning:</strong> {esc(text)}</p>'


def has(doc: Any, key: str) -> bool:
    try:
        lookup(doc, key)
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return True


def html_table(table_id: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v) if not isinstance(v, str) else esc(v)}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f'<table id="{table_id}" data-source="evaluation.json"><tr>{head}</tr>{body}</table>'


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:0 1.5em 3em;color:#1d232b;line-height:1.45}
h1{margin:.8em 0 .2em}h2{border-bottom:2px solid #d7dde4;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #d7dde4;padding:.25em .6em;text-align:left}th{background:#f1f4f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#5b6570;font-size:.92em}
.pooled{background:#fff7e0}.rule{background:#f6f8fa;border-left:4px solid #9aa7b4;padding:.4em .8em}
figure{display:inline-block;margin:.4em;vertical-align:top}figure img{max-width:100%;border:1px solid #d7dde4}
figure.fig img{max-width:560px}figure.wide img{max-width:1150px}figcaption{font-size:.85em;color:#5b6570}
.case{display:flex;flex-wrap:wrap;align-items:flex-start;gap:.3em;margin:.4em 0 1em}
.case figure img{width:180px;image-rendering:pixelated}.case .info{min-width:220px;font-size:.9em}
code{background:#f1f4f7;padding:0 .25em}
.warning{background:#fdecea;border-left:4px solid #c0392b;padding:.4em .8em}
"""


@dataclass
class Build:
    """What the sections share while the report is built in a temporary figures folder."""

    cfg: Config
    tmp: Path                        # the figures folder being built
    evaluation: dict[str, Any]
    eval_dir: Path
    progress: bool
    model: Any = None
    figures: list[str] = field(default_factory=list)   # paths relative to the figures folder
    notes: list[str] = field(default_factory=list)
    gallery: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {rank: [] for rank in RANKS})
    dataset: dict[str, Any] | None = None
    test_folders: tuple[Path, Path] | None = None      # (images, masks) the evaluation scored, None: [test]
    viewer: dict[str, Any] | None = None               # grouping kind and the slice names of each viewer
    stale: str | None = None                           # why the evaluation may not be the current model's
    # hooks for other sections: extra per-slice layers computed from the softmax (H, W, K) -> (H, W) in 0..1,
    # e.g. {"uncertainty": entropy}, and a text per group (patient volumes) shown beside the Dice table
    viewer_layers: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    viewer_notes: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path) -> str:
        """Register a written figure; return its path relative to the HTML."""
        rel = path.relative_to(self.tmp).as_posix()
        self.figures.append(rel)
        return f"{FIGURES}/{rel}"

    def copy(self, source: Path, rel: str) -> str:
        target = self.tmp / rel
        write_bytes(target, Path(source).read_bytes())
        return self.add(target)

    def note(self, text: str) -> str:
        self.notes.append(text)
        log.info("report: %s", text)
        return note(text)
