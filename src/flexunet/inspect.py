"""``flexunet inspect``: what the config builds, before anything is trained."""

from __future__ import annotations

import logging
import sys

from flexunet.config import Config
from flexunet.io import write_text
from flexunet.outputs import folder_owners, is_run_folder

log = logging.getLogger(__name__)


def inspect_model(cfg: Config, save: bool = True) -> dict:
    """Build the model, print its summary, parameter count and GFLOPs; save summary.txt.

    summary.txt is one of a training run's files (train's record names it): it is saved only into
    a run's model_dir, never into a folder of the user's or an input, nor before a run exists (a
    model_dir holding it would not be train's).  Returns ``{"params": int, "gflops": float,
    "summary_path": Path | None}``.
    """
    from flexunet.model import build_model, forward_flops, summary_text

    model = build_model(cfg.model, seed=cfg.train.seed)
    text = summary_text(model, cfg.model)
    sys.stdout.write(text)
    path = None
    model_dir = cfg.train.model_dir
    if save and not (is_run_folder(model_dir) and "summary.txt" in folder_owners(model_dir)["train"]):
        log.info("%s: holds no run of `flexunet train`, so summary.txt (one of a run's files) is not saved there; "
                 "printed only", model_dir)
    elif save:
        path = model_dir / "summary.txt"
        try:
            write_text(path, text)
            log.info("summary written to %s", path)
        except OSError as exc:
            log.warning("%s: cannot write the summary (%s); printed only", path, exc.strerror)
            path = None
    return {"params": model.count_params(), "gflops": forward_flops(model) / 1e9, "summary_path": path}
