"""A dataset's fingerprint: the facts ``flexunet plan`` chooses a config from.

``fingerprint_dataset(DATASET)`` reads ``train/ valid/ test/`` (each with ``images/`` and
``masks/``, the layout ``flexunet split`` writes) and returns image sizes and channels
(grey when R = G = B), the mask format and classes, intensity statistics overall and inside
each class, per-class pixel share, lesion component sizes, slices with and without each
class, the size of every subset; and what split and prepare recorded (``prepared``: class names,
the source of the slices, their HU window and size).

The mask format comes from evidence.  Masks that are all single-channel (grey) or palette
PNGs whose values lie in 0..K-1 for a small K (at most MAX_CLASSES) hold class indices, as
nnU-Net's raw masks ("index").  Otherwise mask colours are classes ("rgb"), placed as
:mod:`flexunet.planning.colours` says.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flexunet.config.colours import default_rgb_map
from flexunet.dataset.masks import palette_colours
from flexunet.dataset.records import prepared_record
from flexunet.planning.colours import (MAX_CLASSES, SHAPE_FILES, class_names_for, colour_code, colour_name,
                                       fringe_judge, pack_rgb, place_colours, read_rgb)
from flexunet.utils.errors import DataError
from flexunet.utils.io import open_image, pair_by_name, to_rgb_array
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

log = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
MERGED_SHOWN = 12                # merged colours named one a line (console and config); the rest summed up


# --------------------------------------------------------------------------- the dataset's files


def dataset_pairs(dataset: Path) -> dict[str, list[tuple[Path, Path]]]:
    """(image, mask) pairs of train/valid/test under ``dataset``; a missing folder is one line."""
    out = {}
    for subset in SUBSETS:
        images, masks = dataset / subset / "images", dataset / subset / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found; expected DATASET/{{train,valid,test}}/"
                                f"{{images,masks}} as `flexunet split` writes")
        pairs = pair_by_name(images, masks, (".png",))
        if not pairs:
            raise DataError(f"{images}: no image/mask pairs (masks are PNG files of the same name)")
        out[subset] = pairs
    return out


_SINGLE_CHANNEL = ("L", "1", "I;16", "I;16B", "I;16L", "I", "P")


def _read_mask_file(path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(PIL mode, RGB as shown, pixel values) of a mask; the values of a grey or palette PNG (or of an RGB one
    whose channels are equal), None for a colour mask."""
    img = open_image(path)
    rgb = to_rgb_array(img, 3)
    if img.mode in _SINGLE_CHANNEL:
        values = np.asarray(img)
        return img.mode, rgb, values.astype(np.uint8) if values.dtype == bool else values
    grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return img.mode, rgb, rgb[..., 0] if grey else None


# --------------------------------------------------------------------------- the fingerprint


@dataclass
class _Tally:
    """Pixels per mask colour over the dataset, the first masks holding each, the bytes on disk; and for
    the format: pixels per value of single-channel masks, PIL modes, masks holding colour."""

    colour_counts: dict[int, int] = field(default_factory=dict)
    first_file: dict[int, Path] = field(default_factory=dict)
    bytes: int = 0
    files: dict[int, list[Path]] = field(default_factory=dict)       # up to SHAPE_FILES masks per colour
    value_counts: dict[int, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    colour_masks: int = 0


def _scan_masks(pairs: dict[str, list[tuple[Path, Path]]]) -> _Tally:
    tally = _Tally()
    for subset_pairs in pairs.values():
        for image_path, mask_path in subset_pairs:
            mode, rgb, values = _read_mask_file(mask_path)
            tally.modes[mode] = tally.modes.get(mode, 0) + 1
            codes, counts = np.unique(pack_rgb(rgb), return_counts=True)
            for code, n in zip(codes.tolist(), counts.tolist()):
                tally.colour_counts[code] = tally.colour_counts.get(code, 0) + n
                tally.first_file.setdefault(code, mask_path)
                held = tally.files.setdefault(code, [])
                if len(held) < SHAPE_FILES:
                    held.append(mask_path)
            if values is None:
                tally.colour_masks += 1
            else:
                uniq, counts = np.unique(values, return_counts=True)
                for v, n in zip(uniq.tolist(), counts.tolist()):
                    tally.value_counts[int(v)] = tally.value_counts.get(int(v), 0) + n
            tally.bytes += image_path.stat().st_size + mask_path.stat().st_size
    return tally


def index_evidence(tally: _Tally) -> str | None:
    """Why the masks hold class indices, or None: every mask single-channel (grey) or palette (or RGB with
    R = G = B), its values 0..K-1 for 2 <= K <= MAX_CLASSES (a value missing below K-1 is a class no
    mask holds: the text says so)."""
    if tally.colour_masks or not tally.value_counts:
        return None
    values = sorted(tally.value_counts)
    if values[0] < 0 or values[-1] < 1 or values[-1] >= MAX_CLASSES:
        return None
    k = values[-1] + 1
    kinds = {"L": "grey", "1": "1-bit", "P": "palette", "I": "32-bit grey", "RGB": "RGB with R = G = B",
             "RGBA": "RGBA with R = G = B"}
    modes = ", ".join(f"{n} {kinds.get(m, '16-bit grey' if m.startswith('I;16') else m)} ({m})"
                      for m, n in sorted(tally.modes.items()))
    counts = ", ".join(f"{v}: {tally.value_counts.get(v, 0)} px" for v in range(k))
    absent = [v for v in range(k) if v not in tally.value_counts]
    text = (f"every mask is a single-channel or palette PNG ({modes}) whose pixel values are 0..{k - 1} "
            f"({counts}): class indices, as nnU-Net's raw masks")
    if absent:
        text += f"; no mask holds value {', '.join(map(str, absent))}"
    return text


def _describe_hist(hist: np.ndarray) -> dict[str, Any]:
    n = int(hist.sum())
    if n == 0:
        return {"pixels": 0}
    values = np.arange(hist.size, dtype=float)
    mean = float((hist * values).sum() / n)
    sd = math.sqrt(float((hist * (values - mean) ** 2).sum() / n))
    cdf = np.cumsum(hist) / n
    pct = {f"p{p}": int(np.searchsorted(cdf, p / 100.0)) for p in (1, 50, 99)}
    return {"pixels": n, "mean": round(mean, 2), "sd": round(sd, 2), **pct}


def _components(index: np.ndarray, k: int) -> list[int]:
    pieces, n = ndimage.label(index == k, np.ones((3, 3), bool))
    return np.bincount(pieces.ravel())[1:].tolist() if n else []


def _mask_format(tally: _Tally, classes: Sequence[str] | None,
                 recorded: Sequence[str] | None = None) -> dict[str, Any]:
    """The masks' format and classes: {"format", "evidence", "colours", "names", "strays", "merged"}.
    Class-index masks take the names split recorded (``recorded``) when there is one per class and no
    ``classes`` are given."""
    evidence = index_evidence(tally)
    if evidence is not None:
        k = max(tally.value_counts) + 1
        colours = [tuple(int(v) for v in c) for c in palette_colours(default_rgb_map(k))]
        names = (list(recorded) if not classes and recorded and len(recorded) == k
                 else class_names_for(colours, classes, index=True))
        return {"format": "index", "evidence": evidence, "colours": colours, "names": names, "strays": {},
                "merged": []}
    colours, strays, why = place_colours(tally.colour_counts, tally.first_file, fringe_judge(tally.files))
    names = class_names_for(colours, classes)
    palette = np.array(colours, np.int64)
    merged = []
    for colour, n in sorted(strays.items(), key=lambda kv: (-kv[1], kv[0])):
        into = int(np.sqrt(((palette - np.array(colour)) ** 2).sum(1)).argmin())   # as map_unmapped maps it
        merged.append({"colour": list(colour), "pixels": n, "into": names[into],
                       "file": str(tally.first_file[colour_code(colour)]), "why": why[colour]})
    for m in merged[:MERGED_SHOWN]:
        log.warning("plan: mask colour %s (%d px, e.g. %s) is merged into class %s: %s", tuple(m["colour"]),
                    m["pixels"], m["file"], m["into"], m["why"])
    if len(merged) > MERGED_SHOWN:
        rest = merged[MERGED_SHOWN:]
        log.warning("plan: %d more mask colours (%d px) are merged into their nearest class", len(rest),
                    sum(m["pixels"] for m in rest))
    evidence = (f"{len(colours)} mask colours, black the background"
                + (f"; {len(tally.value_counts)} grey or palette values, not 0..K-1 with K <= {MAX_CLASSES}"
                   if not tally.colour_masks else ""))
    return {"format": "rgb", "evidence": evidence, "colours": colours, "names": names, "strays": strays,
            "merged": merged}


def fingerprint_dataset(dataset: Path, classes: Sequence[str] | None = None,
                        presence: dict[str, list[tuple[str, np.ndarray]]] | None = None) -> dict[str, Any]:
    """What the planner knows about DATASET: see the module docstring (step 1).

    ``presence``, when given, receives per subset each slice's file name and which classes its mask
    holds (bool per class index)."""
    dataset = Path(dataset)
    pairs = dataset_pairs(dataset)
    tally = _scan_masks(pairs)
    prepared = prepared_record(dataset)
    form = _mask_format(tally, classes, prepared.get("class_names"))
    colours, strays, names = form["colours"], form["strays"], form["names"]
    palette = np.array(colours, np.int64)
    k = len(colours)
    hists = np.zeros((k + 1, 256), np.int64)           # row k: every pixel
    pixels = np.zeros(k, np.int64)
    comps: list[list[int]] = [[] for _ in range(k)]
    subsets: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    grey = True
    for subset, subset_pairs in pairs.items():
        with_class = np.zeros(k, int)
        with_foreground = 0
        sub_pixels = np.zeros(k, np.int64)
        for image_path, mask_path in subset_pairs:
            image = read_rgb(image_path)
            grey = grey and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
            h, w = image.shape[:2]
            sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
            _, rgb, values = _read_mask_file(mask_path)
            if rgb.shape[:2] != (h, w):
                raise DataError(f"{mask_path}: mask is {rgb.shape[1]}x{rgb.shape[0]} but {image_path.name} is "
                                f"{w}x{h} (WxH); expected an image and its mask of the same size")
            if form["format"] == "index":
                index = values.astype(np.int64)
            else:
                index = ((rgb.astype(np.int64)[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
            value = image.mean(-1).round().astype(np.int64) if image.shape[-1] > 1 else image[..., 0]
            counts = np.bincount(index.ravel(), minlength=k)
            if presence is not None:
                presence.setdefault(subset, []).append((image_path.name, counts > 0))
            sub_pixels += counts
            with_class += counts > 0
            with_foreground += bool(counts[1:].any())
            hists[k] += np.bincount(value.ravel(), minlength=256)
            for c in range(k):
                if counts[c]:
                    hists[c] += np.bincount(value[index == c], minlength=256)
                    if c:
                        comps[c].extend(_components(index, c))
        pixels += sub_pixels
        subsets[subset] = {"slices": len(subset_pairs),
                           "slices_with": {names[c]: int(with_class[c]) for c in range(k)},
                           "slices_with_foreground": with_foreground,
                           "pixel_share": {names[c]: _share(sub_pixels[c], sub_pixels.sum()) for c in range(k)}}
    fp = _fingerprint_dict(dataset, pairs, names, colours, strays, sizes, grey, hists, pixels, comps, subsets,
                           tally.bytes)
    fp["mask_format"] = {"format": form["format"], "evidence": form["evidence"], "merged": form["merged"]}
    fp["prepared"] = prepared
    if form["format"] == "index":
        for c in fp["classes"]:
            c["value"] = c["index"]
    return fp


def _share(n: float, total: float) -> float:
    return round(float(n) / float(total), 6) if total else 0.0


def _fingerprint_dict(dataset: Path, pairs: dict, names: list[str], colours: list, strays: dict,
                      sizes: dict, grey: bool, hists: np.ndarray, pixels: np.ndarray, comps: list,
                      subsets: dict, nbytes: int) -> dict[str, Any]:
    k = len(names)
    total_slices = sum(len(p) for p in pairs.values())
    lesions = {}
    for c in range(1, k):
        s = np.array(comps[c]) if comps[c] else np.zeros(0, int)
        lesions[names[c]] = ({"components": int(s.size), "median_px": float(np.median(s)), "min_px": int(s.min()),
                              "p10_px": float(np.percentile(s, 10)), "max_px": int(s.max())}
                             if s.size else {"components": 0})
    return {
        "dataset": str(dataset.resolve()),
        "slices": {**{s: len(p) for s, p in pairs.items()}, "total": total_slices},
        "bytes": int(nbytes),
        "image_sizes": sizes,
        "channels": "grey" if grey else "colour",
        "classes": [{"index": c, "name": names[c], "colour": list(colours[c]),
                     "colour_name": colour_name(colours[c]) if c else "black"} for c in range(k)],
        "stray_colours": {str(col): n for col, n in strays.items()},
        "pixel_share": {names[c]: _share(pixels[c], pixels.sum()) for c in range(k)},
        "intensity": {"all": _describe_hist(hists[k]), **{names[c]: _describe_hist(hists[c]) for c in range(k)}},
        "lesions": lesions,
        "subsets": subsets,
    }
