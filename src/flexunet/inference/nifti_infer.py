"""``flexunet infer`` on NIfTI volumes: a label volume per input volume, as a viewer opens it over the input.

For each ``.nii`` / ``.nii.gz`` file of ``[infer] images_dir``:

1. read it, reorient it to RAS+ and cut it into axial slices (:mod:`flexunet.dataset.nifti`), each
   slice windowed from HU, padded to a square and resized as ``flexunet prepare`` made the training
   slices (``[prepare] window_center`` / ``window_width`` / ``three_windows``, ``size``, ``image_resize``);
2. predict the slices in batches of ``[infer] batch_size`` (flip-averaged with ``flip_tta`` or
   ``uncertainty``); the classes decided at the model's size (``foreground_weight``) are resized
   back (nearest) to the padded square, the padding cropped, small components removed as
   ``[infer] min_component_size`` says;
3. ``fmt`` "nifti": ``<output_dir>/<CASE>.nii.gz``, uint8 class indices mapped back to the input's voxel
   order, with its shape, affine and header (``CASE``: the file name less ``.nii.gz`` and nnU-Net's
   ``_0000``); with ``[infer] uncertainty`` also ``uncertainty/<CASE>.nii.gz`` (float32 normalised
   entropy).  ``fmt`` "png": the per-slice PNG outputs of image inputs, ``<CASE>_<k>.png`` (slice k from
   inferior), with overlays, class-index masks and uncertainty maps as ``[infer]`` asks;
4. ``volumes.csv`` (``[infer] volumes``): mL per class per volume from the voxel size in the header
   (:func:`flexunet.inference.volumes.series_volumes`); ``uncertain_slices.csv`` with uncertainty.

Everything is written into a hidden folder and moved into ``output_dir`` once every volume has
succeeded, as for image inputs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from nibabel import orientations

from flexunet.config.loader import Config
from flexunet.dataset.dicom import window_rgb
from flexunet.dataset.nifti import (Volume, axial_slices, case_name, from_axial_slices, like_input, load_nifti,
                                    read_volume)
from flexunet.dataset.prepare_slice import border_background, pad_to_square, resize_image
from flexunet.dataset.records import find_manifest, read_manifest
from flexunet.inference.uncertainty import slice_score
from flexunet.inference.volumes import SliceGeometry, hemorrhage_classes, series_volumes
from flexunet.inference.writing import (UNCERTAIN_FILE, VOLUMES_FILE, SliceOutputs, entropy_at, protected_dirs,
                                        staged, write_tables)
from flexunet.model.postprocess import ComponentSizes, run_sizes
from flexunet.model.predict import (decide, model_batch, predict_probs, prediction_flips, remove_small_components,
                                    resize_indices)
from flexunet.model.trained import load_trained
from flexunet.utils.errors import DataError
from flexunet.utils.io import write_bytes
from flexunet.utils.outputs import check_output_dir, claim_output_dir
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

FORMATS = ("nifti", "png")


def _cases(files: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if case_name(p) in out:
            raise DataError(f"{p}: same case as {out[case_name(p)].name}; expected one volume per case (both would "
                            f"be written to {case_name(p)}.nii.gz) — rename one")
        out[case_name(p)] = p
    return out


def _slice_count(img: Any) -> int:
    """Axial slices of a volume from its header: the length of the axis that runs inferior-superior."""
    axis = [i for i, (world, _) in enumerate(orientations.io_orientation(img.affine)) if world == 2][0]
    return int(img.shape[axis])


def _output_names(cfg: Config, cases: dict[str, Path], fmt: str) -> list[str]:
    if fmt == "nifti":
        names = [f"{case}.nii.gz" for case in cases]
    else:
        names = [f"{case}_{k:04d}.png" for case, p in cases.items() for k in range(_slice_count(load_nifti(p)))]
        names += (["overlays"] if cfg.infer.overlays else []) + (["class_index"] if cfg.infer.class_index_masks
                                                                  else [])
    names += [VOLUMES_FILE] if cfg.infer.volumes else []
    return names + (["uncertainty", UNCERTAIN_FILE] if cfg.infer.uncertainty else [])


def _check_prepared_like(cfg: Config) -> None:
    """A warning when the training slices were prepared with another window or size than [prepare] says now."""
    manifest = find_manifest(Path(cfg.train.images_dir), cfg) if cfg.train.images_dir is not None else None
    if manifest is None:
        return
    try:
        header = read_manifest(manifest)[0]
    except DataError:
        return
    p = cfg.prepare
    now = {"window": "three_windows" if p.three_windows else [p.window_center, p.window_width], "size": p.size}
    then = {k: header.get(k) for k in now if header.get(k) is not None}
    differ = [f"{k} {then[k]} (now {now[k]})" for k in then if then[k] != now[k]]
    if differ and header.get("source") in ("dicom", "nifti"):
        log.warning("the training slices were prepared with %s (%s); [prepare] says otherwise, so the volumes are "
                    "read differently from them — set [prepare] window_center / window_width / three_windows / "
                    "size as prepare had them", ", ".join(differ), manifest)


def infer_volumes(cfg: Config, files: Sequence[Path], out_dir: Path, model: Any = None, fmt: str = "nifti",
                  progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Predict every NIfTI volume of ``files`` into ``out_dir`` (see the module docstring); return a summary.

    Summary keys: ``images`` (slices), ``volumes_predicted``, ``seconds``, ``images_per_second``,
    ``output_dir``, ``tiled`` (False), ``format``, ``files`` (label volumes, or slice masks with "png"),
    ``overlays``, ``class_index``, ``removed_components``, ``blank`` (slices without foreground),
    ``volumes`` (rows of volumes.csv), ``uncertainty`` (per slice: name, score, foreground_pixels, map).
    """
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    cases = _cases(files)
    names = _output_names(cfg, cases, fmt)
    check_output_dir(out_dir, "infer", protected_dirs(cfg), overwrite, what="[infer] output_dir", writes=tuple(names))
    _check_prepared_like(cfg)
    if fmt == "nifti" and (cfg.infer.overlays or cfg.infer.class_index_masks):
        log.info("overlays and class-index PNGs are per-slice outputs; --format png writes them for NIfTI inputs")
    if model is None:
        model = load_trained(cfg)
    summary: dict[str, Any] = {"images": 0, "volumes_predicted": 0, "output_dir": out_dir, "tiled": False,
                               "format": fmt, "files": [], "overlays": [], "class_index": [],
                               "removed_components": 0, "blank": 0, "uncertainty": [], "volumes": []}
    start = time.perf_counter()
    bar = Progress([], "infer", total=len(cases), enabled=progress, unit="volume")
    with staged(out_dir) as stage:
        writer = SliceOutputs(stage, out_dir, set(), run_sizes(cfg))
        for case, path in cases.items():
            volume = read_volume(path)
            index, entropy = predict_volume(cfg, model, volume, summary, writer.sizes)
            _write_volume(cfg, stage, out_dir, writer, case, volume, index, entropy, fmt, summary)
            if cfg.infer.volumes:
                summary["volumes"] += volume_table(case, path.name, volume, index, cfg.class_names)
            bar.update()
        write_tables(cfg, stage, summary["volumes"] if cfg.infer.volumes else None, summary["uncertainty"])
        claim_output_dir(out_dir, "infer", names)
    bar.close()
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, images_per_second=summary["images"] / seconds if seconds > 0 else 0.0)
    log.info("inferred %d volume(s), %d slices, in %.1f s (%.2f slices/s) -> %s", len(cases), summary["images"],
             seconds, summary["images_per_second"], out_dir)
    return summary


def _windowed(cfg: Config, hu: np.ndarray) -> np.ndarray:
    p = cfg.prepare
    return window_rgb(hu, p.window_center, p.window_width, p.three_windows)


def slice_image(cfg: Config, hu: np.ndarray) -> np.ndarray:
    """One axial HU slice as ``flexunet prepare`` made the training slices: windowed, padded, resized."""
    rgb = _windowed(cfg, hu)
    return resize_image(pad_to_square(rgb, border_background(rgb)), cfg.prepare.size, cfg.prepare.image_resize)


def _crop(square: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) region :func:`pad_to_square` centred in ``square``."""
    h, w = shape
    top, left = (square.shape[0] - h) // 2, (square.shape[1] - w) // 2
    return square[top:top + h, left:left + w]


def predict_volume(cfg: Config, model: Any, volume: Volume, summary: dict[str, Any], sizes: ComponentSizes
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """(K, H, W) uint8 class indices of the axial slices of ``volume`` (components smaller than ``sizes``
    removed), and their (K, H, W) float32 normalised entropy with ``[infer] uncertainty`` (else None)."""
    hu = axial_slices(volume.data)
    k, h, w = hu.shape
    side, size = max(h, w), cfg.infer.batch_size
    flips = prediction_flips(cfg)   # uncertainty: entropy over flips
    index = np.zeros((k, h, w), np.uint8)
    entropy = np.zeros((k, h, w), np.float32) if cfg.infer.uncertainty else None
    for first in range(0, k, size):
        batch = model_batch([slice_image(cfg, s) for s in hu[first:first + size]], cfg)
        for j, probs in enumerate(predict_probs(model, batch, flips, pad_to=size), start=first):
            square = resize_indices(decide(probs, cfg.infer.foreground_weight), (side, side))
            index[j], removed = remove_small_components(_crop(square, (h, w)), sizes.at((h, w)))
            summary["removed_components"] += removed
            if entropy is not None:
                entropy[j] = _crop(entropy_at(probs, (side, side)), (h, w))
    summary["images"] += k
    summary["blank"] += int((~index.reshape(k, -1).any(1)).sum())
    return index, entropy


def _write_volume(cfg: Config, stage: Path, out_dir: Path, writer: SliceOutputs, case: str, volume: Volume,
                  index: np.ndarray, entropy: np.ndarray | None, fmt: str, summary: dict[str, Any]) -> None:
    summary["volumes_predicted"] += 1
    if fmt == "png":
        hu = axial_slices(volume.data)
        for k in range(len(index)):
            record = writer.write_slice(cfg, f"{case}_{k:04d}", _windowed(cfg, hu[k]), index[k],
                                        None if entropy is None else entropy[k])
            for key in ("files", "overlays", "class_index", "uncertainty"):
                summary[key] += record[key]
        return
    name = f"{case}.nii.gz"
    write_bytes(stage / name, like_input(from_axial_slices(index), volume))
    summary["files"].append(out_dir / name)
    if entropy is not None:
        write_bytes(stage / "uncertainty" / name, like_input(from_axial_slices(entropy), volume))
        summary["uncertainty"] += [{"name": f"{case} slice {k}", "score": slice_score(entropy[k], index[k]),
                                    "foreground_pixels": int((index[k] > 0).sum()),
                                    "map": f"uncertainty/{name}"} for k in range(len(index))]


def volume_table(case: str, source: str, volume: Volume, index: np.ndarray, class_names: Sequence[str]
                 ) -> list[dict[str, Any]]:
    """``volumes.csv`` rows of one volume's (K, H, W) class indices: mL per class from the header's voxel size."""
    series = [SliceGeometry(f"{case}:{k}", case, source, volume.pixel_spacing, volume.slice_position(k),
                            volume.zooms[2], k + 1) for k in range(len(index))]
    return series_volumes(series, list(index), class_names, hemorrhage_classes(class_names))
