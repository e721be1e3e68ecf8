"""jit_compile / mixed_precision = "auto": the faster setting, the cache and its keys, bf16 only where native."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from flexunet.training import autotune
from flexunet.training.autotune import Probe, resolve
from flexunet.cli.main import main
from flexunet.config.loader import load_config, parse_config
from flexunet.preprocessing.pipeline import make_dataset, subset_pairs
from flexunet.utils.errors import ConfigError
from flexunet.utils.machine import Machine
from conftest import ROOT

XEON = Machine("Intel(R) Xeon(R) Processor", 2, frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
NO_BF16 = Machine("Some CPU", 2, frozenset({"avx2", "avx512f"}))
GPU = Machine("Some CPU", 8, frozenset({"avx2"}), gpus=("Some GPU",))


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXUNET_CACHE_DIR", str(tmp_path / "cache"))


def _cfg(train_project, **train):
    train.setdefault("deterministic", False)  # Keras turns XLA off under op determinism: nothing to choose
    overrides = [f"train.{k}={v!r}" for k, v in train.items()]
    return load_config(train_project, overrides=overrides)


class Counting:
    """A fake measurement: ``ms[(jit, precision)]`` per step, float32's loss/Dice unless ``off`` says otherwise."""

    def __init__(self, ms, off=None):
        self.ms, self.off, self.calls = ms, off or {}, []

    def __call__(self, jit, precision):
        self.calls.append((jit, precision))
        loss, dice = self.off.get(precision, (0.5, 0.7))
        return Probe(self.ms[(jit, precision)], (loss,) * 3, (dice,) * 3)


def test_config_accepts_booleans_auto_and_precisions(write_config, tiny_config_text):
    base = parse_config(tiny_config_text)
    assert base.train.jit_compile == "auto" and base.train.mixed_precision == "auto"   # the defaults
    for text, jit in (("True", True), ("False", False), ('"auto"', "auto"), ('"AUTO"', "auto")):
        assert parse_config(tiny_config_text, overrides=[f"train.jit_compile={text}"]).train.jit_compile == jit
    for text, mp in (("None", None), ('"bfloat16"', "bfloat16"), ('"auto"', "auto")):
        assert parse_config(tiny_config_text, overrides=[f"train.mixed_precision={text}"]).train.mixed_precision == mp
    with pytest.raises(ConfigError, match=r'jit_compile.*expected "auto" or True or False'):
        parse_config(tiny_config_text, overrides=['train.jit_compile="yes"'])


def test_auto_picks_the_faster_setting_when_the_other_is_made_slow(train_project, caplog):
    """The real probe on the tiny net, with 1 s added to one side's steps: the other side is chosen."""
    cfg = _cfg(train_project)
    real = autotune.probe_measure(cfg, subset_pairs(cfg, "train"))
    measured = {}

    def slowed(slow_jit):
        def measure(jit, precision):
            if (jit, precision) not in measured:
                measured[(jit, precision)] = real(jit, precision)
            probe = measured[(jit, precision)]
            return dataclasses.replace(probe, ms=probe.ms + (1000 if jit == slow_jit else 0))
        return measure

    caplog.set_level(logging.INFO, "flexunet")
    assert resolve(cfg, [], machine=NO_BF16, measure=slowed(True)).train.jit_compile is False
    assert "XLA off" in caplog.text and "-> off" in caplog.text
    autotune.cache_command("clear")
    assert resolve(cfg, [], machine=NO_BF16, measure=slowed(False)).train.jit_compile is True
    assert "-> on" in caplog.text
    assert set(measured) == {(False, "float32"), (True, "float32")}   # float32 only: this CPU has no native bf16
    assert all(p.ms > 0 and len(p.loss) == autotune.STEPS for p in measured.values())


def test_the_cache_is_keyed_by_machine_model_shape_and_tensorflow(train_project, monkeypatch, capsys):
    import tensorflow as tf

    measure = Counting({(False, "float32"): 10.0, (True, "float32"): 20.0})
    cfg = _cfg(train_project)

    def probes(c, machine=NO_BF16):
        before = len(measure.calls)
        expected = c.train.jit_compile is True  # "auto": off, the faster here
        assert resolve(c, [], machine=machine, measure=measure).train.jit_compile is expected
        return len(measure.calls) - before

    assert probes(cfg) == 2
    assert probes(cfg) == 0                                                    # cached
    assert probes(cfg.replace("train", epochs=9, seed=1)) == 0                 # not the model's shape
    assert probes(cfg, Machine("Other CPU", 2, NO_BF16.flags)) == 2            # another machine
    assert probes(cfg, dataclasses.replace(NO_BF16, cores=1)) == 2
    assert probes(cfg.replace("model", base_filters=8)) == 2                   # another model shape
    assert probes(cfg.replace("model", image_width=64, image_height=64)) == 2
    assert probes(cfg.replace("train", batch_size=2)) == 2
    assert probes(cfg.replace("train", jit_compile=True, mixed_precision="auto")) == 0   # nothing to choose
    with monkeypatch.context() as patch:
        patch.setattr(tf, "__version__", "9.99.0")
        assert probes(cfg) == 2                                                # another TensorFlow
    assert probes(cfg) == 0
    entries = json.loads((autotune.cache_dir() / autotune.CACHE_FILE).read_text())["entries"]
    assert len(entries) == 7 and all(e["jit_compile"] is False for e in entries.values())

    assert main(["cache", "show"]) == 0
    shown = capsys.readouterr().err
    assert "7 speed decision(s)" in shown and "XLA off 10 ms/step, on 20" in shown
    assert main(["cache", "clear"]) == 0
    assert not (autotune.cache_dir() / autotune.CACHE_FILE).exists()
    assert probes(cfg) == 2                                                    # cleared: measured again


def test_bfloat16_is_never_tried_on_a_cpu_without_native_support(train_project):
    ms = {(False, "float32"): 10.0, (True, "float32"): 20.0, (False, "bfloat16"): 1.0, (False, "float16"): 2.0}
    cfg = _cfg(train_project, mixed_precision="auto")
    measure = Counting(ms)
    assert resolve(cfg, [], machine=NO_BF16, measure=measure).train.mixed_precision is None
    assert all(p == "float32" for _, p in measure.calls)
    # the same figures on a CPU with AVX512_BF16/AMX: faster and as accurate, so chosen
    measure = Counting(ms)
    assert resolve(cfg, [], machine=XEON, measure=measure).train.mixed_precision == "bfloat16"
    assert (False, "bfloat16") in measure.calls
    # a GPU: float16, never bfloat16
    measure = Counting(ms)
    assert resolve(cfg, [], machine=GPU, measure=measure).train.mixed_precision == "float16"
    assert all(p != "bfloat16" for _, p in measure.calls)


def test_a_faster_precision_outside_the_tolerance_is_not_kept(train_project):
    ms = {(False, "float32"): 10.0, (True, "float32"): 20.0, (False, "bfloat16"): 5.0}
    cfg = _cfg(train_project, mixed_precision="auto")
    loss_off = Counting(ms, off={"bfloat16": (0.5 * (1 + 2 * autotune.LOSS_TOLERANCE), 0.7)})
    assert resolve(cfg, [], machine=XEON, measure=loss_off).train.mixed_precision is None
    autotune.cache_command("clear")
    dice_off = Counting(ms, off={"bfloat16": (0.5, 0.7 - 2 * autotune.DICE_TOLERANCE)})
    assert resolve(cfg, [], machine=XEON, measure=dice_off).train.mixed_precision is None
    autotune.cache_command("clear")
    close = Counting(ms, off={"bfloat16": (0.5 * (1 + autotune.LOSS_TOLERANCE / 2), 0.7 - autotune.DICE_TOLERANCE / 2)})
    assert resolve(cfg, [], machine=XEON, measure=close).train.mixed_precision == "bfloat16"


def test_the_probe_leaves_the_run_as_if_the_choice_were_written_by_hand(train_project, monkeypatch, caplog):
    """A real probe of float32 and bfloat16 (the CPU's flags faked native) under op determinism, then the run."""
    from flexunet.training.train import train

    monkeypatch.setattr(autotune, "detect", lambda gpu: XEON)
    caplog.set_level(logging.INFO, "flexunet")
    auto = _cfg(train_project, epochs=2, deterministic=True, mixed_precision="auto")
    train(auto, progress=False)
    line = caplog.text.split("auto: ")[1].splitlines()[0]
    assert "float32" in line and "bfloat16" in line and "measured earlier" not in line
    chosen = "bfloat16" if line.split("->")[-1].strip().startswith("bfloat16") else None
    runs = [json.loads((auto.train.eval_dir / "history.json").read_text())]
    by_hand = _cfg(train_project, epochs=2, deterministic=True, mixed_precision=chosen)
    train(by_hand, progress=False, overwrite=True)
    runs.append(json.loads((by_hand.train.eval_dir / "history.json").read_text()))
    assert runs[0] == runs[1]


def test_deterministic_runs_do_not_measure_xla(train_project):
    measure = Counting({})
    cfg = _cfg(train_project, deterministic=True)
    assert resolve(cfg, [], machine=NO_BF16, measure=measure).train.jit_compile is False and not measure.calls


# --------------------------------------------------------------------------- "auto" by default


def _fake_machine(tmp_path, monkeypatch, cpuinfo: str):
    """autotune sees a machine whose /proc/cpuinfo is ``cpuinfo`` (and no GPU)."""
    from flexunet.utils.machine import detect

    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    monkeypatch.setattr(autotune, "detect", lambda gpu: detect(cpuinfo=path))
    return detect(cpuinfo=path)


AVX2_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
AMX_CPUINFO = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
               "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")


def test_a_config_without_the_key_the_originals_included_gets_auto():
    original = load_config(ROOT / "tests" / "data" / "original_train_eval_infer.config")
    assert original.train.mixed_precision == "auto"


def test_without_native_bf16_float32_is_chosen_with_no_precision_probe(train_project, tmp_path, monkeypatch,
                                                                        caplog):
    """The default ("auto") on a faked AVX2 CPU: float32 only, nothing timed for the precision, the reason in
    the one auto: line and in the returned record; the same config on a faked AMX CPU times bfloat16."""
    machine = _fake_machine(tmp_path, monkeypatch, AVX2_CPUINFO)
    assert not machine.native_bf16 and autotune.precision_candidates(machine) == ("float32",)
    cfg = _cfg(train_project, jit_compile=False)
    assert cfg.train.mixed_precision == "auto"
    measure = Counting({})
    caplog.set_level(logging.INFO, "flexunet")
    resolved, record = autotune.settle(cfg, [], measure=measure)
    assert resolved.train.mixed_precision is None and not measure.calls          # no probe at all
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto: ")]
    assert len(said) == 1 and "precision float32: no native bfloat16" in said[0] and "nothing to measure" in said[0]
    assert record["precision"] == "float32" and "no native bfloat16" in record["precision_why"]
    # with XLA left to measure: only float32 is timed, and the line still says why
    caplog.clear()
    measure = Counting({(False, "float32"): 10.0, (True, "float32"): 20.0})
    resolved, record = autotune.settle(_cfg(train_project), [], measure=measure)
    assert resolved.train.mixed_precision is None and {p for _, p in measure.calls} == {"float32"}
    assert "-> off; precision float32: no native bfloat16" in caplog.text and record["precision"] == "float32"
    # native bf16: bfloat16 is a candidate, timed, and kept when faster and as accurate
    _fake_machine(tmp_path, monkeypatch, AMX_CPUINFO)
    measure = Counting({(False, "float32"): 10.0, (False, "bfloat16"): 4.0})
    resolved, record = autotune.settle(cfg, [], measure=measure)
    assert (False, "bfloat16") in measure.calls and resolved.train.mixed_precision == "bfloat16"
    assert record["precision"] == "bfloat16" and "2.50x" in record["precision_why"]


def test_the_default_trains_as_an_explicit_float32_on_a_cpu_without_native_bf16(train_project, tmp_path,
                                                                                 monkeypatch):
    """Same history, same weights; the run record says float32 and why; the model runs in float32 after."""
    import numpy as np

    from flexunet.model.precision import RECORD
    from flexunet.model.trained import load_trained
    from flexunet.training.train import train

    _fake_machine(tmp_path, monkeypatch, AVX2_CPUINFO)
    runs = []
    for mixed in ("auto", None):
        cfg = _cfg(train_project, epochs=2, deterministic=True, mixed_precision=mixed)
        train(cfg, progress=False, overwrite=bool(runs))
        meta = json.loads((cfg.train.model_dir / "model_meta.json").read_text())
        record = json.loads((cfg.train.model_dir / RECORD).read_text())
        assert meta["speed"]["precision"] == "float32" and record["inference"] == "float32"
        model = load_trained(cfg)
        assert model.get_layer("enc0_conv1").dtype_policy.compute_dtype == "float32"
        runs.append((json.loads((cfg.train.eval_dir / "history.json").read_text()), model.get_weights(),
                     meta["speed"]["precision_why"]))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    assert "no native bfloat16" in runs[0][2] and runs[1][2] == "set by [train] mixed_precision"


def test_a_members_config_is_timed_on_one_network_as_each_member_trains(train_project, monkeypatch):
    import flexunet.model.network as network

    built = []
    real = network.compile_model
    monkeypatch.setattr(network, "compile_model", lambda cfg: built.append(cfg.model.members) or real(cfg))
    cfg = _cfg(train_project).replace("model", members=3)
    x, y = next(iter(make_dataset(cfg, subset_pairs(cfg, "train"), training=True)))
    autotune.time_steps(cfg, (x, y), False, "float32")
    assert built == [1]
