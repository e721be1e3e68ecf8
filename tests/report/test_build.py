"""flexunet report: a tiny finished run -> report.html whose links exist and whose numbers are evaluation.json's.

One module fixture trains a 32x32 model for 2 epochs on the conftest dataset (8 train,
4 valid, 4 test images), evaluates it and builds the report; the tests read what it wrote.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TRAIN_CONFIG, cli, make_train_project, run_command, snapshot

from flexunet.config.loader import load_config
from flexunet.model.run_folder import read_meta
from flexunet.utils.errors import FlexUNetError
from flexunet.report.build import build_report
from flexunet.report.data import RANKS, ReportError, epoch_montages, image_means, rank_images
from flexunet.report.html import lookup
from flexunet.report.sections import POOLED_EXPLANATION

SECTIONS = ("header", "dataset", "curves", "evaluation", "review", "gallery", "viewer", "epochs")


class Page(HTMLParser):
    """What a test needs from the page: links, section ids, data-* cells, gallery cases, scripts, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.sections: list[str] = []
        self.cells: list[dict[str, str]] = []
        self.cases: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self.scripts: list[dict[str, str]] = []    # attributes and "text" of each <script>
        self._cell: dict[str, str] | None = None
        self._script: dict[str, str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.links += [a[k] for k in ("src", "href") if k in a]
        if tag == "section":
            self.sections.append(a["id"])
        if "data-value" in a:
            self._cell = {**a, "text": ""}
            self.cells.append(self._cell)
        if "data-rank" in a:
            self.cases.append(a)
        if tag == "script":
            self._script = {**a, "text": ""}
            self.scripts.append(self._script)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        if tag == "script":
            self._script = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script["text"] += data
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell["text"] += data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.training.train import train

    root = tmp_path_factory.mktemp("report_run")
    path = make_train_project(root)
    overrides = ["train.epochs=2", "train.epoch_change_infer=True", "train.average_best=2"]
    cfg = load_config(path, overrides)
    train(cfg, progress=False)
    evaluate_model(cfg, progress=False)
    result = build_report(cfg, progress=False)
    html_path = result["html"]
    return {"root": root, "path": path, "overrides": overrides, "cfg": cfg, "result": result,
            "page": Page(html_path.read_text(encoding="utf-8")),
            "evaluation": json.loads((root / "eval" / "evaluation.json").read_text())}


def _shown(value: object, text: str) -> bool:
    """The cell's text is the JSON value, rounded for display."""
    if value is None:
        return text == "n/a"
    if isinstance(value, int):
        return text.replace(",", "") == str(value)
    if isinstance(value, list):                      # an interval: [low, high] over N units
        return text.startswith(f"[{value[0]:.3f}, {value[1]:.3f}] over ")
    digits = len(text.split(".")[1])
    return text == f"{value:.{digits}f}"


def test_report_links_only_files_beside_it(run):
    out = run["root"] / "report"
    result, page = run["result"], run["page"]
    assert result["html"] == out / "report.html" and result["html"].is_file()
    files = [link for link in page.links if not link.startswith("#")]
    assert files, "the page shows no figure"
    for link in files:
        assert "://" not in link and not link.startswith("/"), link      # no network, no absolute path
        target = (out / link).resolve()
        assert target.is_file(), link
        assert (out / "figures").resolve() in target.parents, link
    assert not {"link", "iframe"} & page.tags                           # nothing external, inline CSS only
    assert page.scripts and not [s for s in page.scripts if "src" in s]  # inline scripts only
    viewer_images = [item["img"] for s in page.scripts if s.get("class") == "fv-data" for item in json.loads(s["text"])]
    assert viewer_images
    for link in viewer_images:                                           # loaded by the viewer when shown
        assert link.startswith("figures/viewer/") and (out / link).is_file(), link
    shown = {(out / link).resolve() for link in files}
    assert result["figures"] and all(p.is_file() and p.resolve() in shown for p in result["figures"])
    assert not list(out.glob(".figures*"))                               # no temporary folder left


def test_numbers_equal_evaluation_json(run):
    ev, page = run["evaluation"], run["page"]
    cells = [c for c in page.cells if "data-key" in c]
    for cell in cells:
        value = lookup(ev, cell["data-key"])
        assert json.loads(cell["data-value"]) == value, cell["data-key"]
        assert _shown(value, cell["text"].strip()), (cell["data-key"], cell["text"])
    keys = {c["data-key"] for c in cells}
    for name in ev["classes"]:
        for sub in ("per_image.dice.mean", "per_image.dice.median", "per_image.dice.n_valid", "per_image.iou.mean",
                    "per_image.precision.mean", "per_image.recall.mean", "per_image.hd95_px.mean", "n_empty",
                    "per_image.nsd.mean", "whole_set.nsd", "whole_set.dice", "dice_ci95", "lesions.recall", "lesions.precision", "lesions.f1",
                    "false_positive_slices.rate"):
            assert f"classes.{name}.{sub}" in keys, sub
    assert {"seed_metrics.dice_coef_multiclass", "mean_foreground.per_image_dice",
            "confusion_matrix.counts.0.0"} <= keys
    text = " ".join("".join(page.text).split())
    assert ev["empty_rule"] in text and POOLED_EXPLANATION in text
    # how to read the intervals, and what they rest on: the 4 test slices (no manifest names patients)
    assert ("(4 slices, drawn again 1000 times): two figures whose intervals overlap widely are not shown to "
            "differ by this set.") in text and "Only 4 slices: a bootstrap over so few is rough" in text
    assert ev["interval_definition"] in text and f"NSD. {ev['nsd_definition']}" in text
    # how the scored masks were predicted: the run's post-processing record, as evaluate applied it
    from flexunet.report.sections import prediction_text
    assert f"Prediction. {prediction_text(ev['prediction'], list(ev['classes']))}" in text


def test_the_prediction_rule_says_what_was_removed_and_why():
    from flexunet.report.sections import prediction_text

    names = ["ischemic", "hemorrhagic"]
    chosen = {"flip_tta_axes": [], "min_component_size": [0, 0, 5], "min_component_size_from": "postprocess.json"}
    assert prediction_text(chosen, names) == ("one pass, no mirroring; predicted components removed: hemorrhagic "
                                              "under 5 px (chosen on the validation set when training ended).")
    given = {"flip_tta_axes": [2], "min_component_size": [9, 9, 9], "min_component_size_from": "[infer] min_component_size"}
    assert prediction_text(given, names) == ("averaged over 1 mirror image(s) and the original; predicted components "
                                             "removed: ischemic under 9 px, hemorrhagic under 9 px (from [infer] "
                                             "min_component_size).")
    assert prediction_text({"flip_tta_axes": [], "min_component_size": [0, 0, 0]}, names).endswith(
        "every predicted component kept.")
    weighted = {"flip_tta_axes": [], "foreground_weight": 3.0, "min_component_size": [0, 0, 0]}
    assert prediction_text(weighted, names) == ("one pass, no mirroring; a pixel is marked as a lesion class where "
                                                "that class's probability is above 1/3 of background's "
                                                "(foreground_weight 3); every predicted component kept.")


def test_dataset_numbers_equal_stats_json(run):
    stats = json.loads((run["root"] / "report" / "figures" / "dataset" / "stats.json").read_text())
    cells = [c for c in run["page"].cells if "data-stats-key" in c]
    assert {"subsets.test.images", "subsets.train.pixels.bright"} <= {c["data-stats-key"] for c in cells}
    for cell in cells:
        assert json.loads(cell["data-value"]) == lookup(stats, cell["data-stats-key"])
    assert stats["subsets"]["train"]["images"] == 8 and stats["subsets"]["test"]["images"] == 4


def test_sections_curves_gallery_and_montages(run):
    page, result, out = run["page"], run["result"], run["root"] / "report"
    assert page.sections == list(SECTIONS) == result["sections"]
    text = "".join(page.text)
    assert "input 32x32x3" in text and "3 classes (background, bright, dark)" in text and "ce_dice" in text
    assert "figures/curves/loss.png" in page.links and "figures/curves/dice.png" in page.links
    assert "figures/curves/learning_rate.png" in page.links and "figures/confusion_matrix.png" in page.links
    # [train] average_best: the header names the epochs whose weights the model is the mean of
    averaged = read_meta(run["root"] / "models")["averaged_epochs"]
    assert sorted(averaged) == [1, 2]
    assert f"the model is the mean of the weights of epochs {', '.join(map(str, averaged))}" in text
    # gallery: 4 test images and gallery_per_rank = 2 -> one each, no image twice, in Dice order
    assert [c["data-rank"] for c in page.cases] == list(RANKS)
    gallery = result["gallery"]
    names = [case["image"] for rank in RANKS for case in gallery[rank]]
    assert len(names) == 3 == len(set(names)) and names == [c["data-image"] for c in page.cases]
    means = [gallery[rank][0]["mean_dice"] for rank in RANKS]
    assert means == sorted(means, reverse=True)
    for rank in RANKS:
        case = gallery[rank][0]
        for name, value in case["dice"].items():           # the page's prediction is the evaluated one
            assert case["predicted_dice"][name] == pytest.approx(value, abs=1e-4)
        stem = Path(case["image"]).stem
        for panel in ("image", "ground_truth", "prediction", "overlay"):
            assert f"figures/gallery/{rank}_1_{stem}_{panel}.png" in page.links
    montages = [link for link in page.links if link.startswith("figures/epochs/") and link.endswith(".png")]
    assert list(dict.fromkeys(montages)) == ["figures/epochs/Epoch_1_montage.png", "figures/epochs/Epoch_2_montage.png"]
    assert not (out / "figures" / "gallery" / "gallery.png").exists()   # the gallery is not repeated as one picture


def viewer_slices(page: Page) -> list[dict]:
    return [item for s in page.scripts if s.get("class") == "fv-data" for item in json.loads(s["text"])]


def test_viewer_shows_every_evaluated_slice_with_its_dice(run):
    from flexunet.report.data import read_per_image

    rows = read_per_image(run["root"] / "eval" / "per_image.csv")
    items = viewer_slices(run["page"])
    assert sorted(i["name"] for i in items) == sorted({r["image"] for r in rows}) == sorted(
        p.name for p in (run["root"] / "data" / "test" / "images").iterdir())
    viewer = run["result"]["viewer"]
    assert viewer["kind"] == "run" and [n for names in viewer["groups"].values() for n in names] == \
        [i["name"] for i in items]
    for row in rows:                                     # the viewer's prediction is the evaluated one
        item = next(i for i in items if i["name"] == row["image"])
        shown = item["dice"][row["class"]]
        assert (shown is None and math.isnan(row["dice"])) or shown == pytest.approx(row["dice"], abs=1e-4)
        assert item["lab"].startswith("data:image/png;base64,")
    # the uncertainty map (the softmax's normalised entropy) is the viewer's extra layer
    html = run["result"]["html"].read_text()
    assert 'data-layer="extra"> uncertainty</label>' in html


def test_viewer_notes_carry_each_patients_volumes(tmp_path):
    from flexunet.report.gallery import viewer_hooks
    from flexunet.report.html import Build

    ev = {"volumes": {"per_patient": [
        {"patient": "P1", "class": "ischemic", "reference_ml": 12.0, "predicted_ml": 10.5},
        {"patient": "P1", "class": "hemorrhagic", "reference_ml": 0.0, "predicted_ml": 0.25}]}}
    b = Build(None, tmp_path, ev, tmp_path, False)
    viewer_hooks(b)
    assert b.viewer_notes == {"P1": "Volumes — ischemic: reference 12.00 mL, predicted 10.50 mL; "
                                    "hemorrhagic: reference 0.00 mL, predicted 0.25 mL"}
    assert set(b.viewer_layers) == {"uncertainty"}


def test_rerun_replaces_the_report_and_notes_what_is_missing(run):
    out = run["root"] / "report_again"
    cfg = load_config(run["path"], run["overrides"] + [
        f"report.output_dir={out}", "report.dataset_dir=./no_such_dataset", "report.gallery_per_rank=0",
        "train.epoch_change_infer_dir=./no_montages"])
    first = build_report(cfg, progress=False)
    stale = out / "figures" / "stale.png"
    stale.write_bytes(b"old")
    second = build_report(cfg, progress=False)
    assert not stale.exists() and second["figures"] == first["figures"]
    assert all(p.is_file() for p in second["figures"])
    text = " ".join("".join(Page(second["html"].read_text()).text).split())
    assert "no_such_dataset" in text and "does not exist" in text
    assert "gallery_per_rank = 0" in text and "No epoch-change montages" in text
    assert "No volumes" in text                          # PNG test data: no slice geometry
    assert len(second["notes"]) == 4 and second["dataset"] is None
    assert second["gallery"] == {"best": [], "median": [], "worst": []}


def test_missing_evaluation_json_says_to_run_evaluate(tmp_path):
    path = tmp_path / "train_eval_infer.config"
    path.write_text(TRAIN_CONFIG)
    with pytest.raises(ReportError) as info:
        build_report(load_config(path), progress=False)
    message = str(info.value)
    assert isinstance(info.value, FlexUNetError) and "\n" not in message
    assert str(tmp_path / "eval" / "evaluation.json") in message and "flexunet evaluate CONFIG" in message
    assert not (tmp_path / "report").exists()


def test_ranking_excludes_all_empty_images_and_never_repeats_one():
    nan = math.nan
    rows = [{"image": img, "class": cls, "dice": d} for img, pairs in {
        "a": (0.9, 0.7), "b": (0.2, nan), "c": (nan, nan), "d": (0.5, 0.5), "e": (0.0, 0.1),
        "f": (1.0, 1.0), "g": (0.6, 0.6), "h": (0.3, 0.3)}.items() for cls, d in zip(("x", "y"), pairs)]
    means = image_means(rows)
    assert "c" not in means and means["b"] == 0.2 and means["a"] == pytest.approx(0.8)
    # order: f 1.0, a 0.8, g 0.6, d 0.5, h 0.3, b 0.2, e 0.05
    ranks = rank_images(means, 2)
    assert [n for n, _ in ranks["best"]] == ["f", "a"]
    assert [n for n, _ in ranks["worst"]] == ["e", "b"]
    assert [n for n, _ in ranks["median"]] == ["g", "d"]
    assert [len(v) for v in rank_images(means, 5).values()] == [2, 2, 2]   # 7 images: 2 per rank
    two = rank_images({"p": 0.4, "q": 0.9}, 2)
    assert two == {"best": [("q", 0.9)], "median": [], "worst": [("p", 0.4)]}
    assert rank_images({}, 2) == {"best": [], "median": [], "worst": []}
    assert rank_images(means, 0) == {"best": [], "median": [], "worst": []}


def test_epoch_montages_in_numeric_epoch_order(tmp_path):
    for name in ("Epoch_10_montage.png", "Epoch_2_montage.png", "Epoch_1_montage.png", "Epoch_3_1000.png"):
        (tmp_path / name).write_bytes(b"")
    assert [n for n, _ in epoch_montages(tmp_path)] == [1, 2, 10]
    assert epoch_montages(tmp_path / "missing") == []


def test_curves_section_shows_the_collapse_guards_line(run):
    history = run["cfg"].train.eval_dir / "history.json"
    saved = history.read_text()
    line = "collapse: no pixel of training or validation was predicted as class 'dark' in epochs 1-2"
    try:
        history.write_text(json.dumps({**json.loads(saved), "collapse": {"class": "dark", "message": line}}))
        cfg = load_config(run["path"], run["overrides"] + [f"report.output_dir={run['root'] / 'report_collapse'}"])
        result = build_report(cfg, progress=False)
    finally:
        history.write_text(saved)
    assert line in " ".join("".join(Page(result["html"].read_text()).text).split())
    assert line not in " ".join("".join(run["page"].text).split())  # a run without it shows none


def test_a_members_run_shows_each_members_curves_and_header(run, tmp_path):
    import dataclasses

    from flexunet.report.html import Build
    from flexunet.report.sections import curves_section, header_html

    cfg = run["cfg"]
    model_dir = tmp_path / "models"
    for k in (1, 2):   # each member's curves beside its checkpoint, as training writes them
        folder = model_dir / "members" / str(k)
        folder.mkdir(parents=True)
        (folder / "history.json").write_text((cfg.train.eval_dir / "history.json").read_text())
    meta = {**json.loads((cfg.train.model_dir / "model_meta.json").read_text()),
            "members": [{"seed": 7, "epoch": 2, "best_epoch": 2, "best": 0.5, "averaged_epochs": [1, 2]},
                        {"seed": 8, "epoch": 2, "best_epoch": 1, "best": 0.6, "averaged_epochs": None}]}
    (model_dir / "model_meta.json").write_text(json.dumps(meta))
    (model_dir / "best_model.keras").write_bytes((cfg.train.model_dir / "best_model.keras").read_bytes())
    two = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, members=2),
                              train=dataclasses.replace(cfg.train, model_dir=model_dir))
    b = Build(two, tmp_path / "figures", run["evaluation"], cfg.train.eval_dir, False)
    html = curves_section(b)
    assert "<h3>Member 1 (seed 7)</h3>" in html and "<h3>Member 2 (seed 8)</h3>" in html
    assert {f"curves-{k}/{name}.png" for k in (1, 2) for name in ("loss", "dice")} <= set(b.figures)
    assert "member 2 (seed 8): 2 epoch(s), best val_loss 0.6 at epoch 1" in header_html(b)
    (model_dir / "members" / "2" / "history.json").unlink()
    assert "No training curves" in curves_section(Build(two, tmp_path / "f2", run["evaluation"], cfg.train.eval_dir,
                                                       False))


def test_review_section_shows_calibration_and_the_most_uncertain_slices(run):
    ev, page = run["evaluation"], run["page"]
    text = " ".join("".join(page.text).split())
    assert "figures/reliability.png" in page.links
    strips = sorted({link for link in page.links if link.startswith("figures/uncertain_")})
    top = ev["uncertainty"]["most_uncertain"]
    assert len(strips) == min(4, len(top)) > 0
    for row in top[:len(strips)]:
        assert row["name"] in text
    table = re.search(r'<table id="calibration"[^>]*>(.*?)</table>', run["result"]["html"].read_text()).group(1)
    shown = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", table)   # (class, ECE) per row
    classes = ev["calibration"]["classes"]
    assert [name for name, _ in shown] == list(classes) == ["background", "bright", "dark"]
    for name, text in shown:   # the ECE of evaluation.json, as the page rounds it; n/a where it has none
        ece = classes[name]["ece"]
        assert text == ("n/a" if ece is None else f"{ece:.3f}"), name


def test_report_in_a_browser_through_the_cli(run, tmp_path):
    """`flexunet report` into a new folder, opened in headless Chromium: no console error, slice k's Dice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_viewer import _chromium, console_errors, wait_drawn

    from flexunet.cli.main import main
    from flexunet.report.data import read_per_image

    out = tmp_path / "cli_report"
    sets = [a for o in run["overrides"] + [f"report.output_dir={out}"] for a in ("--set", o)]
    assert main(["--quiet", "report", str(run["path"]), *sets]) == 0
    rows = read_per_image(run["root"] / "eval" / "per_image.csv")
    driver = _chromium()
    try:
        driver.get((out / "report.html").as_uri())
        viewer = driver.find_element(By.CSS_SELECTOR, "div.fv-viewer")
        count = int(viewer.get_attribute("data-count"))
        wait_drawn(driver, viewer, 1)
        viewer.find_element(By.CSS_SELECTOR, ".fv-slider").send_keys(*[Keys.ARROW_RIGHT] * (count - 1))
        wait_drawn(driver, viewer, count)
        assert viewer.find_element(By.CSS_SELECTOR, ".fv-index").text == f"{count} / {count}"
        name = viewer.find_element(By.CSS_SELECTOR, ".fv-name").text
        for cell in viewer.find_elements(By.CSS_SELECTOR, ".fv-dice"):
            row = next(r for r in rows if r["image"] == name and r["class"] == cell.get_attribute("data-class"))
            value = json.loads(cell.get_attribute("data-value"))
            assert (value is None and math.isnan(row["dice"])) or value == pytest.approx(row["dice"], abs=1e-4)
            assert cell.text == ("n/a" if value is None else f"{value:.3f}")
        assert driver.execute_script("return arguments[0].querySelector('.fv-image').naturalWidth", viewer) == 32
        assert console_errors(driver) == []
        shot = tmp_path / "report_viewer.png"
        viewer.screenshot(str(shot))
        print(f"report viewer screenshot: {shot}")
    finally:
        driver.quit()


# --------------------------------------------------------------------------- the report's folder, through the CLI
# conftest's synth_project: a copy of a trained run on synthetic slices


def test_report_keeps_a_users_figures_folder(synth_project, capsys):
    assert run_command(synth_project, "evaluate") == 0
    user = synth_project.parent / "u"
    (user / "figures").mkdir(parents=True)
    (user / "figures" / "poster.png").write_bytes(b"keep me")
    assert run_command(synth_project, "report", "--set", f"report.output_dir='{user}'") == 2
    assert "not written by it (figures); it never replaces a file it did not write" in capsys.readouterr().err
    assert run_command(synth_project, "report", "--overwrite", "--set", f"report.output_dir='{user}'") == 2
    err = capsys.readouterr().err
    assert "(figures); it never replaces a file it did not write, with or without --overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (user / "figures" / "poster.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in user.rglob("*")) == ["figures", "poster.png"]


def test_report_into_the_project_folder_is_refused(synth_project, capsys, monkeypatch):
    assert run_command(synth_project, "evaluate") == 0
    synth_project.write_text(synth_project.read_text().replace('output_dir = "./report"', 'output_dir = "."'))
    monkeypatch.chdir(synth_project.parent)
    before = snapshot(synth_project.parent)
    code = run_command(synth_project, "report", "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and "[report] output_dir" in err and "contains the input folder" in err
    assert snapshot(synth_project.parent) == before


def test_report_replaces_only_its_own_figures(synth_project):
    assert run_command(synth_project, "evaluate") == 0
    assert run_command(synth_project, "report") == 0
    out = synth_project.parent / "report"
    (out / "mine.txt").write_text("mine")
    assert run_command(synth_project, "report", "--overwrite") == 0   # rerun: its own figures replaced, mine kept
    assert (out / "mine.txt").read_text() == "mine" and (out / "report.html").is_file()


def test_report_shows_the_images_of_the_evaluation_it_reports(synth_project, caplog):
    root = synth_project.parent
    other = root / "other"
    shutil.copytree(root / "dataset/D/test", other)
    # the same names as the test set, other pictures: each slice and its mask turned upside down
    for sub in ("images", "masks"):
        for path in (other / sub).glob("*.png"):
            Image.open(path).transpose(Image.FLIP_TOP_BOTTOM).save(path)
    assert run_command(synth_project, "evaluate", "--set", f"test.images_dir='{other / 'images'}'",
                       "--set", f"test.masks_dir='{other / 'masks'}'") == 0
    with caplog.at_level(logging.WARNING, logger="flexunet.report"):
        result = build_report(load_config(synth_project), progress=False)
    assert f"the evaluation scored {other / 'images'}, not [test] images_dir" in caplog.text
    assert "differs from per_image.csv" not in caplog.text
    cases = [c for rank in result["gallery"].values() for c in rank]
    assert cases
    for case in cases:
        for name, value in case["predicted_dice"].items():
            expected = case["dice"][name]
            assert (np.isnan(value) and np.isnan(expected)) or abs(value - expected) <= 1e-4


# --------------------------------------------------------------------------- a report after a new model
# conftest's tiny_project: a copy of a run trained for one epoch and evaluated


def _report_page(root: Path) -> str:
    return (root / "report" / "report.html").read_text()


def test_report_warns_when_the_evaluation_is_an_earlier_models(tiny_project, capsys):
    from flexunet.model.trained import model_sha256

    root = tiny_project.parent
    off = ("--set", "report.gallery_per_rank=0")
    code, lines, err = cli(capsys, "report", str(tiny_project), *off)
    assert code == 0 and "earlier model" not in err, err
    assert 'class="warning"' not in _report_page(root)
    recorded = json.loads((root / "eval" / "evaluation.json").read_text())["model_sha256"]
    assert recorded == model_sha256(root / "models" / "best_model.keras")

    assert cli(capsys, "train", str(tiny_project), "--overwrite", "--set", "train.seed=8")[0] == 0  # a new model
    code, lines, err = cli(capsys, "report", str(tiny_project), *off)
    warning = (f"these figures were computed for an earlier model: {root / 'models' / 'best_model.keras'} has "
               f"changed since evaluation.json was written; run flexunet evaluate again")
    assert code == 0 and f"warning: report: {warning}" in err.splitlines(), err
    page = _report_page(root)
    assert page.count(f"<strong>Warning:</strong> {warning}") == 2      # atop the page and atop the evaluation
    assert page.index('id="stale-model"') < page.index('id="per-class"')

    evaluation = root / "eval" / "evaluation.json"                      # an evaluation.json without the hash
    evaluation.write_text(json.dumps({k: v for k, v in json.loads(evaluation.read_text()).items()
                                      if k != "model_sha256"}))
    code, lines, err = cli(capsys, "report", str(tiny_project), *off)
    assert code == 0 and "evaluation.json does not record which model it evaluated" in err, err
    assert "does not record which model it evaluated" in _report_page(root)


@pytest.mark.parametrize("rule", ["removal", "weight"])
def test_the_gallery_and_viewer_show_the_masks_the_evaluation_scored(tiny_project, capsys, rule):
    """An evaluation that mirrored and removed small components ([infer] flip_tta, min_component_size), or
    that marked lesions at a lower bar ([infer] foreground_weight): the report predicts its slices again the
    same way, from evaluation.json (not from the config it is given), so its per-slice Dice agree with
    per_image.csv: no 'differs' warning."""
    from flexunet.model.predict import decide, model_batch, predict_probs, read_input
    from flexunet.model.trained import load_trained

    cfg = load_config(tiny_project)
    images = sorted(cfg.test.images_dir.iterdir())
    probs = predict_probs(load_trained(cfg), model_batch([read_input(p, cfg) for p in images], cfg))
    if rule == "removal":
        assert decide(probs).any()  # the 1-epoch model predicts foreground, which the evaluation below removes
        sets = ("--set", "infer.min_component_size=100000", "--set", "infer.flip_tta=True")
    else:
        assert (decide(probs, 20.0) != decide(probs)).any()   # the lower bar moves pixels of this model
        sets = ("--set", "infer.foreground_weight=20", "--set", "infer.min_component_size=0")
    assert cli(capsys, "evaluate", str(tiny_project), *sets)[0] == 0
    prediction = json.loads((tiny_project.parent / "eval" / "evaluation.json").read_text())["prediction"]
    if rule == "removal":
        assert prediction["flip_tta_axes"] and prediction["min_component_size"][1:] == [100000, 100000]
    else:
        assert prediction["foreground_weight"] == 20.0
    code, _, err = cli(capsys, "report", str(tiny_project))
    assert code == 0 and "differs from per_image.csv" not in err, err
    assert 'class="warning"' not in _report_page(tiny_project.parent)
