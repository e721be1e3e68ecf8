"""bfloat16 check: on a CPU with native bf16 (AVX512_BF16 / AMX), the figures docs/speed.md leaves to measure.

1. the machine, and which oneDNN kernels run a bf16 3x3 convolution and a bf16 matmul
   (``ONEDNN_VERBOSE=1`` in a child process: ``avx512_core_amx`` is AMX, ``avx512_core_bf16``
   AVX512_BF16);
2. the ``base`` synthetic set of ``benchmarks/generalisation.py`` (240 slices at 128 px) and
   ``flexunet plan --minutes 10`` on it: the planned net (target: >= 32 base filters, 30 epochs);
3. the planned config with 32 base filters trained twice, one after the other in fresh processes,
   each with its own `time:` line: float32 (``mixed_precision = None``, as before "auto" became
   the default) and the default ``"auto"`` (bfloat16 where it is faster and as accurate); then both
   evaluated: training steps (target: float32 / auto >= 2x) and per-class whole-set test Dice
   (target: within 0.02);
4. ``flexunet bench --configs demo --quick --xla off --no-memory``: float32 and bfloat16 rows, each
   with its share of the convolution peaks measured in its own process.

    PYTHONPATH=src python benchmarks/bf16_check.py --out bf16-check [--epochs N] [--skip-bench]

Writes OUT/summary.json and prints it as lines.  On a CPU without native bf16 it stops at step 1
(``--force``: run anyway, e.g. to try the script; "auto" then trains in float32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KERNELS = """
import tensorflow as tf
for dtype in ("float32", "bfloat16"):
    x = tf.random.uniform((8, 128, 128, 32), dtype=dtype)
    k = tf.random.uniform((3, 3, 32, 32), dtype=dtype)
    tf.nn.conv2d(x, k, 1, "SAME").numpy()
    a = tf.random.uniform((512, 512), dtype=dtype)
    tf.matmul(a, a).numpy()
"""


def _run(cmd: list[str], env: dict | None = None) -> str:
    """Run ``cmd``; its stdout and stderr together (a failure stops the check with them)."""
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"bf16_check: {' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def kernels() -> dict[str, int]:
    """oneDNN's convolution and matmul kernels for a float32 and a bf16 convolution and matmul:
    ``"convolution brg_conv_fwd:avx512_core_amx (bf16)"`` -> how often it ran.  A bf16 op that runs
    no oneDNN kernel (TensorFlow's own, emulated) is missing from the result."""
    text = _run([sys.executable, "-c", KERNELS], {"ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1"})
    found: dict[str, int] = {}
    for line in text.splitlines():
        m = re.search(r"exec,cpu,(convolution|matmul|inner_product),([^,]+),.*?src[:_](\w+?):", line)
        if m:
            name = f"{m.group(1)} {m.group(2)} ({m.group(3)})"
            found[name] = found.get(name, 0) + 1
    return found


def _train_and_evaluate(config: Path, folder: Path, sets: list[str]) -> dict:
    """``flexunet train`` then ``evaluate`` of ``config`` into ``folder``; the time: and auto: lines, Dice."""
    sets = sets + [f"train.model_dir='{folder / 'models'}'", f"train.eval_dir='{folder / 'eval'}'",
                   f"infer.output_dir='{folder / 'infer'}'"]
    flags = [x for s in sets for x in ("--set", s)]
    log = _run([sys.executable, "-m", "flexunet", "train", str(config), "--overwrite", *flags])
    line = lambda tag: next((ln.split(tag, 1)[1] for ln in log.splitlines() if tag in ln), "")  # noqa: E731
    timing = line("time: ")
    steps = float(re.search(r"training steps ([0-9.]+) s", timing).group(1)) if timing else float("nan")
    _run([sys.executable, "-m", "flexunet", "evaluate", str(config), "--overwrite", *flags])
    report = json.loads((folder / "eval" / "evaluation.json").read_text())
    dice = {name: c["whole_set"]["dice"] for name, c in report["classes"].items()}
    record = json.loads((folder / "models" / "precision.json").read_text())
    return {"time": timing, "auto": line("auto: "), "train_steps_s": steps, "dice": dice,
            "inference_precision": record.get("inference"), "evaluated_in": report.get("compute_dtype")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bf16-check"))
    p.add_argument("--count", type=int, default=240, help="slices of the synthetic set (default 240)")
    p.add_argument("--size", type=int, default=128, help="image size in px (default 128)")
    p.add_argument("--minutes", type=float, default=10.0, help="plan's budget (default 10)")
    p.add_argument("--filters", type=int, default=32, help="base filters of the side-by-side runs (default 32)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the side-by-side runs (default: planned)")
    p.add_argument("--skip-bench", action="store_true", help="leave out step 4")
    p.add_argument("--force", action="store_true", help="run on a CPU without native bf16 too")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from generalisation import make_variant

    from flexunet.config.loader import load_config
    from flexunet.utils.machine import detect

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLEXUNET_CACHE_DIR", str(out / "cache"))   # the probe is measured, not remembered
    machine = detect()
    summary: dict = {"machine": machine.label, "native_bf16": machine.native_bf16, "kernels": kernels()}
    bf16 = {k: n for k, n in summary["kernels"].items() if k.endswith("(bf16)")}
    print(f"machine: {machine.label}\noneDNN kernels: {summary['kernels']}\n"
          + (f"bf16 runs on oneDNN's {', '.join(bf16)}" if bf16 else
             "no oneDNN kernel ran the bf16 ops (TensorFlow's own, emulated: no native bf16 in use)"))
    if not machine.native_bf16 and not args.force:
        print("no native bf16 here (AVX512_BF16 / AMX): nothing more to measure (--force runs it anyway)")
        return 4
    dataset = make_variant(out / "data", "base", args.size, args.count, 137)
    planned = out / "plan" / "train_eval_infer.config"
    _run([sys.executable, "-m", "flexunet", "plan", str(dataset), "--out", str(planned), "--minutes",
          str(args.minutes), "--classes", "ischemic,hemorrhagic", "--overwrite"])
    cfg = load_config(planned)
    summary["plan"] = {"base_filters": cfg.model.base_filters, "levels": cfg.model.num_layers,
                       "epochs": cfg.train.epochs, "mixed_precision": cfg.train.mixed_precision}
    print(f"plan --minutes {args.minutes:g}: {summary['plan']}")
    sets = [f"model.base_filters={args.filters}", f"train.epochs={args.epochs or cfg.train.epochs}"]
    runs = {}
    for name, mp in (("float32", "None"), ("auto", "'auto'")):
        runs[name] = _train_and_evaluate(planned, out / name, sets + [f"train.mixed_precision={mp}"])
        print(f"{name}: auto: {runs[name]['auto']}\n  time: {runs[name]['time']}\n  test Dice {runs[name]['dice']}"
              f"; evaluated in {runs[name]['evaluated_in']}")
    summary["runs"] = runs
    f32, auto = runs["float32"], runs["auto"]
    summary["train_steps_speedup"] = f32["train_steps_s"] / auto["train_steps_s"]
    summary["dice_difference"] = {n: auto["dice"][n] - f32["dice"][n] for n in f32["dice"]}
    print(f"training steps: float32 {f32['train_steps_s']:.1f} s, auto {auto['train_steps_s']:.1f} s: "
          f"{summary['train_steps_speedup']:.2f}x (target >= 2x); Dice auto - float32: "
          + ", ".join(f"{n} {d:+.3f}" for n, d in summary["dice_difference"].items()) + " (target within 0.02)")
    if not args.skip_bench:
        text = _run([sys.executable, "-m", "flexunet", "bench", "--configs", "demo", "--quick", "--xla", "off",
                     "--no-memory", "--workdir", str(out / "bench"), "--out", str(out / "bench.json"), "--quiet"])
        summary["bench_table"] = text[text.find("machine:"):]
        print(summary["bench_table"])
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"written {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
