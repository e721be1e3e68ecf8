"""``flexunet inspect``: what the config builds, before anything is trained.

It prints and writes nothing: ``[train] model_dir`` is the run's folder, and a folder that
holds files is refused by ``flexunet train`` as a previous run; ``train`` itself writes
``summary.txt`` (the same text) into the run folder it makes.
"""

from __future__ import annotations

import sys

from flexunet.config.loader import Config


def inspect_model(cfg: Config) -> dict:
    """Build the model and print its summary, parameter count and GFLOPs (no file is written).

    Returns ``{"params": int, "gflops": float, "text": str}``.
    """
    from flexunet.model.network import build_model, forward_flops, summary_text

    model = build_model(cfg.model, seed=cfg.train.seed)
    text = summary_text(model, cfg.model)
    sys.stdout.write(text)
    return {"params": model.count_params(), "gflops": forward_flops(model) / 1e9, "text": text}
