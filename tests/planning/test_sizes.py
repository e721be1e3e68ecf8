"""flexunet.planning.sizes: the valid and test subsets' size, by patient when the manifest names them,
and the warning for a class too few of them hold; said by `plan` on the console and in the config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from flexunet.planning.fingerprint import fingerprint_dataset
from flexunet.planning.plan import plan_dataset
from flexunet.planning.sizes import half_width, size_lines, size_warnings, subset_sizes
from test_fingerprint import GREEN, _slice, make_set
from test_plan import fake_probe


def _with_patients(root: Path) -> Path:
    """make_set plus valid slices g, h of one more patient, and the split.json -> manifest naming patients."""
    data = make_set(root)
    _slice(data, "valid", "g", [(GREEN, 4, 4, 4)])
    _slice(data, "valid", "h", [])
    master = root / "master"
    master.mkdir()
    patients = {"a": "p1", "b": "p1", "c": "p2", "d": "p2", "e": "p3", "f": "p3", "g": "p4", "h": "p4"}
    (master / "manifest.json").write_text(json.dumps({"items": [
        {"id": i, "image": f"images/{i}.png", "mask": f"masks/{i}.png", "group": p, "group_kind": "patient"}
        for i, p in patients.items()]}))
    (data / "split.json").write_text(json.dumps({"master_dir": str(master)}))
    return data


def test_sizes_count_slices_and_patients_holding_each_class(tmp_path: Path) -> None:
    data = _with_patients(tmp_path)
    presence: dict = {}
    fp = fingerprint_dataset(data, None, presence)
    sizes = subset_sizes(data, [c["name"] for c in fp["classes"]], presence)
    # valid: e (green + red) and f of p3, g (green) and h of p4
    assert sizes["valid"] == {"slices": 4, "unit": "patients", "units": 2, "classes": {
        "green": {"slices": 2, "units": 2, "half_width": half_width(2)},
        "red": {"slices": 1, "units": 1, "half_width": 0.5}}}
    assert size_lines(sizes)[0] == ("valid: 4 slices of 2 patients; green in 2 slices (2 patients), "
                                    "red in 1 slice (1 patient)")
    said = size_warnings(sizes)
    assert said[0].startswith("the validation set is small for a Dice: green in 2 patients (+-0.35), "
                              "red in 1 patient (+-0.50) (a rough 95% interval")
    assert half_width(25) == 0.1 and half_width(100) == 0.05 and half_width(0) is None


def test_plan_says_the_sizes_on_the_console_and_in_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = make_set(tmp_path)                 # no manifest: the units are slices
    (data / "test" / "masks" / "e.png").write_bytes((data / "test" / "masks" / "f.png").read_bytes())  # no lesion
    out = tmp_path / "p" / "c.config"
    with caplog.at_level(logging.INFO, logger="flexunet.planning.plan"):
        plan_dataset(data, out, minutes=3, probe=fake_probe)
    console = [r.getMessage() for r in caplog.records if r.name == "flexunet.planning.plan"]
    valid = "valid: 2 slices (no manifest names their patients); green in 1 slice, red in 1 slice"
    assert f"plan: {valid}" in console
    assert "plan: no test slice holds green: its test Dice cannot be measured on this set" in console
    text = out.read_text()
    assert f"; {valid}\n" in text and "; the validation set is small for a Dice: green in 1 slice (+-0.50)" in text
    fp = json.loads((out.parent / "fingerprint.json").read_text())
    assert fp["sizes"]["test"]["classes"]["red"] == {"slices": 0, "units": 0, "half_width": None}
