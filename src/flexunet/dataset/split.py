"""Master dataset -> grouped, seeded train / valid / test subsets.

A *group* is what must never be split across subsets: a patient (or series) when the
manifest knows it and ``[split] group_by = "patient"``, else a source slice.  Groups
are shuffled with ``[train] seed`` and, per *stratum* (the foreground classes a group
shows), each goes to the subset furthest below its target share of slices.  The split
is written once as ``split.json`` and reused by every later stage::

    <split.output_dir>/<split.name>/{train,valid,test,mini_test}/{images,masks}/<id>.png
    <split.output_dir>/<split.name>/split.json
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from flexunet.config.loader import Config
from flexunet.utils.errors import ConfigError, DataError
from flexunet.utils.io import pair_by_name
from flexunet.dataset.masks import read_config_mask
from flexunet.config.inputs import inputs_outside
from flexunet.utils.outputs import atomic_output_dir
from flexunet.dataset.records import MANIFEST_JSON, read_manifest, rgb_map_list, write_split

log = logging.getLogger(__name__)

SUBSETS = ("train", "valid", "test")
MINI_TEST = "mini_test"


# --------------------------------------------------------------------------- pure assignment


def group_key(row: Mapping[str, Any], group_by: str) -> str:
    """The group of a manifest row: its patient/series group, or its source slice."""
    slice_id = str(row.get("source_id") or row["id"])
    if group_by == "patient":
        return str(row.get("group") or slice_id)
    return slice_id


def stratum_key(classes: set[int]) -> str:
    """"1+2" for a group showing classes 1 and 2; "0" when it shows background only."""
    fg = sorted(c for c in classes if c != 0)
    return "+".join(str(c) for c in fg) if fg else "0"


def assign_groups(sizes: Mapping[str, int], ratios: Sequence[float], seed: int,
                  strata: Mapping[str, str] | None = None) -> dict[str, int]:
    """Subset index (0 train, 1 valid, 2 test) of each group.

    ``sizes`` is slices per group; ``strata`` a stratum label per group (None: one stratum).
    Groups are shuffled by ``seed``; stratum by stratum (rarest first) each group goes to
    the subset with ratio > 0 furthest below its target, its ratio of the slices of the
    strata handled so far (ties: the earlier subset).  So each stratum is split by the
    ratios, give or take one group, and rounding does not pile up across strata.
    Afterwards every subset with ratio > 0 holds at least one group, which needs as many
    groups.
    """
    active = [k for k, r in enumerate(ratios) if r > 0]
    if len(sizes) < len(active):
        raise ValueError(f"{len(sizes)} group(s) cannot fill {len(active)} subsets")
    rng = random.Random(seed)
    labels = dict(strata) if strata is not None else {}
    by_stratum: dict[str, list[str]] = {}
    for key in sorted(sizes):
        by_stratum.setdefault(labels.get(key, ""), []).append(key)
    order = sorted(by_stratum, key=lambda s: (sum(sizes[g] for g in by_stratum[s]), s))
    assignment: dict[str, int] = {}
    overall = [0] * len(ratios)
    cumulative = 0
    for stratum in order:
        members = by_stratum[stratum]
        rng.shuffle(members)
        # target: each subset's share of the strata so far, so this stratum is split by the
        # ratios and the rounding left by earlier strata is made up here, not accumulated
        cumulative += sum(sizes[g] for g in members)
        for g in members:
            best = max(active, key=lambda k: (ratios[k] * cumulative - overall[k], -k))
            assignment[g] = best
            overall[best] += sizes[g]
    _fill_empty(assignment, sizes, ratios, active, rng)
    return assignment


def _fill_empty(assignment: dict[str, int], sizes: Mapping[str, int], ratios: Sequence[float],
                active: list[int], rng: random.Random) -> None:
    """Move one group into each empty active subset, from the subset most over its target."""
    total = sum(sizes.values())
    for k in active:
        members = {s: [g for g, a in assignment.items() if a == s] for s in active}
        if members[k]:
            continue
        donors = [s for s in active if len(members[s]) > 1]
        count = {s: sum(sizes[g] for g in members[s]) for s in active}
        donor = max(donors, key=lambda s: (count[s] - ratios[s] * total, -s))
        candidates = sorted(members[donor])
        rng.shuffle(candidates)
        moved = min(candidates, key=lambda g: sizes[g])
        assignment[moved] = k


def assign_subsets(rows: Sequence[Mapping[str, Any]], ratios: Sequence[float], seed: int,
                   group_by: str = "patient", stratify: bool = True) -> list[str]:
    """Subset name ("train", "valid", "test") of each manifest row, grouped and stratified.

    Rows need ``id`` and ``classes`` and, for ``group_by="patient"``, ``group``.
    """
    keys = [group_key(r, group_by) for r in rows]
    sizes: dict[str, int] = {}
    classes: dict[str, set[int]] = {}
    for key, row in zip(keys, rows):
        sizes[key] = sizes.get(key, 0) + 1
        classes.setdefault(key, set()).update(int(c) for c in row.get("classes", ()))
    strata = {g: stratum_key(c) for g, c in classes.items()} if stratify else None
    assignment = assign_groups(sizes, ratios, seed, strata)
    return [SUBSETS[assignment[k]] for k in keys]


def choose_mini_test(rows: Sequence[Mapping[str, Any]], count: int, seed: int) -> list[int]:
    """Indices of up to ``count`` rows that together show every class present in ``rows``.

    Greedy cover (the slice showing most classes not yet shown, in seeded order), then
    seeded random slices up to ``count``.
    """
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    needed = set().union(*(set(r.get("classes", ())) for r in rows)) if rows else set()
    chosen: list[int] = []
    shown: set[int] = set()
    while len(chosen) < count and needed - shown:
        left = [i for i in order if i not in chosen]
        best = max(left, key=lambda i: len(set(rows[i].get("classes", ())) & (needed - shown)))
        if not set(rows[best].get("classes", ())) & (needed - shown):
            break
        chosen.append(best)
        shown |= set(rows[best].get("classes", ()))
    for i in order:
        if len(chosen) >= count:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


# --------------------------------------------------------------------------- master


def _master_dir(cfg: Config) -> Path:
    master = cfg.split.master_dir or cfg.prepare.output_dir
    if master is None:
        raise ConfigError(f"{cfg.source} [split] master_dir: missing (and no [prepare] output_dir); "
                          f"expected the master dataset folder written by `flexunet prepare`")
    key = ("split", "master_dir") if cfg.split.master_dir is not None else ("prepare", "output_dir")
    if not Path(master).is_dir():
        raise cfg.error(*key, f"the master dataset folder from `flexunet prepare` ({master} does not "
                              f"exist; run prepare first)")
    return Path(master)


def load_master(master: Path, cfg: Config) -> tuple[list[dict[str, Any]], str | None]:
    """Manifest rows of a master dataset and the manifest's SHA-256 (None without one).

    The class names are the config's [dataset] class_names, else the manifest's (prepare took them from
    --classes or a dataset.json): :func:`master_class_names`.

    Without manifest.json the images/ and masks/ folders are paired by name, masks are
    read for their classes, and each slice is its own group.
    """
    manifest = master / MANIFEST_JSON
    if manifest.is_file():
        return _read_manifest(manifest, cfg)
    images, masks = master / "images", master / "masks"
    if not (images.is_dir() and masks.is_dir()):
        raise DataError(f"{master}: no {MANIFEST_JSON} and no images/ + masks/ folders; expected the "
                        f"master dataset written by `flexunet prepare`")
    log.warning("%s: no %s; each slice is its own group and classes are read from the masks",
                master, MANIFEST_JSON)
    n = cfg.model.num_classes
    rows = []
    for image, mask in pair_by_name(images, masks):
        index = read_config_mask(mask, cfg).index
        counts = [int((index == c).sum()) for c in range(n)]
        rows.append({"id": image.stem, "image": f"images/{image.name}", "mask": f"masks/{mask.name}",
                     "group": image.stem, "group_kind": "slice",
                     "classes": [c for c in range(n) if counts[c]], "pixels": counts})
    return rows, None


def master_class_names(master: Path, cfg: Config) -> tuple[str, ...]:
    """[dataset] class_names when the config sets them, else the names prepare recorded in the master's
    manifest (when it has num_classes of them), else the config's defaults."""
    if cfg.dataset.class_names is None and (master / MANIFEST_JSON).is_file():
        names = read_manifest(master / MANIFEST_JSON)[0].get("class_names")
        if isinstance(names, list) and len(names) == cfg.model.num_classes:
            return tuple(str(n) for n in names)
    return cfg.class_names


def _read_manifest(manifest: Path, cfg: Config) -> tuple[list[dict[str, Any]], str]:
    doc, digest = read_manifest(manifest)
    rows = doc["items"]
    if not rows:
        raise DataError(f"{manifest}: lists no slices; expected a non-empty master dataset")
    fmt = doc.get("mask_format", "rgb")     # manifests written before [mask] format hold colour masks
    if fmt != cfg.mask.format:
        raise DataError(f"{manifest}: masks were written as {fmt} masks but the config's [mask] format is "
                        f"{cfg.mask.format}; expected the same format — re-run prepare or fix [mask] format")
    written = doc.get("rgb_map")
    if written is not None and fmt == "rgb":
        as_dict = {tuple(c): i for c, i in written}
        if as_dict != dict(cfg.mask.rgb_map):
            raise DataError(f"{manifest}: masks were written with rgb_map {as_dict} but the config's "
                            f"[mask] rgb_map is {dict(cfg.mask.rgb_map)}; expected the same colours — "
                            f"re-run prepare or fix [mask] rgb_map")
    return rows, digest


# --------------------------------------------------------------------------- writing


def _class_counts(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    combos: dict[str, int] = {}
    for r in rows:
        fg = [names[c] for c in sorted(r.get("classes", ())) if c != 0 and c < len(names)]
        label = "+".join(fg) if fg else names[0]
        combos[label] = combos.get(label, 0) + 1
    return {
        "slices_with_class": {name: sum(1 for r in rows if c in r.get("classes", ()))
                              for c, name in enumerate(names)},
        "class_combinations": dict(sorted(combos.items())),
    }


def _copy_rows(master: Path, rows: Sequence[Mapping[str, Any]], dest: Path) -> list[str]:
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir(parents=True)
    names = []
    for r in rows:
        for kind in ("image", "mask"):
            src = master / str(r[kind])
            if not src.is_file():
                raise DataError(f"{src}: listed in {master / MANIFEST_JSON} (id {r['id']}) but missing; "
                                f"expected the master dataset whole — re-run `flexunet prepare`")
            shutil.copyfile(src, dest / f"{kind}s" / src.name)
        names.append(Path(str(r["image"])).name)
    return names


def _target(cfg: Config) -> Path:
    out_root = Path(cfg.require("split", "output_dir", "the dataset root folder to write subsets under"))
    name = cfg.split.name
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise cfg.error("split", "name", "a plain folder name such as \"Stroke\"")
    return out_root / name


def split_dataset(cfg: Config, overwrite: bool = False) -> dict[str, Any]:
    """Write ``<[split] output_dir>/<name>/`` from the master dataset; return a summary.

    Summary keys: ``output_dir``, ``counts`` and ``groups`` (per subset), ``mini_test``
    (file names), ``seed``.
    """
    s = cfg.split
    seed = cfg.train.seed
    master = _master_dir(cfg)
    target = _target(cfg)
    rows, manifest_hash = load_master(master, cfg)
    names = [Path(str(r["image"])).name for r in rows]
    if len(set(names)) != len(names):
        dup = sorted(n for n in set(names) if names.count(n) > 1)[0]
        raise DataError(f"{master / MANIFEST_JSON}: two slices share the file name {dup}; expected unique ids")
    active = sum(1 for r in s.ratios if r > 0)
    n_groups = len({group_key(r, s.group_by) for r in rows})
    if n_groups < active:
        hint = ("set [split] group_by = \"slice\" if the patients are too few, or add data"
                if s.group_by == "patient" else "add slices")
        raise DataError(f"{master}: {n_groups} {s.group_by} group(s) cannot fill {active} non-empty "
                        f"subsets; expected at least {active} — {hint}")
    subset_of = assign_subsets(rows, s.ratios, seed, s.group_by, s.stratify)
    class_names = list(master_class_names(master, cfg))
    doc: dict[str, Any] = {
        "seed": seed, "ratios": list(s.ratios), "group_by": s.group_by, "stratify": s.stratify,
        "master_dir": str(master), "manifest_sha256": manifest_hash,
        "rgb_map": rgb_map_list(cfg.mask.rgb_map), "mask_format": cfg.mask.format, "class_names": class_names,
        "subsets": {},
    }
    summary: dict[str, Any] = {"output_dir": target, "seed": seed, "counts": {}, "groups": {}}
    inputs = [("[split] master_dir", master), *inputs_outside(cfg, target)]
    with atomic_output_dir(target, "split", overwrite, "[split] output_dir/name", inputs) as tmp:
        for subset in SUBSETS:
            members = [r for r, sub in zip(rows, subset_of) if sub == subset]
            files = _copy_rows(master, members, tmp / subset)
            groups = sorted({group_key(r, s.group_by) for r in members})
            doc["subsets"][subset] = {"count": len(members), "files": files, "groups": groups,
                                      **_class_counts(members, class_names)}
            summary["counts"][subset] = len(members)
            summary["groups"][subset] = len(groups)
        test_rows = [r for r, sub in zip(rows, subset_of) if sub == "test"]
        mini = [test_rows[i] for i in choose_mini_test(test_rows, s.mini_test_count, seed)]
        _warn_mini_test(test_rows, mini, s.mini_test_count, class_names)
        doc["mini_test"] = _copy_rows(master, mini, tmp / MINI_TEST)
        summary["mini_test"] = doc["mini_test"]
        write_split(tmp, doc)
    log.info("split %d slices (%d %s groups, seed %d) into %s: %s", len(rows), n_groups, s.group_by, seed,
             target, ", ".join(f"{k} {v}" for k, v in summary["counts"].items()))
    return summary


def _warn_mini_test(test_rows: Sequence[Mapping[str, Any]], mini: Sequence[Mapping[str, Any]],
                    count: int, names: Sequence[str]) -> None:
    if count and not test_rows:
        log.warning("the test subset is empty, so mini_test/ is empty too")
        return
    present = set().union(*(set(r.get("classes", ())) for r in test_rows)) if test_rows else set()
    shown = set().union(*(set(r.get("classes", ())) for r in mini)) if mini else set()
    missing = sorted(present - shown)
    if count and missing:
        log.warning("mini_test shows %d slice(s) and misses class(es) %s present in test; raise "
                    "[split] mini_test_count to show every class", len(mini),
                    ", ".join(names[c] if c < len(names) else str(c) for c in missing))
