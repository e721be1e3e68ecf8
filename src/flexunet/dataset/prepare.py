"""Raw TEKNOFEST folder or NIfTI volumes -> master dataset of square, resized image/mask pairs.

``prepare_dataset`` reads ``[prepare] raw_dir`` (the folder holding ``PNG/ MASKS/
DICOM/`` or any parent of it; with ``source = "nifti"`` nnU-Net's raw layout or a folder of
NIfTI image/label pairs, cut into axial slices: :mod:`flexunet.dataset.prepare_nifti`),
pairs each slice with ``MASKS/<id>.png`` by name, pads
it to a square (image background from the image border, mask background class 0),
resizes it to ``size`` (images by area or bilinear, masks by nearest only; one slice:
:mod:`flexunet.dataset.prepare_slice`) and writes

    <output_dir>/images/<id>.png     RGB slice
    <output_dir>/masks/<id>.png      colour mask, every pixel an rgb_map colour (grey class-index
                                     mask with [mask] format = "index")
    <output_dir>/manifest.csv|json   a row per slice: sources, group, classes, pixels

The output folder is built beside the target and renamed into place at the end, so
it is whole or absent; raw inputs are only read.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.config.inputs import inputs_outside
from flexunet.config.loader import Config
from flexunet.dataset.masks import describe_unmapped
from flexunet.dataset.nifti import ORIENTATION
from flexunet.dataset.prepare_nifti import (UNLABELLED, find_layout, given_class_names, nifti_class_names,
                                            process_volume, volume_jobs)
from flexunet.dataset.prepare_slice import SliceJob, SliceOutput, process_slice
from flexunet.dataset.records import MANIFEST_VERSION, RECORD_NAMES, rgb_map_list, write_manifest
from flexunet.utils.errors import DataError, FlexUNetError, MaskError
from flexunet.utils.io import DICOM_SUFFIXES, IMAGE_SUFFIXES, by_stem, list_files
from flexunet.utils.outputs import atomic_output_dir
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

RAW_LEAF = "YARISMA-VERI-SETI_2_OTURUM"
_MIN_PARALLEL = 16          # fewer slices than this are prepared serially
_SEARCH_DEPTH = 4           # how deep below raw_dir the MASKS/ folder is looked for
_LIST_LIMIT = 10            # names shown in one warning


# --------------------------------------------------------------------------- finding inputs


def _child(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively, or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if p.is_dir() and p.name.lower() == name.lower():
                return p
    return None


def find_raw_root(raw_dir: Path) -> Path | None:
    """The folder holding MASKS/: ``raw_dir`` itself, else a YARISMA-VERI-SETI_2_OTURUM
    below it, else the single folder below it that holds MASKS/ (None if none or several)."""
    if _child(raw_dir, "MASKS") is not None:
        return raw_dir
    found: list[Path] = []
    for root, dirs, files in os.walk(raw_dir):
        depth = len(Path(root).relative_to(raw_dir).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if depth >= _SEARCH_DEPTH or any(name in files for name in RECORD_NAMES):
            dirs[:] = []     # too deep, or FlexUNet's own output (masks/ of a master or split)
            continue
        if any(d.upper() == "MASKS" for d in dirs):
            found.append(Path(root))
    preferred = [p for p in found if p.name.upper() == RAW_LEAF]
    candidates = preferred or found
    if len(candidates) > 1:
        raise DataError(f"{raw_dir}: several folders hold MASKS/ ({', '.join(str(c) for c in candidates)}); "
                        f"expected one — point [prepare] raw_dir at the one to use")
    return candidates[0] if candidates else None


ONE_PER_SLICE = "one file per slice id — remove or rename one of them"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f", ... ({len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else "")


# --------------------------------------------------------------------------- running


def _workers(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def _run(jobs: list[Any], work: Callable[[Any], Any], workers: int, progress: bool, unit: str,
         min_parallel: int) -> list[Any]:
    """``work(job)`` for every job, in ``workers`` processes when there are ``min_parallel`` jobs or more."""
    bar = Progress(jobs, "prepare", total=len(jobs), enabled=progress, unit=unit)
    if workers <= 1 or len(jobs) < min_parallel:
        return list(map(work, bar))
    results: list[Any] = []
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=_mp_context()) as pool:
            pending = {pool.submit(work, job) for job in jobs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    error = fut.exception()
                    if error is not None:
                        for other in pending:
                            other.cancel()
                        raise error
                    results.append(fut.result())
                    bar.update()
    except BrokenProcessPool:
        raise FlexUNetError("prepare: a worker process died (out of memory?); set [prepare] workers = 1 "
                            "(or fewer workers) and run again") from None
    bar.close()
    return results


def _mp_context() -> Any:
    """fork where it is safe (fast, no re-import of the caller's script); spawn once a
    threaded framework such as TensorFlow is loaded, since forking it can deadlock."""
    threaded = any(name in sys.modules for name in ("tensorflow", "torch", "jax"))
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and not threaded else "spawn")


def _pairs(cfg: Config, root: Path) -> tuple[list[tuple[str, Path, Path, Path | None]], list[Path], list[Path]]:
    """(id, image, mask, header) pairs, images without masks, masks without images."""
    p = cfg.prepare
    folder_name = "DICOM" if p.source == "dicom" else "PNG"
    image_dir, mask_dir = _child(root, folder_name), _child(root, "MASKS")
    if image_dir is None:
        raise DataError(f"{root}: no {folder_name}/ folder beside MASKS/; expected {folder_name}/ "
                        f"for [prepare] source = \"{p.source}\"")
    assert mask_dir is not None
    suffixes = DICOM_SUFFIXES if p.source == "dicom" else IMAGE_SUFFIXES
    images = by_stem(list_files(image_dir, suffixes), ONE_PER_SLICE)
    jpeg = list_files(mask_dir, (".jpg", ".jpeg"))
    if jpeg:
        raise MaskError(f"{jpeg[0]}: JPEG mask refused ({len(jpeg)} in {mask_dir}) — lossy compression "
                        f"invents colours at class borders; save masks as PNG")
    masks = by_stem(list_files(mask_dir, (".png",)), ONE_PER_SLICE)
    dicom_dir = _child(root, "DICOM") if p.source == "png" else None
    headers = by_stem(list_files(dicom_dir, DICOM_SUFFIXES), ONE_PER_SLICE) if dicom_dir else {}
    pairs = [(s, images[s], masks[s], headers.get(s)) for s in sorted(set(images) & set(masks))]
    lonely_images = [images[s] for s in sorted(set(images) - set(masks))]
    lonely_masks = [masks[s] for s in sorted(set(masks) - set(images))]
    return pairs, lonely_images, lonely_masks


def _report_unpaired(cfg: Config, root: Path, lonely_images: list[Path], lonely_masks: list[Path],
                     mask_dir: str = "MASKS") -> None:
    if not lonely_images and not lonely_masks:
        return
    parts = []
    if lonely_images:
        parts.append(f"{len(lonely_images)} image(s) without a mask in {mask_dir}/: "
                     f"{_listing([p.name for p in lonely_images])}")
    if lonely_masks:
        parts.append(f"{len(lonely_masks)} mask(s) without an image: {_listing([p.name for p in lonely_masks])}")
    text = "; ".join(parts)
    if cfg.prepare.strict_pairs:
        first = (lonely_images or lonely_masks)[0]
        raise DataError(f"{first}: unpaired ({text}); expected every image to have a mask of the same "
                        f"name — add the missing files or set [prepare] strict_pairs = False to skip them")
    log.warning("%s: skipped %s", root, text)


def _check_unmapped(cfg: Config, rows: list[dict[str, Any]]) -> None:
    bad = [(r["source_mask"], r["_unmapped"]) for r in rows if r["_unmapped"]]
    if not bad:
        return
    detail = "; ".join(f"{Path(m).name}: {describe_unmapped(u, 3)}" for m, u in bad[:5])
    more = f"; ... ({len(bad) - 5} more masks)" if len(bad) > 5 else ""
    if not cfg.mask.map_unmapped:
        raise MaskError(f"{bad[0][0]}: {len(bad)} mask(s) hold colours not in [mask] rgb_map "
                        f"within tolerance {cfg.mask.tolerance:g} ({detail}{more}); fix the masks, or "
                        f"raise [mask] tolerance, or set map_unmapped = True to map them to the nearest class")
    log.warning("mapped off-palette colours to the nearest class in %d mask(s): %s%s", len(bad), detail, more)


@dataclass
class _Source:
    """What one kind of raw data gives prepare: its jobs (made once the output folder exists) and their work."""

    root: Path
    count: int                                 # slices (PNG, DICOM) or volumes (NIfTI)
    unit: str
    jobs: Callable[[Path], list[Any]]          # output folder -> jobs
    work: Callable[[Any], Any]                 # job -> a manifest row (a slice) or a list of rows (a volume)
    min_parallel: int
    lonely_images: list[Path]
    lonely_masks: list[Path]
    class_names: tuple[str, ...]
    header: dict[str, Any]


def _slice_source(cfg: Config, raw_dir: Path, classes: Sequence[str] | None) -> _Source:
    p = cfg.prepare
    root = find_raw_root(raw_dir)
    if root is None:
        raise cfg.error("prepare", "raw_dir", f"the folder holding PNG/ MASKS/ DICOM/ or a parent of it "
                                              f"(no MASKS/ folder in {raw_dir} or {_SEARCH_DEPTH} levels below)")
    pairs, lonely_images, lonely_masks = _pairs(cfg, root)
    _report_unpaired(cfg, root, lonely_images, lonely_masks)
    if not pairs:
        raise DataError(f"{root}: no slice has a mask of the same name in MASKS/; expected "
                        f"{'DICOM/<id>.dcm' if p.source == 'dicom' else 'PNG/<id>.png'} with MASKS/<id>.png")

    def jobs(tmp: Path) -> list[SliceJob]:
        output = SliceOutput.of(cfg, tmp)
        return [SliceJob(sid, image, mask, header, p.source, cfg.mask.tolerance, output)
                for sid, image, mask, header in pairs]

    names = given_class_names(cfg, classes) if classes else cfg.class_names
    return _Source(root, len(pairs), "slice", jobs, process_slice, _MIN_PARALLEL, lonely_images, lonely_masks,
                   names, {})


def _nifti_source(cfg: Config, raw_dir: Path, classes: Sequence[str] | None) -> _Source:
    layout = find_layout(raw_dir)
    _report_unpaired(cfg, layout.root, layout.lonely_images, layout.lonely_labels, layout.label_dir)
    if not layout.pairs:
        raise DataError(f"{layout.root}: no image volume has a label volume of the same case in "
                        f"{layout.label_dir}/; expected imagesTr/CASE_0000.nii.gz with labelsTr/CASE.nii.gz")
    names = nifti_class_names(cfg, layout, classes)
    if layout.unlabelled:
        log.info("%s: %d unlabelled volume(s), not prepared; predict them with `flexunet infer` "
                 "([infer] images_dir = %s)", layout.root / UNLABELLED, len(layout.unlabelled),
                 layout.root / UNLABELLED)
    log.info("NIfTI volumes (%s layout) reoriented to %s", layout.kind, ORIENTATION)
    header = {"layout": layout.kind, "orientation": ORIENTATION,
              "unlabelled": [str(x) for x in layout.unlabelled]}
    return _Source(layout.root, len(layout.pairs), "volume", lambda tmp: volume_jobs(cfg, layout, names, tmp),
                   process_volume, 2, layout.lonely_images, layout.lonely_labels, names, header)


def prepare_dataset(cfg: Config, overwrite: bool = False, progress: bool = True,
                    classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Build the master dataset of ``[prepare]``; return a summary.

    ``classes``: class names (background optional) for the manifest, instead of [dataset] class_names
    (or, for NIfTI, dataset.json's labels).  Summary keys: ``output_dir``, ``raw_root``, ``count``,
    ``skipped_images``, ``skipped_masks``, ``groups``, ``slices_with_class`` and ``pixels`` (per class
    name), ``unmapped_pixels``.
    """
    p = cfg.prepare
    raw_dir = cfg.require_dir("prepare", "raw_dir", "raw dataset folder")
    out_dir = Path(cfg.require("prepare", "output_dir", "the master dataset folder to create"))
    source = _nifti_source(cfg, raw_dir, classes) if p.source == "nifti" else _slice_source(cfg, raw_dir, classes)
    root = source.root
    if (p.size, p.size) != (cfg.model.image_height, cfg.model.image_width):
        log.info("[prepare] size = %d differs from [model] image_height x image_width = %d x %d; "
                    "the slices will be resized again when loaded", p.size, cfg.model.image_height,
                    cfg.model.image_width)
    class_names = source.class_names
    workers = _workers(p.workers)
    log.info("preparing %d %ss from %s (%s) into %s with %d worker(s)", source.count, source.unit, root, p.source,
             out_dir, workers if source.count >= source.min_parallel else 1)
    # the slices found (raw_dir may be a parent holding prepare's output too) and every other input
    inputs = [("[prepare] raw_dir", root),
              *((label, p) for label, p in inputs_outside(cfg, out_dir) if label != "[prepare] raw_dir")]
    with atomic_output_dir(out_dir, "prepare", overwrite, "[prepare] output_dir", inputs) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        results = _run(source.jobs(tmp), source.work, workers, progress, source.unit, source.min_parallel)
        flat = [r for result in results for r in (result if isinstance(result, list) else [result])]
        rows = sorted(flat, key=lambda r: r["id"])
        _check_unmapped(cfg, rows)
        notes = [n for r in rows for n in r.pop("_notes")]
        for r in rows:
            r.pop("_unmapped")
        _log_notes(notes)
        header = {
            "version": MANIFEST_VERSION, "raw_root": str(root), "source": p.source, "size": p.size,
            "image_resize": p.image_resize,
            "window": (None if p.source == "png" else "three_windows" if p.three_windows
                       else [p.window_center, p.window_width]),
            "rgb_map": rgb_map_list(cfg.mask.rgb_map), "mask_format": cfg.mask.format,
            "class_names": list(class_names), **source.header,
            "skipped_images": [str(x) for x in source.lonely_images],
            "skipped_masks": [str(x) for x in source.lonely_masks],
        }
        write_manifest(tmp, rows, header, class_names)
    summary = _summary(rows, class_names)
    summary.update(output_dir=out_dir, raw_root=root, skipped_images=len(source.lonely_images),
                   skipped_masks=len(source.lonely_masks))
    log.info("prepared %d slices in %d group(s) into %s", summary["count"], summary["groups"], out_dir)
    return summary


def _log_notes(notes: list[str]) -> None:
    """Log per-file warnings, folding repeats of the same kind into one line."""
    rescale = [n for n in notes if "used the defaults slope 1, intercept 0" in n]
    others = [n for n in notes if n not in rescale]
    if rescale:
        files = [n.split(": ", 1)[0] for n in rescale]
        log.warning("%d DICOM file(s) lack RescaleSlope/RescaleIntercept; used the defaults slope 1, "
                    "intercept 0 (stored values taken as HU): %s", len(files), _listing(files))
    for n in others[:_LIST_LIMIT]:
        log.warning("%s", n)
    if len(others) > _LIST_LIMIT:
        log.warning("... and %d more warnings of the same kinds", len(others) - _LIST_LIMIT)


def _summary(rows: list[dict[str, Any]], class_names: tuple[str, ...]) -> dict[str, Any]:
    n = len(class_names)
    slices = [sum(1 for r in rows if c in r["classes"]) for c in range(n)]
    pixels = [sum(r["pixels"][c] for r in rows) for c in range(n)]
    return {
        "count": len(rows),
        "groups": len({r["group"] for r in rows}),
        "slices_with_class": dict(zip(class_names, slices)),
        "pixels": dict(zip(class_names, pixels)),
        "unmapped_pixels": sum(r["unmapped_pixels"] for r in rows),
    }
