"""Issue 19: no command loses a user's files or scores on leaked or mismatched data.

One small project for the module (synth -> prepare -> split -> train, 32 px, one epoch);
each test reproduces one case of the issue through the CLI and checks the refusal line,
the exit status, and that every input folder is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexunet.cli.main import main

CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
num_layers = 3
base_kernels = (3,3)
dropout_rate = 0.0
learning_rate = 0.01
loss = "ce_dice"

[dataset]
class_names = ["background", "ischemic", "hemorrhagic"]

[train]
epochs = 1
batch_size = 4
model_dir = "./models"
eval_dir = "./eval"
images_dir = "./dataset/D/train/images"
masks_dir = "./dataset/D/train/masks"
seed = 7

[valid]
images_dir = "./dataset/D/valid/images"
masks_dir = "./dataset/D/valid/masks"

[test]
images_dir = "./dataset/D/test/images"
masks_dir = "./dataset/D/test/masks"

[infer]
images_dir = "./dataset/D/mini_test/images"
output_dir = "./out"

[report]
output_dir = "./report"
gallery_per_rank = 1

[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}

[prepare]
raw_dir = "./raw"
output_dir = "./master"
size = 32
workers = 1

[split]
output_dir = "./dataset"
name = "D"
ratios = (0.6, 0.2, 0.2)
mini_test_count = 2
"""


def run(config: Path, *args: str) -> int:
    return main(["-q", args[0], str(config), *args[1:]])


def tree_hash(*folders: Path) -> dict[str, str]:
    """sha256 of every file below the folders (hidden files included)."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(Path(f).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A project trained once: raw/ (synth), master/, dataset/D/, models/, eval/."""
    root = tmp_path_factory.mktemp("safety")
    config = root / "train_eval_infer.config"
    config.write_text(CONFIG)
    assert main(["-q", "synth", str(root / "raw"), "--count", "30", "--size", "64"]) == 0
    assert run(config, "prepare") == 0
    assert run(config, "split") == 0
    assert run(config, "train") == 0
    return root


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A private copy of the trained project (tests change it); returns its config."""
    root = tmp_path / "p"
    shutil.copytree(trained, root, symlinks=True)
    return root / "train_eval_infer.config"


def inputs_of(config: Path) -> list[Path]:
    root = config.parent
    return [root / "raw", root / "master", root / "dataset", root / "models"]


# --------------------------------------------------------------------------- 1. infer into its inputs


def test_infer_into_its_images_folder_is_refused_and_changes_nothing(project, capsys):
    before = tree_hash(*inputs_of(project))
    images = project.parent / "dataset/D/test/images"
    code = run(project, "infer", "--set", f"infer.images_dir='{images}'", "--set", f"infer.output_dir='{images}'")
    err = capsys.readouterr().err
    assert code == 2
    assert "[infer] output_dir" in err and "is the input folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert tree_hash(*inputs_of(project)) == before


def test_infer_into_the_test_masks_is_refused_even_with_overwrite(project, capsys):
    before = tree_hash(*inputs_of(project))
    masks = project.parent / "dataset/D/test/masks"
    code = run(project, "infer", "--overwrite", "--set", f"infer.output_dir='{masks}'")
    err = capsys.readouterr().err
    assert code == 2 and str(masks) in err and "input folder" in err
    assert tree_hash(*inputs_of(project)) == before


def test_infer_keeps_a_users_files_and_reruns_into_its_own_folder(project, capsys):
    out = project.parent / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(project, "infer", "--set", f"infer.output_dir='{out}'") == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert run(project, "infer", "--overwrite", "--set", f"infer.output_dir='{out}'") == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len(list(out.glob("*.png"))) == 2
    fresh = project.parent / "fresh"
    assert run(project, "infer", "--set", f"infer.output_dir='{fresh}'") == 0
    assert run(project, "infer", "--set", f"infer.output_dir='{fresh}'") == 0   # its own folder: no flag needed


def test_evaluate_refuses_an_eval_dir_inside_the_run_folder(project, capsys):
    before = tree_hash(*inputs_of(project))
    code = run(project, "evaluate", "--set", f"eval.eval_dir='{project.parent / 'models' / 'ev'}'")
    err = capsys.readouterr().err
    assert code == 2 and "[eval] eval_dir" in err and "is inside the input folder" in err
    assert tree_hash(*inputs_of(project)) == before


def test_export_never_replaces_the_trained_model(project, capsys):
    before = tree_hash(*inputs_of(project))
    code = main(["-q", "export", str(project), "--out", str(project.parent / "models" / "best_model.keras")])
    assert code == 2 and "the run folder" in capsys.readouterr().err
    assert tree_hash(*inputs_of(project)) == before


def test_stats_refuses_a_subset_folder_and_a_users_folder(project, capsys):
    dataset = project.parent / "dataset" / "D"
    before = tree_hash(*inputs_of(project))
    assert main(["-q", "stats", str(dataset), "--out", str(dataset / "train" / "images")]) == 2
    assert "input folder" in capsys.readouterr().err
    user = project.parent / "charts"
    user.mkdir()
    (user / "class_statistics.png").write_bytes(b"the user's chart")
    assert main(["-q", "stats", str(dataset), "--out", str(user)]) == 2
    assert (user / "class_statistics.png").read_bytes() == b"the user's chart"
    assert tree_hash(*inputs_of(project)) == before


# --------------------------------------------------------------------------- 2. the report's folder


def test_report_keeps_a_users_figures_folder(project, capsys):
    assert run(project, "evaluate") == 0
    user = project.parent / "u"
    (user / "figures").mkdir(parents=True)
    (user / "figures" / "poster.png").write_bytes(b"keep me")
    assert run(project, "report", "--set", f"report.output_dir='{user}'") == 2
    assert "not written by it (figures); it never replaces a file it did not write" in capsys.readouterr().err
    assert run(project, "report", "--overwrite", "--set", f"report.output_dir='{user}'") == 2
    err = capsys.readouterr().err
    assert "(figures); it never replaces a file it did not write, with or without --overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (user / "figures" / "poster.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in user.rglob("*")) == ["figures", "poster.png"]


def test_report_into_the_project_folder_is_refused(project, capsys, monkeypatch):
    assert run(project, "evaluate") == 0
    project.write_text(project.read_text().replace('output_dir = "./report"', 'output_dir = "."'))
    monkeypatch.chdir(project.parent)
    before = tree_hash(project.parent)
    code = run(project, "report", "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and "[report] output_dir" in err and "contains the input folder" in err
    assert tree_hash(project.parent) == before


def test_report_replaces_only_its_own_figures(project):
    assert run(project, "evaluate") == 0
    assert run(project, "report") == 0
    out = project.parent / "report"
    (out / "mine.txt").write_text("mine")
    assert run(project, "report", "--overwrite") == 0   # rerun: its own figures replaced, mine.txt kept
    assert (out / "mine.txt").read_text() == "mine" and (out / "report.html").is_file()


# --------------------------------------------------------------------------- 3. one stem, one image


def test_two_images_of_one_stem_are_refused_by_evaluate_naming_both(project, capsys):
    images = project.parent / "dataset/D/test/images"
    first = sorted(images.glob("*.png"))[0]
    Image.open(first).save(images / f"{first.stem}.bmp")
    before = tree_hash(*inputs_of(project))
    assert run(project, "evaluate") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.bmp" in err and f"{first.stem}.png" in err and "one image per name" in err
    assert tree_hash(*inputs_of(project)) == before


def test_two_images_of_one_stem_are_refused_by_train(project, capsys):
    images = project.parent / "dataset/D/train/images"
    first = sorted(images.glob("*.png"))[0]
    Image.open(first).save(images / f"{first.stem}.jpg")
    assert run(project, "train", "--overwrite", "--set", "train.model_dir='./models2'") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.jpg" in err and f"{first.stem}.png" in err


def test_two_images_of_one_stem_are_refused_by_prepare(project, capsys):
    raw = next((project.parent / "raw").rglob("PNG"))
    first = sorted(raw.glob("*.png"))[0]
    Image.open(first).save(raw / f"{first.stem}.bmp")
    assert run(project, "prepare", "--set", "prepare.output_dir='./master2'") == 2
    err = capsys.readouterr().err
    assert f"{first.stem}.bmp" in err and f"{first.stem}.png" in err
    assert not (project.parent / "master2").exists()


# --------------------------------------------------------------------------- 4. the leak guard


def test_a_resplit_with_another_seed_is_detected(project, capsys):
    assert run(project, "split", "--overwrite", "--set", "train.seed=8") == 0
    trained_on = {p.name for s in ("train", "valid") for p in (project.parent / "dataset/D" / s / "images").iterdir()}
    record = json.loads((project.parent / "models/data_record.json").read_text())
    recorded = {e["name"] for entries in record["subsets"].values() for e in entries}
    now_test = {p.name for p in (project.parent / "dataset/D/test/images").iterdir()}
    leaked = now_test & recorded
    assert leaked, "the re-split should move some trained-on images into test"
    capsys.readouterr()
    assert run(project, "evaluate") == 2
    err = capsys.readouterr().err
    assert f"{len(leaked)} of {len(now_test)} test image(s) are images the model trained" in err
    assert "--allow-overlap" in err and not (project.parent / "eval/evaluation.json").exists()
    assert trained_on  # the new split wrote its own train/valid


def test_resume_after_a_resplit_is_refused_and_a_continued_run_keeps_the_leak_check(project, capsys):
    """Issue 24, case 6: train --resume after split --overwrite with another seed."""
    root = project.parent
    assert run(project, "split", "--overwrite", "--set", "train.seed=8") == 0
    before = tree_hash(*inputs_of(project))
    capsys.readouterr()
    assert run(project, "train", "--resume", "--set", "train.epochs=2") == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"flexunet train: error: {root / 'models'}: the training data changed since the "
                               f"run trained on it (") and "--overwrite" in lines[0]
    assert " train images added, " in lines[0] and "--allow-data-change" in lines[0]
    assert tree_hash(*inputs_of(project)) == before   # the data and the run as they were
    assert run(project, "train", "--allow-data-change") == 2
    assert "--allow-data-change: only with --resume" in capsys.readouterr().err

    assert run(project, "train", "--resume", "--allow-data-change", "--set", "train.epochs=2") == 0
    assert "the training data changed after epoch 1" in capsys.readouterr().err
    assert run(project, "evaluate") == 2                # the first split's images now in test are still caught
    err = capsys.readouterr().err
    assert "test image(s) are images the model trained" in err and "until epoch 1)" in err


def test_a_copied_train_image_is_detected_and_counted_with_allow_overlap(project, capsys):
    root = project.parent
    source = sorted((root / "dataset/D/train/images").glob("*.png"))[0]
    shutil.copy(source, root / "dataset/D/test/images/copy.png")
    shutil.copy(root / "dataset/D/train/masks" / source.name, root / "dataset/D/test/masks/copy.png")
    assert run(project, "evaluate") == 2
    assert f"copy.png is the same bytes as {source.name} (train)" in capsys.readouterr().err
    assert run(project, "report") == 2   # the report refuses the same images (no evaluation yet either)
    capsys.readouterr()
    assert run(project, "evaluate", "--allow-overlap") == 0
    assert "1 of" in capsys.readouterr().err
    leak = json.loads((root / "eval/evaluation.json").read_text())["leak_check"]
    assert leak["checked"] and leak["overlapping"] == 1 and leak["allowed"]
    assert run(project, "report") == 2
    assert run(project, "report", "--allow-overlap") == 0
    assert "1 test image(s) are images the model trained" in (root / "report/report.html").read_text()


def test_a_resaved_copy_is_detected_by_its_pixels(project, capsys):
    root = project.parent
    source = sorted((root / "dataset/D/valid/images").glob("*.png"))[0]
    image = Image.open(source)
    image.save(root / "dataset/D/test/images/resaved.png", compress_level=0)   # other bytes, same pixels
    shutil.copy(root / "dataset/D/valid/masks" / source.name, root / "dataset/D/test/masks/resaved.png")
    assert (root / "dataset/D/test/images/resaved.png").read_bytes() != source.read_bytes()
    assert run(project, "evaluate") == 2
    assert f"resaved.png is the same pixels as {source.name} (valid)" in capsys.readouterr().err


def test_different_synthetic_slices_never_collide_and_light_jpeg_copies_do(trained, tmp_path):
    from flexunet.dataset.leak_record import fingerprint, find_overlaps

    slices = sorted(next((trained / "raw").rglob("PNG")).glob("*.png"))
    assert len(slices) == 30
    for i, path in enumerate(slices):   # each slice against all the others
        others = [{**fingerprint(p), "subset": "train"} for p in slices if p != path]
        assert find_overlaps([path], others) == [], path.name
    jpeg = tmp_path / "copy.jpg"
    Image.open(slices[3]).convert("RGB").save(jpeg, quality=95)
    record = [{**fingerprint(p), "subset": "train"} for p in slices]
    found = find_overlaps([jpeg], record)
    assert len(found) == 1 and found[0]["match"] == slices[3].name and "near-duplicate" in found[0]["how"]


def test_a_run_without_a_record_warns_once(project, capsys):
    (project.parent / "models/data_record.json").unlink()
    assert run(project, "evaluate") == 0
    err = capsys.readouterr().err
    assert err.count("could not check the test images") == 1


# --------------------------------------------------------------------------- 5. the report shows what was evaluated


def test_report_shows_the_images_of_the_evaluation_it_reports(project, capsys):
    root = project.parent
    other = root / "other"
    shutil.copytree(root / "dataset/D/test", other)
    # the same names as the test set, other pictures: each slice and its mask turned upside down
    for sub in ("images", "masks"):
        for path in (other / sub).glob("*.png"):
            Image.open(path).transpose(Image.FLIP_TOP_BOTTOM).save(path)
    assert run(project, "evaluate", "--set", f"test.images_dir='{other / 'images'}'",
               "--set", f"test.masks_dir='{other / 'masks'}'") == 0
    capsys.readouterr()
    from flexunet.config.loader import load_config
    from flexunet.report.build import build_report

    result = build_report(load_config(project), progress=False)
    err = capsys.readouterr().err
    assert f"the evaluation scored {other / 'images'}, not [test] images_dir" in err
    assert "differs from per_image.csv" not in err
    cases = [c for rank in result["gallery"].values() for c in rank]
    assert cases
    for case in cases:
        for name, value in case["predicted_dice"].items():
            expected = case["dice"][name]
            assert (np.isnan(value) and np.isnan(expected)) or abs(value - expected) <= 1e-4


def test_the_gallery_pairs_come_from_the_evaluated_folders(project):
    """Same names as [test], other files: the gallery reads the evaluated folder, not [test]."""
    from flexunet.config.loader import load_config
    from flexunet.report.gallery import evaluated_pairs

    cfg = load_config(project)
    root = project.parent
    other = root / "other"
    shutil.copytree(root / "dataset/D/test", other)
    for path in (other / "images").glob("*.png"):
        Image.open(path).transpose(Image.FLIP_TOP_BOTTOM).save(path)
    shown = evaluated_pairs(cfg, (other / "images", other / "masks"))
    default = evaluated_pairs(cfg, None)
    assert shown.keys() == default.keys()
    assert all(shown[n][0].parent == other / "images" for n in shown)
    assert any(shown[n][0].read_bytes() != default[n][0].read_bytes() for n in shown)


# --------------------------------------------------------------------------- 7. warnings


def test_tiled_stride_one_and_oversized_min_component_are_warned(project, capsys):
    root = project.parent
    code = run(project, "infer", "--tiled", "--set", f"tiledinfer.images_dir='{root / 'dataset/D/mini_test/images'}'",
               "--set", f"tiledinfer.output_dir='{root / 'tiled'}'", "--set", "tiledinfer.split_size=16",
               "--set", "tiledinfer.overlapping=15", "--set", "infer.min_component_size=5000")
    err = capsys.readouterr().err
    assert code == 0
    assert "a stride of 1 px, 289 tiles per 32x32 image (9 with overlapping = 4)" in err
    assert "min_component_size = 5000 is more than the 32x32 = 1024 pixels" in err
    masks = [np.asarray(Image.open(p)) for p in sorted((root / "tiled").glob("*.png"))]
    assert masks and not any(m.any() for m in masks)
