"""Who may write where: the one ownership rule every writing command follows.

Each flexunet command records, in a hidden marker in every folder it writes into
(:data:`OWNER_FILE`), the names of the entries it wrote there.  From that record:

1. A command never writes into, inside or around a folder the config names as an input
   (train / valid / test / infer images and masks, raw, prepared, the split dataset), links and
   ``.`` resolved, nor inside another command's recorded output (a split dataset's entries), nor
   anywhere in a training run's folder (only ``train``, and ``export`` under ``export/``, write there).
2. It replaces an existing entry only when its own record names it.  An entry of the same name
   that no command wrote (the user's) or that another command wrote is refused, listed, with or
   without ``--overwrite``.
3. A folder holding entries it did not write is refused without ``--overwrite``; with it, the
   command writes its own names beside them and touches none of them.
4. A command that builds its folder whole (prepare, split, a SavedModel export) replaces it only
   when every entry there is its own earlier output (and ``--overwrite`` is given).
5. A single output file (a planned config, evaluation.csv, an exported model) is replaced only
   when the record beside it names it as the command's own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import swap_dir, write_json

OWNER_FILE = ".flexunet-owner.json"
# an entry only a training run's record names: its folder is a run folder (model_dir), not eval_dir
RUN_MARK = "last_checkpoint"
_LIST_LIMIT = 5
_NEVER = "with or without --overwrite"

Input = Union[str, os.PathLike, tuple[str, Any], None]


def overlap(path: str | os.PathLike, folder: str | os.PathLike) -> str | None:
    """How ``path`` and ``folder`` overlap once links are resolved: "is", "is inside", "contains" or None."""
    a, b = Path(path).resolve(), Path(folder).resolve()
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def folder_owners(folder: str | os.PathLike) -> dict[str, list[str]]:
    """``{command: [entry names]}`` of the marker in ``folder``; empty when there is none or it is unreadable."""
    try:
        doc = json.loads((Path(folder) / OWNER_FILE).read_text(encoding="utf-8"))
        return {str(k): [str(n) for n in v] for k, v in doc["owners"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def owner_of(path: str | os.PathLike) -> str | None:
    """The command whose record beside ``path`` names it, or None."""
    path = Path(path)
    return next((cmd for cmd, names in folder_owners(path.parent).items() if path.name in names), None)


def is_run_folder(folder: str | os.PathLike) -> bool:
    """Does ``folder`` hold a ``flexunet train`` run (a model_dir, as opposed to its curves' eval_dir)?"""
    return RUN_MARK in folder_owners(folder).get("train", ())


def claim_output_dir(out: str | os.PathLike, command: str, names: Iterable[str]) -> None:
    """Create ``out`` if needed and record ``names`` (entries of ``out``) as ``command``'s in its marker."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    owners = folder_owners(out)
    owners[command] = sorted(set(owners.get(command, ())) | {Path(str(n)).name for n in names})
    write_json(out / OWNER_FILE, {"about": "entries of this folder written by flexunet commands; a command "
                                           "replaces only its own", "owners": owners})


def claim_output_file(path: str | os.PathLike, command: str) -> None:
    """Record the file ``path`` as ``command``'s in the marker of its folder."""
    claim_output_dir(Path(path).parent, command, [Path(path).name])


def _labelled(inputs: Iterable[Input]) -> list[tuple[str, Path]]:
    out = []
    for item in inputs:
        if isinstance(item, tuple):
            label, path = item
            if path is not None:
                out.append((str(label), Path(path)))
        elif item is not None:
            out.append(("", Path(item)))
    return out


def _check_inputs(out: Path, command: str, what: str, inputs: Iterable[Input]) -> None:
    for label, src in _labelled(inputs):
        relation = overlap(out, src)
        if relation:
            named = f" ({label})" if label else ""
            raise FlexUNetError(f"{what} = {out}: {relation} the input folder {src}{named}; `flexunet {command}` "
                                f"never writes where its inputs are — choose a folder outside them")


def check_not_inside_others(out: str | os.PathLike, command: str, what: str) -> None:
    """``out`` must not be or lie inside an entry another command recorded (a split dataset's
    ``mini_test/``, a run's ``logs/``), nor lie anywhere in a training run's folder unless
    ``command`` is train or export (which keeps to its own run's ``export/``).  Commands that share a
    folder (``shares_with`` of :func:`check_output_dir`) share that folder only, never the inside
    of each other's entries."""
    out = Path(out)
    resolved = out.resolve()
    for parent in resolved.parents:
        if command not in ("train", "export") and is_run_folder(parent):
            raise FlexUNetError(f"{what} = {out}: lies inside {parent}, the folder of a `flexunet train` run; "
                                f"`flexunet {command}` never writes into a run folder — choose a path outside it")
        child = resolved.relative_to(parent).parts[0]
        for cmd, names in folder_owners(parent).items():
            if cmd != command and child in names:
                where = "is" if parent / child == resolved else "lies inside"
                raise FlexUNetError(f"{what} = {out}: {where} {parent / child}, written by `flexunet {cmd}`; "
                                    f"`flexunet {command}` never writes into another command's output — "
                                    f"choose a path outside it")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:_LIST_LIMIT]) + (", ..." if len(names) > _LIST_LIMIT else "")


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _existing_folder(out: Path, command: str, what: str, inputs: Iterable[Input]) -> bool:
    """Rule 1 for a folder ``command`` writes, then: is ``out`` a folder already (False: not there yet)?
    A file there is a FlexUNetError."""
    _check_inputs(out, command, what, inputs)
    check_not_inside_others(out, command, what)
    if out.exists() and not out.is_dir():
        raise FlexUNetError(f"{what} = {out}: is a file; expected a folder to write into")
    return out.is_dir()


# --------------------------------------------------------------------------- folders written into


def check_output_dir(out: str | os.PathLike, command: str, inputs: Iterable[Input] = (),
                     overwrite: bool = False, what: str | None = None, writes: Iterable[str] = (),
                     replaces: Iterable[str] = (), shares_with: tuple[str, ...] = ()) -> None:
    """May ``flexunet <command>`` write ``writes`` (files) and ``replaces`` (folders swapped whole)
    into ``out``?  A FlexUNetError naming the reason when not (rules 1-3 of this module).

    ``shares_with``: commands whose recorded outputs may stand in the same folder (evaluate writes
    beside train's curves in eval_dir; stats beside split's subsets).
    """
    out = Path(out)
    what = what or f"flexunet {command} output"
    if not _existing_folder(out, command, what, inputs):
        return
    owners = folder_owners(out)
    others = {name: cmd for cmd, names in owners.items() if cmd != command for name in names}
    strangers = sorted(cmd for cmd in owners if cmd != command and cmd not in shares_with
                       and any((out / n).exists() for n in owners[cmd]))
    if strangers:
        raise FlexUNetError(f"{what} = {out}: holds the outputs of `flexunet {strangers[0]}`; choose a folder "
                            f"of its own for `flexunet {command}`")
    names = [Path(str(n)).name for n in (*writes, *replaces)]
    for name in names:
        if name in others and _present(out / name):
            raise FlexUNetError(f"{out / name}: written by `flexunet {others[name]}`; `flexunet {command}` would "
                                f"replace it — choose another {what}")
    own = set(owners.get(command, ()))
    clashes = sorted({n for n in names if n not in own and n not in others and _present(out / n)})
    if clashes:
        raise FlexUNetError(f"{what} = {out}: already holds {_entries(len(clashes))} of the names `flexunet "
                            f"{command}` writes, not written by it ({_shown(clashes)}); it never replaces a file "
                            f"it did not write, {_NEVER} — move them away or choose another folder")
    foreign = sorted(p.name for p in out.iterdir()
                     if not p.name.startswith(".") and p.name not in own and p.name not in others)
    if foreign and not overwrite:
        raise FlexUNetError(f"{what} = {out}: holds {_entries(len(foreign))} `flexunet {command}` did not write "
                            f"({_shown(foreign)}); choose a new folder, or pass --overwrite to write beside "
                            f"them (none of them is replaced or deleted)")


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


# --------------------------------------------------------------------------- single files


def check_output_file(path: str | os.PathLike, command: str, overwrite: bool, what: str,
                      inputs: Iterable[Input] = (), own_needs_overwrite: bool = True) -> None:
    """May ``flexunet <command>`` write the file ``path``?  Only a new name, or its own earlier file
    (with ``overwrite`` when ``own_needs_overwrite``); never a file it did not write (rule 5)."""
    path = Path(path)
    _check_inputs(path, command, what, inputs)
    if path.is_dir():
        raise FlexUNetError(f"{what} = {path}: is a folder; expected a file path")
    if not _present(path):
        check_not_inside_others(path, command, what)
        return
    owner = owner_of(path)
    if owner is None:
        raise FlexUNetError(f"{what} = {path}: exists and was not written by `flexunet {command}`; it never "
                            f"replaces a file it did not write, {_NEVER} — choose another path or move the file "
                            f"away")
    if owner != command:
        raise FlexUNetError(f"{what} = {path}: written by `flexunet {owner}`; `flexunet {command}` never "
                            f"replaces another command's file — choose another path")
    if own_needs_overwrite and not overwrite:
        raise FlexUNetError(f"{what} = {path}: written by an earlier `flexunet {command}`; pass --overwrite to "
                            f"replace it, or choose another path")
    check_not_inside_others(path, command, what)


# --------------------------------------------------------------------------- folders built whole


def check_whole_dir(target: str | os.PathLike, command: str, overwrite: bool, what: str,
                    inputs: Iterable[Input] = ()) -> None:
    """May a folder built whole by ``command`` replace ``target`` (rule 4)?"""
    target = Path(target)
    if not _existing_folder(target, command, what, inputs):
        return
    own = set(folder_owners(target).get(command, ()))
    entries = sorted(p.name for p in target.iterdir() if p.name != OWNER_FILE)
    foreign = [n for n in entries if n not in own]
    if foreign:
        raise FlexUNetError(f"{what} = {target}: holds {_entries(len(foreign))} `flexunet {command}` did not "
                            f"write ({_shown(foreign)}); it builds this folder whole and would delete them, so "
                            f"it needs a new or empty folder, or its own earlier output (--overwrite never "
                            f"deletes files a command did not write)")
    if entries and not overwrite:
        raise FlexUNetError(f"{what} = {target}: holds the output of an earlier `flexunet {command}`; pass "
                            f"--overwrite to replace it, or choose another folder")


@contextlib.contextmanager
def atomic_output_dir(target: str | os.PathLike, command: str, overwrite: bool, what: str,
                      inputs: Iterable[Input] = ()) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; on success every entry in it is recorded as
    ``command``'s and it replaces ``target`` whole (:func:`swap_dir`).

    On any error the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(os.path.abspath(target))
    inputs = list(inputs)
    check_whole_dir(target, command, overwrite, what, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        yield tmp
        claim_output_dir(tmp, command, [p.name for p in tmp.iterdir() if p.name != OWNER_FILE])
        check_whole_dir(target, command, overwrite, what, inputs)  # nothing appeared meanwhile
        swap_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
