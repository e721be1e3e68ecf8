"""``flexunet inspect``: what the config builds, before anything is trained."""

from __future__ import annotations

import logging
import sys

from flexunet.config import Config
from flexunet.io import write_text

log = logging.getLogger(__name__)


def inspect_model(cfg: Config, save: bool = True) -> dict:
    """Build the model, print its summary, parameter count and GFLOPs; save summary.txt.

    Returns ``{"params": int, "gflops": float, "summary_path": Path | None}``.
    """
    from flexunet.model import build_model, forward_flops, summary_text

    model = build_model(cfg.model, seed=cfg.train.seed)
    text = summary_text(model, cfg.model)
    sys.stdout.write(text)
    path = None
    if save:
        path = cfg.train.model_dir / "summary.txt"
        try:
            write_text(path, text)
            log.info("summary written to %s", path)
        except OSError as exc:
            log.warning("%s: cannot write the summary (%s); printed only", path, exc.strerror)
            path = None
    return {"params": model.count_params(), "gflops": forward_flops(model) / 1e9, "summary_path": path}
