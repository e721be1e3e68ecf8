"""Shared test helpers: small configs and the project's stroke config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

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
