"""flexunet.inference.volumes: spacing, grouping and ordering, mL and ABC/2 by hand-computed cases; the synthetic
series' known volumes recovered from its DICOM geometry and masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from flexunet.dataset.dicom import read_dicom_meta
from flexunet.utils.errors import DataError
from flexunet.dataset.masks import read_mask
from flexunet.synthetic.synth import CLASS_NAMES, STROKE_RGB_MAP, dataset_root, synthesize
from flexunet.inference.volumes import (SliceGeometry, abc2_ml, geometry_from_meta, group_series, hemorrhage_classes,
                              series_volumes, slice_spacing, volume_ml)

NAMES = ("background", "ischemic", "hemorrhagic")


def geo(name: str, position: float | None = None, patient: str = "P1", series: str = "S1",
        thickness: float | None = None, instance: int | None = None,
        spacing: tuple[float, float] | None = (0.5, 0.8)) -> SliceGeometry:
    return SliceGeometry(name, patient, series, spacing, position, thickness, instance)


def test_volume_ml_by_hand() -> None:
    # 100 pixels of 0.5 x 0.8 mm, 5 mm apart: 100 * 0.4 * 5 = 200 mm^3 = 0.2 mL
    assert volume_ml(100, (0.5, 0.8), 5.0) == pytest.approx(0.2)


def test_group_series_orders_by_position_and_separates_patients() -> None:
    slices = [geo("c", 10.0), geo("a", 20.0), geo("b", 0.0), geo("x", 3.0, patient="P2"),
              geo("y", 1.0, patient="P2")]
    groups = group_series(slices)
    assert list(groups) == [("P1", "S1"), ("P2", "S1")]
    assert [s.name for s in groups[("P1", "S1")]] == ["b", "c", "a"]
    assert [s.name for s in groups[("P2", "S1")]] == ["y", "x"]


def test_group_series_falls_back_to_instance_numbers() -> None:
    groups = group_series([geo("z", instance=1), geo("a", instance=3), geo("m", instance=2)])
    assert [s.name for s in groups[("P1", "S1")]] == ["z", "m", "a"]


def test_spacing_from_positions_then_thickness() -> None:
    assert slice_spacing([geo("a", 0.0), geo("b", 2.5), geo("c", 5.0)]) == (2.5, "positions")
    # descending positions are sorted first by group_series; thickness used when positions are missing
    assert slice_spacing([geo("a", thickness=3.0), geo("b", thickness=3.0)]) == (3.0, "thickness")


def test_uneven_or_missing_spacing_is_refused_in_one_line() -> None:
    with pytest.raises(DataError) as uneven:
        slice_spacing([geo("a", 0.0), geo("b", 5.0), geo("c", 15.0)])
    assert "not evenly spaced" in str(uneven.value) and "\n" not in str(uneven.value)
    with pytest.raises(DataError) as missing:
        slice_spacing([geo("a"), geo("b")])
    assert "no slice positions" in str(missing.value) and "\n" not in str(missing.value)


def test_series_volumes_by_hand() -> None:
    m1 = np.zeros((4, 4), np.uint8)
    m1[:2, :2] = 1                      # 4 ischemic
    m2 = np.zeros((4, 4), np.uint8)
    m2[0, :3] = 2                       # 3 hemorrhagic
    rows = series_volumes([geo("a", 0.0), geo("b", 4.0)], [m1, m2], NAMES, abc2_classes=[2])
    by_class = {r["class"]: r for r in rows}
    voxel = 0.5 * 0.8 * 4.0 / 1000
    assert by_class["ischemic"]["ml"] == pytest.approx(4 * voxel)
    assert by_class["hemorrhagic"]["ml"] == pytest.approx(3 * voxel)
    assert by_class["ischemic"]["slices"] == 1 and by_class["ischemic"]["method"] == "positions (4 mm)"
    # ABC/2 of a 1 x 3 pixel strip on one slice: A = 3 * 0.8, B = 0.5, C = 1 * 4 mm
    assert by_class["hemorrhagic ABC/2"]["ml"] == pytest.approx(3 * 0.8 * 0.5 * 4.0 / 2 / 1000, abs=1e-4)


def test_abc2_of_a_box_is_half_its_volume() -> None:
    stack = np.zeros((5, 20, 20), bool)
    stack[1:4, 2:12, 5:9] = True        # 3 slices of 10 x 4 pixels
    stack[0, 18, 18] = True             # a smaller second lesion, ignored
    # A = 10 px * 1 mm, B = 4 px * 2 mm, C = 3 slices * 5 mm: 10 * 8 * 15 / 2 = 600 mm^3
    assert abc2_ml(stack, (1.0, 2.0), 5.0) == pytest.approx(0.6)
    assert abc2_ml(np.zeros((2, 4, 4), bool), (1.0, 1.0), 1.0) == 0.0


def test_abc2_of_an_ellipsoid_is_close_to_its_volume() -> None:
    z, y, x = np.mgrid[-10:11, -30:31, -30:31]
    ellipsoid = (z / 8.0) ** 2 + (y / 20.0) ** 2 + (x / 12.0) ** 2 <= 1.0
    true_ml = 4 / 3 * math.pi * 8 * 20 * 12 / 1000
    assert abc2_ml(ellipsoid, (1.0, 1.0), 1.0) == pytest.approx(true_ml, rel=0.15)


def test_hemorrhage_classes_by_name() -> None:
    assert hemorrhage_classes(NAMES) == [2]
    assert hemorrhage_classes(("background", "ICH", "edema")) == [1]
    assert hemorrhage_classes(("background", "tumour")) == []


def test_synthetic_series_volumes_match_the_known_volumes(tmp_path: Path) -> None:
    summary = synthesize(tmp_path, 14, 5, size=64, progress=False)
    root = dataset_root(tmp_path)
    geometry = [geometry_from_meta(p.stem, read_dicom_meta(p)) for p in sorted((root / "DICOM").glob("*.dcm"))]
    groups = group_series(geometry)
    assert len(groups) == summary["patients"] and len({s for _, s in groups}) == summary["patients"]
    checked = 0
    for (patient, _), series in groups.items():
        assert slice_spacing(series)[1] == "positions"
        masks = [read_mask(root / "MASKS" / f"{s.name}.png", STROKE_RGB_MAP).index for s in series]
        rows = {r["class"]: r["ml"] for r in series_volumes(series, masks, CLASS_NAMES)}
        for name, known in summary["volumes_ml"][patient].items():
            assert rows[name] == pytest.approx(known, rel=0.01, abs=1e-6)
            checked += known > 0
    assert checked > 0                  # some lesion volume was actually compared


def test_agreement_by_hand() -> None:
    from flexunet.inference.volumes import agreement

    a = agreement([10.0, 20.0, 30.0], [12.0, 20.0, 25.0])
    # differences 2, 0, -5: bias -1, SD sqrt(((3)^2 + 1 + 16) / 2) = sqrt(13)
    assert a["bias_ml"] == pytest.approx(-1.0)
    assert a["loa_high_ml"] == pytest.approx(-1.0 + 1.96 * math.sqrt(13))
    assert a["mean_abs_error_ml"] == pytest.approx(7 / 3)
    assert a["mean_rel_error"] == pytest.approx((0.2 + 0 + 5 / 30) / 3)
    assert a["pearson_r"] == pytest.approx(np.corrcoef([10, 20, 30], [12, 20, 25])[0, 1])
    assert a["n"] == 3 and math.isnan(agreement([1.0], [1.0])["pearson_r"])


def test_counts_volumes_sum_over_slices() -> None:
    from flexunet.inference.volumes import counts_volumes

    ml = counts_volumes([geo("a", 0.0), geo("b", 2.0)], [np.array([5, 10, 0]), np.array([5, 6, 4])], NAMES)
    assert ml == pytest.approx({"ischemic": 16 * 0.4 * 2 / 1000, "hemorrhagic": 4 * 0.4 * 2 / 1000})
