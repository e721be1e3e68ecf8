"""A dataset's fingerprint: the facts ``flexunet plan`` chooses a config from.

``fingerprint_dataset(DATASET)`` reads ``train/ valid/ test/`` (each with ``images/`` and
``masks/``, the layout ``flexunet split`` writes) and returns image sizes and channels
(grey when R = G = B), intensity statistics overall and inside each class, mask colours ->
classes (black is background; colours that cannot be placed are refused), per-class pixel
share, lesion component sizes, slices with and without each class, the size of every subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from flexunet.config import class_name_clash
from flexunet.errors import DataError, FlexUNetError
from flexunet.io import open_image, pair_by_name, to_rgb_array

SUBSETS = ("train", "valid", "test")
MAX_CLASSES = 16                 # more distinct class colours than this is not a label set
MIN_CLASS_PIXELS = 4             # a class colour covers at least this many pixels in some mask
FEW_PIXELS_SHARE = 1e-4          # stray colours up to this share of all mask pixels are mapped, not refused
BETWEEN_DISTANCE = 12.0          # RGB distance from the segment between two class colours
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (0, 255, 0), "blue": (0, 0, 255), "red": (255, 0, 0), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255), "orange": (255, 165, 0),
    "purple": (128, 0, 128), "grey": (128, 128, 128), "maroon": (128, 0, 0), "olive": (128, 128, 0),
    "navy": (0, 0, 128), "teal": (0, 128, 128), "darkgreen": (0, 128, 0), "pink": (255, 192, 203),
}
COLOUR_ORDER = list(NAMED_COLOURS)   # class indices follow this order (green 1, blue 2: the stroke set's)


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


def _read_rgb(path: Path) -> np.ndarray:
    return to_rgb_array(open_image(path), 3)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(code: int) -> tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


# --------------------------------------------------------------------------- colours -> classes


def colour_name(colour: Sequence[int]) -> str:
    """``green`` for (0, 255, 0); the nearest named colour within 40, else ``rgb_R_G_B``."""
    c = np.asarray(colour, float)
    name, ref = min(NAMED_COLOURS.items(), key=lambda kv: float(np.linalg.norm(c - kv[1])))
    return name if np.linalg.norm(c - ref) <= 40 else "rgb_{}_{}_{}".format(*map(int, colour))


def _between(colour: tuple[int, int, int], classes: Sequence[tuple[int, int, int]]) -> tuple | None:
    """The two class colours ``colour`` lies between (anti-aliasing, JPEG), or None."""
    c = np.asarray(colour, float)
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            a_, b_ = np.asarray(a, float), np.asarray(b, float)
            t = float(np.dot(c - a_, b_ - a_) / max(np.dot(b_ - a_, b_ - a_), 1e-9))
            if 0.02 < t < 0.98 and np.linalg.norm(a_ + t * (b_ - a_) - c) <= BETWEEN_DISTANCE:
                return a, b
    return None


def place_colours(counts: dict[int, int], first_file: dict[int, Path]) -> tuple[list[tuple[int, int, int]],
                                                                               dict[tuple[int, int, int], int]]:
    """Class colours (black first) and the stray colours mapped to their nearest class.

    Colours are taken by pixel count: one between two class colours is anti-aliasing (or
    JPEG); one under MIN_CLASS_PIXELS is a stray.  Either is tolerated up to a few pixels
    (FEW_PIXELS_SHARE of all mask pixels); beyond that, or past MAX_CLASSES class colours,
    the colour cannot be placed and the mask is refused with one line naming file and colour.
    """
    total = sum(counts.values())
    black = 0
    classes: list[tuple[int, int, int]] = [(0, 0, 0)]
    strays: dict[tuple[int, int, int], int] = {}
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        colour = _unpack(code)
        if code == black:
            continue
        pair = _between(colour, classes)
        if pair is None and n >= MIN_CLASS_PIXELS:
            classes.append(colour)
            if len(classes) > MAX_CLASSES:
                raise DataError(f"{first_file[code]}: mask colour {colour} would be class {len(classes) - 1}; "
                                f"expected at most {MAX_CLASSES - 1} class colours besides black (masks saved "
                                f"with smoothing or as photos?); re-export the masks with one exact colour "
                                f"per class")
            continue
        strays[colour] = n
    stray_total = sum(strays.values())
    if strays and stray_total > max(FEW_PIXELS_SHARE * total, 8):
        colour, n = max(strays.items(), key=lambda kv: kv[1])
        pair = _between(colour, classes)
        why = (f"it lies between {pair[0]} and {pair[1]} (anti-aliased or JPEG edges)" if pair
               else "it is neither black nor a class colour")
        raise DataError(f"{first_file[_pack(np.array(colour))]}: mask colour {colour} cannot be placed "
                        f"({n} px in the set, {stray_total} px in {len(strays)} such colour(s)); {why}; "
                        f"expected exact class colours: re-export the masks as PNG without smoothing")
    if len(classes) < 2:
        raise DataError(f"{next(iter(first_file.values()))}: every mask is black (background only); expected "
                        f"at least one class colour to learn")
    classes[1:] = sorted(classes[1:], key=_colour_rank)
    return classes, strays


def _colour_rank(colour: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
    name = colour_name(colour)
    return (COLOUR_ORDER.index(name) if name in NAMED_COLOURS else len(COLOUR_ORDER), colour)


def class_names_for(colours: Sequence[tuple[int, int, int]], given: Sequence[str] | None) -> list[str]:
    """Names from ``--classes`` (with or without the background's), else colour names."""
    if given:
        names = [n.strip() for n in given if n.strip()]
        if len(names) == len(colours) - 1:
            names = ["background", *names]
        if len(names) != len(colours) or class_name_clash(names):
            clash = class_name_clash(names)
            raise FlexUNetError(f"--classes {','.join(given)}: the masks hold {len(colours)} colours "
                                f"({', '.join(colour_name(c) for c in colours)}); expected {len(colours) - 1} "
                                f"distinct names in that order (background optional){f'; {clash}' if clash else ''}")
        return names
    names = ["background"]
    for c in colours[1:]:
        name = colour_name(c)
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


# --------------------------------------------------------------------------- the fingerprint


@dataclass
class _Tally:
    """Pixels per mask colour over the dataset, the first mask holding each, the bytes on disk."""

    colour_counts: dict[int, int]
    first_file: dict[int, Path]
    bytes: int


def _scan_colours(pairs: dict[str, list[tuple[Path, Path]]]) -> _Tally:
    tally = _Tally({}, {}, 0)
    for subset_pairs in pairs.values():
        for image_path, mask_path in subset_pairs:
            codes, counts = np.unique(_pack(_read_rgb(mask_path)), return_counts=True)
            for code, n in zip(codes.tolist(), counts.tolist()):
                tally.colour_counts[code] = tally.colour_counts.get(code, 0) + n
                tally.first_file.setdefault(code, mask_path)
            tally.bytes += image_path.stat().st_size + mask_path.stat().st_size
    return tally


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


def fingerprint_dataset(dataset: Path, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """What the planner knows about DATASET: see the module docstring (step 1)."""
    dataset = Path(dataset)
    pairs = dataset_pairs(dataset)
    tally = _scan_colours(pairs)
    colours, strays = place_colours(tally.colour_counts, tally.first_file)
    names = class_names_for(colours, classes)
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
            image = _read_rgb(image_path)
            grey = grey and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
            h, w = image.shape[:2]
            sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
            rgb = _read_rgb(mask_path).astype(np.int64)
            if rgb.shape[:2] != (h, w):
                raise DataError(f"{mask_path}: mask is {rgb.shape[1]}x{rgb.shape[0]} but {image_path.name} is "
                                f"{w}x{h} (WxH); expected an image and its mask of the same size")
            index = ((rgb[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
            value = image.mean(-1).round().astype(np.int64) if image.shape[-1] > 1 else image[..., 0]
            counts = np.bincount(index.ravel(), minlength=k)
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
    return _fingerprint_dict(dataset, pairs, names, colours, strays, sizes, grey, hists, pixels, comps, subsets,
                             tally.bytes)


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
