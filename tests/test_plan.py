"""flexunet.plan: the fingerprint, the refusal of colours it cannot place, and a planned config that trains.

Datasets here are made up: 32x32 grey slices with square lesions of known sizes, so every
share and component size below is counted by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flexunet.cli import main
from flexunet.config import load_config
from flexunet.errors import DataError, FlexUNetError
from flexunet.plan import (Candidate, candidates_for, choose, colour_name, fingerprint_dataset, levels_for,
                           plan_dataset, probe_speed)

S = 32
GREEN, RED = (0, 255, 0), (255, 0, 0)


def _slice(folder: Path, subset: str, name: str, squares: list[tuple[tuple[int, int, int], int, int, int]],
           value: int = 100) -> Path:
    """A grey image and its mask; ``squares``: (colour, row, col, side) painted on both (lesion = 200)."""
    image = np.full((S, S, 3), value, np.uint8)
    mask = np.zeros((S, S, 3), np.uint8)
    for colour, r, c, side in squares:
        image[r:r + side, c:c + side] = 200
        mask[r:r + side, c:c + side] = colour
    for kind, arr in (("images", image), ("masks", mask)):
        (folder / subset / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / subset / kind / f"{name}.png")
    return folder / subset / "masks" / f"{name}.png"


def make_set(root: Path) -> Path:
    """train: 4 slices (green 4x4 + 2x2 in one, red 3x3 in one, both in one, none in one); valid/test: 2 each."""
    d = root / "set"
    _slice(d, "train", "a", [(GREEN, 2, 2, 4), (GREEN, 20, 20, 2)])
    _slice(d, "train", "b", [(RED, 10, 10, 3)])
    _slice(d, "train", "c", [(GREEN, 5, 5, 4), (RED, 20, 5, 3)])
    _slice(d, "train", "d", [])
    _slice(d, "valid", "e", [(GREEN, 8, 8, 4), (RED, 20, 20, 3)])
    _slice(d, "valid", "f", [])
    # test slices differ from valid ones (the leak guard refuses a test image the model validated on)
    _slice(d, "test", "e", [(GREEN, 14, 12, 4), (RED, 4, 22, 3)])
    _slice(d, "test", "f", [])
    f = d / "test" / "images" / "f.png"
    image = np.asarray(Image.open(f)).copy()
    image[24:30, 2:8] = 150                              # an unlabelled bright spot
    Image.fromarray(image).save(f)
    return d


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("plan"))


def fake_probe(candidates, size, channels, num_classes):
    """Seconds per step as if 16 filters were 4x slower than 8 (the choice logic under test, not the clock)."""
    return {c: 0.04 * c.base_filters for c in candidates}


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_maps_colours_to_classes_and_counts_by_hand(dataset: Path) -> None:
    fp = fingerprint_dataset(dataset)
    assert [(c["name"], tuple(c["colour"])) for c in fp["classes"]] == [
        ("background", (0, 0, 0)), ("green", GREEN), ("red", RED)]
    assert fp["channels"] == "grey" and fp["image_sizes"] == {"32x32": 8}
    assert fp["slices"] == {"train": 4, "valid": 2, "test": 2, "total": 8}
    green = 16 + 4 + 16 + 2 * 16
    red = 9 + 9 + 2 * 9
    total = 8 * S * S
    assert fp["pixel_share"]["green"] == round(green / total, 6)
    assert fp["pixel_share"]["red"] == round(red / total, 6)
    train = fp["subsets"]["train"]
    assert train["slices_with"] == {"background": 4, "green": 2, "red": 2}
    assert train["slices_with_foreground"] == 3
    assert fp["lesions"]["green"] == {"components": 5, "median_px": 16.0, "min_px": 4, "p10_px": 8.8,
                                      "max_px": 16}
    assert fp["lesions"]["red"]["components"] == 4 and fp["lesions"]["red"]["median_px"] == 9.0
    assert fp["intensity"]["green"]["mean"] == 200.0 and fp["intensity"]["background"]["p50"] == 100
    assert fp["stray_colours"] == {}


def test_classes_option_names_the_colours_in_order(dataset: Path) -> None:
    fp = fingerprint_dataset(dataset, ["ischemic", "hemorrhagic"])
    assert [c["name"] for c in fp["classes"]] == ["background", "ischemic", "hemorrhagic"]
    with pytest.raises(FlexUNetError, match="expected 2 distinct names"):
        fingerprint_dataset(dataset, ["only-one"])


def test_colour_names() -> None:
    assert colour_name((0, 250, 3)) == "green" and colour_name((0, 0, 255)) == "blue"
    assert colour_name((90, 40, 200)) == "rgb_90_40_200"


def test_anti_aliased_mask_colour_is_refused_with_one_line(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    bad = _slice(d, "train", "g", [(GREEN, 4, 4, 8)])
    mask = np.asarray(Image.open(bad)).copy()
    mask[3, 3:13] = (0, 128, 0)                          # an anti-aliased edge: half green
    mask[12, 3:13] = (0, 128, 0)
    Image.fromarray(mask).save(bad)
    with pytest.raises(DataError) as err:
        fingerprint_dataset(d)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "(0, 128, 0)" in msg and "between" in msg


def test_a_few_stray_pixels_are_mapped_not_refused(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    mask_path = d / "train" / "masks" / "a.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[2, 2] = (0, 250, 0)                             # one pixel of a near-green
    Image.fromarray(mask).save(mask_path)
    fp = fingerprint_dataset(d)
    assert fp["stray_colours"] == {"(0, 250, 0)": 1}
    assert len(fp["classes"]) == 3


def test_more_colours_than_classes_are_refused(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    rng = np.random.default_rng(0)
    squares = [(tuple(int(v) for v in rng.integers(0, 256, 3)), 2 * (i // 8) * 2, (i % 8) * 4, 2) for i in range(20)]
    _slice(d, "train", "h", squares)
    with pytest.raises(DataError, match=r"h\.png: mask colour .* expected at most 15 class colours"):
        fingerprint_dataset(d)


def test_masks_without_any_class_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    for subset in ("train", "valid", "test"):
        _slice(d, subset, "x", [])
    with pytest.raises(DataError, match="every mask is black"):
        fingerprint_dataset(d)


def test_missing_subset_is_one_line(tmp_path: Path) -> None:
    d = make_set(tmp_path)
    for p in (d / "valid" / "masks").iterdir():
        p.unlink()
    (d / "valid" / "masks").rmdir()
    with pytest.raises(DataError, match="valid/masks: folder not found"):
        fingerprint_dataset(d)


# --------------------------------------------------------------------------- choices


def _fp(train: int, rare: int) -> dict:
    return {"slices": {"train": train, "valid": 40, "test": 40}, "channels": "grey",
            "classes": [{"name": n} for n in ("background", "a", "b")],
            "pixel_share": {"background": 0.98, "a": 0.015, "b": 0.005},
            "subsets": {"train": {"slices_with_foreground": rare + 10, "slices_with": {"a": rare + 10, "b": rare}}}}


def test_epochs_and_net_fit_the_budget() -> None:
    cands = candidates_for(128)
    assert levels_for(128) == 5 and levels_for(256) == 6 and levels_for(48) == 3
    speeds = {c: 0.04 * c.base_filters for c in cands}           # 16: 0.64 s, 8: 0.32 s per step
    roomy = choose(_fp(160, 20), speeds, 60.0, 128, "x")
    assert roomy["base_filters"][0] == 16 and roomy["epochs"][0] == 30
    tight = choose(_fp(160, 20), speeds, 2.0, 128, "x")
    step_s = speeds[Candidate(8, 5, 8)]
    epoch_s = 1.1 * step_s * (20 + 5 / 3)
    assert tight["base_filters"][0] == 8 and tight["epochs"][0] == int(2 * 60 // epoch_s) < 30
    assert "s/step" in tight["base_filters"][1]


def test_oversampling_follows_the_rarest_class() -> None:
    speeds = {c: 0.1 for c in candidates_for(128)}
    assert choose(_fp(100, 10), speeds, 10, 128, "x")["oversample"][0] == 0.33
    assert choose(_fp(100, 80), speeds, 10, 128, "x")["oversample"][0] == 0.0


def test_probe_times_a_real_training_step() -> None:
    speeds = probe_speed([Candidate(4, 3, 2)], 32, 1, 3, steps=1)
    assert list(speeds) == [Candidate(4, 3, 2)] and speeds[Candidate(4, 3, 2)] > 0


# --------------------------------------------------------------------------- the written config


def test_planned_config_loads_and_trains_one_epoch(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "project" / "train_eval_infer.config"
    result = plan_dataset(dataset, out, minutes=3, probe=fake_probe)
    text = out.read_text()
    fp = json.loads((out.parent / "fingerprint.json").read_text())
    assert fp["classes"][2]["name"] == "red" and fp["probe"]
    cfg = load_config(out)
    assert cfg.mask.rgb_map == {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2}
    assert cfg.class_names == ("background", "green", "red")
    assert cfg.model.image_width == 32 and cfg.model.image_channels == 1 and cfg.model.normalization
    assert cfg.model.loss == "ce_dice" and cfg.train.lr_schedule == "cosine" and cfg.train.output_bias == "prior"
    # green 68 px, red 36 px in the 8 slices: green 2, red 2*sqrt(68/36) (the rarer class weighs more)
    assert cfg.model.class_weights == (1.0, 2.0, round(2 * (68 / 36) ** 0.5, 2))
    assert cfg.train.images_dir == (dataset / "train" / "images").resolve()
    assert cfg.infer.images_dir == (dataset / "test" / "images").resolve()
    assert cfg.train.epochs == result["choices"]["epochs"][0]
    # every value line has a comment line (or a self-evident constant) above it: spot-check the planned ones
    for key in ("base_filters", "num_layers", "epochs", "batch_size", "foreground_oversampling", "image_channels"):
        above = text.splitlines()[[ln.split("=")[0].strip() for ln in text.splitlines()].index(key) - 1]
        assert above.startswith(";"), key

    from flexunet.evaluate import evaluate_model
    from flexunet.train import train

    cfg = load_config(out, ["train.epochs=1", "model.base_filters=4", "model.num_layers=3"])
    summary = train(cfg, progress=False)
    assert summary["epochs"] == 1 and (cfg.train.model_dir / summary["best_model"]).exists()
    evaluation = evaluate_model(cfg, progress=False)
    assert set(evaluation["report"]["classes"]) == {"green", "red"}


def test_cli_refuses_to_overwrite_a_config(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import flexunet.plan as plan

    monkeypatch.setattr(plan, "probe_speed", fake_probe)
    out = tmp_path / "c.config"
    out.write_text("[model]\n")
    assert main(["plan", str(dataset), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--overwrite" in err
    assert out.read_text() == "[model]\n"
    assert main(["plan", str(dataset), "--out", str(out), "--overwrite", "--classes", "isch,hem"]) == 0
    assert load_config(out).class_names == ("background", "isch", "hem")


def test_class_weights_follow_the_pixel_shares_and_are_capped() -> None:
    from flexunet.plan import class_weights_for

    assert class_weights_for([0.98, 0.01, 0.0025, 0.0]) == (1.0, 2.0, 4.0, 1.0)
    assert class_weights_for([0.9, 0.05, 0.00001]) == (1.0, 2.0, 4.0)          # capped at 4
    assert class_weights_for([0.99, 0.004, 0.001]) == (1.0, 2.0, 4.0)
    assert class_weights_for([0.99, 0.005, 0.005]) == (1.0, 2.0, 2.0)
