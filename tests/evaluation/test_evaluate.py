"""flexunet evaluate: the original's evaluation.csv byte for byte, and a per-class report on a known case.

The known case uses a "colour model": a 1x1 convolution whose softmax picks class 1 where
the image is green and class 2 where it is blue, so every prediction - and so every
figure - follows from how the test images are painted.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import (BLUE, GREEN, cli, colour_model, disk_full_on, inputs_snapshot, leftovers, make_cfg,
                      one_error, pipeline_run_copy, run_command, snapshot)
from flexunet.utils.errors import FlexUNetError
from flexunet.evaluation.evaluate import KerasMean, evaluate_model, pixel_spacings, seed_evaluation_text
from flexunet.model.metrics import hd95, surface_dice

GREY = (60, 60, 60)
SIZE = 32

CLASSES = ("background", "ischemic", "hemorrhagic")


def evaluate_cfg(root: Path):
    return make_cfg(root, dataset={"class_names": CLASSES}, train={"model_dir": "models", "eval_dir": "eval"},
                    test={"images_dir": "data/Stroke/test/images", "masks_dir": "data/Stroke/test/masks"},
                    eval={"batch_size": 2})


def box(y0: int, y1: int, x0: int, x1: int) -> tuple[slice, slice]:
    return slice(y0, y1), slice(x0, x1)


def write_case(root: Path, name: str, mask_boxes: dict, paint_boxes: dict) -> None:
    """An image (grey, painted boxes) and its colour mask (black, mask boxes); boxes per colour."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8) + np.array(GREY, np.uint8)
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    for colour, boxes in paint_boxes.items():
        for b in boxes:
            image[b] = colour
    for colour, boxes in mask_boxes.items():
        for b in boxes:
            mask[b] = colour
    Image.fromarray(image).save(root / "images" / name)
    Image.fromarray(mask).save(root / "masks" / name)


@pytest.fixture
def known_case(tmp_path: Path):
    test = tmp_path / "data" / "Stroke" / "test"
    (test / "images").mkdir(parents=True)
    (test / "masks").mkdir(parents=True)
    write_case(test, "a.png", {GREEN: [box(4, 12, 4, 12)]}, {GREEN: [box(4, 12, 4, 12)]})        # perfect
    write_case(test, "b.png", {BLUE: [box(10, 16, 10, 16)], GREEN: [box(20, 24, 20, 24)]},
               {BLUE: [box(10, 16, 10, 16)]})                                                    # ischemic missed
    write_case(test, "c.png", {}, {GREEN: [box(2, 5, 2, 5)]})                                    # false alarm
    write_case(test, "d.png", {}, {})                                                            # both empty
    write_case(test, "e.png", {GREEN: [box(0, 8, 0, 8)]}, {GREEN: [box(0, 8, 0, 4)]})            # half found
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    colour_model().save(model_dir / "best_model.keras")
    cfg = evaluate_cfg(tmp_path)
    return cfg, tmp_path


def test_seed_evaluation_text_is_the_original_format():
    # the original writes  loss + "," + str(round(x, 4)) + "\n"  then the metric line, no header
    assert seed_evaluation_text("categorical_crossentropy", 0.0049123, 0.99738) == \
        "categorical_crossentropy,0.0049\ndice_coef_multiclass,0.9974\n"
    assert seed_evaluation_text("dice", 0.5, 0.25) == "dice,0.5\ndice_coef_multiclass,0.25\n"


def test_keras_mean_weighting():
    m = KerasMean()
    m.add(np.array([1.0, 1.0]), weight=2)
    m.add(np.array([4.0]), weight=1)
    assert m.value == pytest.approx(2.0)          # losses: weighted by batch size
    d = KerasMean()
    d.add(np.float32(1.0))
    d.add(np.float32(4.0))
    assert d.value == pytest.approx(2.5)          # a scalar per batch counts once


def test_evaluate_known_case(known_case):
    cfg, root = known_case
    result = evaluate_model(cfg, progress=False)

    # 1. evaluation.csv: byte for byte what keras.Model.evaluate gives, in the original's format
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs
    from flexunet.model.losses import dice_coef_multiclass, make_loss

    model = keras.models.load_model(root / "models" / "best_model.keras", compile=False)
    model.compile(loss=make_loss(cfg), metrics=[dice_coef_multiclass])
    keras_result = model.evaluate(make_dataset(cfg, subset_pairs(cfg, "test"), training=False, batch_size=2),
                                  return_dict=True, verbose=0)
    assert result["loss"] == pytest.approx(keras_result["loss"], rel=1e-5)
    assert result["dice_coef_multiclass"] == pytest.approx(keras_result["dice_coef_multiclass"], rel=1e-5)
    expected = (f"categorical_crossentropy,{round(keras_result['loss'], 4)}\n"
                f"dice_coef_multiclass,{round(keras_result['dice_coef_multiclass'], 4)}\n").encode()
    csv_path = root / "evaluation.csv"                # default: beside the config
    assert result["evaluation_csv"] == csv_path
    assert csv_path.read_bytes() == expected

    # 2. per-class figures, by hand
    report = json.loads((root / "eval" / "evaluation.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    isch, hem = report["classes"]["ischemic"], report["classes"]["hemorrhagic"]
    # per image Dice: a 1, b 0 (missed), c 0 (false alarm), d empty (NaN, excluded), e 2*32/(64+32)
    assert isch["per_image"]["dice"]["mean"] == pytest.approx((1 + 0 + 0 + 2 / 3) / 4)
    assert isch["per_image"]["dice"]["n_valid"] == 4 and isch["n_empty"] == 1
    assert isch["per_image"]["recall"]["mean"] == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    # whole set from summed counts: tp 64+32, fp 9 (c), fn 16 (b) + 32 (e)
    assert isch["whole_set"]["tp"] == 96 and isch["whole_set"]["fp"] == 9 and isch["whole_set"]["fn"] == 48
    assert isch["whole_set"]["dice"] == pytest.approx(192 / 249)
    assert hem["per_image"]["dice"] == {"mean": 1.0, "median": 1.0, "std": 0.0, "n_valid": 1}
    assert hem["n_empty"] == 4
    # false-positive rate on slices without the class: ischemic absent from c and d, predicted on c
    assert isch["false_positive_slices"]["slices_without_class"] == 2
    assert isch["false_positive_slices"]["rate"] == 0.5
    assert hem["false_positive_slices"]["rate"] == 0.0
    # lesions: reference a, b, e (3); detected a, e; predicted a, c, e; matched a, e
    assert isch["lesions"] == {"ref_lesions": 3, "detected": 2, "pred_components": 3, "pred_matched": 2,
                               "recall": pytest.approx(2 / 3), "precision": pytest.approx(2 / 3),
                               "f1": pytest.approx(2 / 3)}
    # HD95: a 0, e as the metric computes it; b and c undefined (one mask empty)
    ref_e = np.zeros((SIZE, SIZE), bool)
    ref_e[0:8, 0:8] = True
    pred_e = np.zeros((SIZE, SIZE), bool)
    pred_e[0:8, 0:4] = True
    assert isch["per_image"]["hd95_px"]["n_valid"] == 2
    assert isch["per_image"]["hd95_px"]["mean"] == pytest.approx(hd95(ref_e, pred_e) / 2)
    assert isch["per_image"]["hd95_mm"]["n_valid"] == 0      # no spacing known
    # NSD at 1 px: a 1, b 0 (missed), c 0 (false alarm), d empty (excluded), e as the metric computes it
    assert isch["per_image"]["nsd"]["mean"] == pytest.approx((1 + 0 + 0 + surface_dice(ref_e, pred_e)) / 4)
    assert 0 < surface_dice(ref_e, pred_e) < 1 and report["nsd_definition"].startswith("normalised surface Dice")
    assert report["num_images"] == 5 and report["empty_rule"].startswith("Dice/IoU")
    # how sure: the whole-set Dice's bootstrap interval over the 5 slices (no manifest names patients)
    lo, hi = isch["dice_ci95"]
    assert lo <= isch["whole_set"]["dice"] <= hi and lo < hi
    assert (isch["ci_unit"], isch["ci_units"], isch["ci_units_with_class"]) == ("slices", 5, 3)   # a, b, e
    assert hem["ci_units_with_class"] == 1 and "only 5 slices" in hem["ci_note"]
    assert report["interval_definition"].startswith("95% percentile bootstrap")
    assert report["seed_metrics"]["dice_coef_multiclass"] == pytest.approx(result["dice_coef_multiclass"])
    assert report["model"].endswith("best_model.keras")
    cm = np.array(report["confusion_matrix"]["counts"])
    assert cm.sum() == 5 * SIZE * SIZE and cm[1, 1] == 96 and cm[0, 1] == 9 and cm[1, 0] == 48

    # 3. per_image.csv: one row per image and foreground class; confusion matrix files
    with open(root / "eval" / "per_image.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 2
    by_key = {(r["image"], r["class"]): r for r in rows}
    assert float(by_key[("e.png", "ischemic")]["dice"]) == pytest.approx(2 / 3, abs=1e-6)
    assert by_key[("d.png", "ischemic")]["dice"] == ""          # NaN: both empty
    assert by_key[("c.png", "ischemic")]["fp"] == "9"
    assert float(by_key[("e.png", "ischemic")]["nsd"]) == pytest.approx(surface_dice(ref_e, pred_e), abs=1e-6)
    lines = (root / "eval" / "confusion_matrix.csv").read_text().splitlines()
    assert lines[0] == "reference \\ prediction,background,ischemic,hemorrhagic"
    assert lines[2].split(",")[:3] == ["ischemic", "48", "96"]
    assert (root / "eval" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["classes"]["ischemic"]["dice"] == pytest.approx(isch["per_image"]["dice"]["mean"])


def test_hd95_in_mm_and_patients_from_the_prepare_manifest(known_case, caplog):
    cfg, root = known_case
    master = root / "master"
    master.mkdir()
    patients = {"a": "p1", "b": "p1", "c": "p2", "d": "p2", "e": "p2"}
    spacing = {"a": [0.5, 0.5], "e": [0.7, 0.7], "b": None}
    (master / "manifest.json").write_text(json.dumps({"items": [
        {"id": i, "group": p, "group_kind": "patient", **({"pixel_spacing": spacing[i]} if i in spacing else {})}
        for i, p in patients.items()]}))
    (root / "data" / "Stroke" / "split.json").write_text(json.dumps({"master_dir": str(master)}))
    with caplog.at_level("INFO", logger="flexunet.evaluation.evaluate"):
        result = evaluate_model(cfg, progress=False)
    report = result["report"]
    isch = report["classes"]["ischemic"]        # the interval resamples the manifest's 2 patients whole
    assert (isch["ci_unit"], isch["ci_units"], isch["ci_units_with_class"]) == ("patients", 2, 2)
    said = [r.getMessage() for r in caplog.records if "whole-set Dice" in r.getMessage()]
    lo, hi = isch["dice_ci95"]
    assert said[0].split() == ["ischemic", "whole-set", "Dice", f"{isch['whole_set']['dice']:.3f}", f"[{lo:.3f},",
                               f"{hi:.3f}]", "over", "2", "patients"]
    assert report["images_with_spacing"] == 2
    assert report["pixel_spacing_source"] == str(master / "manifest.json")
    with open(root / "eval" / "per_image.csv", newline="") as fh:
        rows = {(r["image"], r["class"]): r for r in csv.DictReader(fh)}
    e = rows[("e.png", "ischemic")]
    assert float(e["hd95_mm"]) == pytest.approx(float(e["hd95_px"]) * 0.7, abs=1e-5)
    assert rows[("a.png", "ischemic")]["hd95_mm"] == "0.000000"
    assert rows[("b.png", "hemorrhagic")]["hd95_mm"] == ""      # b has no spacing


def test_pixel_spacing_scales_to_the_model_input(tmp_path):
    cfg = evaluate_cfg(tmp_path)                          # model input 32 x 32
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 128)).save(tmp_path / "images" / "x.png")   # 128 rows, 64 columns
    (tmp_path / "manifest.json").write_text(json.dumps({"items": [{"id": "x", "pixel_spacing": [0.4, 0.5]}]}))
    spacing, source = pixel_spacings(cfg, [tmp_path / "images" / "x.png"])
    assert source == tmp_path / "manifest.json"
    assert spacing["x.png"] == pytest.approx((0.4 * 128 / 32, 0.5 * 64 / 32))


def test_missing_model_is_a_clear_error(known_case):
    cfg, root = known_case
    (root / "models" / "best_model.keras").unlink()
    with pytest.raises(FlexUNetError, match="best_model.keras"):
        evaluate_model(cfg, progress=False)
    assert not (root / "evaluation.csv").exists()


def test_volumes_calibration_and_uncertainty_in_the_report(known_case):
    cfg, root = known_case
    (root / "data" / "Stroke" / "test" / "manifest.json").write_text(json.dumps({"items": [
        {"id": "a", "pixel_spacing": [0.5, 0.5], "patient_id": "P1", "series_uid": "S1", "slice_position": 0.0},
        {"id": "b", "pixel_spacing": [0.5, 0.5], "patient_id": "P1", "series_uid": "S1", "slice_position": 5.0},
        {"id": "e", "pixel_spacing": [0.5, 0.5], "patient_id": "P1", "series_uid": "S1", "slice_position": 10.0},
        {"id": "c", "pixel_spacing": [0.5, 0.5], "patient_id": "P2", "series_uid": "S2"},    # no spacing known
        {"id": "d", "pixel_spacing": [0.5, 0.5], "patient_id": "P2", "series_uid": "S2"}]}))
    report = evaluate_model(cfg, progress=False)["report"]
    rows = {r["class"]: r for r in report["volumes"]["per_patient"]}
    voxel = 0.5 * 0.5 * 5.0 / 1000
    # ischemic: reference 64 + 16 + 64 pixels, predicted 64 + 0 + 32; hemorrhagic 36 and 36 (slice b)
    assert rows["ischemic"]["reference_ml"] == pytest.approx(144 * voxel)
    assert rows["ischemic"]["predicted_ml"] == pytest.approx(96 * voxel)
    assert rows["ischemic"]["rel_error"] == pytest.approx(48 / 144)
    assert rows["hemorrhagic"]["abs_error_ml"] == pytest.approx(0.0)
    assert {r["patient"] for r in rows.values()} == {"P1"}
    assert len(report["volumes"]["skipped"]) == 1 and "P2" in report["volumes"]["skipped"][0]
    eces = {n: c["ece"] for n, c in report["calibration"]["classes"].items()}
    assert set(eces) == {"background", "ischemic", "hemorrhagic"} and all(0 <= v <= 1 for v in eces.values())
    assert report["uncertainty"]["n"] == 4                  # d has no foreground in either mask
    assert -1 <= report["uncertainty"]["spearman_score_vs_dice"] <= 1
    assert (root / "eval" / "reliability.png").stat().st_size > 0
    assert (root / "eval" / "bland_altman.png").stat().st_size > 0


# --------------------------------------------------------------------------- through the command line: never half


def test_evaluate_refuses_an_eval_dir_inside_the_run_folder(synth_project, capsys):
    before = inputs_snapshot(synth_project)
    code = run_command(synth_project, "evaluate", "--set", f"eval.eval_dir='{synth_project.parent / 'models' / 'ev'}'")
    err = capsys.readouterr().err
    assert code == 2 and "[eval] eval_dir" in err and "is inside the input folder" in err
    assert inputs_snapshot(synth_project) == before


def test_two_images_of_one_stem_are_refused_by_evaluate_naming_both(synth_project, capsys):
    images = synth_project.parent / "dataset/D/test/images"
    first = sorted(images.glob("*.png"))[0]
    Image.open(first).save(images / f"{first.stem}.bmp")
    before = inputs_snapshot(synth_project)
    assert run_command(synth_project, "evaluate") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.bmp" in err and f"{first.stem}.png" in err and "one image per name" in err
    assert inputs_snapshot(synth_project) == before


def test_a_crash_during_evaluate_keeps_the_previous_report(tmp_path, capsys, pipeline, monkeypatch):
    config = pipeline_run_copy(pipeline, tmp_path)
    report = (tmp_path / "eval" / "evaluation.json").read_text()
    disk_full_on(monkeypatch, lambda p: p.name == "evaluation.json")
    line = one_error(capsys, "evaluate", str(config), rc=1)
    assert "evaluation.json" in line and "No space left on device" in line
    assert (tmp_path / "eval" / "evaluation.json").read_text() == report and not leftovers(tmp_path)


def _mark_previous(root: Path) -> dict[str, str]:
    """Put recognisable previous results in place (a rerun would otherwise write the same bytes)."""
    (root / "evaluation.csv").write_text("previous\n")
    (root / "eval" / "per_image.csv").write_text("previous\n")
    return _results(root)


def _results(root: Path) -> dict[str, str]:
    return {**snapshot(root / "eval"), "evaluation.csv": snapshot(root)["evaluation.csv"]}


def test_evaluate_on_an_unwritable_eval_dir_keeps_evaluation_csv(tiny_project, capsys, monkeypatch):
    root = tiny_project.parent
    before = _mark_previous(root)
    real = tempfile.mkstemp
    eval_dir = root / "eval"

    def no_write_access(*args, **kwargs):  # the tests run as root, where chmod cannot take write access away
        if Path(kwargs.get("dir", "")) == eval_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(eval_dir / "x.tmp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_write_access)
    line = one_error(capsys, "evaluate", str(tiny_project), rc=1)
    assert line == (f"flexunet evaluate: error: {eval_dir / 'evaluation.json'}: Permission denied; previous results "
                    f"were left as they were")
    assert _results(root) == before and not leftovers(root)


@pytest.mark.parametrize("full", ["evaluation.csv", "evaluation.json", "bland_altman.png"])
def test_a_full_disk_during_evaluate_leaves_every_previous_result(tiny_project, capsys, monkeypatch, full):
    root = tiny_project.parent
    before = _mark_previous(root)
    hit = disk_full_on(monkeypatch, lambda p: p.name == full)
    line = one_error(capsys, "evaluate", str(tiny_project), rc=1)
    assert hit and line.endswith(f"{hit[0]}: No space left on device; previous results were left as they were")
    assert _results(root) == before and not leftovers(root)


def test_evaluate_then_replaces_both_together(tiny_project, capsys):
    root = tiny_project.parent
    before = _mark_previous(root)
    assert cli(capsys, "evaluate", str(tiny_project))[0] == 0
    now = _results(root)
    assert now["evaluation.csv"] != before["evaluation.csv"] and now["per_image.csv"] != before["per_image.csv"]
    assert (root / "evaluation.csv").read_text().startswith("ce_dice,")


def test_evaluate_scores_what_infer_writes_flips_and_small_components(known_case):
    cfg, root = known_case
    cfg = cfg.replace("infer", flip_tta=True, min_component_size=10)   # c.png's false alarm: 9 px
    report = evaluate_model(cfg, progress=False)["report"]
    isch = report["classes"]["ischemic"]["whole_set"]
    assert (isch["tp"], isch["fp"], isch["fn"]) == (96, 0, 48)       # the 3x3 false alarm is gone, as infer drops it
    assert report["prediction"] == {"flip_tta_axes": [2, 1], "foreground_weight": 1.0, "min_component_size": [10, 10, 10],
                                    "min_component_size_from": "[infer] min_component_size"}


def test_the_lesion_classes_lower_bar_is_scored_as_infer_writes_it(known_case):
    """[infer] foreground_weight = 3: a pixel the net gives p(ischemic) = 0.47 p(background) is ischemic for
    evaluate and for infer alike; pixels it is sure of do not move; evaluation.json records the weight."""
    from flexunet.inference.infer import infer_images

    cfg, root = known_case
    test = root / "data" / "Stroke" / "test"
    write_case(test, "f.png", {GREEN: [box(8, 16, 8, 16)]}, {(0, 120, 0): [box(8, 16, 8, 16)]})   # logits 12.75, 12.0
    plain = evaluate_model(cfg, progress=False)["report"]
    weighted_cfg = cfg.replace("infer", foreground_weight=3.0, images_dir=test / "images", output_dir=root / "out")
    weighted = evaluate_model(weighted_cfg, progress=False, overwrite=True)["report"]
    p, w = plain["classes"]["ischemic"]["whole_set"], weighted["classes"]["ischemic"]["whole_set"]
    assert (w["tp"], w["fp"], w["fn"]) == (p["tp"] + 64, p["fp"], p["fn"] - 64)
    assert weighted["classes"]["hemorrhagic"]["whole_set"] == plain["classes"]["hemorrhagic"]["whole_set"]
    assert (plain["prediction"]["foreground_weight"], weighted["prediction"]["foreground_weight"]) == (1.0, 3.0)
    infer_images(weighted_cfg, progress=False)
    written = np.asarray(Image.open(root / "out" / "f.png"))            # 'P' mode: pixel = class index
    assert (written[8:16, 8:16] == 1).all() and written.sum() == 64


def test_evaluate_removes_the_components_the_run_chose_on_its_validation_set(known_case):
    """[infer] min_component_size = "auto" (the default): the sizes in the run's postprocess.json, per class."""
    from flexunet.model.postprocess import write_record

    cfg, root = known_case
    assert cfg.infer.min_component_size == "auto"
    before = evaluate_model(cfg, progress=False, overwrite=True)["report"]     # no record: every component kept
    assert before["classes"]["ischemic"]["whole_set"]["fp"] == 9 and before["prediction"]["min_component_size"] == [0, 0, 0]
    write_record(cfg.train.model_dir, {"min_component_size": [0, 10, 0]})      # ischemic specks under 10 px go
    report = evaluate_model(cfg, progress=False, overwrite=True)["report"]
    isch, haem = report["classes"]["ischemic"]["whole_set"], report["classes"]["hemorrhagic"]["whole_set"]
    assert (isch["tp"], isch["fp"]) == (before["classes"]["ischemic"]["whole_set"]["tp"], 0)
    assert haem == before["classes"]["hemorrhagic"]["whole_set"]
    assert report["prediction"]["min_component_size"] == [0, 10, 0]
    assert report["prediction"]["min_component_size_from"] == "postprocess.json"
