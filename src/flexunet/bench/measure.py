"""The benchmark's measuring child process: one config variant's training, inference and peak.

``bench`` starts ``python -m flexunet.bench.measure SPEC_JSON`` once per variant (and once
for the 10 x N memory run), so every figure comes from a fresh process: the spec names the
config, its ``--set`` overrides and the plan; the process prints one ``BENCH-RESULT {json}``
line that :func:`run_child` reads back.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from flexunet.config.loader import load_config
from flexunet.dataset.masks import index_to_palette_image
from flexunet.inference.infer import infer_images
from flexunet.model.predict import model_input, read_input, resize_indices
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import list_files, save_image

RESULT_TAG = "BENCH-RESULT "
PEAK_SHAPE = (8, 128, 128, 256)      # conv input; the kernel is 3x3xCxC
CHILD_TIMEOUT_S = 3600
INPUT_BATCHES = 3  # batches timed for the pipeline alone

# --------------------------------------------------------------------------- measuring


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def conv_peak(precision: str = "float32", repeats: int = 5, shape: Sequence[int] = PEAK_SHAPE) -> dict:
    """FLOP/s of one large 3x3 'same' convolution through TensorFlow: median of ``repeats`` timed calls."""
    import tensorflow as tf

    b, h, w, c = shape
    x = tf.random.uniform(shape, dtype=precision)
    k = tf.random.uniform((3, 3, c, c), dtype=precision) * 0.01
    conv = tf.function(lambda a, f: tf.reduce_sum(tf.nn.conv2d(a, f, 1, "SAME")))
    conv(x, k).numpy()  # trace and warm up
    flops = 2.0 * b * h * w * 9 * c * c
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conv(x, k).numpy()
        samples.append(flops / (time.perf_counter() - t0))
    return {"precision": precision, "shape": list(shape), "flop_per_call": flops, "samples": samples,
            "flops": median(samples)}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _fit_clock(model: Any, dataset: Any, total_steps: int) -> tuple[float, list[float]]:
    """Run ``model.fit`` for ``total_steps`` steps; return its start and the wall-clock end of every step."""
    import keras

    ends: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if logs and "loss" in logs:
                float(logs["loss"])  # the step is done when its loss is readable
            ends.append(time.perf_counter())

    begin = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=total_steps, verbose=0, shuffle=False, callbacks=[Clock()])
    return begin, ends


def _window(model: Any, dataset: Any, skip: int, steps: int, batch: int) -> float:
    """Images/s of one fit of ``skip + steps`` steps, timed from the end of step ``skip`` (or the fit's start)."""
    begin, ends = _fit_clock(model, dataset, skip + steps)
    start = ends[skip - 1] if skip else begin
    return steps * batch / (ends[-1] - start)


def _input_alone(dataset: Any, batches: int) -> dict:
    """Seconds per batch of the from-disk pipeline with no model: the first batch (start-up) untimed."""
    it = iter(dataset)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return {"batches": batches, "s_per_batch": (time.perf_counter() - t0) / batches}


def _summary(rates: list[float]) -> dict:
    return {"images_per_s": median(rates), "samples": rates}


def _measure_training(spec: dict) -> dict:
    """Child process: training of one variant from disk and from memory, alternating (and inference when asked).

    1. a fit of ``warmup`` steps from disk: tracing (and XLA compiling) happen here, untimed;
    2. one timed fit from disk, ``memory_steps`` steps in all with the warm-up, then peak memory
       is read (the N and the 10 x N run read it after the same number of steps); with
       ``memory_only`` the process ends here (the 10 x N run);
    3. alternating timed fits from one in-memory batch and from disk, ``repeats`` of each (the
       fit of step 2 is the first from disk), so a change in machine load hits both alike;
    4. inference (``infer_dir``), then the convolution peak again (it was measured after step 2); a
       lower precision's process measures the float32 peak beside its own both times.
    """
    import tensorflow as tf

    from flexunet.model.network import build_model, compile_model, configure_runtime, forward_flops
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    configured = load_config(spec["config"], spec["overrides"])
    cfg = configured.replace("model", members=1)   # [model] members trains one network at a time: timed is one
    configure_runtime(cfg)
    batch = cfg.train.batch_size
    pairs = subset_pairs(cfg, "train")[:spec["images"]]
    if len(pairs) < spec["images"]:
        raise FlexUNetError(f"bench: only {len(pairs)} training images, {spec['images']} needed")
    warmup, skip, steps, repeats = spec["warmup"], spec["skip"], spec["steps"], spec["repeats"]
    per_epoch = len(pairs) // batch
    first_steps = max(steps, spec["memory_steps"] - warmup - skip)
    model = compile_model(cfg)
    out: dict[str, Any] = {"images": len(pairs), "batch": batch, "params": int(model.count_params()),
                           "forward_flops": forward_flops(model)}

    def disk(steps_needed: int):
        return make_dataset(cfg, pairs, training=True, epochs=(0, -(-steps_needed // per_epoch)))

    t0 = time.perf_counter()
    _fit_clock(model, disk(warmup), warmup)
    out["warmup_s"] = time.perf_counter() - t0
    disk_rates = [_window(model, disk(skip + first_steps), skip, first_steps, batch)]
    out["disk_steps"] = warmup + skip + first_steps
    phases = out["phase_s"] = {"warmup": out["warmup_s"], "first_disk": time.perf_counter() - t0 - out["warmup_s"]}
    out["peak_rss_mib"] = peak_rss_mib()  # after from-disk training only: the N vs 10 x N comparison
    if spec.get("memory_only"):
        out["disk"] = _summary(disk_rates)
        return out
    out["input"] = _input_alone(disk(INPUT_BATCHES + 1), INPUT_BATCHES)
    precision = cfg.train.mixed_precision or "float32"
    t0 = time.perf_counter()
    peak = conv_peak(precision, spec["peak_repeats"], spec["peak_shape"])
    f32 = conv_peak("float32", spec["peak_repeats"], spec["peak_shape"]) if precision != "float32" else None
    phases["peak"] = time.perf_counter() - t0

    x, y = next(iter(make_dataset(cfg, pairs[:batch], training=False, batch_size=batch)))
    # the same batch again and again, with the from-disk element spec (batch dimension None): no retrace
    in_memory = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)
    memory_rates = []
    t0 = time.perf_counter()
    for r in range(repeats):
        if r:  # the first from-disk timing is the one above
            disk_rates.append(_window(model, disk(skip + steps), skip, steps, batch))
        memory_rates.append(_window(model, in_memory, skip, steps, batch))
    out["disk"], out["memory"] = _summary(disk_rates), _summary(memory_rates)
    phases["alternating"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if spec.get("infer_dir"):   # inference runs every member, as infer does (their mean in one network)
        predictor = model if configured.model.members == 1 else build_model(configured.model, seed=cfg.train.seed)
        out["infer"] = _measure_inference(cfg, predictor, Path(spec["infer_dir"]), Path(spec["infer_out"]),
                                          spec["infer_repeats"])
        out["infer"]["members"] = configured.model.members
    phases["inference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = peak["samples"] + conv_peak(precision, spec["peak_repeats"], spec["peak_shape"])["samples"]
    out["peak"] = {**peak, "samples": samples, "flops": median(samples)}
    if f32 is not None:  # the float32 peak in the same process: what the lower precision gains on it
        samples = f32["samples"] + conv_peak("float32", spec["peak_repeats"], spec["peak_shape"])["samples"]
        out["peak_float32"] = {**f32, "samples": samples, "flops": median(samples)}
    phases["peak"] += time.perf_counter() - t0
    if tf.config.list_physical_devices("GPU"):
        out["gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return out


def _measure_inference(cfg: Any, model: Any, images_dir: Path, out_dir: Path, repeats: int) -> dict:
    """infer_images (streaming, batched) against a per-image model.predict loop; one warm-up pass each."""
    files = list_files(images_dir)
    cfg = cfg.replace("infer", images_dir=images_dir, output_dir=out_dir / "streaming", overlays=False,
                      class_index_masks=False, flip_tta=False)
    loop_out = out_dir / "per_image"

    def streaming() -> float:
        t0 = time.perf_counter()
        infer_images(cfg, model=model, progress=False)
        return len(files) / (time.perf_counter() - t0)

    def per_image() -> float:
        t0 = time.perf_counter()
        predict_loop(cfg, model, files, loop_out)
        return len(files) / (time.perf_counter() - t0)

    streaming(), per_image()  # warm-up: trace both batch shapes
    stream_rates, loop_rates = [], []
    for _ in range(repeats):  # interleaved, so a change in machine load hits both alike
        stream_rates.append(streaming())
        loop_rates.append(per_image())
    return {"images": len(files), "batch": cfg.infer.batch_size, "streaming": _summary(stream_rates),
            "per_image": _summary(loop_rates)}


def predict_loop(cfg: Any, model: Any, files: Sequence[Path], out_dir: Path) -> None:
    """The baseline: per image, read, resize, ``model.predict`` one image, write the palette mask."""
    for path in files:
        original = read_input(path, cfg)
        x = model_input(original, cfg)[None]
        index = np.asarray(model.predict(x, verbose=0))[0].argmax(-1).astype(np.uint8)
        index = resize_indices(index, original.shape)
        save_image(out_dir / f"{path.stem}.png", index_to_palette_image(index, cfg.mask.rgb_map))


def run_child(spec: dict, timeout: float = CHILD_TIMEOUT_S) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               KERAS_BACKEND="tensorflow")
    cmd = [sys.executable, "-m", "flexunet.bench.measure", json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise FlexUNetError(f"bench: a measurement ran past {timeout:.0f} s ({spec['label']}); "
                            f"lower --steps/--repeats or run fewer --configs") from None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG) and done.returncode == 0:
            return json.loads(line[len(RESULT_TAG):])
    raise FlexUNetError(f"bench: the measurement {spec['label']} failed (exit {done.returncode}):\n"
                        f"{done.stderr[-3000:]}")


def _child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    result = _measure_training(spec)
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
