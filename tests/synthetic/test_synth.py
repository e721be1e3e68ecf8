"""flexunet.synthetic.synth: the synthetic TEKNOFEST-like stroke CT dataset.

Datasets here are tiny (<= 24 slices of 64-96 px) so the whole file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage

from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.dataset.masks import read_mask
from flexunet.synthetic.synth import (CLASS_NAMES, DATASET_DIR, FIRST_ID, STROKE_RGB_MAP, SUBDIRS, dataset_root,
                            plan_slices, render_slice, synthesize)
from flexunet.synthetic.lesions import SynthOptions

SEED = 3
COUNT = 24
SIZE = 96


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, synthesize(out, COUNT, SEED, size=SIZE, progress=False)


def files(root: Path) -> dict[str, bytes]:
    return {f"{p.parent.name}/{p.name}": p.read_bytes()
            for sub in SUBDIRS for p in sorted((root / sub).iterdir())}


def hu_of(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def mask_of(root: Path, slice_id: str) -> np.ndarray:
    return read_mask(root / "MASKS" / f"{slice_id}.png", STROKE_RGB_MAP).index


# --------------------------------------------------------------------------- layout and summary


def test_layout_and_summary(dataset: tuple[Path, dict]) -> None:
    out, summary = dataset
    root = out / DATASET_DIR / "YARISMA-VERI-SETI_2_OTURUM"
    assert summary["root"] == root == dataset_root(out)
    ids = [str(FIRST_ID + i) for i in range(COUNT)]
    for sub, suffix in (("PNG", ".png"), ("MASKS", ".png"), ("OVERLAY", ".png"), ("DICOM", ".dcm")):
        assert sorted(p.name for p in (root / sub).iterdir()) == [i + suffix for i in ids]
    assert summary["count"] == COUNT and summary["patients"] >= 2 and summary["seconds"] > 0
    assert set(summary["slices_with"]) == set(CLASS_NAMES)
    assert summary["slices_with"]["background"] == COUNT
    # most slices hold a lesion; the counts agree with the masks on disk
    assert summary["slices_without_lesion"] <= COUNT // 2
    masks = [mask_of(root, i) for i in ids]
    for k, name in enumerate(CLASS_NAMES):
        assert summary["slices_with"][name] == sum(bool((m == k).any()) for m in masks)
    assert json.loads((out / DATASET_DIR / "synth.json").read_text())["count"] == COUNT


def test_png_is_grey_rgb_and_overlay_blends_mask(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    root = dataset_root(out)
    for i in range(0, COUNT, 5):
        png = Image.open(root / "PNG" / f"{FIRST_ID + i}.png")
        assert png.mode == "RGB" and png.size == (SIZE, SIZE)
        grey = np.asarray(png).astype(int)
        assert (grey == grey[..., :1]).all()
        index = mask_of(root, str(FIRST_ID + i))
        over = np.asarray(Image.open(root / "OVERLAY" / f"{FIRST_ID + i}.png")).astype(int)
        colours = np.array([(0, 0, 0), (0, 255, 0), (0, 0, 255)])[index]
        expected = np.where(index[..., None] != 0, (grey + colours) / 2, grey)
        assert np.abs(over - expected).max() <= 1


def test_masks_hold_only_palette_colours(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    palette = {tuple(c) for c in STROKE_RGB_MAP}
    for path in sorted((dataset_root(out) / "MASKS").iterdir()):
        img = Image.open(path)
        assert img.mode == "RGB"
        colours = {tuple(c) for c in np.unique(np.asarray(img).reshape(-1, 3), axis=0)}
        assert colours <= palette, f"{path.name}: {colours - palette}"


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_other_seed_differs(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = dataset
    # fewer slices with the same seed: slice i does not depend on count
    synthesize(tmp_path / "again", 7, SEED, size=SIZE, progress=False)
    first = {k: v for k, v in files(dataset_root(out)).items() if int(k.split("/")[1][:5]) < FIRST_ID + 7}
    assert files(dataset_root(tmp_path / "again")) == first
    synthesize(tmp_path / "other", 7, SEED + 1, size=SIZE, progress=False)
    other = files(dataset_root(tmp_path / "other"))
    assert all(other[k] != first[k] for k in first if k.startswith(("PNG/", "DICOM/")))


def test_workers_write_the_same_files(tmp_path: Path) -> None:
    synthesize(tmp_path / "one", 6, 11, size=64, progress=False)
    synthesize(tmp_path / "two", 6, 11, size=64, progress=False, workers=2)
    assert files(dataset_root(tmp_path / "one")) == files(dataset_root(tmp_path / "two"))


# --------------------------------------------------------------------------- DICOM


def test_dicom_reads_back_and_windows_to_the_png(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    root = dataset_root(out)
    sops = set()
    for i in range(COUNT):
        ds = pydicom.dcmread(root / "DICOM" / f"{FIRST_ID + i}.dcm")
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.Modality == "CT" and (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert ds.BitsAllocated == 16 and float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        assert 0.45 * 512 / SIZE <= float(ds.PixelSpacing[0]) <= 0.5 * 512 / SIZE
        sops.add(ds.SOPInstanceUID)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert hu.min() >= -1024 and hu.max() > 1000                      # air and bone
        window = np.clip(np.rint((hu - (40 - 80 / 2)) * 255 / 80), 0, 255)
        png = np.asarray(Image.open(root / "PNG" / f"{FIRST_ID + i}.png"))[..., 0]
        assert np.abs(window - png).max() <= 1
    assert len(sops) == COUNT


def test_patients_have_several_consecutive_slices(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    root = dataset_root(out)
    groups: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for i in range(COUNT):
        ds = pydicom.dcmread(root / "DICOM" / f"{FIRST_ID + i}.dcm")
        groups[ds.PatientID].append(ds)
    assert len(groups) >= 2 and max(len(g) for g in groups.values()) >= 3
    series = set()
    for slices in groups.values():
        numbers = [int(Path(ds.filename).stem) for ds in slices]
        assert numbers == list(range(numbers[0], numbers[0] + len(slices)))    # consecutive ids
        assert [ds.InstanceNumber for ds in slices] == list(range(1, len(slices) + 1))
        assert len({ds.SeriesInstanceUID for ds in slices}) == 1
        assert len({ds.StudyInstanceUID for ds in slices}) == 1
        steps = np.diff([float(ds.SliceLocation) for ds in slices])
        assert np.allclose(steps, float(slices[0].SliceThickness), atol=1e-2)
        series.add(slices[0].SeriesInstanceUID)
        # the head's cross-section changes smoothly from slice to slice
        areas = np.array([(ds.pixel_array.astype(int) - 1024 > -500).sum() for ds in slices])
        assert (np.abs(np.diff(areas)) / areas[:-1] < 0.15).all()
    assert len(series) == len(groups)
    # heads differ between patients (size, position, tilt)
    firsts = [g[0].pixel_array.astype(int) - 1024 > -500 for g in groups.values()]
    assert len({int(m.sum()) for m in firsts}) == len(firsts)


# --------------------------------------------------------------------------- lesions


def test_lesions_are_darker_or_brighter_than_the_parenchyma_around(dataset: tuple[Path, dict]) -> None:
    out, _ = dataset
    root = dataset_root(out)
    inside: dict[int, list[np.ndarray]] = {1: [], 2: []}
    around: dict[int, list[np.ndarray]] = {1: [], 2: []}
    for i in range(COUNT):
        hu = hu_of(root / "DICOM" / f"{FIRST_ID + i}.dcm")
        index = mask_of(root, str(FIRST_ID + i))
        for k in (1, 2):
            lesion = index == k
            if not lesion.any():
                continue
            ring = ndimage.binary_dilation(lesion, iterations=3) & (index == 0)
            ring &= (hu > 15) & (hu < 50)                 # parenchyma, not CSF or bone
            inside[k].append(hu[lesion])
            around[k].append(hu[ring])
    assert inside[1] and inside[2]
    drop = np.concatenate(inside[1]).mean() - np.concatenate(around[1]).mean()
    rise = np.concatenate(inside[2]).mean() - np.concatenate(around[2]).mean()
    assert -25 < drop < -5, drop
    assert 20 < rise < 60, rise


def test_mask_is_where_the_lesion_intensity_was_applied() -> None:
    checked = 0
    for i, (patient, j) in enumerate(plan_slices(SEED, 16)):
        hu, label = render_slice(patient, j, SIZE, np.random.default_rng([SEED, 1, i]))
        plain, none = render_slice(dataclasses.replace(patient, lesions=()), j, SIZE,
                                   np.random.default_rng([SEED, 1, i]))
        assert not none.any()
        diff = hu.astype(int) - plain.astype(int)
        far = ~ndimage.binary_dilation(label > 0, iterations=6)
        assert (diff[far] == 0).all()                   # nothing drawn away from the labels
        if (label == 1).any():
            assert diff[label == 1].mean() < -5
            checked += 1
        if (label == 2).any():
            assert diff[label == 2].mean() > 20
            checked += 1
    assert checked >= 4


def test_most_slices_hold_a_lesion_and_some_hold_both_kinds() -> None:
    with_lesion = 0
    for seed in range(3):
        both = 0
        for i, (patient, j) in enumerate(plan_slices(seed, 30)):
            _, label = render_slice(patient, j, SIZE, np.random.default_rng([seed, 1, i]))
            kinds = set(np.unique(label).tolist()) - {0}
            both += kinds == {1, 2}
            with_lesion += bool(kinds)
        assert both >= 1, seed
    assert with_lesion >= 45


def test_hemorrhage_wins_where_lesions_overlap() -> None:
    patient = next(p for p, _ in plan_slices(SEED, 40) if any(les.kind == 1 for les in p.lesions))
    infarct = next(les for les in patient.lesions if les.kind == 1)
    infarct = dataclasses.replace(infarct, radius_mm=15.0, half_depth=3.0)
    bleed = dataclasses.replace(infarct, kind=2, radius_mm=7.0, value_hu=70.0, edge_mm=0.8)
    j = min(max(round(infarct.z), 0), patient.n_slices - 1)
    infarct = dataclasses.replace(infarct, z=float(j))
    bleed = dataclasses.replace(bleed, z=float(j))
    rng = np.random.default_rng(0)
    _, alone = render_slice(dataclasses.replace(patient, lesions=(infarct,)), j, SIZE, rng)
    _, both = render_slice(dataclasses.replace(patient, lesions=(bleed, infarct)), j, SIZE, rng)
    assert (both == 2).any() and (both == 1).any()
    assert (alone[both == 2] == 1).mean() > 0.5          # the bleed sits on the infarct and wins


def test_lesions_are_not_specks_at_256() -> None:
    for i, (patient, j) in enumerate(plan_slices(SEED, 8)):
        _, label = render_slice(patient, j, 256, np.random.default_rng([SEED, 1, i]))
        for k in (1, 2):
            pieces, n = ndimage.label(label == k, np.ones((3, 3)))
            assert n == 0 or np.bincount(pieces.ravel())[1:].min() >= 4


# --------------------------------------------------------------------------- refusals


def test_refuses_a_dataset_folder_with_files_unless_overwrite(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    synthesize(tmp_path, 2, 1, size=48, progress=True)
    assert "synth" in capsys.readouterr().err                     # the progress bar
    png = dataset_root(tmp_path) / "PNG" / f"{FIRST_ID}.png"
    before = png.read_bytes()
    with pytest.raises(DataError, match="holds an earlier synthetic set; .* --overwrite") as err:
        synthesize(tmp_path, 2, 1, size=48, progress=False)
    assert "\n" not in str(err.value)
    png.write_bytes(b"broken")
    synthesize(tmp_path, 2, 1, size=48, progress=False, overwrite=True)
    assert png.read_bytes() == before


def test_a_raw_folder_synth_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    from conftest import snapshot

    users = dataset_root(tmp_path) / "PNG"
    users.mkdir(parents=True)
    (users / f"{FIRST_ID}.png").write_bytes(b"a real slice")             # the user's data, synth's names
    before = snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(DataError, match="holds files `flexunet synth` did not write; it never replaces them"):
            synthesize(tmp_path, 2, 1, size=48, progress=False, overwrite=overwrite)
        assert snapshot(tmp_path) == before


def test_never_inside_a_split_dataset_or_a_run_folder(tmp_path: Path) -> None:
    """synth has no config, but the records tell: it wrote its raw layout into the test images of a
    split dataset, and into a training run's folder."""
    from conftest import snapshot
    from flexunet.utils.outputs import claim_output_dir

    claim_output_dir(tmp_path / "dataset", "split", ["train", "test", "split.json"])
    (tmp_path / "dataset" / "test" / "images").mkdir(parents=True)
    claim_output_dir(tmp_path / "models", "train", ["best_model.keras", "last_checkpoint"])
    before = snapshot(tmp_path)
    for out, why in [(tmp_path / "dataset" / "test" / "images", "lies inside .*test, written by `flexunet split`"),
                     (tmp_path / "dataset" / "test", "lies inside .*test, written by `flexunet split`"),
                     (tmp_path / "models", "lies inside .*models, the folder of a `flexunet train` run")]:
        for overwrite in (False, True):
            with pytest.raises(FlexUNetError, match=f"synth output = .*{DATASET_DIR}: {why}"):
                synthesize(out, 1, 1, size=32, progress=False, overwrite=overwrite)
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob(DATASET_DIR))
    assert synthesize(tmp_path / "dataset", 1, 1, size=32, progress=False)["count"] == 1   # beside the split


def test_empty_dataset_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / DATASET_DIR / "empty").mkdir(parents=True)
    assert synthesize(tmp_path, 1, 1, size=32, progress=False)["count"] == 1


@pytest.mark.parametrize("kwargs, word", [
    (dict(count=0), "count"), (dict(size=16), "size"), (dict(seed=-1), "seed"),
    (dict(count=2.5), "count"), (dict(workers=0), "workers"),
])
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict, word: str) -> None:
    args = dict(count=2, seed=1, size=32, progress=False) | kwargs
    with pytest.raises(FlexUNetError, match=word):
        synthesize(tmp_path, **args)
    assert not (tmp_path / DATASET_DIR).exists()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        synthesize(target, 1, 1, size=32, progress=False)


# --------------------------------------------------------------------------- knobs (SynthOptions)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for sub in SUBDIRS:
        for p in sorted((root / sub).iterdir()):
            h.update(f"{sub}/{p.name}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_default_options_keep_the_demo_data_byte_identical(tmp_path: Path) -> None:
    # digest computed on commit 7033dab, before the knobs existed (same PNG/DICOM writers)
    synthesize(tmp_path, 12, 5, size=64, progress=False, options=SynthOptions())
    assert _digest(dataset_root(tmp_path)) == "cdbd805116168a5a33f459619eb5b39b39426a0aae1aa721f6ab3c9b3043542c"


def _lesion_contrast(options: SynthOptions, seed: int = SEED) -> tuple[float, float]:
    """Mean HU change inside ischemic and haemorrhagic labels against the lesion-free slice."""
    diffs: dict[int, list[np.ndarray]] = defaultdict(list)
    for i, (patient, j) in enumerate(plan_slices(seed, 16, options)):
        hu, label = render_slice(patient, j, SIZE, np.random.default_rng([seed, 1, i]), options,
                                 np.random.default_rng([seed, 2, i]))
        plain, _ = render_slice(dataclasses.replace(patient, lesions=()), j, SIZE,
                                np.random.default_rng([seed, 1, i]), options, np.random.default_rng([seed, 2, i]))
        for k in (1, 2):
            diffs[k].append((hu.astype(float) - plain)[label == k])
    return float(np.concatenate(diffs[1]).mean()), float(np.concatenate(diffs[2]).mean())


def test_contrast_knobs_set_the_drawn_lesion_hu() -> None:
    demo_drop, demo_rise = _lesion_contrast(SynthOptions())
    subtle_drop, _ = _lesion_contrast(SynthOptions(ischemic_hu=(3.0, 3.0)))
    _, faint_rise = _lesion_contrast(SynthOptions(hemorrhage_hu=(40.0, 40.0)))
    assert demo_drop < -8 and -8 < subtle_drop < -1        # 3 HU plus the blurred grey/white pull
    assert subtle_drop > demo_drop + 4
    assert faint_rise < demo_rise - 10


def test_lesion_size_prevalence_noise_and_lookalikes(tmp_path: Path) -> None:
    tiny = plan_slices(SEED, 40, SynthOptions(lesion_size=(2.5, 4.0)))
    radii = [les.radius_mm for p, _ in tiny for les in p.lesions]
    assert radii and all(2.5 <= r <= 4.0 for r in radii)
    none = synthesize(tmp_path / "none", 12, SEED, size=64, progress=False, options=SynthOptions(prevalence=0.0))
    assert none["slices_without_lesion"] == 12 and none["options"]["prevalence"] == 0.0
    loud = plan_slices(SEED, 4, SynthOptions(noise=9.0))
    assert all(p.noise_hu == 9.0 for p, _ in loud)
    # look-alikes change the image, never the label
    changed = 0
    for i, (patient, j) in enumerate(plan_slices(SEED, 10)):
        a, la = render_slice(patient, j, SIZE, np.random.default_rng([SEED, 1, i]))
        b, lb = render_slice(patient, j, SIZE, np.random.default_rng([SEED, 1, i]), SynthOptions(lookalikes=True),
                             np.random.default_rng([SEED, 2, i]))
        assert (la == lb).all()
        changed += int((a != b).sum() > 20)
    assert changed >= 3


@pytest.mark.parametrize("kwargs", [dict(ischemic_hu=(5.0, 2.0)), dict(prevalence=1.5),
                                    dict(noise=-1.0), dict(lesion_size=(0.0, 3.0))])
def test_bad_options_are_one_line(kwargs: dict) -> None:
    with pytest.raises(DataError, match=f"synth: {next(iter(kwargs))} = ") as err:
        SynthOptions(**kwargs)
    assert "\n" not in str(err.value)


def test_cli_flags_reach_the_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flexunet.cli.main import main

    assert main(["-q", "synth", str(tmp_path / "a"), "--count", "3", "--size", "48", "--ischemic-hu", "3,5",
                 "--lesion-size", "3,6", "--prevalence", "0.5", "--noise", "4", "--lookalikes"]) == 0
    options = json.loads((tmp_path / "a" / DATASET_DIR / "synth.json").read_text())["options"]
    assert options == {"ischemic_hu": [3.0, 5.0], "hemorrhage_hu": [60.0, 80.0], "lesion_size": [3.0, 6.0],
                       "prevalence": 0.5, "noise": 4.0, "lookalikes": True}
    assert main(["-q", "synth", str(tmp_path / "b"), "--count", "3", "--prevalence", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "prevalence = 2.0" in err
    assert not (tmp_path / "b").exists()
