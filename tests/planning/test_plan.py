"""flexunet.planning.plan: the choices from a fingerprint, the machine probe, and a planned config that trains.

The dataset is test_fingerprint.py's: 32x32 grey slices with square lesions of known sizes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from flexunet.cli.main import main
from flexunet.config.loader import load_config
from flexunet.planning.plan import EPOCH_CAP, EPOCH_MAX, MEMBERS_MAX, Candidate, choose, epochs_fit, plan_dataset, probe_speed
from flexunet.planning.probe import candidates_for, levels_for, probe_ladder
from flexunet.utils.machine import Machine
from test_fingerprint import make_set

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("plan"))


def fake_probe(candidates, size, channels, num_classes):
    """Seconds per step as if 16 filters were 4x slower than 8 (the choice logic under test, not the clock)."""
    return {c: 0.04 * c.base_filters for c in candidates}


# --------------------------------------------------------------------------- choices


def _fp(train: int, rare: int) -> dict:
    return {"slices": {"train": train, "valid": 40, "test": 40}, "channels": "grey",
            "classes": [{"name": n} for n in ("background", "a", "b")],
            "pixel_share": {"background": 0.98, "a": 0.015, "b": 0.005},
            "subsets": {"train": {"slices_with_foreground": rare + 10, "slices_with": {"a": rare + 10, "b": rare}}}}


def test_epochs_and_net_fit_the_budget() -> None:
    cands = candidates_for(128)
    assert levels_for(128) == 5 and levels_for(256) == 6 and levels_for(48) == 3
    assert [c.base_filters for c in cands] == [16, 8]
    speeds = {c: 0.08 * c.base_filters for c in cands}           # 16: 1.28 s, 8: 0.64 s per step
    roomy = choose(_fp(160, 20), speeds, 60.0, 128, "x")
    assert roomy["base_filters"][0] == 16 and roomy["epochs"][0] == EPOCH_MAX == 45   # time left: more epochs
    # 10 min: 16 filters fit 19.7 epochs (1.1 x 1.28 s x (20 + 5/3) steps = 30.5 s each), 8 fit 39.3: the
    # whole 30-epoch schedule on the smaller net beats a cut one on the larger, and the time left over
    # goes to epochs 31-39
    middle = choose(_fp(160, 20), speeds, 10.0, 128, "x")
    assert middle["base_filters"][0] == 8 and middle["epochs"][0] == 39
    assert "at most 45" in middle["epochs"][1] and "none wider than 16" in middle["base_filters"][1]
    tight = choose(_fp(160, 20), {c: 4 * s for c, s in speeds.items()}, 2.0, 128, "x")
    step_s = 4 * speeds[Candidate(8, 5, 8)]
    epoch_s = 1.1 * step_s * (20 + 5 / 3)
    assert tight["base_filters"][0] == 8 and tight["epochs"][0] == int(2 * 60 // epoch_s) < 20
    assert "s/step" in tight["base_filters"][1]


def test_time_for_more_than_the_epoch_cap_goes_to_members_trained_apart() -> None:
    """An epoch of 16 filters is 30.5 s here (1.1 x 1.28 s x (20 + 5/3) steps); a member needs 45 epochs x 1.3
    (the overrun a run showed over its estimate): 58.5 epochs' time, 29.7 min."""
    speeds = {c: 0.08 * c.base_filters for c in candidates_for(128)}
    budgets = {10.0: 1, 29.0: 1, 30.5: 1, 60.0: 2, 90.0: 3, 600.0: MEMBERS_MAX}
    for minutes, members in budgets.items():
        picked = choose(_fp(160, 20), speeds, minutes, 128, "x")
        assert picked["members"][0] == members, minutes
        if members > 1:
            assert picked["base_filters"][0] == 16 and picked["epochs"][0] == EPOCH_MAX
            assert f"{members} networks of 45 epochs" in picked["members"][1]
            assert f"each of the {members} members" in picked["epochs"][1]
    one = choose(_fp(160, 20), speeds, 10.0, 128, "x")["members"][1]
    assert MEMBERS_MAX == 3 and "39 epochs fit in 10 min; two networks would need 117" in one


def test_oversampling_follows_the_rarest_class() -> None:
    speeds = {c: 0.1 for c in candidates_for(128)}
    assert choose(_fp(100, 10), speeds, 10, 128, "x")["oversample"][0] == 0.33
    assert choose(_fp(100, 80), speeds, 10, 128, "x")["oversample"][0] == 0.0


AVX2 = Machine("AMD EPYC", 2, frozenset({"avx2"}))
AMX = Machine("Intel(R) Xeon(R) Processor", 2, frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))


class Timed:
    """A fake probe: ``scale`` seconds per step per filter, 20% more for a net with a level added;
    it remembers every net it timed."""

    def __init__(self, scale: float) -> None:
        self.scale, self.probed = scale, []

    def __call__(self, candidates, size, channels, num_classes):
        self.probed += list(candidates)
        return {c: self.scale * c.base_filters * (1.2 if c.max_filters else 1.0) for c in candidates}


def _ladder(probe: Timed, size: int = 128, minutes: float = 10.0, precision: str = "float32"):
    fp = _fp(160, 20)
    speeds = probe_ladder(probe, size, 1, 3, precision, epochs_fit(fp, minutes), EPOCH_CAP)
    return speeds, choose(fp, speeds, minutes, size, "x")


def test_a_faster_machine_plans_more_epochs_not_a_wider_network() -> None:
    # 160 train + 40 valid slices of 128 px, 10 min: a net fits 30 epochs at <= 0.84 s per step
    slow = Timed(0.08)                                                   # 16 filters 1.28 s: 8 filters
    speeds, picked = _ladder(slow)
    assert [c.base_filters for c in slow.probed] == [16, 8] and picked["base_filters"][0] == 8
    assert picked == choose(_fp(160, 20), {c: 0.08 * c.base_filters for c in candidates_for(128)}, 10.0, 128, "x")
    faster = Timed(0.04)                                                 # 16: 0.64 s, 39 epochs fit
    _, picked = _ladder(faster)
    assert [c.base_filters for c in faster.probed] == [16, 8]
    assert (picked["base_filters"][0], picked["epochs"][0]) == (16, 39)
    fastest = Timed(0.005)                                               # 16: 0.08 s: room for 64 filters
    _, picked = _ladder(fastest)
    assert [c.base_filters for c in fastest.probed] == [16, 8]          # nothing wider is even timed
    assert (picked["base_filters"][0], picked["epochs"][0], picked["max_filters"]) == (16, EPOCH_MAX, None)
    assert "16 filters: 0.08 s/step" in picked["base_filters"][1]


def test_at_256_px_a_fast_machine_adds_a_level_to_the_widest_net_that_fits() -> None:
    # 160 + 40 slices of 256 px, batch 4, 10 min: 30 epochs fit at <= 0.42 s per step
    fast = Timed(0.016)                                                  # 16: 0.256 s; 7 levels: 0.31 s
    speeds, picked = _ladder(fast, size=256)
    deep = fast.probed[-1]
    assert [c.base_filters for c in fast.probed] == [16, 8, 16]
    assert (deep.levels, deep.max_filters) == (levels_for(256) + 1, 16 * 2 ** (levels_for(256) - 1))
    assert picked["levels"][0] == 7 and picked["max_filters"] == 512 and "one level more" in picked["levels"][1]
    slow = Timed(0.04)
    _ladder(slow, size=256)
    assert all(c.max_filters is None for c in slow.probed) and len(slow.probed) == 2


def test_plan_probes_at_the_precision_training_will_use_and_writes_auto(dataset: Path, tmp_path: Path) -> None:
    for machine, precision in ((AVX2, "float32"), (AMX, "bfloat16")):
        probe = Timed(0.04)
        out = tmp_path / precision / "train_eval_infer.config"
        plan_dataset(dataset, out, minutes=3, probe=probe, machine=machine)
        assert {c.precision for c in probe.probed} == {precision}
        assert json.loads((out.parent / "fingerprint.json").read_text())["probe"]["precision"] == precision
        text = out.read_text()
        assert 'mixed_precision = "auto"' in text and f"timed in {precision}" in text
        assert load_config(out).train.mixed_precision == "auto"
    # a net with a level added (a fast machine at 256 px) loads with its max_filters
    out = tmp_path / "deep" / "train_eval_infer.config"
    plan_dataset(dataset, out, minutes=3, size=256, probe=Timed(0.0001), machine=AVX2)
    cfg = load_config(out)
    assert (cfg.model.num_layers, cfg.model.base_filters, cfg.model.max_filters) == (7, 16, 512)


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
    assert cfg.model.centre_intensity                              # each image on its own brain grey (generalisation.md)
    assert cfg.infer.foreground_weight == 3.0                       # the lesion classes' lower bar (generalisation.md)
    assert cfg.infer.flip_tta and cfg.augmentor.hflip               # mirrored as trained, averaged (generalisation.md)
    assert cfg.train.average_best == 5 and cfg.train.monitor == "val_loss"  # the 5 best epochs averaged (generalisation.md)
    assert cfg.model.loss == "ce_dice" and cfg.train.lr_schedule == "cosine" and cfg.train.output_bias == "prior"
    assert cfg.model.generator and cfg.augmentor.intensity          # a scanner look per image (generalisation.md)
    assert cfg.augmentor.shrinks == (0.7, 0.8, 0.9, 1.1, 1.25, 1.4)    # scaling 0.7-1.4 online (generalisation.md)
    filters = cfg.model.base_filters                                # dropout from 16 filters (generalisation.md)
    assert cfg.model.dropout_rate == (0.05 if filters >= 16 else 0.0), filters
    assert f"a net of {filters} filters" in text
    assert (cfg.intensity.kernel, cfg.intensity.gamma) == (0.7, 0.3) and cfg.intensity.noise == 4.0
    assert cfg.train.monitor == "val_loss" and cfg.train.patience >= cfg.train.epochs // 2
    # green 68 px, red 36 px in the 8 slices: green 2, red 2*sqrt(68/36) (the rarer class weighs more)
    assert cfg.model.class_weights == (1.0, 2.0, round(2 * (68 / 36) ** 0.5, 2))
    assert cfg.train.images_dir == (dataset / "train" / "images").resolve()
    assert cfg.infer.images_dir == (dataset / "test" / "images").resolve()
    assert cfg.train.epochs == result["choices"]["epochs"][0]
    # every value line has a comment line (or a self-evident constant) above it: spot-check the planned ones
    for key in ("base_filters", "num_layers", "epochs", "members", "batch_size", "foreground_oversampling",
                "image_channels"):
        above = text.splitlines()[[ln.split("=")[0].strip() for ln in text.splitlines()].index(key) - 1]
        assert above.startswith(";"), key

    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.training.train import train

    # XLA and precision as set by hand: the "auto" probe is tests/training/test_autotune.py's (20 s here)
    cfg = load_config(out, ["train.epochs=1", "model.base_filters=4", "model.num_layers=3",
                            "train.jit_compile=False", "train.mixed_precision=None"])
    summary = train(cfg, progress=False)
    # a tiny set at the fake probe's speed leaves time for more networks: one epoch of each member
    assert cfg.model.members == result["choices"]["members"][0] == 3
    assert cfg.train.member_folds and "member_folds   = True" in text     # members 2 and 3 on folds of their own
    assert summary["epochs"] == 3 and (cfg.train.model_dir / summary["best_model"]).exists()
    evaluation = evaluate_model(cfg, progress=False)
    assert set(evaluation["report"]["classes"]) == {"green", "red"}


def test_member_folds_are_written_for_a_run_of_members_only():
    from flexunet.planning.config_text import member_folds_lines

    assert member_folds_lines(1) == ""
    assert member_folds_lines(2).splitlines()[-1] == "member_folds   = True"
    assert all(ln.startswith(";") for ln in member_folds_lines(3).splitlines()[:-1])


def test_dropout_is_planned_for_nets_that_overfit_not_for_small_ones():
    from flexunet.planning.probe import dropout_for, dropout_lines

    assert [dropout_for(f) for f in (8, 16, 32, 64)] == [0.0, 0.05, 0.05, 0.05]
    assert dropout_lines(16, 5).splitlines() == [
        "; dropout 0.05 x level (the bridge 0.20): a net of 16 filters overfits a few training patients without "
        "it (docs/generalisation.md)", "dropout_rate   = 0.05"]
    assert dropout_lines(8, 5).splitlines()[1] == "dropout_rate   = 0.0"


def test_cli_refuses_to_overwrite_a_config(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import flexunet.planning.plan as plan

    monkeypatch.setattr(plan, "probe_speed", fake_probe)
    out = tmp_path / "c.config"
    out.write_text("[model]\n")
    for flags in ([], ["--overwrite"]):                                 # the user's config: never replaced
        assert main(["plan", str(dataset), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "exists and was not written by `flexunet plan`" in err
        assert out.read_text() == "[model]\n"
    out = tmp_path / "planned" / "c.config"
    assert main(["plan", str(dataset), "--out", str(out)]) == 0
    assert main(["plan", str(dataset), "--out", str(out)]) == 2          # plan's own: --overwrite replaces it
    assert "written by an earlier `flexunet plan`; pass --overwrite" in capsys.readouterr().err
    assert main(["plan", str(dataset), "--out", str(out), "--overwrite", "--classes", "isch,hem"]) == 0
    assert load_config(out).class_names == ("background", "isch", "hem")


def test_class_weights_follow_the_pixel_shares_and_are_capped() -> None:
    from flexunet.planning.plan import class_weights_for

    assert class_weights_for([0.98, 0.01, 0.0025, 0.0]) == (1.0, 2.0, 4.0, 1.0)
    assert class_weights_for([0.9, 0.05, 0.00001]) == (1.0, 2.0, 4.0)          # capped at 4
    assert class_weights_for([0.99, 0.004, 0.001]) == (1.0, 2.0, 4.0)
    assert class_weights_for([0.99, 0.005, 0.005]) == (1.0, 2.0, 2.0)


def test_costly_online_augmentation_is_planned_off_without_a_notice(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import flexunet.planning.plan as plan

    monkeypatch.setattr(plan, "augment_seconds", lambda size, channels: 10.0)     # 10 s an image: too slow
    out = tmp_path / "slow.config"
    plan_dataset(dataset, out, minutes=3, probe=fake_probe)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flexunet.config.loader"):
        cfg = load_config(out)
    assert not cfg.model.generator and "(over 25%): off" in out.read_text()
    assert cfg.augmentor.shrinks == (0.9,)                             # `augment` would write a file per scale
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]   # nothing set that cannot run


# --------------------------------------------------------------------------- the mask format


TINY_RUN = ["train.epochs=1", "model.base_filters=4", "model.num_layers=3", "train.deterministic=True",
            "train.jit_compile=False", "train.mixed_precision=None"]


def _plan(data: Path, project: Path) -> tuple[dict, str]:
    """plan -> the config as the tiny run trains it (1 epoch, tiny, deterministic), and the config's text."""
    out = project / "train_eval_infer.config"
    plan_dataset(data, out, minutes=3, probe=fake_probe, classes=["bright", "dim"])
    return load_config(out, TINY_RUN), out.read_text()


def _plan_train_evaluate(data: Path, project: Path) -> tuple[dict, str, dict]:
    """plan -> train -> evaluate; (config, config text, evaluation)."""
    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.training.train import train

    cfg, text = _plan(data, project)
    train(cfg, progress=False)
    return cfg, text, evaluate_model(cfg, progress=False)


def test_index_masks_plan_train_and_evaluate_as_colour_masks_do(dataset: Path, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Grey (L) and palette (P) index masks are planned as index masks; the grey ones feed training the very
    batches the colour masks do, and the colour-trained model scores the same on them."""
    from test_fingerprint import as_index_masks

    from flexunet.evaluation.evaluate import evaluate_model
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    runs = {}
    for kind in ("colour", "L", "P"):       # palette masks: planned here; read as grey ones in test_pipeline
        data = dataset if kind == "colour" else as_index_masks(dataset, tmp_path / f"data_{kind}", kind)
        with caplog.at_level(logging.INFO, logger="flexunet.planning.plan"):
            runs[kind] = _plan_train_evaluate(data, tmp_path / kind) if kind == "colour" else _plan(data, tmp_path / kind)
        said = [r.getMessage() for r in caplog.records if r.name == "flexunet.planning.plan" and "[mask] format" in r.getMessage()]
        assert said and said[-1].startswith(f'plan: [mask] format = "{"rgb" if kind == "colour" else "index"}"')
    cfg, text, evaluation = runs["colour"]
    assert cfg.mask.format == "rgb" and 'format = "rgb"' in text
    for kind in ("L", "P"):
        icfg, itext = runs[kind][:2]
        assert icfg.mask.format == "index" and ("mask", "rgb_map") not in icfg.origins
        section = itext[itext.index("[mask]"):itext.index("[generator]")]
        said = " ".join(line[2:] for line in section.splitlines() if line.startswith("; "))
        name = "grey" if kind == "L" else "palette"
        assert f"every mask is a single-channel or palette PNG (8 {name} ({kind})) whose pixel values are 0..2" \
            in said and "class indices" in said
        assert [line for line in section.splitlines() if not line.startswith(";")] == ["[mask]", 'format = "index"', ""]
    icfg = runs["L"][0]
    for subset, training in (("train", True), ("valid", False)):     # the same training, batch for batch
        batches = [list(make_dataset(c, subset_pairs(c, subset), training=training)) for c in (cfg, icfg)]
        assert len(batches[0]) == len(batches[1]) > 0
        for (image, onehot), (iimage, ionehot) in zip(*batches):
            np.testing.assert_array_equal(np.asarray(iimage), np.asarray(image))
            np.testing.assert_array_equal(np.asarray(ionehot), np.asarray(onehot))
    scored = load_config(tmp_path / "L" / "train_eval_infer.config",      # the colour-trained model, index masks
                         TINY_RUN + [f"train.model_dir={cfg.train.model_dir}", f"train.eval_dir={tmp_path / 'L_eval'}"])
    ievaluation = evaluate_model(scored, progress=False)
    assert ievaluation["loss"] == evaluation["loss"]
    assert ievaluation["dice_coef_multiclass"] == evaluation["dice_coef_multiclass"]
    assert json.dumps(ievaluation["classes"], sort_keys=True) == json.dumps(evaluation["classes"], sort_keys=True)
    assert set(evaluation["classes"]) == {"bright", "dim"} and evaluation["num_images"] == 2


def test_merged_colours_are_said_in_the_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    from PIL import Image

    d = make_set(tmp_path)
    path = d / "train" / "masks" / "a.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[6, 2:7] = (0, 128, 0)                          # a half-green edge under the 4x4 green square
    Image.fromarray(mask).save(path)
    out = tmp_path / "p" / "c.config"
    with caplog.at_level(logging.WARNING):
        plan_dataset(d, out, minutes=3, probe=fake_probe)
    text = out.read_text()
    assert "; (0, 128, 0): 5 px -> green; it lies between (0, 0, 0) and (0, 255, 0)" in text
    assert load_config(out).mask.map_unmapped and 'format = "rgb"' in text
    assert any("(0, 128, 0) (5 px" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_prepared_nifti_dataset_is_planned_with_its_class_names_and_window(tmp_path: Path, capsys) -> None:
    from conftest import NIFTI_SECTIONS, cli, config_text, make_nnunet

    make_nnunet(tmp_path / "raw", cases=3, labels={"background": 0, "infarct": 1, "bleed": 2})
    config = tmp_path / "n.config"
    config.write_text(config_text(**NIFTI_SECTIONS))
    for command in ("prepare", "split"):
        assert cli(capsys, command, str(config))[0] == 0, command
    out = tmp_path / "plan" / "train_eval_infer.config"
    result = plan_dataset(tmp_path / "dataset" / "N", out, minutes=3, probe=fake_probe)
    cfg = load_config(out)
    assert cfg.class_names == ("background", "infarct", "bleed") and cfg.mask.format == "index"
    assert (cfg.prepare.window_center, cfg.prepare.window_width, cfg.prepare.three_windows) == (127.5, 255.0, False)
    assert cfg.prepare.size == 32 and result["fingerprint_data"]["prepared"]["source"] == "nifti"
    assert "prepared from NIfTI in Hounsfield units" in out.read_text()


def test_a_step_is_timed_by_the_lower_quartile_of_its_repeats() -> None:
    from flexunet.planning.probe import quick_step

    # twelve steps: two slowed by another program's work, one unusually quick, the rest 0.5-0.6 s
    steps = [0.55, 2.0, 0.5, 0.6, 0.52, 0.58, 0.3, 0.57, 3.0, 0.54, 0.53, 0.56]
    ticks = iter(np.cumsum([0.0, *[s for step in steps for s in (step, 0.0)]]))
    seconds = quick_step(lambda: None, len(steps), clock=lambda: float(next(ticks)))
    assert seconds == pytest.approx(float(np.percentile(steps, 25)))
    assert 0.5 < seconds < 0.55                        # neither the lucky step nor the slowed ones


def test_plan_says_when_other_programs_slowed_its_timings(dataset: Path, tmp_path: Path, monkeypatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    import flexunet.planning.probe as probe

    class Busy:                                         # other programs kept 1.5 of 2 cores busy meanwhile
        cores = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.cores = 1.5

    monkeypatch.setattr(probe, "OtherLoad", Busy)
    monkeypatch.setattr(probe, "cpu_cores", lambda: 2)
    out = tmp_path / "busy" / "train_eval_infer.config"
    with caplog.at_level(logging.WARNING):
        plan_dataset(dataset, out, minutes=3, probe=fake_probe, machine=AVX2)
    said = "other programs kept 1.5 of 2 cores busy while the nets were timed"
    assert any(said in r.getMessage() for r in caplog.records)
    text = " ".join(ln.lstrip("; ") for ln in out.read_text().splitlines())
    assert said in text and "run plan again when it is quiet" in text            # beside the net it chose
    assert json.loads((out.parent / "fingerprint.json").read_text())["probe"]["other_programs_cores"] == 1.5
    monkeypatch.setattr(Busy, "__exit__", lambda self, *exc: setattr(self, "cores", 0.3))   # under a quarter
    caplog.clear()
    plan_dataset(dataset, out, minutes=3, probe=fake_probe, machine=AVX2, overwrite=True)
    assert "other programs" not in out.read_text() and not any("other programs" in r.getMessage()
                                                                 for r in caplog.records)


def test_timing_the_augmentation_warns_of_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from flexunet.planning.probe import augment_seconds

    with caplog.at_level(logging.WARNING):           # plan's own probe config: no warning about a file nobody wrote
        assert augment_seconds(32, 1, repeats=2) > 0
    assert [r.getMessage() for r in caplog.records] == []
