"""The dataset records stages pass to each other: ``manifest.json`` (prepare) and ``split.json`` (split).

One owner for their names, schema versions, reading, writing and location:

    <[prepare] output_dir>/manifest.json|csv            the master dataset, a row per slice
    <[split] output_dir>/<[split] name>/split.json      subsets, seed, the manifest's SHA-256
    <split>/<subset>/images/<id>.png                    the layout a split folder is found from

A split folder is found from the config (``[split] output_dir`` and ``name``) when the images
lie inside it, else from the layout above a subset's ``images/`` folder (configs written for
the original name only the subset folders).  The manifest behind a split is the one in its
``master_dir``.  Readers that only enrich an output (pixel spacing, viewer groups) treat an
unreadable record as absent; readers a stage depends on raise a one-line DataError.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from flexunet.config.inputs import configured_split_dir  # noqa: F401  (the split dataset's location)
from flexunet.config.loader import Config
from flexunet.utils.errors import DataError
from flexunet.utils.io import csv_text, write_json, write_text

log = logging.getLogger(__name__)

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
MANIFEST_VERSION = 1
SPLIT_JSON = "split.json"
RECORD_NAMES = (MANIFEST_JSON, SPLIT_JSON)


# --------------------------------------------------------------------------- shared fields


def rgb_map_list(rgb_map: Mapping[tuple[int, int, int], int]) -> list[list[Any]]:
    """``[[[r, g, b], index], ...]`` by index: how both records store the colours."""
    return [[list(colour), index] for colour, index in sorted(rgb_map.items(), key=lambda kv: kv[1])]


def rgb_map_from_list(entries: Any, path: Path) -> dict[tuple[int, int, int], int]:
    """The inverse of :func:`rgb_map_list`; a DataError naming ``path`` when it is not that shape."""
    try:
        return {tuple(int(v) for v in colour): int(index) for colour, index in entries}
    except (TypeError, ValueError):
        raise DataError(f"{path}: rgb_map is not a list of [[r, g, b], index]; expected the "
                        f"{path.name} written by flexunet") from None


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- manifest.json


def write_manifest(folder: Path, rows: list[dict[str, Any]], header: dict[str, Any],
                   class_names: Sequence[str]) -> None:
    """``manifest.json`` (``header`` + ``items``) and ``manifest.csv`` (a row per slice) in ``folder``."""
    write_json(folder / MANIFEST_JSON, {**header, "items": rows})
    header_row = (["id", "image", "mask", "source_image", "source_mask", "group", "group_kind", "patient_id",
                   "series_uid", "classes"] + [f"pixels_{name}" for name in class_names]
                  + ["spacing_row_mm", "spacing_col_mm", "original_height", "original_width"])
    write_text(folder / MANIFEST_CSV, csv_text(header_row, (
        [r["id"], r["image"], r["mask"], r["source_image"], r["source_mask"], r["group"], r["group_kind"],
         r["patient_id"] or "", r["series_uid"] or "", ";".join(class_names[c] for c in r["classes"])]
        + r["pixels"] + list(r["pixel_spacing"] or ["", ""]) + r["original_size"] for r in rows)))


def read_manifest(path: Path) -> tuple[dict[str, Any], str]:
    """(document, SHA-256 of the file) of a manifest.json; a DataError unless it lists rows with
    id, image and mask in a schema version this FlexUNet reads."""
    data = Path(path).read_bytes()
    try:
        doc = json.loads(data)
        rows = doc["items"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r and "image" in r
                                                 and "mask" in r for r in rows):
            raise ValueError("items are not rows with id, image and mask")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a FlexUNet manifest ({exc}); expected the manifest.json "
                        f"written by `flexunet prepare` — re-run prepare") from None
    version = doc.get("version", MANIFEST_VERSION)
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise DataError(f"{path}: manifest version {version!r}; expected {MANIFEST_VERSION} or lower (written by "
                        f"a newer FlexUNet) — re-run `flexunet prepare` with this one")
    return doc, hashlib.sha256(data).hexdigest()


def manifest_items(path: Path | None, without: str = "left out") -> list[dict[str, Any]] | None:
    """The rows of a manifest.json, or None when it is missing or unreadable (a warning ending in
    ``without``: what the caller does without it)."""
    if path is None:
        return None
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))["items"]
        if not isinstance(items, list):
            raise TypeError("items is not a list")
        return items
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); %s", path, exc, without)
        return None


# --------------------------------------------------------------------------- split.json


def write_split(folder: Path, doc: Mapping[str, Any]) -> Path:
    """``folder/split.json``; returns its path."""
    path = folder / SPLIT_JSON
    write_json(path, dict(doc))
    return path


def read_split(path: Path) -> dict[str, Any]:
    """A split.json as a dict; a DataError when it is not a JSON object."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as JSON ({exc}); expected the split.json written by "
                        f"`flexunet split` — re-run the split stage") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: not a JSON object; expected the split.json written by `flexunet split`")
    return doc


def find_split(images_dir: Path | None, cfg: Config | None = None) -> Path | None:
    """The split.json a folder of images belongs to, or None.

    1. the config's split folder (:func:`configured_split_dir`), when ``images_dir`` lies in it;
    2. the layout: ``<split>/<subset>/images`` (the split two levels up), else ``<split>/images``.
    """
    if images_dir is None:
        return None
    images_dir = Path(images_dir)
    configured = configured_split_dir(cfg) if cfg is not None else None
    if configured is not None and (configured / SPLIT_JSON).is_file():
        try:
            images_dir.resolve().relative_to(configured.resolve())
            return configured / SPLIT_JSON
        except ValueError:
            pass
    for folder in (images_dir.parent.parent, images_dir.parent):
        if (folder / SPLIT_JSON).is_file():
            return folder / SPLIT_JSON
    return None


def split_subset_stems(path: Path, subset: str) -> set[str] | None:
    """Stems of the files ``subset`` lists in a split.json (``{"subsets": {"train": {"files": [...]}}}``;
    a plain ``{"train": [...]}`` works too); None, with a warning, when it lists none."""
    data = read_split(path)
    entry = data.get("subsets", data).get(subset)
    files = entry.get("files") if isinstance(entry, dict) else entry
    if isinstance(files, list):
        return {_entry_stem(e) for e in files}
    log.warning("%s: no '%s' file list found; telling originals by name instead", path, subset)
    return None


def _entry_stem(entry: object) -> str:
    if isinstance(entry, dict):
        entry = entry.get("image") or entry.get("name") or entry.get("stem") or ""
    return Path(str(entry)).stem


def find_manifest(images_dir: Path, cfg: Config | None = None) -> Path | None:
    """The prepare manifest behind a folder of images: ``<master>/images``, or the master of its split.

    An unreadable split.json is a warning and None: callers use the manifest to enrich outputs.
    """
    direct = Path(images_dir).parent / MANIFEST_JSON
    if direct.is_file():
        return direct
    split = find_split(images_dir, cfg)
    if split is None:
        return None
    try:
        master = read_split(split).get("master_dir")
    except DataError as exc:
        log.warning("%s", exc)
        return None
    if master and (Path(master) / MANIFEST_JSON).is_file():
        return Path(master) / MANIFEST_JSON
    return None


def slice_groups(manifest: Path | None, names: Sequence[str]) -> tuple[str, list[str]] | None:
    """(unit, the group of each name) from a manifest.json: the unit is ``"patients"`` when every
    named slice's row (matched by file stem = id) has a patient group, ``"series"`` when some have only
    a series; None when the manifest is missing or unreadable or a slice has neither."""
    items = manifest_items(manifest, "intervals over slices")
    if items is None:
        return None
    try:
        rows = {str(r["id"]): (r.get("group"), r.get("group_kind")) for r in items}
    except (KeyError, TypeError, AttributeError):
        log.warning("%s: rows without an id; intervals over slices", manifest)
        return None
    found = [rows.get(Path(n).stem, (None, None)) for n in names]
    if not names or any(not group or kind not in ("patient", "series") for group, kind in found):
        return None
    unit = "patients" if all(kind == "patient" for _, kind in found) else "series"
    return unit, [str(group) for group, _ in found]


def prepared_record(dataset: Path) -> dict[str, Any]:
    """What split and prepare recorded about a split dataset folder: ``class_names`` (split.json) and, from
    its master's manifest.json, ``source``, ``window``, ``size`` and ``image_resize``; empty where nothing
    is recorded (a warning when a record is unreadable: callers only use it to name and describe)."""
    split = Path(dataset) / SPLIT_JSON
    if not split.is_file():
        return {}
    try:
        doc = read_split(split)
        out: dict[str, Any] = {"class_names": doc.get("class_names")}
        master = doc.get("master_dir")
        if master and (Path(master) / MANIFEST_JSON).is_file():
            header, _ = read_manifest(Path(master) / MANIFEST_JSON)
            out.update({k: header.get(k) for k in ("source", "window", "size", "image_resize")})
        return out
    except DataError as exc:
        log.warning("%s", exc)
        return {}

