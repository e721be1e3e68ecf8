"""``flexunet bench``: how close training and inference get to the hardware, rerunnable by anyone.

For each config (``stroke``: the shipped stroke config, 512x512, ~125 M parameters;
``demo``: the package's demo config, 256x256; or the path of any config file):

1. data: synthetic slices written to disk through the real synth -> prepare -> split path
   (kept and reused when ``--workdir`` is given);
2. peak: a large convolution through TensorFlow (``[8,128,128,256]`` input, ``3x3x256x256``
   kernel, in the variant's precision), median of repeats taken inside every measuring
   process, halfway and at the end: the attainable FLOP/s under the same machine load;
3. training, in a fresh process per variant (XLA off / on; float16 mixed precision on a GPU):
   the real pipeline (``data.make_dataset`` over N images on disk + ``model.fit``) and the
   same model fed one in-memory batch (the compute bound), after an untimed warm-up, in
   alternating timed fits; figures are medians.  Pipeline overhead is ``1 - from_disk / in_memory``;
4. memory: peak resident memory (VmHWM) right after the from-disk training, on N images and,
   in another process doing the same, on 10 x N images;
5. inference: ``infer.infer_images`` (streaming, batched) against a per-image
   ``model.predict`` loop that reads and writes the same files;
6. achieved FLOP/s: 3 x forward FLOPs x images/s for training, 1 x for inference.

Timings are only as quiet as the machine: the load average at start and end is recorded,
and a busy machine is reported as such.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.errors import FlexUNetError

log = logging.getLogger(__name__)

RESULT_TAG = "BENCH-RESULT "
PEAK_SHAPE = (8, 128, 128, 256)      # conv input; the kernel is 3x3xCxC
CHILD_TIMEOUT_S = 3600
ENV_KNOBS = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
             "OMP_NUM_THREADS")   # read by TensorFlow at import: recorded with the figures
TARGETS = {"overhead": 0.10, "train_peak_fraction": 0.50, "infer_speedup": 1.3, "memory_growth": 0.10}


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Plan:
    """How much to run for one config.

    ``images``: N, the training images of the throughput run (a multiple of the batch);
    the memory run uses ``10 x N``.  ``warmup`` steps trace and compile, untimed; then
    ``repeats`` timings of ``steps`` steps, each a fit whose first ``skip`` steps are not
    timed.  ``full_epoch``: the from-disk training before the memory reading covers one
    pass over the 10 x N images (and the N run trains as many steps), so the 10 x N run
    really reads them all; otherwise both read memory after ``warmup + skip + steps``.
    ``infer_images``: images per inference pass (``infer_repeats`` passes after a warm-up).
    """

    images: int
    warmup: int
    skip: int
    steps: int
    repeats: int
    full_epoch: bool
    infer_images: int
    infer_repeats: int


INPUT_BATCHES = 3  # batches timed for the pipeline alone

# The stroke model is ~116 GFLOP forward per 512x512 image: a training step of batch 2 takes
# 10-25 s on 2 CPU cores, so by default it gets one single-step timing from disk and one from
# memory per variant (that keeps the default run under 10 minutes; --repeats 3 gives medians);
# the demo net gets real medians.
PLANS = {
    "stroke": Plan(images=2, warmup=1, skip=0, steps=1, repeats=1, full_epoch=False, infer_images=2,
                   infer_repeats=1),
    "demo": Plan(images=16, warmup=2, skip=1, steps=3, repeats=3, full_epoch=True, infer_images=16,
                 infer_repeats=3),
}
QUICK = {
    "stroke": Plan(images=2, warmup=1, skip=0, steps=1, repeats=1, full_epoch=False, infer_images=2,
                   infer_repeats=1),
    "demo": Plan(images=8, warmup=1, skip=1, steps=2, repeats=3, full_epoch=True, infer_images=8,
                 infer_repeats=2),
}


@dataclass(frozen=True)
class Variant:
    xla: bool
    precision: str   # "float32", or the mixed policy's compute type: "float16" / "bfloat16"

    @property
    def label(self) -> str:
        return f"xla {'on' if self.xla else 'off'}, {self.precision}"


# --------------------------------------------------------------------------- configs and data


def _stroke_config_path() -> Path:
    path = Path(__file__).resolve().parents[2] / "configs" / "stroke-ct" / "train_eval_infer.config"
    if not path.is_file():
        raise FlexUNetError(f"{path}: the shipped stroke config is not there (an installed package has no "
                            f"configs/ folder); pass its path instead: --configs /path/to/train_eval_infer.config")
    return path


def _base_config(name: str, folder: Path) -> Path:
    """The config file behind a --configs entry: stroke, demo, or a path."""
    if name == "stroke":
        return _stroke_config_path()
    if name == "demo":
        from flexunet.demo import demo_config_text
        from flexunet.io import write_text

        path = folder / "demo.config"
        write_text(path, demo_config_text())
        return path
    path = Path(name)
    if not path.is_file():
        raise FlexUNetError(f"--configs {name}: expected 'stroke', 'demo' or the path of a config file")
    return path.resolve()


def _config_name(entry: str) -> str:
    return entry if entry in ("stroke", "demo") else Path(entry).stem


def _data_overrides(root: Path, size: int) -> list[str]:
    """Where the bench's synthetic data lives, as --set overrides."""
    split = root / "split"
    out = [f"prepare.raw_dir={root / 'raw'}", f"prepare.output_dir={root / 'master'}", f"prepare.size={size}",
           "prepare.source='png'", f"split.output_dir={split}", "split.name='Bench'",
           "split.ratios=(0.80, 0.10, 0.10)", "split.group_by='slice'", "split.mini_test_count=0"]
    for subset in ("train", "valid", "test"):
        out += [f"{subset}.images_dir={split / 'Bench' / subset / 'images'}",
                f"{subset}.masks_dir={split / 'Bench' / subset / 'masks'}"]
    return out


def _make_data(cfg_path: Path, overrides: list[str], root: Path, count: int, seed: int,
               progress: bool) -> None:
    """synth -> prepare -> split into ``root`` (skipped when a finished set of the same recipe is there)."""
    from flexunet.config import load_config
    from flexunet.prepare import prepare_dataset
    from flexunet.split import split_dataset
    from flexunet.synth import synthesize

    marker = root / "bench-data.json"
    recipe = {"count": count, "seed": seed, "size": root.name}
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return
    if root.exists():
        shutil.rmtree(root)
    cfg = load_config(cfg_path, overrides)
    synthesize(root / "raw", count=count, seed=seed, size=cfg.prepare.size, progress=progress, overwrite=True)
    prepare_dataset(cfg, overwrite=True, progress=progress)
    split_dataset(cfg, overwrite=True)
    marker.write_text(json.dumps(recipe))


def _infer_folder(cfg_path: Path, overrides: list[str], dest: Path, count: int) -> Path:
    """``count`` test images copied to ``dest`` (infer_images predicts a whole folder)."""
    from flexunet.config import load_config
    from flexunet.io import list_files

    cfg = load_config(cfg_path, overrides)
    files = list_files(cfg.require_dir("test", "images_dir"))
    files += list_files(cfg.require_dir("train", "images_dir"))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in files[:count]:
        shutil.copy2(f, dest / f.name)
    return dest


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
    4. inference (``infer_dir``), then the convolution peak again (it was measured after step 2).
    """
    import tensorflow as tf

    from flexunet.config import load_config
    from flexunet.data import make_dataset, subset_pairs
    from flexunet.model import forward_flops
    from flexunet.train import compile_model, configure_runtime

    cfg = load_config(spec["config"], spec["overrides"])
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
    if spec.get("infer_dir"):
        out["infer"] = _measure_inference(cfg, model, Path(spec["infer_dir"]), Path(spec["infer_out"]),
                                          spec["infer_repeats"])
    phases["inference"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    samples = peak["samples"] + conv_peak(precision, spec["peak_repeats"], spec["peak_shape"])["samples"]
    phases["peak"] += time.perf_counter() - t0
    out["peak"] = {**peak, "samples": samples, "flops": median(samples)}
    if tf.config.list_physical_devices("GPU"):
        out["gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return out


def _measure_inference(cfg: Any, model: Any, images_dir: Path, out_dir: Path, repeats: int) -> dict:
    """infer_images (streaming, batched) against a per-image model.predict loop; one warm-up pass each."""
    from flexunet.infer import infer_images
    from flexunet.io import list_files

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
    import numpy as np

    from flexunet.io import save_image
    from flexunet.masks import index_to_palette_image
    from flexunet.predict import model_input, read_input, resize_indices

    for path in files:
        original = read_input(path, cfg)
        x = model_input(original, cfg)[None]
        index = np.asarray(model.predict(x, verbose=0))[0].argmax(-1).astype(np.uint8)
        index = resize_indices(index, original.shape)
        save_image(out_dir / f"{path.stem}.png", index_to_palette_image(index, cfg.mask.rgb_map))


def _run_child(spec: dict, timeout: float = CHILD_TIMEOUT_S) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               KERAS_BACKEND="tensorflow")
    cmd = [sys.executable, "-m", "flexunet.bench", "--child", json.dumps(spec)]
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


# --------------------------------------------------------------------------- the run


def run_bench(configs: Sequence[str] = ("stroke", "demo"), out: str | os.PathLike | None = None,
              workdir: str | os.PathLike | None = None, quick: bool = False, steps: int | None = None,
              repeats: int | None = None, images: int | None = None, xla: Sequence[bool] = (False, True),
              precisions: Sequence[str] | None = None, memory: bool = True, sets: Sequence[str] = (),
              seed: int = 137, infer_images: int | None = None, peak_repeats: int = 2,
              peak_shape: Sequence[int] = PEAK_SHAPE, progress: bool = True,
              echo: Callable[[str], None] = print) -> dict:
    """Benchmark training and inference of each config; print a table, return (and write) the figures.

    ``configs``: "stroke", "demo" or config file paths.  ``out``: a JSON file for the figures.
    ``workdir``: where data and outputs go (kept, and its data reused; default a temporary
    folder, removed).  ``quick``: smaller plans.  ``steps``/``repeats``/``images`` override
    every plan's steps per timing, timings, and N; ``infer_images`` its images per inference
    pass.  ``xla``: the jit_compile settings to run.  ``peak_repeats`` and ``peak_shape``: the
    convolution peak, measured twice in every process.
    ``precisions``: "float32" and/or mixed "float16"/"bfloat16" (default float32, plus float16
    on a GPU; mixed precision is refused without a GPU).  ``memory``: also train on 10 x N
    images in a separate process to compare peak memory.  ``sets``: ``section.key=value``
    overrides applied to every config (as ``--set``), e.g. ``train.cache=False``.
    """
    import tensorflow as tf

    started = time.perf_counter()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    precisions = tuple(precisions or (("float32", "float16") if gpus else ("float32",)))
    for p in precisions:
        if p not in ("float32", "float16", "bfloat16"):
            raise FlexUNetError(f"--precision {p}: expected float32, float16 or bfloat16")
        if p != "float32" and not gpus:
            raise FlexUNetError(f"--precision {p}: mixed precision is only measured on a GPU (none found); "
                                f"use --precision float32")
    if not xla:
        raise FlexUNetError("--xla: expected at least one of off, on")
    variants = [Variant(bool(x), p) for p, x in itertools.product(precisions, xla)]
    machine = _machine(gpus)
    echo(_machine_line(machine))

    peak = {"repeats": peak_repeats, "shape": list(peak_shape)}
    with _workdir(workdir) as work:
        results = [_bench_config(entry, work, quick, steps, repeats, images, infer_images, variants, memory,
                                 list(sets), peak, seed, progress, echo) for entry in configs]
    machine["loadavg_end"] = _loadavg()
    peaks = {}
    for p in precisions:
        samples = [x for c in results for v in c["variants"] if v["precision"] == p for x in v["peak"]["samples"]]
        peaks[p] = {"samples": samples, "flops": median(samples)}
    report = {"machine": machine, "peak": peaks, "configs": results,
              "settings": {"configs": list(configs), "quick": quick, "steps": steps, "repeats": repeats,
                           "images": images, "xla": [bool(x) for x in xla], "precisions": list(precisions),
                           "infer_images": infer_images, "memory": memory, "sets": list(sets), "seed": seed,
                           "peak_repeats": peak_repeats, "peak_shape": list(peak_shape)},
              "seconds": time.perf_counter() - started}
    report["targets"] = targets(report)
    echo("")
    echo(format_table(report))
    if out is not None:
        from flexunet.io import write_json

        write_json(Path(out), report)
        echo(f"figures written to {out}")
    return report


@contextlib.contextmanager
def _workdir(workdir: str | os.PathLike | None):
    if workdir is not None:
        path = Path(workdir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="flexunet-bench-") as tmp:
        yield Path(tmp)


def memory_variant(variants: Sequence[Variant], jit_compile: bool) -> Variant:
    """The variant whose N vs 10 x N memory is measured: the config's own XLA setting in float32, else the first."""
    return next((v for v in variants if v.xla == jit_compile and v.precision == "float32"), variants[0])


def _bench_config(entry: str, work: Path, quick: bool, steps: int | None, repeats: int | None,
                  images: int | None, infer_images: int | None, variants: list[Variant], memory: bool,
                  sets: list[str], peak: dict, seed: int, progress: bool, echo: Callable[[str], None]) -> dict:
    from flexunet.config import load_config

    name = _config_name(entry)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = _base_config(entry, folder)
    base = load_config(cfg_path, sets)
    size = base.model.image_height
    if base.model.image_width != size:
        raise FlexUNetError(f"{cfg_path}: the bench writes square synthetic slices; expected "
                            f"image_width = image_height (got {base.model.image_width} x {size})")
    plan = (QUICK if quick else PLANS).get(name, (QUICK if quick else PLANS)["demo"])
    plan = replace(plan, steps=steps or plan.steps, repeats=repeats or plan.repeats,
                   images=images or plan.images, infer_images=infer_images or plan.infer_images)
    batch = base.train.batch_size
    plan = replace(plan, images=-(-plan.images // batch) * batch)   # whole batches only
    n_large = 10 * plan.images if memory else plan.images
    data_root = work / "data" / f"{size}px-{n_large}"
    data = sets + _data_overrides(data_root, size)
    count = math.ceil(n_large / 0.8 * 1.1) + plan.infer_images + 4
    echo(f"[{name}] synthetic data: {count} slices at {size} px through synth -> prepare -> split")
    _make_data(cfg_path, data, data_root, count, seed, progress)
    infer_dir = _infer_folder(cfg_path, data, folder / "infer-input", plan.infer_images)
    memory_steps = plan.warmup + plan.skip + plan.steps   # from-disk steps before peak memory is read
    if plan.full_epoch:  # ... enough for one pass over the 10 x N images, on both N and 10 x N
        memory_steps = max(memory_steps, n_large // batch)

    common = data + [f"train.model_dir={folder / 'models'}", f"train.eval_dir={folder / 'eval'}",
                     "train.tensorboard=False", "train.epoch_change_infer=False", "train.strategy='default'",
                     f"train.seed={seed}"]

    mem_v = memory_variant(variants, base.train.jit_compile)

    def spec(v: Variant, n: int, label: str, **extra: Any) -> dict:
        mp = "None" if v.precision == "float32" else repr(v.precision)
        steps_before_reading = memory_steps if v == mem_v else plan.warmup + plan.skip + plan.steps
        return {"config": str(cfg_path), "overrides": common + [f"train.jit_compile={v.xla}",
                                                                f"train.mixed_precision={mp}"],
                "images": n, "warmup": plan.warmup, "skip": plan.skip, "steps": plan.steps,
                "repeats": plan.repeats, "memory_steps": steps_before_reading, "peak_repeats": peak["repeats"],
                "peak_shape": peak["shape"], "label": label, **extra}

    runs = []
    for v in variants:
        job = spec(v, plan.images, f"{name} training + inference, {v.label}", infer_dir=str(infer_dir),
                   infer_out=str(folder / "infer-output"), infer_repeats=plan.infer_repeats)
        echo(f"[{name}] {job['label']}: {plan.images} images, batch {batch} ...")
        t0 = time.perf_counter()
        result = _run_child(job)
        echo(f"[{name}] {v.label}: from disk {result['disk']['images_per_s']:.3g} img/s, in memory "
             f"{result['memory']['images_per_s']:.3g} img/s, streaming inference "
             f"{result['infer']['streaming']['images_per_s']:.3g} img/s, conv peak "
             f"{result['peak']['flops'] / 1e9:.1f} GFLOP/s ({time.perf_counter() - t0:.0f} s)")
        runs.append({"xla": v.xla, "precision": v.precision, **result})
    out = {"config": name, "path": str(cfg_path), "image_size": size, "batch": batch, "plan": asdict(plan),
           "params": runs[0]["params"], "forward_flops": runs[0]["forward_flops"], "variants": runs}
    if memory:
        v = mem_v
        job = spec(v, n_large, f"{name} training on 10 x N = {n_large} images, {v.label}", memory_only=True)
        echo(f"[{name}] {job['label']} (peak memory) ...")
        large = _run_child(job)
        small = runs[variants.index(mem_v)]
        out["memory"] = {"variant": v.label, "images": [small["images"], large["images"]],
                         "disk_steps": [small["disk_steps"], large["disk_steps"]],
                         "peak_rss_mib": [small["peak_rss_mib"], large["peak_rss_mib"]],
                         "growth": large["peak_rss_mib"] / small["peak_rss_mib"] - 1.0,
                         "disk_images_per_s_10n": large["disk"]["images_per_s"]}
        echo(f"[{name}] peak RSS {small['peak_rss_mib']:.0f} MiB on {small['images']} images, "
             f"{large['peak_rss_mib']:.0f} MiB on {large['images']}")
    return out


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _machine(gpus: list[str]) -> dict:
    import keras
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": gpus, "loadavg_start": _loadavg(), "env": {k: os.environ.get(k) for k in ENV_KNOBS}}


def _machine_line(m: dict) -> str:
    load = m["loadavg_start"]
    text = (f"FlexUNet bench: {m['cpus']} CPU core(s), {len(m['gpus'])} GPU(s), TensorFlow {m['tensorflow']}, "
            f"Keras {m['keras']}")
    if load is not None:
        text += f"; load average {load[0]:.2f}"
        if load[0] > 0.5 * (m["cpus"] or 1):
            text += " (the machine is busy: timings will be contended)"
    return text


# --------------------------------------------------------------------------- figures


def derived(report: dict) -> list[dict]:
    """One row per config and variant: the figures the table shows."""
    rows = []
    for c in report["configs"]:
        flops = c["forward_flops"]
        for v in c["variants"]:
            peak = v["peak"]["flops"]  # measured in the same process, under the same machine load
            disk, mem = v["disk"]["images_per_s"], v["memory"]["images_per_s"]
            stream, loop = v["infer"]["streaming"]["images_per_s"], v["infer"]["per_image"]["images_per_s"]
            rows.append({
                "config": c["config"], "size": c["image_size"], "xla": v["xla"], "precision": v["precision"],
                "images": v["images"], "batch": v["batch"],
                "train_disk": disk, "train_memory": mem, "overhead": 1.0 - disk / mem,
                # the pipeline's own time per batch against a training step's: what it could cost at most
                "input_share": v["input"]["s_per_batch"] * disk / v["batch"],
                "train_gflops": 3 * flops * disk / 1e9, "train_memory_gflops": 3 * flops * mem / 1e9,
                "train_peak_fraction": 3 * flops * disk / peak,
                "infer_streaming": stream, "infer_per_image": loop, "infer_speedup": stream / loop,
                "infer_gflops": flops * stream / 1e9, "infer_peak_fraction": flops * stream / peak,
                "peak_gflops": peak / 1e9, "peak_rss_mib": v["peak_rss_mib"]})
    return rows


def targets(report: dict) -> list[dict]:
    """The issue's four targets, each met or not, with the figures behind it."""
    rows = derived(report)
    out = []

    def add(name: str, limit: str, values: dict[str, float], met: bool) -> None:
        out.append({"target": name, "limit": limit, "values": values, "met": met})

    if rows:
        values = {f"{r['config']} ({_vlabel(r)})": r["overhead"] for r in rows}
        add("pipeline overhead", f"<= {TARGETS['overhead']:.0%}", values,
            all(v <= TARGETS["overhead"] for v in values.values()))
    stroke = [r for r in rows if r["config"] == "stroke"]
    if stroke:
        values = {_vlabel(r): r["train_peak_fraction"] for r in stroke}
        add("stroke training, fraction of conv peak", f">= {TARGETS['train_peak_fraction']:.0%}", values,
            max(values.values()) >= TARGETS["train_peak_fraction"])
    demo = [r for r in rows if r["config"] == "demo"]
    if demo:
        values = {_vlabel(r): r["infer_speedup"] for r in demo}
        add("demo streaming inference vs per-image predict", f">= {TARGETS['infer_speedup']}x", values,
            max(values.values()) >= TARGETS["infer_speedup"])
    mem = {c["config"]: c["memory"]["growth"] for c in report["configs"] if "memory" in c}
    if mem:
        add("peak memory, 10 x N vs N images", f"<= +{TARGETS['memory_growth']:.0%}", mem,
            all(v <= TARGETS["memory_growth"] for v in mem.values()))
    return out


def _vlabel(r: dict) -> str:
    return f"xla {'on' if r['xla'] else 'off'}, {r['precision']}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_table(report: dict) -> str:
    """The report as text: training, inference, memory and targets."""
    rows = derived(report)
    m = report["machine"]
    peak_text = ", ".join(f"{p} {v['flops'] / 1e9:.1f} GFLOP/s" for p, v in report["peak"].items())
    lines = [f"machine: {m['cpus']} CPU core(s), GPUs: {', '.join(m['gpus']) or 'none'}, TensorFlow "
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
    lines += ["", "inference (images/s; medians):"]
    lines += _table(["config", "size", "xla", "precision", "streaming", "per-image predict", "speed-up",
                     "GFLOP/s", "of peak"],
                    [[r["config"], str(r["size"]), "on" if r["xla"] else "off", r["precision"],
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
    lines += ["", "targets:"]
    for t in report["targets"]:
        values = ", ".join(f"{k} {_fmt_target(t['target'], v)}" for k, v in t["values"].items())
        lines.append(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']} {t['limit']}: {values}")
    lines.append(f"\ntotal {report['seconds'] / 60:.1f} min")
    return "\n".join(lines)


def _fmt_target(name: str, value: float) -> str:
    return f"{value:.2f}x" if "inference" in name else f"{value:+.1%}" if "memory" in name else f"{value:.1%}"


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flexunet.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="stroke,demo",
                   help="comma-separated: stroke, demo, or config file paths (default stroke,demo)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--workdir", help="keep data and outputs here (and reuse the data); default: a temp folder")
    p.add_argument("--quick", action="store_true",
                   help="smaller plans: fewer images and timings (about 3/4 of the time)")
    p.add_argument("--steps", type=int, help="training steps per timing (default: per config)")
    p.add_argument("--repeats", type=int, help="timings per figure; medians are reported (default: per config)")
    p.add_argument("--images", type=int, help="N, training images of the throughput run (default: per config)")
    p.add_argument("--infer-images", type=int, help="images per inference pass (default: per config)")
    p.add_argument("--xla", default="off,on", help="jit_compile settings to run: off, on or off,on (default)")
    p.add_argument("--precision", help="float32 and/or float16, bfloat16 (mixed; GPU only); "
                                       "default float32, plus float16 on a GPU")
    p.add_argument("--no-memory", action="store_true", help="skip the 10 x N peak-memory run")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every benchmarked config, e.g. --set train.cache=False (repeatable)")
    p.add_argument("--seed", type=int, default=137, help="seed of data and weights (default 137)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def _on_off(text: str) -> tuple[bool, ...]:
    table = {"off": False, "on": True, "false": False, "true": True}
    try:
        return tuple(table[t.strip().lower()] for t in text.split(",") if t.strip())
    except KeyError:
        raise FlexUNetError(f"--xla {text}: expected off, on or off,on") from None


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise FlexUNetError(f"--{name} {value}: expected an integer >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    args = _parser().parse_args(argv)
    if args.child:
        return _child_main(args.child)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        run_bench(configs=[c.strip() for c in args.configs.split(",") if c.strip()], out=args.out,
                  workdir=args.workdir, quick=args.quick, steps=_positive("steps", args.steps),
                  repeats=_positive("repeats", args.repeats), images=_positive("images", args.images),
                  infer_images=_positive("infer-images", args.infer_images),
                  xla=_on_off(args.xla),
                  precisions=[p.strip() for p in args.precision.split(",")] if args.precision else None,
                  memory=not args.no_memory, sets=args.set, seed=args.seed, progress=not args.quiet)
    except FlexUNetError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
