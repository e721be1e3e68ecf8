"""benchmarks/outsider.py, the third synthetic family (written apart from flexunet.synthetic): what the
generalisation rounds rely on, that a seed gives the same files, whole patients per subset, index masks,
and the same patients and labels through every scanner."""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "outsider.py"


def _outsider():
    spec = importlib.util.spec_from_file_location("outsider", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_outsider_sets_are_seeded_grouped_by_patient_and_scanner_independent_in_labels(tmp_path):
    outsider = _outsider()
    for name in ("a", "b"):
        outsider.main([str(tmp_path / name), "--seed", "3", "--count", "30", "--size", "64"])
    assert _files(tmp_path / "a") == _files(tmp_path / "b") and len(_files(tmp_path / "a")) == 60
    subsets = {s: {p.name.split("_")[0] for p in (tmp_path / "a" / s / "images").glob("*.png")}
               for s in ("train", "valid", "test")}
    assert all(subsets.values()) and not (subsets["train"] & subsets["valid"] or subsets["train"] & subsets["test"]
                                          or subsets["valid"] & subsets["test"])
    labels = {v for p in (tmp_path / "a").rglob("masks/*.png") for v in np.unique(np.asarray(Image.open(p)))}
    assert labels <= {0, 1, 2} and 0 in labels
    outsider.main([str(tmp_path / "soft"), "--seed", "3", "--count", "30", "--size", "64", "--scanner", "soft"])
    soft = _files(tmp_path / "soft")
    a = _files(tmp_path / "a")
    assert {k: v for k, v in soft.items() if "/masks/" in k} == {k: v for k, v in a.items() if "/masks/" in k}
    assert {k: v for k, v in soft.items() if "/images/" in k} != {k: v for k, v in a.items() if "/images/" in k}
