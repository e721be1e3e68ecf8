"""flexunet.training.distribute: mirrored over two logical CPUs equals one device; two local workers over
loopback train one model and agree; a malformed TF_CONFIG is one line before any work.

Each worker is a separate Python process with its own TF_CONFIG (two free ports on
127.0.0.1), running ``flexunet.training.train.train`` with ``[train] strategy = "multiworker"`` on
the same config and the same model_dir, as two machines sharing a filesystem would.
Gradients are all-reduced, so after training both hold the same weights, and since
``batch_size`` is the global batch the run equals one device's; only the chief (worker 0)
writes the run's files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import TINY_RUN_CONFIG, one_error
from flexunet.config.loader import load_config

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import flexunet.model.network as M
    import flexunet.training.train as T

    config, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    models = []
    build = M.compile_model
    M.compile_model = lambda cfg: models.append(build(cfg)) or models[-1]   # keep the model to compare
    from flexunet.config.loader import load_config
    cfg = load_config(config, overrides + ["train.strategy='multiworker'"])
    summary = T.train(cfg, progress=False)
    np.savez(out, *[np.asarray(w) for w in models[0].get_weights()])
    print("RESULT " + json.dumps({"loss": summary["history"]["loss"], "val_loss": summary["history"]["val_loss"]}))
""")

# no XLA: what is compared is the all-reduce, not the compiler (and each worker would time "auto" first)
OVERRIDES = ["train.epochs=2", "train.patience=0", "train.deterministic=False", "train.jit_compile=False",
             "model.loss='categorical_crossentropy'"]
TIMEOUT_S = 420  # both workers, sharing 2 CI cores (~30 s when idle); a hang (a lost peer) must still end


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _outputs(procs: list[subprocess.Popen], timeout_s: float, what: str) -> list[tuple[str, str]]:
    """(stdout, stderr) of processes started side by side, all within ``timeout_s``; any still running
    then is killed and the test fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    try:
        return [proc.communicate(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not finish within {timeout_s} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_two_workers_over_loopback_agree_with_each_other_and_with_one_device(train_project, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(task), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow",
                   CUDA_VISIBLE_DEVICES="")
        args = [sys.executable, "-c", WORKER, str(train_project), str(tmp_path / f"w{index}.npz"),
                json.dumps(OVERRIDES)]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = _outputs(procs, TIMEOUT_S, "the two workers (a worker waiting for a lost peer?)")
    for index, (proc, (out, err)) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"worker {index} exited {proc.returncode}:\n{err[-3000:]}"
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
               for out, _ in outputs]

    # the same run on both workers: all-reduced losses and identical weights
    assert len(results[0]["loss"]) == 2
    np.testing.assert_allclose(results[1]["loss"], results[0]["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1]["val_loss"], results[0]["val_loss"], rtol=1e-5, atol=1e-6)
    with np.load(tmp_path / "w0.npz") as w0, np.load(tmp_path / "w1.npz") as w1:
        assert w0.files == w1.files and len(w0.files) > 0
        for key in w0.files:
            np.testing.assert_allclose(w1[key], w0[key], rtol=1e-5, atol=1e-6)
    assert np.isfinite(results[0]["loss"]).all()

    # [train] batch_size is the global batch: two workers of 2 images each train as one device of 4
    from flexunet.training.train import train

    single = train(load_config(train_project, OVERRIDES + [f"train.model_dir={tmp_path / 'single'}",
                                                           f"train.eval_dir={tmp_path / 'single_eval'}"]),
                   progress=False)
    np.testing.assert_allclose(results[0]["loss"], single["history"]["loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[0]["val_loss"], single["history"]["val_loss"], rtol=1e-4, atol=1e-6)

    # only the chief wrote the run: one checkpoint, one CSV with two epochs, no worker leftovers
    cfg = load_config(train_project)
    assert (cfg.train.model_dir / "best_model.keras").is_file()
    state = json.loads((cfg.train.model_dir / "last_checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    np.testing.assert_allclose(state["history"]["loss"], results[0]["loss"], rtol=1e-6)
    assert len((cfg.train.eval_dir / "train_losses.csv").read_text().splitlines()) == 3
    hidden = sorted(p.name for p in cfg.train.model_dir.iterdir() if p.name.startswith("."))
    assert hidden == [".flexunet-owner.json"]                           # train's record, no worker leftovers


def test_mirrored_two_cpu_devices_match_one_device(train_project, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from flexunet.config.loader import load_config
        from flexunet.training.train import train
        strategy = sys.argv[1]
        cfg = load_config({str(train_project)!r}, ["train.epochs=3", "train.strategy=" + strategy,
                          "train.model_dir=" + {str(tmp_path)!r} + "/m_" + strategy,
                          "train.eval_dir=" + {str(tmp_path)!r} + "/e_" + strategy, "model.loss='categorical_crossentropy'"])
        print(json.dumps(train(cfg, progress=False)["history"]["loss"]))
    """)
    strategies = ("default", "mirrored")
    procs = [subprocess.Popen([sys.executable, "-c", script, strategy], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for strategy in strategies]                  # both at once: most of each is TensorFlow's start-up
    curves = {}
    for strategy, proc, (out, err) in zip(strategies, procs, _outputs(procs, 300, "the two strategies' runs")):
        assert proc.returncode == 0, err[-2000:]
        curves[strategy] = json.loads(out.strip().splitlines()[-1])
    np.testing.assert_allclose(curves["mirrored"], curves["default"], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- TF_CONFIG, read before any work


@pytest.mark.parametrize("value,why", [
    ('{"cluster": ', "not valid JSON"),
    ("[1]", "an array, not an object"),
    ('{"cluster": {"worker": "host:1"}}', '"cluster" is not an object of task type -> list'),
    ('{"task": {"type": "worker", "index": "0"}}', '"task" "index" is not an integer >= 0'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "names no address"),
])
def test_a_malformed_tf_config_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, value, why):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(TINY_RUN_CONFIG)
    monkeypatch.setenv("TF_CONFIG", value)
    line = one_error(capsys, "train", str(config), "--set", "train.strategy='multiworker'")
    assert line.startswith('flexunet train: error: TF_CONFIG environment variable (read for [train] strategy = '
                           '"multiworker"): '), line
    assert why in line and line.endswith('"task": {"type": "worker", "index": 0}}'), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_a_well_formed_tf_config_still_names_the_chief(monkeypatch):
    from flexunet.training.distribute import is_chief, tf_config

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config() == {} and is_chief()
    cluster = {"worker": ["a:1", "b:1"]}
    for index, chief in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert is_chief() is chief
