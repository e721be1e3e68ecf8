"""flexunet.dataset.records: manifest.json and split.json names, reading, writing, and how they are found."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import make_cfg
from flexunet.utils.errors import DataError
from flexunet.dataset.records import (MANIFEST_CSV, MANIFEST_JSON, MANIFEST_VERSION, SPLIT_JSON, find_manifest, find_split,
                              manifest_items, read_manifest, read_split, rgb_map_from_list, rgb_map_list, sha256,
                              slice_groups, split_subset_stems, write_manifest, write_split)

RGB_MAP = {(0, 0, 0): 0, (0, 0, 255): 2, (0, 255, 0): 1}
ROW = {"id": "7", "image": "images/7.png", "mask": "masks/7.png", "source_image": "PNG/7.png",
       "source_mask": "MASKS/7.png", "group": "p1", "group_kind": "patient", "patient_id": "p1",
       "series_uid": None, "classes": [0, 2], "pixels": [10, 0, 6], "pixel_spacing": [0.5, 0.25],
       "original_size": [512, 512]}


def test_rgb_map_round_trips_in_index_order(tmp_path):
    listed = rgb_map_list(RGB_MAP)
    assert listed == [[[0, 0, 0], 0], [[0, 255, 0], 1], [[0, 0, 255], 2]]
    assert rgb_map_from_list(json.loads(json.dumps(listed)), tmp_path / SPLIT_JSON) == RGB_MAP
    with pytest.raises(DataError, match=r"split.json: rgb_map is not a list of \[\[r, g, b\], index\]"):
        rgb_map_from_list([["red", 1]], tmp_path / SPLIT_JSON)


def test_manifest_is_written_as_json_and_csv_and_read_back(tmp_path):
    write_manifest(tmp_path, [ROW], {"version": MANIFEST_VERSION}, ("background", "ischemic", "hemorrhagic"))
    doc, digest = read_manifest(tmp_path / MANIFEST_JSON)
    assert doc["items"] == [ROW] and doc["version"] == MANIFEST_VERSION
    assert digest == sha256(tmp_path / MANIFEST_JSON) and len(digest) == 64
    lines = (tmp_path / MANIFEST_CSV).read_text().splitlines()
    assert lines[0].endswith("pixels_background,pixels_ischemic,pixels_hemorrhagic,spacing_row_mm,"
                             "spacing_col_mm,original_height,original_width")
    assert lines[1] == "7,images/7.png,masks/7.png,PNG/7.png,MASKS/7.png,p1,patient,p1,,background;hemorrhagic," \
                       "10,0,6,0.5,0.25,512,512"
    assert manifest_items(tmp_path / MANIFEST_JSON) == [ROW]


@pytest.mark.parametrize("text,word", [("[1, 2]", "not a FlexUNet manifest"),
                                       ('{"items": [{"id": 1}]}', "not a FlexUNet manifest"),
                                       ('{"version": 99, "items": []}', "manifest version 99")])
def test_a_manifest_that_is_not_one_is_a_one_line_error(tmp_path, text, word):
    path = tmp_path / MANIFEST_JSON
    path.write_text(text)
    with pytest.raises(DataError, match=word) as err:
        read_manifest(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_unreadable_manifest_items_are_a_warning_and_none(tmp_path, caplog):
    (tmp_path / MANIFEST_JSON).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="flexunet.dataset.records"):
        assert manifest_items(tmp_path / MANIFEST_JSON, "HD95 in pixels only") is None
    assert "HD95 in pixels only" in caplog.text
    assert manifest_items(None) is None


def _split_tree(root: Path, master: Path | None = None) -> Path:
    """<root>/Stroke/{train,test}/images and its split.json."""
    split = root / "Stroke"
    for subset in ("train", "test"):
        (split / subset / "images").mkdir(parents=True)
    write_split(split, {"master_dir": str(master) if master else None,
                        "subsets": {"train": {"files": ["a.png", "b.png"]}, "test": {"files": ["c.png"]}}})
    return split


def test_split_is_found_from_the_config_or_the_layout(tmp_path):
    split = _split_tree(tmp_path / "data")
    images = split / "train" / "images"
    assert find_split(images) == split / SPLIT_JSON                       # the layout: two levels up
    cfg = make_cfg(tmp_path, split={"output_dir": "data", "name": "Stroke"})
    assert find_split(images, cfg) == cfg.split.output_dir / "Stroke" / SPLIT_JSON
    deep = split / "train" / "extra" / "images"                            # not the layout: only the config knows
    deep.mkdir(parents=True)
    assert find_split(deep) is None and find_split(deep, cfg) == split / SPLIT_JSON
    assert find_split(tmp_path / "elsewhere" / "images", cfg) is None      # outside the split: not guessed
    assert find_split(None, cfg) is None


def test_subset_stems_from_split_json(tmp_path):
    split = _split_tree(tmp_path)
    assert split_subset_stems(split / SPLIT_JSON, "train") == {"a", "b"}
    assert split_subset_stems(split / SPLIT_JSON, "valid") is None
    (split / SPLIT_JSON).write_text('{"train": [{"image": "x/y.png"}, "z.png"]}')   # the plain form
    assert split_subset_stems(split / SPLIT_JSON, "train") == {"y", "z"}
    (split / SPLIT_JSON).write_text("[")
    with pytest.raises(DataError, match="split.json: cannot be read as JSON"):
        read_split(split / SPLIT_JSON)


def test_manifest_found_beside_master_images_or_through_the_split(tmp_path):
    master = tmp_path / "master"
    (master / "images").mkdir(parents=True)
    write_manifest(master, [ROW], {}, ("a", "b", "c"))
    assert find_manifest(master / "images") == master / MANIFEST_JSON
    split = _split_tree(tmp_path / "data", master)
    assert find_manifest(split / "test" / "images") == master / MANIFEST_JSON
    assert find_manifest(tmp_path / "nowhere" / "images") is None


def test_slice_groups_name_patients_series_or_nothing(tmp_path):
    rows = [{"id": "1", "group": "p1", "group_kind": "patient"}, {"id": "2", "group": "p2", "group_kind": "patient"},
            {"id": "3", "group": "1.2.3", "group_kind": "series"}, {"id": "4", "group": "4", "group_kind": "slice"}]
    path = tmp_path / MANIFEST_JSON
    path.write_text(json.dumps({"items": rows}))
    assert slice_groups(path, ["2.png", "1.png", "2.png"]) == ("patients", ["p2", "p1", "p2"])
    assert slice_groups(path, ["1.png", "3.png"]) == ("series", ["p1", "1.2.3"])
    assert slice_groups(path, ["1.png", "4.png"]) is None           # a slice without a patient: slices it is
    assert slice_groups(path, ["1.png", "9.png"]) is None           # a slice the manifest does not list
    assert slice_groups(None, ["1.png"]) is None
