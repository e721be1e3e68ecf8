"""The run folder's record of the images a model learnt from, and the leak guard built on it.

``flexunet train`` writes ``<model_dir>/data_record.json``: per train and valid image its
name, the sha256 of its bytes, the sha256 of its decoded pixels and a 16x16 grey thumbnail.
``evaluate`` and ``report`` fingerprint the test images the same way and refuse (or, with
``--allow-overlap``, warn and count) every test image that matches a recorded one:

1. the same bytes (a file copied from train into test, a re-split with another seed);
2. the same pixels in another file (re-saved, converted PNG <-> BMP, metadata changed);
3. a near-duplicate: the mean absolute difference of the two 16x16 grey thumbnails
   (box-averaged, kept at 1/64 grey level) is at most :data:`NEAR_MEAN_DIFF` grey levels.

Why 16x16 and 0.5: an 8x8 (64-bit) average or difference hash cannot tell neighbouring slices
of one synthetic patient apart (on 60 ``flexunet synth`` slices at 128 px, 26 different pairs
had a dHash distance of 0).  On the same slices the closest different pair's thumbnails differ by
1.2 grey levels on average, while a JPEG (quality 85) or a 2x-resized copy of a slice differs from
it by 0.4 on average (0.7 at most): 0.5 catches the same slice re-encoded lightly and flags no
ordinary different slice.  Strongly re-encoded or noisy copies can escape it; exact copies never do.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from flexunet.errors import DataError
from flexunet.io import read_image, write_json

log = logging.getLogger(__name__)

RECORD_FILE = "data_record.json"
THUMB = 16                 # thumbnail side in pixels
THUMB_SCALE = 64           # thumbnails are stored as uint16 of grey level x 64
NEAR_MEAN_DIFF = 0.5       # grey levels (0..255), mean over the thumbnail
_SHOWN = 3


def fingerprint(path: Path) -> dict[str, str]:
    """``name``, ``sha256`` of the bytes, ``pixels`` (sha256 of the decoded RGB) and ``thumb`` of one image."""
    data = Path(path).read_bytes()
    rgb = read_image(path, 3)
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    thumb = np.asarray(Image.fromarray(grey, "F").resize((THUMB, THUMB), Image.BOX), np.float32)
    packed = np.round(np.clip(thumb, 0, 255) * THUMB_SCALE).astype("<u2").tobytes()
    pixels = hashlib.sha256(str(rgb.shape).encode() + rgb.tobytes()).hexdigest()
    return {"name": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(), "pixels": pixels,
            "thumb": base64.b64encode(packed).decode("ascii")}


def _thumb(entry: dict[str, str]) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(entry["thumb"]), "<u2")
    return raw.astype(np.float32) / THUMB_SCALE


def fingerprints(paths: Sequence[Path], workers: int = 4) -> list[dict[str, str]]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fingerprint, paths))


def write_record(model_dir: Path, subsets: dict[str, Sequence[tuple[Path, Path]]]) -> Path:
    """Write ``<model_dir>/data_record.json`` for the (image, mask) pairs of each subset; return its path."""
    doc: dict[str, Any] = {"version": 1, "thumb_size": THUMB, "thumb_scale": THUMB_SCALE, "subsets": {}}
    for subset, pairs in subsets.items():
        prints = fingerprints([image for image, _ in pairs])
        doc["subsets"][subset] = [{**fp, "image": str(image), "mask": str(mask)}
                                  for fp, (image, mask) in zip(prints, pairs)]
    path = Path(model_dir) / RECORD_FILE
    write_json(path, doc)
    return path


def read_record(model_dir: Path) -> list[dict[str, Any]] | None:
    """Every recorded entry (with its ``subset``), or None when the run folder has no record."""
    import json

    path = Path(model_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return [{**e, "subset": s} for s, entries in doc["subsets"].items() for e in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); expected the data record `flexunet train` writes — "
                        f"train again, or delete it to skip the leak check") from None


def find_overlaps(test_images: Sequence[Path], record: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test image that matches a recorded image: ``image``, ``match`` (recorded name and subset), ``how``."""
    if not record or not test_images:
        return []
    by_bytes = {e["sha256"]: e for e in record}
    by_pixels = {e["pixels"]: e for e in record}
    thumbs = np.stack([_thumb(e) for e in record])
    found = []
    for path, fp in zip(test_images, fingerprints(test_images)):
        if fp["sha256"] in by_bytes:
            match, how = by_bytes[fp["sha256"]], "the same bytes as"
        elif fp["pixels"] in by_pixels:
            match, how = by_pixels[fp["pixels"]], "the same pixels as"
        else:
            diff = np.abs(thumbs - _thumb(fp)).mean(axis=1)
            k = int(diff.argmin())
            if diff[k] > NEAR_MEAN_DIFF:
                continue
            match, how = record[k], f"a near-duplicate ({diff[k]:.2f} grey levels apart) of"
        found.append({"image": str(path), "match": match.get("image", match["name"]), "subset": match["subset"],
                      "how": how})
    return found


def check_test_images(model_dir: Path, test_images: Sequence[Path], allow_overlap: bool, command: str,
                      warn_missing: bool = True) -> dict[str, Any]:
    """The leak guard: refuse test images that the model trained or validated on.

    Returns what evaluation.json records: ``checked`` (False without a record), ``overlapping``
    (count, or None), ``allowed`` and the first few ``examples``.
    """
    record = read_record(model_dir)
    if record is None:
        if warn_missing:
            log.warning("%s: no %s (the run predates it): could not check the test images against the "
                        "images the model trained on; train again to get the leak check", model_dir, RECORD_FILE)
        return {"checked": False, "overlapping": None, "allowed": allow_overlap, "examples": []}
    found = find_overlaps(test_images, record)
    result = {"checked": True, "overlapping": len(found), "allowed": allow_overlap,
              "examples": found[:_SHOWN], "threshold": f"thumbnail mean |difference| <= {NEAR_MEAN_DIFF}"}
    if not found:
        return result
    shown = "; ".join(f"{Path(f['image']).name} is {f['how']} {Path(f['match']).name} ({f['subset']})"
                      for f in found[:_SHOWN])
    more = f"; ... ({len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
    text = (f"{len(found)} of {len(test_images)} test image(s) are images the model trained or validated on "
            f"(recorded in {Path(model_dir) / RECORD_FILE}): {shown}{more}")
    if not allow_overlap:
        raise DataError(f"{Path(found[0]['image']).parent}: {text}; their scores would not be a test — remove "
                        f"them from the test set (or re-split with the seed the model was trained with), or "
                        f"pass --allow-overlap to {command} anyway (they are counted)")
    log.warning("%s; --allow-overlap: scored anyway", text)
    return result
