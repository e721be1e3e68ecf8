"""stats: counts, class statistics, charts and sample grids of a split dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from flexunet.dataset.stats import dataset_stats

GREEN, BLUE, RED = (0, 255, 0), (0, 0, 255), (255, 0, 0)


def make_dataset(root: Path, counts: dict[str, int], colour: tuple[int, int, int] = GREEN) -> None:
    """``counts[subset]`` 6x6 pairs; every even slice has 4 pixels of ``colour``, slice 0 also 2 blue."""
    for subset, n in counts.items():
        for kind in ("images", "masks"):
            (root / subset / kind).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((6, 6, 3), np.uint8)
            if i % 2 == 0:
                mask[0, :4] = colour
            if i == 0:
                mask[5, :2] = BLUE
            Image.fromarray(np.full((6, 6, 3), 20 * i, np.uint8)).save(root / subset / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / subset / "masks" / f"{i}.png")


def is_png(path: Path) -> bool:
    with Image.open(path) as img:
        return img.format == "PNG" and img.size[0] > 100


def test_stats_writes_charts_samples_and_counts(tmp_path: Path) -> None:
    root = tmp_path / "Stroke"
    make_dataset(root, {"train": 5, "valid": 2, "test": 1})
    result = dataset_stats(root)   # no split.json: the stroke rgb_map and names
    names = ["Stroke_Statistics.png", "class_statistics.png", "train_images_sample.png", "train_masks_sample.png"]
    for name in names:
        assert is_png(root / name), name
    doc = json.loads((root / "stats.json").read_text())
    assert doc["class_names"] == ["background", "ischemic", "hemorrhagic"]
    train = doc["subsets"]["train"]
    assert train["images"] == train["masks"] == 5
    # slices 0, 2, 4 show ischemic (4 px each); slice 0 shows hemorrhagic (2 px)
    assert train["slices_with_class"] == {"background": 5, "ischemic": 3, "hemorrhagic": 1}
    assert train["pixels"] == {"background": 5 * 36 - 12 - 2, "ischemic": 12, "hemorrhagic": 2}
    assert doc["subsets"]["valid"]["slices_with_class"]["ischemic"] == 1
    assert doc["subsets"]["test"]["images"] == 1
    assert result["subsets"] == doc["subsets"] and len(result["files"]) == 5


def test_stats_reads_rgb_map_from_split_json_and_writes_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "Brain"
    make_dataset(root, {"train": 3, "valid": 1}, colour=RED)
    split = {"rgb_map": [[[0, 0, 0], 0], [[255, 0, 0], 1], [[0, 0, 255], 2]],
             "class_names": ["background", "lesion", "bleed"]}
    (root / "split.json").write_text(json.dumps(split))
    out = tmp_path / "report"
    dataset_stats(root, out)
    assert is_png(out / "Brain_Statistics.png") and is_png(out / "train_masks_sample.png")
    assert not (root / "stats.json").exists()
    doc = json.loads((out / "stats.json").read_text())
    assert list(doc["subsets"]) == ["train", "valid"]
    assert doc["subsets"]["train"]["slices_with_class"] == {"background": 3, "lesion": 2, "bleed": 1}
    assert doc["subsets"]["train"]["unmapped_pixels"] == 0


def test_stats_count_class_index_masks_as_split_json_says(tmp_path: Path) -> None:
    root = tmp_path / "Idx"
    make_dataset(root, {"train": 3, "valid": 1})
    for path in root.glob("*/masks/*.png"):            # green -> 1, blue -> 2, as grey class-index PNGs
        rgb = np.asarray(Image.open(path))
        Image.fromarray(((rgb[..., 1] == 255) * 1 + (rgb[..., 2] == 255) * 2).astype(np.uint8)).save(path)
    split = {"rgb_map": [[[0, 0, 0], 0], [[0, 255, 0], 1], [[0, 0, 255], 2]], "mask_format": "index",
             "class_names": ["background", "lesion", "bleed"]}
    (root / "split.json").write_text(json.dumps(split))
    doc = dataset_stats(root, tmp_path / "out")
    assert doc["mask_format"] == "index" and doc["subsets"]["train"]["unmapped_pixels"] == 0
    assert doc["subsets"]["train"]["pixels"] == {"background": 3 * 36 - 8 - 2, "lesion": 8, "bleed": 2}
    split["mask_format"] = "rgb"                       # read as colours they are all (nearly) black
    (root / "split.json").write_text(json.dumps(split))
    wrong = dataset_stats(root, tmp_path / "out", overwrite=True)
    assert wrong["subsets"]["train"]["pixels"]["lesion"] == 0 and wrong["subsets"]["train"]["unmapped_pixels"] == 10
