"""Shared test helpers: the test colours, small configs, tiny datasets, DICOM slices, the CLI, trained projects.

The tests mirror the package: ``tests/<subpackage>/test_<module>.py`` holds the tests of
``src/flexunet/<subpackage>/<module>.py`` (``test_<module>_<aspect>.py`` where one module's tests are
many; ``tests/cli/`` also holds what only the whole command line shows).  There is no ``__init__.py``:
pytest's default import mode puts this folder on ``sys.path``, so every test file can
``from conftest import ...``, and test file names are unique across the folders.

What many files need lives here, once: the three test colours (:data:`RGB_MAP`), config text
(:func:`config_text`, :func:`make_cfg`), the conftest dataset (:func:`make_tiny_dataset`), DICOM slices
(:func:`write_dicom`), in-process CLI runs (:func:`cli`, :func:`one_error`), and the projects that cost a
training run, each made once per session (:func:`pipeline`, :func:`synth_run`, :func:`tiny_run`); the tests
that change a project get a private copy (:func:`synth_project`, :func:`tiny_project`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# jit_compile = "auto" caches its measurement: one fresh cache per test session, never the user's
os.environ.setdefault("FLEXUNET_CACHE_DIR", tempfile.mkdtemp(prefix="flexunet-test-cache-"))

# The command handlers bind the stage functions by name when first imported (on the first command). Loaded
# here, before any test runs, they bind the real ones: a test that stubs a stage function (monkeypatch) and
# happens to run the first command of the session would otherwise leave its stubs in them for every later test.
import flexunet.cli.commands  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
STROKE_CONFIG = ROOT / "configs" / "stroke-ct" / "train_eval_infer.config"

# --------------------------------------------------------------------------- the test colours and config text

RGB_MAP = {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}   # background black, class 1 green, class 2 blue
GREEN, BLUE = (0, 255, 0), (0, 0, 255)
CLASS_NAMES = ["background", "bright", "dark"]             # the conftest dataset's classes (make_tiny_dataset)

# the small network most tests build: 32x32, 4 filters, 2 levels
SMALL_MODEL = {"image_width": 32, "image_height": 32, "num_classes": 3, "base_filters": 4, "num_layers": 2,
               "dropout_rate": 0.0}


def ini_value(value: Any) -> str:
    """A value as the config dialect writes it: strings and paths double-quoted, tuples and dicts compact
    (``(3,3)``, ``{(0,0,0):0, (0,255,0):1}``), the rest as Python writes it."""
    if isinstance(value, (str, Path)):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "(" + ",".join(ini_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(ini_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ini_value(k)}:{ini_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


RGB_MAP_TEXT = ini_value(RGB_MAP)   # {(0,0,0):0, (0,255,0):1, (0,0,255):2}


def config_text(*extra: str, **sections: Mapping[str, Any]) -> str:
    """Config text: ``[model]`` (:data:`SMALL_MODEL` with the keys of ``model=`` replacing or added), the other
    sections in the order given, ``[mask]`` with ``rgb_map`` = :data:`RGB_MAP` (and the keys of ``mask=``),
    then each of ``extra`` as written (INI text: a section of many options)."""
    model = {**SMALL_MODEL, **sections.pop("model", {})}
    mask = {"rgb_map": RGB_MAP, **sections.pop("mask", {})}
    blocks = []
    for name, keys in [("model", model), *sections.items(), ("mask", mask)]:
        blocks.append("\n".join([f"[{name}]", *(f"{k} = {ini_value(v)}" for k, v in keys.items())]) + "\n")
    return "\n".join(blocks + [e if e.endswith("\n") else e + "\n" for e in extra])


def make_cfg(base_dir: Path | None = None, *overrides: str, extra: str | tuple[str, ...] = (),
             **sections: Mapping[str, Any]):
    """:func:`config_text` parsed with paths relative to ``base_dir`` and ``--set`` style ``overrides``."""
    from flexunet.config.loader import parse_config

    extra = (extra,) if isinstance(extra, str) else extra
    return parse_config(config_text(*extra, **sections), base_dir=base_dir, overrides=overrides)


# 64x64, 3 levels: the network test_network.py counts by hand
TINY_CONFIG = config_text(
    model={"image_width": 64, "image_height": 64, "image_channels": 3, "num_layers": 3, "base_kernels": (3, 3),
           "learning_rate": 0.01},
    train={"epochs": 2, "batch_size": 2})

# the conftest dataset's project (train_project): data/{train,valid,test}, 3 epochs, deterministic
TRAIN_SECTIONS: dict[str, dict[str, Any]] = {
    "model": {"base_kernels": (3, 3), "learning_rate": 0.01, "clipvalue": None, "loss": "ce_dice"},
    "dataset": {"class_names": CLASS_NAMES},
    "train": {"epochs": 3, "batch_size": 4, "model_dir": "./models", "eval_dir": "./eval",
              "images_dir": "./data/train/images", "masks_dir": "./data/train/masks", "tensorboard": False,
              "deterministic": True, "seed": 7},
    "valid": {"images_dir": "./data/valid/images", "masks_dir": "./data/valid/masks"},
    "test": {"images_dir": "./data/test/images", "masks_dir": "./data/test/masks"},
    "infer": {"images_dir": "./data/test/images", "output_dir": "./out"},
}
TRAIN_CONFIG = config_text(**TRAIN_SECTIONS)


def train_config_text(**changes: Mapping[str, Any]) -> str:
    """:data:`TRAIN_CONFIG` with the keys of each section in ``changes`` replaced or added."""
    sections = {name: dict(keys) for name, keys in TRAIN_SECTIONS.items()}
    for name, keys in changes.items():
        sections[name] = {**sections.get(name, {}), **keys}
    return config_text(**sections)


def line_of(text: str, start: str) -> int:
    """The 1-based number of the first line of ``text`` that starts with ``start``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.fixture
def stroke_config_path() -> Path:
    return STROKE_CONFIG


@pytest.fixture
def tiny_config_text() -> str:
    return TINY_CONFIG


@pytest.fixture
def write_config(tmp_path):
    """write_config(text, name=...) -> Path of a config file in tmp_path."""

    def write(text: str, name: str = "train_eval_infer.config") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --------------------------------------------------------------------------- data


def make_tiny_dataset(root: Path, n: int = 8, size: int = 32, seed: int = 0) -> None:
    """root/{images,masks}: grey noise with bright squares (class 1) and dark discs (class 2)."""
    import numpy as np
    from PIL import Image

    from flexunet.dataset.masks import index_to_rgb

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        index = np.zeros((size, size), np.uint8)
        s = size // 4
        y0, x0 = rng.integers(0, size - s, 2)
        index[y0:y0 + s, x0:x0 + s] = 1
        cy, cx = rng.integers(s // 2, size - s // 2, 2)
        index[(yy - cy) ** 2 + (xx - cx) ** 2 <= (s // 2) ** 2] = 2
        grey = rng.normal(120, 10, (size, size))
        grey[index == 1] = 210
        grey[index == 2] = 30
        image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, -1)
        Image.fromarray(image).save(root / "images" / f"{1000 + i}.png")
        Image.fromarray(index_to_rgb(index, RGB_MAP)).save(root / "masks" / f"{1000 + i}.png")


def coded_pair(size: int = 64):
    """(H, W, 3) uint8 image = mask * 80 in every channel, and its (H, W) mask of a class-1 and a class-2 block:
    after any geometric transform the image must still read as its mask."""
    import numpy as np

    mask = np.zeros((size, size), np.uint8)
    s = size / 64
    mask[int(10 * s):int(34 * s), int(8 * s):int(30 * s)] = 1
    mask[int(36 * s):int(56 * s), int(34 * s):int(58 * s)] = 2
    return np.repeat((mask * 80)[..., None], 3, axis=-1), mask


def make_train_project(root: Path, text: str = TRAIN_CONFIG, train_images: int = 8) -> Path:
    """root/data/{train (8), valid (4), test (4)} from :func:`make_tiny_dataset` and root/train_eval_infer.config
    holding ``text``; returns the config's path."""
    for subset, n, seed in (("train", train_images, 1), ("valid", 4, 2), ("test", 4, 3)):
        make_tiny_dataset(root / "data" / subset, n=n, seed=seed)
    path = root / "train_eval_infer.config"
    path.write_text(text)
    return path


@pytest.fixture
def train_project(tmp_path) -> Path:
    """A tiny project: config + data/{train,valid,test}; returns the config path."""
    return make_train_project(tmp_path)


def write_dicom(path: Path, stored, *, patient: str | None = "P7", series: str = "1.2.3.4", instance: int | None = 5,
                spacing: tuple[float, float] | None = (0.5, 0.75), slope: float | None = 1.0,
                intercept: float | None = -1024.0, modality: str = "CT", pixels: bool = True,
                syntax: str | None = None) -> Path:
    """A single-frame int16 CT slice of ``stored`` values (HU = stored * slope + intercept); a tag given as None
    is left out, ``pixels=False`` writes a header only, and a compressed ``syntax`` gets bytes no decoder
    accepts."""
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    syntax = syntax or ExplicitVRLittleEndian
    stored = np.asarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = modality, series
    for keyword, value in (("PatientID", patient), ("InstanceNumber", instance),
                           ("PixelSpacing", list(spacing) if spacing else None), ("RescaleSlope", slope),
                           ("RescaleIntercept", intercept)):
        if value is not None:
            setattr(ds, keyword, value)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if pixels:
        ds.PixelData = stored.astype("<i2").tobytes()
    if syntax != ExplicitVRLittleEndian:  # a compressed syntax with bytes no decoder accepts
        ds.PixelData = encapsulate([b"not a jpeg"])
        ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def colour_model():
    """A Keras model of any input size: a 1x1 convolution whose softmax over the logits (12.75, 0.1*G, 0.1*B)
    picks class 1 where the image is green, class 2 where it is blue and 0 elsewhere (grey or black)."""
    import keras
    import numpy as np

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 1, name="head")
    x = conv(inputs)
    conv.set_weights([np.array([[[[0, 0, 0], [0, 0.1, 0], [0, 0, 0.1]]]], np.float32),
                      np.array([12.75, 0, 0], np.float32)])
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


def tensorboard_scalars(log_dir: Path) -> dict[str, list[float]]:
    """Scalar series from TensorBoard event files, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    for tag in acc.Tags()["tensors"]:  # tf.summary.scalar (TF2) stores scalars as tensor events
        out[tag] = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    return out


# --------------------------------------------------------------------------- whole-or-absent outputs


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file below ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _enospc_writer(real, path, mode="wb"):
    """atomic_write that writes a little, then finds the disk full."""
    with real(path, mode) as fh:
        fh.write(b"partial" if "b" in mode else "partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    yield  # pragma: no cover


def interrupt_member(monkeypatch, seed: int):
    """A fresh (not resumed) member of ``[model] members`` trained with ``seed`` stops in its first epoch as
    Ctrl-C stops it; returns the real ``fit_network`` to put back."""
    from flexunet.training import members
    from flexunet.utils.errors import Interrupted

    real = members.fit_network

    def interrupted(cfg, resume, data, record):
        if cfg.train.seed == seed and not resume:
            raise Interrupted("interrupted during epoch 1; no epoch had completed")
        return real(cfg, resume, data, record)

    monkeypatch.setattr(members, "fit_network", interrupted)
    return real


def disk_full_on(monkeypatch, predicate) -> list[Path]:
    """Make flexunet.utils.io's atomic writes fail with ENOSPC for paths where ``predicate(path)``."""
    import flexunet.utils.io

    real = flexunet.utils.io.atomic_write
    hit: list[Path] = []

    def fake(path, mode="wb"):
        if predicate(Path(path)):
            hit.append(Path(path))
            return _enospc_writer(real, path, mode)
        return real(path, mode)

    monkeypatch.setattr(flexunet.utils.io, "atomic_write", fake)
    return hit


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:120])


def _as_text(path: Path) -> None:
    path.write_text("this is a text file, not a PNG\n")


DAMAGED_PNG = [  # (damage, the line that names it) for a file called 1001.png
    (_truncate, r"1001\.png: cannot be decoded \(.*truncated.*re-export it"),
    (_as_text, r"1001\.png: not an image PIL can read"),
]


def leftovers(folder: Path) -> list[str]:
    """Temporary names our atomic writers use, anywhere below ``folder``."""
    return sorted(str(p) for p in Path(folder).rglob("*")
                  if p.name.endswith(".tmp") or ".tmp-" in p.name or ".building-" in p.name
                  or ".old-" in p.name)


# --------------------------------------------------------------------------- the command line, in-process


@contextlib.contextmanager
def restored_logging():
    """main() points the flexunet logger at the current stderr; put the logger back afterwards."""
    logger = logging.getLogger("flexunet")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _restore_logging():
    """Every test leaves the flexunet logger as it found it, however it ran main()."""
    with restored_logging():
        yield


def cli(capsys, *args: str) -> tuple[int, list[str], str]:
    """Run ``flexunet -q ARGS`` in-process: (exit code, the ``flexunet <command>`` lines, all of stderr)."""
    from flexunet.cli.main import main

    capsys.readouterr()
    with restored_logging():
        rc = main(["-q", *args])
    err = capsys.readouterr().err
    return rc, [ln for ln in err.splitlines() if ln.startswith("flexunet ")], err


def one_error(capsys, *args: str, rc: int = 2) -> str:
    """The single error line of a failing command (asserting exit code, one line, no traceback)."""
    code, lines, err = cli(capsys, *args)
    assert code == rc, err
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def run_command(config: Path, command: str, *args: str) -> int:
    """``flexunet -q COMMAND CONFIG ARGS`` in-process; its exit code (stderr stays in capsys)."""
    from flexunet.cli.main import main

    with restored_logging():
        return main(["-q", command, str(config), *args])


def run_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m flexunet -q ARGS`` in a real process (where a traceback itself is the point)."""
    return subprocess.run([sys.executable, "-m", "flexunet", "-q", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={**os.environ, **(env or {})})


def one_process_error(result: subprocess.CompletedProcess, rc: int = 2) -> str:
    assert result.returncode == rc, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- projects trained once per session


def pipeline_config_text(data: str = "./dataset/Stroke", run: str = ".", **changes: Mapping[str, Any]) -> str:
    """The whole pipeline's config: prepare ./raw -> split ./dataset/Stroke (by slice) -> augment (hflip)
    -> train (1 epoch) -> evaluate -> infer, the run's folders under ``run`` and the split under ``data``."""
    sections: dict[str, dict[str, Any]] = {
        "model": {"learning_rate": 0.01, "clipvalue": None, "loss": "ce_dice"},
        "dataset": {"class_names": CLASS_NAMES},
        "train": {"epochs": 1, "batch_size": 4, "model_dir": f"{run}/models", "eval_dir": f"{run}/eval",
                  "images_dir": f"{data}/train/images", "masks_dir": f"{data}/train/masks", "tensorboard": False,
                  "jit_compile": False, "seed": 7},  # XLA's "auto" probe: test_autotune and the shipped configs
        "valid": {"images_dir": f"{data}/valid/images", "masks_dir": f"{data}/valid/masks"},
        "test": {"images_dir": f"{data}/test/images", "masks_dir": f"{data}/test/masks"},
        "infer": {"images_dir": f"{data}/mini_test/images", "output_dir": f"{run}/out"},
        "prepare": {"raw_dir": "./raw", "output_dir": "./master", "size": 32, "workers": 1},
        "split": {"output_dir": "./dataset", "name": "Stroke", "ratios": (0.5, 0.25, 0.25), "group_by": "slice",
                  "mini_test_count": 2},
        "augmentor": {"rotation": False, "shrinks": (), "hflip": True, "vflip": False},
    }
    for name, keys in changes.items():
        sections[name] = {**sections.get(name, {}), **keys}
    return config_text(**sections)


def write_pipeline_config(folder: Path, data: str = "./dataset/Stroke", run: str = ".") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "flexunet.config"
    path.write_text(pipeline_config_text(data, run))
    return path


def make_raw_png(raw: Path, n: int = 4) -> None:
    """raw/PNG and raw/MASKS: ``n`` 32x32 slices from :func:`make_tiny_dataset`."""
    make_tiny_dataset(raw, n=n, seed=5)
    (raw / "images").rename(raw / "PNG")
    (raw / "masks").rename(raw / "MASKS")


def save(path: Path, array, mode: str | None = None) -> Path:
    """``array`` as an image file (PIL's mode ``mode``), folders made."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(path)
    return path


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """raw -> prepare -> split -> augment -> train (1 epoch) -> evaluate -> infer, through the CLI,
    hashing every command's inputs before and after it.  Raw holds a grey, an RGBA (half
    transparent) and a 16-bit slice besides RGB ones.  Read it, never change it."""
    import numpy as np
    from PIL import Image

    from flexunet.cli.main import main

    root = tmp_path_factory.mktemp("pipeline")
    raw = root / "raw"
    make_raw_png(raw, n=12)
    png = raw / "PNG"
    grey = np.asarray(Image.open(png / "1000.png"))[..., 0]
    save(png / "1000.png", grey, "L")                                  # grayscale
    rgb = np.asarray(Image.open(png / "1001.png").convert("RGB"))
    save(png / "1001.png", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA")
    save(png / "1002.png", np.asarray(Image.open(png / "1002.png"))[..., 0].astype(np.uint16) * 100)
    config = write_pipeline_config(root)
    dataset = root / "dataset" / "Stroke"
    record: dict = {"root": root, "config": config, "dataset": dataset, "rc": {}, "same": {}}
    config_hash = snapshot(root)[config.name]
    raw_before = snapshot(raw)

    def run(name: str, inputs: Path, *extra: str) -> None:
        before = snapshot(inputs)
        record["rc"][name] = main(["-q", name, str(config), *extra])
        record["same"][name] = (before, snapshot(inputs))

    with restored_logging():
        run("prepare", raw)
        run("split", root / "master")
        train_dir = dataset / "train"
        before_augment = snapshot(train_dir)
        run("augment", dataset)
        record["augment"] = (before_augment, snapshot(train_dir))
        run("train", dataset)
        run("evaluate", dataset)
        run("infer", dataset)
    record["raw"] = (raw_before, snapshot(raw))
    record["config_same"] = snapshot(root)[config.name] == config_hash
    return record


def pipeline_run_copy(pipeline, tmp_path: Path) -> Path:
    """A config for a new run folder in tmp_path on the pipeline's split data, with its 1-epoch run copied."""
    shutil.copytree(pipeline["root"] / "models", tmp_path / "models")
    shutil.copytree(pipeline["root"] / "eval", tmp_path / "eval")
    return write_pipeline_config(tmp_path, data=str(pipeline["dataset"]))


SYNTH_CONFIG = config_text(
    model={"num_layers": 3, "base_kernels": (3, 3), "learning_rate": 0.01, "loss": "ce_dice"},
    dataset={"class_names": ["background", "ischemic", "hemorrhagic"]},
    train={"epochs": 1, "batch_size": 4, "model_dir": "./models", "eval_dir": "./eval",
           "images_dir": "./dataset/D/train/images", "masks_dir": "./dataset/D/train/masks", "seed": 7,
           "jit_compile": False},  # XLA's "auto" probe (12 s here) is test_autotune's and the shipped configs'
    valid={"images_dir": "./dataset/D/valid/images", "masks_dir": "./dataset/D/valid/masks"},
    test={"images_dir": "./dataset/D/test/images", "masks_dir": "./dataset/D/test/masks"},
    infer={"images_dir": "./dataset/D/mini_test/images", "output_dir": "./out"},
    report={"output_dir": "./report", "gallery_per_rank": 1},
    prepare={"raw_dir": "./raw", "output_dir": "./master", "size": 32, "workers": 1},
    split={"output_dir": "./dataset", "name": "D", "ratios": (0.6, 0.2, 0.2), "mini_test_count": 2})


@pytest.fixture(scope="session")
def synth_run(tmp_path_factory) -> Path:
    """A project trained once through the CLI on synthetic slices: raw/ (synth, 30 slices of 64 px), master/
    (32 px), dataset/D/, models/ (1 epoch, no XLA, every other [train] key at its default); returns its
    folder.  Never change it: :func:`synth_project` gives a copy."""
    from flexunet.cli.main import main

    root = tmp_path_factory.mktemp("synth_run")
    config = root / "train_eval_infer.config"
    config.write_text(SYNTH_CONFIG)
    with restored_logging():
        assert main(["-q", "synth", str(root / "raw"), "--count", "30", "--size", "64"]) == 0
        for command in ("prepare", "split", "train"):
            assert main(["-q", command, str(config)]) == 0, command
    return root


@pytest.fixture
def synth_project(synth_run, tmp_path) -> Path:
    """A private copy of :func:`synth_run` (the test may change it); returns its config."""
    root = tmp_path / "p"
    shutil.copytree(synth_run, root, symlinks=True)
    return root / "train_eval_infer.config"


def inputs_snapshot(config: Path) -> dict[str, dict[str, str]]:
    """:func:`snapshot` of every input folder of a :func:`synth_project`: raw/, master/, dataset/, models/."""
    root = config.parent
    return {name: snapshot(root / name) for name in ("raw", "master", "dataset", "models")}


TINY_RUN_CONFIG = train_config_text(train={"epochs": 1, "deterministic": False})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The conftest project (:func:`make_train_project`) trained for 1 epoch and evaluated through the CLI:
    models/, eval/ and evaluation.csv beside the config; returns its folder.  Never change it:
    :func:`tiny_project` gives a copy."""
    from flexunet.cli.main import main

    root = tmp_path_factory.mktemp("tiny_run")
    config = make_train_project(root, TINY_RUN_CONFIG)
    with restored_logging():
        assert main(["-q", "train", str(config)]) == 0
        assert main(["-q", "evaluate", str(config)]) == 0
    return root


@pytest.fixture
def tiny_project(tiny_run, tmp_path) -> Path:
    """A private copy of :func:`tiny_run`; returns its config."""
    shutil.copytree(tiny_run, tmp_path / "p")
    return tmp_path / "p" / "train_eval_infer.config"


@pytest.fixture
def infer_project(tmp_path):
    """A tiny untrained model saved as the best model and a folder in/ of two good 40x24 images; returns
    (config, folder)."""
    import keras
    import numpy as np

    from flexunet.config.loader import load_config
    from flexunet.model.network import build_model

    config = tmp_path / "i.config"
    config.write_text(config_text(train={"model_dir": "models"}, infer={"images_dir": "in", "output_dir": "out"}))
    cfg = load_config(config)
    keras.utils.set_random_seed(0)
    (tmp_path / "models").mkdir()
    build_model(cfg.model).save(tmp_path / "models" / "best_model.keras")
    grey = np.random.default_rng(0).integers(40, 90, (24, 40), dtype=np.uint8)
    save(tmp_path / "in" / "a.png", np.dstack([grey] * 3))
    save(tmp_path / "in" / "b.png", np.dstack([grey] * 3))
    return config, tmp_path


# --------------------------------------------------------------------------- NIfTI volumes

NIFTI_SHAPE = (32, 28, 6)                     # x, y, z voxels of the test volumes (canonical RAS order)
NIFTI_ZOOMS = (0.8, 0.9, 5.0)                 # mm
NIFTI_HU = {0: 120, 1: 250, 2: 10}            # HU per class: windowed with centre 127.5, width 255 grey = HU


def nifti_truth(seed: int = 0):
    """(HU int16, labels uint8) of a test volume in canonical RAS order (:data:`NIFTI_SHAPE`): background HU 120,
    a class-1 block of HU 250 and a class-2 block of HU 10 at seeded places, a little noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = np.zeros(NIFTI_SHAPE, np.uint8)
    x, y = rng.integers(2, 12, 2)
    labels[x:x + 8, y:y + 6, 1:4] = 1
    x, y = rng.integers(16, 22, 2)
    labels[x:x + 6, y:y + 5, 2:5] = 2
    hu = np.vectorize(NIFTI_HU.get)(labels) + rng.integers(-3, 4, NIFTI_SHAPE)
    return hu.astype(np.int16), labels


def ras_affine(shift=(-12.0, 30.0, -40.0)):
    """The canonical (RAS+) affine of the test volumes: :data:`NIFTI_ZOOMS` on the diagonal."""
    import numpy as np

    affine = np.diag([*NIFTI_ZOOMS, 1.0])
    affine[:3, 3] = shift
    return affine


def stored_as(data, orientation: str):
    """(data, affine) of the world image of ``data`` (canonical, :func:`ras_affine`) stored in another voxel
    order: "RAS" as is, "LPS" x and y flipped (a DICOM series), "ZXY" axes permuted (z first)."""
    import numpy as np

    affine = ras_affine()
    x, y, _ = data.shape[:3]
    if orientation == "RAS":
        return data, affine
    if orientation == "LPS":
        flipped = affine @ np.array([[-1, 0, 0, x - 1], [0, -1, 0, y - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
        return data[::-1, ::-1], flipped
    if orientation == "ZXY":
        return np.transpose(data, (2, 0, 1)), affine[:, [2, 0, 1, 3]]
    raise ValueError(orientation)


def write_nifti(path: Path, data, affine=None) -> Path:
    """``data`` as a NIfTI file (gzip when the name ends in .gz), folders made."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, ras_affine() if affine is None else affine), path)
    return path


def make_nnunet(root: Path, cases: int = 3, orientation: str = "LPS", test_cases: int = 1,
                labels: Mapping[str, int] | None = None) -> Path:
    """nnU-Net's raw layout under ``root``: dataset.json, imagesTr/ + labelsTr/ of ``cases`` test volumes
    (:func:`nifti_truth`, stored as ``orientation``), imagesTs/ of ``test_cases`` more; returns ``root``."""
    import json

    for n in range(cases + test_cases):
        hu, lab = nifti_truth(n)
        subset = "Tr" if n < cases else "Ts"
        write_nifti(root / f"images{subset}" / f"case{n}_0000.nii.gz", *stored_as(hu, orientation))
        if subset == "Tr":
            write_nifti(root / "labelsTr" / f"case{n}.nii.gz", *stored_as(lab, orientation))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": dict(labels or {"background": 0, "bright": 1, "dark": 2}),
        "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


NIFTI_SECTIONS: dict[str, dict[str, Any]] = {     # prepare ./raw (nnU-Net) -> ./master, split ./dataset/N by patient
    "prepare": {"source": "nifti", "raw_dir": "./raw", "output_dir": "./master", "size": 32, "workers": 1,
                "window_center": 127.5, "window_width": 255.0},
    "split": {"output_dir": "./dataset", "name": "N", "ratios": (0.34, 0.33, 0.33)},
    "mask": {"format": "index"},
}
