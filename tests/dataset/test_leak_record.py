"""flexunet.dataset.leak_record: the leak guard finds test images a model trained on, by bytes or by pixels.

The cases run evaluate and report through the CLI on a private copy of conftest's synth_run
(synth -> prepare -> split -> train, 32 px, one epoch) and check the refusal, what is counted with
--allow-overlap, and that different slices never collide.
"""

from __future__ import annotations

import json
import shutil

from PIL import Image

from conftest import run_command
from flexunet.dataset.leak_record import find_overlaps, fingerprint


def test_a_resplit_with_another_seed_is_detected(synth_project, capsys):
    root = synth_project.parent
    assert run_command(synth_project, "split", "--overwrite", "--set", "train.seed=8") == 0
    trained_on = {p.name for s in ("train", "valid") for p in (root / "dataset/D" / s / "images").iterdir()}
    record = json.loads((root / "models/data_record.json").read_text())
    recorded = {e["name"] for entries in record["subsets"].values() for e in entries}
    now_test = {p.name for p in (root / "dataset/D/test/images").iterdir()}
    leaked = now_test & recorded
    assert leaked, "the re-split should move some trained-on images into test"
    capsys.readouterr()
    assert run_command(synth_project, "evaluate") == 2
    err = capsys.readouterr().err
    assert f"{len(leaked)} of {len(now_test)} test image(s) are images the model trained" in err
    assert "--allow-overlap" in err and not (root / "eval/evaluation.json").exists()
    assert trained_on  # the new split wrote its own train/valid


def test_a_copied_train_image_is_detected_and_counted_with_allow_overlap(synth_project, capsys):
    root = synth_project.parent
    source = sorted((root / "dataset/D/train/images").glob("*.png"))[0]
    shutil.copy(source, root / "dataset/D/test/images/copy.png")
    shutil.copy(root / "dataset/D/train/masks" / source.name, root / "dataset/D/test/masks/copy.png")
    assert run_command(synth_project, "evaluate") == 2
    assert f"copy.png is the same bytes as {source.name} (train)" in capsys.readouterr().err
    assert run_command(synth_project, "report") == 2   # the report refuses the same images (no evaluation yet either)
    capsys.readouterr()
    assert run_command(synth_project, "evaluate", "--allow-overlap") == 0
    assert "1 of" in capsys.readouterr().err
    leak = json.loads((root / "eval/evaluation.json").read_text())["leak_check"]
    assert leak["checked"] and leak["overlapping"] == 1 and leak["allowed"]
    assert run_command(synth_project, "report") == 2
    assert run_command(synth_project, "report", "--allow-overlap") == 0
    assert "1 test image(s) are images the model trained" in (root / "report/report.html").read_text()


def test_a_resaved_copy_is_detected_by_its_pixels(synth_project, capsys):
    root = synth_project.parent
    source = sorted((root / "dataset/D/valid/images").glob("*.png"))[0]
    image = Image.open(source)
    image.save(root / "dataset/D/test/images/resaved.png", compress_level=0)   # other bytes, same pixels
    shutil.copy(root / "dataset/D/valid/masks" / source.name, root / "dataset/D/test/masks/resaved.png")
    assert (root / "dataset/D/test/images/resaved.png").read_bytes() != source.read_bytes()
    assert run_command(synth_project, "evaluate") == 2
    assert f"resaved.png is the same pixels as {source.name} (valid)" in capsys.readouterr().err


def test_different_synthetic_slices_never_collide_and_light_jpeg_copies_do(synth_run, tmp_path):
    slices = sorted(next((synth_run / "raw").rglob("PNG")).glob("*.png"))
    assert len(slices) == 30
    for i, path in enumerate(slices):   # each slice against all the others
        others = [{**fingerprint(p), "subset": "train"} for p in slices if p != path]
        assert find_overlaps([path], others) == [], path.name
    jpeg = tmp_path / "copy.jpg"
    Image.open(slices[3]).convert("RGB").save(jpeg, quality=95)
    record = [{**fingerprint(p), "subset": "train"} for p in slices]
    found = find_overlaps([jpeg], record)
    assert len(found) == 1 and found[0]["match"] == slices[3].name and "near-duplicate" in found[0]["how"]


def test_a_run_without_a_record_warns_once(synth_project, capsys):
    (synth_project.parent / "models/data_record.json").unlink()
    assert run_command(synth_project, "evaluate") == 0
    err = capsys.readouterr().err
    assert err.count("could not check the test images") == 1
