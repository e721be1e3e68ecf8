"""``flexunet train``: streaming, resumable, reproducible training.

1. refuse a model_dir holding a previous run unless ``--resume`` or ``--overwrite``;
2. pair train and valid files by name and check every mask's colours once;
3. seed everything from ``[train] seed`` (and op determinism when ``deterministic``);
4. build and compile the model inside the ``[train] strategy`` scope;
5. on ``--resume``: refuse train or valid files other than the run's (``--allow-data-change``: go on,
   recorded), restore weights, optimizer state and the controller's state;
6. fit on the tf.data pipeline; the controller writes best model, curves and checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from flexunet.config.inputs import input_folders
from flexunet.config.loader import Config, dump_config
from flexunet.dataset.leak_record import RECORD_FILE, compare_data, write_record
from flexunet.model.postprocess import RECORD as POSTPROCESS_RECORD, ComponentChooser, decision_of
from flexunet.model.postprocess import write_record as write_postprocess
from flexunet.model.precision import RECORD as PRECISION_RECORD
from flexunet.model.run_folder import apply_run, best_model_name, best_model_path
from flexunet.model.trained import check_precision
from flexunet.training import autotune
from flexunet.training import averaging
from flexunet.training.certainty import best_epoch_intervals
from flexunet.training.checkpoint import initial_state, load_checkpoint, recover_checkpoint, save_best
from flexunet.training.distribute import is_chief, make_strategy, worker_config
from flexunet.utils.errors import FlexUNetError, Interrupted, TrainingStopped
from flexunet.utils.io import list_files, remove_path, write_text
from flexunet.utils.outputs import check_output_dir, claim_output_dir, folder_owners

log = logging.getLogger(__name__)

RUN_FILES = ("best_model.keras", "best_model.weights.h5", "last_checkpoint", "train_eval_infer.config",
             "logs", "summary.txt", "data_record.json", "model_meta.json", PRECISION_RECORD,
             POSTPROCESS_RECORD, averaging.FOLDER)
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
        if not previous_run(model_dir) or not (model_dir / "last_checkpoint" / "state.json").is_file():
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
    from flexunet.preprocessing.pipeline import check_masks, make_dataset, steps_per_epoch, subset_pairs

    begun = time.perf_counter()
    require_tensorboard(cfg)
    t = cfg.train
    train_pairs = subset_pairs(cfg, "train")
    valid_pairs = subset_pairs(cfg, "valid")
    counts = check_masks(cfg, train_pairs + valid_pairs)  # pixels per class of every mask
    warn_absent_classes(cfg, counts, len(train_pairs))
    presence = counts[:len(train_pairs)] > 0
    samples = _infer_samples(cfg)
    _prepare_outputs(cfg, resume, overwrite, samples)
    data_diff = _check_data(cfg, train_pairs, valid_pairs, allow_data_change) if resume else None
    cfg, speed = autotune.settle(cfg, train_pairs)  # [train] jit_compile / mixed_precision "auto" -> a choice
    t = cfg.train

    import keras

    from flexunet.model.network import compile_model, configure_runtime, prior_bias, summary_text
    from flexunet.training.callbacks import (AveragedWeights, EpochChangeInferencer, NanGuard, RunController,
                                             current_lr)
    from flexunet.training.timing import EpochClock, timing_line

    configure_runtime(cfg)
    strategy = make_strategy(t.strategy)
    with strategy.scope():
        model = compile_model(cfg)
    state = initial_state(cfg)
    if t.output_bias == "prior" and not resume:  # a resumed run keeps its trained bias
        prior_bias(model, counts[:len(train_pairs)].sum(0))
    if resume:
        state = load_checkpoint(model, t.model_dir, cfg)
        if str(state.get("stopped_by") or "").startswith("collapse"):
            state["stopped_by"] = None  # resuming a run the guard stopped trains on; history.json keeps the finding
        log.info("resuming after epoch %d (best %s = %.5g at epoch %s)", state["epoch"], t.monitor,
                 state["best"], state["best_epoch"])
    state["speed"] = {k: v for k, v in speed.items() if k != "line"}  # model_meta.json says how it trained
    first = state["epoch"]
    if first >= t.epochs or state.get("stopped_by", "") and str(state["stopped_by"]).startswith("early"):
        log.info("nothing to do: the run already ended after epoch %d (%s)", first,
                 state.get("stopped_by") or f"epochs = {t.epochs}")
        return _summary(cfg, state, 0.0, best_model_name(cfg))
    note = ""
    if resume:
        note = (f"; resumed after epoch {first} at learning rate {current_lr(model):.6g} (restored from "
                f"last_checkpoint/; [model] learning_rate below is the run's initial rate)\n")
    if data_diff is not None and data_diff.changed:
        log.warning("%s: the training data changed after epoch %d: %s; --allow-data-change: training on "
                    "(recorded under \"changes\" in %s, whose leak check keeps the earlier images)", t.model_dir,
                    first, data_diff.summary(), RECORD_FILE)
    write_text(t.model_dir / "train_eval_infer.config", note + dump_config(cfg))
    if not resume:  # what `flexunet inspect` prints (a resumed run's network is the one already described)
        write_text(t.model_dir / "summary.txt", summary_text(model, cfg.model))
    # fingerprints every image (on --resume the new ones only): overlaps the first steps
    recording = _record_data(cfg, train_pairs, valid_pairs, data_diff, first)

    steps = t.steps_per_epoch or steps_per_epoch(cfg, len(train_pairs))
    val_steps = t.validation_steps or steps_per_epoch(cfg, len(valid_pairs))
    train_ds = make_dataset(cfg, train_pairs, training=True, epochs=(first, t.epochs), presence=presence)
    if t.steps_per_epoch:  # generator mode: the original's fixed steps; repeat the epoch stream
        train_ds = train_ds.repeat()
    valid_ds = make_dataset(cfg, valid_pairs, training=False)

    nan_guard, clock = NanGuard(), EpochClock(begun)
    callbacks = [clock, nan_guard]
    if t.ema > 0:  # validation and every save (best, checkpoint) see the averaged weights
        callbacks.append(AveragedWeights(swapped=resume))
    callbacks.append(RunController(cfg, state, t.model_dir / best_model_name(cfg),
                                   _class_shares(counts, len(train_pairs))))
    if samples:
        callbacks.append(EpochChangeInferencer(cfg, samples))
    if t.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(t.model_dir / "logs"), write_graph=False))
    callbacks.append(keras.callbacks.LambdaCallback(on_train_end=lambda logs: clock.mark("callbacks ended")))

    log.info("training %d epochs from epoch %d: %d train / %d valid images, %d steps per epoch, batch %d",
             t.epochs - first, first + 1, len(train_pairs), len(valid_pairs), steps, t.batch_size)
    start = time.perf_counter()
    verbose = (1 if sys.stderr.isatty() else 2) if progress else 0
    try:
        model.fit(train_ds, validation_data=valid_ds, epochs=t.epochs, initial_epoch=first,
                  steps_per_epoch=steps, validation_steps=val_steps if t.validation_steps else None,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    except KeyboardInterrupt:
        hint = "; continue with: flexunet train CONFIG --resume" if state["epoch"] else ""
        raise Interrupted(f"interrupted during epoch {state['epoch'] + 1}; {_kept(state, t.model_dir)}{hint}") \
            from None
    finally:
        clock.mark("fit returned")
        recording.result()  # the record is whole before train returns (or re-raises its own error)
        clock.mark("data record written")
    seconds = time.perf_counter() - start
    if nan_guard.where is None and state.get("best_epoch") and not str(state.get("stopped_by")).startswith("collapse"):
        if t.average_best > 1 and averaging.average_into(model, t.model_dir, state):
            save_best(model, t.model_dir / best_model_name(cfg), cfg, state)
        _check_precision(cfg, valid_pairs)
        clock.mark("precision checked")
    timing = clock.finish()
    log.info("%s", timing_line(timing))
    if nan_guard.where is not None:
        epoch, batch = nan_guard.where
        raise TrainingStopped(f"loss became NaN at epoch {epoch}, batch {batch}; {_kept(state, t.model_dir)}; "
                              f"lower [model] learning_rate (now {cfg.model.learning_rate}) or set [model] "
                              f"clipvalue, check the inputs, and start again with --overwrite (--resume "
                              f"would continue with the saved learning rate)")
    collapse = state.get("collapse") or {}
    if str(state.get("stopped_by") or "").startswith("collapse"):
        raise TrainingStopped(f"{collapse['message']}; training stopped ([train] on_collapse = \"stop\"); "
                              f"{_kept(state, t.model_dir)}; fix the config and start again with --overwrite "
                              f"(or set on_collapse = \"warn\" to train on)")
    if collapse:  # a warning: said once mid-run, said again where the run's figures are read
        log.warning("%s (found after epoch %d)", collapse["message"], collapse["epoch"])
    if t.ema > 0 and state.get("best_epoch"):  # a run stopped early ends with its raw weights in the model
        model.load_weights(best_model_path(t.model_dir))
    intervals = {}
    chooser = ComponentChooser(cfg.model.num_classes, cfg.model.image_height, cfg.model.image_width)
    try:  # one forward pass of the best model over the validation set; the run is whole without it
        if t.strategy != "multiworker":
            intervals = {name: {"dice": iv.dice, **iv.as_json()} for name, iv in
                         best_epoch_intervals(cfg, model, valid_ds, valid_pairs, state, chooser).items()}
    except (OSError, ValueError, FlexUNetError) as exc:
        log.warning("the best epoch's validation interval was not computed: %s", exc)
    if chooser.slices == len(valid_pairs) and is_chief():
        _choose_postprocessing(cfg, chooser)
    return {**_summary(cfg, state, seconds, best_model_name(cfg)), "timing": timing, "valid_intervals": intervals}


def _choose_postprocessing(cfg: Config, chooser: ComponentChooser) -> dict:
    """The smallest predicted component kept per class, chosen on the validation pass and recorded in the run
    folder (:mod:`flexunet.model.postprocess`); one line."""
    record = {**chooser.choose(cfg.class_names), "decision": decision_of(cfg)}   # the masks it was chosen for
    write_postprocess(cfg.train.model_dir, record)
    sizes = record["min_component_size"]
    log.info("post-processing chosen on %d validation slices: %s", chooser.slices, ", ".join(
        f"{name} " + (f"components under {sizes[k]} px removed (Dice {info['valid_dice']['0']:.3f} -> "
                      f"{info['valid_dice'][str(sizes[k])]:.3f})" if sizes[k] else "all kept")
        for k, (name, info) in enumerate(record["classes"].items(), start=1)))
    return record


def _check_precision(cfg: Config, valid_pairs: list) -> dict:
    """Once, at the end: the precision the trained model runs at in inference and evaluation, recorded in
    the run folder (:mod:`flexunet.model.precision`); a float32 run predicts nothing here."""
    from flexunet.preprocessing.pipeline import make_dataset

    trained = cfg.train.mixed_precision or "float32"
    batches = () if trained == "float32" else (x for x, _ in make_dataset(cfg, valid_pairs, training=False))
    return check_precision(cfg, trained, batches)


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


def _record_data(cfg: Config, train_pairs: list, valid_pairs: list, diff=None, epoch: int = 0) -> Future:
    """The leak guard's record of what this run learns from, written by a background thread (it reads
    every image once; on ``--resume``, with ``diff``, the new images only, merged into the record):
    ``.result()`` waits for it."""
    def record() -> None:
        path = write_record(cfg.train.model_dir, {"train": train_pairs, "valid": valid_pairs}, diff, epoch)
        log.debug("recorded %d train and %d valid images in %s", len(train_pairs), len(valid_pairs), path)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flexunet-record")
    future = pool.submit(record)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future


def _class_shares(counts, num_train: int) -> dict[int, tuple[float, float]]:
    """Foreground class -> its share of the training and validation mask pixels, for the classes
    the training masks hold (the collapse guard watches these)."""
    train, valid = counts[:num_train].sum(0), counts[num_train:].sum(0)
    return {c: (float(train[c] / max(1, train.sum())), float(valid[c] / max(1, valid.sum())))
            for c in range(1, len(train)) if train[c] > 0}


def _kept(state: dict, model_dir: Path) -> str:
    """What an interrupted or failed run leaves: the epochs its last checkpoint holds."""
    if not state["epoch"]:
        return "no epoch had completed, so no checkpoint was saved"
    return f"epochs 1..{state['epoch']} are saved in {model_dir}"


def _summary(cfg: Config, state: dict, seconds: float, best_name: str) -> dict:
    hist = state["history"]
    return {"epochs": state["epoch"], "best": state["best"], "best_epoch": state["best_epoch"],
            "monitor": cfg.train.monitor, "stopped_by": state.get("stopped_by"), "seconds": seconds,
            "collapse": state.get("collapse"),
            "best_model": str(cfg.train.model_dir / best_name), "history": hist,
            "final": {k: v[-1] for k, v in hist.items() if v and not (isinstance(v[-1], float) and math.isnan(v[-1]))}}
