"""The learning-rate schedule and the collapse guard."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest

from flexunet.config.loader import load_config
from flexunet.utils.errors import TrainingStopped


def _model(lr: float = 0.01):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.Adam(lr), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("schedule, expected, decays", [
    # 10 epochs, 2 of warm-up at 1/3 and 2/3 of 0.01, then 8 epochs with progress p = 0, 1/8, ..., 7/8
    ("constant", [0.01 / 3, 0.02 / 3] + [0.01] * 8, False),
    ("poly", [0.01 / 3, 0.02 / 3] + [0.01 * (1 - k / 8) ** 0.9 for k in range(8)], True),
    ("cosine", [0.01 / 3, 0.02 / 3] + [0.01 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)], True),
])
def test_schedule_values(train_project, schedule, expected, decays):
    from flexunet.training.callbacks import scheduled_lr

    cfg = load_config(train_project, ["train.epochs=10", "train.warmup_epochs=2", f"train.lr_schedule={schedule}",
                                      "model.learning_rate=0.01"])
    rates = [scheduled_lr(cfg, e) for e in range(10)]
    assert rates == pytest.approx(expected)
    assert max(rates) == pytest.approx(0.01) and rates.index(max(rates)) == 2   # the full rate right after warm-up
    assert (rates[-1] < 0.01 / 5) is decays   # a decaying schedule is under a fifth of it by the last epoch


def test_schedule_is_set_each_epoch_scaled_by_the_reducer_and_exact_on_resume(train_project):
    from flexunet.training.callbacks import RunController, current_lr, scheduled_lr
    from flexunet.training.checkpoint import initial_state

    cfg = load_config(train_project, ["train.epochs=6", "train.lr_schedule=poly", "train.learning_rate_reducer=True",
                                      "train.reducer_patience=1", "train.reducer_factor=0.5", "train.patience=0",
                                      "train.on_collapse=warn", "model.learning_rate=0.01"])
    model = _model()
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras")
    ctl.set_model(model)
    lrs, states = [], []
    for epoch, val_loss in enumerate([1.0, 1.1, 0.9, 1.0, 1.2, 0.5]):  # bad epochs 2, 4, 5: reduced after each
        states.append(json.loads(json.dumps(ctl.state)))
        ctl.on_epoch_begin(epoch)
        lrs.append(current_lr(model))
        ctl.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
    factors = [1, 1, 0.5, 0.5, 0.25, 0.125]
    assert lrs == pytest.approx([scheduled_lr(cfg, e) * f for e, f in enumerate(factors)])
    resumed = RunController(cfg, states[4], cfg.train.model_dir / "best_model.keras")  # --resume after epoch 4
    other = _model(lr=0.123)  # whatever the optimizer held
    resumed.set_model(other)
    resumed.on_epoch_begin(4)
    assert current_lr(other) == pytest.approx(lrs[4])


def test_constant_schedule_leaves_the_rate_alone(train_project):
    from flexunet.training.callbacks import RunController, current_lr
    from flexunet.training.checkpoint import initial_state

    cfg = load_config(train_project)
    model = _model(lr=0.004)
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras")
    ctl.set_model(model)
    ctl.on_epoch_begin(0)
    assert current_lr(model) == pytest.approx(0.004)


# ----------------------------------------------------------------------------- guard


def _hist(pred_dark, val_pred_dark, loss):
    bright = [0.1] * len(pred_dark)
    return {"loss": loss, "pred_bright": bright, "val_pred_bright": bright, "pred_dark": pred_dark,
            "val_pred_dark": val_pred_dark}


def _classes(dark_valid_share: float = 0.01):
    from flexunet.training.guard import Watched

    # each class holds 1% of the mask pixels: "starved" is a predicted share under 0.05% (5% of it)
    return {"bright": Watched("bright", 0.01, 0.01), "dark": Watched("dark", 0.01, dark_valid_share)}


def test_guard_fires_on_a_flat_run_that_predicts_almost_nothing():
    from flexunet.training.guard import find_collapse

    # dark: predicted on 2% (epoch 1), then on 0.001% of the pixels; the loss stuck at 0.2722
    hist = _hist([0.02, 1e-5, 0.0, 1e-5], [0.01, 0.0, 4e-4, 0.0], [0.5, 0.2722, 0.2722, 0.2722])
    assert find_collapse(hist, _classes(), patience=3) == {
        "class": "dark", "first_epoch": 2, "epoch": 4, "share": 0.01, "pred": 1e-5, "val_pred": 0.0,
        "all": False}  # bright is still predicted
    assert find_collapse(hist, _classes(), patience=4) is None  # epoch 1 still predicted it
    hist["pred_bright"] = hist["val_pred_bright"] = [0.0] * 4
    assert find_collapse(hist, _classes(), patience=3)["all"] is True  # background only


def test_one_class_collapsed_while_another_learns_only_warns(train_project):
    from flexunet.training.callbacks import RunController
    from flexunet.training.checkpoint import initial_state

    cfg = load_config(train_project, ["train.on_collapse=stop", "train.collapse_patience=3"])
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras",
                        {1: (0.01, 0.01), 2: (0.01, 0.01)})
    ctl.set_model(_model())
    hist = _hist([0.02, 1e-5, 0.0, 1e-5], [0.01, 0.0, 4e-4, 0.0], [0.5, 0.2722, 0.2722, 0.2722])
    ctl._guard(hist)
    assert ctl.state["collapse"]["action"] == "warn" and not ctl.model.stop_training
    assert "predicts none of it" in ctl.state["collapse"]["message"]
    hist["pred_bright"] = hist["val_pred_bright"] = [0.0] * 4
    ctl._guard(hist)  # now every class: the run stops
    assert ctl.state["collapse"]["action"] == "stop" and ctl.model.stop_training
    assert "predicts background only" in ctl.state["collapse"]["message"]


@pytest.mark.parametrize("change", ["val_predicts", "loss_falls", "class_absent", "not_in_valid"])
def test_guard_stays_quiet(change):
    from flexunet.training.guard import find_collapse

    val = [0.0, 0.0, 0.001, 0.0] if change == "val_predicts" else [0.0] * 4
    loss = [0.9, 0.85, 0.82, 0.8] if change == "loss_falls" else [0.3] * 4  # a rare class that starts late
    classes = _classes()
    if change == "class_absent":
        del classes["dark"]
    hist = _hist([0.0] * 4, val, loss)
    if change == "not_in_valid":  # validation masks lack it: training alone decides, and it is predicted
        classes, hist["pred_dark"] = _classes(dark_valid_share=0.0), [0.0, 0.0, 0.0, 0.001]
    assert find_collapse(hist, classes, patience=2) is None


def test_without_shares_only_a_class_predicted_nowhere_counts():
    from flexunet.training.guard import Watched, find_collapse

    unknown = {"dark": Watched("dark")}
    assert find_collapse(_hist([1e-6] * 3, [0.0] * 3, [0.3] * 3), unknown, patience=2) is None
    assert find_collapse(_hist([0.0] * 3, [0.0] * 3, [0.3] * 3), unknown, patience=2)["first_epoch"] == 1


def _dead_model(build):
    """build_model, with a head that predicts background everywhere by a logit gap of 40."""
    def dead(*args, **kwargs):
        model = build(*args, **kwargs)
        head = model.get_layer("head")
        head.kernel.assign(np.zeros(head.kernel.shape, np.float32))
        head.bias.assign(np.array([40.0, 0.0, 0.0], np.float32))
        return model
    return dead


def test_guard_stops_a_dead_run_and_keeps_its_files(train_project, monkeypatch):
    import flexunet.model.network
    from flexunet.training.train import train

    monkeypatch.setattr(flexunet.model.network, "build_model", _dead_model(flexunet.model.network.build_model))
    cfg = load_config(train_project, ["train.epochs=6", "train.patience=0", "model.learning_rate=1e-9",
                                      "train.collapse_patience=2", "train.on_collapse=stop"])
    with pytest.raises(TrainingStopped, match=r"collapse: class 'bright' .* in epochs 1-2 .*normalization = True"
                                              r'.*output_bias = "prior".*--overwrite'):
        train(cfg, progress=False)
    hist = json.loads((cfg.train.eval_dir / "history.json").read_text())
    assert hist["epochs"] == [1, 2]  # stopped after 2 of 6 epochs
    assert hist["pred_bright"] == hist["val_pred_bright"] == [0.0, 0.0]
    assert hist["collapse"]["class"] == "bright" and hist["collapse"]["action"] == "stop"
    assert (cfg.train.model_dir / "last_checkpoint" / "state.json").is_file()
    summary = train(cfg, resume=True, progress=False)  # resuming it trains on, without stopping again
    assert summary["epochs"] == 6 and summary["collapse"]["first_epoch"] == 1


def test_guard_only_warns_with_on_collapse_warn(train_project, monkeypatch, caplog):
    import flexunet.model.network
    from flexunet.training.train import train

    monkeypatch.setattr(flexunet.model.network, "build_model", _dead_model(flexunet.model.network.build_model))
    cfg = load_config(train_project, ["train.epochs=4", "train.patience=0", "model.learning_rate=1e-9",
                                      "train.collapse_patience=2", "train.on_collapse=warn"])
    summary = train(cfg, progress=False)
    assert summary["epochs"] == 4 and summary["collapse"]["class"] == "bright"
    lines = [r.getMessage() for r in caplog.records if "collapse:" in r.getMessage()]
    assert len(lines) == 2  # once when found (not again at epochs 3 and 4), once more at the end
    assert lines[1].endswith("(found after epoch 2)") and "background only" in lines[1]


def test_guard_quiet_on_a_healthy_tiny_run(train_project):
    from flexunet.training.train import train

    cfg = load_config(train_project, ["train.epochs=3", "train.collapse_patience=1", "train.on_collapse=stop"])
    summary = train(cfg, progress=False)
    hist = json.loads((cfg.train.eval_dir / "history.json").read_text())
    assert summary["epochs"] == 3 and summary["collapse"] is None and "collapse" not in hist
    assert hist["pred_bright"][-1] > 0 and hist["pred_dark"][-1] > 0
