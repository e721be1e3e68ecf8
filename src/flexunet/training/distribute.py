"""Training on several devices or machines: the ``[train] strategy``, and, with ``"multiworker"``,
``TF_CONFIG`` checked and read (which worker is the chief, the one that writes the run's files).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from flexunet.config.loader import Config
from flexunet.dataset.leak_record import RECORD_FILE
from flexunet.utils.errors import FlexUNetError


def make_strategy(name: str):
    """tf.distribute strategy: default (one device), mirrored (all local GPUs, else all logical CPUs), multiworker."""
    import tensorflow as tf

    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return _multi_worker_strategy()
    return tf.distribute.get_strategy()


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy (cluster from TF_CONFIG) with the ``reduce`` Keras 3's ``fit`` expects.

    Keras 3 reduces a whole (x, y) batch in one call, which the plain strategy refuses
    ("Attempt to convert a value (PerReplica...)", keras-team/keras#20585), and reduces
    scalar logs "along axis 0", which has no axis 0: reduce a nest value by value, and a
    scalar across workers only.
    """
    import tensorflow as tf

    class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(v):
                if v is None:
                    return v
                scalar = self.experimental_local_results(v)[0].shape.rank == 0
                return parent.reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerStrategy()


TF_CONFIG_EXPECTED = ('a JSON object such as {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                      '"task": {"type": "worker", "index": 0}}')


def tf_config() -> dict:
    """The ``TF_CONFIG`` environment variable, checked: ``{}`` when unset or empty, else a dict whose
    "cluster" maps task types to lists of "host:port" strings and whose "task" has a "type" string and
    an integer "index"; a FlexUNetError naming TF_CONFIG and what was expected when it is not."""
    text = os.environ.get("TF_CONFIG") or ""
    if not text.strip():
        return {}

    def bad(why: str) -> FlexUNetError:
        return FlexUNetError(f"TF_CONFIG environment variable (read for [train] strategy = \"multiworker\"): "
                             f"{why}; expected {TF_CONFIG_EXPECTED}")

    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise bad(f"not valid JSON ({getattr(exc, 'msg', exc)} at character {getattr(exc, 'pos', '?')})") from None
    if not isinstance(spec, dict):
        shown = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(spec), "a number")
        raise bad(f"{shown}, not an object")
    cluster = spec.get("cluster", {})
    if not isinstance(cluster, dict) or not all(
            isinstance(hosts, list) and all(isinstance(h, str) for h in hosts) for hosts in cluster.values()):
        raise bad('"cluster" is not an object of task type -> list of "host:port" strings')
    task = spec.get("task", {})
    if not isinstance(task, dict):
        raise bad('"task" is not an object')
    if "type" in task and not isinstance(task["type"], str):
        raise bad('"task" "type" is not a string')
    index = task.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise bad('"task" "index" is not an integer >= 0')
    kind = task.get("type")
    if cluster and kind is not None and index >= len(cluster.get(kind, [])):
        raise bad(f'"task" {{"type": "{kind}", "index": {index}}} names no address of "cluster" '
                  f'({len(cluster.get(kind, []))} "{kind}" address(es))')
    return spec


def is_chief() -> bool:
    """Whether this process writes the run's files: TF_CONFIG's "chief", else worker 0, else (no TF_CONFIG) yes."""
    spec = tf_config()
    task = spec.get("task") or {}
    kind = task.get("type")
    if kind is None or kind == "chief":
        return True
    return kind == "worker" and int(task.get("index", 0)) == 0 and not spec.get("cluster", {}).get("chief")


def worker_config(cfg: Config, scratch: Path, resume: bool) -> Config:
    """A non-chief worker's config: the same run, its files in ``scratch`` (the chief writes the real ones)."""
    t = cfg.train
    if resume:  # continue from the chief's checkpoint, which this worker must see
        source = t.model_dir / "last_checkpoint"
        if not (source / "state.json").is_file():
            raise FlexUNetError(f"{t.model_dir}: no last_checkpoint/ visible to this worker; --resume with "
                                f"several workers needs [train] model_dir on a filesystem they all share")
        shutil.copytree(source, scratch / "models" / "last_checkpoint")

        if (t.model_dir / RECORD_FILE).is_file():  # the data check compares with the chief's record
            shutil.copy(t.model_dir / RECORD_FILE, scratch / "models" / RECORD_FILE)
    return cfg.replace("train", model_dir=scratch / "models", eval_dir=scratch / "eval",
                       epoch_change_infer_dir=scratch / "epoch_change_infer")
