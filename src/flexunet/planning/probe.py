"""``flexunet plan``'s probes of this machine: a few timed training steps of each candidate network,
and the planned online augmentation's cost per image (a few seconds in all).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from flexunet.config.loader import parse_config
from flexunet.dataset.transforms import random_augment

log = logging.getLogger(__name__)

AUGMENTATION = """[generator]
augmentation = True

[augmentor]
; online: horizontal flips (left/right is arbitrary in an axial slice) and small rotations;
; no vertical flips (anatomy has a front and a back)
rotation = True
angles   = (-10, -5, 5, 10)
shrinks  = (0.9,)
shears   = ()
hflip    = True
vflip    = False
; no random contrast / brightness / noise per image: it hides the absolute grey levels, which
; tell tissues apart when the images to segment come from the scanners and window of the
; training images; set it True when they come from other scanners or windows
; ([intensity] gain, offset and noise then default to 0.1, 8 and 2: docs/config.md)
intensity = False
"""
AUGMENT_SHARE_LIMIT = 0.25       # online augmentation is planned when it costs less than this share of a step


@dataclass(frozen=True)
class Candidate:
    """A network ``plan`` may choose, probed for its speed: first-level filters, levels, batch size."""

    base_filters: int
    levels: int
    batch_size: int


def probe_speed(candidates: Sequence[Candidate], size: int, channels: int, num_classes: int,
                steps: int = 3) -> dict[Candidate, float]:
    """Seconds per training step of each candidate on this machine (BatchNorm, CE + Dice, Adam)."""
    import keras

    from flexunet.model.network import compile_model

    out = {}
    rng = np.random.default_rng(0)
    for cand in candidates:
        cfg = parse_config(_probe_config(cand, size, channels, num_classes), "<plan probe>")
        keras.utils.set_random_seed(0)
        model = compile_model(cfg)
        x = rng.uniform(0, 255, (cand.batch_size, size, size, channels)).astype(np.float32)
        y = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, (cand.batch_size, size, size))]
        model.train_on_batch(x, y)                       # build and trace: not timed
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        out[cand] = (time.perf_counter() - start) / steps
        keras.backend.clear_session()
        log.info("plan: probe %d filters x %d levels, batch %d: %.3f s per step", cand.base_filters, cand.levels,
                 cand.batch_size, out[cand])
    return out


def _probe_config(c: Candidate, size: int, channels: int, num_classes: int) -> str:
    return (f"[model]\nimage_width = {size}\nimage_height = {size}\nimage_channels = {channels}\n"
            f"num_classes = {num_classes}\nbase_filters = {c.base_filters}\nnum_layers = {c.levels}\n"
            f"base_kernels = (3,3)\nnormalization = True\ndropout_rate = 0.0\nloss = \"ce_dice\"\n"
            f"clipvalue = None\nlearning_rate = 0.001\n[train]\nbatch_size = {c.batch_size}\n"
            f"[mask]\nrgb_map = {{{', '.join(f'({i},{i},{i}):{i}' for i in range(num_classes))}}}\n")


def augment_seconds(size: int, channels: int, repeats: int = 20) -> float:
    """Seconds per image of the planned online augmentation (``random_augment``) on this machine."""
    cfg = parse_config("[model]\nnum_classes = 2\n[mask]\nrgb_map = {(0,0,0):0, (1,1,1):1}\n" + AUGMENTATION,
                       "<plan augmentation>")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, channels)).astype(np.uint8)
    mask = (rng.random((size, size)) < 0.05).astype(np.uint8)
    start = time.perf_counter()
    for _ in range(repeats):
        random_augment(image, mask, cfg, rng)
    return (time.perf_counter() - start) / repeats
