"""Reliability (issue 8): bad input gets one clear line, nothing is lost, nothing is executed.

Commands run in-process through ``flexunet.cli.main.main`` (stderr captured) except where a real
process is the point: ``kill -9`` and Ctrl-C (SIGINT).  Every user error must print exactly
one ``flexunet <command>: ...`` line, no traceback, exit non-zero and leave no partial output.

Cases already covered elsewhere and not repeated here: config values one by one
(test_config.py: syntax errors with line, duplicate keys, wrong types, out-of-range values,
rgb_map rules, missing required keys, code in a value, did-you-mean warnings), config errors
and missing folders through the CLI (test_cli.py), DICOM decoding at unit level (test_dicom.py),
prepare's unpaired/strict/tolerance/overwrite rules (test_prepare.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from conftest import disk_full_on, leftovers, make_tiny_dataset, snapshot
from flexunet.cli.main import main
from flexunet.utils.outputs import OWNER_FILE

RGB_MAP = {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}
GREEN = (0, 255, 0)

PIPELINE_CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
num_layers = 2
dropout_rate = 0.0
learning_rate = 0.01
clipvalue = None
loss = "ce_dice"

[dataset]
class_names = ["background", "bright", "dark"]

[train]
epochs = 1
batch_size = 4
model_dir = "{run}/models"
eval_dir = "{run}/eval"
images_dir = "{data}/train/images"
masks_dir = "{data}/train/masks"
tensorboard = False
seed = 7

[valid]
images_dir = "{data}/valid/images"
masks_dir = "{data}/valid/masks"

[test]
images_dir = "{data}/test/images"
masks_dir = "{data}/test/masks"

[infer]
images_dir = "{data}/mini_test/images"
output_dir = "{run}/out"

[mask]
rgb_map = {{(0,0,0):0, (0,255,0):1, (0,0,255):2}}

[prepare]
raw_dir = "./raw"
output_dir = "./master"
size = 32
workers = 1

[split]
output_dir = "./dataset"
name = "Stroke"
ratios = (0.5, 0.25, 0.25)
group_by = "slice"
mini_test_count = 2

[augmentor]
rotation = False
shrinks = ()
hflip = True
vflip = False
"""


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def restored_logging():
    """main() points the flexunet logger at the current stderr; put the logger back afterwards."""
    logger = logging.getLogger("flexunet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _restore_logging():
    with restored_logging():
        yield


def cli(capsys, *args: str) -> tuple[int, list[str], str]:
    """Run ``flexunet -q ARGS`` in-process: (exit code, the flexunet <command> lines, all of stderr)."""
    capsys.readouterr()
    rc = main(["-q", *args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("flexunet ")]
    return rc, lines, err


def one_error(capsys, *args: str, rc: int = 2) -> str:
    """The single error line of a failing command (asserting exit code, one line, no traceback)."""
    code, lines, err = cli(capsys, *args)
    assert code == rc, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def write_config(folder: Path, text: str = PIPELINE_CONFIG, data: str = "./dataset/Stroke",
                 run: str = ".") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flexunet.config.loader"
    path.write_text(text.format(data=data, run=run))
    return path


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path)
    return path


def make_raw(raw: Path, n: int = 4) -> None:
    """raw/PNG and raw/MASKS: ``n`` 32x32 slices from conftest's tiny dataset."""
    make_tiny_dataset(raw, n=n, seed=5)
    (raw / "images").rename(raw / "PNG")
    (raw / "masks").rename(raw / "MASKS")


def write_dicom(path: Path, stored: np.ndarray, *, rescale: bool = True, modality: str = "CT",
                pixels: bool = True, syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = modality, "P1", "1.2.3"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if pixels:
        ds.PixelData = stored.astype("<i2").tobytes()
    if syntax != ExplicitVRLittleEndian:  # compressed syntax, bytes no decoder accepts
        ds.PixelData = encapsulate([b"not a jpeg"])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """raw -> prepare -> split -> augment -> train (1 epoch) -> evaluate -> infer, through the CLI,
    hashing every command's inputs before and after it.  Raw holds a grey, an RGBA (half
    transparent) and a 16-bit slice besides RGB ones."""
    root = tmp_path_factory.mktemp("pipeline")
    raw = root / "raw"
    make_raw(raw, n=12)
    png = raw / "PNG"
    grey = np.asarray(Image.open(png / "1000.png"))[..., 0]
    save(png / "1000.png", grey, "L")                                  # grayscale
    rgb = np.asarray(Image.open(png / "1001.png").convert("RGB"))
    save(png / "1001.png", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA")
    save(png / "1002.png", np.asarray(Image.open(png / "1002.png"))[..., 0].astype(np.uint16) * 100)
    config = write_config(root)
    dataset = root / "dataset" / "Stroke"
    record: dict = {"root": root, "config": config, "dataset": dataset, "rc": {}, "same": {}}
    config_hash = snapshot(root)["flexunet.config.loader"]
    raw_before = snapshot(raw)

    def run(name: str, inputs: Path, *extra: str) -> None:
        before = snapshot(inputs)
        record["rc"][name] = main(["-q", name, str(config), *extra])
        record["same"][name] = (before, snapshot(inputs))

    with restored_logging():
        run("prepare", raw)
        run("split", root / "master")
        train_dir = dataset / "train"
        before_augment = snapshot(train_dir)
        run("augment", dataset)
        record["augment"] = (before_augment, snapshot(train_dir))
        run("train", dataset)
        run("evaluate", dataset)
        run("infer", dataset)
    record["raw"] = (raw_before, snapshot(raw))
    record["config_same"] = snapshot(root)["flexunet.config.loader"] == config_hash
    return record


def test_pipeline_commands_succeed(pipeline):
    assert pipeline["rc"] == {"prepare": 0, "split": 0, "augment": 0, "train": 0, "evaluate": 0, "infer": 0}
    root = pipeline["root"]
    assert (root / "models" / "best_model.keras").is_file() and (root / "eval" / "evaluation.json").is_file()
    assert len(list((root / "out").glob("*.png"))) == 2
    assert not leftovers(root)


@pytest.mark.parametrize("command", ["prepare", "split", "train", "evaluate", "infer"])
def test_inputs_are_never_modified(pipeline, command):
    before, after = pipeline["same"][command]
    assert before and after == before
    assert pipeline["raw"][0] == pipeline["raw"][1] and pipeline["config_same"]


def test_augment_only_adds_files_beside_the_train_originals(pipeline):
    before, after = pipeline["augment"]
    assert {k: after[k] for k in before} == before                     # originals byte for byte
    added = sorted(set(after) - set(before))
    assert added and all(Path(k).name.startswith("hflipped_") or Path(k).name == OWNER_FILE for k in added)
    whole_before, whole_after = pipeline["same"]["augment"]             # valid, test, split.json untouched
    assert {k: v for k, v in whole_after.items() if not k.startswith("train/")} == \
        {k: v for k, v in whole_before.items() if not k.startswith("train/")}


def test_grey_rgba_and_16_bit_slices_are_converted_by_prepare(pipeline):
    root = pipeline["root"]
    images = root / "master" / "images"
    raw = root / "raw" / "PNG"
    for name in ("1000.png", "1001.png", "1002.png"):
        assert Image.open(images / name).mode == "RGB"
    grey = np.asarray(Image.open(raw / "1000.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(images / "1000.png"))[..., 1], grey)
    rgba = np.asarray(Image.open(raw / "1001.png")).astype(np.float64)
    composited = np.asarray(Image.open(images / "1001.png")).astype(np.float64)
    # alpha 128 over black: value * 128/255 (within a grey level)
    np.testing.assert_allclose(composited, rgba[..., :3] * 128 / 255, atol=1.0)
    wide = np.asarray(Image.open(raw / "1002.png")).astype(np.float64)
    stretched = np.asarray(Image.open(images / "1002.png"))[..., 0]
    assert stretched.min() == 0 and stretched.max() == 255                # min..max -> 0..255
    np.testing.assert_allclose(stretched, (wide - wide.min()) * 255 / (wide.max() - wide.min()), atol=0.5)


# --------------------------------------------------------------------------- images and masks: prepare


PREPARE_CONFIG = """\
[model]
num_classes = 3
num_layers = 2
image_width = 32
image_height = 32
[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
[prepare]
raw_dir = "raw"
output_dir = "master"
size = 32
workers = 1
"""


@pytest.fixture
def raw_project(tmp_path):
    """tmp_path/raw/{PNG,MASKS} with four slices and a prepare config; returns (config, raw)."""
    make_raw(tmp_path / "raw")
    config = tmp_path / "p.config"
    config.write_text(PREPARE_CONFIG)
    return config, tmp_path / "raw"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def _text(path: Path) -> None:
    path.write_text("this is a text file, not a PNG\n")


def _other_size(path: Path) -> None:
    save(path, np.zeros((20, 32, 3), np.uint8))


BAD_IMAGES = [
    (_truncate, r"1001\.png: cannot be decoded \(.*truncated.*re-export it"),
    (_text, r"1001\.png: not an image PIL can read"),
]


@pytest.mark.parametrize("damage,expected", BAD_IMAGES)
def test_prepare_refuses_a_damaged_slice(raw_project, capsys, damage, expected):
    config, raw = raw_project
    damage(raw / "PNG" / "1001.png")
    before = snapshot(raw)
    line = one_error(capsys, "prepare", str(config))
    assert re.search(expected, line), line
    assert not (config.parent / "master").exists() and not leftovers(config.parent)
    assert snapshot(raw) == before


def test_prepare_empty_folders(raw_project, capsys):
    config, raw = raw_project
    for p in list((raw / "PNG").iterdir()) + list((raw / "MASKS").iterdir()):
        p.unlink()
    line = one_error(capsys, "prepare", str(config))
    assert "no slice has a mask of the same name in MASKS/" in line
    assert not (config.parent / "master").exists()


def test_prepare_image_and_mask_of_different_sizes(raw_project, capsys):
    config, raw = raw_project
    _other_size(raw / "MASKS" / "1002.png")
    line = one_error(capsys, "prepare", str(config))
    assert "MASKS/1002.png: mask is 32x20 but 1002.png is 32x32 (WxH); expected the same size" in line
    assert not (config.parent / "master").exists()


def test_prepare_refuses_jpeg_masks_with_the_reason(raw_project, capsys):
    config, raw = raw_project
    mask = raw / "MASKS" / "1003.png"
    Image.open(mask).convert("RGB").save(mask.with_suffix(".jpg"))
    mask.unlink()
    line = one_error(capsys, "prepare", str(config))
    assert "1003.jpg: JPEG mask refused (1 in" in line and "lossy compression" in line and "as PNG" in line
    assert not (config.parent / "master").exists()


def test_prepare_off_palette_colours_are_counted_and_need_tolerance(raw_project, capsys):
    config, raw = raw_project
    mask = np.asarray(Image.open(raw / "MASKS" / "1000.png")).copy()
    mask[0, :5] = (0, 250, 0)                       # 5 near-green pixels
    mask[1, :3] = (255, 0, 0)                       # 3 red pixels: no class at all
    save(raw / "MASKS" / "1000.png", mask)
    line = one_error(capsys, "prepare", str(config))
    assert "(0, 250, 0): 5 px" in line and "(255, 0, 0): 3 px" in line and "tolerance" in line
    assert not (config.parent / "master").exists()
    line = one_error(capsys, "prepare", str(config), "--set", "mask.tolerance=6.0")
    assert "(255, 0, 0): 3 px" in line and "(0, 250, 0)" not in line         # near-green now maps
    rc, _, err = cli(capsys, "prepare", str(config), "--set", "mask.map_unmapped=True")
    assert rc == 0 and "mapped off-palette colours to the nearest class in 1 mask(s)" in err


# --------------------------------------------------------------------------- images and masks: train


TRAIN_DATA_CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
num_layers = 2
dropout_rate = 0.0
learning_rate = 0.01
clipvalue = None
[train]
epochs = 1
batch_size = 4
model_dir = "models"
images_dir = "data/train/images"
masks_dir = "data/train/masks"
tensorboard = False
[valid]
images_dir = "data/valid/images"
masks_dir = "data/valid/masks"
[test]
images_dir = "data/valid/images"
masks_dir = "data/valid/masks"
[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
"""


@pytest.fixture
def train_files(tmp_path):
    make_tiny_dataset(tmp_path / "data" / "train", n=4, seed=1)
    make_tiny_dataset(tmp_path / "data" / "valid", n=2, seed=2)
    config = tmp_path / "t.config"
    config.write_text(TRAIN_DATA_CONFIG)
    return config, tmp_path / "data" / "train"


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
    from flexunet.config.loader import load_config
    from flexunet.preprocessing.pipeline import check_masks, subset_pairs
    from flexunet.utils.errors import MaskError

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
    from flexunet.config.loader import load_config
    from flexunet.preprocessing.pipeline import check_masks, make_dataset, subset_pairs

    config, train_dir = train_files
    img = np.asarray(Image.open(train_dir / "images" / "1000.png").convert("RGB"))
    save(train_dir / "images" / "1000.png", img[..., 0], "L")
    save(train_dir / "images" / "1001.png", np.dstack([img, np.full(img.shape[:2], 255, np.uint8)]), "RGBA")
    cfg = load_config(config)
    pairs = subset_pairs(cfg, "train")
    check_masks(cfg, pairs)
    images, _ = next(iter(make_dataset(cfg, pairs[:2], training=False, batch_size=2)))
    np.testing.assert_allclose(images.numpy()[0], images.numpy()[1], atol=0.5)   # same pixels, 3 channels


# --------------------------------------------------------------------------- images: infer


@pytest.fixture
def infer_project(tmp_path):
    """A tiny model saved as the best model, and a folder of two good images."""
    import keras

    from flexunet.config.loader import load_config
    from flexunet.model.network import build_model

    config = tmp_path / "i.config"
    config.write_text(TRAIN_DATA_CONFIG + '[infer]\nimages_dir = "in"\noutput_dir = "out"\n')
    cfg = load_config(config)
    keras.utils.set_random_seed(0)
    (tmp_path / "models").mkdir()
    build_model(cfg.model).save(tmp_path / "models" / "best_model.keras")
    grey = np.random.default_rng(0).integers(40, 90, (24, 40), dtype=np.uint8)
    save(tmp_path / "in" / "a.png", np.dstack([grey] * 3))
    save(tmp_path / "in" / "b.png", np.dstack([grey] * 3))
    return config, tmp_path


@pytest.mark.parametrize("damage,expected", BAD_IMAGES)
def test_infer_names_a_damaged_image(infer_project, capsys, damage, expected):
    config, root = infer_project
    (root / "in" / "b.png").rename(root / "in" / "1001.png")
    damage(root / "in" / "1001.png")
    line = one_error(capsys, "infer", str(config))
    assert re.search(expected, line), line
    assert not leftovers(root)


def test_infer_names_a_dicom_without_pixel_data(infer_project, capsys):
    config, root = infer_project
    write_dicom(root / "in" / "c.dcm", np.zeros((8, 8)), pixels=False)
    line = one_error(capsys, "infer", str(config))
    assert "c.dcm: no pixel data (a header-only DICOM); expected an image slice" in line


def test_infer_accepts_grey_rgba_and_16_bit_images(infer_project, capsys):
    config, root = infer_project
    grey = np.asarray(Image.open(root / "in" / "a.png"))[..., 0]
    save(root / "in" / "g.png", grey, "L")
    save(root / "in" / "r.png", np.dstack([grey, grey, grey, np.full_like(grey, 200)]), "RGBA")
    save(root / "in" / "w.png", grey.astype(np.uint16) * 300)
    rc, _, err = cli(capsys, "infer", str(config))
    assert rc == 0, err
    for stem in ("g", "r", "w"):
        out = Image.open(root / "out" / f"{stem}.png")
        assert out.mode == "P" and out.size == (40, 24)


def test_infer_model_file_holding_code_is_refused_not_run(infer_project, capsys):
    import keras

    config, root = infer_project
    marker = root / "PWNED"
    inputs = keras.Input((32, 32, 3))
    payload = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")   # no closure: serialisable
    outputs = keras.layers.Lambda(payload)(inputs)
    model_path = root / "models" / "best_model.keras"
    keras.Model(inputs, outputs).save(model_path)
    marker.unlink(missing_ok=True)                  # saving traced the lambda once
    line = one_error(capsys, "infer", str(config))
    assert "best_model.keras: cannot be loaded as a FlexUNet model" in line and "Lambda" in line
    assert not marker.exists() and not (root / "out").exists()


# --------------------------------------------------------------------------- DICOM through prepare


@pytest.fixture
def dicom_project(tmp_path):
    raw = tmp_path / "raw"
    hu = np.full((32, 32), 40)
    for sid in ("d1", "d2"):
        write_dicom(raw / "DICOM" / f"{sid}.dcm", hu + 1024)
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[8:16, 8:16] = GREEN
        save(raw / "MASKS" / f"{sid}.png", mask)
    config = tmp_path / "d.config"
    config.write_text(PREPARE_CONFIG + 'source = "dicom"\n')
    return config, raw


@pytest.mark.parametrize("kwargs,expected", [
    ({"pixels": False}, r"d2\.dcm: no pixel data \(a header-only DICOM\); expected an image slice"),
    ({"syntax": JPEGBaseline8Bit}, r"d2\.dcm: pixel data cannot be decoded \(transfer syntax JPEG Baseline"
                                   r".*install the matching pydicom decoder plugin.*gdcmconv --raw\)"),
])
def test_prepare_refuses_an_undecodable_dicom(dicom_project, capsys, kwargs, expected):
    config, raw = dicom_project
    write_dicom(raw / "DICOM" / "d2.dcm", np.zeros((32, 32)), **kwargs)
    line = one_error(capsys, "prepare", str(config))
    assert re.search(expected, line), line
    assert not (config.parent / "master").exists() and not leftovers(config.parent)


def test_prepare_dicom_missing_rescale_and_non_ct_warn_and_continue(dicom_project, capsys):
    config, raw = dicom_project
    write_dicom(raw / "DICOM" / "d1.dcm", np.full((32, 32), 40), rescale=False)      # stored = HU
    write_dicom(raw / "DICOM" / "d2.dcm", np.full((32, 32), 40 + 1024), modality="MR")
    rc, lines, err = cli(capsys, "prepare", str(config))
    assert rc == 0 and not lines, err
    assert ("1 DICOM file(s) lack RescaleSlope/RescaleIntercept; used the defaults slope 1, intercept 0 "
            "(stored values taken as HU)") in err and "d1.dcm" in err
    assert "d2.dcm: Modality is MR, not CT; HU windows assume CT values" in err
    for sid in ("d1", "d2"):   # HU 40 = the brain window's centre: grey 128 either way
        assert np.asarray(Image.open(config.parent / "master" / "images" / f"{sid}.png"))[0, 0, 0] == 128


# --------------------------------------------------------------------------- training failures


def _project_copy(pipeline, tmp_path: Path) -> Path:
    """A config for a new run folder in tmp_path on the pipeline's split data, with its 1-epoch run copied."""
    shutil.copytree(pipeline["root"] / "models", tmp_path / "models")
    shutil.copytree(pipeline["root"] / "eval", tmp_path / "eval")
    return write_config(tmp_path, data=str(pipeline["dataset"]))


def test_nan_loss_stops_with_the_epoch_and_a_hint(tmp_path, capsys, pipeline):
    config = write_config(tmp_path, data=str(pipeline["dataset"]))
    line = one_error(capsys, "train", str(config), "--set", "model.optimizer='sgd'",
                     "--set", "model.learning_rate=1e30")
    assert line.startswith("flexunet train: error: loss became NaN at epoch 1, batch ")
    assert "no epoch had completed, so no checkpoint was saved" in line
    assert "lower [model] learning_rate (now 1e+30) or set [model] clipvalue" in line
    assert not (tmp_path / "models" / "last_checkpoint").exists()      # no NaN weights to resume from
    assert not (tmp_path / "models" / "best_model.keras").exists()


def test_nan_in_a_later_epoch_keeps_the_earlier_ones(tmp_path, capsys, pipeline, monkeypatch):
    import flexunet.model.losses

    config = _project_copy(pipeline, tmp_path)
    kept = snapshot(tmp_path / "models")
    history = (tmp_path / "eval" / "history.json").read_text()
    real = flexunet.model.losses.make_loss

    def nan_loss(cfg):
        loss = real(cfg)
        return lambda y_true, y_pred: loss(y_true, y_pred) * float("nan")

    monkeypatch.setattr(flexunet.model.losses, "make_loss", nan_loss)
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2")
    assert line.startswith("flexunet train: error: loss became NaN at epoch 2, batch 1; epochs 1..1 are "
                           f"saved in {tmp_path / 'models'};")
    assert "start again with --overwrite (--resume would continue with the saved learning rate)" in line
    now = snapshot(tmp_path / "models")
    assert {k: now[k] for k in kept if k != "train_eval_infer.config"} == \
        {k: v for k, v in kept.items() if k != "train_eval_infer.config"}   # checkpoint, best model as they were
    assert (tmp_path / "eval" / "history.json").read_text() == history


def test_disk_full_while_saving_the_checkpoint(tmp_path, capsys, pipeline, monkeypatch):
    config = _project_copy(pipeline, tmp_path)
    checkpoint = snapshot(tmp_path / "models" / "last_checkpoint")
    hit = disk_full_on(monkeypatch, lambda p: p.name == "state.json")
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2", rc=1)
    assert hit and line == (f"flexunet train: error: {hit[0]}: No space left on device; previous results "
                            f"were left as they were")
    assert snapshot(tmp_path / "models" / "last_checkpoint") == checkpoint
    assert json.loads((tmp_path / "models" / "last_checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not leftovers(tmp_path)
    json.loads((tmp_path / "eval" / "history.json").read_text())          # whole, whichever epoch


@pytest.mark.parametrize("change,expected", [
    ("model.optimizer='sgd'", r"last_checkpoint: optimizer state has \d+ variables, the configured optimizer \d+; "
                              r"expected the config the run was started with"),
])
def test_resume_with_a_changed_model_config_is_one_line(tmp_path, capsys, pipeline, change, expected):
    config = _project_copy(pipeline, tmp_path)
    before = snapshot(tmp_path / "models")
    line = one_error(capsys, "train", str(config), "--resume", "--set", "train.epochs=2", "--set", change)
    assert re.search(expected, line) and line.endswith("or start again with --overwrite"), line
    assert snapshot(tmp_path / "models") == before


def _spawn_training(tmp_path: Path, pipeline, epochs: int) -> tuple[subprocess.Popen, Path]:
    """`flexunet train` in a real process, with epochs long enough (about a second) to land a signal inside one."""
    config = write_config(tmp_path, data=str(pipeline["dataset"]))
    args = [sys.executable, "-m", "flexunet", "-q", "train", str(config), "--set", f"train.epochs={epochs}",
            "--set", "train.batch_size=2", "--set", "train.steps_per_epoch=60"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # Ctrl-C as a terminal sends it: to a process whose SIGINT is not ignored. A suite started as a background
    # job of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and so would this child.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, config


def _wait_for_epoch(proc: subprocess.Popen, state: Path, epoch: int, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        if proc.poll() is not None:
            pytest.fail(f"training ended before epoch {epoch}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no checkpoint of epoch {epoch} within {timeout} s")


def test_kill_9_mid_epoch_then_resume_loses_nothing(tmp_path, capsys, pipeline):
    proc, config = _spawn_training(tmp_path, pipeline, epochs=2)
    state = tmp_path / "models" / "last_checkpoint" / "state.json"
    try:
        _wait_for_epoch(proc, state, 1)
        time.sleep(0.2)                                                 # into epoch 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())
    assert saved["epoch"] == 1                                          # killed before epoch 2 ended
    rc, lines, err = cli(capsys, "train", str(config), "--resume", "--set", "train.epochs=2",
                         "--set", "train.batch_size=2", "--set", "train.steps_per_epoch=60")
    assert rc == 0 and not lines, err
    history = json.loads((tmp_path / "eval" / "history.json").read_text())
    assert history["epochs"] == [1, 2]
    for key, values in saved["history"].items():                       # epoch 1 exactly as it was
        assert history[key][0] == values[0]
    assert json.loads(state.read_text())["epoch"] == 2
    assert not leftovers(tmp_path / "models")


def test_ctrl_c_exits_cleanly_with_the_checkpoint_intact(tmp_path, pipeline):
    # many epochs: however fast an epoch is on this machine, the signal lands inside one
    proc, _ = _spawn_training(tmp_path, pipeline, epochs=500)
    state = tmp_path / "models" / "last_checkpoint" / "state.json"
    try:
        _wait_for_epoch(proc, state, 1)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("flexunet ")]
    saved = json.loads(state.read_text())["epoch"]
    assert saved >= 1
    assert lines == [f"flexunet train: interrupted during epoch {saved + 1}; epochs 1..{saved} are saved in "
                     f"{tmp_path / 'models'}; continue with: flexunet train CONFIG --resume"], err
    checkpoint = tmp_path / "models" / "last_checkpoint"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.weights.h5", "model_meta.json", "optimizer.npz",
                                                            "rng.npz", "state.json"]
    assert (tmp_path / "models" / "best_model.keras").is_file() and not leftovers(tmp_path)


# --------------------------------------------------------------------------- atomic outputs


def test_disk_full_during_prepare_keeps_the_previous_master(raw_project, capsys, monkeypatch):
    config, raw = raw_project
    assert cli(capsys, "prepare", str(config))[0] == 0
    master = config.parent / "master"
    before = snapshot(master)
    masks = []
    disk_full_on(monkeypatch, lambda p: p.parent.name == "masks" and (masks.append(p) or len(masks) == 3))
    line = one_error(capsys, "prepare", str(config), "--overwrite", rc=1)
    assert line.endswith("No space left on device; previous results were left as they were")
    assert snapshot(master) == before and not leftovers(config.parent)


def test_a_crash_during_evaluate_keeps_the_previous_report(tmp_path, capsys, pipeline, monkeypatch):
    config = _project_copy(pipeline, tmp_path)
    report = (tmp_path / "eval" / "evaluation.json").read_text()
    disk_full_on(monkeypatch, lambda p: p.name == "evaluation.json")
    line = one_error(capsys, "evaluate", str(config), rc=1)
    assert "evaluation.json" in line and "No space left on device" in line
    assert (tmp_path / "eval" / "evaluation.json").read_text() == report and not leftovers(tmp_path)


# --------------------------------------------------------------------------- nothing deleted


def test_no_command_replaces_a_folder_it_did_not_create(raw_project, capsys):
    config, _ = raw_project
    mine = config.parent / "master"
    mine.mkdir()
    (mine / "my_notes.txt").write_text("keep me")
    line = one_error(capsys, "prepare", str(config))
    assert "master: holds 1 entry `flexunet prepare` did not write (my_notes.txt); it builds this folder whole" in line
    assert one_error(capsys, "prepare", str(config), "--overwrite") == line   # the rule holds with --overwrite too
    assert (mine / "my_notes.txt").read_text() == "keep me"


def test_infer_writes_into_an_existing_folder_without_deleting(infer_project, capsys):
    config, root = infer_project
    (root / "out").mkdir()
    (root / "out" / "my_notes.txt").write_text("keep me")
    assert cli(capsys, "infer", str(config))[0] == 2                  # not infer's folder: --overwrite needed
    assert sorted(p.name for p in (root / "out").iterdir()) == ["my_notes.txt"]
    assert cli(capsys, "infer", str(config), "--overwrite")[0] == 0
    assert (root / "out" / "my_notes.txt").read_text() == "keep me" and (root / "out" / "a.png").is_file()


# --------------------------------------------------------------------------- security: names and paths


HOSTILE = "up\\..\\..\\escaped"   # a legal file name on Linux; read as a Windows path it climbs out


def test_prepare_and_infer_keep_hostile_names_inside_the_output_folder(tmp_path, infer_project, capsys):
    config, root = infer_project
    (root / "in" / "a.png").rename(root / "in" / f"{HOSTILE}.png")
    victim = root / "out" / "b.png"
    outside = root / "outside.png"
    outside.write_bytes(b"not yours")
    victim.parent.mkdir()
    victim.symlink_to(outside)                                          # an output name that is a link
    assert cli(capsys, "infer", str(config), "--overwrite")[0] == 2     # b.png is not infer's: never replaced
    assert victim.is_symlink() and outside.read_bytes() == b"not yours"
    victim.unlink()
    assert cli(capsys, "infer", str(config), "--overwrite")[0] == 0
    assert sorted(p.name for p in (root / "out").iterdir()) == [".flexunet-owner.json", "b.png", "escaped.png"]
    assert outside.read_bytes() == b"not yours"

    raw = tmp_path / "p" / "raw"
    make_raw(raw, n=2)
    for sub in ("PNG", "MASKS"):
        (raw / sub / "1000.png").rename(raw / sub / f"{HOSTILE}.png")
    (tmp_path / "p" / "p.config").write_text(PREPARE_CONFIG)
    assert cli(capsys, "prepare", str(tmp_path / "p" / "p.config"))[0] == 0
    master = tmp_path / "p" / "master"
    assert sorted(p.name for p in (master / "images").iterdir()) == ["1001.png", "escaped.png"]
    assert sorted(p.name for p in tmp_path.joinpath("p").iterdir()) == ["master", "p.config", "raw"]
