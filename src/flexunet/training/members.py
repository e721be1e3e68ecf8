"""``[model] members = K``: K networks trained apart, run as one model.

1. member k (1..K) is a run of its own in ``model_dir/members/k/`` (:func:`member_config`): the run's
   config with ``seed + k - 1`` and ``members = 1``, its curves beside its checkpoint, epoch-change
   inference for member 1 only; it trains as a single run does (its best model, ``average_best``,
   the guards, its resumable checkpoint, its validation interval and post-processing), and is a run
   folder ``evaluate`` can load on its own;
2. ``--resume`` goes on with the member that was interrupted and skips those that ended
   (:func:`member_resumes`);
3. the run's best model is the K-member network (:func:`flexunet.model.network.combine_members`):
   the mean of the members' softmax outputs, so ``evaluate``, ``infer``, ``export`` and the report load
   one model built from the run's own config; ``model_meta.json`` lists the members (:func:`combined_state`).

Averaging three runs of the shipped config raised every cell of three synthetic families
(docs/generalisation.md, fourteenth round); members trained together on the same batches did not.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from flexunet.config.loader import Config, dump_config
from flexunet.model.inspection import describe_members
from flexunet.model.precision import precision_policy
from flexunet.model.run_folder import CHECKPOINT, best_model_name, best_model_path, member_dir, read_meta
from flexunet.model.trained import load_trained
from flexunet.training.checkpoint import read_state, recover_checkpoint, save_best
from flexunet.model.postprocess import ComponentChooser
from flexunet.training.certainty import Pool, pooled_intervals
from flexunet.training.distribute import is_chief
from flexunet.training.fit import (RunData, check_run_precision, choose_postprocessing, finish_network, fit_network,
                                   record_data)
from flexunet.training.folds import FOLD_RECORD, Fold, draw_folds, fold_data
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import remove_path, write_json, write_text

log = logging.getLogger(__name__)

def member_config(cfg: Config, k: int) -> Config:
    """Member ``k``'s config: its own seed and folder, one network, epoch-change montages from member 1 only."""
    folder = member_dir(cfg.train.model_dir, k)
    train = dataclasses.replace(cfg.train, seed=cfg.train.seed + k - 1, model_dir=folder, eval_dir=folder,
                                epoch_change_infer=cfg.train.epoch_change_infer and k == 1)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, members=1), train=train)


def label(cfg: Config) -> str | None:
    """How the run's log names its model: None for one network (its best epoch names it)."""
    return f"the mean of {cfg.model.members} members" if cfg.model.members > 1 else None


def member_resumes(cfg: Config, resume: bool) -> list[bool]:
    """Per member: whether it resumes from its checkpoint.  A member without a whole checkpoint starts
    again (what an interrupted first epoch left goes); without ``resume`` every member starts."""
    out = []
    for k in range(1, cfg.model.members + 1):
        folder = member_dir(cfg.train.model_dir, k)
        if resume and folder.is_dir():
            recover_checkpoint(folder)  # a crash inside the checkpoint's swap left it aside
        whole = resume and (folder / CHECKPOINT / "state.json").is_file()
        if resume and not whole and folder.exists():
            remove_path(folder)
        out.append(whole)
    return out


def fit_members(cfg: Config, resume: bool, data: RunData):
    """Each member trained as a run of its own, then the run's best model their mean: returns (that model,
    the combined state, seconds of fitting, the last member's timing: None when a resumed run had ended)."""
    from flexunet.model.network import summary_text

    t = cfg.train
    resumes = member_resumes(cfg, resume)
    write_text(t.model_dir / "train_eval_infer.config", dump_config(cfg))
    first = next((int(read_state(member_dir(t.model_dir, k) / CHECKPOINT / "state.json")["epoch"])
                  for k, again in enumerate(resumes, start=1) if again), 0)
    folds = {f.k: f for f in draw_folds(cfg, data.train_pairs, data.valid_pairs, data.counts)} if t.member_folds else {}
    pool = Pool(ComponentChooser(cfg.model.num_classes, cfg.model.image_height, cfg.model.image_width)) \
        if folds else None
    recording = record_data(cfg, data.train_pairs, data.valid_pairs, data.data_diff, first)
    states, seconds, timing, trained = [], 0.0, None, False
    try:
        for k, again in enumerate(resumes, start=1):
            log.info("member %d of %d (seed %d) in %s%s", k, cfg.model.members, t.seed + k - 1,
                     member_dir(t.model_dir, k), _fold_text(folds.get(k), data) if folds else "")
            member = member_config(cfg, k)
            own = fold_data(data, folds[k]) if k in folds else data
            model, state, took, done = fit_network(member, again, own, record=False)
            if k in folds:
                write_json(member_dir(t.model_dir, k) / FOLD_RECORD, folds[k].record(data.train_pairs + data.valid_pairs))
            if done is None:  # it had ended: the epochs its best model averages are in its metadata
                state["averaged_epochs"] = (read_meta(member_dir(t.model_dir, k)) or {}).get("averaged_epochs")
                if pool is not None:  # its own validation pass goes into the pooled one
                    with precision_policy("float32"):
                        finish_network(member, load_trained(member, "float32"), state, own.valid_pairs, pool=pool)
            else:  # its own interval and post-processing: a member's folder is a run as a single one
                finish_network(member, model, state, own.valid_pairs, pool=pool)
            state["fold"] = {"unit": folds[k].unit, "groups": list(folds[k].groups)} if k in folds else None
            states.append(state)
            seconds += took
            timing, trained = done if done is not None else timing, trained or done is not None
    finally:
        recording.result()
    state = combined_state(states, cfg)
    if not trained and _whole(t.model_dir):
        return None, state, 0.0, None
    model = combine(cfg)
    save_best(model, t.model_dir / best_model_name(cfg), cfg, state)
    write_text(t.model_dir / "summary.txt", summary_text(model, cfg.model))
    log.info("the best model is the mean of the %d members' softmax outputs: %s", cfg.model.members,
             describe_members(state["members"], t.monitor))
    check_run_precision(cfg, data.valid_pairs)
    if pool is not None:
        state["pooled_intervals"] = finish_pooled(cfg, pool)
    return model, state, seconds, timing or {}


def pooled(cfg: Config) -> bool:
    """Whether the run's validation figures are the members' own passes pooled (``[train] member_folds``)."""
    return cfg.model.members > 1 and cfg.train.member_folds


def _fold_text(fold: Fold | None, data: RunData) -> str:
    if fold is None:
        return f": validates on [valid] ({len(data.valid_pairs)} slices)"
    return (f": validates on a fold of {len(fold.groups)} training {fold.unit} ({len(fold.valid)} slices), "
            f"trains on the other {len(fold.train)} slices ([valid] among them)")


def finish_pooled(cfg: Config, pool: Pool) -> dict:
    """``[train] member_folds``: the run's validation interval and post-processing from every member's pass
    over its own validation slices (out of fold; [valid] trained members 2..K, so the mean is not run on
    it).  The intervals, as JSON."""
    label = (f"each member on its own validation ({len(pool.pairs)} slices, out of fold: each predicted by a "
             f"member that did not train on it)")
    try:
        intervals = {name: {"dice": iv.dice, **iv.as_json()} for name, iv in pooled_intervals(cfg, pool, label).items()}
    except (OSError, ValueError, FlexUNetError) as exc:
        log.warning("the members' pooled validation interval was not computed: %s", exc)
        intervals = {}
    if pool.chooser.slices and pool.chooser.slices == len(pool.pairs) and is_chief():
        choose_postprocessing(cfg, pool.chooser)
    return intervals


def _whole(model_dir: Path) -> bool:
    """Whether the run folder holds the members' mean already (a resumed run that had ended)."""
    try:
        return best_model_path(model_dir).is_file()
    except FlexUNetError:
        return False


def combine(cfg: Config):
    """The K-member network (float32, not compiled) holding each member's best model."""
    from flexunet.model.network import combine_members

    with precision_policy("float32"):
        nets = [load_trained(member_config(cfg, k), "float32") for k in range(1, cfg.model.members + 1)]
        return combine_members(cfg.model, nets)


def combined_state(states: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    """The run state the combined model's metadata records: each member's seed, epochs, best epoch and
    value, averaged epochs; ``speed`` as the members trained."""
    members = [{"seed": cfg.train.seed + k, "epoch": s.get("epoch"), "best_epoch": s.get("best_epoch"),
                "best": s.get("best"), "averaged_epochs": s.get("averaged_epochs"),
                "stopped_by": s.get("stopped_by"), "fold": s.get("fold")} for k, s in enumerate(states)]
    return {"epoch": sum(int(s.get("epoch") or 0) for s in states), "best_epoch": None, "best": None,
            "history": {}, "stopped_by": None, "members": members,
            "speed": states[-1].get("speed") if states else None}
