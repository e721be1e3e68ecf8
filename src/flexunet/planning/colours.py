"""Mask colours -> classes, for a dataset whose masks are colour images (``flexunet plan``).

Black is background, the other colours are taken by pixel count, and a colour lying between two
class colours is judged by its shape: anti-aliasing (or JPEG) lies on the borders between its two
neighbours, a step of a ramp from one to the other (most of its pixels touch a pixel nearer
each, almost none lie inside a blob), a real class (green beside dark green) forms blobs
with interiors.  Colours that are not classes are merged into the nearest class when they
are few (a warning each) and refused with one line naming file and colour when they are not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from flexunet.config.loader import class_name_clash
from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.utils.io import open_image, to_rgb_array
from flexunet.utils.lazy import LazyModule

ndimage = LazyModule("scipy.ndimage")  # imported on first use: see flexunet.utils.lazy

log = logging.getLogger(__name__)

MAX_CLASSES = 16                 # more distinct class colours than this is not a label set
MIN_CLASS_PIXELS = 4             # a class colour covers at least this many pixels in some mask
FEW_PIXELS_SHARE = 1e-4          # stray colours up to this share of all mask pixels are mapped, not refused
BETWEEN_DISTANCE = 12.0          # RGB distance from the segment between two class colours
SHAPE_FILES = 32                 # masks read (at most) for the shape of a colour between two class colours
FRINGE_BOTH = 0.5                # anti-aliasing: this share of its pixels or more touch one nearer each neighbour
FRINGE_INTERIOR = 0.2            # ... and under this share inside a blob (their whole 3x3 neighbourhood theirs)
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (0, 255, 0), "blue": (0, 0, 255), "red": (255, 0, 0), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255), "orange": (255, 165, 0),
    "purple": (128, 0, 128), "grey": (128, 128, 128), "maroon": (128, 0, 0), "olive": (128, 128, 0),
    "navy": (0, 0, 128), "teal": (0, 128, 128), "darkgreen": (0, 128, 0), "pink": (255, 192, 203),
}
COLOUR_ORDER = list(NAMED_COLOURS)   # class indices follow this order (green 1, blue 2: the stroke set's)


def read_rgb(path: Path) -> np.ndarray:
    return to_rgb_array(open_image(path), 3)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(code: int) -> tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


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
        for colour in sorted(classes[1:], key=lambda c: counts[colour_code(c)]):
            pair = _between(colour, [c for c in classes if c != colour])
            if pair is not None:
                edge, evidence = fringe(colour, pair[0], pair[1])
                if edge:
                    classes.remove(colour)
                    stray(colour, counts[colour_code(colour)], pair, evidence)
    stray_total = sum(strays.values())
    if strays and stray_total > limit:
        colour, n = max(strays.items(), key=lambda kv: kv[1])
        reason = why[colour] if why[colour].startswith("it lies") else "it is neither black nor a class colour"
        raise DataError(f"{first_file[colour_code(colour)]}: mask colour {colour} cannot be placed "
                        f"({n} px in the set, {stray_total} px in {len(strays)} such colour(s)); {reason}; "
                        f"expected exact class colours: re-export the masks as PNG without smoothing")
    if len(classes) < 2:
        raise DataError(f"{next(iter(first_file.values()))}: every mask is black (background only); expected "
                        f"at least one class colour to learn")
    classes[1:] = sorted(classes[1:], key=_colour_rank)
    return classes, strays, why


def colour_code(colour: Sequence[int]) -> int:
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
        held = files.get(colour_code(colour), [])[:SHAPE_FILES]
        for path in held:
            packed = pack_rgb(read_rgb(path))
            here = packed == colour_code(colour)
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
