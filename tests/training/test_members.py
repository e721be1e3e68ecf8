"""flexunet.training.members: [model] members = K networks trained apart, run as their mean."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from conftest import cli, interrupt_member, make_train_project, train_config_text
from flexunet.config.loader import load_config
from flexunet.model.run_folder import read_meta
from flexunet.model.trained import load_trained
from flexunet.training import members

MEMBERS_CONFIG = train_config_text(model={"members": 2}, train={"average_best": 2})


def _images(cfg) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 255, (3, cfg.model.image_height, cfg.model.image_width,
                                                       cfg.model.image_channels)).astype("float32")


def test_each_member_is_a_run_of_its_own_seed_and_the_model_is_their_mean(tmp_path, capsys):
    path = make_train_project(tmp_path / "p", MEMBERS_CONFIG)
    rc, _, err = cli(capsys, "train", str(path))
    assert rc == 0, err
    cfg = load_config(path)
    folders = [cfg.train.model_dir / "members" / str(k) for k in (1, 2)]
    runs = [load_config(folder / "train_eval_infer.config") for folder in folders]
    assert [(r.train.seed, r.model.members, r.train.model_dir) for r in runs] == [(7, 1, folders[0]), (8, 1, folders[1])]
    assert all(len(json.loads((f / "history.json").read_text())["epochs"]) == 3 for f in folders)
    meta = read_meta(cfg.train.model_dir)
    assert [(m["seed"], m["epoch"], len(m["averaged_epochs"])) for m in meta["members"]] == [(7, 3, 2), (8, 3, 2)]
    assert meta["config"]["model.members"] == 2
    model = load_trained(cfg)                                     # as evaluate, infer, export and report load it
    x = _images(cfg)
    mean = np.mean([load_trained(run).predict_on_batch(x) for run in runs], axis=0)
    np.testing.assert_allclose(model.predict_on_batch(x), mean, atol=1e-6)
    assert (cfg.train.model_dir / "postprocess.json").is_file() and (cfg.train.model_dir / "data_record.json").is_file()
    assert not (cfg.train.eval_dir / "history.json").exists()     # the curves are each member's
    rc, _, err = cli(capsys, "evaluate", str(path))
    assert rc == 0, err

    # member 2 is the run the config makes with seed 8: one seed makes every member repeatable
    single = make_train_project(tmp_path / "s", train_config_text(train={"average_best": 2, "seed": 8}))
    rc, _, err = cli(capsys, "train", str(single))
    assert rc == 0, err
    alone, second = load_trained(load_config(single)).get_weights(), load_trained(runs[1]).get_weights()
    assert len(alone) == len(second) and all(np.array_equal(a, b) for a, b in zip(alone, second))
    chosen = [json.loads((d / "postprocess.json").read_text()) for d in (load_config(single).train.model_dir,
                                                                          folders[1])]
    assert chosen[0] == chosen[1]                                  # its post-processing chosen as the run's


def test_resume_goes_on_with_the_interrupted_member_and_overwrite_takes_every_member(tmp_path, capsys,
                                                                                      monkeypatch):
    path = make_train_project(tmp_path / "p", MEMBERS_CONFIG)
    real = interrupt_member(monkeypatch, 8)                         # member 2
    rc, _, err = cli(capsys, "train", str(path))
    assert rc != 0 and "interrupted" in err
    cfg = load_config(path)
    assert not (cfg.train.model_dir / "best_model.keras").exists()
    (cfg.train.model_dir / "members" / "2").mkdir(parents=True)   # what an interrupted first epoch leaves
    monkeypatch.setattr(members, "fit_network", real)
    rc, _, err = cli(capsys, "train", str(path), "--resume", "--set", "train.epochs=4")
    assert rc == 0, err
    meta = read_meta(cfg.train.model_dir)   # member 1 went on from epoch 3 to 4, member 2 started anew
    assert [(m["seed"], m["epoch"]) for m in meta["members"]] == [(7, 4), (8, 4)]
    history = json.loads((cfg.train.model_dir / "members" / "1" / "history.json").read_text())
    assert history["epochs"] == [1, 2, 3, 4]
    best = cfg.train.model_dir / "best_model.keras"
    stamp = best.stat().st_mtime_ns
    rc, _, err = cli(capsys, "train", str(path), "--resume", "--set", "train.epochs=4")
    assert rc == 0 and best.stat().st_mtime_ns == stamp              # both had ended: nothing is written again

    (cfg.train.model_dir / "notes.txt").write_text("mine")          # a user's file beside the run
    path.write_text(path.read_text().replace("members = 2", "members = 1"))
    rc, _, err = cli(capsys, "train", str(path), "--overwrite")
    assert rc == 0, err
    assert not (cfg.train.model_dir / "members").exists()
    assert (cfg.train.model_dir / "notes.txt").read_text() == "mine"
    assert read_meta(cfg.train.model_dir)["members"] is None


def test_member_config_keeps_the_run_but_its_seed_folder_and_montages(tmp_path) -> None:
    cfg = load_config(make_train_project(tmp_path, MEMBERS_CONFIG))
    second = members.member_config(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, epoch_change_infer=True)), 2)
    assert second.train.seed == cfg.train.seed + 1 and second.model.members == 1
    assert second.train.model_dir == second.train.eval_dir == cfg.train.model_dir / "members" / "2"
    assert not second.train.epoch_change_infer and second.train.epochs == cfg.train.epochs
