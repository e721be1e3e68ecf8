"""flexunet.preprocessing.pipeline: every file is checked before the first step, one line naming it.

train and evaluate go through ``subset_pairs`` / ``check_masks`` / ``make_dataset``: a damaged, unpaired,
transparent, 16-bit or TIFF image, a JPEG mask, a mask of another size or of colours outside rgb_map
is refused before any training step, and nothing is written; grey and opaque RGBA images are read
as the RGB they show.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import config_text, make_tiny_dataset, one_error, save
from flexunet.config.loader import load_config
from flexunet.preprocessing.pipeline import check_masks, make_dataset, subset_pairs
from flexunet.utils.errors import MaskError


@pytest.fixture
def train_files(tmp_path):
    """data/train (4 pairs) and data/valid (2 pairs, also [test]) of the conftest dataset; (config, train folder)."""
    make_tiny_dataset(tmp_path / "data" / "train", n=4, seed=1)
    make_tiny_dataset(tmp_path / "data" / "valid", n=2, seed=2)
    config = tmp_path / "t.config"
    config.write_text(config_text(
        train={"epochs": 1, "batch_size": 4, "model_dir": "models", "images_dir": "data/train/images",
               "masks_dir": "data/train/masks", "tensorboard": False},
        valid={"images_dir": "data/valid/images", "masks_dir": "data/valid/masks"},
        test={"images_dir": "data/valid/images", "masks_dir": "data/valid/masks"}))
    return config, tmp_path / "data" / "train"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def _text(path: Path) -> None:
    path.write_text("this is a text file, not a PNG\n")


def _other_size(path: Path) -> None:
    save(path, np.zeros((20, 32, 3), np.uint8))


def _sixteen_bit(path: Path) -> None:
    save(path, np.asarray(Image.open(path))[..., 0].astype(np.uint16) * 200)


def _transparent(path: Path) -> None:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    save(path, np.dstack([rgb, np.full(rgb.shape[:2], 100, np.uint8)]), "RGBA")


def _tiff(path: Path) -> None:
    Image.open(path).save(path.with_suffix(".tif"))
    path.unlink()


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("where,damage,expected", [
    ("images", _truncate, r"images/1001\.png: cannot be decoded .*truncated"),
    ("images", _text, r"images/1001\.png: not an image PIL can read"),
    ("masks", _truncate, r"masks/1001\.png: cannot be decoded .*truncated"),
    ("images", _sixteen_bit, r"1001\.png: I;16 \(16-bit\) image; .*8-bit images only .*flexunet prepare"),
    ("images", _transparent, r"1001\.png: has transparent pixels"),
    ("images", _tiff, r"1001\.tif: \.tif images cannot be read by the training pipeline"),
    ("masks", _other_size, r"masks/1001\.png: mask is 32x20 but 1001\.png is 32x32"),
])
def test_train_and_evaluate_check_every_file_before_the_first_step(train_files, capsys, command, where,
                                                                   damage, expected):
    config, train_dir = train_files
    subset = train_dir if command == "train" else train_dir.parent / "valid"
    damage(subset / where / "1001.png")
    line = one_error(capsys, command, str(config))
    assert re.search(expected, line), line
    assert not (config.parent / "models").exists()


def test_train_refuses_unpaired_files_and_jpeg_masks(train_files, capsys):
    config, train_dir = train_files
    save(train_dir / "masks" / "2000.png", np.zeros((32, 32, 3), np.uint8))
    assert "masks/2000.png: no image with the same name in" in one_error(capsys, "train", str(config))
    (train_dir / "masks" / "2000.png").unlink()
    (train_dir / "masks" / "1003.png").unlink()
    assert "images/1003.png: no mask with the same name in" in one_error(capsys, "train", str(config))
    (train_dir / "images" / "1003.png").unlink()
    mask = train_dir / "masks" / "1002.png"
    Image.open(mask).convert("RGB").save(mask.with_suffix(".jpg"))
    mask.unlink()
    line = one_error(capsys, "train", str(config))
    assert "masks/1002.jpg: JPEG mask refused — lossy compression invents colours" in line and "PNG" in line
    for folder in ("images", "masks"):
        shutil.rmtree(train_dir / folder)
        (train_dir / folder).mkdir()
    assert "train/images: no images found; expected PNG" in one_error(capsys, "train", str(config))
    assert not (config.parent / "models").exists()


def test_mask_colours_outside_rgb_map_accepted_only_with_tolerance(train_files):
    config, train_dir = train_files
    mask = np.asarray(Image.open(train_dir / "masks" / "1000.png")).copy()
    mask[0, :4] = (0, 240, 10)                                          # anti-aliased green, 4 px
    save(train_dir / "masks" / "1000.png", mask)
    cfg = load_config(config)
    pairs = subset_pairs(cfg, "train")
    with pytest.raises(MaskError, match=r"1000\.png: 4 pixel\(s\) in 1 colour\(s\) not in rgb_map "
                                        r"\(\(0, 240, 10\): 4 px\); fix the mask, or set \[mask\] tolerance"):
        check_masks(cfg, pairs)
    check_masks(load_config(config, ["mask.tolerance=20.0"]), pairs)
    check_masks(load_config(config, ["mask.map_unmapped=True"]), pairs)


def test_grey_and_opaque_rgba_images_are_accepted_for_training(train_files):
    config, train_dir = train_files
    img = np.asarray(Image.open(train_dir / "images" / "1000.png").convert("RGB"))
    save(train_dir / "images" / "1000.png", img[..., 0], "L")
    save(train_dir / "images" / "1001.png", np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]), "RGBA")
    cfg = load_config(config)
    pairs = subset_pairs(cfg, "train")
    check_masks(cfg, pairs)
    images, _ = next(iter(make_dataset(cfg, pairs[:2], training=False, batch_size=2)))
    np.testing.assert_allclose(images.numpy()[0], images.numpy()[1], atol=0.5)   # same pixels, 3 channels
