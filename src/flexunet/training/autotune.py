"""``[train] jit_compile = "auto"`` and ``mixed_precision = "auto"``: chosen by measurement, cached per machine.

Which settings are fast depends on the machine: XLA doubled training speed on one CPU and
halved it on another.  So at train start-up, for each setting left at "auto":

1. XLA: time :data:`STEPS` training steps (after :data:`WARMUP` steps that trace and
   compile) of a separate copy of the real model on one real batch of the run's batch size,
   with and without XLA, in float32; keep the faster (median ms per step).
2. precision (``mixed_precision = "auto"``, the default): float32, and bfloat16 only on CPUs
   with native bf16 (AVX512_BF16 or AMX; an emulated bf16 is never tried), float16 only where a
   GPU is visible (:func:`flexunet.utils.machine.precision_candidates`), so a machine with
   neither trains in float32 without any precision probe.  A lower precision is
   timed the same way (with the XLA setting just chosen) and kept only when it is faster AND
   its probe steps stay within tolerance of float32's on the same weights and batch: the
   loss within :data:`LOSS_TOLERANCE` (relative) and the foreground mean Dice within
   :data:`DICE_TOLERANCE` (absolute), step by step.

One log line gives both figures and the choice, and says why the precision is what it is;
:func:`settle` also returns that as the record the run keeps (model_meta.json's ``speed``).  The probe models are built from the seed
and thrown away, and the run re-seeds after the probe, so a run with "auto" trains exactly
as a run with the chosen settings written by hand.  The decision is cached in
``$FLEXUNET_CACHE_DIR`` (else ``$XDG_CACHE_HOME/flexunet``, else ``~/.cache/flexunet``),
keyed by the machine (CPU, flags, cores, GPUs), the model's shape (architecture keys, input
shape, batch size), the precision candidates and the TensorFlow version; ``flexunet cache
show`` lists it and ``flexunet cache clear`` forgets it.  No TensorFlow import at module level.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.config.loader import Config
from flexunet.utils.io import write_json
from flexunet.utils.machine import Machine, detect, machine_key, precision_candidates, precision_reason

log = logging.getLogger(__name__)

CACHE_FILE = "autotune.json"
WARMUP = 2              # steps before timing: the first traces (and with XLA compiles)
STEPS = 5               # timed steps; their median is the figure
LOSS_TOLERANCE = 0.02   # lower precision kept only within 2% (relative) of float32's loss ...
DICE_TOLERANCE = 0.02   # ... and 0.02 (absolute) of its foreground mean Dice, at every probe step
_SET = "set by [train] mixed_precision"
# the [model] keys that change a training step's cost or its numbers (not its name or summary)
ARCH_KEYS = ("image_width", "image_height", "image_channels", "input_normalize", "normalization",
             "num_classes", "base_filters", "max_filters", "base_kernels", "num_layers", "dropout_rate",
             "dilation", "activation", "optimizer", "loss", "class_weights", "metrics")


@dataclass(frozen=True)
class Probe:
    """One candidate's figures: median milliseconds per step, and the loss and Dice of each timed step."""

    ms: float
    loss: tuple[float, ...]
    dice: tuple[float, ...]


Measure = Callable[[bool, str], Probe]   # (jit_compile, precision) -> Probe


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """``$FLEXUNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/flexunet``, else ``~/.cache/flexunet``."""
    if os.environ.get("FLEXUNET_CACHE_DIR"):
        return Path(os.environ["FLEXUNET_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "flexunet"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc["entries"] if isinstance(doc.get("entries"), dict) else {}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}  # no cache, or an unreadable one: measure again (and rewrite it)


def _store(path: Path, key: str, entry: dict[str, Any]) -> None:
    entries = _read_cache(path)
    entries[key] = entry
    try:
        write_json(path, {"version": 1, "entries": entries})
    except OSError as exc:  # a read-only home must not stop training: the probe is just paid again
        log.warning("could not cache the speed decision in %s (%s)", path, exc)


def model_shape(cfg: Config) -> dict[str, Any]:
    """What the decision depends on besides the machine: architecture keys, input shape, batch size."""
    m = cfg.model
    shape = {k: getattr(m, k) for k in ARCH_KEYS}
    shape["input_shape"] = (m.image_height, m.image_width, m.image_channels)
    shape["batch_size"] = cfg.train.batch_size
    shape["deterministic"] = cfg.train.deterministic
    return json.loads(json.dumps(shape, default=list))  # tuples as lists: what the JSON file holds


def cache_key(machine_id: str, shape: dict[str, Any], jit: Sequence[bool], precisions: Sequence[str],
              tf_version: str) -> str:
    text = json.dumps({"machine": machine_id, "model": shape, "jit": list(jit), "precisions": list(precisions),
                       "tensorflow": tf_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_command(action: str) -> int:
    """``flexunet cache show`` (one line per decision) or ``flexunet cache clear``."""
    path = cache_dir() / CACHE_FILE
    entries = _read_cache(path)
    if action == "clear":
        if path.is_file():
            path.unlink()
        log.info("cache clear: forgot %d speed decision(s) (%s); the next run measures again", len(entries), path)
        return 0
    log.info("%s: %d speed decision(s) for [train] jit_compile / mixed_precision = \"auto\"", path, len(entries))
    for key, e in entries.items():
        m = e.get("model", {})
        log.info("%s  %s  TF %s  %sx%sx%s batch %s: %s  (%s, %s)", key, e.get("machine"), e.get("tensorflow"),
                 *m.get("input_shape", ("?",) * 3), m.get("batch_size"), e.get("line"), e.get("when"),
                 e.get("machine_key"))
    return 0


# --------------------------------------------------------------------------- the decision


def _within_tolerance(probe: Probe, reference: Probe) -> bool:
    for loss, ref in zip(probe.loss, reference.loss):
        if not math.isfinite(loss) or abs(loss - ref) > LOSS_TOLERANCE * abs(ref):
            return False
    return all(math.isfinite(d) and abs(d - r) <= DICE_TOLERANCE for d, r in zip(probe.dice, reference.dice)
               if math.isfinite(r))


def decide(jit_options: Sequence[bool], precisions: Sequence[str], measure: Measure) -> dict[str, Any]:
    """The faster XLA setting in float32 (or the one fixed precision), then the fastest tolerable precision."""
    base = precisions[0]
    timed = {jit: measure(jit, base) for jit in jit_options}
    jit = min(timed, key=lambda j: timed[j].ms)
    parts = []
    if len(jit_options) > 1:
        parts.append(f"XLA off {timed[False].ms:.0f} ms/step, on {timed[True].ms:.0f} -> "
                     f"{'on' if jit else 'off'}")
    precision, reference = base, timed[jit]
    why = ""
    if len(precisions) > 1:
        figures = [f"{base} {reference.ms:.0f} ms/step"]
        best = reference
        for candidate in precisions[1:]:
            probe = measure(jit, candidate)
            ok = _within_tolerance(probe, reference)
            figures.append(f"{candidate} {probe.ms:.0f}" + ("" if ok else " (outside tolerance)"))
            if ok and probe.ms < best.ms:
                precision, best = candidate, probe
        rule = f"kept only if faster and loss within {LOSS_TOLERANCE:.0%}, Dice within {DICE_TOLERANCE} of {base}"
        parts.append(f"{', '.join(figures)} -> {precision} ({rule})")
        why = (f"measured {', '.join(figures)} ms/step; {rule}" if precision == base else
               f"measured {best.ms:.0f} ms/step against {base}'s {reference.ms:.0f} ({reference.ms / best.ms:.2f}x), "
               f"loss and Dice within tolerance")
    return {"jit_compile": jit, "precision": precision, "line": "; ".join(parts), "precision_why": why,
            "ms": {f"{'xla' if j else 'no-xla'}/{base}": round(p.ms, 2) for j, p in timed.items()}}


def _apply(cfg: Config, decision: dict[str, Any]) -> Config:
    t = cfg.train
    jit = decision["jit_compile"] if t.jit_compile == "auto" else t.jit_compile
    precision = decision["precision"] if t.mixed_precision == "auto" else t.mixed_precision
    return cfg.replace("train", jit_compile=jit, mixed_precision=None if precision == "float32" else precision)


def resolve(cfg: Config, pairs: Sequence[tuple[Path, Path]], machine: Machine | None = None,
            measure: Measure | None = None) -> Config:
    """``cfg`` with every "auto" of [train] jit_compile / mixed_precision replaced by the measured choice."""
    return settle(cfg, pairs, machine, measure)[0]


def settle(cfg: Config, pairs: Sequence[tuple[Path, Path]], machine: Machine | None = None,
           measure: Measure | None = None) -> tuple[Config, dict[str, Any]]:
    """:func:`resolve`, and the record of the choice the run keeps: ``{"jit_compile", "precision",
    "precision_why", "line"}`` (``precision``: "float32", "bfloat16" or "float16"; ``precision_why``: how it
    was chosen, in words; ``line``: the one ``auto:`` log line, "" when nothing was "auto")."""
    t = cfg.train
    explicit = "float32" if t.mixed_precision is None else t.mixed_precision
    if t.jit_compile != "auto" and t.mixed_precision != "auto":
        return cfg, _record(t.jit_compile, explicit, _SET, "")
    if t.strategy == "multiworker":  # each worker would measure on its own and they could disagree
        line = ("not measured with [train] strategy = \"multiworker\" (the workers must agree): XLA off, float32; "
                "set [train] jit_compile / mixed_precision to choose")
        log.info("auto: %s", line)
        decision = {"jit_compile": False, "precision": "float32"}
        why = _SET if t.mixed_precision != "auto" else "\"auto\": not measured under multiworker"
        return _apply(cfg, decision), _record(*_chosen(cfg, decision), why, line)
    import tensorflow as tf

    machine = machine or detect(gpu=True)
    jit_options = (t.jit_compile,) if t.jit_compile != "auto" else (False,) if t.deterministic else (False, True)
    precisions = precision_candidates(machine) if t.mixed_precision == "auto" else (explicit,)
    # the one precision there is nothing to measure for, and why, as the line says it
    only = f"precision {precisions[0]}: {precision_reason(machine) if t.mixed_precision == 'auto' else _SET}"
    if len(jit_options) == 1 and len(precisions) == 1:
        line = (f"XLA {'on' if jit_options[0] else 'off'}, {only} (nothing to measure"
                + (": Keras turns XLA off under [train] deterministic)" if t.jit_compile == "auto" else ")"))
        log.info("auto: %s", line)
        decision = {"jit_compile": jit_options[0], "precision": precisions[0]}
        return _apply(cfg, decision), _record(*_chosen(cfg, decision), _why(t, machine, decision, precisions), line)
    mkey = machine_key(machine, tf.__version__)
    shape = model_shape(cfg)
    key = cache_key(mkey, shape, jit_options, precisions, tf.__version__)
    path = cache_dir() / CACHE_FILE
    decision = _read_cache(path).get(key)
    if decision is not None:
        line = _with_precision(decision["line"], precisions, only)
        log.info("auto: %s [measured earlier on %s; %s; flexunet cache clear to measure again]", line,
                 decision["machine"], path)
    else:
        if measure is None:
            measure = probe_measure(cfg, pairs)
        start = time.perf_counter()
        decision = decide(jit_options, precisions, measure)
        line = _with_precision(decision["line"], precisions, only)
        log.info("auto: %s [%s; probe %.0f s, cached in %s]", line, machine.label, time.perf_counter() - start, path)
        _store(path, key, {**decision, "machine": machine.label, "machine_key": mkey, "tensorflow": tf.__version__,
                           "model": shape, "precisions": list(precisions), "when": time.strftime("%Y-%m-%d %H:%M")})
    return _apply(cfg, decision), _record(*_chosen(cfg, decision), _why(t, machine, decision, precisions), line)


def _with_precision(line: str, precisions: Sequence[str], only: str) -> str:
    """The decision's line, with the one precision and its reason when there was no precision to measure."""
    return line if len(precisions) > 1 else f"{line}; {only}"


def _chosen(cfg: Config, decision: dict[str, Any]) -> tuple[bool, str]:
    t = _apply(cfg, decision).train
    return t.jit_compile, t.mixed_precision or "float32"


def _why(t, machine: Machine, decision: dict[str, Any], precisions: Sequence[str]) -> str:
    """How the run's precision was chosen: by the config, by the machine's candidates, or by measurement."""
    if t.mixed_precision != "auto":
        return _SET
    if len(precisions) == 1:
        return f"\"auto\": {precision_reason(machine)}"
    return f"\"auto\": {decision.get('precision_why') or decision['line']}"   # an older cache: its line


def _record(jit: bool, precision: str, why: str, line: str) -> dict[str, Any]:
    return {"jit_compile": jit, "precision": precision, "precision_why": why, "line": line}


# --------------------------------------------------------------------------- the probe


def probe_batch(cfg: Config, pairs: Sequence[tuple[Path, Path]]):
    """One real batch of the run's batch size (the first images, repeated when there are fewer)."""
    import numpy as np

    from flexunet.preprocessing.pipeline import make_dataset

    n = cfg.train.batch_size
    x, y = next(iter(make_dataset(cfg, list(pairs[:n]), training=False, batch_size=n)))
    x, y = np.asarray(x), np.asarray(y)
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]


def probe_measure(cfg: Config, pairs: Sequence[tuple[Path, Path]],
                  clock: Callable[[], float] = time.perf_counter) -> Measure:
    """The real measurement: a seeded copy of the model trained on one batch (see the module's doc)."""
    batch = probe_batch(cfg, pairs)

    def measure(jit: bool, precision: str) -> Probe:
        return time_steps(cfg, batch, jit, precision, clock)

    return measure


def time_steps(cfg: Config, batch, jit: bool, precision: str,
               clock: Callable[[], float] = time.perf_counter) -> Probe:
    import keras

    from flexunet.model.network import compile_model, configure_runtime

    probe_cfg = cfg.replace("train", jit_compile=jit, mixed_precision=None if precision == "float32" else precision)
    probe_cfg = probe_cfg.replace("model", show_summary=False, members=1)   # members train one at a time
    configure_runtime(probe_cfg)  # the seed: every candidate starts from the same weights
    try:
        model = compile_model(probe_cfg)
        x, y = batch
        for _ in range(WARMUP):
            model.train_on_batch(x, y)
        seconds, losses, dices = [], [], []
        for _ in range(STEPS):
            t0 = clock()
            logs = model.train_on_batch(x, y, return_dict=True)
            seconds.append(clock() - t0)
            losses.append(float(logs["loss"]))
            dices.append(float(logs.get("mean_dice", float("nan"))))
        return Probe(1000 * statistics.median(seconds), tuple(losses), tuple(dices))
    finally:
        keras.backend.clear_session()  # the run's model gets fresh layer names; the run re-seeds itself
