"""Where ``flexunet infer`` writes, and what it writes for one slice.

- :func:`protected_dirs`: the folders infer never writes into;
- :func:`staged`: a hidden folder every output is written into first, moved into ``output_dir`` once
  every input has succeeded (an error leaves ``output_dir`` as it was);
- :class:`SliceOutputs`: one slice's palette mask (pixel = class index, palette = rgb_map colours),
  and as ``[infer]`` asks its overlay, class-index PNG and uncertainty map (``.png`` heatmap and
  ``.npy`` float32 normalised entropy at the slice's size);
- :func:`write_tables`: ``volumes.csv`` and ``uncertain_slices.csv``.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config
from flexunet.dataset.masks import index_to_palette_image
from flexunet.inference.uncertainty import entropy_map, heatmap, slice_score
from flexunet.inference.volumes import VOLUME_COLUMNS
from flexunet.model.postprocess import ComponentSizes
from flexunet.model.predict import decide, overlay_image, remove_small_components, resize_indices
from flexunet.utils.io import csv_text, safe_output_path, save_image, write_bytes, write_text

VOLUMES_FILE = "volumes.csv"
UNCERTAIN_FILE = "uncertain_slices.csv"


def protected_dirs(cfg: Config) -> list[tuple[str, Path]]:
    """The folders infer must never write into: the run folder and every input of the config (its images too)."""
    return [("[train] model_dir", cfg.train.model_dir), *input_folders(cfg)]


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A hidden folder to write into: inside ``out_dir`` when it exists (same file system, even when it is a
    mount point), else beside it.  On success each file in it is moved (one rename) to the same place under
    ``out_dir``; on any error it is removed, with the folders made for it, and ``out_dir`` is as it was."""
    out_dir = Path(os.path.realpath(out_dir))
    home = out_dir if out_dir.is_dir() else out_dir.parent
    made = [p for p in (home, *home.parents) if not p.exists()]
    home.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.infer-", dir=home))
    try:
        yield stage
        out_dir.mkdir(exist_ok=True)
        for folder, _, names in os.walk(stage):
            target = out_dir / Path(folder).relative_to(stage)
            target.mkdir(exist_ok=True)
            for name in sorted(names):
                os.replace(Path(folder) / name, target / name)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:                                # innermost first; only while empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(stage, ignore_errors=True)


def write_tables(cfg: Config, stage: Path, volume_rows: Sequence[dict[str, Any]] | None,
                 uncertain: Sequence[dict[str, Any]]) -> None:
    """``volumes.csv`` (when ``volume_rows`` is not None) and, with ``[infer] uncertainty``,
    ``uncertain_slices.csv`` (slices ranked by their score) into ``stage``."""
    if volume_rows is not None:
        write_text(stage / VOLUMES_FILE, csv_text(VOLUME_COLUMNS, [[r[c] for c in VOLUME_COLUMNS]
                                                                   for r in volume_rows]))
    if cfg.infer.uncertainty:
        ranked = sorted(uncertain, key=lambda r: (-r["score"], r["name"]))
        write_text(stage / UNCERTAIN_FILE, csv_text(("rank", "name", "score", "foreground_pixels", "map"),
                                                    [[i + 1, r["name"], round(r["score"], 6), r["foreground_pixels"],
                                                      r["map"]] for i, r in enumerate(ranked)]))


def entropy_at(probs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 normalised entropy of a softmax, resized (bilinear) to ``shape[:2]``."""
    entropy = entropy_map(probs)
    h, w = shape[:2]
    if entropy.shape != (h, w):
        entropy = np.clip(np.asarray(Image.fromarray(entropy).resize((w, h), Image.BILINEAR)), 0, 1)
    return entropy.astype(np.float32)


class SliceOutputs:
    """Writes one image's outputs into ``stage``; the record names them as they will be under ``out_dir``.

    :meth:`write` touches nothing shared, so worker threads may run it side by side.
    """

    def __init__(self, stage: Path, out_dir: Path, keep_masks: set[str], sizes: ComponentSizes) -> None:
        self.stage, self.out_dir, self.keep_masks = stage, out_dir, keep_masks
        self.sizes = sizes          # the smallest component kept per class (model.postprocess), read once

    def write(self, cfg: Config, path: Path, original: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """The mask (and overlay, class-index mask, uncertainty map) of one image; its summary record."""
        index = resize_indices(decide(probs, cfg.infer.foreground_weight), original.shape)
        index, removed = remove_small_components(index, self.sizes.at(index.shape[:2]))
        entropy = entropy_at(probs, index.shape) if cfg.infer.uncertainty else None
        return self.write_slice(cfg, path.stem, original, index, entropy, removed, path.name)

    def write_slice(self, cfg: Config, stem: str, original: np.ndarray, index: np.ndarray,
                    entropy: np.ndarray | None, removed: int = 0, source: str | None = None) -> dict[str, Any]:
        """The files ``<stem>.png`` of one slice from its (H, W) class indices and entropy (None: no uncertainty
        map); ``source`` names the slice in uncertain_slices.csv (default ``<stem>.png``)."""
        name = f"{stem}.png"
        record: dict[str, Any] = {"stem": stem, "removed": removed, "blank": int(not index.any()),
                                  "mask": index if stem in self.keep_masks else None,
                                  "files": [self._save("", name, index_to_palette_image(index, cfg.mask.rgb_map))],
                                  "overlays": [], "class_index": [], "uncertainty": []}
        if cfg.infer.overlays:
            record["overlays"].append(self._save("overlays", name, overlay_image(
                original, index, cfg.mask.rgb_map, cfg.class_names, cfg.infer.overlay_alpha)))
        if cfg.infer.class_index_masks:
            record["class_index"].append(self._save("class_index", name, Image.fromarray(index, "L")))
        if entropy is not None:
            record["uncertainty"].append(self._uncertainty(stem, source or name, entropy, index))
        return record

    def _save(self, folder: str, name: str, image: Image.Image | np.ndarray) -> Path:
        save_image(safe_output_path(self.stage / folder, name), image)
        return safe_output_path(self.out_dir / folder, name)

    def _uncertainty(self, stem: str, source: str, entropy: np.ndarray, index: np.ndarray) -> dict[str, Any]:
        """``uncertainty/<stem>.png`` and ``.npy``: normalised entropy at the mask's size; the slice's score."""
        self._save("uncertainty", f"{stem}.png", heatmap(entropy))
        buf = _io.BytesIO()
        np.save(buf, entropy)
        write_bytes(safe_output_path(self.stage / "uncertainty", f"{stem}.npy"), buf.getvalue())
        return {"name": source, "score": slice_score(entropy, index), "foreground_pixels": int((index > 0).sum()),
                "map": f"uncertainty/{stem}.png"}
