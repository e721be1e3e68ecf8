"""flexunet.bench.runner at toy sizes: data through synth/prepare/split, child processes, table, JSON.

The figures themselves are machine-dependent and not checked here; the benchmark is run by
hand (benchmarks/README.md).  What is checked: every figure is there and positive, the
derived ones follow from the measured ones, and the table prints them without judging them.
"""

from __future__ import annotations

import json
import math

import pytest

from conftest import TRAIN_CONFIG
from flexunet.bench.runner import Variant, _data_overrides, _make_data, bench_precisions, memory_variant, run_bench
from flexunet.bench.table import derived
from flexunet.cli.main import main
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.machine import Machine

AVX2 = Machine("AMD EPYC", 2, frozenset({"avx2"}))
AMX = Machine("Intel(R) Xeon(R) Processor", 2, frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
GPU = Machine("AMD EPYC", 16, frozenset({"avx2"}), gpus=("NVIDIA H100",))


def test_toy_run_measures_everything_and_writes_table_and_json(tmp_path):
    config = tmp_path / "toy.config"
    assert "[model]\n" in TRAIN_CONFIG
    config.write_text(TRAIN_CONFIG.replace("[model]\n", "[model]\nmembers = 2\n"))  # 32x32, 2 levels, batch 4
    lines: list[str] = []
    report = run_bench(configs=[str(config)], out=tmp_path / "bench.json", workdir=tmp_path / "work",
                       images=4, steps=1, repeats=2, infer_images=4, xla=(False,), peak_repeats=2,
                       peak_shape=(1, 16, 16, 8), progress=False, echo=lines.append)

    assert json.loads((tmp_path / "bench.json").read_text())["configs"][0]["config"] == "toy"
    (toy,) = report["configs"]
    (run,) = toy["variants"]
    assert toy["image_size"] == 32 and toy["forward_flops"] > 0 and run["images"] == 4 and run["batch"] == 4
    assert len(run["disk"]["samples"]) == len(run["memory"]["samples"]) == 2
    for figure in (run["disk"], run["memory"], run["infer"]["streaming"], run["infer"]["per_image"]):
        assert figure["images_per_s"] > 0 and all(math.isfinite(x) and x > 0 for x in figure["samples"])
    assert run["infer"]["images"] == 4
    assert len(list((tmp_path / "work" / "toy" / "infer-output" / "streaming").glob("*.png"))) == 4
    assert len(list((tmp_path / "work" / "toy" / "infer-output" / "per_image").glob("*.png"))) == 4

    memory = toy["memory"]  # N and 10 x N images, read after the same number of steps
    assert memory["images"] == [4, 40] and memory["disk_steps"][0] == memory["disk_steps"][1] >= 10
    assert all(m > 100 for m in memory["peak_rss_mib"])

    (row,) = derived(report)
    assert row["overhead"] == pytest.approx(1 - run["disk"]["images_per_s"] / run["memory"]["images_per_s"])
    assert run["input"]["batches"] == 3 and run["input"]["s_per_batch"] > 0
    assert row["input_share"] == pytest.approx(run["input"]["s_per_batch"] * run["disk"]["images_per_s"] / 4)
    assert row["train_gflops"] == pytest.approx(3 * toy["forward_flops"] * run["disk"]["images_per_s"] / 1e9)
    # training is timed one member at a time (forward_flops: one network's); inference runs both members
    assert run["infer"]["members"] == 2 and row["members"] == 2
    assert row["infer_gflops"] == pytest.approx(2 * toy["forward_flops"] * run["infer"]["streaming"]["images_per_s"]
                                                / 1e9)
    assert report["peak"]["float32"]["flops"] > 0 and len(run["peak"]["samples"]) == 2 * 2
    assert row["train_peak_fraction"] == pytest.approx(3 * toy["forward_flops"] * run["disk"]["images_per_s"]
                                                       / run["peak"]["flops"])
    assert "targets" not in report
    table = "\n".join(lines)
    assert "training (images/s; medians)" in table and "inference (images/s; medians;" in table
    assert "toy" in table and "input alone" in table and "of peak" in table
    assert "met" not in table

    # the data is kept in --workdir and reused when the recipe is the same
    root = next((tmp_path / "work" / "data").glob("*/bench-data.json")).parent
    recipe = json.loads((root / "bench-data.json").read_text())
    stamp = (root / "bench-data.json").stat().st_mtime_ns
    _make_data(config, _data_overrides(root, 32), root, recipe["count"], recipe["seed"], progress=False)
    assert (root / "bench-data.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("args, expected", [
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--xla", "maybe"], "--xla maybe: expected off, on or off,on"),
    (["--configs", "nowhere.config"], "--configs nowhere.config: expected 'stroke', 'demo' or the path"),
])
def test_bench_options_are_checked_by_the_command_line(tmp_path, capsys, args, expected):
    assert main(["-q", "bench", "--workdir", str(tmp_path), "--xla", "off", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flexunet bench: error: ") and expected in err[0]


def test_bf16_is_measured_by_default_on_a_cpu_with_native_bf16_and_nowhere_emulated():
    assert bench_precisions(None, AVX2) == ("float32",)
    assert bench_precisions(None, AMX) == ("float32", "bfloat16")
    assert bench_precisions(None, GPU) == ("float32", "float16")
    assert bench_precisions(["bfloat16"], AMX) == ("bfloat16",) and bench_precisions(["bfloat16"], GPU) == ("bfloat16",)
    with pytest.raises(FlexUNetError, match=r"--precision bfloat16: .*AVX512_BF16 or AMX.*AMD EPYC, 2 cores, AVX2.*"
                                            r"--precision float32$"):
        bench_precisions(["float32", "bfloat16"], AVX2)
    with pytest.raises(FlexUNetError, match=r"--precision float16: .*\(a GPU\).*--precision float32,bfloat16$"):
        bench_precisions(["float16"], AMX)
    with pytest.raises(FlexUNetError, match="--precision float64: expected float32, float16 or bfloat16"):
        bench_precisions(["float64"], GPU)


def test_mixed_precision_without_a_gpu_is_refused_with_the_way_out(monkeypatch):
    import tensorflow as tf

    import flexunet.bench.runner as runner

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else real(kind))
    monkeypatch.setattr(runner, "detect", lambda: AVX2)
    with pytest.raises(FlexUNetError, match="--precision float16: measured only where.*--precision float32"):
        run_bench(configs=["demo"], precisions=["float16"], echo=lambda _: None)


def test_memory_is_measured_on_the_configs_own_xla_setting():
    off, on, half = Variant(False, "float32"), Variant(True, "float32"), Variant(True, "float16")
    assert memory_variant([off, on], jit_compile=True) == on    # the stroke and demo configs ship XLA on
    assert memory_variant([off, on], jit_compile=False) == off
    assert memory_variant([half, off], jit_compile=True) == half  # no float32 XLA variant: the first
    assert memory_variant([off], jit_compile=True) == off
