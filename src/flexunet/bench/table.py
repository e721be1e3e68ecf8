"""The benchmark's figures as text: throughput, overhead, GFLOP/s and the share of the convolution peak
(a lower precision's row: of its own peak and of the float32 peak measured in the same process).

The figures are printed, not judged: what counts as fast enough is for whoever reads them.
"""

from __future__ import annotations


def derived(report: dict) -> list[dict]:
    """One row per config and variant: the figures the table shows."""
    rows = []
    for c in report["configs"]:
        flops = c["forward_flops"]
        for v in c["variants"]:
            peak = v["peak"]["flops"]  # measured in the same process, under the same machine load
            f32 = (v.get("peak_float32") or v["peak"])["flops"]   # a lower precision's process measures both
            disk, mem = v["disk"]["images_per_s"], v["memory"]["images_per_s"]
            stream, loop = v["infer"]["streaming"]["images_per_s"], v["infer"]["per_image"]["images_per_s"]
            members = v["infer"].get("members", 1)   # [model] members: inference runs them all, training one
            rows.append({
                "config": c["config"], "size": c["image_size"], "xla": v["xla"], "precision": v["precision"],
                "images": v["images"], "batch": v["batch"],
                "train_disk": disk, "train_memory": mem, "overhead": 1.0 - disk / mem,
                # the pipeline's own time per batch against a training step's: what it could cost at most
                "input_share": v["input"]["s_per_batch"] * disk / v["batch"],
                "train_gflops": 3 * flops * disk / 1e9, "train_memory_gflops": 3 * flops * mem / 1e9,
                "train_peak_fraction": 3 * flops * disk / peak,
                "infer_streaming": stream, "infer_per_image": loop, "infer_speedup": stream / loop,
                "members": members, "infer_gflops": members * flops * stream / 1e9,
                "infer_peak_fraction": members * flops * stream / peak,
                "peak_gflops": peak / 1e9, "peak_rss_mib": v["peak_rss_mib"],
                "peak_float32_gflops": f32 / 1e9, "train_float32_peak_fraction": 3 * flops * disk / f32,
                "infer_float32_peak_fraction": members * flops * stream / f32})
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_table(report: dict) -> str:
    """The report as text: training, inference and memory."""
    rows = derived(report)
    m = report["machine"]
    peak_text = ", ".join(f"{p} {v['flops'] / 1e9:.1f} GFLOP/s" for p, v in report["peak"].items())
    lines = [f"machine: {m.get('label') or str(m['cpus']) + ' CPU core(s)'}, GPUs: {', '.join(m['gpus']) or 'none'}, TensorFlow "
             f"{m['tensorflow']}, load average {m['loadavg_start']} at start, {m['loadavg_end']} at end",
             "environment: " + (", ".join(f"{k}={v}" for k, v in m["env"].items() if v is not None) or
                                "no TensorFlow knobs set"),
             f"conv peak, median over all processes: {peak_text} (each row's 'of peak' uses its own process's)",
             "",
             "training (images/s; medians):"]
    lines += _table(["config", "size", "xla", "precision", "N", "batch", "from disk", "in memory", "overhead",
                     "input alone", "GFLOP/s", "conv peak", "of peak", "peak RSS MiB"],
                    [[r["config"], str(r["size"]), "on" if r["xla"] else "off", r["precision"], str(r["images"]),
                      str(r["batch"]), f"{r['train_disk']:.3g}", f"{r['train_memory']:.3g}", f"{r['overhead']:.1%}",
                      f"{r['input_share']:.1%}",
                      f"{r['train_gflops']:.1f}", f"{r['peak_gflops']:.1f}", f"{r['train_peak_fraction']:.0%}",
                      f"{r['peak_rss_mib']:.0f}"]
                     for r in rows])
    lower = [r for r in rows if r["precision"] != "float32"]
    if lower:
        lines += ["", "lower precision against float32, both conv peaks measured in the same process:"]
        lines += _table(["config", "xla", "precision", "conv peak", "float32 peak", "gain", "training of peak",
                         "of float32 peak", "inference of peak", "of float32 peak"],
                        [[r["config"], "on" if r["xla"] else "off", r["precision"], f"{r['peak_gflops']:.1f}",
                          f"{r['peak_float32_gflops']:.1f}", f"{r['peak_gflops'] / r['peak_float32_gflops']:.2f}x",
                          f"{r['train_peak_fraction']:.0%}", f"{r['train_float32_peak_fraction']:.0%}",
                          f"{r['infer_peak_fraction']:.0%}", f"{r['infer_float32_peak_fraction']:.0%}"]
                         for r in lower])
    lines += ["", "inference (images/s; medians; a config of K members predicts with all K, trains one at a time):"]
    lines += _table(["config", "size", "xla", "precision", "members", "streaming", "per-image predict", "speed-up",
                     "GFLOP/s", "of peak"],
                    [[r["config"], str(r["size"]), "on" if r["xla"] else "off", r["precision"], str(r["members"]),
                      f"{r['infer_streaming']:.3g}", f"{r['infer_per_image']:.3g}", f"{r['infer_speedup']:.2f}x",
                      f"{r['infer_gflops']:.1f}", f"{r['infer_peak_fraction']:.0%}"] for r in rows])
    mem = [c for c in report["configs"] if "memory" in c]
    if mem:
        lines += ["", "peak resident memory of training on N and 10 x N images:"]
        lines += _table(["config", "variant", "N", "10 x N", "steps", "MiB (N)", "MiB (10 x N)", "growth"],
                        [[c["config"], c["memory"]["variant"], str(c["memory"]["images"][0]),
                          str(c["memory"]["images"][1]), "/".join(map(str, c["memory"]["disk_steps"])),
                          f"{c['memory']['peak_rss_mib'][0]:.0f}", f"{c['memory']['peak_rss_mib'][1]:.0f}",
                          f"{c['memory']['growth']:+.1%}"] for c in mem])
    lines.append(f"\ntotal {report['seconds'] / 60:.1f} min")
    return "\n".join(lines)
