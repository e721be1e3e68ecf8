"""Statistics of a split dataset: counts per subset, classes per subset, sample grids.

``dataset_stats(DATASET_DIR)`` reads ``DATASET_DIR/{train,valid,test}/{images,masks}``
and writes, into ``out_dir`` (default ``DATASET_DIR``):

- ``<DATASET_DIR name>_Statistics.png``: images per subset (the original's chart),
- ``class_statistics.png`` and ``stats.json``: slices and pixels per class per subset,
- ``train_images_sample.png`` and ``train_masks_sample.png``: a grid of train pairs.

Figures are plain :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas:
no pyplot state, no window, nothing left open.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from flexunet.utils.errors import DataError
from flexunet.utils.io import list_files, read_image, write_json
from flexunet.dataset.masks import (MASK_FORMATS, STROKE_CLASS_NAMES, STROKE_RGB_MAP, RgbMap, describe_unmapped,
                            index_to_rgb, palette_colours, read_mask)
from flexunet.utils.outputs import check_output_dir, claim_output_dir, overlap
from flexunet.utils.progress import Progress
from flexunet.dataset.records import SPLIT_JSON, read_split, rgb_map_from_list
from flexunet.utils.plots import new_figure, save_figure

log = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
SAMPLE_COUNT = 8


def _labels(dataset_dir: Path, rgb_map: RgbMap | None, class_names: Sequence[str] | None,
            mask_format: str | None = None) -> tuple[dict[tuple[int, int, int], int], list[str], str]:
    """rgb_map, class names and mask format: as given, else from split.json, else the stroke defaults
    (colour masks)."""
    split_json = dataset_dir / SPLIT_JSON
    doc: dict[str, Any] = {}
    if (rgb_map is None or class_names is None or mask_format is None) and split_json.is_file():
        doc = read_split(split_json)
    if rgb_map is None and doc.get("rgb_map"):
        rgb_map = rgb_map_from_list(doc["rgb_map"], split_json)
    if class_names is None and doc.get("class_names"):
        class_names = [str(n) for n in doc["class_names"]]
    if mask_format is None:
        mask_format = str(doc.get("mask_format") or "rgb")
        if mask_format not in MASK_FORMATS:
            raise DataError(f"{split_json}: mask_format {mask_format!r}; expected one of "
                            f"{', '.join(MASK_FORMATS)} as flexunet writes")
    if rgb_map is None:
        rgb_map = STROKE_RGB_MAP
        class_names = class_names or STROKE_CLASS_NAMES
    n = max(rgb_map.values()) + 1
    if class_names is None or len(class_names) != n:
        if class_names is not None:
            log.warning("%d class names for %d classes; using generic names", len(class_names), n)
        class_names = ["background" if i == 0 else f"class_{i}" for i in range(n)]
    return dict(rgb_map), list(class_names), mask_format


def _subset_stats(folder: Path, rgb_map: RgbMap, names: Sequence[str], progress: bool,
                  mask_format: str = "rgb") -> dict[str, Any]:
    images = list_files(folder / "images") if (folder / "images").is_dir() else []
    masks = list_files(folder / "masks", (".png", ".npz")) if (folder / "masks").is_dir() else []
    n = len(names)
    slices = np.zeros(n, np.int64)
    pixels = np.zeros(n, np.int64)
    unmapped: dict[tuple[int, int, int], int] = {}
    for mask in Progress(masks, f"stats {folder.name}", enabled=progress and bool(masks), unit="mask"):
        decoded = read_mask(mask, rgb_map, 0.0, map_unmapped=True, mask_format=mask_format)
        counts = np.bincount(decoded.index.ravel(), minlength=n)[:n]
        pixels += counts
        slices += counts > 0
        for colour, k in decoded.unmapped.items():
            unmapped[colour] = unmapped.get(colour, 0) + k
    image_stems, mask_stems = {p.stem for p in images}, {p.stem for p in masks}
    if image_stems != mask_stems:
        log.warning("%s: %d image(s) without a mask and %d mask(s) without an image", folder,
                    len(image_stems - mask_stems), len(mask_stems - image_stems))
    if unmapped:
        log.warning("%s: %d mask pixel(s) in colours not in rgb_map, counted as the nearest class (%s)",
                    folder, sum(unmapped.values()), describe_unmapped(unmapped))
    return {
        "images": len(images),
        "masks": len(masks),
        "slices_with_class": dict(zip(names, (int(v) for v in slices))),
        "pixels": dict(zip(names, (int(v) for v in pixels))),
        "unmapped_pixels": int(sum(unmapped.values())),
    }


def _check_out(dataset_dir: Path, out: Path, present: Sequence[str], overwrite: bool) -> None:
    """An ``out_dir`` other than the dataset folder lies outside its subsets and is stats' own (or
    --overwrite: written beside the files there); the default, the dataset folder itself, is the
    original's layout: stats' files beside the subsets.  Either way a file stats did not write is
    never replaced (flexunet.utils.outputs)."""
    beside = overlap(out, dataset_dir) == "is"
    subsets = [] if beside else [dataset_dir / s for s in present]
    check_output_dir(out, "stats", subsets, overwrite or beside, what="--out", writes=_names(dataset_dir),
                     shares_with=("split",))


def _names(dataset_dir: Path) -> tuple[str, ...]:
    return (f"{dataset_dir.resolve().name}_Statistics.png", "class_statistics.png", "stats.json",
            "train_images_sample.png", "train_masks_sample.png")


def dataset_stats(dataset_dir: Path, out_dir: Path | None = None, rgb_map: RgbMap | None = None,
                  class_names: Sequence[str] | None = None, progress: bool = False,
                  overwrite: bool = False, mask_format: str | None = None) -> dict[str, Any]:
    """Count, chart and sample ``dataset_dir``; return what was written to ``stats.json``
    plus ``files`` (the paths written).  An ``out_dir`` apart from ``dataset_dir`` must not
    overlap its subsets and must be stats' own folder unless ``overwrite``.  ``mask_format``
    ("rgb" or "index", as ``[mask] format``): from split.json when not given, else "rgb"."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise DataError(f"{dataset_dir}: folder not found; expected a dataset folder holding "
                        f"train/ valid/ test/ (as written by `flexunet split`)")
    present = [s for s in SUBSETS if (dataset_dir / s).is_dir()]
    if not present:
        raise DataError(f"{dataset_dir}: no train/, valid/ or test/ folder; expected a dataset folder "
                        f"written by `flexunet split`")
    out = Path(out_dir) if out_dir is not None else dataset_dir
    _check_out(dataset_dir, out, present, overwrite)
    rgb, names, fmt = _labels(dataset_dir, rgb_map, class_names, mask_format)
    subsets = {s: _subset_stats(dataset_dir / s, rgb, names, progress, fmt) for s in present}
    name = dataset_dir.resolve().name
    files = [
        save_figure(_count_chart(name, subsets), out / f"{name}_Statistics.png"),
        save_figure(_class_chart(name, subsets, names, rgb), out / "class_statistics.png"),
    ]
    train = dataset_dir / "train"
    if "train" in present and subsets["train"]["images"]:
        images, masks = _samples(train, SAMPLE_COUNT)
        files.append(save_figure(_grid([read_image(p) for p in images], [p.name for p in images]),
                           out / "train_images_sample.png"))
        mask_arrays = [index_to_rgb(read_mask(p, rgb, 0.0, map_unmapped=True, mask_format=fmt).index, rgb)
                       for p in masks]
        files.append(save_figure(_grid(mask_arrays, [p.name for p in masks]), out / "train_masks_sample.png"))
    else:
        log.warning("%s: no train images, so no sample grids", dataset_dir)
    doc = {"dataset_dir": str(dataset_dir), "class_names": names, "mask_format": fmt,
           "rgb_map": [[list(c), i] for c, i in sorted(rgb.items(), key=lambda kv: kv[1])],
           "subsets": subsets}
    stats_json = out / "stats.json"
    write_json(stats_json, doc)
    files.insert(0, stats_json)
    claim_output_dir(out, "stats", [f.name for f in files])
    log.info("wrote %s", ", ".join(str(f) for f in files))
    return {**doc, "files": files}


def _samples(train: Path, count: int) -> tuple[list[Path], list[Path]]:
    """Up to ``count`` evenly spaced train images that have a mask, and their masks."""
    masks = {p.stem: p for p in list_files(train / "masks", (".png", ".npz"))} \
        if (train / "masks").is_dir() else {}
    images = [p for p in list_files(train / "images") if p.stem in masks]
    if not images:
        images = list_files(train / "images")
    if len(images) > count:
        picks = np.linspace(0, len(images) - 1, count).round().astype(int)
        images = [images[i] for i in picks]
    paired = [p for p in images if p.stem in masks]
    return images, [masks[p.stem] for p in paired]


# --------------------------------------------------------------------------- drawing




def _count_chart(name: str, subsets: Mapping[str, Mapping[str, Any]]) -> Any:
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    labels = list(subsets)
    counts = [subsets[s]["images"] for s in labels]
    bars = ax.bar(labels, counts, color=["tab:blue", "tab:orange", "tab:green"][:len(labels)])
    ax.bar_label(bars)
    ax.set_title(f"{name} dataset: images per subset")
    ax.set_ylabel("images")
    fig.tight_layout()
    return fig


def _bar_colours(rgb: RgbMap, n: int) -> list[tuple[float, float, float]]:
    colours = palette_colours(rgb)[:n] / 255.0
    return [tuple(c) if c.sum() > 0.15 else (0.6, 0.6, 0.6) for c in colours]


def _class_chart(name: str, subsets: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                 rgb: RgbMap) -> Any:
    fig = new_figure(11, 4)
    labels = list(subsets)
    x = np.arange(len(labels))
    width = 0.8 / len(names)
    colours = _bar_colours(rgb, len(names))
    for ax, key, title in zip(fig.subplots(1, 2), ("slices_with_class", "pixels"),
                              ("slices showing each class", "pixels per class (log scale)")):
        for c, cname in enumerate(names):
            values = [subsets[s][key][cname] for s in labels]
            ax.bar(x + (c - (len(names) - 1) / 2) * width, values, width, label=cname, color=colours[c],
                   edgecolor="black", linewidth=0.5)
        ax.set_xticks(x, labels)
        ax.set_title(f"{name}: {title}")
        if key == "pixels":
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _grid(arrays: Sequence[np.ndarray], titles: Sequence[str]) -> Any:
    cols = min(4, max(1, len(arrays)))
    rows = max(1, math.ceil(len(arrays) / cols))
    fig = new_figure(3 * cols, 3 * rows)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.axis("off")
        if i < len(arrays):
            ax.imshow(arrays[i], interpolation="nearest")
            ax.set_title(titles[i], fontsize="small")
    fig.tight_layout()
    return fig
