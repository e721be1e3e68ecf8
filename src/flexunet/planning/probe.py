"""``flexunet plan``'s probes of this machine: a few timed training steps of each candidate network,
and the planned online augmentation's cost per image (a few seconds in all).

The candidates (:func:`candidates_for`): :data:`FILTERS_MAX` (16) and 8 first-level filters at the
levels that bring the bottleneck to ~8 px, always probed; then, at 256 px and more, only where the
wider fits the whole schedule in the budget (:func:`probe_ladder`), that net with one level more.
No wider net: 32 filters, what a faster machine (bfloat16 on AMX) would fit, helped one synthetic
family and hurt the other (docs/generalisation.md, tenth round), so a faster machine's time goes to
epochs (up to 45) and it ends early.
Each is timed at the precision training will use on this machine (the fastest of
:func:`flexunet.utils.machine.precision_candidates`: bfloat16 on CPUs with native bf16, float16 on
GPUs, else float32), since ``[train] mixed_precision = "auto"`` picks it where it is as accurate.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from flexunet.config.loader import parse_config
from flexunet.dataset.transforms import random_augment
from flexunet.model.precision import precision_policy
from flexunet.utils.machine import OtherLoad, cpu_cores

log = logging.getLogger(__name__)

# timed training steps per probed net (:func:`quick_step`)
PROBE_STEPS = 12

SCALES = "shrinks  = (0.7, 0.8, 0.9, 1.1, 1.25, 1.4)"   # online; augmentation_text's offline text keeps one
AUGMENTATION = """[generator]
augmentation = True

[augmentor]
; online: horizontal flips (left/right is arbitrary in an axial slice), small rotations and scaling
; 0.7-1.4 (heads and lesions of other sizes; with it the phantom's small bleeds under a soft scanner kept
; their Dice, the territory family's stayed as it was: docs/generalisation.md); no vertical flips (anatomy
; has a front and a back)
rotation = True
angles   = (-10, -5, 5, 10)
""" + SCALES + """
shears   = ()
hflip    = True
vflip    = False
; a random scanner look per image (kernel, contrast, gamma, brightness, noise: [intensity]): the
; images to segment may come from another scanner; chosen on one synthetic family and confirmed on
; the other (docs/generalisation.md)
intensity = True

[intensity]
gain   = 0.15
offset = 10.0
noise  = 4.0
kernel = 0.7
gamma  = 0.3
"""
DROPOUT = 0.05                   # [model] dropout_rate of nets of DROPOUT_FROM filters or more: level i drops DROPOUT * i
DROPOUT_FROM = 16                # smaller nets underfit: dropout cost them Dice on both families (docs/generalisation.md)
AUGMENT_SHARE_LIMIT = 0.25       # online augmentation is planned when it costs less than this share of a step
FILTERS_MAX = 16                 # the widest net plan writes: 32 gained on one family, lost on the other
BUSY_SHARE = 0.25                # other programs' load (share of the cores) over which plan says its timings are slow


def dropout_for(base_filters: int) -> float:
    """``[model] dropout_rate`` for a net of ``base_filters``: :data:`DROPOUT` from :data:`DROPOUT_FROM` filters, else 0."""
    return DROPOUT if base_filters >= DROPOUT_FROM else 0.0


def dropout_lines(base_filters: int, levels: int) -> str:
    """The commented ``dropout_rate`` line plan writes."""
    rate = dropout_for(base_filters)
    if rate:
        why = (f"; dropout {rate} x level (the bridge {rate * (levels - 1):.2f}): a net of {base_filters} filters "
               f"overfits a few training patients without it (docs/generalisation.md)")
    else:
        why = (f"; no dropout: a net of {base_filters} filters underfits; dropout cost it Dice on both synthetic "
               f"families (docs/generalisation.md)")
    return f"{why}\ndropout_rate   = {rate}"


def augmentation_text(online: bool) -> str:
    """The [generator], [augmentor] and [intensity] sections plan writes; the random scanner look only
    where augmentation runs online (``[model] generator``): `flexunet augment` writes no intensity variants,
    and one scale only (it writes a file per scale)."""
    if online:
        return AUGMENTATION
    text = AUGMENTATION.replace(SCALES, "; offline: one scale (`flexunet augment` writes a file per scale)\n"
                                          "shrinks  = (0.9,)", 1)
    return text.replace("intensity = True", "; off: augmentation does not run online here ([model] generator)\n"
                        "intensity = False", 1)


@dataclass(frozen=True)
class Candidate:
    """A network ``plan`` may choose, probed for its speed: first-level filters, levels, batch size, the
    precision it is timed in, and the widest level's filters when capped (a level added to a net)."""

    base_filters: int
    levels: int
    batch_size: int
    precision: str = "float32"
    max_filters: int | None = None

    @property
    def label(self) -> str:
        return f"{self.base_filters} filters" + (f" x {self.levels} levels" if self.max_filters else "")

    @property
    def rank(self) -> tuple[int, int]:
        """Larger nets rank higher: wider first, then deeper."""
        return self.base_filters, self.levels


# --------------------------------------------------------------------------- the candidates


def levels_for(size: int) -> int:
    """Levels that bring the bottleneck to about 8 px (3..7), dividing the size exactly."""
    n = max(3, min(7, int(math.log2(max(size, 8) / 8)) + 1))
    while n > 3 and size % 2 ** (n - 1):
        n -= 1
    return n


def batch_for(size: int) -> int:
    return 8 if size <= 128 else 4 if size <= 256 else 2


def candidates_for(size: int, precision: str = "float32") -> list[Candidate]:
    """The nets always probed: :data:`FILTERS_MAX` (16) and half as many filters."""
    lv, b = levels_for(size), batch_for(size)
    return [Candidate(f, lv, b, precision) for f in (FILTERS_MAX, FILTERS_MAX // 2)]


def deeper(c: Candidate, size: int) -> Candidate | None:
    """At 256 px and more, ``c`` with one level more (bottleneck ~4 px: more context), its new level as
    wide as its widest (None where the size does not divide or 7 levels are reached)."""
    if size < 256 or c.levels >= 7 or size % 2 ** c.levels or c.max_filters:
        return None
    return Candidate(c.base_filters, c.levels + 1, c.batch_size, c.precision, c.base_filters * 2 ** (c.levels - 1))


Probe = Callable[..., dict]   # (candidates, size, channels, num_classes) -> {candidate: seconds per step}


class Timings(dict):
    """Seconds per step of each probed net ({Candidate: s}), and how many of the ``cores`` other
    programs kept busy while they were timed (``other_cores``; None where the system does not say)."""

    other_cores: float | None = None
    cores: int = 1

    def busy_text(self) -> str:
        """Why these timings may be slow, or "" on a quiet machine."""
        if self.other_cores is None or self.other_cores < BUSY_SHARE * self.cores:
            return ""
        return (f"other programs kept {self.other_cores:.1f} of {self.cores} cores busy while the nets were "
                f"timed: a quiet machine may fit a larger net (run plan again when it is quiet)")


def busy_note(speeds: dict) -> str:
    """"; " and :meth:`Timings.busy_text` where the timings were slowed, else "" (a reason's tail)."""
    text = speeds.busy_text() if isinstance(speeds, Timings) else ""
    return f"; {text}" if text else ""


def probe_ladder(probe: Probe, size: int, channels: int, num_classes: int, precision: str,
                 epochs_fit: Callable[[Candidate, float], float], cap: int) -> Timings:
    """Seconds per step of :func:`candidates_for`'s nets, then of a deeper one where it may fit.

    ``epochs_fit(candidate, s_per_step)``: epochs of the schedule that fit the budget.  The deeper
    net (:func:`deeper`: 256 px and more) is probed only when the net it deepens, the widest,
    fits ``cap`` epochs: a slow machine times the same two nets as ever.  Other programs' load
    meanwhile is measured and, where it is large, said in a warning (the timings are slower than
    this machine's own speed, so the planned net may be smaller than a quiet machine's).
    """
    with OtherLoad() as load:
        speeds = _ladder(probe, size, channels, num_classes, precision, epochs_fit, cap)
    timings = Timings(speeds)
    timings.other_cores, timings.cores = load.cores, cpu_cores()
    if timings.busy_text():
        log.warning("plan: %s", timings.busy_text())
    return timings


def _ladder(probe: Probe, size: int, channels: int, num_classes: int, precision: str,
            epochs_fit: Callable[[Candidate, float], float], cap: int) -> dict[Candidate, float]:
    speeds = dict(probe(candidates_for(size, precision), size, channels, num_classes))
    top = max(speeds, key=lambda c: c.rank)
    deep = deeper(top, size) if epochs_fit(top, speeds[top]) >= cap else None
    if deep is not None:
        speeds.update(probe([deep], size, channels, num_classes))
    return speeds


# --------------------------------------------------------------------------- timing


def probe_speed(candidates: Sequence[Candidate], size: int, channels: int, num_classes: int,
                steps: int = PROBE_STEPS) -> dict[Candidate, float]:
    """Seconds per training step of each candidate on this machine (BatchNorm, CE + Dice, Adam), in the
    candidate's precision: the lower quartile of ``steps`` timed steps (:func:`quick_step`)."""
    import keras

    from flexunet.model.network import compile_model

    out = {}
    rng = np.random.default_rng(0)
    for cand in candidates:
        cfg = parse_config(_probe_config(cand, size, channels, num_classes), "<plan probe>")
        keras.utils.set_random_seed(0)
        with precision_policy(cand.precision):
            model = compile_model(cfg)
        x = rng.uniform(0, 255, (cand.batch_size, size, size, channels)).astype(np.float32)
        y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, (cand.batch_size, size, size))]
        model.train_on_batch(x, y)                       # build and trace: not timed
        out[cand] = quick_step(lambda: model.train_on_batch(x, y), steps)
        keras.backend.clear_session()
        log.info("plan: probe %d filters x %d levels, batch %d, %s: %.3f s per step", cand.base_filters,
                 cand.levels, cand.batch_size, cand.precision, out[cand])
    return out


def quick_step(step: Callable[[], object], repeats: int,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of a quick call of ``step``: the lower quartile of ``repeats`` timed calls.

    Another program's work only ever slows a step, so a low figure is the nearest to this machine's
    own speed; but a 2-core virtual machine's steps also vary on their own (AMD EPYC, AVX2: 0.53-0.83 s for one
    16-filter step in one quiet process). The fastest of 3, what plan took before, gave 0.60-0.75 s
    in seven plans of one set (32-39 epochs planned); the lower quartile of 12 has about the same
    centre (the fastest of 3 sits at the lower quartile on average) and about half the spread: 0.60-0.69 s
    in four plans (35-40 epochs), for 8 s more per plan (docs/generalisation.md, sixteenth round)."""
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return float(np.percentile(times, 25))


def _probe_config(c: Candidate, size: int, channels: int, num_classes: int) -> str:
    return (f"[model]\nimage_width = {size}\nimage_height = {size}\nimage_channels = {channels}\n"
            f"num_classes = {num_classes}\nbase_filters = {c.base_filters}\nnum_layers = {c.levels}\n"
            f"max_filters = {c.max_filters}\n"
            f"base_kernels = (3,3)\nnormalization = True\ncentre_intensity = True\n"
            f"dropout_rate = {dropout_for(c.base_filters)}\nloss = \"ce_dice\"\n"
            f"clipvalue = None\nlearning_rate = 0.001\n[train]\nbatch_size = {c.batch_size}\n"
            f"[mask]\nrgb_map = {{{', '.join(f'({i},{i},{i}):{i}' for i in range(num_classes))}}}\n")


def augment_seconds(size: int, channels: int, repeats: int = 20) -> float:
    """Seconds per image of the planned online augmentation (``random_augment``) on this machine."""
    cfg = parse_config("[model]\nnum_classes = 2\ngenerator = True\n[mask]\nrgb_map = {(0,0,0):0, (1,1,1):1}\n" + AUGMENTATION,
                       "<plan augmentation>")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, channels)).astype(np.uint8)
    mask = (rng.random((size, size)) < 0.05).astype(np.uint8)
    start = time.perf_counter()
    for _ in range(repeats):
        random_augment(image, mask, cfg, rng)
    return (time.perf_counter() - start) / repeats
