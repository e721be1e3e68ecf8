"""``flexunet inspect``: what the config builds, before anything is trained, or what a trained
model file or run folder carries (its metadata, as text).

It prints and writes nothing: ``[train] model_dir`` is the run's folder, and a folder that
holds files is refused by ``flexunet train`` as a previous run; ``train`` itself writes
``summary.txt`` (the same text) into the run folder it makes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from flexunet.config.loader import Config
from flexunet.model.run_folder import BEST_NAMES, SAVED_CONFIG, best_model_path, read_meta
from flexunet.utils.errors import FlexUNetError


def inspect_model(cfg: Config) -> dict:
    """Build the model and print its summary, parameter count and GFLOPs (no file is written).

    Returns ``{"params": int, "gflops": float, "text": str}``.
    """
    from flexunet.model.network import build_model, forward_flops, summary_text

    model = build_model(cfg.model, seed=cfg.train.seed)
    text = summary_text(model, cfg.model)
    sys.stdout.write(text)
    return {"params": model.count_params(), "gflops": forward_flops(model) / 1e9, "text": text}


def describe_meta(meta: Mapping[str, Any], source: str) -> str:
    """The metadata as text for ``flexunet inspect MODEL_FILE``."""
    i = meta.get("input", {})
    lines = [f"{source}: {meta.get('best_model')} (best {meta.get('monitor')} {meta.get('best')} at epoch "
             f"{meta.get('best_epoch')}; {meta.get('epoch')} epoch(s) trained)",
             f"input: {i.get('height')}x{i.get('width')}x{i.get('channels')}, {i.get('color_order')}, "
             f"scaled 0..255 -> 0..1 in the model: {i.get('normalize')}",
             "classes:"]
    lines += [f"  {c['index']}: {c['name']}  colour {tuple(c['colour']) if c.get('colour') else None}"
              for c in meta.get("classes", [])]
    lines.append("run settings:")
    lines += [f"  {k} = {v!r}" for k, v in meta.get("config", {}).items()]
    v = meta.get("versions", {})
    lines.append(f"versions: flexunet {v.get('flexunet')}, tensorflow {v.get('tensorflow')}, "
                 f"keras {v.get('keras')}")
    lines.append(f"split sha256: {meta.get('split_sha256')}")
    if meta.get("members"):
        lines.append(f"the mean of {len(meta['members'])} members: {describe_members(meta['members'], meta.get('monitor'))}")
    speed = meta.get("speed") or {}
    if speed:
        lines.append(f"trained in {speed.get('precision')}, XLA {'on' if speed.get('jit_compile') else 'off'} "
                     f"({speed.get('precision_why')})")
    return "\n".join(lines) + "\n"


def describe_members(members: list[dict[str, Any]], monitor: str | None) -> str:
    """``[model] members``: each member's seed, epochs, best epoch and averaged epochs, in one line."""
    def one(k: int, m: dict[str, Any]) -> str:
        text = f"member {k} (seed {m.get('seed')}): {m.get('epoch')} epoch(s)"
        if m.get("best_epoch"):
            best = m.get("best")
            text += f", best {monitor} {best:.4g} at epoch {m['best_epoch']}" if isinstance(best, (int, float)) \
                else f", best at epoch {m['best_epoch']}"
        if m.get("averaged_epochs"):
            text += f", mean of epochs {', '.join(map(str, m['averaged_epochs']))}"
        fold = m.get("fold")
        if isinstance(fold, dict) and isinstance(fold.get("groups"), list):   # [train] member_folds
            text += f", validated on its own fold of {len(fold['groups'])} training {fold.get('unit', 'groups')}"
        return text
    return "; ".join(one(k, m) for k, m in enumerate(members, start=1))


def inspect_target(target: Path) -> str:
    """``flexunet inspect MODEL_FILE_OR_RUN_DIR``: the metadata as text (an error when there is none)."""
    if not target.exists():
        raise FlexUNetError(f"{target}: not found; expected a config file, a model file or a run folder")
    meta = read_meta(target)
    if meta is None and target.is_dir() and any((target / n).is_file() for n in BEST_NAMES):
        meta = read_meta(best_model_path(target))
    if meta is None:
        raise FlexUNetError(f"{target}: carries no FlexUNet metadata; expected a best model, a last_checkpoint/ "
                            f"or a run folder written by 'flexunet train' (a run trained before the metadata "
                            f"existed has only its {SAVED_CONFIG})")
    return describe_meta(meta, str(target))
