"""The synthetic stroke-CT patients as NIfTI volumes in nnU-Net's raw layout (``flexunet synth --format nifti``).

``synthesize_nifti(out, count, seed)`` renders the same slices as :func:`flexunet.synthetic.synth.synthesize`
(the same patients and draws: slice ``i`` of one seed is the same image in both formats) and writes
each patient as one volume::

    out/Dataset001_SynthStroke/
        dataset.json                 channel_names {"0": "CT"}, labels {name: index}, numTraining, file_ending
        imagesTr/synth_000_0000.nii.gz   int16 HU, one axial slice per rendered slice (inferior first)
        labelsTr/synth_000.nii.gz        uint8 class indices: 0 background, 1 ischemic, 2 hemorrhagic
        imagesTs/ labelsTs/          the last fifth of the patients (at least one of two or more), held out:
                                     nnU-Net reads no labelsTs/; they are there to score predictions
        synth.json                   what made it, and each case's known lesion volumes in mL

The volumes are stored as a DICOM series is (voxel order LPS: x towards the patient's left, y
posterior), with an affine to RAS world coordinates of diag(-spacing, -spacing, 5 mm), so reading
them exercises the reorientation.  The known volume of a case is its label voxels of a class x the
voxel volume (pixel spacing squared x 5 mm).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from flexunet.dataset.nifti import case_name, list_nifti, nifti_bytes
from flexunet.synthetic.lesions import DEFAULT_OPTIONS, SynthOptions
from flexunet.synthetic.phantom import SLICE_THICKNESS_MM, Patient, plan_slices
from flexunet.synthetic.render import render_slice
from flexunet.synthetic.synth import CLASS_NAMES, _check_arguments, ct_slice, patient_id
from flexunet.utils.io import write_bytes, write_json
from flexunet.utils.outputs import claim_output_file
from flexunet.utils.progress import Progress

log = logging.getLogger(__name__)

DATASET_NAME = "Dataset001_SynthStroke"
TEST_SHARE = 0.2


def case_id(index: int) -> str:
    return f"synth_{index:03d}"


def held_out(patients: int) -> int:
    """How many of the last patients go to imagesTs/: a fifth, at least one when there are two or more."""
    return 0 if patients < 2 else max(1, round(patients * TEST_SHARE))


def affine_of(patient: Patient, size: int, seed: int) -> np.ndarray:
    """The RAS affine of a patient's LPS-ordered volume: as ImagePositionPatient / PixelSpacing of its DICOM."""
    sp = patient.spacing_mm(size)
    first = ct_slice(patient, 0, seed, size)
    affine = np.diag([-sp, -sp, SLICE_THICKNESS_MM, 1.0])
    affine[:3, 3] = [size / 2 * sp, size / 2 * sp, first.location_mm]   # LPS (-s/2*sp, -s/2*sp, z) in RAS
    return affine


def _volume_files(task: tuple[Path, int, int, Patient, list[tuple[int, int]], SynthOptions, str]) -> np.ndarray:
    """Render and write one patient's image and label volume; its voxels per class."""
    root, seed, size, patient, slices, options, subset = task
    hu, label = [], []
    for i, j in slices:
        h, lab = render_slice(patient, j, size, np.random.default_rng([seed, 1, i]), options,
                              np.random.default_rng([seed, 2, i]))
        hu.append(h)
        label.append(lab)
    # (rows, cols, slices) -> voxel (x = column, y = row, z = slice): the LPS order of a DICOM series
    hu_vol = np.stack(hu, -1).transpose(1, 0, 2)
    label_vol = np.stack(label, -1).transpose(1, 0, 2)
    affine = affine_of(patient, size, seed)
    case = case_id(patient.index)
    write_bytes(root / f"images{subset}" / f"{case}_0000.nii.gz", _scanner_file(hu_vol.astype(np.int16), affine))
    write_bytes(root / f"labels{subset}" / f"{case}.nii.gz", _scanner_file(label_vol.astype(np.uint8), affine))
    return np.bincount(label_vol.ravel(), minlength=len(CLASS_NAMES))


def _scanner_file(data: np.ndarray, affine: np.ndarray) -> bytes:
    header = nib.Nifti1Header()
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    return nifti_bytes(data, affine, header)


def synthesize_nifti(out_dir: Path, count: int, seed: int, size: int = 512, progress: bool = True,
                     overwrite: bool = False, workers: int = 1,
                     options: SynthOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Write the patients of ``count`` synthetic slices as NIfTI volumes in nnU-Net's raw layout.

    Returns synth.json's content: count, patients, root (the Dataset folder), size, seed, seconds,
    training and test case names, and per case its subset, PatientID, slices, voxel size and known
    lesion volumes in mL (by class name).  Refuses an existing dataset folder synth did not write, and
    its own earlier one unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    _check_arguments(out_dir, count, seed, size, overwrite, options, workers, top_name=DATASET_NAME)
    start = time.perf_counter()
    root = out_dir / DATASET_NAME
    claim_output_file(root, "synth")
    by_patient: dict[int, tuple[Patient, list[tuple[int, int]]]] = {}
    for i, (patient, j) in enumerate(plan_slices(int(seed), int(count), options)):
        by_patient.setdefault(patient.index, (patient, []))[1].append((i, j))
    test_from = len(by_patient) - held_out(len(by_patient))
    tasks = [(root, int(seed), int(size), patient, slices, options, "Tr" if n < test_from else "Ts")
             for n, (patient, slices) in enumerate(by_patient.values())]
    if workers > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")     # safe even after TensorFlow is imported
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
            counts = list(Progress(pool.map(_volume_files, tasks), "synth", total=len(tasks), enabled=progress,
                                   unit="volume"))
    else:
        counts = [_volume_files(t) for t in Progress(tasks, "synth", enabled=progress, unit="volume")]
    training = [case_id(t[3].index) for t in tasks if t[6] == "Tr"]
    write_json(root / "dataset.json", {
        "name": "SynthStroke", "description": "FlexUNet's synthetic non-contrast head CT (flexunet synth)",
        "channel_names": {"0": "CT"}, "labels": {name: k for k, name in enumerate(CLASS_NAMES)},
        "numTraining": len(training), "file_ending": ".nii.gz"})
    summary = {"count": int(count), "patients": len(tasks), "root": root, "size": int(size), "seed": int(seed),
               "seconds": round(time.perf_counter() - start, 3), "format": "nnU-Net raw (NIfTI)",
               "training": training, "test": [case_id(t[3].index) for t in tasks if t[6] == "Ts"],
               "options": options.as_dict(),
               "cases": {case_id(t[3].index): _case_record(t, c) for t, c in zip(tasks, counts)}}
    write_json(root / "synth.json", summary)
    if overwrite:
        _warn_stale(root, set(summary["cases"]))
    log.info("synth: %d slices as %d NIfTI volumes (%d training, %d held out in imagesTs/) in %.1f s -> %s",
             count, len(tasks), len(training), len(tasks) - len(training), summary["seconds"], root)
    return summary


def _case_record(task: tuple, counts: np.ndarray) -> dict[str, Any]:
    _, seed, size, patient, slices, _, subset = task
    sp = patient.spacing_mm(size)
    voxel_ml = sp * sp * SLICE_THICKNESS_MM / 1000.0
    return {"subset": subset, "patient_id": patient_id(seed, patient.index), "slices": len(slices),
            "voxel_mm": [round(sp, 6), round(sp, 6), SLICE_THICKNESS_MM],
            "voxels": {name: int(counts[k]) for k, name in enumerate(CLASS_NAMES)},
            "volumes_ml": {name: round(float(counts[k]) * voxel_ml, 6) for k, name in enumerate(CLASS_NAMES)
                           if k > 0}}


def _warn_stale(root: Path, cases: set[str]) -> None:
    stale = sorted({p.name for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") if (root / sub).is_dir()
                    for p in list_nifti(root / sub) if case_name(p) not in cases})
    if stale:
        log.warning("synth: %s still holds %d volume(s) of an earlier run (%s...), which prepare would read; "
                    "delete them or write to an empty folder", root, len(stale), stale[0])
