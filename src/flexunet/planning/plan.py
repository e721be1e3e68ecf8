"""``flexunet plan DATASET``: fingerprint a dataset, then write a config whose every choice says why.

As nnU-Net does, the configuration is derived from the data and the machine:

1. fingerprint (:func:`flexunet.planning.fingerprint.fingerprint_dataset`): image sizes and channels (grey when R = G = B),
   intensity statistics overall and inside each class, the mask format (class-index masks,
   or colours -> classes: black is background, anti-aliasing told from a class by its shape,
   a few stray colours merged with a warning each, colours that cannot be placed refused),
   per-class pixel share, lesion component sizes, slices with and without each class, the
   size of every subset;
2. probe (:mod:`flexunet.planning.probe`): a few timed training steps of 2 candidate networks, 16
   and 8 filters (and at 256 px and more of a deeper one where it fits the budget) on this machine,
   at the precision training will use here, and the online augmentation's cost, a few seconds in all;
3. choose (``choose``): input size, levels and filters, BatchNorm, CE + Dice, Adam and
   its warm-up + decay schedule, batch size, online augmentation, foreground oversampling,
   epochs that fit the time budget (time for more than EPOCH_MAX of them: networks averaged,
   ``members``), monitor, cache, channels, mask format, rgb_map and class names;
4. write (:func:`flexunet.planning.config_text.config_text`): the config in the original's dialect, a ``;`` comment above
   every value naming the fact that chose it, and ``fingerprint.json`` beside it.

DATASET holds ``train/ valid/ test/``, each with ``images/`` and ``masks/`` (the layout
``flexunet split`` writes).  Paths in the config are relative to the config's folder.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from flexunet.planning.config_text import config_text
from flexunet.planning.fingerprint import SUBSETS, fingerprint_dataset
from flexunet.planning.probe import (AUGMENT_SHARE_LIMIT, FILTERS_MAX, Candidate, augment_seconds, busy_note,
                                     probe_ladder, probe_speed)
from flexunet.planning.sizes import size_lines, size_warnings, subset_sizes
from flexunet.utils.errors import DataError, FlexUNetError
from flexunet.utils.io import write_json, write_text
from flexunet.utils.machine import Machine, detect, precision_candidates, precision_reason
from flexunet.utils.outputs import check_output_file, claim_output_dir

log = logging.getLogger(__name__)

EPOCH_CAP = 30                   # the net is the largest that fits this many epochs; time left over goes to
EPOCH_MAX = 45                   # more of them, up to this many (both families gained: docs/generalisation.md)
GOOD_EPOCHS = 20                 # failing a net that fits EPOCH_CAP epochs, the largest that fits this many
MEMBERS_MAX = 3                  # time for more than EPOCH_MAX epochs goes to networks trained apart, averaged
OVERRUN = 1.3                    # a run took 1.3x the probe's estimate (13.4 min of a planned 10.35; AMD EPYC)


# --------------------------------------------------------------------------- the choices


def input_size(fp: dict, size: int | None) -> tuple[int, str]:
    if size is not None:
        return size, f"--size {size}"
    sides = [max(int(v) for v in s.split("x")) for s in fp["image_sizes"]]
    side = max(sides)
    rounded = max(32, int(math.ceil(side / 16.0)) * 16)
    what = "the images are " + ", ".join(fp["image_sizes"]) + " px"
    return rounded, what + ("" if rounded == side else "; rounded up to a multiple of 16")


def _epoch_seconds(step_s: float, train_n: int, valid_n: int, batch: int) -> float:
    """Training steps + validation (a forward pass ~1/3 of a step) + 10% for the pipeline and callbacks."""
    steps = math.ceil(train_n / batch)
    return 1.1 * step_s * (steps + math.ceil(valid_n / batch) / 3.0)


def class_weights_for(shares: list[float]) -> tuple[float, ...]:
    """Loss weights from pixel shares (background first): 1 for background, and for each foreground class
    ``2 * sqrt(commonest foreground share / its share)`` capped at 4 (1 for a class with no pixel).

    The square root lifts a rare class without letting a class of a few pixels dominate the loss;
    e.g. shares of 1.03% and 0.23% give weights 2 and 4."""
    fg = [x for x in shares[1:] if x > 0]
    top = max(fg) if fg else 0.0
    out = [1.0]
    for x in shares[1:]:
        out.append(round(min(4.0, 2.0 * math.sqrt(top / x)), 2) if x > 0 else 1.0)
    return tuple(out)


def epochs_fit(fp: dict, minutes: float) -> Callable[[Candidate, float], float]:
    """(candidate, seconds per step) -> epochs of the schedule that fit ``minutes`` on ``fp``'s set."""
    train_n, valid_n = fp["slices"]["train"], fp["slices"]["valid"]
    return lambda c, step_s: minutes * 60.0 / _epoch_seconds(step_s, train_n, valid_n, c.batch_size)


def choose(fp: dict, speeds: dict[Candidate, float], minutes: float, size: int, size_why: str,
           augment_s: float = 0.0, precision_why: str = "") -> dict[str, Any]:
    """Every planned value with the reason that chose it: {key: (value, why)}.

    ``augment_s``: measured seconds per image of online augmentation (0: not measured).
    ``precision_why``: why the candidates were timed in their precision (the machine's reason).
    """
    train_n, valid_n = fp["slices"]["train"], fp["slices"]["valid"]
    ranked = sorted(speeds, key=lambda c: c.rank, reverse=True)
    fit = epochs_fit(fp, minutes)
    fits = {c: fit(c, speeds[c]) for c in ranked}
    pick = next((c for c in ranked if fits[c] >= EPOCH_CAP),
                next((c for c in ranked if fits[c] >= GOOD_EPOCHS), ranked[-1]))
    epochs = int(max(1, min(EPOCH_MAX, math.floor(fits[pick]))))
    members = max(1, min(MEMBERS_MAX, math.floor(fits[pick] / (EPOCH_MAX * OVERRUN))))
    probe = "; ".join(f"{c.label}: {speeds[c]:.2f} s/step, {fits[c]:.0f} epochs fit" for c in ranked)
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
        "generator": (generator, f"online flips, small rotations and scaling ([augmentor]) cost "
                                 f"{augment_s * 1e3:.1f} ms per image here, {aug_share:.0%} of a training step"
                      + (f": worth it for {train_n} train slices seen {epochs} times" if generator
                         else f" (over {AUGMENT_SHARE_LIMIT:.0%}): off")),
        "size": (size, size_why),
        "levels": (pick.levels, f"{size} px / 2^{pick.levels - 1} = {size // 2 ** (pick.levels - 1)} px at the "
                                f"bottleneck: context of the whole slice"
                   + (f"; one level more than usual, at most {pick.max_filters} filters: it fits the budget"
                      if pick.max_filters else "")),
        "max_filters": pick.max_filters,
        "base_filters": (pick.base_filters, f"measured on this machine in {pick.precision} ({probe}); the larger "
                                            f"net that fits {EPOCH_CAP} epochs in {minutes:g} min, else "
                                            f"{GOOD_EPOCHS}, else the faster; none wider than {FILTERS_MAX}: 32 "
                                            f"filters gained on one synthetic family and lost on the other "
                                            f"(docs/generalisation.md), a faster machine's time goes to epochs"
                                            + busy_note(speeds)),
        "precision": (pick.precision, f"the nets were timed in {pick.precision}"
                      + (f": {precision_why}" if precision_why else "") + "; \"auto\": train times float32 "
                      + ("too and keeps the lower precision only where it is faster and as accurate"
                         if pick.precision != "float32" else "and any faster precision this machine has")),
        "batch_size": (pick.batch_size, f"{size} px images: {pick.batch_size} per step keeps BatchNorm statistics "
                                        f"usable and a step short on a CPU"),
        "epochs": (epochs, f"{minutes:g} min / {epoch_min:.2f} min per epoch ({train_n} train + {valid_n} valid "
                           f"slices at the probed speed), at most {EPOCH_MAX}: with dropout and scaling both "
                           f"synthetic families still gained from epochs {EPOCH_CAP}-{EPOCH_MAX}"
                           + (f"; each of the {members} members trains them" if members > 1 else "")),
        "members": (members, f"{fits[pick]:.0f} epochs fit in {minutes:g} min"
                    + (f": {members} networks of {epochs} epochs, trained apart with seeds seed..seed+{members - 1}"
                       f", their softmax outputs averaged" if members > 1 else
                       f"; two networks would need {2 * EPOCH_MAX * OVERRUN:.0f}")
                    + f" ({EPOCH_MAX} epochs x {OVERRUN:g} per network: runs took {OVERRUN:g}x their estimate; "
                      f"at most {MEMBERS_MAX}): three runs averaged beat the runs' mean in every cell of three "
                      f"synthetic families (docs/generalisation.md, fourteenth round)"),
        "warmup_epochs": (warmup, f"a short linear warm-up for a run of {epochs} epochs keeps Adam's first steps "
                                  f"from saturating the softmax"),
        "patience": (patience, f"early stopping after half of the {epochs} epochs (at least 8) without a lower "
                               f"validation loss: small lesions can take a third of a run to appear at all"),
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



# --------------------------------------------------------------------------- the command


def plan_dataset(dataset: Path, out: Path | None = None, minutes: float = 10.0, size: int | None = None,
                 classes: Sequence[str] | None = None, overwrite: bool = False,
                 probe: Callable[..., dict[Candidate, float]] | None = None,
                 machine: Machine | None = None) -> dict[str, Any]:
    """Fingerprint ``dataset``, probe this machine, write the config and ``fingerprint.json``.

    Returns {"config": path, "fingerprint": path, "choices": ...}.  Refuses an existing
    config unless ``overwrite``.  ``probe`` times the candidate nets (default: ``probe_speed``);
    ``machine`` (default: this one) decides the precision they are timed in.
    """
    dataset = Path(dataset)
    out = Path(out) if out is not None else Path("train_eval_infer.config")
    if not dataset.is_dir():
        raise DataError(f"{dataset}: folder not found; expected a dataset with train/ valid/ test/")
    if not (isinstance(minutes, (int, float)) and minutes > 0):
        raise FlexUNetError(f"--minutes {minutes}: expected a positive number of minutes")
    if size is not None and (size < 32 or size % 16):
        raise FlexUNetError(f"--size {size}: expected a multiple of 16, at least 32")
    subsets = [(f"dataset subset {s}/", dataset / s) for s in SUBSETS]
    fp_path = out.parent / "fingerprint.json"
    check_output_file(out, "plan", overwrite, "--out", subsets)
    check_output_file(fp_path, "plan", overwrite, "fingerprint.json beside --out", subsets)
    presence: dict = {}
    fp = fingerprint_dataset(dataset, classes, presence)
    fp["sizes"] = subset_sizes(dataset, [c["name"] for c in fp["classes"]], presence)   # how sure figures can be
    for line in size_lines(fp["sizes"]):
        log.info("plan: %s", line)
    for line in size_warnings(fp["sizes"]):
        log.warning("plan: %s", line)
    form = fp["mask_format"]
    log.info("plan: [mask] format = \"%s\": %s", form["format"], form["evidence"])
    if "no mask holds value" in form["evidence"]:
        log.warning("plan: %s; that class cannot be learned from this set", form["evidence"].rsplit("; ", 1)[1])
    chosen_size, size_why = input_size(fp, size)
    channels = 1 if fp["channels"] == "grey" else 3
    machine = machine or detect(gpu=True)
    precision = precision_candidates(machine)[-1]   # what "auto" trains in here where it is as accurate
    speeds = probe_ladder(probe or probe_speed, chosen_size, channels, len(fp["classes"]), precision,
                          epochs_fit(fp, minutes), EPOCH_CAP)
    choices = choose(fp, speeds, minutes, chosen_size, size_why, augment_seconds(chosen_size, channels),
                     precision_reason(machine))
    fp["probe"] = {f"{c.base_filters}x{c.levels}@{c.batch_size}": round(s, 4) for c, s in speeds.items()}
    fp["probe"].update(precision=precision, other_programs_cores=speeds.other_cores)
    fp["probe"]["augment_s_per_image"] = round(choices["generator_s"], 5)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(fp_path, fp)
    write_text(out, config_text(fp, choices, out, dataset, minutes))
    claim_output_dir(out.parent, "plan", [out.name, fp_path.name])
    members = choices["members"][0]
    log.info("plan: %d classes (%s), %s px, %s%d filters x %d levels, %d epochs of ~%s -> %s (facts in %s)",
             len(fp["classes"]), ", ".join(choices["names"]), chosen_size,
             f"{members} members of " if members > 1 else "", choices["base_filters"][0],
             choices["levels"][0], choices["epochs"][0], f"{minutes:g} min", out, fp_path.name)
    return {"config": out, "fingerprint": fp_path, "choices": choices, "fingerprint_data": fp}
