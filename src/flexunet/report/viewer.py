"""The report's slice viewer: scroll a patient's test slices, toggle layers and classes.

One viewer per group of slices (a patient when the split's manifest knows it, else a
series, else runs of consecutive file names).  Everything is plain HTML/CSS/JS written
here and in ``assets/viewer.{js,css}``; nothing is fetched from the network.

How a slice travels, so that thousands of slices stay quick to open:

* the slice's image is a PNG file in the report's ``figures/viewer/<group>/`` folder,
  linked relatively and loaded only when the slider reaches it (and its neighbours);
* its masks are one small PNG embedded as a ``data:`` URI in the group's JSON block:
  red = ground-truth class index, green = predicted class index, blue = an optional
  extra layer (uncertainty, 0..255).  Masks compress to a few hundred bytes; they are
  decoded only when shown, and being ``data:`` URIs they can be read back from a canvas
  (a ``file://`` image cannot), which the per-class toggles need.

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies): classes orange, sky blue, bluish green, yellow, reddish purple; false
positives vermillion, false negatives blue.  Ground truth is drawn as a contour and the
prediction filled, so both can be shown at once.

Hooks for other sections: :class:`ViewerSlice` carries optional per-slice ``layers``
(float 0..1 arrays, e.g. ``{"uncertainty": u}``; the first one is drawn in blue of the
label PNG) and :func:`viewer_group_html` takes a per-group ``note`` (e.g. the patient's
volumes), shown beside the Dice table.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from flexunet.dataset.records import find_manifest, manifest_items
from flexunet.report.html import esc
from flexunet.utils.io import write_bytes

CHUNK = 64   # slices per viewer when nothing better groups them
OKABE_ITO_CLASSES = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#999999")
FALSE_POSITIVE = "#D55E00"   # vermillion
FALSE_NEGATIVE = "#0072B2"   # blue
UNCERTAINTY = "#FFFFFF"      # white, alpha = the layer's value


@dataclass(frozen=True)
class ViewerSlice:
    """One slice as the viewer shows it; all arrays at the same (H, W)."""

    name: str
    image: np.ndarray                       # (H, W) or (H, W, 3) uint8, as the model saw it
    truth: np.ndarray                       # (H, W) class indices
    pred: np.ndarray                        # (H, W) class indices
    dice: Mapping[str, float]               # per foreground class; NaN: absent from both masks
    layers: Mapping[str, np.ndarray] = field(default_factory=dict)   # extra layers, float 0..1


# --------------------------------------------------------------------------- grouping


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _manifest_groups(images_dir: Path) -> dict[str, tuple[str, str, float]]:
    """File name -> (group, kind, order) from the manifest of the split above ``images_dir``, if any."""
    items = manifest_items(find_manifest(Path(images_dir).resolve()), "slices grouped by name")
    if items is None:
        return {}
    try:
        out = {}
        for item in items:
            kind = item.get("group_kind")
            if kind in ("patient", "series") and item.get("group"):
                order = item.get("instance_number")
                out[Path(str(item["image"])).name] = (str(item["group"]), kind,
                                                      float(order) if order is not None else math.inf)
        return out
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}


def group_slices(names: Iterable[str], images_dir: Path | None = None,
                 chunk: int = CHUNK) -> tuple[str, dict[str, list[str]]]:
    """(kind, {group: names in slice order}) for the viewers.

    ``kind`` is ``"patient"`` or ``"series"`` when the manifest of the split above
    ``images_dir`` names every slice's group (slices then ordered by DICOM instance
    number, then name); ``"name"`` when the file names share prefixes ending in a slice
    number (``p07_012.png`` -> ``p07``); else ``"run"``: consecutive names, ``chunk`` each.
    """
    names = sorted(names, key=_natural)
    known = _manifest_groups(images_dir) if images_dir is not None else {}
    if names and all(n in known for n in names):
        groups: dict[str, list[str]] = {}
        for n in sorted(names, key=lambda n: (known[n][2], _natural(n))):
            groups.setdefault(known[n][0], []).append(n)
        kind = "patient" if {known[n][1] for n in names} == {"patient"} else "series"
        return kind, dict(sorted(groups.items(), key=lambda g: _natural(g[0])))
    prefixes = [re.sub(r"[_\-. ]*\d+$", "", Path(n).stem) for n in names]
    if names and all(prefixes) and len(set(prefixes)) < len(names):
        groups = {}
        for n, p in zip(names, prefixes):
            groups.setdefault(p, []).append(n)
        return "name", groups
    runs = [names[i:i + chunk] for i in range(0, len(names), chunk)]
    return "run", {f"{r[0]} .. {r[-1]}" if len(r) > 1 else r[0]: r for r in runs}


# --------------------------------------------------------------------------- encoding


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def label_png(truth: np.ndarray, pred: np.ndarray, layer: np.ndarray | None = None) -> bytes:
    """The masks of a slice as one RGB PNG: red = truth, green = prediction, blue = layer * 255."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 2:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape}: expected the same (H, W)")
    blue = np.zeros(truth.shape, np.uint8)
    if layer is not None:
        blue = np.round(np.clip(np.nan_to_num(np.asarray(layer, np.float64)), 0, 1) * 255).astype(np.uint8)
    return _png(np.stack([truth.astype(np.uint8), pred.astype(np.uint8), blue], -1))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image_png(image: np.ndarray) -> bytes:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] >= 3:
        image = image[..., :3]
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]):
            image = image[..., 0]          # grey: a third of the bytes
    return _png(image.astype(np.uint8))


def class_colours(n_foreground: int) -> list[str]:
    """Okabe-Ito colours for foreground classes 1..n (repeating past six)."""
    return [OKABE_ITO_CLASSES[i % len(OKABE_ITO_CLASSES)] for i in range(n_foreground)]


# --------------------------------------------------------------------------- html


def _json_block(doc: Any, cls: str) -> str:
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" class="{cls}">{text}</script>'


def viewer_group_html(index: int, title: str, slices: Sequence[ViewerSlice], class_names: Sequence[str],
                      folder: Path, rel: str, note: str | None = None) -> str:
    """Write the group's images under ``folder`` (linked as ``rel``) and return its viewer's HTML.

    ``index`` numbers the viewer on the page (ids); ``note`` is shown beside the Dice table.
    """
    foreground = list(class_names[1:])
    layer_names = sorted({k for s in slices for k in s.layers})
    extra = layer_names[0] if layer_names else None
    items = []
    for k, s in enumerate(slices):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(s.name).stem)
        path = Path(folder) / f"{k:04d}_{stem}.png"
        write_bytes(path, _image_png(s.image))
        layer = s.layers.get(extra) if extra else None
        items.append({"name": s.name, "img": f"{rel}/{path.name}",
                      "lab": data_uri(label_png(s.truth, s.pred, layer)),
                      "dice": {n: (None if math.isnan(float(s.dice.get(n, math.nan))) else float(s.dice[n]))
                               for n in foreground}})
    vid = f"fv{index}"
    h, w = np.asarray(slices[0].truth).shape
    classes = "".join(
        f'<label><input type="checkbox" class="fv-class" data-class="{k}" checked> '
        f'<span class="fv-swatch" style="background:{c}"></span>{esc(n)}</label>'
        for k, (n, c) in enumerate(zip(foreground, class_colours(len(foreground))), start=1))
    dice_rows = "".join(f'<tr><th scope="row">{esc(n)}</th><td class="num fv-dice" data-class="{esc(n)}" '
                        f'data-value="null">n/a</td></tr>' for n in foreground)
    extra_toggle = (f'<label><input type="checkbox" class="fv-layer" data-layer="extra"> {esc(extra)}</label>'
                    if extra else "")
    note_html = f'<p class="fv-note">{esc(note)}</p>' if note else ""
    return f"""
<div class="fv-viewer" role="group" id="{vid}" data-group="{esc(title)}" data-count="{len(slices)}"
 data-width="{w}" data-height="{h}" aria-label="slices of {esc(title)}">
<h3>{esc(title)} <small>({len(slices)} slice{'s' if len(slices) != 1 else ''})</small></h3>
<div class="fv-body">
<div class="fv-stage" tabindex="0" role="img" aria-label="slice view of {esc(title)}: arrow keys, Page Up/Down,
 Home/End or the mouse wheel change the slice">
<img class="fv-image" alt="" width="{w}" height="{h}"><canvas class="fv-overlay" width="{w}" height="{h}"></canvas>
</div>
<div class="fv-side">
<div class="fv-nav">
<button type="button" class="fv-prev" aria-label="previous slice">&#9650;</button>
<label for="{vid}-slider">slice</label>
<input type="range" id="{vid}-slider" class="fv-slider" min="1" max="{len(slices)}" value="1" step="1">
<button type="button" class="fv-next" aria-label="next slice">&#9660;</button>
</div>
<p><output class="fv-index" for="{vid}-slider" aria-live="polite">1 / {len(slices)}</output>
<span class="fv-name"></span></p>
<fieldset><legend>layers</legend>
<label><input type="checkbox" class="fv-layer" data-layer="truth" checked> ground truth (contour)</label>
<label><input type="checkbox" class="fv-layer" data-layer="pred" checked> prediction (filled)</label>
<label><input type="checkbox" class="fv-layer" data-layer="diff"> difference (false positive / negative)</label>
{extra_toggle}
</fieldset>
<fieldset><legend>classes</legend>{classes}</fieldset>
<label for="{vid}-opacity">overlay opacity</label>
<input type="range" id="{vid}-opacity" class="fv-opacity" min="0" max="100" value="60" step="5">
<table class="fv-dice-table"><caption>Dice of this slice</caption>{dice_rows}</table>
{note_html}
</div>
</div>
{_json_block(items, "fv-data")}
</div>"""


def _asset(name: str) -> str:
    return resources.files("flexunet").joinpath(f"assets/{name}").read_text(encoding="utf-8")


def legend_html(class_names: Sequence[str], extra: str | None = None) -> str:
    """The colours used by every viewer (Okabe-Ito, safe for colour-blind readers)."""
    foreground = list(class_names[1:])
    items = [(c, f"{n}: prediction filled, ground truth as contour")
             for n, c in zip(foreground, class_colours(len(foreground)))]
    items += [(FALSE_POSITIVE, "false positive (predicted, not in the ground truth)"),
              (FALSE_NEGATIVE, "false negative (in the ground truth, not predicted)")]
    if extra:
        items.append((UNCERTAINTY, f"{extra} (brighter: higher)"))
    spans = "".join(f'<li><span class="fv-swatch" style="background:{c}"></span>{esc(t)}</li>' for c, t in items)
    return f'<ul class="fv-legend" aria-label="viewer colours">{spans}</ul>'


def viewer_page_parts(groups_html: Sequence[str], class_names: Sequence[str], extra: str | None = None) -> str:
    """The viewers of a page with their legend, palette, CSS and script (include once per page)."""
    foreground = list(class_names[1:])
    palette = {"classes": ["#000000", *class_colours(len(foreground))], "fp": FALSE_POSITIVE,
               "fn": FALSE_NEGATIVE, "extra": UNCERTAINTY}
    return (f"<style>{_asset('viewer.css')}</style>{legend_html(class_names, extra)}"
            f'{"".join(groups_html)}{_json_block(palette, "fv-palette")}<script>{_asset("viewer.js")}</script>')

