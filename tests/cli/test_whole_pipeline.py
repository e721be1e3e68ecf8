"""The whole pipeline through the command line: raw -> prepare -> split -> augment -> train -> evaluate -> infer.

conftest's ``pipeline`` runs each command in-process on a tiny raw set (grey, RGBA and 16-bit slices among
RGB ones) and hashes every command's inputs before and after it; what each command does is tested with its
module, what the chain shows is tested here.
"""

from __future__ import annotations

import pytest

from conftest import leftovers


def test_pipeline_commands_succeed(pipeline):
    assert pipeline["rc"] == {"prepare": 0, "split": 0, "augment": 0, "train": 0, "evaluate": 0, "infer": 0}
    root = pipeline["root"]
    assert (root / "models" / "best_model.keras").is_file() and (root / "eval" / "evaluation.json").is_file()
    assert len(list((root / "out").glob("*.png"))) == 2
    assert not leftovers(root)


@pytest.mark.parametrize("command", ["prepare", "split", "train", "evaluate", "infer"])
def test_inputs_are_never_modified(pipeline, command):
    before, after = pipeline["same"][command]
    assert before and after == before
    assert pipeline["raw"][0] == pipeline["raw"][1] and pipeline["config_same"]


@pytest.mark.slow
def test_nifti_volumes_through_the_whole_pipeline(tmp_path, capsys):
    """synth --format nifti -> prepare -> split -> train (1 epoch) -> evaluate -> infer on imagesTs/: label volumes
    nibabel opens with their input's shape and affine, volumes.csv per case, per-volume scores."""
    import csv
    import json

    import nibabel as nib
    import numpy as np

    from conftest import NIFTI_SECTIONS, cli, config_text, snapshot

    raw = tmp_path / "raw"
    assert cli(capsys, "synth", str(raw), "--format", "nifti", "--count", "30", "--size", "64", "--seed", "3")[0] == 0
    images_ts = raw / "Dataset001_SynthStroke" / "imagesTs"
    data = "./dataset/N"
    config = tmp_path / "n.config"
    config.write_text(config_text(
        model={"learning_rate": 0.01, "loss": "ce_dice"},
        dataset={"class_names": ["background", "ischemic", "hemorrhagic"]},
        train={"epochs": 1, "batch_size": 4, "model_dir": "./models", "eval_dir": "./eval", "tensorboard": False,
               "jit_compile": False,
               "images_dir": f"{data}/train/images", "masks_dir": f"{data}/train/masks", "seed": 7},
        valid={"images_dir": f"{data}/valid/images", "masks_dir": f"{data}/valid/masks"},
        test={"images_dir": f"{data}/test/images", "masks_dir": f"{data}/test/masks"},
        infer={"images_dir": str(images_ts), "output_dir": "./pred", "uncertainty": True},
        **{**NIFTI_SECTIONS, "prepare": {**NIFTI_SECTIONS["prepare"], "window_center": 40.0, "window_width": 80.0}}))
    before = snapshot(raw)
    for command in ("prepare", "split", "train", "evaluate", "infer"):
        rc, _, err = cli(capsys, command, str(config))
        assert rc == 0, f"{command}: {err}"
    assert snapshot(raw) == before
    synth = json.loads((raw / "Dataset001_SynthStroke" / "synth.json").read_text())
    assert synth["test"]
    for case in synth["test"]:
        source = nib.load(images_ts / f"{case}_0000.nii.gz")
        for written in (nib.load(tmp_path / "pred" / f"{case}.nii.gz"),
                        nib.load(tmp_path / "pred" / "uncertainty" / f"{case}.nii.gz")):
            assert written.shape == source.shape and np.array_equal(written.affine, source.affine)
        assert set(np.unique(np.asanyarray(nib.load(tmp_path / "pred" / f"{case}.nii.gz").dataobj))) <= {0, 1, 2}
    with open(tmp_path / "pred" / "volumes.csv", newline="") as fh:
        assert {r["patient"] for r in csv.DictReader(fh)} == set(synth["test"])
    split = json.loads((tmp_path / "dataset" / "N" / "split.json").read_text())
    with open(tmp_path / "eval" / "per_volume.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["patient"] for r in rows} == set(split["subsets"]["test"]["groups"])
    assert {r["class"] for r in rows} == {"ischemic", "hemorrhagic"}
