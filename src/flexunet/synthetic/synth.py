"""A synthetic stand-in for the TEKNOFEST-2021 Stroke CT dataset, in its raw layout.

``synthesize(out, count, seed)`` writes::

    out/STROKE-DATASET/YARISMA-VERI-SETI_2_OTURUM/
        DICOM/10000.dcm    CT slice in Hounsfield units (slope 1, intercept -1024)
        PNG/10000.png      the same slice in the brain window (centre 40, width 80), 8-bit RGB grey
        MASKS/10000.png    colour mask: black background, green ischemic, blue hemorrhagic
        OVERLAY/10000.png  the mask colours blended at alpha 0.5 over the PNG
    out/STROKE-DATASET/synth.json   what made it: seed, count, size, per-class slice counts

The slices are drawn by the phantom (:mod:`flexunet.synthetic.phantom`: patients, lesions,
``render_slice``); the DICOM files by :func:`flexunet.dataset.dicom.dicom_bytes`.  Harder sets:
``SynthOptions`` (flexunet.synthetic.lesions); its defaults are the demo's data, byte for byte.

``family="territory"`` draws the slices from a second generator designed apart from the phantom
(:mod:`flexunet.synthetic.territory`) into the same layout; ``scanner`` names a
:class:`flexunet.synthetic.scanner.ScannerProfile` that shifts either family's images as another
scanner would show them ("standard": unchanged).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from flexunet.dataset.dicom import CTSlice, dicom_bytes, window
from flexunet.dataset.masks import STROKE_CLASS_NAMES, STROKE_RGB_MAP, palette_colours, save_rgb_mask
from flexunet.model.predict import blend
from flexunet.synthetic.lesions import DEFAULT_OPTIONS, SynthOptions
from flexunet.synthetic.phantom import RESCALE_INTERCEPT, SLICE_THICKNESS_MM, Patient, plan_slices
from flexunet.synthetic import territory
from flexunet.synthetic.render import render_slice
from flexunet.synthetic.scanner import ScannerProfile, scanner_profile, shifted
from flexunet.utils.errors import DataError
from flexunet.utils.io import save_image, write_bytes, write_json
from flexunet.utils.outputs import check_not_inside_others, claim_output_file, owner_of
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

CLASS_NAMES = STROKE_CLASS_NAMES
DATASET_DIR = "STROKE-DATASET"
SESSION_DIR = "YARISMA-VERI-SETI_2_OTURUM"
SUBDIRS = ("PNG", "MASKS", "DICOM", "OVERLAY")
FIRST_ID = 10000
WINDOW_CENTRE = 40.0
WINDOW_WIDTH = 80.0
OVERLAY_ALPHA = 0.5
FAMILIES = ("phantom", territory.FAMILY)


# --------------------------------------------------------------------------- renderings


def brain_window(hu: np.ndarray, centre: float = WINDOW_CENTRE, width: float = WINDOW_WIDTH) -> np.ndarray:
    """HU -> uint8 grey: ``centre - width/2`` maps to 0, ``centre + width/2`` to 255, rounded."""
    return window(hu, centre, width)


def overlay(grey_rgb: np.ndarray, index: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Class colours blended at ``alpha`` over an RGB image where ``index`` != 0."""
    return blend(grey_rgb, index, palette_colours(STROKE_RGB_MAP), alpha)



# --------------------------------------------------------------------------- the dataset


def dataset_root(out_dir: Path) -> Path:
    """The YARISMA folder under ``out_dir`` that holds PNG/MASKS/DICOM/OVERLAY."""
    return Path(out_dir) / DATASET_DIR / SESSION_DIR


def _check_arguments(out_dir: Path, count: int, seed: int, size: int, overwrite: bool,
                     options: SynthOptions = DEFAULT_OPTIONS, workers: int = 1, top_name: str = DATASET_DIR) -> None:
    for name, value, least in (("count", count, 1), ("size", size, 32), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise DataError(f"synth: {name} = {value!r}; expected an integer >= {least}")
    if not isinstance(options, SynthOptions):
        raise DataError(f"synth: options = {options!r}; expected a SynthOptions")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataError(f"synth: workers = {workers!r}; expected an integer >= 1")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose a folder for the dataset")
    top = out_dir / top_name
    check_not_inside_others(top, "synth", "synth output")  # not in a split dataset's subsets, not in a run
    if not (top.is_dir() and any(p.is_file() for p in top.rglob("*"))):
        return
    if owner_of(top) != "synth":
        raise DataError(f"{top}: holds files `flexunet synth` did not write; it never replaces them, with or "
                        f"without --overwrite — choose another output folder")
    if not overwrite:
        raise DataError(f"{top}: holds an earlier synthetic set; choose another output folder, or overwrite "
                        f"(overwrite=True / --overwrite) to replace it")


def write_slice(root: Path, slice_id: str, hu: np.ndarray, label: np.ndarray, dicom: bytes) -> None:
    """The four files of one slice, each written atomically."""
    grey = np.repeat(brain_window(hu)[..., None], 3, axis=-1)
    save_image(root / "PNG" / f"{slice_id}.png", grey)
    save_rgb_mask(root / "MASKS" / f"{slice_id}.png", label, STROKE_RGB_MAP)
    save_image(root / "OVERLAY" / f"{slice_id}.png", overlay(grey, label))
    write_bytes(root / "DICOM" / f"{slice_id}.dcm", dicom)


def ct_slice(patient: Patient, j: int, seed: int, size: int) -> CTSlice:
    """What the DICOM file of slice ``j`` of ``patient`` says beside its pixels."""
    return CTSlice(uid_sources=("flexunet-synth", str(seed)), series_key=patient.index, slice_index=j,
                   patient_name=f"SYNTH^{patient.index:04d}", patient_id=patient_id(seed, patient.index),
                   sex=patient.sex, age=patient.age, spacing_mm=patient.spacing_mm(size),
                   location_mm=round(patient.height(j) * SLICE_THICKNESS_MM / patient.dh, 3),
                   thickness_mm=SLICE_THICKNESS_MM, window=(WINDOW_CENTRE, WINDOW_WIDTH),
                   rescale_intercept=RESCALE_INTERCEPT)


def _make_slice(task: tuple[Path, int, int, int, Any, int, SynthOptions, ScannerProfile]) -> np.ndarray:
    """Render and write global slice ``i``; its pixel count per class."""
    root, seed, size, i, patient, j, options, scanner = task
    if isinstance(patient, territory.Patient):
        hu, label = territory.render_slice(patient, j, size, seed, i, scanner)
        info = territory.ct_slice(patient, j, seed, size, scanner)
    else:
        hu, label = render_slice(patient, j, size, np.random.default_rng([seed, 1, i]), options,
                                 np.random.default_rng([seed, 2, i]))
        hu = shifted(hu, scanner, patient.spacing_mm(size), np.random.default_rng([seed, 3, patient.index]),
                     np.random.default_rng([seed, 4, i]))
        info = ct_slice(patient, j, seed, size)
    slice_id = str(FIRST_ID + i)
    write_slice(root, slice_id, hu, label, dicom_bytes(hu, info))
    return np.bincount(label.ravel(), minlength=len(CLASS_NAMES))


def synthesize(out_dir: Path, count: int, seed: int, size: int = 512, progress: bool = True,
               overwrite: bool = False, workers: int = 1,
               options: SynthOptions = DEFAULT_OPTIONS, family: str = "phantom",
               scanner: str | ScannerProfile = "standard") -> dict[str, Any]:
    """Write ``count`` synthetic slices in the TEKNOFEST raw layout under ``out_dir``.

    Returns a summary: count, patients, root (the YARISMA folder), size, seed, seconds,
    slices_with (slices holding each class, by class name), slices_without_lesion,
    slices_with_both, pixel_fraction (by class name), volumes_ml (each patient's known lesion
    volumes, by DICOM PatientID and class name).  Refuses an ``out_dir`` whose
    STROKE-DATASET folder already holds files unless ``overwrite`` (files of the same
    names are then replaced).  ``workers`` > 1 renders in that many processes; the files
    are the same.  ``options`` (contrast, lesion size, prevalence, noise, look-alikes)
    makes a harder set; its defaults are the demo's data, byte for byte.  ``family``: "phantom"
    (the demo's) or "territory" (a second, independent generator; ``options`` stay the defaults);
    ``scanner``: a profile name of :data:`flexunet.synthetic.scanner.PROFILES`.
    """
    out_dir = Path(out_dir)
    _check_arguments(out_dir, count, seed, size, overwrite, options, workers)
    if family not in FAMILIES:
        raise DataError(f"synth: family = {family!r}; expected one of {', '.join(FAMILIES)}")
    if family != "phantom" and not options.is_default:
        raise DataError(f"synth: the lesion and noise options ({options.as_dict()}) shape the phantom family "
                        f"only; leave them at their defaults with family = {family!r}")
    profile = scanner_profile(scanner)
    start = time.perf_counter()
    claim_output_file(out_dir / DATASET_DIR, "synth")  # before the first slice: a broken run is still synth's
    root = dataset_root(out_dir)
    plan: list[tuple[Any, int]] = (plan_slices(int(seed), int(count), options) if family == "phantom"
                                   else territory.plan_slices(int(seed), int(count)))
    tasks = [(root, int(seed), int(size), i, patient, j, options, profile) for i, (patient, j) in enumerate(plan)]
    if workers > 1 and count > 1:
        context = multiprocessing.get_context("spawn")     # safe even after TensorFlow is imported
        with ProcessPoolExecutor(min(workers, count), mp_context=context) as pool:
            results = pool.map(_make_slice, tasks, chunksize=4)
            counts = list(Progress(results, "synth", total=count, enabled=progress, unit="slice"))
    else:
        counts = [_make_slice(task) for task in Progress(tasks, "synth", enabled=progress, unit="slice")]
    summary = _summary(np.array(counts), plan, root, int(seed), int(size), time.perf_counter() - start)
    summary["options"] = options.as_dict()
    summary["family"], summary["scanner"] = family, profile.name
    write_json(out_dir / DATASET_DIR / "synth.json", summary)
    if overwrite:
        _warn_stale(root, count)
    log.info("synth: %d slices of %d patients (%d without lesion) in %.1f s -> %s", count,
             summary["patients"], summary["slices_without_lesion"], summary["seconds"], root)
    return summary


def _summary(counts: np.ndarray, plan: list[tuple[Any, int]], root: Path, seed: int, size: int,
             seconds: float) -> dict[str, Any]:
    present = counts > 0
    lesion = present[:, 1:].any(1)
    pixels = counts.sum(0)
    return {
        "count": len(plan), "patients": len({p.index for p, _ in plan}), "root": root,
        "size": size, "seed": seed, "seconds": round(seconds, 3),
        "slices_with": {name: int(present[:, k].sum()) for k, name in enumerate(CLASS_NAMES)},
        "slices_without_lesion": int((~lesion).sum()),
        "slices_with_both": int(present[:, 1:].all(1).sum()),
        "pixel_fraction": {name: round(float(pixels[k] / pixels.sum()), 6)
                           for k, name in enumerate(CLASS_NAMES)},
        "rgb_map": {str(colour): index for colour, index in STROKE_RGB_MAP.items()},
        "volumes_ml": known_volumes(counts, plan, seed, size),
    }


def patient_id(seed: int, index: int) -> str:
    """The DICOM PatientID of patient ``index`` (as :func:`ct_slice` gives it)."""
    return f"SYN{seed}-{index:04d}"


def known_volumes(counts: np.ndarray, plan: list[tuple[Any, int]], seed: int, size: int
                  ) -> dict[str, dict[str, float]]:
    """Each patient's lesion volume in mL by class name: the rendered mask pixels of its slices x the
    voxel (pixel spacing squared x SLICE_THICKNESS_MM, the spacing of its slice positions)."""
    out: dict[str, dict[str, float]] = {}
    for (patient, _), row in zip(plan, counts):
        voxel = patient.spacing_mm(size) ** 2 * SLICE_THICKNESS_MM / 1000.0
        pid = (territory.patient_id if isinstance(patient, territory.Patient) else patient_id)(seed, patient.index)
        mine = out.setdefault(pid, {name: 0.0 for name in CLASS_NAMES[1:]})
        for k, name in enumerate(CLASS_NAMES[1:], start=1):
            mine[name] += float(row[k]) * voxel
    return {pid: {name: round(v, 6) for name, v in classes.items()} for pid, classes in out.items()}


def _warn_stale(root: Path, count: int) -> None:
    stale = sorted({p.stem for sub in SUBDIRS if (root / sub).is_dir() for p in (root / sub).iterdir()
                    if p.stem.isdigit() and int(p.stem) >= FIRST_ID + count})
    if stale:
        log.warning("synth: %s still holds %d older slice(s) beyond this run (%s...); delete them or "
                    "write to an empty folder", root, len(stale), stale[0])
