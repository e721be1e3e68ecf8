"""The benchmark's code path at toy sizes: data through synth/prepare/split, child processes, table, JSON.

The figures themselves are machine-dependent and not checked here; the benchmark is run by
hand (benchmarks/README.md).  What is checked: every figure is there and positive, the
derived ones follow from the measured ones, and the table prints them without judging them.
"""

from __future__ import annotations

import json
import math

import pytest

from conftest import TRAIN_CONFIG
from flexunet.bench.runner import Variant, _data_overrides, _make_data, memory_variant, run_bench
from flexunet.bench.table import derived, format_table
from flexunet.cli.main import main
from flexunet.utils.errors import FlexUNetError


def test_toy_run_measures_everything_and_writes_table_and_json(tmp_path):
    config = tmp_path / "toy.config"
    config.write_text(TRAIN_CONFIG)  # 32x32, 2 levels, batch 4
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
    assert row["infer_gflops"] == pytest.approx(toy["forward_flops"] * run["infer"]["streaming"]["images_per_s"] / 1e9)
    assert report["peak"]["float32"]["flops"] > 0 and len(run["peak"]["samples"]) == 2 * 2
    assert row["train_peak_fraction"] == pytest.approx(3 * toy["forward_flops"] * run["disk"]["images_per_s"]
                                                       / run["peak"]["flops"])
    assert "targets" not in report
    table = "\n".join(lines)
    assert "training (images/s; medians)" in table and "inference (images/s; medians)" in table
    assert "toy" in table and "input alone" in table and "of peak" in table
    assert "met" not in table

    # the data is kept in --workdir and reused when the recipe is the same
    root = next((tmp_path / "work" / "data").glob("*/bench-data.json")).parent
    recipe = json.loads((root / "bench-data.json").read_text())
    stamp = (root / "bench-data.json").stat().st_mtime_ns
    _make_data(config, _data_overrides(root, 32), root, recipe["count"], recipe["seed"], progress=False)
    assert (root / "bench-data.json").stat().st_mtime_ns == stamp


def _report(overhead_disk: float, stroke_gflops_share: float, speedup: float, growth: float) -> dict:
    flops = 1e9
    peak = 100e9
    def variant(disk, mem, stream, loop):
        return {"xla": False, "precision": "float32", "images": 4, "batch": 2, "peak_rss_mib": 1000.0,
                "peak": {"flops": peak, "samples": [peak]},
                "disk": {"images_per_s": disk}, "memory": {"images_per_s": mem},
                "input": {"batches": 3, "s_per_batch": 0.01},
                "infer": {"streaming": {"images_per_s": stream}, "per_image": {"images_per_s": loop}}}
    stroke_ips = stroke_gflops_share * peak / (3 * flops)
    return {"machine": {"cpus": 2, "gpus": [], "tensorflow": "x", "loadavg_start": [0.1], "loadavg_end": [0.1],
                        "env": {}},
            "peak": {"float32": {"flops": peak, "samples": [peak]}}, "seconds": 60.0,
            "configs": [
                {"config": "stroke", "image_size": 512, "forward_flops": flops,
                 "variants": [variant(stroke_ips, stroke_ips, 1.0, 1.0)]},
                {"config": "demo", "image_size": 256, "forward_flops": flops,
                 "variants": [variant(overhead_disk, 10.0, speedup, 1.0)],
                 "memory": {"variant": "xla off, float32", "images": [16, 160], "disk_steps": [20, 20],
                            "peak_rss_mib": [1000.0, 1000.0 * (1 + growth)], "growth": growth}}]}


def test_the_table_prints_the_figures_and_the_share_of_peak_without_judging_them():
    report = _report(overhead_disk=8.0, stroke_gflops_share=0.30, speedup=1.2, growth=0.25)
    rows = derived(report)
    assert [r["config"] for r in rows] == ["stroke", "demo"]
    assert rows[0]["train_peak_fraction"] == pytest.approx(0.30)
    assert rows[1]["overhead"] == pytest.approx(0.2) and rows[1]["infer_speedup"] == pytest.approx(1.2)
    text = format_table(report)
    assert "20.0%" in text and "30%" in text and "1.20x" in text and "+25.0%" in text
    assert "met" not in text and "target" not in text


@pytest.mark.parametrize("args, expected", [
    (["--steps", "0"], "--steps 0: expected an integer >= 1"),
    (["--xla", "maybe"], "--xla maybe: expected off, on or off,on"),
    (["--configs", "nowhere.config"], "--configs nowhere.config: expected 'stroke', 'demo' or the path"),
])
def test_bench_options_are_checked_by_the_command_line(tmp_path, capsys, args, expected):
    assert main(["-q", "bench", "--workdir", str(tmp_path), "--xla", "off", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flexunet bench: error: ") and expected in err[0]


def test_mixed_precision_without_a_gpu_is_refused_with_the_way_out():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(FlexUNetError, match="only measured on a GPU.*--precision float32"):
        run_bench(configs=["demo"], precisions=["float16"], echo=lambda _: None)


def test_memory_is_measured_on_the_configs_own_xla_setting():
    off, on, half = Variant(False, "float32"), Variant(True, "float32"), Variant(True, "float16")
    assert memory_variant([off, on], jit_compile=True) == on    # the stroke and demo configs ship XLA on
    assert memory_variant([off, on], jit_compile=False) == off
    assert memory_variant([half, off], jit_compile=True) == half  # no float32 XLA variant: the first
    assert memory_variant([off], jit_compile=True) == off
