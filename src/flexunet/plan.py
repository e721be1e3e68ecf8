"""``flexunet plan DATASET``: fingerprint a dataset, then write a config whose every choice says why.

As nnU-Net does, the configuration is derived from the data and the machine:

1. fingerprint (``fingerprint_dataset``): image sizes and channels (grey when R = G = B),
   intensity statistics overall and inside each class, mask colours -> classes (black is
   background; colours that cannot be placed are refused), per-class pixel share, lesion
   component sizes, slices with and without each class, the size of every subset;
2. probe (``probe_speed``, ``augment_seconds``): a few timed training steps of 1-3 candidate
   networks on this machine, and the online augmentation's cost, a few seconds in all;
3. choose (``choose``): input size, levels and filters, BatchNorm, CE + Dice, Adam and
   its warm-up + decay schedule, batch size, online augmentation, foreground oversampling,
   epochs that fit the time budget, monitor, cache, channels, rgb_map and class names;
4. write (``config_text``): the config in the original's dialect, a ``;`` comment above
   every value naming the fact that chose it, and ``fingerprint.json`` beside it.

DATASET holds ``train/ valid/ test/``, each with ``images/`` and ``masks/`` (the layout
``flexunet split`` writes).  Paths in the config are relative to the config's folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage

from flexunet.errors import DataError, FlexUNetError
from flexunet.io import open_image, pair_by_name, to_rgb_array, write_json, write_text

log = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
MAX_CLASSES = 16                 # more distinct class colours than this is not a label set
MIN_CLASS_PIXELS = 4             # a class colour covers at least this many pixels in some mask
FEW_PIXELS_SHARE = 1e-4          # stray colours up to this share of all mask pixels are mapped, not refused
BETWEEN_DISTANCE = 12.0          # RGB distance from the segment between two class colours
EPOCH_CAP = 30                   # the schedule is planned for at most this many epochs
GOOD_EPOCHS = 20                 # a bigger network is chosen only when this many epochs fit
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (0, 255, 0), "blue": (0, 0, 255), "red": (255, 0, 0), "yellow": (255, 255, 0),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "white": (255, 255, 255), "orange": (255, 165, 0),
    "purple": (128, 0, 128), "grey": (128, 128, 128), "maroon": (128, 0, 0), "olive": (128, 128, 0),
    "navy": (0, 0, 128), "teal": (0, 128, 128), "darkgreen": (0, 128, 0), "pink": (255, 192, 203),
}
COLOUR_ORDER = list(NAMED_COLOURS)   # class indices follow this order (green 1, blue 2: the stroke set's)


# --------------------------------------------------------------------------- the dataset's files


def dataset_pairs(dataset: Path) -> dict[str, list[tuple[Path, Path]]]:
    """(image, mask) pairs of train/valid/test under ``dataset``; a missing folder is one line."""
    out = {}
    for subset in SUBSETS:
        images, masks = dataset / subset / "images", dataset / subset / "masks"
        for folder in (images, masks):
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found; expected DATASET/{{train,valid,test}}/"
                                f"{{images,masks}} as `flexunet split` writes")
        pairs = pair_by_name(images, masks, (".png",))
        if not pairs:
            raise DataError(f"{images}: no image/mask pairs (masks are PNG files of the same name)")
        out[subset] = pairs
    return out


def _read_rgb(path: Path) -> np.ndarray:
    return to_rgb_array(open_image(path), 3)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _unpack(code: int) -> tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


# --------------------------------------------------------------------------- colours -> classes


def colour_name(colour: Sequence[int]) -> str:
    """``green`` for (0, 255, 0); the nearest named colour within 40, else ``rgb_R_G_B``."""
    c = np.asarray(colour, float)
    name, ref = min(NAMED_COLOURS.items(), key=lambda kv: float(np.linalg.norm(c - kv[1])))
    return name if np.linalg.norm(c - ref) <= 40 else "rgb_{}_{}_{}".format(*map(int, colour))


def _between(colour: tuple[int, int, int], classes: Sequence[tuple[int, int, int]]) -> tuple | None:
    """The two class colours ``colour`` lies between (anti-aliasing, JPEG), or None."""
    c = np.asarray(colour, float)
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            a_, b_ = np.asarray(a, float), np.asarray(b, float)
            t = float(np.dot(c - a_, b_ - a_) / max(np.dot(b_ - a_, b_ - a_), 1e-9))
            if 0.02 < t < 0.98 and np.linalg.norm(a_ + t * (b_ - a_) - c) <= BETWEEN_DISTANCE:
                return a, b
    return None


def place_colours(counts: dict[int, int], first_file: dict[int, Path]) -> tuple[list[tuple[int, int, int]],
                                                                               dict[tuple[int, int, int], int]]:
    """Class colours (black first) and the stray colours mapped to their nearest class.

    Colours are taken by pixel count: one between two class colours is anti-aliasing (or
    JPEG); one under MIN_CLASS_PIXELS is a stray.  Either is tolerated up to a few pixels
    (FEW_PIXELS_SHARE of all mask pixels); beyond that, or past MAX_CLASSES class colours,
    the colour cannot be placed and the mask is refused with one line naming file and colour.
    """
    total = sum(counts.values())
    black = 0
    classes: list[tuple[int, int, int]] = [(0, 0, 0)]
    strays: dict[tuple[int, int, int], int] = {}
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        colour = _unpack(code)
        if code == black:
            continue
        pair = _between(colour, classes)
        if pair is None and n >= MIN_CLASS_PIXELS:
            classes.append(colour)
            if len(classes) > MAX_CLASSES:
                raise DataError(f"{first_file[code]}: mask colour {colour} would be class {len(classes) - 1}; "
                                f"expected at most {MAX_CLASSES - 1} class colours besides black (masks saved "
                                f"with smoothing or as photos?); re-export the masks with one exact colour "
                                f"per class")
            continue
        strays[colour] = n
    stray_total = sum(strays.values())
    if strays and stray_total > max(FEW_PIXELS_SHARE * total, 8):
        colour, n = max(strays.items(), key=lambda kv: kv[1])
        pair = _between(colour, classes)
        why = (f"it lies between {pair[0]} and {pair[1]} (anti-aliased or JPEG edges)" if pair
               else "it is neither black nor a class colour")
        raise DataError(f"{first_file[_pack(np.array(colour))]}: mask colour {colour} cannot be placed "
                        f"({n} px in the set, {stray_total} px in {len(strays)} such colour(s)); {why}; "
                        f"expected exact class colours: re-export the masks as PNG without smoothing")
    if len(classes) < 2:
        raise DataError(f"{next(iter(first_file.values()))}: every mask is black (background only); expected "
                        f"at least one class colour to learn")
    classes[1:] = sorted(classes[1:], key=_colour_rank)
    return classes, strays


def _colour_rank(colour: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
    name = colour_name(colour)
    return (COLOUR_ORDER.index(name) if name in NAMED_COLOURS else len(COLOUR_ORDER), colour)


def class_names_for(colours: Sequence[tuple[int, int, int]], given: Sequence[str] | None) -> list[str]:
    """Names from ``--classes`` (with or without the background's), else colour names."""
    if given:
        names = [n.strip() for n in given if n.strip()]
        if len(names) == len(colours) - 1:
            names = ["background", *names]
        if len(names) != len(colours) or len(set(names)) != len(names):
            raise FlexUNetError(f"--classes {','.join(given)}: the masks hold {len(colours)} colours "
                                f"({', '.join(colour_name(c) for c in colours)}); expected {len(colours) - 1} "
                                f"distinct names in that order (background optional)")
        return names
    names = ["background"]
    for c in colours[1:]:
        name = colour_name(c)
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


# --------------------------------------------------------------------------- the fingerprint


@dataclass
class _Tally:
    """Pixels per mask colour over the dataset, the first mask holding each, the bytes on disk."""

    colour_counts: dict[int, int]
    first_file: dict[int, Path]
    bytes: int


def _scan_colours(pairs: dict[str, list[tuple[Path, Path]]]) -> _Tally:
    tally = _Tally({}, {}, 0)
    for subset_pairs in pairs.values():
        for image_path, mask_path in subset_pairs:
            codes, counts = np.unique(_pack(_read_rgb(mask_path)), return_counts=True)
            for code, n in zip(codes.tolist(), counts.tolist()):
                tally.colour_counts[code] = tally.colour_counts.get(code, 0) + n
                tally.first_file.setdefault(code, mask_path)
            tally.bytes += image_path.stat().st_size + mask_path.stat().st_size
    return tally


def _describe_hist(hist: np.ndarray) -> dict[str, Any]:
    n = int(hist.sum())
    if n == 0:
        return {"pixels": 0}
    values = np.arange(hist.size, dtype=float)
    mean = float((hist * values).sum() / n)
    sd = math.sqrt(float((hist * (values - mean) ** 2).sum() / n))
    cdf = np.cumsum(hist) / n
    pct = {f"p{p}": int(np.searchsorted(cdf, p / 100.0)) for p in (1, 50, 99)}
    return {"pixels": n, "mean": round(mean, 2), "sd": round(sd, 2), **pct}


def _components(index: np.ndarray, k: int) -> list[int]:
    pieces, n = ndimage.label(index == k, np.ones((3, 3), bool))
    return np.bincount(pieces.ravel())[1:].tolist() if n else []


def fingerprint_dataset(dataset: Path, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """What the planner knows about DATASET: see the module docstring (step 1)."""
    dataset = Path(dataset)
    pairs = dataset_pairs(dataset)
    tally = _scan_colours(pairs)
    colours, strays = place_colours(tally.colour_counts, tally.first_file)
    names = class_names_for(colours, classes)
    palette = np.array(colours, np.int64)
    k = len(colours)
    hists = np.zeros((k + 1, 256), np.int64)           # row k: every pixel
    pixels = np.zeros(k, np.int64)
    comps: list[list[int]] = [[] for _ in range(k)]
    subsets: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    grey = True
    for subset, subset_pairs in pairs.items():
        with_class = np.zeros(k, int)
        with_foreground = 0
        sub_pixels = np.zeros(k, np.int64)
        for image_path, mask_path in subset_pairs:
            image = _read_rgb(image_path)
            grey = grey and bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
            h, w = image.shape[:2]
            sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
            rgb = _read_rgb(mask_path).astype(np.int64)
            if rgb.shape[:2] != (h, w):
                raise DataError(f"{mask_path}: mask is {rgb.shape[1]}x{rgb.shape[0]} but {image_path.name} is "
                                f"{w}x{h} (WxH); expected an image and its mask of the same size")
            index = ((rgb[:, :, None, :] - palette[None, None]) ** 2).sum(-1).argmin(-1)
            value = image.mean(-1).round().astype(np.int64) if image.shape[-1] > 1 else image[..., 0]
            counts = np.bincount(index.ravel(), minlength=k)
            sub_pixels += counts
            with_class += counts > 0
            with_foreground += bool(counts[1:].any())
            hists[k] += np.bincount(value.ravel(), minlength=256)
            for c in range(k):
                if counts[c]:
                    hists[c] += np.bincount(value[index == c], minlength=256)
                    if c:
                        comps[c].extend(_components(index, c))
        pixels += sub_pixels
        subsets[subset] = {"slices": len(subset_pairs),
                           "slices_with": {names[c]: int(with_class[c]) for c in range(k)},
                           "slices_with_foreground": with_foreground,
                           "pixel_share": {names[c]: _share(sub_pixels[c], sub_pixels.sum()) for c in range(k)}}
    return _fingerprint_dict(dataset, pairs, names, colours, strays, sizes, grey, hists, pixels, comps, subsets,
                             tally.bytes)


def _share(n: float, total: float) -> float:
    return round(float(n) / float(total), 6) if total else 0.0


def _fingerprint_dict(dataset: Path, pairs: dict, names: list[str], colours: list, strays: dict,
                      sizes: dict, grey: bool, hists: np.ndarray, pixels: np.ndarray, comps: list,
                      subsets: dict, nbytes: int) -> dict[str, Any]:
    k = len(names)
    total_slices = sum(len(p) for p in pairs.values())
    lesions = {}
    for c in range(1, k):
        s = np.array(comps[c]) if comps[c] else np.zeros(0, int)
        lesions[names[c]] = ({"components": int(s.size), "median_px": float(np.median(s)), "min_px": int(s.min()),
                              "p10_px": float(np.percentile(s, 10)), "max_px": int(s.max())}
                             if s.size else {"components": 0})
    return {
        "dataset": str(dataset.resolve()),
        "slices": {**{s: len(p) for s, p in pairs.items()}, "total": total_slices},
        "bytes": int(nbytes),
        "image_sizes": sizes,
        "channels": "grey" if grey else "colour",
        "classes": [{"index": c, "name": names[c], "colour": list(colours[c]),
                     "colour_name": colour_name(colours[c]) if c else "black"} for c in range(k)],
        "stray_colours": {str(col): n for col, n in strays.items()},
        "pixel_share": {names[c]: _share(pixels[c], pixels.sum()) for c in range(k)},
        "intensity": {"all": _describe_hist(hists[k]), **{names[c]: _describe_hist(hists[c]) for c in range(k)}},
        "lesions": lesions,
        "subsets": subsets,
    }


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Candidate:
    base_filters: int
    levels: int
    batch_size: int


def probe_speed(candidates: Sequence[Candidate], size: int, channels: int, num_classes: int,
                steps: int = 3) -> dict[Candidate, float]:
    """Seconds per training step of each candidate on this machine (BatchNorm, CE + Dice, Adam)."""
    import keras

    from flexunet.config import parse_config
    from flexunet.train import compile_model

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


# --------------------------------------------------------------------------- the choices


def input_size(fp: dict, size: int | None) -> tuple[int, str]:
    if size is not None:
        return size, f"--size {size}"
    sides = [max(int(v) for v in s.split("x")) for s in fp["image_sizes"]]
    side = max(sides)
    rounded = max(32, int(math.ceil(side / 16.0)) * 16)
    what = "the images are " + ", ".join(fp["image_sizes"]) + " px"
    return rounded, what + ("" if rounded == side else f"; rounded up to a multiple of 16")


def levels_for(size: int) -> int:
    """Levels that bring the bottleneck to about 8 px (3..7), dividing the size exactly."""
    n = max(3, min(7, int(math.log2(max(size, 8) / 8)) + 1))
    while n > 3 and size % 2 ** (n - 1):
        n -= 1
    return n


def batch_for(size: int) -> int:
    return 8 if size <= 128 else 4 if size <= 256 else 2


def candidates_for(size: int) -> list[Candidate]:
    lv, b = levels_for(size), batch_for(size)
    return [Candidate(16, lv, b), Candidate(8, lv, b)]


def _epoch_seconds(step_s: float, train_n: int, valid_n: int, batch: int) -> float:
    """Training steps + validation (a forward pass ~1/3 of a step) + 10% for the pipeline and callbacks."""
    steps = math.ceil(train_n / batch)
    return 1.1 * step_s * (steps + math.ceil(valid_n / batch) / 3.0)


def class_weights_for(shares: list[float]) -> tuple[float, ...]:
    """Loss weights from pixel shares (background first): 1 for background, and for each foreground class
    ``2 * sqrt(commonest foreground share / its share)`` capped at 4 (1 for a class with no pixel).

    On the synthetic 'subtle' variant at 128 px (shares 1.03% / 0.23%: weights 2 and 4) this raised the
    test Dice from 0.825 / 0.786 to 0.852 / 0.835 against unweighted (benchmarks/README.md)."""
    fg = [x for x in shares[1:] if x > 0]
    top = max(fg) if fg else 0.0
    out = [1.0]
    for x in shares[1:]:
        out.append(round(min(4.0, 2.0 * math.sqrt(top / x)), 2) if x > 0 else 1.0)
    return tuple(out)


def choose(fp: dict, speeds: dict[Candidate, float], minutes: float, size: int, size_why: str,
           augment_s: float = 0.0) -> dict[str, Any]:
    """Every planned value with the reason that chose it: {key: (value, why)}.

    ``augment_s``: measured seconds per image of online augmentation (0: not measured).
    """
    train_n, valid_n = fp["slices"]["train"], fp["slices"]["valid"]
    budget = minutes * 60.0
    ranked = sorted(speeds, key=lambda c: -c.base_filters)
    fits = {c: budget / _epoch_seconds(speeds[c], train_n, valid_n, c.batch_size) for c in ranked}
    pick = next((c for c in ranked if fits[c] >= GOOD_EPOCHS), ranked[-1])
    epochs = int(max(1, min(EPOCH_CAP, math.floor(fits[pick]))))
    probe = "; ".join(f"{c.base_filters} filters: {speeds[c]:.2f} s/step, {fits[c]:.0f} epochs fit"
                      for c in ranked)
    epoch_min = _epoch_seconds(speeds[pick], train_n, valid_n, pick.batch_size) / 60.0
    grey = fp["channels"] == "grey"
    names = [c["name"] for c in fp["classes"]]
    fg = fp["subsets"]["train"]["slices_with_foreground"]
    fg_share = fg / max(train_n, 1)
    rarest = min(names[1:], key=lambda n: fp["subsets"]["train"]["slices_with"][n]) if len(names) > 1 else None
    rare_share = fp["subsets"]["train"]["slices_with"][rarest] / max(train_n, 1) if rarest else 1.0
    oversample = 0.33 if rare_share < 0.5 else 0.0
    lesion_share = 1.0 - fp["pixel_share"][names[0]]
    weights = class_weights_for([fp["pixel_share"][n] for n in names])
    warmup = 2 if epochs >= 15 else 1 if epochs >= 4 else 0
    decoded_mib = train_n * size * size * (1 if grey else 3) * 4 / 2 ** 20
    patience = max(8, epochs // 2)
    aug_share = augment_s * pick.batch_size / max(speeds[pick], 1e-9)
    generator = aug_share < AUGMENT_SHARE_LIMIT
    return {
        "generator": (generator, f"online flips and small rotations ([augmentor]) cost {augment_s * 1e3:.1f} ms "
                                 f"per image here, {aug_share:.0%} of a training step"
                      + (f": worth it for {train_n} train slices seen {epochs} times" if generator
                         else f" (over {AUGMENT_SHARE_LIMIT:.0%}): off")),
        "size": (size, size_why),
        "levels": (pick.levels, f"{size} px / 2^{pick.levels - 1} = {size // 2 ** (pick.levels - 1)} px at the "
                                f"bottleneck: context of the whole slice"),
        "base_filters": (pick.base_filters, f"measured on this machine ({probe}); the largest net that fits "
                                            f">= {GOOD_EPOCHS} epochs in {minutes:g} min, else the fastest"),
        "batch_size": (pick.batch_size, f"{size} px images: {pick.batch_size} per step keeps BatchNorm statistics "
                                        f"usable and a step short on a CPU"),
        "epochs": (epochs, f"{minutes:g} min / {epoch_min:.2f} min per epoch ({train_n} train + {valid_n} valid "
                           f"slices at the probed speed), at most {EPOCH_CAP}"),
        "warmup_epochs": (warmup, "a short linear warm-up keeps Adam's first steps from saturating the softmax"),
        "patience": (patience, "early stopping after half the run without a better validation Dice: "
                               "tiny lesions can take a third of it to appear at all"),
        "channels": (1 if grey else 3, "every image has R = G = B: one grey channel" if grey
                     else "the images hold colour"),
        "oversample": (oversample, f"the rarest class ({rarest}) is in {rare_share:.0%} of the train slices; "
                                   f"{fg_share:.0%} hold any foreground" + ("" if oversample else
                                                                            ": uniform order is enough")),
        "lesion_share": lesion_share,
        "class_weights": (weights, "background 1; each foreground class 2 x sqrt(share of the commonest "
                                   "foreground class / its share), at most 4 (shares: "
                                   + ", ".join(f"{n} {fp['pixel_share'][n]:.3%}" for n in names[1:]) + ")"),
        "cache": (decoded_mib < 2048, f"the decoded train set is {decoded_mib:.0f} MiB"
                  + (" (< 2 GiB): decode once" if decoded_mib < 2048 else ": stream from disk")),
        "names": names,
        "generator_s": augment_s,
    }


# --------------------------------------------------------------------------- online augmentation

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
"""
AUGMENT_SHARE_LIMIT = 0.25       # online augmentation is planned when it costs less than this share of a step


def augment_seconds(size: int, channels: int, repeats: int = 20) -> float:
    """Seconds per image of the planned online augmentation (``random_augment``) on this machine."""
    from flexunet.transforms import random_augment
    from flexunet.config import parse_config

    cfg = parse_config("[model]\nnum_classes = 2\n[mask]\nrgb_map = {(0,0,0):0, (1,1,1):1}\n" + AUGMENTATION,
                       "<plan augmentation>")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, channels)).astype(np.uint8)
    mask = (rng.random((size, size)) < 0.05).astype(np.uint8)
    start = time.perf_counter()
    for _ in range(repeats):
        random_augment(image, mask, cfg, rng)
    return (time.perf_counter() - start) / repeats


# --------------------------------------------------------------------------- the config


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _dot(rel: str) -> str:
    return rel if rel.startswith("..") else "./" + rel


def config_text(fp: dict, c: dict[str, Any], out: Path, dataset: Path, minutes: float) -> str:
    """The planned config, in the original's dialect, each value under a comment saying why."""
    base = out.parent
    d = {s: {k: _dot(_rel(dataset / s / k, base)) for k in ("images", "masks")} for s in SUBSETS}
    names = c["names"]
    rgb = ", ".join(f"({r},{g},{b}):{cl['index']}" for cl in fp["classes"] for r, g, b in [cl["colour"]])
    shares = ", ".join(f"{n} {fp['pixel_share'][n]:.2%}" for n in names[1:])
    lesions = "; ".join(f"{n}: median {v['median_px']:.0f} px, smallest {v['min_px']} px"
                        for n, v in fp["lesions"].items() if v.get("components"))
    fg = ", ".join(f"({r},{g},{b}) {cl['name']}" for cl in fp["classes"] for r, g, b in [cl["colour"]])
    stray = ("\n; a few stray mask pixels (" + ", ".join(fp["stray_colours"]) + ") go to the nearest class colour"
             "\nmap_unmapped = True") if fp["stray_colours"] else ""
    size, size_why = c["size"]
    n = fp["slices"]
    lines = f"""; train_eval_infer.config written by `flexunet plan` on {time.strftime('%Y-%m-%d')}
; dataset: {fp['dataset']}
; {n['train']} train / {n['valid']} valid / {n['test']} test slices
; the facts behind every choice are in fingerprint.json beside this file; time budget {minutes:g} min
; foreground pixel share: {shares or 'none'}
; lesion components: {lesions or 'none'}

[model]
model          = "TensorFlowFlexUNet"
; {c['generator'][1]}
generator      = {c['generator'][0]}
; {size_why}
image_width    = {size}
image_height   = {size}
; {c['channels'][1]}
image_channels = {c['channels'][0]}
input_normalize = True
; BatchNorm after every convolution: without it a net of this depth saturates its softmax on rare
; lesions and stops learning (issue 13)
normalization  = True
num_classes    = {len(names)}
; {c['base_filters'][1]}
base_filters   = {c['base_filters'][0]}
base_kernels   = (3,3)
; {c['levels'][1]}
num_layers     = {c['levels'][0]}
; no dropout: a schedule of at most {EPOCH_CAP} epochs needs every step to count
dropout_rate   = 0.0
dilation       = (1,1)
; Adam at 1e-3 suits BatchNorm nets; clipping by value is off (it slows Adam and BatchNorm needs none)
optimizer      = "Adam"
learning_rate  = 0.001
clipvalue      = None
; cross-entropy + Dice: the lesions are {c['lesion_share']:.2%} of the pixels, CE alone favours background
loss           = "ce_dice"
; {c['class_weights'][1]}
class_weights  = {c['class_weights'][0]}

[dataset]
class_names    = {json.dumps(names)}

[train]
; {c['epochs'][1]}
epochs         = {c['epochs'][0]}
; {c['batch_size'][1]}
batch_size     = {c['batch_size'][0]}
; {c['patience'][1]}
patience       = {c['patience'][0]}
; the mean foreground Dice on the valid set picks the best model (the loss is dominated by background)
monitor        = "val_mean_dice"
model_dir      = "./models"
eval_dir       = "./eval"
images_dir     = "{d['train']['images']}"
masks_dir      = "{d['train']['masks']}"
; the schedule below sets the learning rate; no plateau reducer
learning_rate_reducer = False
; {c['warmup_epochs'][1]}
warmup_epochs  = {c['warmup_epochs'][0]}
; cosine decay to 0 over the run after the warm-up: large steps first, fine ones last
lr_schedule    = "cosine"
; {c['oversample'][1]}
foreground_oversampling = {c['oversample'][0]}
; a foreground class that gets no predicted pixel for 3 epochs stops the run with one line
on_collapse    = "stop"
collapse_patience = 3
; {c['cache'][1]}
cache          = {c['cache'][0]}
; epoch-change inference and TensorBoard cost time on a small budget
epoch_change_infer = False
tensorboard    = False
seed           = 137

[valid]
images_dir = "{d['valid']['images']}"
masks_dir  = "{d['valid']['masks']}"

[test]
images_dir = "{d['test']['images']}"
masks_dir  = "{d['test']['masks']}"

[infer]
; the test images, predicted into a new folder
images_dir = "{d['test']['images']}"
output_dir = "./infer_output"
overlays   = True

[eval]
batch_size = {c['batch_size'][0]}

[mask]
; colours found in the masks: {fg}
rgb_map = {{{rgb}}}{stray}

{AUGMENTATION}"""
    return lines


# --------------------------------------------------------------------------- the command


def plan_dataset(dataset: Path, out: Path | None = None, minutes: float = 10.0, size: int | None = None,
                 classes: Sequence[str] | None = None, overwrite: bool = False,
                 probe: Callable[..., dict[Candidate, float]] | None = None) -> dict[str, Any]:
    """Fingerprint ``dataset``, probe this machine, write the config and ``fingerprint.json``.

    Returns {"config": path, "fingerprint": path, "choices": ...}.  Refuses an existing
    config unless ``overwrite``.  ``probe`` times the candidate nets (default: ``probe_speed``).
    """
    dataset = Path(dataset)
    out = Path(out) if out is not None else Path("train_eval_infer.config")
    if not dataset.is_dir():
        raise DataError(f"{dataset}: folder not found; expected a dataset with train/ valid/ test/")
    if not (isinstance(minutes, (int, float)) and minutes > 0):
        raise FlexUNetError(f"--minutes {minutes}: expected a positive number of minutes")
    if size is not None and (size < 32 or size % 16):
        raise FlexUNetError(f"--size {size}: expected a multiple of 16, at least 32")
    if out.exists() and not overwrite:
        raise FlexUNetError(f"{out}: already exists; choose another --out, or --overwrite to replace it")
    if out.is_dir():
        raise FlexUNetError(f"{out}: is a folder; expected a config file path for --out")
    fp = fingerprint_dataset(dataset, classes)
    chosen_size, size_why = input_size(fp, size)
    channels = 1 if fp["channels"] == "grey" else 3
    speeds = (probe or probe_speed)(candidates_for(chosen_size), chosen_size, channels, len(fp["classes"]))
    choices = choose(fp, speeds, minutes, chosen_size, size_why, augment_seconds(chosen_size, channels))
    fp["probe"] = {f"{c.base_filters}x{c.levels}@{c.batch_size}": round(s, 4) for c, s in speeds.items()}
    fp["probe"]["augment_s_per_image"] = round(choices["generator_s"], 5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp_path = out.parent / "fingerprint.json"
    write_json(fp_path, fp)
    write_text(out, config_text(fp, choices, out, dataset, minutes))
    log.info("plan: %d classes (%s), %s px, %d filters x %d levels, %d epochs of ~%s -> %s (facts in %s)",
             len(fp["classes"]), ", ".join(choices["names"]), chosen_size, choices["base_filters"][0],
             choices["levels"][0], choices["epochs"][0], f"{minutes:g} min", out, fp_path.name)
    return {"config": out, "fingerprint": fp_path, "choices": choices, "fingerprint_data": fp}

