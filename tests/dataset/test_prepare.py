"""prepare: raw PNG/ DICOM/ MASKS/ folders -> square, resized master with manifests."""

from __future__ import annotations

import csv
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import JPEGBaseline8Bit

import flexunet.dataset.prepare as prepare_mod
from conftest import (BLUE, DAMAGED_PNG, GREEN, RGB_MAP, cli, config_text, disk_full_on, leftovers, make_cfg, make_raw_png,
                      one_error, run_command, save, snapshot, write_dicom)
from flexunet.config.loader import Config
from flexunet.utils.errors import ConfigError, DataError, FlexUNetError, MaskError
from flexunet.dataset.prepare import prepare_dataset

PREPARE = {"raw_dir": "raw", "output_dir": "master", "size": 32, "workers": 1}
PALETTE = set(RGB_MAP)
LEAF = ("STROKE-DATASET", "YARISMA-VERI-SETI_2_OTURUM")


def prepare_cfg(tmp_path: Path, *overrides: str) -> Config:
    return make_cfg(tmp_path, *overrides, dataset={"class_names": ["background", "ischemic", "hemorrhagic"]},
                    prepare=PREPARE)


def leaf(tmp_path: Path) -> Path:
    return tmp_path.joinpath("raw", *LEAF)


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_pair(root: Path, sid: str, value: int, blue: bool = True) -> None:
    """A 40x50 (HxW) slice: border 30, a block of ``value``; mask green (+ blue) blocks."""
    image = np.full((40, 50, 3), 30, np.uint8)
    image[10:30, 10:40] = value
    mask = np.zeros((40, 50, 3), np.uint8)
    mask[10:20, 10:25] = GREEN
    if blue:
        mask[20:30, 25:40] = BLUE
    save_png(root / "PNG" / f"{sid}.png", image)
    save_png(root / "MASKS" / f"{sid}.png", mask)


def make_raw(tmp_path: Path) -> Path:
    root = leaf(tmp_path)
    make_pair(root, "a", 100)
    make_pair(root, "b", 140)
    make_pair(root, "c", 180, blue=False)
    return root


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def colours(mask: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in c) for c in np.unique(mask.reshape(-1, 3), axis=0)}


# --------------------------------------------------------------------------- png source


def test_pairs_pads_resizes_and_writes_manifests(tmp_path: Path) -> None:
    make_raw(tmp_path)
    before = snapshot(tmp_path / "raw")
    summary = prepare_dataset(prepare_cfg(tmp_path), progress=False)
    out = tmp_path / "master"
    assert summary["count"] == 3 and summary["output_dir"] == out
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.png", "c.png"]
    for sid, value in (("a", 100), ("b", 140), ("c", 180)):
        image, mask = read_rgb(out / "images" / f"{sid}.png"), read_rgb(out / "masks" / f"{sid}.png")
        assert image.shape == mask.shape == (32, 32, 3)
        # 40x50 padded to 50x50 (5 rows above and below), then 50 -> 32 (x0.64)
        assert (image[:3] == 30).all() and (image[-3:] == 30).all()   # pad = border colour
        assert image[16, 16].tolist() == [value] * 3                 # the block of this very slice
        assert (mask[:3] == 0).all() and (mask[-3:] == 0).all()       # pad = background
        assert colours(mask) <= PALETTE                               # nearest only: no blends
        assert tuple(mask[12, 10]) == GREEN
        assert tuple(mask[19, 20]) == (BLUE if sid != "c" else (0, 0, 0))
    rows = json.loads((out / "manifest.json").read_text())["items"]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [r["classes"] for r in rows] == [[0, 1, 2], [0, 1, 2], [0, 1]]
    assert all(sum(r["pixels"]) == 32 * 32 for r in rows)
    assert rows[0]["group"] == "a" and rows[0]["group_kind"] == "slice" and rows[0]["pixel_spacing"] is None
    assert rows[0]["source_image"].endswith("PNG/a.png") and rows[0]["source_mask"].endswith("MASKS/a.png")
    with open(out / "manifest.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["id"] for t in table] == ["a", "b", "c"]
    assert table[2]["classes"] == "background;ischemic" and table[2]["pixels_hemorrhagic"] == "0"
    assert int(table[0]["pixels_ischemic"]) == rows[0]["pixels"][1] > 0
    assert snapshot(tmp_path / "raw") == before                       # inputs only read


def test_raw_dir_may_be_the_leaf_folder(tmp_path: Path) -> None:
    make_raw(tmp_path)
    assert prepare_dataset(prepare_cfg(tmp_path, f"prepare.raw_dir={leaf(tmp_path)}"), progress=False)["count"] == 3


def test_raw_dir_without_masks_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "raw" / "PNG").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"\[prepare\] raw_dir.*no MASKS/ folder"):
        prepare_dataset(prepare_cfg(tmp_path), progress=False)


def test_unpaired_files_are_warned_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_raw(tmp_path)
    save_png(root / "PNG" / "lonely.png", np.zeros((40, 50, 3), np.uint8))
    save_png(root / "MASKS" / "orphan.png", np.zeros((40, 50, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.prepare"):
        summary = prepare_dataset(prepare_cfg(tmp_path), progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lonely.png" in warnings[0] and "orphan.png" in warnings[0]
    assert summary["count"] == 3 and summary["skipped_images"] == 1 and summary["skipped_masks"] == 1
    assert not (tmp_path / "master" / "images" / "lonely.png").exists()


def test_unpaired_files_are_an_error_when_strict(tmp_path: Path) -> None:
    root = make_raw(tmp_path)
    save_png(root / "PNG" / "lonely.png", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(DataError, match=r"lonely\.png: unpaired.*strict_pairs"):
        prepare_dataset(prepare_cfg(tmp_path, "prepare.strict_pairs=True"), progress=False)
    assert not (tmp_path / "master").exists()


def test_off_palette_colours_need_tolerance(tmp_path: Path) -> None:
    root = make_raw(tmp_path)
    mask = np.asarray(Image.open(root / "MASKS" / "b.png")).copy()
    mask[0, :7] = (0, 250, 0)                                        # 7 near-green pixels
    save_png(root / "MASKS" / "b.png", mask)
    with pytest.raises(MaskError, match=r"b\.png: 1 mask\(s\).*\(0, 250, 0\): 7 px.*tolerance"):
        prepare_dataset(prepare_cfg(tmp_path), progress=False)
    assert not (tmp_path / "master").exists()
    summary = prepare_dataset(prepare_cfg(tmp_path, "mask.tolerance=10.0"), progress=False)
    assert summary["unmapped_pixels"] == 0
    assert colours(read_rgb(tmp_path / "master" / "masks" / "b.png")) <= PALETTE


def test_image_area_and_bilinear_resizing(tmp_path: Path) -> None:
    make_raw(tmp_path)
    prepare_dataset(prepare_cfg(tmp_path, "prepare.image_resize=bilinear", "prepare.size=16"), progress=False)
    image = read_rgb(tmp_path / "master" / "images" / "a.png")
    mask = read_rgb(tmp_path / "master" / "masks" / "a.png")
    assert image.shape == (16, 16, 3) and colours(mask) <= PALETTE
    assert len(np.unique(image)) > 2        # bilinear blends at the block edges


# --------------------------------------------------------------------------- groups and DICOM


def test_png_source_takes_group_and_spacing_from_dicom_header(tmp_path: Path) -> None:
    root = make_raw(tmp_path)
    write_dicom(root / "DICOM" / "a.dcm", np.zeros((40, 50)), patient="P1", pixels=False)
    write_dicom(root / "DICOM" / "b.dcm", np.zeros((40, 50)), patient="P1", pixels=False)
    prepare_dataset(prepare_cfg(tmp_path), progress=False)
    rows = {r["id"]: r for r in json.loads((tmp_path / "master" / "manifest.json").read_text())["items"]}
    assert rows["a"]["group"] == rows["b"]["group"] == "P1" and rows["a"]["group_kind"] == "patient"
    assert rows["c"]["group"] == "c" and rows["c"]["group_kind"] == "slice"
    # padded to 50, resized to 32: spacing x 50/32
    assert rows["a"]["pixel_spacing"] == pytest.approx([0.5 * 50 / 32, 0.75 * 50 / 32])


def make_dicom_raw(tmp_path: Path) -> np.ndarray:
    """Two 32x32 DICOM slices whose first row holds known HU values, and their masks."""
    root = leaf(tmp_path)
    hu = np.full((32, 32), -1000)
    hu[0, :6] = [-100, 0, 20, 60, 80, 500]
    for sid, patient in (("s1", "P1"), ("s2", "P2")):
        write_dicom(root / "DICOM" / f"{sid}.dcm", hu + 1024, patient=patient)
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[8:16, 8:16] = GREEN
        save_png(root / "MASKS" / f"{sid}.png", mask)
    return hu


def test_dicom_source_maps_known_hu_to_grey_levels(tmp_path: Path) -> None:
    make_dicom_raw(tmp_path)
    summary = prepare_dataset(prepare_cfg(tmp_path, "prepare.source=dicom"), progress=False)
    assert summary["count"] == 2 and summary["groups"] == 2
    image = read_rgb(tmp_path / "master" / "images" / "s1.png")
    # brain window c40/w80: grey = HU / 80 * 255, clipped
    assert image[0, :6, 0].tolist() == [0, 0, 64, 191, 255, 255]
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    rows = json.loads((tmp_path / "master" / "manifest.json").read_text())["items"]
    assert [r["group"] for r in rows] == ["P1", "P2"] and rows[0]["pixel_spacing"] == [0.5, 0.75]
    assert rows[0]["source_image"].endswith("DICOM/s1.dcm")


def test_dicom_source_three_windows(tmp_path: Path) -> None:
    make_dicom_raw(tmp_path)
    prepare_dataset(prepare_cfg(tmp_path, "prepare.source=dicom", "prepare.three_windows=True"), progress=False)
    image = read_rgb(tmp_path / "master" / "images" / "s1.png")
    # HU 60: brain 60/80*255 = 191; subdural (60+20)/200*255 = 102; bone (60+800)/2800*255 = 78
    assert image[0, 3].tolist() == [191, 102, 78]


# --------------------------------------------------------------------------- whole or nothing


def test_existing_output_refused_then_replaced_only_when_complete(tmp_path: Path) -> None:
    root = make_raw(tmp_path)
    prepare_dataset(prepare_cfg(tmp_path), progress=False)
    first = snapshot(tmp_path / "master")
    with pytest.raises(FlexUNetError, match=r"master: holds the output of an earlier `flexunet prepare`; pass "
                                            r"--overwrite"):
        prepare_dataset(prepare_cfg(tmp_path), progress=False)
    bad = np.zeros((40, 50, 3), np.uint8)
    bad[0, 0] = (200, 10, 10)
    save_png(root / "MASKS" / "c.png", bad)
    with pytest.raises(MaskError):
        prepare_dataset(prepare_cfg(tmp_path), overwrite=True, progress=False)
    assert snapshot(tmp_path / "master") == first                     # old master untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master", "raw"]  # no temporary leftovers
    make_pair(root, "c", 180, blue=False)
    make_pair(root, "d", 60)
    assert prepare_dataset(prepare_cfg(tmp_path), overwrite=True, progress=False)["count"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master", "raw"]


def test_output_inside_raw_is_refused(tmp_path: Path) -> None:
    make_raw(tmp_path)
    with pytest.raises(FlexUNetError, match="is inside the input folder"):
        prepare_dataset(prepare_cfg(tmp_path, f"prepare.output_dir={leaf(tmp_path) / 'out'}"), progress=False)


def test_parallel_matches_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        make_pair(leaf(tmp_path), f"p{i}", 60 + 40 * i, blue=i % 2 == 0)
    prepare_dataset(prepare_cfg(tmp_path), progress=False)
    serial = snapshot(tmp_path / "master")
    pools: list[int] = []

    class Pool(ProcessPoolExecutor):
        def __init__(self, max_workers: int, **kwargs: object) -> None:
            pools.append(max_workers)
            super().__init__(max_workers, **kwargs)

    monkeypatch.setattr(prepare_mod, "_MIN_PARALLEL", 2)
    monkeypatch.setattr(prepare_mod, "ProcessPoolExecutor", Pool)
    prepare_dataset(prepare_cfg(tmp_path, "prepare.workers=2"), overwrite=True, progress=True)
    assert pools == [2]
    assert snapshot(tmp_path / "master") == serial


def test_raw_search_skips_flexunet_outputs(tmp_path: Path) -> None:
    for sid in ("a", "b"):
        make_pair(tmp_path / "data" / "scans", sid, 90)
    cfg = prepare_cfg(tmp_path, f"prepare.raw_dir={tmp_path / 'data'}", f"prepare.output_dir={tmp_path / 'data/master'}")
    assert prepare_dataset(cfg, progress=False)["raw_root"] == tmp_path / "data" / "scans"
    # the master's own masks/ folder is not a second raw candidate
    assert prepare_dataset(cfg, overwrite=True, progress=False)["count"] == 2


def test_class_index_masks_are_prepared_as_class_index_masks(tmp_path: Path) -> None:
    make_raw(tmp_path)
    colour = prepare_dataset(prepare_cfg(tmp_path), progress=False)
    for path in (leaf(tmp_path) / "MASKS").iterdir():      # the same masks as palette PNGs of class indices
        rgb = read_rgb(path)
        img = Image.fromarray(((rgb == GREEN).all(-1) * 1 + (rgb == BLUE).all(-1) * 2).astype(np.uint8))
        img.putpalette([0, 0, 0, 255, 0, 0, 255, 255, 0])
        img.save(path)
    before = snapshot(tmp_path / "raw")
    index = prepare_dataset(prepare_cfg(tmp_path, "mask.format=index", f"prepare.output_dir={tmp_path / 'master2'}"),
                            progress=False)
    assert index["pixels"] == colour["pixels"] and index["slices_with_class"] == colour["slices_with_class"]
    out = tmp_path / "master2"
    assert json.loads((out / "manifest.json").read_text())["mask_format"] == "index"
    for sid in ("a", "b", "c"):
        with Image.open(out / "masks" / f"{sid}.png") as img:
            assert img.mode == "L"
            values = np.asarray(img)
        expected = (read_rgb(tmp_path / "master" / "masks" / f"{sid}.png") == GREEN).all(-1) * 1 \
            + (read_rgb(tmp_path / "master" / "masks" / f"{sid}.png") == BLUE).all(-1) * 2
        np.testing.assert_array_equal(values, expected)
    assert snapshot(tmp_path / "raw") == before


# --------------------------------------------------------------------------- through the command line
# every refusal is one ``flexunet prepare: ...`` line, exit 2, no traceback, and no master folder left


@pytest.fixture
def raw_project(tmp_path):
    """tmp_path/raw/{PNG,MASKS} with four 32x32 slices and a prepare config; returns (config, raw)."""
    make_raw_png(tmp_path / "raw")
    config = tmp_path / "p.config"
    config.write_text(config_text(prepare=PREPARE))
    return config, tmp_path / "raw"


@pytest.mark.parametrize("damage,expected", DAMAGED_PNG)
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
    save(raw / "MASKS" / "1002.png", np.zeros((20, 32, 3), np.uint8))
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


def test_grey_rgba_and_16_bit_slices_are_converted_by_prepare(pipeline):
    """conftest's pipeline: its raw slice 1000 is grey, 1001 RGBA (alpha 128) and 1002 16-bit."""
    root = pipeline["root"]
    assert pipeline["rc"]["prepare"] == 0
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


@pytest.fixture
def dicom_project(tmp_path):
    """raw/DICOM/{d1,d2}.dcm (HU 40 everywhere) with their masks and a DICOM-source config; (config, raw)."""
    raw = tmp_path / "raw"
    hu = np.full((32, 32), 40)
    for sid in ("d1", "d2"):
        write_dicom(raw / "DICOM" / f"{sid}.dcm", hu + 1024)
        mask = np.zeros((32, 32, 3), np.uint8)
        mask[8:16, 8:16] = GREEN
        save(raw / "MASKS" / f"{sid}.png", mask)
    config = tmp_path / "d.config"
    config.write_text(config_text(prepare={**PREPARE, "source": "dicom"}))
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
    write_dicom(raw / "DICOM" / "d1.dcm", np.full((32, 32), 40), slope=None, intercept=None)   # stored = HU
    write_dicom(raw / "DICOM" / "d2.dcm", np.full((32, 32), 40 + 1024), modality="MR")
    rc, lines, err = cli(capsys, "prepare", str(config))
    assert rc == 0 and not lines, err
    assert ("1 DICOM file(s) lack RescaleSlope/RescaleIntercept; used the defaults slope 1, intercept 0 "
            "(stored values taken as HU)") in err and "d1.dcm" in err
    assert "d2.dcm: Modality is MR, not CT; HU windows assume CT values" in err
    for sid in ("d1", "d2"):   # HU 40 = the brain window's centre: grey 128 either way
        assert np.asarray(Image.open(config.parent / "master" / "images" / f"{sid}.png"))[0, 0, 0] == 128


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


def test_prepare_never_replaces_a_folder_it_did_not_create(raw_project, capsys):
    config, _ = raw_project
    mine = config.parent / "master"
    mine.mkdir()
    (mine / "my_notes.txt").write_text("keep me")
    line = one_error(capsys, "prepare", str(config))
    assert "master: holds 1 entry `flexunet prepare` did not write (my_notes.txt); it builds this folder whole" in line
    assert one_error(capsys, "prepare", str(config), "--overwrite") == line   # the rule holds with --overwrite too
    assert (mine / "my_notes.txt").read_text() == "keep me"


HOSTILE = "up\\..\\..\\escaped"   # a legal file name on Linux; read as a Windows path it climbs out


def test_prepare_keeps_hostile_names_inside_the_output_folder(tmp_path, capsys):
    raw = tmp_path / "p" / "raw"
    make_raw_png(raw, n=2)
    for sub in ("PNG", "MASKS"):
        (raw / sub / "1000.png").rename(raw / sub / f"{HOSTILE}.png")
    (tmp_path / "p" / "p.config").write_text(config_text(prepare=PREPARE))
    assert cli(capsys, "prepare", str(tmp_path / "p" / "p.config"))[0] == 0
    master = tmp_path / "p" / "master"
    assert sorted(p.name for p in (master / "images").iterdir()) == ["1001.png", "escaped.png"]
    assert sorted(p.name for p in tmp_path.joinpath("p").iterdir()) == ["master", "p.config", "raw"]


def test_two_images_of_one_stem_are_refused_by_prepare(synth_project, capsys):
    raw = next((synth_project.parent / "raw").rglob("PNG"))
    first = sorted(raw.glob("*.png"))[0]
    Image.open(first).save(raw / f"{first.stem}.bmp")
    assert run_command(synth_project, "prepare", "--set", f"prepare.output_dir={synth_project.parent / 'master2'}") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.bmp" in err and f"{first.stem}.png" in err
    assert not (synth_project.parent / "master2").exists()
