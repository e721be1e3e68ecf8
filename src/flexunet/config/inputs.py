"""The folders a config names as inputs of some stage: what no command may write into (utils.outputs)."""

from __future__ import annotations

import os
from pathlib import Path

from flexunet.config.loader import Config
from flexunet.utils.outputs import overlap


def configured_split_dir(cfg: Config) -> Path | None:
    """``<[split] output_dir>/<[split] name>`` when the config names it, else None."""
    if cfg.split.output_dir is None or not cfg.split.name:
        return None
    return Path(cfg.split.output_dir) / cfg.split.name


def input_folders(cfg: Config) -> list[tuple[str, Path]]:
    """Every folder the config names as an input of some stage, as ``(label, path)``."""
    found: list[tuple[str, Path | None]] = [
        *((f"[{s}] {k}", getattr(getattr(cfg, s), k)) for s in ("train", "valid", "test")
          for k in ("images_dir", "masks_dir")),
        ("[infer] images_dir", cfg.infer.images_dir), ("[tiledinfer] images_dir", cfg.tiledinfer.images_dir),
        ("[prepare] raw_dir", cfg.prepare.raw_dir), ("[prepare] output_dir", cfg.prepare.output_dir),
        ("[split] master_dir", cfg.split.master_dir), ("[split] output_dir/name", configured_split_dir(cfg)),
        ("[report] dataset_dir", cfg.report.dataset_dir),
    ]
    return [(label, Path(p)) for label, p in found if p is not None]


def inputs_outside(cfg: Config, target: str | os.PathLike) -> list[tuple[str, Path]]:
    """:func:`input_folders` less those that are ``target`` or lie inside it: the folders a command
    building ``target`` whole (prepare, split) must leave alone, its own outputs not among them."""
    return [(label, p) for label, p in input_folders(cfg) if overlap(p, target) not in ("is", "is inside")]
