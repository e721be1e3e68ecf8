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
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from flexunet.config import Config
from flexunet.errors import DataError
from flexunet.io import (DICOM_SUFFIXES, IMAGE_SUFFIXES, by_stem, check_output_dir, claim_output_dir, list_files,
                         read_image, safe_output_path, save_image, write_bytes, write_text)
from flexunet.masks import index_to_palette_image, palette_colours
from flexunet.progress import Progress
from flexunet.uncertainty import entropy_map, heatmap, slice_score
from flexunet.volumes import (VOLUME_COLUMNS, SliceGeometry, check_pixel_spacing, geometry_from_meta, group_series,
                              hemorrhage_classes, series_volumes, slice_spacing)

log = logging.getLogger(__name__)

INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
_EIGHT = ndimage.generate_binary_structure(2, 2)


# --------------------------------------------------------------------------- prediction


def predict_probs(model: Any, batch: np.ndarray, flip_tta: bool = False) -> np.ndarray:
    """Softmax (B, H, W, K) of a float32 batch (B, H, W, C); with ``flip_tta`` averaged over flips."""
    batch = np.asarray(batch, np.float32)
    probs = np.asarray(model.predict_on_batch(batch), np.float32)
    if flip_tta:
        hflip = model.predict_on_batch(np.ascontiguousarray(batch[:, :, ::-1]))
        vflip = model.predict_on_batch(np.ascontiguousarray(batch[:, ::-1]))
        probs = (probs + np.asarray(hflip, np.float32)[:, :, ::-1]
                 + np.asarray(vflip, np.float32)[:, ::-1]) / 3.0
    return probs


def predict_indices(model: Any, batch: np.ndarray, flip_tta: bool = False) -> np.ndarray:
    """Class indices (B, H, W) uint8 of a float32 batch (B, H, W, C) of 0..255 images."""
    return predict_probs(model, batch, flip_tta).argmax(-1).astype(np.uint8)


def remove_small_components(index: np.ndarray, min_size: int) -> tuple[np.ndarray, int]:
    """Set 8-connected foreground components smaller than ``min_size`` pixels to 0; return (mask, removed)."""
    index = np.asarray(index)
    if min_size <= 1:
        return index, 0
    out = index.copy()
    removed = 0
    for k in np.unique(index):
        if k == 0:
            continue
        labels, n = ndimage.label(index == k, structure=_EIGHT)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        small = sizes < min_size
        small[0] = False
        if small.any():
            out[small[labels]] = 0
            removed += int(small.sum())
    return out, removed


# --------------------------------------------------------------------------- tiling


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Offsets of windows of ``min(tile, length)`` covering ``[0, length)``, neighbours overlapping >= ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def ramp(size: int, width: int) -> np.ndarray:
    """1-D blending weights: rising linearly over ``width`` pixels at both ends, 1 between, > 0 everywhere."""
    i = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(i + 1, size - i) / (width + 1), 0.0, 1.0)


def _model_size(model: Any) -> tuple[int | None, int | None]:
    shape = model.inputs[0].shape
    return shape[1], shape[2]


def predict_tiled(model: Any, image: np.ndarray, cfg: Config, tile: int, overlap: int,
                  batch_size: int, flip_tta: bool = False) -> np.ndarray:
    """Softmax (H, W, K) of one image of any size, tile by tile, overlaps blended with linear ramps.

    Each tile (``tile`` square, smaller at a short side) is resized to the model input
    when the model has a fixed input size, predicted, resized back and weighted by the
    product of two :func:`ramp` windows; the weighted sum is divided by the summed weights.
    """
    import tensorflow as tf

    from flexunet.data import adapt_channels, to_model_input

    h, w = image.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    mh, mw = _model_size(model)
    fixed = mh is not None and mw is not None
    weight = np.outer(ramp(th, overlap), ramp(tw, overlap)).astype(np.float32)[..., None]
    boxes = [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]
    total = np.zeros((h, w, cfg.model.num_classes), np.float32)
    weights = np.zeros((h, w, 1), np.float32)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first:first + batch_size]
        crops = [image[y:y + th, x:x + tw] for y, x in chunk]
        if fixed:
            batch = np.stack([to_model_input(c, cfg) for c in crops])
        else:
            batch = np.stack([adapt_channels(c, cfg.model.image_channels).astype(np.float32) for c in crops])
        probs = predict_probs(model, batch, flip_tta)
        if probs.shape[1:3] != (th, tw):
            probs = tf.image.resize(probs, (th, tw), method="bilinear").numpy()
        for (y, x), p in zip(chunk, probs):
            total[y:y + th, x:x + tw] += p * weight
            weights[y:y + th, x:x + tw] += weight
    return total / weights


# --------------------------------------------------------------------------- reading and writing


def read_input(path: Path, cfg: Config) -> np.ndarray:
    """An input file as uint8 (H, W, 3) RGB; DICOM through the [prepare] window(s)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        from flexunet.dicom import read_dicom_hu, three_window_rgb, window

        hu, _ = read_dicom_hu(path)
        if cfg.prepare.three_windows:
            return three_window_rgb(hu)
        return np.repeat(window(hu, cfg.prepare.window_center, cfg.prepare.window_width)[..., None], 3, -1)
    return read_image(path, 3)


def network_input(rgb: np.ndarray, cfg: Config) -> np.ndarray:
    """An RGB image as training fed it: [image] color_order, then [model] image_channels."""
    image = rgb[..., ::-1] if cfg.image.color_order == "BGR" else rgb
    from flexunet.data import adapt_channels

    return adapt_channels(image, cfg.model.image_channels)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay_image(rgb: np.ndarray, index: np.ndarray, rgb_map: dict, class_names: Sequence[str],
                  alpha: float) -> Image.Image:
    """The mask blended over the image (background left as is), with a legend of the foreground classes
    (none when ``class_names`` is empty)."""
    colours = palette_colours(rgb_map)
    base = np.asarray(rgb[..., :3], np.float32)
    blend = base * (1.0 - alpha) + colours[index].astype(np.float32) * alpha
    out = np.where((index > 0)[..., None], blend, base).round().clip(0, 255).astype(np.uint8)
    img = Image.fromarray(out, "RGB")
    entries = [(k, class_names[k]) for k in range(1, len(class_names))]
    if not entries:  # no names given: no legend
        return img
    draw = ImageDraw.Draw(img, "RGBA")
    size = max(10, min(img.size) // 32)
    font = _font(size)
    pad, box = max(2, size // 4), size
    width = max(int(draw.textlength(name, font=font)) for _, name in entries) + box + 3 * pad
    draw.rectangle([0, 0, width, pad + len(entries) * (box + pad)], fill=(0, 0, 0, 160))
    for row, (k, name) in enumerate(entries):
        y = pad + row * (box + pad)
        draw.rectangle([pad, y, pad + box, y + box], fill=tuple(int(c) for c in colours[k]) + (255,),
                       outline=(255, 255, 255, 255))
        draw.text((2 * pad + box, y), name, fill=(255, 255, 255, 255), font=font)
    return img


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
        from flexunet.model import load_trained

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
            from flexunet.data import to_model_input

            batch = np.stack([to_model_input(network_input(o, cfg), cfg) for o in originals])
            probs = list(predict_probs(model, batch, flips))
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
    h, w = original.shape[:2]
    if index.shape != (h, w):
        index = np.asarray(Image.fromarray(index).resize((w, h), Image.NEAREST))
    index, removed = remove_small_components(index, cfg.infer.min_component_size)
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
