"""The mask codec: colour or class-index mask <-> class-index array <-> palette PNG.

``[mask] format`` says what a mask pixel holds.  ``"rgb"``: a class colour; ``rgb_map`` is
the config's ``{(r,g,b): class_index}``, a colour mask maps to class indices by nearest
palette colour, and a pixel whose colour lies farther than ``tolerance`` (Euclidean RGB
distance) from every class colour is *unmapped*: counted per colour and an error unless
``map_unmapped`` asks for the nearest class.  ``"index"``: the class index itself, in a
single-channel (grey, 8 or 16 bit) or palette PNG, as nnU-Net's raw masks; a value of
``num_classes`` or more is an error naming the file and the value.  Palette PNGs ('P'
mode) written here hold the class index as pixel value and the class colours as palette,
so any viewer shows the colours while the pixel values stay class indices: both formats
read them alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from flexunet.config.loader import Config
from flexunet.utils.errors import MaskError
from flexunet.utils.io import open_image, save_image

RgbMap = Mapping[tuple[int, int, int], int]

# the first use, TEKNOFEST-2021 Stroke CT: ischemic green, hemorrhagic blue (synth writes them, stats defaults to them)
STROKE_RGB_MAP: dict[tuple[int, int, int], int] = {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}
STROKE_CLASS_NAMES: tuple[str, ...] = ("background", "ischemic", "hemorrhagic")

MASK_FORMATS = ("rgb", "index")
_GREY_MODES = ("L", "1", "I;16", "I;16B", "I;16L", "I")


def palette_colours(rgb_map: RgbMap) -> np.ndarray:
    """(num_classes, 3) uint8: row i is the colour of class i."""
    n = max(rgb_map.values()) + 1
    colours = np.zeros((n, 3), np.uint8)
    for colour, index in rgb_map.items():
        colours[index] = colour
    return colours


def flat_palette(rgb_map: RgbMap) -> list[int]:
    """A 768-entry PIL palette: class colours first, then black."""
    colours = palette_colours(rgb_map).reshape(-1).tolist()
    return colours + [0] * (768 - len(colours))


@dataclass
class Decoded:
    """A decoded mask and what did not map."""

    index: np.ndarray                                     # (H, W) uint8 class indices
    unmapped: dict[tuple[int, int, int], int] = field(default_factory=dict)  # colour -> pixel count
    palette: list[int] | None = None                      # a palette index mask's own palette (to write alike)

    @property
    def unmapped_pixels(self) -> int:
        return sum(self.unmapped.values())


def describe_unmapped(unmapped: Mapping[tuple[int, int, int], int], limit: int = 5) -> str:
    items = sorted(unmapped.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{c}: {n} px" for c, n in items[:limit])
    if len(items) > limit:
        text += f", ... ({len(items) - limit} more colours)"
    return text


def rgb_to_index(rgb: np.ndarray, rgb_map: RgbMap, tolerance: float = 0.0,
                 map_unmapped: bool = False, source: str = "mask") -> Decoded:
    """Class indices of an (H, W, 3) colour mask by nearest class colour.

    Colours within ``tolerance`` of a class colour take that class.  Farther ones are
    reported in ``Decoded.unmapped``; they raise MaskError unless ``map_unmapped``.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise MaskError(f"{source}: expected an RGB mask, got an array of shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    palette = palette_colours(rgb_map).astype(np.int64)
    keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    # class colours exactly (fast: no sort of every pixel); the lowest class wins a shared colour, as argmin
    index = np.zeros(packed.shape, np.uint8)
    exact = np.zeros(packed.shape, bool)
    for k in range(len(keys) - 1, -1, -1):
        hit = packed == keys[k]
        index[hit] = k
        exact |= hit
    unmapped: dict[tuple[int, int, int], int] = {}
    if exact.all():
        return Decoded(index, unmapped)
    other = ~exact
    uniq, inverse, counts = np.unique(packed[other], return_inverse=True, return_counts=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1)
    dist = np.sqrt(((colours[:, None, :] - palette[None, :, :]) ** 2).sum(-1))
    nearest = dist.argmin(1)
    far = dist[np.arange(len(uniq)), nearest] > tolerance
    unmapped = {tuple(int(c) for c in colours[i]): int(counts[i]) for i in np.flatnonzero(far)}
    if unmapped and not map_unmapped:
        raise MaskError(f"{source}: {sum(unmapped.values())} pixel(s) in {len(unmapped)} colour(s) not in "
                        f"rgb_map ({describe_unmapped(unmapped)}); fix the mask, or set [mask] tolerance "
                        f"or map_unmapped = True to map them to the nearest class")
    index[other] = nearest[inverse.ravel()].astype(np.uint8)
    return Decoded(index, unmapped)


def index_to_rgb(index: np.ndarray, rgb_map: RgbMap) -> np.ndarray:
    """(H, W, 3) uint8 colour mask from class indices."""
    palette = palette_colours(rgb_map)
    index = np.asarray(index)
    if index.size and int(index.max()) >= len(palette):
        raise MaskError(f"class index {int(index.max())} has no colour in rgb_map ({len(palette)} classes)")
    return palette[index]


def index_to_palette_image(index: np.ndarray, rgb_map: RgbMap) -> Image.Image:
    """A 'P' mode image: pixel value = class index, palette = class colours."""
    img = Image.fromarray(np.asarray(index, np.uint8), mode="P")
    img.putpalette(flat_palette(rgb_map))
    return img


def image_to_index(img: Image.Image, rgb_map: RgbMap, tolerance: float = 0.0,
                   map_unmapped: bool = False, source: str = "mask") -> Decoded:
    """Class indices of a colour mask image of any mode (RGB, RGBA, P, L) through ``rgb_map``."""
    if img.mode == "P":
        pal = img.getpalette() or []
        pal_arr = np.array(pal + [0] * (768 - len(pal)), np.uint8).reshape(256, 3)
        rgb = pal_arr[np.asarray(img)]
    elif img.mode in ("L", "I;16", "I", "1"):
        grey = np.asarray(img.convert("L"))
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    else:
        rgb = np.asarray(img.convert("RGB"))
    try:
        return rgb_to_index(rgb, rgb_map, tolerance, map_unmapped, source)
    except MaskError as exc:
        raise MaskError(f"{exc}{_index_hint(img, max(rgb_map.values()) + 1)}") from None


def _index_hint(img: Image.Image, num_classes: int) -> str:
    """A hint when a refused colour mask looks like a class-index mask (grey or palette values 0..K-1)."""
    if img.mode not in (*_GREY_MODES, "P"):
        return ""
    values = np.asarray(img)
    if values.size == 0 or values.max() >= num_classes or not values.any():
        return ""
    return (f" (its pixel values 0..{int(values.max())} look like class indices: if they are, set "
            f"[mask] format = \"index\")")


def index_image_to_index(img: Image.Image, num_classes: int, source: str = "mask") -> Decoded:
    """Class indices of a class-index mask: grey (8/16 bit) or palette PNG whose values are 0..num_classes-1.

    A colour image whose three channels are equal counts as grey; one that holds colour, or a
    value >= ``num_classes``, is a MaskError naming ``source`` and what was expected.
    """
    palette = None
    if img.mode == "P":
        values = np.asarray(img)
        palette = img.getpalette()
    elif img.mode in _GREY_MODES:
        values = np.asarray(img)
    elif img.mode in ("LA", "La"):
        values = np.asarray(img.getchannel("L"))
    elif img.mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        rgb = np.asarray(img.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise MaskError(f"{source}: a colour mask ({img.mode}), but [mask] format is \"index\"; expected a "
                            f"grey or palette PNG whose pixel values are class indices 0..{num_classes - 1} — "
                            f"for colour masks set [mask] format = \"rgb\" and rgb_map")
        values = rgb[..., 0]
    else:
        raise MaskError(f"{source}: {img.mode} mask image; expected a grey (8 or 16 bit) or palette PNG whose "
                        f"pixel values are class indices 0..{num_classes - 1} ([mask] format = \"index\")")
    values = np.asarray(values)
    if values.dtype == bool:
        values = values.astype(np.uint8)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        bad = int(values.max()) if values.max() >= num_classes else int(values.min())
        wrong = int(((values < 0) | (values >= num_classes)).sum())
        raise MaskError(f"{source}: pixel value {bad} is not a class index ({wrong} px out of range); expected "
                        f"values 0..{num_classes - 1} in a class-index mask ([mask] format = \"index\", "
                        f"[model] num_classes = {num_classes})")
    return Decoded(values.astype(np.uint8), palette=palette)


def read_mask(path: str | os.PathLike, rgb_map: RgbMap, tolerance: float = 0.0,
              map_unmapped: bool = False, mask_format: str = "rgb") -> Decoded:
    """Decode a mask file (.png colour, grey or palette, or .npz with key 'mask' of class indices).

    ``mask_format`` is ``[mask] format`` ("rgb" or "index"); with "index" the classes are
    0..max(rgb_map.values()) and ``tolerance`` and ``map_unmapped`` do not apply.
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        raise MaskError(f"{path}: JPEG mask refused — lossy compression invents colours at class "
                        f"borders; save masks as PNG")
    if path.suffix.lower() == ".npz":
        return _read_npz(path, rgb_map)
    if mask_format == "index":
        return index_image_to_index(open_image(path), max(rgb_map.values()) + 1, source=str(path))
    if mask_format != "rgb":
        raise ValueError(f"mask_format {mask_format!r}: expected one of {MASK_FORMATS}")
    return image_to_index(open_image(path), rgb_map, tolerance, map_unmapped, source=str(path))


def read_config_mask(path: str | os.PathLike, cfg: Config) -> Decoded:
    """A mask file decoded as ``[mask]`` says (rgb_map, tolerance, map_unmapped, format): the one decode
    of a mask for training, validation, evaluation, the report, split and augment."""
    m = cfg.mask
    return read_mask(path, m.rgb_map, m.tolerance, m.map_unmapped, m.format)


def _read_npz(path: Path, rgb_map: RgbMap) -> Decoded:
    try:
        with np.load(path) as data:
            arr = data["mask"]
    except (OSError, ValueError, KeyError) as exc:
        raise MaskError(f"{path}: cannot read key 'mask' from the .npz ({exc})") from None
    n = max(rgb_map.values()) + 1
    if arr.ndim == 3 and arr.shape[-1] == n:   # one-hot
        arr = arr.argmax(-1)
    if arr.ndim != 2 or arr.min() < 0 or arr.max() >= n:
        raise MaskError(f"{path}: expected class indices 0..{n - 1} of shape (H, W) or one-hot (H, W, {n})")
    return Decoded(arr.astype(np.uint8))


def save_rgb_mask(path: str | os.PathLike, index: np.ndarray, rgb_map: RgbMap) -> None:
    """Write class indices as a colour (RGB) PNG, atomically."""
    save_image(path, index_to_rgb(index, rgb_map))


def save_index_mask(path: str | os.PathLike, index: np.ndarray, palette: list[int] | None = None) -> None:
    """Write class indices as a class-index PNG, atomically: grey (8-bit, 16-bit past 255 classes), or
    palette with ``palette`` (a palette mask's own, so it is written back as it was read)."""
    index = np.asarray(index)
    if palette is not None:
        img = Image.fromarray(index.astype(np.uint8), mode="P")
        img.putpalette(palette)
    elif index.size and int(index.max()) > 255:
        img = Image.fromarray(index.astype(np.uint16))
    else:
        img = Image.fromarray(index.astype(np.uint8), mode="L")
    save_image(path, img)


def save_mask(path: str | os.PathLike, index: np.ndarray, rgb_map: RgbMap, mask_format: str = "rgb",
              palette: list[int] | None = None) -> None:
    """Write class indices in ``[mask] format``: a colour PNG ("rgb") or a class-index PNG ("index")."""
    if mask_format == "index":
        save_index_mask(path, index, palette)
    else:
        save_rgb_mask(path, index, rgb_map)


def one_hot(index: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) class indices -> (H, W, C) float32 one-hot."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(index)]
