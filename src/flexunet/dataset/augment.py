"""``flexunet augment``: the offline stage, named augmented copies of the training pairs on disk.

1. :func:`variants` lists the outputs the ``[augmentor]`` section asks for, named as the
   original tool named them (``hflipped_10001.png``, ``deformed_alpha_1300_sigmoid_8_10001.png``
   ...), each drawn from its own seeded generator (:func:`variant_rng`);
2. :func:`augment_dataset` writes them next to the train (and optionally valid) originals,
   told from earlier outputs by the split's file list (:mod:`flexunet.dataset.records`) or by name.

The transforms themselves are pure and live in :mod:`flexunet.dataset.transforms` (also used by the
pipeline's online augmentation).
"""

from __future__ import annotations

import hashlib
import io as _io
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from flexunet.config.loader import Config
from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.utils.io import pair_by_name, read_image, save_image, write_bytes
from flexunet.dataset.masks import read_config_mask, save_mask
from flexunet.utils.outputs import claim_output_dir, overlap, owner_of
from flexunet.utils.progress import Progress
from flexunet.dataset.records import find_split, split_subset_stems
from flexunet.dataset.transforms import (Pair, barrel_distort, brighten, elastic, grid_distort, hflip, rotate, sharpen, shear,
                                 shrink, vflip)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- offline variants


def _num(x: float) -> str:
    """A number as the original wrote it, without a trailing .0: 1300.0 -> '1300', 0.02 -> '0.02'."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


def _ratio(x: float) -> str:
    """The original wrote shrink and shear factors with '_' for '.': 0.8 -> '0_8'."""
    return _num(x).replace(".", "_")


@dataclass(frozen=True)
class Variant:
    """One offline output per source: ``name`` is the file prefix (``rotated_90``)."""

    name: str
    transform: Callable[[np.ndarray, np.ndarray, np.random.Generator], Pair] = field(compare=False)
    random: bool = False

    def apply(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        if self.random and rng is None:
            raise ValueError(f"variant {self.name} is random: pass a numpy Generator")
        return self.transform(image, mask, rng)

    def filename(self, source: str | Path, suffix: str = ".png") -> str:
        """``<name>_<source stem><suffix>``: ``hflipped_10001.png``."""
        return f"{self.name}_{Path(source).stem}{suffix}"


AUGMENTED_PREFIXES = ("hflipped", "vflipped", "hfliped", "vfliped", "hvflipped", "rotated", "shrinked",
                      "sheared", "deformed", "distorted", "barrdistorted", "pincdistorted", "sharpened",
                      "brightened")
_AUGMENTED = re.compile(r"^(?:%s)_" % "|".join(AUGMENTED_PREFIXES))


def is_augmented(name: str | Path) -> bool:
    """True for a file named as an augmentation output (ours or the original tool's)."""
    return bool(_AUGMENTED.match(Path(name).name))


def variants(cfg: Config) -> list[Variant]:
    """The offline outputs the config asks for, in the original's order and naming."""
    a = cfg.augmentor
    out: list[Variant] = []
    if a.hflip:
        out.append(Variant("hflipped", lambda i, m, g: hflip(i, m)))
    if a.vflip:
        out.append(Variant("vflipped", lambda i, m, g: vflip(i, m)))
    if a.rotation:
        out += [Variant(f"rotated_{_num(t)}", lambda i, m, g, t=t: rotate(i, m, t)) for t in a.angles]
    out += [Variant(f"shrinked_{_ratio(f)}", lambda i, m, g, f=f: shrink(i, m, f)) for f in a.shrinks]
    out += [Variant(f"sheared_{_ratio(s)}", lambda i, m, g, s=s: shear(i, m, s)) for s in a.shears]
    if a.deformation:
        d = cfg.deformation
        for s in d.sigmoids or (d.sigmoid,):
            out.append(Variant(f"deformed_alpha_{_num(d.alpha)}_sigmoid_{_num(s)}",
                               lambda i, m, g, s=s: elastic(i, m, d.alpha, s, g), random=True))
    if a.distortion:
        d2 = cfg.distortion
        rs, sg = d2.gaussian_filter_rsigma, d2.gaussian_filter_sigma
        for amt in d2.distortions:
            # the original labels the image sigma "rsigma" and the field's rsigma "sigma"
            out.append(Variant(f"distorted_{_num(amt)}_rsigma{_num(sg)}_sigma{_num(rs)}",
                               lambda i, m, g, amt=amt: grid_distort(i, m, amt, rs, sg, g), random=True))
    for flag, prefix, s in ((a.barrdistortion, "barrdistorted", cfg.barrdistortion),
                            (a.pincdistortion, "pincdistorted", cfg.pincdistortion)):
        if flag:
            # output i distorts at centres 0..i in turn, as the original's outputs did
            for n in range(len(s.centers)):
                out.append(Variant(f"{prefix}_{1001 + n}_{_num(s.radius)}_{_num(s.amount)}",
                                   lambda i, m, g, s=s, n=n: barrel_distort(i, m, s.radius, s.amount,
                                                                            s.centers[:n + 1])))
    if a.sharpening:
        k = cfg.sharpening.k
        out.append(Variant(f"sharpened_{_num(k)}", lambda i, m, g: sharpen(i, m, k)))
    if a.brightening:
        b = cfg.brightening
        out.append(Variant(f"brightened_{_num(b.alpha)}_{_num(b.beta)}",
                           lambda i, m, g: brighten(i, m, b.alpha, b.beta)))
    unique = {v.name: v for v in reversed(out)}     # a value listed twice gives one output
    if len(unique) < len(out):
        log.warning("[augmentor]: %d repeated value(s) give the same output name; written once",
                    len(out) - len(unique))
    return [v for v in out if unique.get(v.name) is v]


def variant_rng(seed: int, stem: str, variant: str) -> np.random.Generator:
    """The generator for one (source, variant): same on every run, whatever the order."""
    words = [int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "little") for s in (stem, variant)]
    return np.random.default_rng([int(seed)] + words)


# --------------------------------------------------------------------------- offline dataset


def _originals(images_dir: Path, masks_dir: Path, subset: str, cfg: Config) -> list[tuple[Path, Path]]:
    pairs = pair_by_name(images_dir, masks_dir, mask_suffixes=(cfg.mask.mask_file_format,))
    split = find_split(images_dir, cfg)
    listed = split_subset_stems(split, subset) if split is not None else None
    originals = [(i, m) for i, m in pairs
                 if not is_augmented(i) and (listed is None or i.stem in listed)]
    log.info("%s: %d original pair(s) of %d (%s)", images_dir, len(originals), len(pairs),
             "split.json" if listed is not None else "by name")
    return originals


def _write_mask(path: Path, index: np.ndarray, cfg: Config, palette: list[int] | None = None) -> None:
    """A mask in the format its source was read in: .npz, a colour PNG, or a class-index PNG (grey, or
    palette with the source's ``palette``)."""
    if path.suffix == ".npz":
        buf = _io.BytesIO()
        np.savez_compressed(buf, mask=index)
        write_bytes(path, buf.getvalue())
    else:
        save_mask(path, index, cfg.mask.rgb_map, cfg.mask.format, palette)


def _jobs(cfg: Config) -> list[tuple[str, Path, Path, list[tuple[Path, Path]]]]:
    subsets = ["train"] + (["valid"] if cfg.augmentor.augment_valid else [])
    jobs = []
    for subset in subsets:
        images_dir = cfg.require_dir(subset, "images_dir", f"{subset} images folder")
        masks_dir = cfg.require_dir(subset, "masks_dir", f"{subset} masks folder")
        jobs.append((subset, images_dir, masks_dir, _originals(images_dir, masks_dir, subset, cfg)))
    return jobs


def _augment_pair(cfg: Config, todo: list[Variant], img_path: Path, mask_path: Path,
                  images_dir: Path, masks_dir: Path, created: list[Path]) -> list[str]:
    """Write every variant of one source pair; the names of the variants written.

    Files that did not exist before are added to ``created`` before they are written."""
    image = read_image(img_path, channels=3)
    decoded = read_config_mask(mask_path, cfg)
    mask = decoded.index
    if image.shape[:2] != mask.shape:
        raise DataError(f"{img_path}: image is {image.shape[1]}x{image.shape[0]} but its mask "
                        f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}; expected the same size")
    for v in todo:
        rng = variant_rng(cfg.train.seed, img_path.stem, v.name) if v.random else None
        out_image, out_mask = v.apply(image, mask, rng)
        # each file atomic; mask first, so an interrupted run never leaves an image without mask
        mask_out = masks_dir / v.filename(img_path, cfg.mask.mask_file_format)
        image_out = images_dir / v.filename(img_path)
        created.extend(p for p in (mask_out, image_out) if not p.exists())
        _write_mask(mask_out, out_mask, cfg, decoded.palette)
        save_image(image_out, out_image)
    return [v.name for v in todo]


def _check_targets(cfg: Config, jobs: list) -> None:
    """Augmented copies go beside the originals of train (valid) only: never into a folder that is also
    the test, infer or (for train) valid folder, with or without --overwrite.  (They never replace an
    original: originals are the files not named as augmented copies.)"""
    guarded = [("test", "images_dir"), ("test", "masks_dir"), ("infer", "images_dir")]
    if not cfg.augmentor.augment_valid:
        guarded += [("valid", "images_dir"), ("valid", "masks_dir")]
    for subset, images_dir, masks_dir, _ in jobs:
        for folder in (images_dir, masks_dir):
            for section, key in guarded:
                other = getattr(getattr(cfg, section), key)
                if other is not None and section != subset and overlap(folder, other):
                    raise FlexUNetError(f"[{subset}] {folder}: {overlap(folder, other)} [{section}] {key} = {other}; "
                                        f"augmented copies would land in the {section} data — give each subset "
                                        f"its own folders")


def augment_dataset(cfg: Config, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the :func:`variants` of every original train pair (and valid with
    ``augment_valid``; test never) beside it.  Reruns give identical files; existing
    outputs are an error unless ``overwrite``.  Returns a summary."""
    start = time.perf_counter()
    todo = variants(cfg)
    jobs = _jobs(cfg)
    suffix = cfg.mask.mask_file_format
    summary: dict = {"sources": sum(len(j[3]) for j in jobs), "written": 0,
                     "subsets": {j[0]: len(j[3]) for j in jobs}, "variants": {v.name: 0 for v in todo}}
    if not todo:
        log.warning("[augmentor] enables no transform; nothing to write")
    targets = [(images_dir / v.filename(i), masks_dir / v.filename(i, suffix))
               for _, images_dir, masks_dir, pairs in jobs for i, _ in pairs for v in todo]
    _check_targets(cfg, jobs)
    existing = [p for both in targets for p in both if p.exists()]
    strangers = [p for p in existing if owner_of(p) != "augment"]
    if strangers:
        raise FlexUNetError(f"{strangers[0].parent}: {len(strangers)} file(s) named as augmented copies were "
                            f"not written by `flexunet augment` (e.g. {strangers[0].name}); it never replaces a "
                            f"file it did not write, with or without --overwrite — move them away")
    if existing and not overwrite:
        raise FlexUNetError(f"{existing[0].parent}: {len(existing)} augmented file(s) already exist "
                            f"(e.g. {existing[0].name}); use overwrite (--overwrite) to regenerate them")
    created: list[Path] = []
    try:
        for subset, images_dir, masks_dir, pairs in jobs:
            for img_path, mask_path in Progress(pairs, f"augment {subset}", enabled=progress):
                for name in _augment_pair(cfg, todo, img_path, mask_path, images_dir, masks_dir, created):
                    summary["variants"][name] += 1
                    summary["written"] += 1
    except BaseException:  # all or nothing: a failed run takes back the files it added
        for path in created:
            path.unlink(missing_ok=True)
        raise
    for folder in sorted({p.parent for both in targets for p in both}):  # what augment may replace next time
        claim_output_dir(folder, "augment", [p.name for both in targets for p in both if p.parent == folder])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    log.info("augmented %d source pair(s): %d new pair(s) in %.1f s", summary["sources"],
             summary["written"], summary["seconds"])
    return summary
