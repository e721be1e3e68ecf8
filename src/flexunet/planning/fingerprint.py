"""A dataset's fingerprint: the facts ``flexunet plan`` chooses a config from.

``fingerprint_dataset(DATASET)`` reads ``train/ valid/ test/`` (each with ``images/`` and
``masks/``, the layout ``flexunet split`` writes) and returns image sizes and channels
(grey when R = G = B), the mask format and classes, intensity statistics overall and inside
each class, per-class pixel share, lesion component sizes, slices with and without each
class, the size of every subset.

The mask format comes from evidence.  Masks that are all single-channel (grey) or palette
PNGs whose values lie in 0..K-1 for a small K (at most MAX_CLASSES) hold class indices, as
nnU-Net's raw masks ("index").  Otherwise mask colours are classes ("rgb"): black is
background, the others are taken by pixel count, and a colour lying between two class
colours is judged by its shape: anti-aliasing (or JPEG) lies on the borders between its two
neighbours, a step of a ramp from one to the other (most of its pixels touch a pixel nearer
each, almost none lie inside a blob), a real class (green beside dark green) forms blobs
with interiors.  Colours that are not classes are merged into the nearest class when they
are few (a warning each) and refused with one line naming file and colour when they are not.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from flexunet.config.loader import class_name_clash
from flexunet.dataset.masks import default_rgb_map, palette_colours
from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.utils.io import open_image, pair_by_name, to_rgb_array
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

log = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
MAX_CLASSES = 16                 # more distinct class colours than this is not a label set
MIN_CLASS_PIXELS = 4             # a class colour covers at least this many pixels in some mask
FEW_PIXELS_SHARE = 1e-4          # stray colours up to this share of all mask pixels are mapped, not refused
BETWEEN_DISTANCE = 12.0          # RGB distance from the segment between two class colours
SHAPE_FILES = 32                 # masks read (at most) for the shape of a colour between two class colours
FRINGE_BOTH = 0.5                # anti-aliasing: this share of its pixels or more touch one nearer each neighbour
FRINGE_INTERIOR = 0.2            # ... and under this share inside a blob (their whole 3x3 neighbourhood theirs)
MERGED_SHOWN = 12                # merged colours named one a line (console and config); the rest summed up
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


Colour = tuple[int, int, int]
# fringe(colour, a, b) -> (whether colour lies on the borders between class colours a and b, the evidence)
Fringe = Callable[[Colour, Colour, Colour], tuple[bool, str]]


def place_colours(counts: dict[int, int], first_file: dict[int, Path], fringe: Fringe | None = None
                  ) -> tuple[list[Colour], dict[Colour, int], dict[Colour, str]]:
    """Class colours (black first), the stray colours mapped to their nearest class, and why each is one.

    Colours are taken by pixel count: one under MIN_CLASS_PIXELS is a stray; one between two
    class colours is anti-aliasing (or JPEG) when ``fringe`` says its pixels line the borders
    of those two (without ``fringe``: always), else a class of its own.  A class colour that
    turns out to lie between two later ones is judged the same way.  Strays are tolerated up
    to a few pixels (FEW_PIXELS_SHARE of all mask pixels); beyond that, or past MAX_CLASSES
    class colours, the colour cannot be placed and the mask is refused with one line naming
    file and colour.
    """
    total = sum(counts.values())
    limit = max(FEW_PIXELS_SHARE * total, 8)
    classes: list[Colour] = [(0, 0, 0)]
    strays: dict[Colour, int] = {}
    why: dict[Colour, str] = {}

    def judge(colour: Colour, pair: tuple) -> tuple[bool, str]:
        if fringe is None or sum(strays.values()) > limit:   # counts alone (refused anyway past the limit)
            return True, ""
        return fringe(colour, pair[0], pair[1])

    def stray(colour: Colour, n: int, pair: tuple | None, evidence: str) -> None:
        strays[colour] = n
        if pair is not None:
            why[colour] = (f"it lies between {pair[0]} and {pair[1]} (anti-aliased or JPEG edges"
                           + (f": {evidence}" if evidence else "") + ")")
        else:
            why[colour] = f"under {MIN_CLASS_PIXELS} px in the whole set: too few for a class"

    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        colour = _unpack(code)
        if code == 0:
            continue
        pair = _between(colour, classes)
        if n < MIN_CLASS_PIXELS:
            stray(colour, n, pair, "")
            continue
        edge, evidence = judge(colour, pair) if pair is not None else (False, "")
        if edge:
            stray(colour, n, pair, evidence)
            continue
        if pair is not None:
            log.info("mask colour %s lies between %s and %s but is a class of its own: %s", colour, *pair, evidence)
        classes.append(colour)
        if len(classes) > MAX_CLASSES:
            raise DataError(f"{first_file[code]}: mask colour {colour} would be class {len(classes) - 1}; "
                            f"expected at most {MAX_CLASSES - 1} class colours besides black (masks saved "
                            f"with smoothing or as photos?); re-export the masks with one exact colour "
                            f"per class")
    if fringe is not None and sum(strays.values()) <= limit:   # a fringe counted before its darker neighbour
        for colour in sorted(classes[1:], key=lambda c: counts[_code(c)]):
            pair = _between(colour, [c for c in classes if c != colour])
            if pair is not None:
                edge, evidence = fringe(colour, pair[0], pair[1])
                if edge:
                    classes.remove(colour)
                    stray(colour, counts[_code(colour)], pair, evidence)
    stray_total = sum(strays.values())
    if strays and stray_total > limit:
        colour, n = max(strays.items(), key=lambda kv: kv[1])
        reason = why[colour] if why[colour].startswith("it lies") else "it is neither black nor a class colour"
        raise DataError(f"{first_file[_code(colour)]}: mask colour {colour} cannot be placed "
                        f"({n} px in the set, {stray_total} px in {len(strays)} such colour(s)); {reason}; "
                        f"expected exact class colours: re-export the masks as PNG without smoothing")
    if len(classes) < 2:
        raise DataError(f"{next(iter(first_file.values()))}: every mask is black (background only); expected "
                        f"at least one class colour to learn")
    classes[1:] = sorted(classes[1:], key=_colour_rank)
    return classes, strays, why


def _code(colour: Sequence[int]) -> int:
    return (int(colour[0]) << 16) | (int(colour[1]) << 8) | int(colour[2])


def _ramp_position(packed: np.ndarray, a: Colour, b: Colour) -> np.ndarray:
    """Per pixel, where its colour lies on the way from a (0) to b (1); NaN off that segment."""
    codes, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], 1).astype(float)
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    t = (colours - a_) @ (b_ - a_) / max(float((b_ - a_) @ (b_ - a_)), 1e-9)
    off = np.linalg.norm(a_ + t[:, None] * (b_ - a_) - colours, axis=1)
    t[(off > BETWEEN_DISTANCE) | (t < 0) | (t > 1)] = np.nan
    return t[inverse].reshape(packed.shape)


def fringe_judge(files: dict[int, list[Path]]) -> Fringe:
    """Judges a colour between class colours a and b by its shape in (up to SHAPE_FILES of) the masks
    ``files[code]`` holding it.  Anti-aliasing is a step of a ramp from a to b: FRINGE_BOTH of its pixels
    or more touch (3x3) both a pixel nearer a and one nearer b on that way (a and b themselves, or the
    ramp's other steps), and almost none lie inside a blob; a class forms blobs (FRINGE_INTERIOR of its
    pixels or more with their whole 3x3 neighbourhood theirs), whose edges touch one neighbour at a time."""
    block = np.ones((3, 3), bool)

    def fringe(colour: Colour, a: Colour, b: Colour) -> tuple[bool, str]:
        n = both = inside = 0
        held = files.get(_code(colour), [])[:SHAPE_FILES]
        for path in held:
            packed = _pack(_read_rgb(path))
            here = packed == _code(colour)
            if not here.any():
                continue
            t = _ramp_position(packed, a, b)
            mine = float(t[here][0])
            toward_a = ndimage.minimum_filter(np.nan_to_num(t, nan=np.inf), footprint=block) < mine
            toward_b = ndimage.maximum_filter(np.nan_to_num(t, nan=-np.inf), footprint=block) > mine
            n += int(here.sum())
            both += int((here & toward_a & toward_b).sum())
            inside += int(ndimage.binary_erosion(here, block, border_value=1).sum())
        both_share, inside_share = both / max(n, 1), inside / max(n, 1)
        edge = both_share >= FRINGE_BOTH and inside_share < FRINGE_INTERIOR
        return edge, (f"{both_share:.0%} of its pixels touch a pixel nearer each of the two colours, "
                      f"{inside_share:.0%} inside blobs, in {len(held)} mask(s)")

    return fringe


def _colour_rank(colour: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
    name = colour_name(colour)
    return (COLOUR_ORDER.index(name) if name in NAMED_COLOURS else len(COLOUR_ORDER), colour)


def class_names_for(colours: Sequence[tuple[int, int, int]], given: Sequence[str] | None,
                    index: bool = False) -> list[str]:
    """Names from ``--classes`` (with or without the background's), else colour names (``index``:
    class-index masks, whose classes are named class_1, class_2 ...)."""
    held = (f"{len(colours)} classes (values 0..{len(colours) - 1})" if index else
            f"{len(colours)} colours ({', '.join(colour_name(c) for c in colours)})")
    if given:
        names = [n.strip() for n in given if n.strip()]
        if len(names) == len(colours) - 1:
            names = ["background", *names]
        if len(names) != len(colours) or class_name_clash(names):
            clash = class_name_clash(names)
            raise FlexUNetError(f"--classes {','.join(given)}: the masks hold {held}; expected {len(colours) - 1} "
                                f"distinct names in that order (background optional){f'; {clash}' if clash else ''}")
        return names
    if index:
        return ["background", *(f"class_{c}" for c in range(1, len(colours)))]
    names = ["background"]
    for c in colours[1:]:
        name = colour_name(c)
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


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
            codes, counts = np.unique(_pack(rgb), return_counts=True)
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


def _mask_format(tally: _Tally, classes: Sequence[str] | None) -> dict[str, Any]:
    """The masks' format and classes: {"format", "evidence", "colours", "names", "strays", "merged"}."""
    evidence = index_evidence(tally)
    if evidence is not None:
        k = max(tally.value_counts) + 1
        colours = [tuple(int(v) for v in c) for c in palette_colours(default_rgb_map(k))]
        return {"format": "index", "evidence": evidence, "colours": colours,
                "names": class_names_for(colours, classes, index=True), "strays": {}, "merged": []}
    colours, strays, why = place_colours(tally.colour_counts, tally.first_file, fringe_judge(tally.files))
    names = class_names_for(colours, classes)
    palette = np.array(colours, np.int64)
    merged = []
    for colour, n in sorted(strays.items(), key=lambda kv: (-kv[1], kv[0])):
        into = int(np.sqrt(((palette - np.array(colour)) ** 2).sum(1)).argmin())   # as map_unmapped maps it
        merged.append({"colour": list(colour), "pixels": n, "into": names[into],
                       "file": str(tally.first_file[_code(colour)]), "why": why[colour]})
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


def fingerprint_dataset(dataset: Path, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """What the planner knows about DATASET: see the module docstring (step 1)."""
    dataset = Path(dataset)
    pairs = dataset_pairs(dataset)
    tally = _scan_masks(pairs)
    form = _mask_format(tally, classes)
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
            image = _read_rgb(image_path)
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
