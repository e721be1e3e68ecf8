"""``flexunet infer``: masks for every image of a folder, streamed in batches.

For each PNG, JPG, TIF, BMP or DICOM file of ``[infer] images_dir`` (``[tiledinfer]``
with ``--tiled``):

1. read it (DICOM through the ``[prepare]`` window, or the three CT windows as RGB);
2. predict in batches of ``[infer] batch_size``: resized (bilinear) to the model input, or
   with ``--tiled`` in ``split_size`` tiles overlapping by ``overlapping`` pixels whose
   softmax outputs are blended with linear ramps, so no seam shows;
3. optionally average the softmax over identity, horizontal and vertical flips
   (``flip_tta``), take the argmax, resize it back to the input's size (nearest) and set
   predicted components smaller than ``min_component_size`` pixels to background;
4. write ``<output_dir>/<stem>.png``: a 'P' mode PNG, pixel = class index, palette =
   rgb_map colours (as the original); optionally ``overlays/<stem>.png`` (mask over image,
   with a legend of class names) and ``class_index/<stem>.png`` (greyscale class indices);
5. DICOM inputs (``[infer] volumes``): ``volumes.csv``, the mL of every class per patient and
   series (:mod:`flexunet.volumes`; a series with missing or uneven slice spacing is refused
   before anything is written); ``[infer] uncertainty`` (which turns flip averaging on):
   ``uncertainty/<stem>.png`` (heatmap) and ``.npy`` (float32 normalised entropy of the mean
   softmax, at the input's size) and ``uncertain_slices.csv``, slices ranked for review.

Every file is written whole (temporary name, then rename).
"""

from __future__ import annotations

import io as _io
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from flexunet.config import Config
from flexunet.errors import DataError
from flexunet.io import (DICOM_SUFFIXES, IMAGE_SUFFIXES, by_stem, check_output_dir, claim_output_dir, list_files,
                         safe_output_path, save_image, write_bytes, write_text)
from flexunet.masks import index_to_palette_image
from flexunet.predict import (model_batch, network_input, overlay_image, predict_probs, predict_tiled, read_input,
                              remove_small_components, resize_indices, tile_starts)
from flexunet.progress import Progress
from flexunet.uncertainty import entropy_map, heatmap, slice_score
from flexunet.volumes import (VOLUME_COLUMNS, SliceGeometry, check_pixel_spacing, geometry_from_meta, group_series,
                              hemorrhage_classes, series_volumes, slice_spacing)

log = logging.getLogger(__name__)

INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES


def _list_inputs(folder: Path) -> list[Path]:
    files = list_files(folder, INPUT_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images found; expected PNG, JPG, TIF, BMP or DICOM (.dcm) files")
    by_stem(files, "one input per name (both would be written to the same <name>.png) — rename one")
    return files


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --------------------------------------------------------------------------- the command


def _protected_dirs(cfg: Config, images_dir: Path) -> list[Path]:
    """The folders infer must never write into: its images, the run folder, and the dataset's subsets."""
    subsets = [getattr(cfg, s) for s in ("train", "valid", "test")]
    return [images_dir, cfg.train.model_dir, *(f for s in subsets for f in (s.images_dir, s.masks_dir))]


def _output_names(files: Sequence[Path], cfg: Config) -> list[str]:
    extra = (["overlays"] if cfg.infer.overlays else []) + (["class_index"] if cfg.infer.class_index_masks else [])
    extra += [VOLUMES_FILE] if _wants_volumes(cfg, files) else []
    extra += ["uncertainty", UNCERTAIN_FILE] if cfg.infer.uncertainty else []
    return [f"{p.stem}.png" for p in files] + extra


VOLUMES_FILE = "volumes.csv"
UNCERTAIN_FILE = "uncertain_slices.csv"


def _wants_volumes(cfg: Config, files: Sequence[Path]) -> bool:
    return cfg.infer.volumes and any(p.suffix.lower() in DICOM_SUFFIXES for p in files)


def volume_geometry(files: Sequence[Path]) -> dict[str, SliceGeometry]:
    """The geometry of every DICOM input by stem, each series checked (one line refusing when a volume
    would be a guess); PNG inputs, which carry no geometry, are left out."""
    from flexunet.dicom import read_dicom

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


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import csv

    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


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


def _warn_min_component(cfg: Config, shape: tuple[int, ...]) -> None:
    size = cfg.infer.min_component_size
    h, w = shape[:2]
    if size > h * w:
        log.warning("[infer] min_component_size = %d is more than the %dx%d = %d pixels of an image: every "
                    "predicted component is removed and every mask is blank; lower it (or 0 to keep all)",
                    size, w, h, h * w)


def infer_images(cfg: Config, model: Any = None, tiled: bool = False, progress: bool = True,
                 overwrite: bool = False) -> dict[str, Any]:
    """Predict every image of [infer] (or [tiledinfer] when ``tiled``) images_dir; return a summary.

    Summary keys: ``images``, ``seconds``, ``images_per_second``, ``output_dir``, ``tiled``,
    ``files`` (masks written), ``overlays``, ``class_index``, ``removed_components``, ``blank``
    (masks left without any foreground), ``volumes`` (rows of volumes.csv), ``uncertainty``
    (per slice: name, score, foreground_pixels, map).  ``output_dir`` must lie outside every input folder
    and be infer's own (or ``overwrite``: written beside the files there, none deleted).
    """
    section = "tiledinfer" if tiled else "infer"
    images_dir = cfg.require_dir(section, "images_dir", "folder of images to predict")
    out_dir = Path(cfg.require(section, "output_dir", "the folder the predicted masks go to"))
    if tiled and cfg.tiledinfer.overlapping >= cfg.tiledinfer.split_size:
        raise cfg.error("tiledinfer", "overlapping",
                        f"fewer pixels than split_size ({cfg.tiledinfer.split_size})")
    files = _list_inputs(images_dir)
    names = _output_names(files, cfg)
    check_output_dir(out_dir, "infer", _protected_dirs(cfg, images_dir), overwrite, what=f"[{section}] output_dir",
                     writes=tuple(names))
    geometry = _geometry_or_warn(cfg, files) if _wants_volumes(cfg, files) else {}
    if cfg.infer.volumes and not geometry:
        log.info("no volumes.csv: the inputs are not DICOM, so they carry no slice geometry")
    if model is None:
        from flexunet.run import load_trained

        model = load_trained(cfg)
    opts = cfg.infer
    summary: dict[str, Any] = {"images": 0, "output_dir": out_dir, "tiled": tiled, "files": [],
                               "overlays": [], "class_index": [], "removed_components": 0, "blank": 0,
                               "uncertainty": [], "volumes": []}
    flips = opts.flip_tta or opts.uncertainty          # uncertainty is the entropy of the mean over flips
    masks: dict[str, np.ndarray] = {}
    bar = Progress([], "infer", total=len(files), enabled=progress, unit="img")
    start = time.perf_counter()
    claim_output_dir(out_dir, "infer", names)  # before writing: an interrupted run's files are still infer's
    for n, chunk in enumerate(_chunks(files, 1 if tiled else opts.batch_size)):
        originals = [read_input(p, cfg) for p in chunk]
        if n == 0:
            _warn_min_component(cfg, originals[0].shape)
            if tiled:
                _warn_tiles(cfg, originals[0].shape)
        if tiled:
            t = cfg.tiledinfer
            probs = [predict_tiled(model, network_input(originals[0], cfg), cfg, t.split_size, t.overlapping,
                                   opts.batch_size, flips)]
        else:
            probs = list(predict_probs(model, model_batch(originals, cfg), flips))
        for path, original, p in zip(chunk, originals, probs):
            index = _write_outputs(cfg, out_dir, path, original, p.argmax(-1).astype(np.uint8), summary)
            if path.stem in geometry:
                masks[path.stem] = index
            if opts.uncertainty:
                _write_uncertainty(out_dir, path, p, index, summary)
        bar.update(len(chunk))
    bar.close()
    _write_tables(cfg, out_dir, geometry, masks, summary)
    if summary["removed_components"] and summary["blank"] == summary["images"]:
        log.warning("[infer] min_component_size = %d removed every predicted component: all %d masks are blank; "
                    "lower it", cfg.infer.min_component_size, summary["images"])
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, images_per_second=summary["images"] / seconds if seconds > 0 else 0.0)
    log.info("inferred %d image(s)%s in %.1f s (%.2f images/s) -> %s", summary["images"],
             " tile by tile" if tiled else "", seconds, summary["images_per_second"], out_dir)
    return summary


def _write_tables(cfg: Config, out_dir: Path, geometry: dict[str, SliceGeometry], masks: dict[str, np.ndarray],
                  summary: dict[str, Any]) -> None:
    if geometry:
        rows = volume_rows(geometry, masks, cfg.class_names)
        write_text(out_dir / VOLUMES_FILE, _csv(VOLUME_COLUMNS, [[r[c] for c in VOLUME_COLUMNS] for r in rows]))
        summary["volumes"] = rows
        log.info("volumes of %d series -> %s", len({(r["patient"], r["series"]) for r in rows}),
                 out_dir / VOLUMES_FILE)
    if cfg.infer.uncertainty:
        ranked = sorted(summary["uncertainty"], key=lambda r: (-r["score"], r["name"]))
        write_text(out_dir / UNCERTAIN_FILE, _csv(("rank", "name", "score", "foreground_pixels", "map"),
                                                  [[i + 1, r["name"], round(r["score"], 6), r["foreground_pixels"],
                                                    r["map"]] for i, r in enumerate(ranked)]))


def _write_uncertainty(out_dir: Path, path: Path, probs: np.ndarray, index: np.ndarray,
                       summary: dict[str, Any]) -> None:
    """``uncertainty/<stem>.png`` and ``.npy``: normalised entropy at the mask's size; the slice's score."""
    entropy = entropy_map(probs)
    h, w = index.shape
    if entropy.shape != (h, w):
        entropy = np.clip(np.asarray(Image.fromarray(entropy).resize((w, h), Image.BILINEAR)), 0, 1)
    entropy = entropy.astype(np.float32)
    save_image(safe_output_path(out_dir / "uncertainty", f"{path.stem}.png"), heatmap(entropy))
    buf = _io.BytesIO()
    np.save(buf, entropy)
    write_bytes(safe_output_path(out_dir / "uncertainty", f"{path.stem}.npy"), buf.getvalue())
    summary["uncertainty"].append({"name": path.name, "score": slice_score(entropy, index),
                                   "foreground_pixels": int((index > 0).sum()),
                                   "map": f"uncertainty/{path.stem}.png"})


def _write_outputs(cfg: Config, out_dir: Path, path: Path, original: np.ndarray, index: np.ndarray,
                   summary: dict[str, Any]) -> np.ndarray:
    index, removed = remove_small_components(resize_indices(index, original.shape), cfg.infer.min_component_size)
    summary["blank"] += int(not index.any())
    name = f"{path.stem}.png"
    mask_path = safe_output_path(out_dir, name)
    save_image(mask_path, index_to_palette_image(index, cfg.mask.rgb_map))
    summary["files"].append(mask_path)
    if cfg.infer.overlays:
        p = safe_output_path(out_dir / "overlays", name)
        save_image(p, overlay_image(original, index, cfg.mask.rgb_map, cfg.class_names, cfg.infer.overlay_alpha))
        summary["overlays"].append(p)
    if cfg.infer.class_index_masks:
        p = safe_output_path(out_dir / "class_index", name)
        save_image(p, Image.fromarray(index.astype(np.uint8), "L"))
        summary["class_index"].append(p)
    summary["removed_components"] += removed
    summary["images"] += 1
    return index
