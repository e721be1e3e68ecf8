"""flexunet infer: palette masks at each input's size, batches, DICOM, overlays, TTA, small components, tiling."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import (DAMAGED_PNG, RGB_MAP, cli, colour_model, config_text, inputs_snapshot, leftovers, make_cfg, one_error,
                      run_command, save, write_dicom)
from flexunet.dataset.dicom import read_dicom_hu, three_window_rgb, window
from flexunet.utils.errors import ConfigError, DataError
from flexunet.inference.infer import infer_images
from flexunet.model.predict import predict_indices, read_input, remove_small_components, resize_indices
from flexunet.dataset.masks import flat_palette
from flexunet.model.network import build_model

INFER_SECTIONS = {
    "dataset": {"class_names": ("background", "ischemic", "hemorrhagic")},
    "train": {"model_dir": "models"},
    "infer": {"images_dir": "in", "output_dir": "out", "batch_size": 2},
    "tiledinfer": {"images_dir": "big", "output_dir": "tiled_out", "split_size": 48, "overlapping": 16},
}
CONFIG = config_text(**INFER_SECTIONS)


def infer_cfg(root: Path, extra: str = "", **infer: object):
    """The infer tests' config in ``root`` with the [infer] keys of ``infer`` added and ``extra`` INI text."""
    return make_cfg(root, extra=extra, **{**INFER_SECTIONS, "infer": {**INFER_SECTIONS["infer"], **infer}})


class CountingModel:
    """Wraps a model and counts predict_on_batch calls and images."""

    def __init__(self, model: keras.Model) -> None:
        self.model, self.inputs, self.calls, self.images = model, model.inputs, 0, 0

    def predict_on_batch(self, x):
        self.calls += 1
        self.images += len(x)
        return self.model.predict_on_batch(x)


def grey_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 90, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def unet_run(tmp_path: Path):
    """A tiny trained-shape FlexUNet saved as the best model, and inputs of several sizes and formats."""
    cfg = infer_cfg(tmp_path)
    keras.utils.set_random_seed(0)
    (tmp_path / "models").mkdir()
    build_model(cfg.model).save(tmp_path / "models" / "best_model.keras")
    src = tmp_path / "in"
    src.mkdir()
    sizes = {"a.png": (40, 50), "b.jpg": (33, 70), "c.tif": (64, 64), "d.bmp": (20, 31)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        Image.fromarray(grey_image(h, w, i)).save(src / name)
    shutil.copy(get_testdata_file("CT_small.dcm"), src / "e.dcm")          # a real 128x128 CT slice
    sizes["e.dcm"] = (128, 128)
    return cfg, tmp_path, sizes


# --------------------------------------------------------------------------- masks


def test_infer_writes_palette_masks_at_each_input_size(unet_run):
    cfg, root, sizes = unet_run
    summary = infer_images(cfg, progress=False)
    out = root / "out"
    assert summary["images"] == 5 and summary["images_per_second"] > 0
    assert sorted(p.name for p in out.iterdir()) == [".flexunet-owner.json", "a.png", "b.png", "c.png", "d.png",
                                                     "e.png", "volumes.csv"]     # e.dcm: a one-slice series
    palette = flat_palette(RGB_MAP)
    for name, (h, w) in sizes.items():
        mask = Image.open(out / f"{Path(name).stem}.png")
        assert mask.mode == "P" and mask.size == (w, h)
        assert mask.getpalette()[:9] == palette[:9] == [0, 0, 0, 0, 255, 0, 0, 0, 255]
        assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}


def test_mask_is_the_argmax_resized_back_nearest(unet_run):
    cfg, root, _ = unet_run
    from flexunet.model.predict import model_input

    infer_images(cfg, progress=False)
    model = keras.models.load_model(root / "models" / "best_model.keras", compile=False)
    original = np.asarray(Image.open(root / "in" / "a.png").convert("RGB"))
    index = predict_indices(model, model_input(original, cfg)[None])[0]
    expected = np.asarray(Image.fromarray(index).resize((50, 40), Image.NEAREST))
    np.testing.assert_array_equal(np.asarray(Image.open(root / "out" / "a.png")), expected)


def test_predicts_in_batches(unet_run):
    cfg, root, _ = unet_run
    model = CountingModel(keras.models.load_model(root / "models" / "best_model.keras", compile=False))
    infer_images(cfg, model=model, progress=False)
    assert (model.calls, model.images) == (3, 6)         # batch_size 2: 2 + 2 + 1 padded to 2


def test_dicom_is_read_through_the_configured_window(tmp_path):
    path = Path(get_testdata_file("CT_small.dcm"))
    hu, _ = read_dicom_hu(path)
    cfg = infer_cfg(tmp_path)
    np.testing.assert_array_equal(read_input(path, cfg), np.repeat(window(hu, 40, 80)[..., None], 3, -1))
    wide = infer_cfg(tmp_path, "[prepare]\nwindow_center = 400\nwindow_width = 2000\n")
    np.testing.assert_array_equal(read_input(path, wide)[..., 0], window(hu, 400, 2000))
    three = infer_cfg(tmp_path, "[prepare]\nthree_windows = True\n")
    np.testing.assert_array_equal(read_input(path, three), three_window_rgb(hu))


def test_outputs_are_written_whole_and_names_cannot_collide(unet_run):
    cfg, root, _ = unet_run
    infer_images(cfg, progress=False)
    # no temporary files left behind (the ownership marker is not one)
    assert not [p for p in (root / "out").rglob(".*") if p.name != ".flexunet-owner.json"]
    Image.fromarray(grey_image(8, 8)).save(root / "in" / "a.bmp")
    with pytest.raises(DataError, match="a.bmp.*a.png|a.png.*a.bmp"):
        infer_images(cfg, progress=False)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    cfg = infer_cfg(tmp_path)
    with pytest.raises(ConfigError, match=r"\[infer\] images_dir"):
        infer_images(cfg, model=colour_model(), progress=False)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        infer_images(cfg, model=colour_model(), progress=False)


# --------------------------------------------------------------------------- options


def painted(h: int, w: int, boxes: dict) -> np.ndarray:
    img = np.full((h, w, 3), 60, np.uint8)
    for colour, (y0, y1, x0, x1) in boxes.items():
        img[y0:y1, x0:x1] = colour
    return img


def test_overlays_and_class_index_masks_when_asked(tmp_path):
    cfg = infer_cfg(tmp_path, overlays=True, class_index_masks=True, overlay_alpha=0.5)
    (tmp_path / "in").mkdir()
    Image.fromarray(painted(64, 96, {(0, 255, 0): (40, 56, 60, 80)})).save(tmp_path / "in" / "x.png")
    summary = infer_images(cfg, model=colour_model(), progress=False)
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / "x.png"))
    index = np.asarray(Image.open(tmp_path / "out" / "class_index" / "x.png"))
    mask = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert overlay.shape == (64, 96, 3) and Image.open(tmp_path / "out" / "class_index" / "x.png").mode == "L"
    np.testing.assert_array_equal(index, mask)
    assert (mask[44:52, 64:76] == 1).all() and mask[:, :40].max() == 0
    # inside the lesion: green image blended with the green class colour stays green
    assert overlay[48, 70].tolist() == [0, 255, 0]
    # far from the legend and the lesion: the image itself
    assert overlay[60, 5].tolist() == [60, 60, 60]
    # the legend (top left) shows a swatch of each foreground class colour
    legend = overlay[:30, :60].reshape(-1, 3).tolist()
    assert [0, 255, 0] in legend and [0, 0, 255] in legend
    assert summary["overlays"] == [tmp_path / "out" / "overlays" / "x.png"]


def test_no_overlays_unless_asked(tmp_path):
    cfg = infer_cfg(tmp_path)
    (tmp_path / "in").mkdir()
    Image.fromarray(painted(32, 32, {})).save(tmp_path / "in" / "x.png")
    infer_images(cfg, model=colour_model(), progress=False)
    assert not (tmp_path / "out" / "overlays").exists() and not (tmp_path / "out" / "class_index").exists()


def test_small_components_are_removed(tmp_path):
    index = np.zeros((10, 10), np.uint8)
    index[0:2, 0:2] = 1          # 4 px
    index[5:9, 5:9] = 1          # 16 px
    index[0, 9] = 2              # 1 px
    out, removed = remove_small_components(index, 5)
    assert removed == 2 and out[0:2, 0:2].max() == 0 and out[0, 9] == 0 and (out[5:9, 5:9] == 1).all()
    assert remove_small_components(index, 0)[0] is index
    # end to end: a 2x2 speck goes, an 8x8 lesion stays
    cfg = infer_cfg(tmp_path, min_component_size=10)
    (tmp_path / "in").mkdir()
    Image.fromarray(painted(32, 32, {(0, 255, 0): (2, 4, 2, 4), (0, 0, 255): (16, 24, 16, 24)})).save(
        tmp_path / "in" / "x.png")
    summary = infer_images(cfg, model=colour_model(), progress=False)
    mask = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert mask[2:4, 2:4].max() == 0 and (mask[16:24, 16:24] == 2).all()
    assert summary["removed_components"] == 1


# --------------------------------------------------------------------------- tiling


def test_tiled_inference_of_large_images(tmp_path):
    cfg = infer_cfg(tmp_path)          # model input 32; tiles of 48 resized to 32 and back
    (tmp_path / "models").mkdir()
    keras.utils.set_random_seed(0)
    build_model(cfg.model).save(tmp_path / "models" / "best_model.keras")
    (tmp_path / "big").mkdir()
    Image.fromarray(grey_image(100, 130)).save(tmp_path / "big" / "large.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "big" / "slice.dcm")
    model = CountingModel(keras.models.load_model(tmp_path / "models" / "best_model.keras", compile=False))
    summary = infer_images(cfg, model=model, tiled=True, progress=False)
    assert summary["tiled"] and summary["images"] == 2
    large = Image.open(tmp_path / "tiled_out" / "large.png")
    assert large.mode == "P" and large.size == (130, 100)
    assert Image.open(tmp_path / "tiled_out" / "slice.png").size == (128, 128)
    # 48-px tiles, stride 32, the last one flush with the edge: 100 rows -> 0, 32, 52; 130 columns ->
    # 0, 32, 64, 82; 128 -> 0, 32, 64, 80.  3 x 4 + 4 x 4 tiles, in batches of 2
    assert model.images == 12 + 16 and model.calls == 6 + 8


def test_tiled_colour_model_finds_lesions_across_tile_borders(tmp_path):
    cfg = infer_cfg(tmp_path)
    (tmp_path / "big").mkdir()
    image = painted(90, 120, {(0, 255, 0): (30, 60, 35, 85), (0, 0, 255): (70, 80, 5, 115)})
    Image.fromarray(image).save(tmp_path / "big" / "x.png")
    infer_images(cfg, model=colour_model(), tiled=True, progress=False)
    mask = np.asarray(Image.open(tmp_path / "tiled_out" / "x.png"))
    expected = np.zeros((90, 120), np.uint8)
    expected[30:60, 35:85] = 1
    expected[70:80, 5:115] = 2
    np.testing.assert_array_equal(mask, expected)


def test_overlap_must_be_smaller_than_the_tile(tmp_path):
    cfg = make_cfg(tmp_path, **{**INFER_SECTIONS, "tiledinfer": {**INFER_SECTIONS["tiledinfer"], "overlapping": 48}})
    (tmp_path / "big").mkdir()
    with pytest.raises(ConfigError, match=r"\[tiledinfer\] overlapping"):
        infer_images(cfg, model=colour_model(), tiled=True, progress=False)


# --------------------------------------------------------------------------- volumes and uncertainty


def synth_dicoms(root: Path, count: int = 8) -> Path:
    from flexunet.synthetic.synth import dataset_root, synthesize

    synthesize(root / "synth", count, 2, size=32, progress=False)
    shutil.copytree(dataset_root(root / "synth") / "DICOM", root / "in")
    return root / "in"


def test_volumes_csv_from_dicom_series(tmp_path):
    import csv

    from flexunet.dataset.dicom import read_dicom_meta

    folder = synth_dicoms(tmp_path)
    cfg = infer_cfg(tmp_path)
    summary = infer_images(cfg, model=colour_model(), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "volumes.csv")))
    assert list(rows[0]) == ["patient", "series", "class", "slices", "ml", "method"]
    metas = {p.stem: read_dicom_meta(p) for p in folder.glob("*.dcm")}
    for row in rows:
        if row["class"] != "ischemic":
            continue
        mine = [s for s, m in metas.items() if m["patient_id"] == row["patient"]]
        pixels = sum(int((np.asarray(Image.open(tmp_path / "out" / f"{s}.png")) == 1).sum()) for s in mine)
        sp = metas[mine[0]]["pixel_spacing"]
        assert float(row["ml"]) == pytest.approx(pixels * sp[0] * sp[1] * 5.0 / 1000, rel=1e-3, abs=1e-4)
        assert row["method"] == "positions (5 mm)"
    assert {r["class"] for r in rows} == {"ischemic", "hemorrhagic", "hemorrhagic ABC/2"}
    assert len(summary["volumes"]) == len(rows)


def test_uneven_series_is_refused_before_anything_is_written(tmp_path, caplog):
    folder = synth_dicoms(tmp_path)
    from flexunet.dataset.dicom import read_dicom_meta

    first = read_dicom_meta(sorted(folder.glob("*.dcm"))[0])["patient_id"]
    mine = [p for p in sorted(folder.glob("*.dcm")) if read_dicom_meta(p)["patient_id"] == first]
    mine[1].unlink()                                 # a missing slice: one step of 10 mm among 5 mm
    # asked for explicitly: refused, nothing written
    with pytest.raises(DataError, match="not evenly spaced"):
        infer_images(infer_cfg(tmp_path, volumes=True), model=colour_model(), progress=False)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.png"))
    # the default: the masks are written, the volumes are not, and one warning says why
    with caplog.at_level("WARNING", logger="flexunet.inference.infer"):
        summary = infer_images(infer_cfg(tmp_path), model=colour_model(), progress=False)
    assert summary["images"] == len(list(folder.glob("*.dcm")))
    assert not (tmp_path / "out" / "volumes.csv").exists()
    assert [r.message for r in caplog.records if "no volumes.csv" in r.message and "not evenly spaced" in r.message]
    infer_images(infer_cfg(tmp_path, volumes=False), model=colour_model(), progress=False)
    assert not (tmp_path / "out" / "volumes.csv").exists()


def test_uncertainty_maps_and_ranking(tmp_path):
    import csv

    (tmp_path / "in").mkdir()
    for i, grey in enumerate((10, 126, 200)):        # 126: class 0 and 1 nearly tied -> most uncertain
        Image.fromarray(np.full((40, 48, 3), grey, np.uint8)).save(tmp_path / "in" / f"s{i}.png")
    infer_images(infer_cfg(tmp_path, uncertainty=True), model=colour_model(), progress=False)
    for i in range(3):
        values = np.load(tmp_path / "out" / "uncertainty" / f"s{i}.npy")
        assert values.shape == (40, 48) and values.dtype == np.float32
        assert values.min() >= 0.0 and values.max() <= 1.0
        assert np.asarray(Image.open(tmp_path / "out" / "uncertainty" / f"s{i}.png")).shape == (40, 48, 3)
    ranked = list(csv.DictReader(open(tmp_path / "out" / "uncertain_slices.csv")))
    assert [r["name"] for r in ranked][0] == "s1.png"
    assert [float(r["score"]) for r in ranked] == sorted((float(r["score"]) for r in ranked), reverse=True)


# --------------------------------------------------------------------------- the overlapped pipeline


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the ownership marker too) by relative path, as bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overlapped_outputs_are_the_bytes_of_a_sequential_run(unet_run, monkeypatch):
    import threading

    import flexunet.inference.infer as infer

    cfg, root, _ = unet_run
    cfg = cfg.replace("infer", overlays=True, class_index_masks=True, uncertainty=True)
    model = keras.models.load_model(root / "models" / "best_model.keras", compile=False)
    sequential = infer_images(cfg.replace("infer", output_dir=root / "seq"), model=model, progress=False, workers=0)
    readers: list[str] = []

    def read(path, c):
        readers.append(threading.current_thread().name)
        return read_input(path, c)

    monkeypatch.setattr(infer, "read_input", read)
    overlapped = infer_images(cfg, model=model, progress=False, workers=2)
    assert readers and all(name.startswith("infer") for name in readers)       # read in the worker threads
    seq, out = _tree(root / "seq"), _tree(root / "out")
    # 5 inputs in batches of 2: the last batch is short; masks, overlays, class indices, entropy maps, tables
    assert len(out) == 1 + 5 * 5 + 2 and sorted(seq) == sorted(out)
    assert [p for p in seq if seq[p] != out[p]] == []
    assert [p.name for p in overlapped["files"]] == [p.name for p in sequential["files"]] == [
        "a.png", "b.png", "c.png", "d.png", "e.png"]
    assert overlapped["uncertainty"] == sequential["uncertainty"]
    # and the short batch's padding changed nothing: the last image's mask is its prediction alone
    from flexunet.model.predict import model_input

    original = read_input(root / "in" / "e.dcm", cfg)
    alone = resize_indices(predict_indices(model, model_input(original, cfg)[None], flip_tta=True)[0],
                           original.shape)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "out" / "e.png")), alone)


def test_unreadable_image_in_the_middle_leaves_no_output_folder(unet_run, capsys):
    from flexunet.cli.main import main

    cfg, root, _ = unet_run
    (root / "in" / "c2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")        # sorted between b and c
    config = root / "infer.config"
    config.write_text(CONFIG)
    assert main(["-q", "infer", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c2.png: not an image" in err and "Traceback" not in err
    assert not (root / "out").exists()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]         # no staging folder left
    with pytest.raises(DataError, match=r"c2\.png: not an image"):
        infer_images(cfg, progress=False)


def test_failing_write_leaves_earlier_results_as_they_were(unet_run, monkeypatch):
    import errno

    import flexunet.inference.writing as writing

    cfg, root, _ = unet_run
    model = keras.models.load_model(root / "models" / "best_model.keras", compile=False)
    infer_images(cfg, model=model, progress=False)
    before = _tree(root / "out")
    for name in ("a.png", "b.jpg", "c.tif", "d.bmp"):                               # new inputs, same names
        Image.fromarray(grey_image(36, 36, seed=9)).save(root / "in" / name)
    saved = writing.save_image
    written: list[str] = []

    def save(path, image, format="PNG"):
        if Path(path).name == "c.png":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved(path, image, format)
        written.append(Path(path).name)

    monkeypatch.setattr(writing, "save_image", save)
    with pytest.raises(OSError, match="No space left") as caught:
        infer_images(cfg, model=model, progress=False)
    assert caught.value.filename.endswith("c.png")
    assert {"a.png", "b.png"} <= set(written)                                       # written before it failed
    assert _tree(root / "out") == before                                            # ... but never moved in
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]


class TraceCounter(keras.Model):
    """A model whose Python ``call`` runs once per trace of its predict function."""

    def __init__(self, inner: keras.Model) -> None:
        super().__init__()
        self.inner, self.traces = inner, 0

    def call(self, x):
        self.traces += 1
        return self.inner(x)


def test_predict_is_traced_once_when_the_last_batch_is_short(unet_run):
    from flexunet.model.predict import predict_probs

    cfg, root, _ = unet_run                                         # 5 images, batch_size 2
    model = TraceCounter(keras.models.load_model(root / "models" / "best_model.keras", compile=False))
    model(np.zeros((1, 32, 32, 3), np.float32))                     # built (eagerly: no trace)
    model.traces = 0
    infer_images(cfg, model=model, progress=False)
    assert model.traces == 1
    predict_probs(model, np.zeros((1, 32, 32, 3), np.float32))       # unpadded, a second shape: traced again
    assert model.traces == 2


# --------------------------------------------------------------------------- through the command line
# conftest's infer_project: an untrained tiny model as the best model, and in/ with two good images


@pytest.mark.parametrize("damage,expected", DAMAGED_PNG)
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


def test_infer_writes_into_an_existing_folder_without_deleting(infer_project, capsys):
    config, root = infer_project
    (root / "out").mkdir()
    (root / "out" / "my_notes.txt").write_text("keep me")
    assert cli(capsys, "infer", str(config))[0] == 2                  # not infer's folder: --overwrite needed
    assert sorted(p.name for p in (root / "out").iterdir()) == ["my_notes.txt"]
    assert cli(capsys, "infer", str(config), "--overwrite")[0] == 0
    assert (root / "out" / "my_notes.txt").read_text() == "keep me" and (root / "out" / "a.png").is_file()


HOSTILE = "up\\..\\..\\escaped"   # a legal file name on Linux; read as a Windows path it climbs out


def test_infer_keeps_hostile_names_inside_the_output_folder(infer_project, capsys):
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


# conftest's synth_project: a trained run on synthetic slices


def test_infer_into_its_images_folder_is_refused_and_changes_nothing(synth_project, capsys):
    before = inputs_snapshot(synth_project)
    images = synth_project.parent / "dataset/D/test/images"
    code = run_command(synth_project, "infer", "--set", f"infer.images_dir='{images}'",
                       "--set", f"infer.output_dir='{images}'")
    err = capsys.readouterr().err
    assert code == 2
    assert "[infer] output_dir" in err and "is the input folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert inputs_snapshot(synth_project) == before


def test_infer_into_the_test_masks_is_refused_even_with_overwrite(synth_project, capsys):
    before = inputs_snapshot(synth_project)
    masks = synth_project.parent / "dataset/D/test/masks"
    code = run_command(synth_project, "infer", "--overwrite", "--set", f"infer.output_dir='{masks}'")
    err = capsys.readouterr().err
    assert code == 2 and str(masks) in err and "input folder" in err
    assert inputs_snapshot(synth_project) == before


def test_infer_keeps_a_users_files_and_reruns_into_its_own_folder(synth_project, capsys):
    out = synth_project.parent / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_command(synth_project, "infer", "--set", f"infer.output_dir='{out}'") == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert run_command(synth_project, "infer", "--overwrite", "--set", f"infer.output_dir='{out}'") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list(out.glob("*.png"))) == 2
    fresh = synth_project.parent / "fresh"
    assert run_command(synth_project, "infer", "--set", f"infer.output_dir='{fresh}'") == 0
    assert run_command(synth_project, "infer", "--set", f"infer.output_dir='{fresh}'") == 0   # its own: no flag


def test_tiled_stride_one_and_oversized_min_component_are_warned(synth_project, capsys):
    root = synth_project.parent
    code = run_command(synth_project, "infer", "--tiled",
                       "--set", f"tiledinfer.images_dir='{root / 'dataset/D/mini_test/images'}'",
                       "--set", f"tiledinfer.output_dir='{root / 'tiled'}'", "--set", "tiledinfer.split_size=16",
                       "--set", "tiledinfer.overlapping=15", "--set", "infer.min_component_size=5000")
    err = capsys.readouterr().err
    assert code == 0
    assert "a stride of 1 px, 289 tiles per 32x32 image (9 with overlapping = 4)" in err
    assert "min_component_size = 5000 is more than the 32x32 = 1024 pixels" in err
    masks = [np.asarray(Image.open(p)) for p in sorted((root / "tiled").glob("*.png"))]
    assert masks and not any(m.any() for m in masks)
