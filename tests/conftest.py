"""Shared test helpers: small configs and the project's stroke config."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# jit_compile = "auto" caches its measurement: one fresh cache per test session, never the user's
os.environ.setdefault("FLEXUNET_CACHE_DIR", tempfile.mkdtemp(prefix="flexunet-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
STROKE_CONFIG = ROOT / "configs" / "stroke-ct" / "train_eval_infer.config"

TINY_CONFIG = """\
[model]
image_width = 64
image_height = 64
image_channels = 3
num_classes = 3
base_filters = 4
num_layers = 3
base_kernels = (3,3)
dropout_rate = 0.0
learning_rate = 0.01

[train]
epochs = 2
batch_size = 2

[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
"""


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


def make_tiny_dataset(root: Path, n: int = 8, size: int = 32, seed: int = 0) -> None:
    """root/{images,masks}: grey noise with bright squares (class 1) and dark discs (class 2)."""
    import numpy as np
    from PIL import Image

    from flexunet.dataset.masks import index_to_rgb

    rgb_map = {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}
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
        Image.fromarray(index_to_rgb(index, rgb_map)).save(root / "masks" / f"{1000 + i}.png")


TRAIN_CONFIG = """\
[model]
image_width = 32
image_height = 32
num_classes = 3
base_filters = 4
num_layers = 2
base_kernels = (3,3)
dropout_rate = 0.0
learning_rate = 0.01
clipvalue = None
loss = "ce_dice"

[dataset]
class_names = ["background", "bright", "dark"]

[train]
epochs = 3
batch_size = 4
model_dir = "./models"
eval_dir = "./eval"
images_dir = "./data/train/images"
masks_dir = "./data/train/masks"
tensorboard = False
deterministic = True
seed = 7

[valid]
images_dir = "./data/valid/images"
masks_dir = "./data/valid/masks"

[test]
images_dir = "./data/test/images"
masks_dir = "./data/test/masks"

[infer]
images_dir = "./data/test/images"
output_dir = "./out"

[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
"""


@pytest.fixture
def train_project(tmp_path) -> Path:
    """A tiny project: config + data/{train,valid,test}; returns the config path."""
    make_tiny_dataset(tmp_path / "data" / "train", n=8, seed=1)
    make_tiny_dataset(tmp_path / "data" / "valid", n=4, seed=2)
    make_tiny_dataset(tmp_path / "data" / "test", n=4, seed=3)
    path = tmp_path / "train_eval_infer.config"
    path.write_text(TRAIN_CONFIG)
    return path


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


def leftovers(folder: Path) -> list[str]:
    """Temporary names our atomic writers use, anywhere below ``folder``."""
    return sorted(str(p) for p in Path(folder).rglob("*")
                  if p.name.endswith(".tmp") or ".tmp-" in p.name or ".building-" in p.name
                  or ".old-" in p.name)
