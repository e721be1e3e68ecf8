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

The record is also the run's account of its training data.  Each entry keeps the sha256 of its
mask too (``mask_sha256``), so ``train --resume`` compares the train and valid files it would
train on now with the ones the run trained on (:func:`compare_data`: one sha256 per file, no
decoding) and refuses changed data.  With ``--allow-data-change`` the run goes on and the record
merges (:func:`write_record` with ``diff``): the entries of images no longer in the data stay,
marked ``until_epoch`` (the last epoch that trained on them), and ``changes`` lists what changed
after which epoch, so the leak guard still catches an image only an earlier phase learnt from.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from flexunet.utils.errors import DataError
from flexunet.utils.io import read_image, write_json

log = logging.getLogger(__name__)

RECORD_FILE = "data_record.json"
THUMB = 16                 # thumbnail side in pixels
THUMB_SCALE = 64           # thumbnails are stored as uint16 of grey level x 64
NEAR_MEAN_DIFF = 0.5       # grey levels (0..255), mean over the thumbnail
_SHOWN = 3
_KEYS = ("name", "sha256", "pixels", "thumb")   # what every entry holds (the leak guard reads them)


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


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256s(paths: Sequence[Path], workers: int = 4) -> list[str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(file_sha256, paths))


def pair_hashes(pairs: Sequence[tuple[Path, Path]]) -> list[tuple[str, str]]:
    """(sha256 of the image's bytes, sha256 of the mask's bytes) per pair: what the data check compares."""
    return list(zip(file_sha256s([image for image, _ in pairs]), file_sha256s([mask for _, mask in pairs])))


@dataclass
class DataDiff:
    """The train and valid files of now against the run's record (:func:`compare_data`).

    ``doc``: the record as read (None: the run folder has none); ``hashes``: subset -> (image,
    mask) sha256 per current pair; ``changes``: subset -> ``added`` / ``removed`` / ``changed``
    image names (changed: same name, other image or mask bytes).
    """

    doc: dict[str, Any] | None
    hashes: dict[str, list[tuple[str, str]]]
    changes: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(names for kinds in self.changes.values() for names in kinds.values())

    def summary(self) -> str:
        """``2 train images added, 2 removed, 1 changed; 1 valid image removed (e.g. train 1004.png added)``."""
        parts, examples = [], []
        for subset, kinds in self.changes.items():
            counts = [(len(names), kind) for kind, names in kinds.items() if names]
            if not counts:
                continue
            (n, kind), rest = counts[0], counts[1:]
            parts.append(", ".join([f"{n} {subset} image{'s' if n != 1 else ''} {kind}"] +
                                   [f"{m} {k}" for m, k in rest]))
            examples += [f"{subset} {name} {kind}" for kind, names in kinds.items() for name in names[:2]]
        shown = ", ".join(examples[:_SHOWN]) + (", ..." if len(examples) > _SHOWN else "")
        return f"{'; '.join(parts)} (e.g. {shown})" if parts else "no change"


def _current(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of the data the run trains on now (not those of an earlier phase)."""
    return [e for e in entries if e.get("until_epoch") is None]


def compare_data(model_dir: Path, subsets: dict[str, Sequence[tuple[Path, Path]]]) -> DataDiff:
    """Compare the (image, mask) pairs of each subset with the run's record: by image name, the sha256
    of the image's and the mask's bytes (a record without mask hashes: the images only)."""
    doc = _read_doc(Path(model_dir) / RECORD_FILE)
    hashes = {subset: pair_hashes(pairs) for subset, pairs in subsets.items()}
    diff = DataDiff(doc, hashes)
    if doc is None:
        return diff
    for subset, pairs in subsets.items():
        before = {e["name"]: e for e in _current(doc["subsets"].get(subset, []))}
        now = {image.name: h for (image, _), h in zip(pairs, hashes[subset])}
        diff.changes[subset] = {
            "added": [n for n in now if n not in before],
            "removed": [n for n in before if n not in now],
            "changed": [n for n, (image_sha, mask_sha) in now.items() if n in before and (
                before[n]["sha256"] != image_sha or before[n].get("mask_sha256", mask_sha) != mask_sha)]}
    return diff


def write_record(model_dir: Path, subsets: dict[str, Sequence[tuple[Path, Path]]], diff: DataDiff | None = None,
                 epoch: int = 0) -> Path:
    """Write ``<model_dir>/data_record.json`` for the (image, mask) pairs of each subset; return its path.

    Without ``diff`` (or ``diff.doc`` None) a new record.  With it (``train --resume``) the record
    merges: entries of unchanged images are kept (not fingerprinted again), images that left the
    data stay with ``until_epoch = epoch``, and a change is appended to ``changes`` (unchanged: not rewritten).
    """
    old = diff.doc if diff is not None else None
    doc: dict[str, Any] = {"version": 2, "thumb_size": THUMB, "thumb_scale": THUMB_SCALE, "subsets": {},
                           "changes": list(old.get("changes", [])) if old is not None else []}
    if diff is not None and diff.changed:
        doc["changes"].append({"after_epoch": epoch, "summary": diff.summary(), **diff.changes})
    gone = [s for s in (old["subsets"] if old is not None else {}) if s not in subsets]
    for subset, pairs in [*subsets.items(), *((s, []) for s in gone)]:
        recorded = old["subsets"].get(subset, []) if old is not None else []
        known = {(e["name"], e["sha256"]): e for e in _current(recorded)}
        if diff is not None and subset in diff.hashes:
            hashes: Sequence[tuple[str | None, str]] = diff.hashes[subset]
        else:  # a new record: an image's sha256 comes with its fingerprint, so only the masks are hashed here
            hashes = [(None, mask_sha) for mask_sha in file_sha256s([mask for _, mask in pairs])]
        keys = [(image.name, image_sha) for (image, _), (image_sha, _) in zip(pairs, hashes)]
        prints = iter(fingerprints([image for (image, _), key in zip(pairs, keys) if key not in known]))
        current = []
        for (image, mask), key, (_, mask_sha) in zip(pairs, keys, hashes):
            fp = {k: known[key][k] for k in _KEYS} if key in known else next(prints)
            current.append({**fp, "mask_sha256": mask_sha, "image": str(image), "mask": str(mask)})
        kept = {(e["name"], e["sha256"]) for e in current}
        earlier: dict[tuple[str, str], dict[str, Any]] = {}
        for e in recorded:  # what an earlier phase learnt from and the data no longer holds
            key = (e["name"], e["sha256"])
            if key in kept:
                continue
            left = {**e, "until_epoch": e.get("until_epoch", epoch)}
            if key not in earlier or left["until_epoch"] > earlier[key]["until_epoch"]:
                earlier[key] = left
        doc["subsets"][subset] = current + list(earlier.values())
    path = Path(model_dir) / RECORD_FILE
    if doc != old:  # a resume on the same data leaves the record as it was
        write_json(path, doc)
    return path


def _read_doc(path: Path) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if any(not set(_KEYS) <= set(e) for entries in doc["subsets"].values() for e in entries):
            raise KeyError(f"an entry without one of {', '.join(_KEYS)}")
        return doc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); expected the data record `flexunet train` writes — "
                        f"train again, or delete it to skip the leak check") from None


def read_record(model_dir: Path) -> list[dict[str, Any]] | None:
    """Every recorded entry (with its ``subset``; an earlier phase's too), or None when the run folder has none."""
    doc = _read_doc(Path(model_dir) / RECORD_FILE)
    if doc is None:
        return None
    return [{**e, "subset": s} for s, entries in doc["subsets"].items() for e in entries]


def find_overlaps(test_images: Sequence[Path], record: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test image that matches a recorded image: ``image``, ``match`` (recorded name and subset), ``how``."""
    if not record or not test_images:
        return []
    by_bytes: dict[str, dict[str, Any]] = {}
    by_pixels: dict[str, dict[str, Any]] = {}
    for e in sorted(record, key=lambda e: "until_epoch" in e):  # a match in the current data names it first
        by_bytes.setdefault(e["sha256"], e)
        by_pixels.setdefault(e["pixels"], e)
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
                      "how": how, **({"until_epoch": match["until_epoch"]} if "until_epoch" in match else {})})
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
    shown = "; ".join(f"{Path(f['image']).name} is {f['how']} {Path(f['match']).name} ({f['subset']}"
                      f"{' until epoch %d' % f['until_epoch'] if 'until_epoch' in f else ''})"
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
