"""``flexunet bench``: how close training and inference get to the hardware, rerunnable by anyone.

For each config (``stroke``: the shipped stroke config, 512x512, ~125 M parameters;
``demo``: the package's demo config, 256x256; or the path of any config file):

1. data: synthetic slices written to disk through the real synth -> prepare -> split path
   (kept and reused when ``--workdir`` is given);
2. peak: a large convolution through TensorFlow (``[8,128,128,256]`` input, ``3x3x256x256``
   kernel, in the variant's precision), median of repeats taken inside every measuring
   process, halfway and at the end: the attainable FLOP/s under the same machine load;
3. training, in a fresh process per variant (XLA off / on; mixed precision where the machine has
   it natively: bfloat16 on CPUs with AVX512_BF16 or AMX, float16 on a GPU; a lower precision's
   process also measures the float32 peak, so its rows say the share of both peaks):
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

import contextlib
import itertools
import json
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.bench.measure import PEAK_SHAPE, median, run_child
from flexunet.bench.table import format_table
from flexunet.config.loader import load_config
from flexunet.dataset.prepare import prepare_dataset
from flexunet.dataset.split import split_dataset
from flexunet.synthetic.demo_config import demo_config_text
from flexunet.synthetic.synth import synthesize
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import list_files, write_json, write_text
from flexunet.utils.machine import Machine, describe, detect, precision_candidates

ENV_KNOBS = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
             "OMP_NUM_THREADS")   # read by TensorFlow at import: recorded with the figures


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
    path = Path(__file__).resolve().parents[3] / "configs" / "stroke-ct" / "train_eval_infer.config"
    if not path.is_file():
        raise FlexUNetError(f"{path}: the shipped stroke config is not there (an installed package has no "
                            f"configs/ folder); pass its path instead: --configs /path/to/train_eval_infer.config")
    return path


def _base_config(name: str, folder: Path) -> Path:
    """The config file behind a --configs entry: stroke, demo, or a path."""
    if name == "stroke":
        return _stroke_config_path()
    if name == "demo":
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
    cfg = load_config(cfg_path, overrides)
    files = list_files(cfg.require_dir("test", "images_dir"))
    files += list_files(cfg.require_dir("train", "images_dir"))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in files[:count]:
        shutil.copy2(f, dest / f.name)
    return dest


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
    ``precisions``: "float32" and/or mixed "float16"/"bfloat16" (default :func:`bench_precisions`:
    float32, plus bfloat16 on a CPU with native bf16, float16 on a GPU).  ``memory``: also train on 10 x N
    images in a separate process to compare peak memory.  ``sets``: ``section.key=value``
    overrides applied to every config (as ``--set``), e.g. ``train.cache=False``.
    """
    import tensorflow as tf

    started = time.perf_counter()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    precisions = bench_precisions(precisions, replace(detect(), gpus=tuple(gpus)))
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
    echo("")
    echo(format_table(report))
    if out is not None:
        write_json(Path(out), report)
        echo(f"figures written to {out}")
    return report


def bench_precisions(requested: Sequence[str] | None, machine: Machine) -> tuple[str, ...]:
    """The precisions to measure: ``requested``, else the ones training's "auto" would try here
    (:func:`flexunet.utils.machine.precision_candidates`).  A lower precision this machine has no native
    arithmetic for is refused (an emulated bf16 measures the emulation): bfloat16 needs AVX512_BF16 / AMX
    or a GPU, float16 a GPU."""
    if not requested:
        return precision_candidates(machine)
    native = set(precision_candidates(machine)) | ({"bfloat16"} if machine.gpus else set())
    for p in requested:
        if p not in ("float32", "float16", "bfloat16"):
            raise FlexUNetError(f"--precision {p}: expected float32, float16 or bfloat16")
        if p not in native:
            need = "a GPU" if p == "float16" else "a GPU or a CPU with AVX512_BF16 or AMX"
            raise FlexUNetError(f"--precision {p}: measured only where the hardware has it ({need}); this "
                                f"machine ({machine.label}) has not: use --precision "
                                f"{','.join(precision_candidates(machine))}")
    return tuple(requested)


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
    """The variant whose N vs 10 x N memory is measured: the config's own XLA setting in float32, else the first
    (a config's "auto" is decided per machine at train start-up, so it takes the first)."""
    return next((v for v in variants if v.xla == jit_compile and v.precision == "float32"), variants[0])


def _bench_config(entry: str, work: Path, quick: bool, steps: int | None, repeats: int | None,
                  images: int | None, infer_images: int | None, variants: list[Variant], memory: bool,
                  sets: list[str], peak: dict, seed: int, progress: bool, echo: Callable[[str], None]) -> dict:
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
        result = run_child(job)
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
        large = run_child(job)
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

    return {"cpus": os.cpu_count(), "label": describe(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": gpus, "loadavg_start": _loadavg(), "env": {k: os.environ.get(k) for k in ENV_KNOBS}}


def _machine_line(m: dict) -> str:
    load = m["loadavg_start"]
    text = (f"FlexUNet bench: {m.get('label') or str(m['cpus']) + ' CPU core(s)'}, {len(m['gpus'])} GPU(s), "
            f"TensorFlow {m['tensorflow']}, Keras {m['keras']}")
    if load is not None:
        text += f"; load average {load[0]:.2f}"
        if load[0] > 0.5 * (m["cpus"] or 1):
            text += " (the machine is busy: timings will be contended)"
    return text
