"""``flexunet train``: streaming, resumable, reproducible training.

1. refuse a model_dir holding a previous run unless ``--resume`` or ``--overwrite``;
2. pair train and valid files by name and check every mask's colours once;
3. on ``--resume``: refuse train or valid files other than the run's (``--allow-data-change``: go on,
   recorded);
4. train the network (:func:`flexunet.training.fit.fit_network`: seeds, model, checkpoint, the fit), or
   with ``[model] members = K`` K networks apart, their mean the model (:mod:`flexunet.training.members`);
5. the best model's validation Dice with its interval, and the post-processing chosen on that pass.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config
from flexunet.dataset.leak_record import RECORD_FILE, compare_data
from flexunet.model.postprocess import RECORD as POSTPROCESS_RECORD
from flexunet.model.precision import RECORD as PRECISION_RECORD
from flexunet.model.run_folder import MEMBERS, apply_run, best_model_name, member_dir
from flexunet.training import autotune, averaging, members
from flexunet.training.checkpoint import recover_checkpoint
from flexunet.training.distribute import is_chief, worker_config
from flexunet.training.fit import RunData, finish_network, fit_network
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import list_files, remove_path
from flexunet.utils.outputs import check_output_dir, claim_output_dir, folder_owners

log = logging.getLogger(__name__)

RUN_FILES = ("best_model.keras", "best_model.weights.h5", "last_checkpoint", "train_eval_infer.config",
             "logs", "summary.txt", "data_record.json", "model_meta.json", PRECISION_RECORD,
             POSTPROCESS_RECORD, averaging.FOLDER, MEMBERS)
# what training writes to [train] eval_dir (callbacks.write_curves); recorded as train's in its marker
CURVE_FILES = ("train_losses.csv", "train_metrics.csv", "history.json", "train_losses.png", "train_metrics.png")


def _epoch_change_names(cfg: Config, samples: list[Path]) -> list[str]:
    """What the epoch-change inferencer writes: Epoch_<n>_<stem>.png and Epoch_<n>_montage.png per epoch."""
    stems = [p.stem for p in samples] + ["montage"] if samples else []
    return [f"Epoch_{n}_{stem}.png" for n in range(1, cfg.train.epochs + 1) for stem in stems]


def _prepare_outputs(cfg: Config, resume: bool, overwrite: bool, samples: list[Path]) -> None:
    """Check train's three output folders against every input folder and against the ownership rule
    (flexunet.utils.outputs), then make model_dir ready: a previous run (recognised by train's own record,
    never by a file name) needs ``--resume`` or ``--overwrite``, and ``--overwrite`` removes only what
    that record names."""
    t = cfg.train
    inputs = input_folders(cfg)
    beside = overwrite or resume  # a resumed run was allowed beside those files when it started
    check_output_dir(t.model_dir, "train", inputs, beside, what="[train] model_dir", writes=RUN_FILES)
    check_output_dir(t.eval_dir, "train", inputs, beside, what="[train] eval_dir", writes=CURVE_FILES,
                     shares_with=("evaluate",))
    epoch_names = _epoch_change_names(cfg, samples)
    if epoch_names:
        check_output_dir(t.epoch_change_infer_dir, "train", inputs, beside,
                         what="[train] epoch_change_infer_dir", writes=epoch_names)
    _prepare_model_dir(cfg, resume, overwrite)
    claim_output_dir(t.model_dir, "train", RUN_FILES)
    claim_output_dir(t.eval_dir, "train", CURVE_FILES)
    if epoch_names:
        claim_output_dir(t.epoch_change_infer_dir, "train", epoch_names)


def previous_run(model_dir: Path) -> list[str]:
    """The entries of ``model_dir`` that train's record names and that are there: a previous run."""
    return sorted(n for n in folder_owners(model_dir).get("train", ()) if (model_dir / n).exists())


def _prepare_model_dir(cfg: Config, resume: bool, overwrite: bool) -> None:
    model_dir = cfg.train.model_dir
    if resume:
        if model_dir.is_dir():
            recover_checkpoint(model_dir)
        point = member_dir(model_dir, 1) if cfg.model.members > 1 else model_dir
        if not previous_run(model_dir) or not (point / "last_checkpoint" / "state.json").is_file():
            raise FlexUNetError(f"{model_dir}: nothing to resume (no run of `flexunet train` with a "
                                f"last_checkpoint/ there); start a new run without --resume")
        return
    previous = previous_run(model_dir)
    if previous and not overwrite:
        raise FlexUNetError(f"{model_dir}: holds a previous run of `flexunet train` ({', '.join(previous[:3])}"
                            f"{', ...' if len(previous) > 3 else ''}); use --resume to continue it or --overwrite "
                            f"to replace it (or set [train] model_dir to a new folder)")
    if previous and cfg.train.create_backup:
        backup = model_dir.with_name(f"{model_dir.name}.backup-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copytree(model_dir, backup)
        log.info("previous run backed up to %s", backup)
    for name in previous:  # --overwrite: remove only what train's record names
        remove_path(model_dir / name)
    model_dir.mkdir(parents=True, exist_ok=True)


def _infer_samples(cfg: Config) -> list[Path]:
    folder = cfg.infer.images_dir
    if not cfg.train.epoch_change_infer:
        return []
    if folder is None or not Path(folder).is_dir():
        log.warning("[train] epoch_change_infer: [infer] images_dir %s not found; epoch-change inference off",
                    folder)
        return []
    return list_files(folder, (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))[:cfg.train.num_infer_images]


def train(cfg: Config, resume: bool = False, overwrite: bool = False, progress: bool = True,
          strict: bool = False, allow_data_change: bool = False) -> dict:
    """Train as the config says; returns a summary (epochs run, best value and epoch, paths, seconds).

    ``--resume`` continues the run as it was trained: the run folder's network keys and
    learning rate win over the config's (one line per differing key; ``strict``: an error),
    on the train and valid files the run trained on (others: an error; ``allow_data_change``:
    a warning, the change recorded in data_record.json, whose leak check keeps the earlier images).

    With ``strategy = "multiworker"`` every worker runs this with the same config; only the
    chief writes model_dir and eval_dir, the others write to a temporary folder (removed).
    """
    if allow_data_change and not resume:
        raise FlexUNetError("--allow-data-change: only with --resume (a new run records the data it trains on)")
    if resume:  # every worker alike; the checkpoint restores the learning rate, so the config's is ignored
        cfg = apply_run(cfg, strict, extra_keys=(("model", "learning_rate"),))
    if cfg.train.strategy == "multiworker" and not is_chief():  # is_chief: TF_CONFIG checked before any work
        with tempfile.TemporaryDirectory(prefix="flexunet-worker-") as scratch:
            return _train(worker_config(cfg, Path(scratch), resume), resume, overwrite, progress,
                          allow_data_change)
    return _train(cfg, resume, overwrite, progress, allow_data_change)


def require_tensorboard(cfg: Config) -> None:
    """With ``[train] tensorboard = True``, fail before any work when the tensorboard package is missing.

    TensorFlow >= 2.21 does not install it, and without it ``tf.summary`` fails only at the
    end of the first epoch (TBNotInstalledError).
    """
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise FlexUNetError(f"{cfg.where('train', 'tensorboard')}: needs the tensorboard package, which is not "
                            f"installed; install it with pip install 'tensorboard>=2.21,<2.22' (the cpu and gpu "
                            f"extras include it) or set [train] tensorboard = False")


def _train(cfg: Config, resume: bool, overwrite: bool, progress: bool, allow_data_change: bool = False) -> dict:
    from flexunet.preprocessing.pipeline import check_masks, subset_pairs

    begun = time.perf_counter()
    require_tensorboard(cfg)
    train_pairs = subset_pairs(cfg, "train")
    valid_pairs = subset_pairs(cfg, "valid")
    counts = check_masks(cfg, train_pairs + valid_pairs)  # pixels per class of every mask
    warn_absent_classes(cfg, counts, len(train_pairs))
    samples = _infer_samples(cfg)
    _prepare_outputs(cfg, resume, overwrite, samples)
    data_diff = _check_data(cfg, train_pairs, valid_pairs, allow_data_change) if resume else None
    cfg, speed = autotune.settle(cfg, train_pairs)  # [train] jit_compile / mixed_precision "auto" -> a choice
    data = RunData(train_pairs, valid_pairs, counts, samples, speed, begun, progress, data_diff)
    if cfg.model.members == 1:
        if cfg.train.member_folds:
            log.info("[train] member_folds: no effect with [model] members = 1 (one network, on [valid])")
        model, state, seconds, timing = fit_network(cfg, resume, data, record=True)
    else:
        model, state, seconds, timing = members.fit_members(cfg, resume, data)
    if timing is None:  # --resume of a run that had ended
        return _summary(cfg, state, 0.0, best_model_name(cfg))
    if members.pooled(cfg):  # [valid] trained members 2..K: the members' own passes were pooled instead
        intervals = state.pop("pooled_intervals", {})
    else:
        intervals = finish_network(cfg, model, state, valid_pairs, members.label(cfg))
    return {**_summary(cfg, state, seconds, best_model_name(cfg)), "timing": timing, "valid_intervals": intervals}


def warn_absent_classes(cfg: Config, counts, num_train: int) -> list[int]:
    """One warning per class of [model] num_classes that no training or validation mask holds (the model
    cannot learn it); ``counts``: pixels per class of each training, then validation mask.  The classes."""
    total = counts.sum(0)
    absent = [c for c in range(cfg.model.num_classes) if total[c] == 0]
    colours = {index: colour for colour, index in cfg.mask.rgb_map.items()}
    for c in absent:
        name = f' "{cfg.dataset.class_names[c]}"' if cfg.dataset.class_names else ""
        how = f"value {c}" if cfg.mask.format == "index" else f"colour {colours.get(c)}"
        log.warning("class %d%s (%s) is in none of the %d training and %d validation masks: the model cannot "
                    "learn it; check [model] num_classes = %d and the masks", c, name, how, num_train,
                    len(counts) - num_train, cfg.model.num_classes)
    return absent


def _check_data(cfg: Config, train_pairs: list, valid_pairs: list, allow_change: bool):
    """``--resume``: the train and valid files against the run's data_record.json (one sha256 per file);
    other files are an error unless ``allow_change``.  Returns the :class:`~flexunet.dataset.leak_record.DataDiff`."""
    model_dir = cfg.train.model_dir
    diff = compare_data(model_dir, {"train": train_pairs, "valid": valid_pairs})
    if diff.doc is None:
        log.warning("%s: no %s (the run predates it, or stopped before writing it): could not check that the "
                    "train and valid files are the ones the run trained on; recording the current ones",
                    model_dir, RECORD_FILE)
    elif diff.changed and not allow_change:
        raise FlexUNetError(f"{model_dir}: the training data changed since the run trained on it "
                            f"({diff.summary()}; compared with {RECORD_FILE}); --resume would go on with other "
                            f"data — restore the data the run trained on, or start a new run with --overwrite "
                            f"(or a new [train] model_dir), or pass --allow-data-change to continue on the "
                            f"changed data (recorded in {RECORD_FILE})")
    return diff


def _summary(cfg: Config, state: dict, seconds: float, best_name: str) -> dict:
    hist = state["history"]
    return {"epochs": state["epoch"], "best": state["best"], "best_epoch": state["best_epoch"],
            "monitor": cfg.train.monitor, "stopped_by": state.get("stopped_by"), "seconds": seconds,
            "collapse": state.get("collapse"), "members": state.get("members"),
            "best_model": str(cfg.train.model_dir / best_name), "history": hist,
            "final": {k: v[-1] for k, v in hist.items() if v and not (isinstance(v[-1], float) and math.isnan(v[-1]))}}
