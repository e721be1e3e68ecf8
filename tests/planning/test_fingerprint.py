"""flexunet.planning.fingerprint: colours -> classes, the refusal of colours it cannot place, counts by hand.

Datasets here are made up: 32x32 grey slices with square lesions of known sizes, so every
share and component size below is counted by hand.  (Moved from test_plan.py; make_set
serves both.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.planning.colours import colour_name
from flexunet.planning.fingerprint import fingerprint_dataset

S = 32
GREEN, RED = (0, 255, 0), (255, 0, 0)


def _slice(folder: Path, subset: str, name: str, squares: list[tuple[tuple[int, int, int], int, int, int]],
           value: int = 100) -> Path:
    """A grey image and its mask; ``squares``: (colour, row, col, side) painted on both (lesion = 200)."""
    image = np.full((S, S, 3), value, np.uint8)
    mask = np.zeros((S, S, 3), np.uint8)
    for colour, r, c, side in squares:
        image[r:r + side, c:c + side] = 200
        mask[r:r + side, c:c + side] = colour
    for kind, arr in (("images", image), ("masks", mask)):
        (folder / subset / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / subset / kind / f"{name}.png")
    return folder / subset / "masks" / f"{name}.png"


def make_set(root: Path) -> Path:
    """train: 4 slices (green 4x4 + 2x2 in one, red 3x3 in one, both in one, none in one); valid/test: 2 each."""
    d = root / "set"
    _slice(d, "train", "a", [(GREEN, 2, 2, 4), (GREEN, 20, 20, 2)])
    _slice(d, "train", "b", [(RED, 10, 10, 3)])
    _slice(d, "train", "c", [(GREEN, 5, 5, 4), (RED, 20, 5, 3)])
    _slice(d, "train", "d", [])
    _slice(d, "valid", "e", [(GREEN, 8, 8, 4), (RED, 20, 20, 3)])
    _slice(d, "valid", "f", [])
    # test slices differ from valid ones (the leak guard refuses a test image the model validated on)
    _slice(d, "test", "e", [(GREEN, 14, 12, 4), (RED, 4, 22, 3)])
    _slice(d, "test", "f", [])
    f = d / "test" / "images" / "f.png"
    image = np.asarray(Image.open(f)).copy()
    image[24:30, 2:8] = 150                              # an unlabelled bright spot
    Image.fromarray(image).save(f)
    return d


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("plan"))




def test_fingerprint_maps_colours_to_classes_and_counts_by_hand(dataset: Path) -> None:
    fp = fingerprint_dataset(dataset)
    assert [(c["name"], tuple(c["colour"])) for c in fp["classes"]] == [
        ("background", (0, 0, 0)), ("green", GREEN), ("red", RED)]
    assert fp["channels"] == "grey" and fp["image_sizes"] == {"32x32": 8}
    assert fp["slices"] == {"train": 4, "valid": 2, "test": 2, "total": 8}
    green = 16 + 4 + 16 + 2 * 16
    red = 9 + 9 + 2 * 9
    total = 8 * S * S
    assert fp["pixel_share"]["green"] == round(green / total, 6)
    assert fp["pixel_share"]["red"] == round(red / total, 6)
    train = fp["subsets"]["train"]
    assert train["slices_with"] == {"background": 4, "green": 2, "red": 2}
    assert train["slices_with_foreground"] == 3
    assert fp["lesions"]["green"] == {"components": 5, "median_px": 16.0, "min_px": 4, "p10_px": 8.8,
                                      "max_px": 16}
    assert fp["lesions"]["red"]["components"] == 4 and fp["lesions"]["red"]["median_px"] == 9.0
    assert fp["intensity"]["green"]["mean"] == 200.0 and fp["intensity"]["background"]["p50"] == 100
    assert fp["stray_colours"] == {}


def test_classes_option_names_the_colours_in_order(dataset: Path) -> None:
    fp = fingerprint_dataset(dataset, ["ischemic", "hemorrhagic"])
    assert [c["name"] for c in fp["classes"]] == ["background", "ischemic", "hemorrhagic"]
    with pytest.raises(FlexUNetError, match="expected 2 distinct names"):
        fingerprint_dataset(dataset, ["only-one"])


def test_colour_names() -> None:
    assert colour_name((0, 250, 3)) == "green" and colour_name((0, 0, 255)) == "blue"
    assert colour_name((90, 40, 200)) == "rgb_90_40_200"


def test_anti_aliased_mask_colour_is_refused_with_one_line(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    bad = _slice(d, "train", "g", [(GREEN, 4, 4, 8)])
    mask = np.asarray(Image.open(bad)).copy()
    mask[3, 3:13] = (0, 128, 0)                          # an anti-aliased edge: half green
    mask[12, 3:13] = (0, 128, 0)
    Image.fromarray(mask).save(bad)
    with pytest.raises(DataError) as err:
        fingerprint_dataset(d)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "(0, 128, 0)" in msg and "between" in msg


def test_a_few_stray_pixels_are_mapped_not_refused(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    mask_path = d / "train" / "masks" / "a.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[2, 2] = (0, 250, 0)                             # one pixel of a near-green
    Image.fromarray(mask).save(mask_path)
    fp = fingerprint_dataset(d)
    assert fp["stray_colours"] == {"(0, 250, 0)": 1}
    assert len(fp["classes"]) == 3


def test_more_colours_than_classes_are_refused(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    rng = np.random.default_rng(0)
    squares = [(tuple(int(v) for v in rng.integers(0, 256, 3)), 2 * (i // 8) * 2, (i % 8) * 4, 2) for i in range(20)]
    _slice(d, "train", "h", squares)
    with pytest.raises(DataError, match=r"h\.png: mask colour .* expected at most 15 class colours"):
        fingerprint_dataset(d)


def test_masks_without_any_class_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    for subset in ("train", "valid", "test"):
        _slice(d, subset, "x", [])
    with pytest.raises(DataError, match="every mask is black"):
        fingerprint_dataset(d)


def test_missing_subset_is_one_line(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    for p in (d / "valid" / "masks").iterdir():
        p.unlink()
    (d / "valid" / "masks").rmdir()
    with pytest.raises(DataError, match="valid/masks: folder not found"):
        fingerprint_dataset(d)


# --------------------------------------------------------------------------- the mask format


def as_index_masks(colour_set: Path, root: Path, mode: str = "L") -> Path:
    """A copy of ``colour_set`` whose masks hold class indices (green 1, red 2): grey ``L`` PNGs, or palette
    PNGs whose palette draws 1 blue and 2 yellow (so only the values can give the classes)."""
    import shutil

    shutil.copytree(colour_set, root)
    for path in root.glob("*/masks/*.png"):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        index = np.zeros(rgb.shape[:2], np.uint8)
        index[(rgb == GREEN).all(-1)] = 1
        index[(rgb == RED).all(-1)] = 2
        img = Image.fromarray(index)
        if mode == "P":
            img.putpalette([0, 0, 0, 0, 0, 255, 255, 255, 0] + [0] * 759)
        img.save(path)
    return root


@pytest.mark.parametrize("mode", ["L", "P"])
def test_class_index_masks_are_found_with_their_evidence(dataset: Path, tmp_path: Path, mode: str) -> None:
    d = as_index_masks(dataset, tmp_path / "idx", mode)
    # class 2 outnumbers class 1 in one more slice: value 1 lies "between" 0 and 2, which colours refused
    extra = _slice(d, "train", "z", [])
    mask = np.zeros((S, S), np.uint8)
    mask[0:12, 0:12] = 2
    img = Image.fromarray(mask)
    if mode == "P":
        img.putpalette([0, 0, 0, 0, 0, 255, 255, 255, 0] + [0] * 759)
    img.save(extra)
    fp = fingerprint_dataset(d)
    form = fp["mask_format"]
    assert form["format"] == "index" and form["merged"] == []
    assert f"PNG (9 {'grey' if mode == 'L' else 'palette'} ({mode})) whose pixel values are 0..2" in form["evidence"]
    assert f"2: {36 + 144} px" in form["evidence"]                      # red 4 x 9 px, and the 12 x 12 square
    assert [(c["name"], c["value"]) for c in fp["classes"]] == [("background", 0), ("class_1", 1), ("class_2", 2)]
    colour = fingerprint_dataset(dataset)       # the same data as colour masks, less the extra slice
    assert fp["pixel_share"]["class_1"] == round(68 / (9 * S * S), 6)
    assert colour["lesions"]["green"] == fp["lesions"]["class_1"]
    assert colour["subsets"]["valid"] == {**fp["subsets"]["valid"], "slices_with": {
        "background": 2, "green": 1, "red": 1}, "pixel_share": {
        "background": fp["subsets"]["valid"]["pixel_share"]["background"],
        "green": fp["subsets"]["valid"]["pixel_share"]["class_1"],
        "red": fp["subsets"]["valid"]["pixel_share"]["class_2"]}}


def test_grey_masks_of_bright_values_stay_colours(tmp_path: Path) -> None:
    """Grey levels 0 / 128 / 255 are colours, not indices; 128 lies between the others but forms blobs: a class."""
    d = tmp_path / "grey"
    white, mid = (255, 255, 255), (128, 128, 128)
    for subset in ("train", "valid", "test"):
        _slice(d, subset, "a", [(white, 2, 2, 10), (mid, 20, 20, 6)])     # white outnumbers the middle grey
    fp = fingerprint_dataset(d)
    assert fp["mask_format"]["format"] == "rgb"
    assert [tuple(c["colour"]) for c in fp["classes"]] == [(0, 0, 0), white, mid]


def test_green_and_dark_green_blobs_are_two_classes(tmp_path: Path) -> None:
    dark = (0, 128, 0)                                   # halfway between black and green
    d = tmp_path / "greens"
    _slice(d, "train", "a", [(GREEN, 2, 2, 10), (dark, 20, 20, 6)])
    _slice(d, "train", "b", [(GREEN, 4, 4, 8), (dark, 4, 12, 6)])      # side by side: still a blob of its own
    _slice(d, "valid", "c", [(GREEN, 2, 2, 8), (dark, 20, 2, 5)])
    _slice(d, "test", "d", [(dark, 10, 10, 7)])
    fp = fingerprint_dataset(d)
    assert [(c["name"], tuple(c["colour"])) for c in fp["classes"]] == [
        ("background", (0, 0, 0)), ("green", GREEN), ("darkgreen", dark)]
    assert fp["mask_format"]["merged"] == [] and fp["stray_colours"] == {}
    assert fp["lesions"]["darkgreen"]["components"] == 4


def test_a_few_anti_aliased_pixels_are_merged_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = make_set(tmp_path)
    path = d / "train" / "masks" / "a.png"              # green 4x4 at (2, 2)
    mask = np.asarray(Image.open(path)).copy()
    mask[6, 2:7] = (0, 128, 0)                           # a 5 px half-green edge below it: within the 8 px allowed
    Image.fromarray(mask).save(path)
    with caplog.at_level("WARNING", logger="flexunet.planning.fingerprint"):
        fp = fingerprint_dataset(d)
    assert len(fp["classes"]) == 3 and fp["stray_colours"] == {"(0, 128, 0)": 5}
    (merged,) = fp["mask_format"]["merged"]
    assert merged["into"] == "green" and merged["pixels"] == 5           # 127 from green, 128 from black
    assert "between (0, 0, 0) and (0, 255, 0)" in merged["why"]
    assert "100% of its pixels touch a pixel nearer each" in merged["why"]
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "(0, 128, 0) (5 px" in lines[0] and "merged into class green" in lines[0]


def test_stray_pixels_are_said_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = make_set(tmp_path)
    mask_path = d / "train" / "masks" / "a.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[2, 2] = (0, 250, 0)
    Image.fromarray(mask).save(mask_path)
    with caplog.at_level("WARNING", logger="flexunet.planning.fingerprint"):
        fingerprint_dataset(d)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "(0, 250, 0) (1 px" in line and "merged into class green" in line and "too few" in line


def test_a_class_index_no_mask_holds_is_said(tmp_path: Path) -> None:
    d = tmp_path / "gap"
    for subset in ("train", "valid", "test"):
        path = _slice(d, subset, "a", [])
        mask = np.zeros((S, S), np.uint8)
        mask[4:10, 4:10] = 2                             # values 0 and 2: class 1 is in no mask
        Image.fromarray(mask).save(path)
    fp = fingerprint_dataset(d)
    assert fp["mask_format"]["format"] == "index" and len(fp["classes"]) == 3
    assert fp["mask_format"]["evidence"].endswith("; no mask holds value 1")
    assert fp["pixel_share"]["class_1"] == 0.0 and fp["lesions"]["class_1"] == {"components": 0}


def test_plan_classes_must_differ_too() -> None:
    from flexunet.planning.colours import class_names_for

    with pytest.raises(FlexUNetError, match="'lesion' and 'Lesion' differ only in case"):
        class_names_for([(0, 0, 0), (0, 255, 0), (0, 0, 255)], ["lesion", "Lesion"])
