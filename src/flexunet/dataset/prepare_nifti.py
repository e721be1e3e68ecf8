"""``flexunet prepare`` of NIfTI volumes: nnU-Net's raw layout, or a folder of image/label pairs.

Two layouts are read under ``[prepare] raw_dir`` (or the one folder below it that holds one):

    nnU-Net v2 raw   dataset.json                 channel_names, labels {name: index}, file_ending
                     imagesTr/CASE_0000.nii.gz    the CT volume of a case (channel 0000)
                     labelsTr/CASE.nii.gz         its label volume: class indices
                     imagesTs/CASE_0000.nii.gz    unlabelled volumes: not prepared (predict them with infer)
    pairs            images/CASE.nii.gz (or CASE_0000.nii.gz) and labels/CASE.nii.gz

Each volume is reoriented to RAS+ and cut into axial slices (:mod:`flexunet.dataset.nifti`), each
slice windowed from HU as DICOM is (``[prepare] window_center`` / ``window_width``, or
``three_windows``), padded to a square and resized as every prepared slice
(:func:`flexunet.dataset.prepare_slice.write_pair`); one case is one patient in the manifest, each
slice with the volume's pixel spacing, slice position and thickness, so the split keeps a volume
together and volumes in mL come from the real voxel size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from flexunet.config.loader import Config, class_name_clash
from flexunet.dataset.nifti import axial_slices, case_name, list_nifti, nifti_stem, read_labels, read_volume
from flexunet.dataset.prepare_slice import SliceOutput, scaled_spacing
from flexunet.utils.errors import DataError

log = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
LAYOUTS = (("imagesTr", "labelsTr"), ("images", "labels"))
UNLABELLED = "imagesTs"


@dataclass(frozen=True)
class NiftiLayout:
    """What prepare found under raw_dir."""

    root: Path
    kind: str                                  # "nnU-Net" or "pairs"
    pairs: list[tuple[str, Path, Path]]        # (case, image, label)
    lonely_images: list[Path]
    lonely_labels: list[Path]
    unlabelled: list[Path]                     # imagesTs/
    label_names: tuple[str, ...] | None        # from dataset.json, background first
    label_dir: str                             # "labelsTr" or "labels"


@dataclass(frozen=True)
class VolumeJob:
    """Everything a worker needs for one volume (picklable)."""

    case: str
    image: Path
    label: Path
    class_names: tuple[str, ...]
    output: SliceOutput


# --------------------------------------------------------------------------- the layout


def _holds_layout(folder: Path) -> bool:
    return (folder / DATASET_JSON).is_file() or any((folder / a).is_dir() and (folder / b).is_dir()
                                                     for a, b in LAYOUTS)


def find_nifti_root(raw_dir: Path) -> Path:
    """``raw_dir`` when it holds dataset.json, imagesTr/ + labelsTr/ or images/ + labels/, else the one folder
    directly below it that does."""
    if _holds_layout(raw_dir):
        return raw_dir
    found = sorted(p for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and _holds_layout(p))
    if len(found) == 1:
        return found[0]
    what = (f"several do ({', '.join(p.name for p in found)}); point [prepare] raw_dir at one" if found
            else "no folder there or directly below holds them")
    raise DataError(f"{raw_dir}: expected nnU-Net's raw layout (dataset.json, imagesTr/, labelsTr/) or images/ + "
                    f"labels/ of NIfTI volumes for [prepare] source = \"nifti\"; {what}")


def read_dataset_json(path: Path) -> dict[str, Any]:
    """nnU-Net's dataset.json, checked: one channel, labels as {name: index} (v2) or {"index": name} (v1)
    with indices 0..K-1, a NIfTI file_ending.  Returns {"names": background first, "channel": name,
    "file_ending": ...}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        labels = doc["labels"]
        if not isinstance(labels, dict) or not labels:
            raise ValueError("labels is not a non-empty object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a usable nnU-Net dataset.json ({exc}); expected a JSON object with "
                        f"\"labels\": {{\"background\": 0, ...}}") from None
    by_index: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            by_index[value] = str(key)                       # v2: {"background": 0, "lesion": 1}
        elif isinstance(value, str) and str(key).isdigit():
            by_index[int(key)] = value                       # v1: {"0": "background", "1": "lesion"}
        else:
            raise DataError(f"{path}: label {key!r}: {value!r}; expected one class index per name (region-based "
                            f"labels, lists of indices, are not classes FlexUNet can train)")
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{path}: label indices {sorted(by_index)}; expected 0..{len(by_index) - 1}, "
                        f"0 the background")
    channels = doc.get("channel_names") or doc.get("modality") or {"0": "CT"}
    if len(channels) != 1:
        raise DataError(f"{path}: {len(channels)} channels ({', '.join(map(str, channels.values()))}); expected "
                        f"one CT channel — FlexUNet prepares one HU volume per case, windowed as [prepare] says")
    ending = str(doc.get("file_ending", ".nii.gz"))
    if ending.lower() not in (".nii.gz", ".nii"):
        raise DataError(f"{path}: file_ending {ending}; expected .nii.gz or .nii (FlexUNet reads NIfTI volumes)")
    return {"names": tuple(by_index[i] for i in range(len(by_index))), "channel": str(next(iter(channels.values()))),
            "file_ending": ending}


def _by_case(files: Sequence[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        case = case_name(p)
        if case in out:
            raise DataError(f"{p}: same case as {out[case].name} in {folder}; expected one volume per case "
                            f"(one CT channel) — remove or rename one")
        out[case] = p
    return out


def find_layout(raw_dir: Path) -> NiftiLayout:
    """The cases under ``raw_dir``: labelled pairs, unpaired files and the unlabelled imagesTs/."""
    root = find_nifti_root(raw_dir)
    meta = read_dataset_json(root / DATASET_JSON) if (root / DATASET_JSON).is_file() else None
    if meta is not None and meta["channel"].upper() != "CT":
        log.warning("%s: channel 0 is %r, not CT; [prepare] windows its values as if they were HU",
                    root / DATASET_JSON, meta["channel"])
    image_name, label_name = next(((a, b) for a, b in LAYOUTS if (root / a).is_dir() and (root / b).is_dir()),
                                  LAYOUTS[0])
    if not (root / image_name).is_dir() or not (root / label_name).is_dir():
        raise DataError(f"{root}: no {image_name}/ and {label_name}/ folders; expected nnU-Net's raw layout "
                        f"(imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz)")
    images = _by_case(list_nifti(root / image_name), root / image_name)
    labels = {nifti_stem(p): p for p in list_nifti(root / label_name)}
    unlabelled = list_nifti(root / UNLABELLED) if (root / UNLABELLED).is_dir() else []
    return NiftiLayout(root, "nnU-Net" if meta is not None else "pairs",
                       [(c, images[c], labels[c]) for c in sorted(set(images) & set(labels))],
                       [images[c] for c in sorted(set(images) - set(labels))],
                       [labels[c] for c in sorted(set(labels) - set(images))], unlabelled,
                       meta["names"] if meta is not None else None, label_name)


def given_class_names(cfg: Config, given: Sequence[str]) -> tuple[str, ...]:
    """``--classes`` as class names, background first (it may be left out); [model] num_classes of them."""
    n = cfg.model.num_classes
    names = tuple(s.strip() for s in given if s.strip())
    names = ("background", *names) if len(names) == n - 1 else names
    clash = class_name_clash(names)
    if len(names) != n or clash:
        raise DataError(f"--classes {','.join(given)}: expected {n - 1} distinct foreground names (background "
                        f"optional) for [model] num_classes = {n}{f'; {clash}' if clash else ''}")
    return names


def nifti_class_names(cfg: Config, layout: NiftiLayout, given: Sequence[str] | None) -> tuple[str, ...]:
    """The class names, background first: ``given`` (--classes), else [dataset] class_names, else
    dataset.json's labels, else the config's defaults; dataset.json must hold [model] num_classes labels."""
    n = cfg.model.num_classes
    from_json = layout.label_names
    if from_json is not None and len(from_json) != n:
        raise DataError(f"{layout.root / DATASET_JSON}: {len(from_json)} labels ({', '.join(from_json)}) but "
                        f"[model] num_classes = {n}; expected the same number of classes")
    if given:
        return given_class_names(cfg, given)
    if cfg.dataset.class_names is not None or from_json is None:
        return cfg.class_names
    return tuple(from_json)


# --------------------------------------------------------------------------- one volume


def process_volume(job: VolumeJob) -> list[dict[str, Any]]:
    """Read, check, slice, window and write one volume; its manifest rows (one per axial slice)."""
    image = read_volume(job.image)
    labels = read_labels(job.label, image, job.class_names)
    hu, index = axial_slices(image.data), axial_slices(labels.data)
    rows = []
    for k in range(len(hu)):
        slice_id = f"{job.case}_{k:04d}"
        written = job.output.write(slice_id, job.output.window(hu[k]), index[k])
        rows.append({
            "id": slice_id, **written, "source_image": str(job.image), "source_mask": str(job.label),
            "group": job.case, "group_kind": "patient", "patient_id": job.case, "series_uid": job.image.name,
            "instance_number": k + 1, "slice_position": image.slice_position(k),
            "slice_thickness": image.zooms[2], "volume": job.case, "slice_index": k,
            "volume_shape": list(image.data.shape),
            "pixel_spacing": list(scaled_spacing(image.pixel_spacing, index[k].shape, job.output.size)),
            "unmapped_pixels": 0, "_notes": [], "_unmapped": {},
        })
    return rows


def volume_jobs(cfg: Config, layout: NiftiLayout, class_names: tuple[str, ...], out_dir: Path) -> list[VolumeJob]:
    output = SliceOutput.of(cfg, out_dir)
    return [VolumeJob(case, image, label, class_names, output) for case, image, label in layout.pairs]
