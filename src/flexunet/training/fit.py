"""One network's training: what ``flexunet train`` does between the checks and the run's last words.

1. seed everything from ``[train] seed`` (and op determinism when ``deterministic``);
2. build and compile the model inside the ``[train] strategy`` scope;
3. on ``--resume``: restore weights, optimizer state and the controller's state;
4. fit on the tf.data pipeline; the controller writes best model, curves and checkpoint;
5. the best model becomes the mean of the best epochs' weights (``average_best``); the guards' findings
   (NaN, collapse) end the run with one line.

A run of one network (:mod:`flexunet.training.train`) and each member of ``[model] members``
(:mod:`flexunet.training.members`) train here.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flexunet.config.loader import Config, dump_config
from flexunet.dataset.leak_record import RECORD_FILE, write_record
from flexunet.model.postprocess import ComponentChooser, decision_of
from flexunet.model.postprocess import write_record as write_postprocess
from flexunet.model.run_folder import best_model_name, best_model_path
from flexunet.model.trained import check_precision
from flexunet.training import averaging
from flexunet.training.certainty import Pool, best_epoch_intervals
from flexunet.training.checkpoint import initial_state, load_checkpoint, save_best
from flexunet.training.distribute import is_chief, make_strategy
from flexunet.utils.errors import FlexUNetError, Interrupted, TrainingStopped
from flexunet.utils.io import write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunData:
    """What every network of a run trains on, read and checked once (:func:`flexunet.training.train.train`)."""

    train_pairs: list
    valid_pairs: list
    counts: Any            # pixels per class of every train, then valid mask
    samples: list          # the epoch-change inferencer's images
    speed: dict            # autotune.settle's choices
    begun: float
    progress: bool
    data_diff: Any = None  # --resume: the data against the run's record


def fit_network(cfg: Config, resume: bool, data: RunData, record: bool):
    """Train one network in ``cfg.train.model_dir``; returns (its best model, the run state, seconds of fitting,
    the timing: None when a resumed run had already ended, its model then untrained).  ``record``: write the
    data record there and check the precision (a member leaves both to the run it belongs to).  On ``resume``
    the caller has recovered the folder's checkpoint (it decides from it whether there is one to resume)."""
    from flexunet.preprocessing.pipeline import make_dataset, steps_per_epoch

    begun = data.begun if record else time.perf_counter()   # a member's timing line is its own
    t = cfg.train
    train_pairs, valid_pairs, counts = data.train_pairs, data.valid_pairs, data.counts
    presence = counts[:len(train_pairs)] > 0
    samples = data.samples if t.epoch_change_infer else []

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
    state["speed"] = {k: v for k, v in data.speed.items() if k != "line"}  # model_meta.json says how it trained
    first = state["epoch"]
    if first >= t.epochs or state.get("stopped_by", "") and str(state["stopped_by"]).startswith("early"):
        log.info("nothing to do: %s already ended after epoch %d (%s)", "the run" if record else t.model_dir,
                 first, state.get("stopped_by") or f"epochs = {t.epochs}")
        return model, state, 0.0, None
    note = ""
    if resume:
        note = (f"; resumed after epoch {first} at learning rate {current_lr(model):.6g} (restored from "
                f"last_checkpoint/; [model] learning_rate below is the run's initial rate)\n")
    if data.data_diff is not None and data.data_diff.changed:
        log.warning("%s: the training data changed after epoch %d: %s; --allow-data-change: training on "
                    "(recorded under \"changes\" in %s, whose leak check keeps the earlier images)", t.model_dir,
                    first, data.data_diff.summary(), RECORD_FILE)
    write_text(t.model_dir / "train_eval_infer.config", note + dump_config(cfg))
    if not resume:  # what `flexunet inspect` prints (a resumed run's network is the one already described)
        write_text(t.model_dir / "summary.txt", summary_text(model, cfg.model))
    # fingerprints every image (on --resume the new ones only): overlaps the first steps
    recording = record_data(cfg, train_pairs, valid_pairs, data.data_diff, first) if record else None

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
                                   class_shares(counts, len(train_pairs))))
    if samples:
        callbacks.append(EpochChangeInferencer(cfg, samples))
    if t.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(t.model_dir / "logs"), write_graph=False))
    callbacks.append(keras.callbacks.LambdaCallback(on_train_end=lambda logs: clock.mark("callbacks ended")))

    log.info("training %d epochs from epoch %d: %d train / %d valid images, %d steps per epoch, batch %d",
             t.epochs - first, first + 1, len(train_pairs), len(valid_pairs), steps, t.batch_size)
    start = time.perf_counter()
    verbose = (1 if sys.stderr.isatty() else 2) if data.progress else 0
    try:
        model.fit(train_ds, validation_data=valid_ds, epochs=t.epochs, initial_epoch=first,
                  steps_per_epoch=steps, validation_steps=val_steps if t.validation_steps else None,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    except KeyboardInterrupt:
        hint = "; continue with: flexunet train CONFIG --resume" if state["epoch"] else ""
        raise Interrupted(f"interrupted during epoch {state['epoch'] + 1}; {kept(state, t.model_dir)}{hint}") \
            from None
    finally:
        clock.mark("fit returned")
        if recording is not None:
            recording.result()  # the record is whole before train returns (or re-raises its own error)
            clock.mark("data record written")
    seconds = time.perf_counter() - start
    if nan_guard.where is None and state.get("best_epoch") and not str(state.get("stopped_by")).startswith("collapse"):
        if t.average_best > 1 and averaging.average_into(model, t.model_dir, state):
            save_best(model, t.model_dir / best_model_name(cfg), cfg, state)
        if record:  # a member's precision is the run's to check, on the members' mean
            check_run_precision(cfg, valid_pairs)
            clock.mark("precision checked")
    timing = clock.finish()
    log.info("%s", timing_line(timing))
    if nan_guard.where is not None:
        epoch, batch = nan_guard.where
        raise TrainingStopped(f"loss became NaN at epoch {epoch}, batch {batch}; {kept(state, t.model_dir)}; "
                              f"lower [model] learning_rate (now {cfg.model.learning_rate}) or set [model] "
                              f"clipvalue, check the inputs, and start again with --overwrite (--resume "
                              f"would continue with the saved learning rate)")
    collapse = state.get("collapse") or {}
    if str(state.get("stopped_by") or "").startswith("collapse"):
        raise TrainingStopped(f"{collapse['message']}; training stopped ([train] on_collapse = \"stop\"); "
                              f"{kept(state, t.model_dir)}; fix the config and start again with --overwrite "
                              f"(or set on_collapse = \"warn\" to train on)")
    if collapse:  # a warning: said once mid-run, said again where the run's figures are read
        log.warning("%s (found after epoch %d)", collapse["message"], collapse["epoch"])
    if t.ema > 0 and state.get("best_epoch"):  # a run stopped early ends with its raw weights in the model
        model.load_weights(best_model_path(t.model_dir))
    return model, state, seconds, timing


def finish_network(cfg: Config, model: Any, state: dict, valid_pairs: list, label: str | None = None,
                   pool: Pool | None = None) -> dict:
    """One forward pass of the run's best model over the validation set: its Dice with a 95% interval per
    class (:mod:`flexunet.training.certainty`) and the post-processing chosen on it, recorded in the run
    folder.  ``label``: how the line names the model (the members' mean); ``pool``: the pass also goes
    there (a member's own validation, ``[train] member_folds``).  The intervals, as JSON."""
    from flexunet.preprocessing.pipeline import make_dataset

    t = cfg.train
    valid_ds = make_dataset(cfg, valid_pairs, training=False)
    intervals = {}
    chooser = ComponentChooser(cfg.model.num_classes, cfg.model.image_height, cfg.model.image_width)
    try:  # the run is whole without it
        if t.strategy != "multiworker":
            intervals = {name: {"dice": iv.dice, **iv.as_json()} for name, iv in
                         best_epoch_intervals(cfg, model, valid_ds, valid_pairs, state, chooser, label,
                                              pool).items()}
    except (OSError, ValueError, FlexUNetError) as exc:
        log.warning("the best epoch's validation interval was not computed: %s", exc)
    if chooser.slices == len(valid_pairs) and is_chief():
        choose_postprocessing(cfg, chooser)
    return intervals


def choose_postprocessing(cfg: Config, chooser: ComponentChooser) -> dict:
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


def check_run_precision(cfg: Config, valid_pairs: list) -> dict:
    """Once, at the end: the precision the trained model runs at in inference and evaluation, recorded in
    the run folder (:mod:`flexunet.model.precision`); a float32 run predicts nothing here."""
    from flexunet.preprocessing.pipeline import make_dataset

    trained = cfg.train.mixed_precision or "float32"
    batches = () if trained == "float32" else (x for x, _ in make_dataset(cfg, valid_pairs, training=False))
    return check_precision(cfg, trained, batches)


def record_data(cfg: Config, train_pairs: list, valid_pairs: list, diff=None, epoch: int = 0) -> Future:
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


def class_shares(counts, num_train: int) -> dict[int, tuple[float, float]]:
    """Foreground class -> its share of the training and validation mask pixels, for the classes
    the training masks hold (the collapse guard watches these)."""
    train, valid = counts[:num_train].sum(0), counts[num_train:].sum(0)
    return {c: (float(train[c] / max(1, train.sum())), float(valid[c] / max(1, valid.sum())))
            for c in range(1, len(train)) if train[c] > 0}


def kept(state: dict, model_dir: Path) -> str:
    """What an interrupted or failed run leaves: the epochs its last checkpoint holds."""
    if not state["epoch"]:
        return "no epoch had completed, so no checkpoint was saved"
    return f"epochs 1..{state['epoch']} are saved in {model_dir}"
