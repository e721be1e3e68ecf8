"""``flexunet infer``: masks for every image of a folder, streamed in batches.

For each PNG, JPG, TIF, BMP or DICOM file of ``[infer] images_dir`` (``[tiledinfer]``
with ``--tiled``):

1. read it (DICOM through the ``[prepare]`` window, or the three CT windows as RGB);
2. predict in batches of ``[infer] batch_size``: resized (bilinear) to the model input, or
   with ``--tiled`` in ``split_size`` tiles overlapping by ``overlapping`` pixels whose
   softmax outputs are blended with linear ramps, so no seam shows;
3. optionally average the softmax over identity, horizontal and vertical flips
   (``flip_tta``), decide each pixel's class (the argmax, lesion classes weighted by
   ``foreground_weight``: :func:`flexunet.model.predict.decide`), resize it back to the
   input's size (nearest) and set predicted components smaller than ``min_component_size``
   pixels to background;
4. write ``<output_dir>/<stem>.png``: a 'P' mode PNG, pixel = class index, palette =
   rgb_map colours (as the original); optionally ``overlays/<stem>.png`` (mask over image,
   with a legend of class names) and ``class_index/<stem>.png`` (greyscale class indices);
5. DICOM inputs (``[infer] volumes``): ``volumes.csv``, the mL of every class per patient and
   series (:mod:`flexunet.inference.volumes`; a series with missing or uneven slice spacing is refused
   before anything is written); ``[infer] uncertainty`` (which turns flip averaging on):
   ``uncertainty/<stem>.png`` (heatmap) and ``.npy`` (float32 normalised entropy of the mean
   softmax, at the input's size) and ``uncertain_slices.csv``, slices ranked for review.

A folder of NIfTI volumes is predicted volume by volume instead: a label volume per input with
its shape, affine and header (or ``fmt`` "png": masks per slice), ``volumes.csv`` from the voxel
size, an uncertainty volume (:mod:`flexunet.inference.nifti_infer`).

While the model predicts one batch, worker threads read and decode the next and write the
last (at most two batches wait to be written); the last, short batch is padded to
``batch_size`` so the model is traced for one batch shape, and the padding dropped.  Every
file is written whole into a hidden folder (in ``output_dir``, or beside it when it is new)
and moved in once every image has succeeded: an error (an unreadable image, a failing
write) leaves ``output_dir`` as it was.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from flexunet.config.loader import Config
from flexunet.dataset.dicom import read_dicom
from flexunet.dataset.nifti import is_nifti, list_nifti
from flexunet.inference.nifti_infer import infer_volumes
from flexunet.inference.volumes import (SliceGeometry, check_pixel_spacing, geometry_from_meta, group_series,
                                        hemorrhage_classes, series_volumes, slice_spacing)
from flexunet.inference.writing import (UNCERTAIN_FILE, VOLUMES_FILE, SliceOutputs, protected_dirs, staged,
                                        write_tables)
from flexunet.model.postprocess import ComponentSizes, run_sizes
from flexunet.model.predict import model_batch, predict_probs, predict_tiled, prediction_flips, read_input, tile_starts
from flexunet.model.precision import model_precision
from flexunet.model.trained import load_trained
from flexunet.utils.errors import DataError
from flexunet.utils.io import DICOM_SUFFIXES, IMAGE_SUFFIXES, by_stem, list_files
from flexunet.utils.outputs import check_output_dir, claim_output_dir
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


def _list_inputs(folder: Path) -> list[Path]:
    files, volumes = list_files(folder, INPUT_SUFFIXES), list_nifti(folder)
    if files and volumes:
        raise DataError(f"{folder}: holds NIfTI volumes ({volumes[0].name}, ...) and image slices "
                        f"({files[0].name}, ...); expected one kind — put them in separate folders")
    if volumes:
        return volumes
    if not files:
        raise DataError(f"{folder}: no images found; expected PNG, JPG, TIF, BMP or DICOM (.dcm) files, or NIfTI "
                        f"volumes (.nii, .nii.gz)")
    by_stem(files, "one input per name (both would be written to the same <name>.png) — rename one")
    return files


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- the command


def _output_names(files: Sequence[Path], cfg: Config) -> list[str]:
    extra = (["overlays"] if cfg.infer.overlays else []) + (["class_index"] if cfg.infer.class_index_masks else [])
    extra += [VOLUMES_FILE] if _wants_volumes(cfg, files) else []
    extra += ["uncertainty", UNCERTAIN_FILE] if cfg.infer.uncertainty else []
    return [f"{p.stem}.png" for p in files] + extra


def _wants_volumes(cfg: Config, files: Sequence[Path]) -> bool:
    return cfg.infer.volumes and any(p.suffix.lower() in DICOM_SUFFIXES for p in files)


def volume_geometry(files: Sequence[Path]) -> dict[str, SliceGeometry]:
    """The geometry of every DICOM input by stem, each series checked (one line refusing when a volume
    would be a guess); PNG inputs, which carry no geometry, are left out."""
    # decoded whole (not just the header), so an unreadable slice is named for what it is first
    geometry = {p.stem: geometry_from_meta(p.name, read_dicom(p).meta) for p in files
                if p.suffix.lower() in DICOM_SUFFIXES}
    for series in group_series(list(geometry.values())).values():
        slice_spacing(series)
        check_pixel_spacing(series)
    return geometry


def _geometry_or_warn(cfg: Config, files: Sequence[Path]) -> dict[str, SliceGeometry]:
    """:func:`volume_geometry`; when ``[infer] volumes`` is left at its default, a series whose volume would
    be a guess costs the volumes (one warning), not the masks; set explicitly, it is refused."""
    try:
        return volume_geometry(files)
    except DataError as exc:
        if ("infer", "volumes") in cfg.origins:
            raise
        log.warning("no volumes.csv: %s (set [infer] volumes = True to make this an error, or False to "
                    "silence it)", exc)
        return {}


def volume_rows(geometry: dict[str, SliceGeometry], masks: dict[str, np.ndarray],
                class_names: Sequence[str]) -> list[dict[str, Any]]:
    """``volumes.csv`` rows of the predicted masks, series by series."""
    by_name = {g.name: stem for stem, g in geometry.items()}
    rows = []
    for series in group_series(list(geometry.values())).values():
        rows += series_volumes(series, [masks[by_name[s.name]] for s in series], class_names,
                               hemorrhage_classes(class_names))
    return rows


def _warn_tiles(cfg: Config, shape: tuple[int, ...]) -> None:
    """A warning when the tile overlap makes tiled inference cost far more than it needs to."""
    t = cfg.tiledinfer
    h, w = shape[:2]
    count = len(tile_starts(h, t.split_size, t.overlapping)) * len(tile_starts(w, t.split_size, t.overlapping))
    quarter = t.split_size // 4
    usual = len(tile_starts(h, t.split_size, quarter)) * len(tile_starts(w, t.split_size, quarter))
    if t.split_size - t.overlapping < t.split_size // 4 and count > 2 * usual:
        log.warning("[tiledinfer] overlapping = %d with split_size = %d: a stride of %d px, %d tiles per %dx%d "
                    "image (%d with overlapping = %d); lower overlapping to about split_size / 4",
                    t.overlapping, t.split_size, t.split_size - t.overlapping, count, w, h, usual, quarter)


def _warn_min_component(cfg: Config, sizes: ComponentSizes, shape: tuple[int, ...]) -> None:
    h, w = shape[:2]
    size = max(sizes.at((h, w)))
    if size:
        log.info("predicted components removed below: %s", sizes.text(cfg.class_names, (h, w)))
    if size > h * w:
        log.warning("[infer] min_component_size = %d is more than the %dx%d = %d pixels of an image: every "
                    "predicted component is removed and every mask is blank; lower it (or 0 to keep all)",
                    size, w, h, h * w)


DEFAULT_WORKERS = 2            # threads that read the next batch and write the last one while the model predicts


def infer_images(cfg: Config, model: Any = None, tiled: bool = False, progress: bool = True,
                 overwrite: bool = False, workers: int = DEFAULT_WORKERS, fmt: str | None = None) -> dict[str, Any]:
    """Predict every image of [infer] (or [tiledinfer] when ``tiled``) images_dir; return a summary.

    Summary keys: ``images``, ``seconds``, ``images_per_second``, ``output_dir``, ``tiled``,
    ``files`` (masks written), ``overlays``, ``class_index``, ``removed_components``, ``blank``
    (masks left without any foreground), ``volumes`` (rows of volumes.csv), ``uncertainty``
    (per slice: name, score, foreground_pixels, map).  ``output_dir`` must lie outside every input folder
    and be infer's own (or ``overwrite``: written beside the files there, none deleted).

    NIfTI volumes in images_dir are predicted volume by volume (:func:`flexunet.inference.nifti_infer.infer_volumes`):
    a label volume each (``fmt`` "nifti", the default for them) or PNG masks per slice (``fmt`` "png").

    Reading the next batch and writing the last one run in ``workers`` threads while the model
    predicts (0: all in this thread, one step after another; the outputs are the same bytes).
    Everything is written to a hidden folder in (or beside) ``output_dir`` first and moved in when every
    image has succeeded: an error leaves ``output_dir`` as it was (not created when it was not there).
    """
    section = "tiledinfer" if tiled else "infer"
    images_dir = cfg.require_dir(section, "images_dir", "folder of images to predict")
    out_dir = Path(cfg.require(section, "output_dir", "the folder the predicted masks go to"))
    if tiled and cfg.tiledinfer.overlapping >= cfg.tiledinfer.split_size:
        raise cfg.error("tiledinfer", "overlapping",
                        f"fewer pixels than split_size ({cfg.tiledinfer.split_size})")
    files = _list_inputs(images_dir)
    if is_nifti(files[0]):
        if tiled:
            raise DataError(f"{images_dir}: NIfTI volumes with --tiled; expected image slices for tiled inference "
                            f"(volumes are predicted slice by slice at the model's input size) — drop --tiled")
        return infer_volumes(cfg, files, out_dir, model, fmt or "nifti", progress, overwrite)
    if fmt == "nifti":
        raise DataError(f"--format nifti: {images_dir} holds image slices ({files[0].name}, ...); expected NIfTI "
                        f"volumes (.nii, .nii.gz) to write a label volume each — or --format png")
    names = _output_names(files, cfg)
    check_output_dir(out_dir, "infer", protected_dirs(cfg), overwrite, what=f"[{section}] output_dir",
                     writes=tuple(names))
    geometry = _geometry_or_warn(cfg, files) if _wants_volumes(cfg, files) else {}
    if cfg.infer.volumes and not geometry:
        log.info("no volumes.csv: the inputs are not DICOM, so they carry no slice geometry")
    if model is None:
        model = load_trained(cfg)
    summary: dict[str, Any] = {"images": 0, "output_dir": out_dir, "tiled": tiled, "files": [],
                               "compute_dtype": model_precision(model),
                               "overlays": [], "class_index": [], "removed_components": 0, "blank": 0,
                               "uncertainty": [], "volumes": []}
    masks: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    with staged(out_dir) as stage:
        _run_batches(cfg, model, files, tiled, SliceOutputs(stage, out_dir, set(geometry), run_sizes(cfg)), summary, masks,
                     progress, workers)
        if geometry:
            summary["volumes"] = volume_rows(geometry, masks, cfg.class_names)
            log.info("volumes of %d series -> %s", len({(r["patient"], r["series"]) for r in summary["volumes"]}),
                     out_dir / VOLUMES_FILE)
        write_tables(cfg, stage, summary["volumes"] if geometry else None, summary["uncertainty"])
        claim_output_dir(out_dir, "infer", names)
    if summary["removed_components"] and summary["blank"] == summary["images"]:
        log.warning("[infer] min_component_size = %s removed every predicted component: all %d masks are blank; "
                    "lower it", cfg.infer.min_component_size, summary["images"])
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, images_per_second=summary["images"] / seconds if seconds > 0 else 0.0)
    log.info("inferred %d image(s)%s in %.1f s (%.2f images/s, model in %s) -> %s", summary["images"],
             " tile by tile" if tiled else "", seconds, summary["images_per_second"], summary["compute_dtype"],
             out_dir)
    return summary


# --------------------------------------------------------------------------- the pipeline


class _Inline:
    """An executor that runs each task at once in the calling thread (``workers = 0``)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # re-raised by result(), in order, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _read_batch(cfg: Config, chunk: Sequence[Path], tiled: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The originals of ``chunk`` and (untiled) their model batch."""
    originals = [read_input(p, cfg) for p in chunk]
    return originals, None if tiled else model_batch(originals, cfg)


def _predict(cfg: Config, model: Any, originals: list[np.ndarray], batch: np.ndarray | None,
             flips: bool) -> list[np.ndarray]:
    """Softmax of each original: the batch padded to [infer] batch_size, or (``batch`` None) tile by tile."""
    size = cfg.infer.batch_size
    if batch is not None:
        return list(predict_probs(model, batch, flips, pad_to=size))
    t = cfg.tiledinfer
    return [predict_tiled(model, o, cfg, t.split_size, t.overlapping, size, flips)
            for o in originals]


def _run_batches(cfg: Config, model: Any, files: Sequence[Path], tiled: bool, outputs: SliceOutputs,
                 summary: dict[str, Any], masks: dict[str, np.ndarray], progress: bool, workers: int) -> None:
    """Read batch n+1 and write batch n-1 in worker threads while batch n is predicted here.

    At most two batches' outputs wait to be written; records are merged into ``summary`` in file order.
    """
    flips = prediction_flips(cfg)   # uncertainty: entropy over flips
    chunks = list(_chunks(files, 1 if tiled else cfg.infer.batch_size))
    pool: Any = ThreadPoolExecutor(workers, thread_name_prefix="infer") if workers > 0 else _Inline()
    bar = Progress([], "infer", total=len(files), enabled=progress, unit="img")
    writing: deque[list[Future]] = deque()
    try:
        reading = pool.submit(_read_batch, cfg, chunks[0], tiled)
        for n, chunk in enumerate(chunks):
            originals, batch = reading.result()
            if n + 1 < len(chunks):
                reading = pool.submit(_read_batch, cfg, chunks[n + 1], tiled)
            if n == 0:
                _first_batch_warnings(cfg, outputs.sizes, originals[0].shape, tiled)
            probs = _predict(cfg, model, originals, batch, flips)
            while len(writing) >= 2:
                _collect(writing.popleft(), summary, masks, bar)
            writing.append([pool.submit(outputs.write, cfg, path, original, p)
                            for path, original, p in zip(chunk, originals, probs)])
        while writing:
            _collect(writing.popleft(), summary, masks, bar)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)       # nothing writes into the stage after this
        bar.close()


def _first_batch_warnings(cfg: Config, sizes: ComponentSizes, shape: tuple[int, ...], tiled: bool) -> None:
    _warn_min_component(cfg, sizes, shape)
    if tiled:
        _warn_tiles(cfg, shape)


def _collect(futures: list[Future], summary: dict[str, Any], masks: dict[str, np.ndarray], bar: Progress) -> None:
    """Merge one batch's write records into ``summary`` (re-raising a worker's error as it was raised)."""
    for future in futures:
        record = future.result()
        for key in ("files", "overlays", "class_index", "uncertainty"):
            summary[key] += record[key]
        summary["removed_components"] += record["removed"]
        summary["blank"] += record["blank"]
        summary["images"] += 1
        if record["mask"] is not None:
            masks[record["stem"]] = record["mask"]
    bar.update(len(futures))
