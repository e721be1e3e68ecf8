"""Files in and out: atomic writes, image reading, image/mask pairing.

Every output goes through :func:`atomic_write` (a temporary file in the same folder,
then ``os.replace``), so a crash leaves either the previous file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from flexunet.utils.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # an unwritable folder: name the file that was to be written, not the temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode a plain open() would
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as JSON (indent 2) by :func:`json_text`: NaN and infinities written as null."""
    write_text(path, json_text(obj, indent=2) + "\n")


def read_json_record(path: str | os.PathLike, otherwise: str) -> dict[str, Any] | None:
    """A JSON object a run keeps beside its model (None when there is none); an unreadable one, or one that
    is not an object: a warning "<path>: unreadable; <otherwise>" and None."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        logging.getLogger(__name__).warning("%s: unreadable; %s", path, otherwise)
        return None
    return doc


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """The one CSV form of our tables: a header row, then ``rows``, through the csv module (it quotes a
    cell holding a comma, quote or line break), '\\n' line ends."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def json_text(obj: Any, indent: int | None = None) -> str:
    """The one JSON policy: strict JSON (no bare NaN / Infinity tokens: non-finite numbers become null),
    numpy values as Python numbers and lists, paths as strings."""
    return json.dumps(json_ready(obj), indent=indent, sort_keys=False, default=_json_default, allow_nan=False)


def json_ready(obj: Any) -> Any:
    """NaN and infinities -> None (JSON has no NaN), numpy scalars and arrays -> Python numbers and lists."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_image(path: str | os.PathLike, image: Image.Image | np.ndarray, format: str = "PNG") -> None:
    """Encode an image in memory, then write it atomically."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = _io.BytesIO()
    image.save(buf, format=format)
    write_bytes(path, buf.getvalue())


class StagedFiles:
    """Files staged by :func:`staged_files`: each written whole to a temporary beside its target."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self.paths: list[Path] = []

    def write_bytes(self, path: str | os.PathLike, data: bytes) -> None:
        fh = self._stack.enter_context(atomic_write(path, "wb"))
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())  # a full disk shows here, while nothing has been replaced yet
        self.paths.append(Path(path))

    def write_text(self, path: str | os.PathLike, text: str) -> None:
        self.write_bytes(path, text.encode("utf-8"))

    def write_json(self, path: str | os.PathLike, obj: Any) -> None:
        self.write_text(path, json_text(obj, indent=2) + "\n")


@contextlib.contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """Write several files as one: each is staged beside its target, and only when the block ends
    without error do they all replace their targets (renames only); on any error every staged file
    is removed and every target is left as it was."""
    with contextlib.ExitStack() as stack:
        yield StagedFiles(stack)


# --------------------------------------------------------------------------- reading


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image; a clear DataError when it cannot be."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.copy()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image PIL can read (wrong extension or not an image file); "
                        f"expected a PNG, JPG, TIF or BMP") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot be decoded ({exc}); the file may be truncated or corrupt — "
                        f"re-export it") from None


def to_rgb_array(img: Image.Image, channels: int = 3) -> np.ndarray:
    """uint8 array (H, W, channels) from any PIL mode (L, I;16, RGBA, P, ...)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).round().astype(np.uint8), mode="L")
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None]
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info) or img.mode == "LA":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if channels == 4:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    return arr


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """An image file as a uint8 (H, W, channels) array."""
    return to_rgb_array(open_image(path), channels)


def list_files(folder: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Files with the given suffixes directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


PAIRED = "one image per name (only one of them could be paired with its mask) — remove or rename one"


def by_stem(files: list[Path], expected: str = PAIRED) -> dict[str, Path]:
    """``{stem: file}``; two files of one stem (``000.bmp`` and ``000.jpg``) are an error naming both
    and saying what was ``expected``."""
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{p}: same name as {out[p.stem].name} in {p.parent}; expected {expected}")
        out[p.stem] = p
    return out


def pair_by_name(images_dir: str | os.PathLike, masks_dir: str | os.PathLike,
                 mask_suffixes: tuple[str, ...] = (".png",)) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem, sorted; any unmatched file, or two files of one stem,
    is an error naming them."""
    images = by_stem(list_files(images_dir))
    masks = by_stem(list_files(masks_dir, mask_suffixes + (".jpg", ".jpeg")))
    if not images:
        raise DataError(f"{images_dir}: no images found; expected PNG/JPG/TIF/BMP files")
    only_images = sorted(set(images) - set(masks))
    only_masks = sorted(set(masks) - set(images))
    if only_images:
        raise DataError(f"{images[only_images[0]]}: no mask with the same name in {masks_dir} "
                        f"({len(only_images)} image(s) without a mask)")
    if only_masks:
        raise DataError(f"{masks[only_masks[0]]}: no image with the same name in {images_dir} "
                        f"({len(only_masks)} mask(s) without an image)")
    for stem, mask in masks.items():
        if mask.suffix.lower() in (".jpg", ".jpeg"):
            raise DataError(f"{mask}: JPEG mask refused — lossy compression invents colours at class "
                            f"borders; save masks as PNG")
    return [(images[s], masks[s]) for s in sorted(images)]


def safe_output_path(out_dir: str | os.PathLike, name: str) -> Path:
    """``out_dir/<basename of name>``: input names never steer outputs outside ``out_dir``."""
    base = Path(str(name).replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise DataError(f"{name!r}: not a usable file name")
    return Path(out_dir) / base


# --------------------------------------------------------------------------- folders swapped in whole


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, link or folder tree if it is there."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def swap_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder ``new`` (a sibling of ``target``) at ``target`` whole.

    An existing ``target`` is first renamed to ``.<name>.old-<pid>`` and removed once ``new``
    is in place; if that second rename fails, it is put back.  A crash between the two renames
    leaves the ``.old-`` folder beside ``target`` (see ``callbacks.recover_checkpoint``).
    """
    new, target = Path(new), Path(target)
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    remove_path(old)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    remove_path(old)
