"""flexunet.bench.table: the derived figures follow from the measured ones; the table prints them unjudged.

The report below is made up, so every derived figure is known beforehand.
"""

from __future__ import annotations

import pytest

from flexunet.bench.table import derived, format_table


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


def test_inference_of_a_members_config_counts_the_work_of_every_member():
    report = _report(overhead_disk=8.0, stroke_gflops_share=0.30, speedup=1.2, growth=0.25)
    one = derived(report)[1]
    report["configs"][1]["variants"][0]["infer"]["members"] = 3    # the same images/s from three networks
    three = derived(report)[1]
    assert (one["members"], three["members"]) == (1, 3)
    assert three["infer_gflops"] == pytest.approx(3 * one["infer_gflops"])
    assert three["infer_peak_fraction"] == pytest.approx(3 * one["infer_peak_fraction"])
    assert three["train_gflops"] == pytest.approx(one["train_gflops"])   # training is timed one network at a time
    inference = format_table(report).split("inference (images/s")[1].splitlines()
    assert inference[1].split()[4] == "members" and inference[4].split()[4] == "3"


def test_a_bf16_row_says_its_share_of_both_peaks_measured_in_its_process():
    report = _report(overhead_disk=8.0, stroke_gflops_share=0.30, speedup=1.2, growth=0.25)
    demo = report["configs"][1]
    bf16 = {**demo["variants"][0], "precision": "bfloat16", "disk": {"images_per_s": 20.0},
            "peak": {"flops": 400e9, "samples": [400e9]}, "peak_float32": {"flops": 100e9, "samples": [100e9]}}
    demo["variants"].append(bf16)
    report["peak"]["bfloat16"] = {"flops": 400e9, "samples": [400e9]}
    rows = derived(report)
    f32_row, bf16_row = rows[1], rows[2]
    assert f32_row["train_float32_peak_fraction"] == pytest.approx(f32_row["train_peak_fraction"])
    # 3 x 1 GFLOP x 20 images/s = 60 GFLOP/s: 15% of the bf16 peak, 60% of the float32 one
    assert bf16_row["train_peak_fraction"] == pytest.approx(0.15)
    assert bf16_row["train_float32_peak_fraction"] == pytest.approx(0.60)
    text = format_table(report)
    section = text.split("lower precision against float32")[1].split("inference (images/s")[0]
    assert "bfloat16" in section and "400.0" in section and "100.0" in section and "4.00x" in section
    assert "15%" in section and "60%" in section and "float32  " not in section
    assert "lower precision against float32" not in format_table(_report(8.0, 0.3, 1.2, 0.25))
