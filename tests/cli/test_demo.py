"""The demo: every stage runs and leaves its outputs; the report matches the evaluation."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import cli, snapshot
from flexunet.cli.demo import MARKER, demo_config_text, run_demo
from flexunet.utils.errors import FlexUNetError


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.values: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith(("#", "data:")):
                self.refs.append(a[key])
        if "data-key" in a and "data-value" in a:
            self.values.append((a["data-key"], a["data-value"]))


def _lookup(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def test_demo_runs_every_stage_and_report_matches_evaluation(tmp_path):
    lines: list[str] = []
    out = tmp_path / "demo"
    result = run_demo(out, size=64, epochs=2, count=36, progress=False, echo=lines.append)
    cfg_text = (out / "train_eval_infer.config").read_text()
    assert "image_width    = 64" in cfg_text and "epochs         = 2" in cfg_text
    # each stage printed and left its outputs
    assert [ln.split("]")[1].split(":")[0].strip() for ln in lines if ln.startswith("[")] == [
        "synth", "prepare", "split", "augment", "train", "evaluate", "infer", "report"]
    raw = out / "raw" / "STROKE-DATASET" / "YARISMA-VERI-SETI_2_OTURUM"
    assert len(list((raw / "PNG").glob("*.png"))) == 36 and len(list((raw / "DICOM").glob("*.dcm"))) == 36
    assert (out / "dataset" / "Demo-master" / "manifest.json").is_file()
    demo = out / "dataset" / "Demo"
    assert (demo / "split.json").is_file()
    assert list((demo / "train" / "images").glob("hflipped_*.png"))
    assert not list((demo / "test" / "images").glob("hflipped_*.png"))
    assert (out / "models" / "best_model.keras").is_file()
    assert (out / "eval" / "history.json").is_file() and (out / "eval" / "train_losses.csv").is_file()
    assert (out / "evaluation.csv").read_text().startswith("ce_dice,")
    evaluation = json.loads((out / "eval" / "evaluation.json").read_text())
    masks = sorted((out / "mini_test_output").glob("*.png"))
    assert len(masks) == len(list((demo / "mini_test" / "images").glob("*.png"))) > 0
    assert list((out / "epoch_change_infer").glob("Epoch_2_montage.png"))
    # the summary names each class and the report
    assert any("ischemic" in ln for ln in lines) and any("hemorrhagic" in ln for ln in lines)
    assert lines[-2].startswith("Report: ") and Path(lines[-2].split(": ", 1)[1]) == result["report"]
    # calibration error and the uncertainty score's rank correlation with Dice are printed; the demo's
    # prepared slices keep their DICOM geometry, so the test patients get volumes
    assert any(ln.strip().startswith("calibration error (ECE):") for ln in lines)
    assert any("uncertainty score vs slice Dice: Spearman" in ln for ln in lines)
    volumes = evaluation["volumes"]
    assert volumes["per_patient"] and not volumes["skipped"]
    assert {r["patient"] for r in volumes["per_patient"]} == {r["patient"] for r in volumes["per_patient"]
                                                              if r["class"] == "ischemic"}

    html_path = Path(result["report"])
    html = html_path.read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(html)
    assert parser.refs, "the report shows figures"
    for ref in parser.refs:
        assert not re.match(r"^[a-z]+://", ref), f"network reference {ref}"
        assert (html_path.parent / ref).is_file(), f"report references missing file {ref}"
    assert parser.values, "the report tables carry their JSON values"
    checked = 0
    for key, value in parser.values:
        expected = _lookup(evaluation, key)
        if expected is None:
            assert value in ("", "null", "nan", "None")
        elif isinstance(expected, list):                    # an interval: [low, high]
            assert json.loads(value) == pytest.approx(expected, rel=1e-9, abs=1e-12), key
        else:
            assert float(value) == pytest.approx(float(expected), rel=1e-9, abs=1e-12), key
            checked += 1
    assert checked >= 4
    for name in ("ischemic", "hemorrhagic"):
        assert result["classes"][name]["dice"] == pytest.approx(
            evaluation["classes"][name]["whole_set"]["dice"], nan_ok=True)


def test_demo_refuses_a_folder_it_did_not_create(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FlexUNetError, match="not a FlexUNet demo folder"):
        run_demo(tmp_path, size=64, epochs=1, count=12, progress=False, echo=lambda s: None)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert not (tmp_path / MARKER).exists()


def test_demo_never_starts_inside_a_split_dataset_or_a_run_folder(tmp_path):
    """A new folder inside another command's output was no folder of the user's: the demo ran there."""
    from flexunet.utils.outputs import claim_output_dir

    claim_output_dir(tmp_path / "dataset", "split", ["train", "test", "mini_test", "split.json"])
    (tmp_path / "dataset" / "test" / "images").mkdir(parents=True)
    claim_output_dir(tmp_path / "models", "train", ["best_model.keras", "last_checkpoint"])
    before = snapshot(tmp_path)
    for out, why in [(tmp_path / "dataset" / "test" / "images" / "demo", "lies inside .*test, written by `flexunet "
                                                                         "split`"),
                     (tmp_path / "dataset" / "mini_test", "is .*mini_test, written by `flexunet split`"),
                     (tmp_path / "models" / "demo", "lies inside .*models, the folder of a `flexunet train` run")]:
        with pytest.raises(FlexUNetError, match=f"--out = .*: {why}"):
            run_demo(out, size=64, epochs=1, count=12, progress=False, echo=lambda s: None)
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob(MARKER))


def test_demo_config_is_valid_at_every_offered_size(tmp_path):
    from flexunet.config.loader import parse_config

    for size in (64, 128, 256, 512):
        cfg = parse_config(demo_config_text(size, epochs=3), base_dir=tmp_path)
        assert (cfg.model.image_width, cfg.prepare.size, cfg.train.epochs) == (size, size, 3)
    with pytest.raises(FlexUNetError, match="--size 100: expected a multiple of 16"):
        run_demo(tmp_path / "x", size=100, progress=False, echo=lambda s: None)


def test_a_demo_refusal_says_what_the_demo_user_can_do(tmp_path, capsys, monkeypatch):
    """A foreign file in the demo's eval folder: evaluate's real refusal, reworded (the other stages stubbed)."""
    import flexunet.dataset.augment
    import flexunet.dataset.prepare
    import flexunet.dataset.split
    import flexunet.evaluation.evaluate
    import flexunet.synthetic.synth
    import flexunet.training.train

    out = tmp_path / "demo"
    (out / "eval").mkdir(parents=True)
    (out / ".flexunet-demo").write_text("created by flexunet demo\n")
    (out / "eval" / "notes.txt").write_text("mine\n")
    for module, name in ((flexunet.synthetic.synth, "synthesize"), (flexunet.dataset.prepare, "prepare_dataset"),
                         (flexunet.dataset.split, "split_dataset"), (flexunet.dataset.augment, "augment_dataset"),
                         (flexunet.training.train, "train")):
        monkeypatch.setattr(module, name, lambda *a, **k: None)
    monkeypatch.setattr(flexunet.evaluation.evaluate, "evaluate_model",  # its first check of eval_dir, as it is
                        lambda cfg, **k: flexunet.evaluation.evaluate.check_outputs(cfg, cfg.train.eval_dir, False))
    code, lines, err = cli(capsys, "demo", "--out", str(out), "--size", "32")
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"flexunet demo: error: [eval] eval_dir = {out / 'eval'}: holds 1 entry `flexunet "
                           f"evaluate` did not write (notes.txt); "), line
    assert "pass --overwrite" not in line
    assert line.endswith(f"flexunet demo writes only beside its own files and has no --overwrite: move the files "
                         f"it did not write out of {out}, or run the demo with another --out")
    assert (out / "eval" / "notes.txt").read_text() == "mine\n"
