"""How sure a planned run's validation and test figures can be: each subset's size, and a rough interval.

A whole-set Dice measured on n patients holding a class (slices, when no manifest names the
patients) would move, on another set of n drawn the same way, by about ``2 s / sqrt(n)`` either
side (95%), where s is the spread (standard deviation) of the Dice from one patient to the next.
Before a model exists s is unknown: the planner takes :data:`SPREAD` (docs/metrics.md says why)
and warns when that rough half-width is over :data:`WIDE`, i.e. when fewer than 25 units hold a
class.  ``flexunet evaluate`` and the end of training then measure the interval itself
(:mod:`flexunet.model.intervals`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from flexunet.dataset.records import find_manifest, slice_groups
from flexunet.model.intervals import SINGULAR as SINGULAR_UNITS

SPREAD = 0.25                    # assumed spread of the per-patient (or per-slice) Dice of a class
WIDE = 0.10                      # a rough 95% half-width over this: said as a warning
SUBSETS = (("valid", "validation"), ("test", "test"))


def half_width(units: int) -> float | None:
    """The rough 95% half-width ``2 * SPREAD / sqrt(units)`` of a whole-set Dice over ``units``; None for 0."""
    return round(2.0 * SPREAD / math.sqrt(units), 2) if units else None


def subset_sizes(dataset: Path, names: list[str],
                 presence: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, Any]:
    """Per subset (valid, test): slices, the unit (patients from the manifest behind the split, else
    slices) and how many, and per foreground class the slices and units holding it with the rough
    half-width.  ``presence``: each slice's file name and classes (from the fingerprint)."""
    out: dict[str, Any] = {}
    for subset, _ in SUBSETS:
        entries = presence.get(subset, [])
        files = [name for name, _ in entries]
        grouping = slice_groups(find_manifest(Path(dataset) / subset / "images"), files) if files else None
        unit, groups = grouping if grouping is not None else ("slices", files)
        classes = {}
        for k in range(1, len(names)):
            holding = {g for g, (_, held) in zip(groups, entries) if held[k]}
            classes[names[k]] = {"slices": sum(int(held[k]) for _, held in entries), "units": len(holding),
                                 "half_width": half_width(len(holding))}
        out[subset] = {"slices": len(files), "unit": unit, "units": len(set(groups)), "classes": classes}
    return out


def _count(n: int, unit: str) -> str:
    """``9 patients``, ``1 patient``."""
    return f"{n} {unit if n != 1 else SINGULAR_UNITS.get(unit, unit)}"


def size_lines(sizes: dict[str, Any]) -> list[str]:
    """One line per subset: ``valid: 36 slices of 9 patients; ischemic in 14 slices (6 patients), ...``."""
    lines = []
    for subset, _ in SUBSETS:
        s = sizes[subset]
        by_patient = s["unit"] != "slices"
        head = (f"{subset}: {_count(s['slices'], 'slices')} of {_count(s['units'], s['unit'])}" if by_patient
                else f"{subset}: {_count(s['slices'], 'slices')} (no manifest names their patients)")
        held = ", ".join(f"{name} in {_count(c['slices'], 'slices')}"
                         + (f" ({_count(c['units'], s['unit'])})" if by_patient else "")
                         for name, c in s["classes"].items())
        lines.append(f"{head}; {held}")
    return lines


def size_warnings(sizes: dict[str, Any]) -> list[str]:
    """Per subset, a line naming the classes whose Dice it cannot pin down (rough half-width over WIDE),
    and one per class it does not hold at all."""
    lines = []
    for subset, what in SUBSETS:
        s = sizes[subset]
        wide = [f"{name} in {_count(c['units'], s['unit'])} (+-{c['half_width']:.2f})"
                for name, c in s["classes"].items() if c["units"] and c["half_width"] > WIDE]
        if wide:
            lines.append(f"the {what} set is small for a Dice: {', '.join(wide)} (a rough 95% interval, assuming "
                         f"a per-{SINGULAR_UNITS[s['unit']]} Dice spread of {SPREAD}; docs/metrics.md): smaller "
                         f"differences between two runs are noise on it")
        lines += [f"no {what} slice holds {name}: its {what} Dice cannot be measured on this set"
                  for name, c in s["classes"].items() if not c["units"]]
    return lines
