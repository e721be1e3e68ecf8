"""Training: pipeline, metrics, callbacks, resume, determinism, refusal."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from flexunet.config import load_config
from flexunet.errors import DataError, FlexUNetError


def _history(cfg):
    return json.loads((cfg.train.eval_dir / "history.json").read_text())


def test_pipeline_yields_paired_one_hot_masks(train_project):
    from flexunet.data import make_dataset, subset_pairs

    cfg = load_config(train_project)
    pairs = subset_pairs(cfg, "train")
    assert [p.name for p, _ in pairs] == [m.name for _, m in pairs] == sorted(p.name for p, _ in pairs)
    ds = make_dataset(cfg, pairs, training=True, epochs=(0, 1))
    seen = 0
    for images, masks in ds:
        images, masks = images.numpy(), masks.numpy()
        assert images.shape[1:] == (32, 32, 3) and masks.shape[1:] == (32, 32, 3)
        np.testing.assert_array_equal(masks.sum(-1), 1.0)  # one-hot
        index = masks.argmax(-1)
        grey = images[..., 0]
        # the fixture paints class 1 at 210 and class 2 at 30: the mask must sit on the right pixels
        assert grey[index == 1].mean() > 190 and grey[index == 2].mean() < 50
        seen += len(images)
    assert seen == len(pairs)


def test_epoch_order_depends_only_on_seed_and_epoch(train_project):
    from flexunet.data import make_dataset, subset_pairs

    cfg = load_config(train_project)
    pairs = subset_pairs(cfg, "train")

    def first_batches(epochs):
        return [b[0].numpy()[:, 5, 5, 0].tolist() for b in make_dataset(cfg, pairs, training=True, epochs=epochs)]

    full = first_batches((0, 3))
    assert first_batches((2, 3)) == full[4:]  # 2 batches per epoch: epoch 2 alone equals its slice
    assert full[:2] != full[2:4]              # reshuffled between epochs


@pytest.mark.parametrize("size", [32, 24])  # 32: stored at the model size (uint8 cache); 24: resampled (float32)
def test_cached_pipeline_yields_the_same_batches_as_streaming(train_project, size):
    from flexunet.data import _cache_variables, decode_image, decode_mask, make_dataset, subset_pairs

    sizes = [f"model.image_width={size}", f"model.image_height={size}"]
    cfg = load_config(train_project, sizes)
    pairs = subset_pairs(cfg, "train")

    def batches(cache: bool):
        c = cfg.replace("train", cache=cache)
        return [(x.numpy(), y.numpy()) for x, y in make_dataset(c, pairs, training=True, epochs=(0, 2))]

    streamed, cached = batches(False), batches(True)
    assert len(streamed) == len(cached) == 4
    for (xs, ys), (xc, yc) in zip(streamed, cached):
        np.testing.assert_array_equal(xs, xc)
        np.testing.assert_array_equal(ys, yc)

    decoded = [(decode_image(str(i), cfg).numpy(), decode_mask(str(m), cfg).numpy()) for i, m in pairs]
    images, masks = _cache_variables(iter(decoded), len(decoded))
    assert images.dtype.name == ("uint8" if size == 32 else "float32") and masks.dtype.name == "uint8"
    np.testing.assert_array_equal(images.numpy(), np.stack([d[0] for d in decoded]))
    np.testing.assert_array_equal(masks.numpy(), np.stack([d[1] for d in decoded]))


def test_pairing_errors_name_the_file(train_project):
    from flexunet.data import subset_pairs

    cfg = load_config(train_project)
    (cfg.train.masks_dir / "1003.png").unlink()
    with pytest.raises(DataError, match=r"1003\.png: no mask with the same name"):
        subset_pairs(cfg, "train")


def test_dice_coef_multiclass_matches_its_formula():
    from flexunet.losses import dice_coef_multiclass

    rng = np.random.default_rng(0)
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, (2, 4, 4))]
    p = rng.dirichlet([1, 1, 1], (2, 4, 4)).astype("float32")
    per_image = [(2 * (y[i] * p[i]).sum() + 1) / (y[i].sum() + p[i].sum() + 1) for i in range(2)]
    assert float(dice_coef_multiclass(y, p)) == pytest.approx(np.mean(per_image), rel=1e-6)
    # background-dominated: predicting all background on a 1%-lesion image still scores ~0.99
    y = np.zeros((1, 10, 10, 3), "float32")
    y[..., 0] = 1
    y[0, 0, 0] = [0, 1, 0]
    pred = np.zeros_like(y)
    pred[..., 0] = 1
    assert float(dice_coef_multiclass(y, pred)) > 0.98


def test_per_class_dice_and_iou_match_hand_counts(train_project):
    from flexunet.losses import make_metrics

    cfg = load_config(train_project)
    metrics = {m.name: m for m in make_metrics(cfg)[1:]}
    true = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])
    pred = np.array([[0, 1, 0, 2], [1, 0, 1, 0]])
    y, p = np.eye(3, dtype="float32")[true][None], np.eye(3, dtype="float32")[pred][None]
    for metric in metrics.values():  # two updates of halves = one update of the whole: epoch accumulation
        metric.update_state(y[:, :1], p[:, :1])
        metric.update_state(y[:, 1:], p[:, 1:])
    # class 1: tp 2, fp 1, fn 1 -> dice 4/6, iou 2/4; class 2: tp 1, fp 0, fn 1 -> dice 2/3, iou 1/2
    assert float(metrics["dice_bright"].result()) == pytest.approx(4 / 6)
    assert float(metrics["iou_bright"].result()) == pytest.approx(0.5)
    assert float(metrics["dice_dark"].result()) == pytest.approx(2 / 3)
    assert float(metrics["iou_dark"].result()) == pytest.approx(0.5)
    assert float(metrics["mean_dice"].result()) == pytest.approx((4 / 6 + 2 / 3) / 2)


def test_reducer_waits_reducer_patience_epochs(train_project):
    from flexunet.callbacks import RunController, current_lr, initial_state
    from flexunet.train import compile_model, configure_runtime

    cfg = load_config(train_project, ["train.learning_rate_reducer=True", "train.reducer_patience=3",
                                      "train.reducer_factor=0.5", "train.patience=0"])
    configure_runtime(cfg)
    model = compile_model(cfg)
    model.optimizer.build(model.trainable_variables)
    ctl = RunController(cfg, initial_state(cfg), cfg.train.model_dir / "best_model.keras")
    ctl.set_model(model)
    lrs = []
    for epoch, val_loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 0.5, 0.6]):
        ctl.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
        lrs.append(current_lr(model))
    # bad epochs 2,3,4 -> reduce after epoch 4; bad 5,6,7 -> reduce after epoch 7; epoch 8 improves
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025, 0.0025])


def test_tiny_model_learns(train_project):
    from flexunet.train import train

    cfg = load_config(train_project, ["train.epochs=30", "train.patience=0", "train.deterministic=False",
                                      "model.learning_rate=0.02", "train.epoch_change_infer=True"])
    summary = train(cfg, progress=False)
    hist = _history(cfg)
    assert hist["val_mean_dice"][-1] > 0.9 or max(hist["val_mean_dice"]) > 0.9
    assert summary["epochs"] == 30
    assert (cfg.train.model_dir / "best_model.keras").is_file()
    losses = (cfg.train.eval_dir / "train_losses.csv").read_text().splitlines()
    assert losses[0] == "epoch, loss, val_loss" and len(losses) == 31
    metrics = (cfg.train.eval_dir / "train_metrics.csv").read_text().splitlines()
    assert metrics[0] == "epoch,dice_coef_multiclass,val_dice_coef_multiclass," and metrics[1].endswith(",")
    assert (cfg.train.eval_dir / "train_losses.png").is_file()
    assert (cfg.train.model_dir / "train_eval_infer.config").is_file()
    assert sorted(p.name for p in cfg.train.epoch_change_infer_dir.glob("Epoch_30_*")) == [
        "Epoch_30_1000.png", "Epoch_30_1001.png", "Epoch_30_1002.png", "Epoch_30_1003.png", "Epoch_30_montage.png"]


def test_stop_and_resume_equals_uninterrupted_and_runs_are_deterministic(train_project, tmp_path):
    from flexunet.train import train

    overrides = ["train.epochs=4", "train.patience=0", "train.learning_rate_reducer=True",
                 "train.reducer_patience=1", "model.dropout_rate=0.1"]
    full = load_config(train_project, overrides + [f"train.model_dir={tmp_path / 'full'}",
                                                   f"train.eval_dir={tmp_path / 'full_eval'}"])
    train(full, progress=False)
    again = load_config(train_project, overrides + [f"train.model_dir={tmp_path / 'again'}",
                                                    f"train.eval_dir={tmp_path / 'again_eval'}"])
    train(again, progress=False)
    assert _history(again) == _history(full)  # two deterministic runs: bit-identical histories

    part = overrides + [f"train.model_dir={tmp_path / 'part'}", f"train.eval_dir={tmp_path / 'part_eval'}"]
    train(load_config(train_project, part[1:] + ["train.epochs=2"]), progress=False)
    resumed = load_config(train_project, part)
    train(resumed, resume=True, progress=False)
    assert _history(resumed) == _history(full)


def test_second_run_into_a_used_model_dir_is_refused(train_project):
    from flexunet.train import train

    cfg = load_config(train_project, ["train.epochs=1"])
    train(cfg, progress=False)
    best = cfg.train.model_dir / "best_model.keras"
    before = (best.stat().st_mtime_ns, best.read_bytes())
    with pytest.raises(FlexUNetError, match="holds a previous run; use --resume .* or --overwrite"):
        train(cfg, progress=False)
    assert (best.stat().st_mtime_ns, best.read_bytes()) == before  # the refused run left the model alone
    train(cfg, overwrite=True, progress=False)
    with pytest.raises(FlexUNetError, match="nothing to resume"):
        train(load_config(train_project, ["train.model_dir=./elsewhere"]), resume=True, progress=False)


def test_mirrored_two_cpu_devices_match_one_device(train_project, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from flexunet.config import load_config
        from flexunet.train import train
        strategy = sys.argv[1]
        cfg = load_config({str(train_project)!r}, ["train.epochs=3", "train.strategy=" + strategy,
                          "train.model_dir=" + {str(tmp_path)!r} + "/m_" + strategy,
                          "train.eval_dir=" + {str(tmp_path)!r} + "/e_" + strategy, "model.loss='categorical_crossentropy'"])
        print(json.dumps(train(cfg, progress=False)["history"]["loss"]))
    """)
    curves = {}
    for strategy in ("default", "mirrored"):
        out = subprocess.run([sys.executable, "-c", script, strategy], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        curves[strategy] = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(curves["mirrored"], curves["default"], rtol=1e-4, atol=1e-5)


def test_missing_tensorboard_is_one_line_before_any_epoch(train_project, monkeypatch, capsys):
    from flexunet.cli import main

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: find_spec -> None
    model_dir = train_project.parent / "tb_models"
    assert main(["train", str(train_project), "--set", f"train.model_dir={model_dir}",
                 "--set", "train.tensorboard=True"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["flexunet train: error: --set [train] tensorboard = True: needs the tensorboard package, which "
                   "is not installed; install it with pip install 'tensorboard>=2.21,<2.22' (the cpu and gpu "
                   "extras include it) or set [train] tensorboard = False"]
    assert not model_dir.exists()  # refused before anything was written


def test_train_overwrite_removes_only_what_a_run_writes(train_project):
    from flexunet.train import RUN_FILES, _prepare_model_dir

    cfg = load_config(train_project)
    models = cfg.train.model_dir
    (models / "last_checkpoint").mkdir(parents=True)
    (models / "best_model.keras").write_bytes(b"old model")
    (models / "my_notes.txt").write_text("keep me")
    (models / "my_folder").mkdir()
    with pytest.raises(FlexUNetError, match="holds a previous run; use --resume .* or --overwrite"):
        _prepare_model_dir(cfg, resume=False, overwrite=False)
    assert (models / "best_model.keras").read_bytes() == b"old model"
    _prepare_model_dir(cfg, resume=False, overwrite=True)
    assert sorted(p.name for p in models.iterdir()) == ["my_folder", "my_notes.txt"]
    assert "my_notes.txt" not in RUN_FILES
