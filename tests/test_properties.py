"""Property tests (hypothesis): the config parser and the mask codec hold for any input.

* any text, and any ``--set`` override, either parses or raises ConfigError (never another
  exception, never anything run);
* any palette of unique colours round-trips class indices through RGB arrays, RGB PNGs and
  palette PNGs; colours disturbed by less than the tolerance still decode to their class;
* any input file name gives an output path inside the output folder (or a DataError).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from flexunet.config.loader import parse_config
from flexunet.utils.errors import ConfigError, DataError
from flexunet.utils.io import safe_output_path
from flexunet.dataset.masks import image_to_index, index_to_palette_image, index_to_rgb, read_mask, rgb_to_index

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = Path(tempfile.gettempdir())

VALID = """\
[model]
num_classes = 3
num_layers = 2
image_width = 32
image_height = 32
[mask]
rgb_map = {(0,0,0):0, (0,255,0):1, (0,0,255):2}
"""


def parses_or_config_error(text: str, overrides: tuple[str, ...] = ()) -> None:
    """Anything but a ConfigError fails the test; a ConfigError must be one non-empty line."""
    try:
        parse_config(text, source="prop.config", base_dir=BASE, overrides=overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(("prop.config", "--set")) and "\n" not in message, message


# --------------------------------------------------------------------------- config parser


@SETTINGS
@given(st.text())
def test_any_text_parses_or_raises_config_error(text):
    parses_or_config_error(text)


VALUE_CHARS = st.sampled_from(list("()[]{},:'\"=;#0123456789.-+eE_ aAbBxXjJ\\\n\t") + ["True", "None", "lambda",
                                                                                    "__import__", "**", "9" * 40])
VALUES = st.one_of(
    st.lists(VALUE_CHARS, max_size=12).map("".join),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.recursive(st.one_of(st.integers(-300, 300), st.booleans(), st.none(), st.text(max_size=5)),
                 lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                                         st.dictionaries(st.tuples(st.integers(-1, 300), st.integers(-1, 300),
                                                                   st.integers(-1, 300)), inner, max_size=4)),
                 max_leaves=10).map(repr),
)
SECTIONS = st.sampled_from(["model", "mask", "train", "infer", "prepare", "split", "augmentor", "deformation",
                            "tiledinfer", "nosuch", "MODEL", ""])
KEYS = st.sampled_from(["num_classes", "rgb_map", "image_width", "num_layers", "epochs", "learning_rate",
                        "base_kernels", "dilation", "tolerance", "model_dir", "ratios", "class_weights",
                        "angles", "alpah", "centers", "overlapping", "epohcs", "x", ""])


@st.composite
def ini_texts(draw) -> str:
    """INI-shaped text: the valid base with random sections, keys and values spliced in."""
    lines = VALID.splitlines()
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            line = f"[{draw(SECTIONS)}]"
        elif kind == 1:
            line = f"{draw(KEYS)} {draw(st.sampled_from(['=', ':', ' = ']))} {draw(VALUES)}"
        elif kind == 2:
            line = f"   {draw(VALUES)}"  # a continuation line
        else:
            line = draw(st.text(max_size=20))
        lines.insert(draw(st.integers(0, len(lines))), line)
    return "\n".join(lines)


@SETTINGS
@given(ini_texts())
def test_ini_shaped_text_parses_or_raises_config_error(text):
    parses_or_config_error(text)


@SETTINGS
@given(st.lists(st.tuples(SECTIONS, KEYS, VALUES).map(lambda t: f"{t[0]}.{t[1]}={t[2]}")
                | st.text(max_size=30), max_size=3))
def test_any_set_override_parses_or_raises_config_error(overrides):
    parses_or_config_error(VALID, tuple(overrides))


def with_value(section: str, key: str, value: str) -> str:
    """VALID with ``[section] key = value`` (replacing the key where VALID has it)."""
    lines = [ln for ln in VALID.splitlines() if not ln.startswith(f"{key} =")]
    if f"[{section}]" not in lines:
        lines.append(f"[{section}]")
    lines.insert(lines.index(f"[{section}]") + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["__import__('os').system('touch {m}')", "open('{m}', 'w')", "exec(\"open('{m}','w')\")",
                        "(lambda: open('{m}', 'w'))()", "[open('{m}', 'w') for _ in 'x']",
                        "{{**open('{m}','w')}}", "f'{{open(\"{m}\", \"w\")}}'"]),
       st.sampled_from([("train", "model_dir"), ("model", "num_classes"), ("mask", "rgb_map"),
                        ("prepare", "raw_dir"), ("nosuch", "key")]))
def test_code_in_any_value_is_never_run(template, where):
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "PWNED")
        value = template.format(m=marker)
        parses_or_config_error(with_value(*where, value))
        parses_or_config_error(VALID, (f"{where[0]}.{where[1]}={value}",))
        assert not os.path.exists(marker)


# --------------------------------------------------------------------------- mask codec


@st.composite
def palettes_and_indices(draw) -> tuple[dict, np.ndarray]:
    n = draw(st.integers(2, 12))
    colours = draw(st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=n, max_size=n, unique=True))
    order = draw(st.permutations(range(n)))
    rgb_map = {colour: index for colour, index in zip(colours, order)}
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    index = np.random.default_rng(seed).integers(0, n, (h, w)).astype(np.uint8)
    return rgb_map, index


@SETTINGS
@given(palettes_and_indices())
def test_index_rgb_index_round_trips_for_any_palette(case):
    rgb_map, index = case
    rgb = index_to_rgb(index, rgb_map)
    assert rgb.shape == index.shape + (3,) and rgb.dtype == np.uint8
    decoded = rgb_to_index(rgb, rgb_map)
    np.testing.assert_array_equal(decoded.index, index)
    assert decoded.unmapped == {}


@SETTINGS
@given(palettes_and_indices())
def test_png_files_round_trip_for_any_palette(case):
    rgb_map, index = case
    with tempfile.TemporaryDirectory() as tmp:
        rgb_path, pal_path = Path(tmp) / "rgb.png", Path(tmp) / "pal.png"
        Image.fromarray(index_to_rgb(index, rgb_map)).save(rgb_path)
        index_to_palette_image(index, rgb_map).save(pal_path)
        np.testing.assert_array_equal(read_mask(rgb_path, rgb_map).index, index)
        np.testing.assert_array_equal(read_mask(pal_path, rgb_map).index, index)
        with Image.open(pal_path) as img:                      # pixel value = class index, as written
            np.testing.assert_array_equal(np.asarray(img), index)


@SETTINGS
@given(palettes_and_indices(), st.integers(0, 2**32 - 1))
def test_colours_within_tolerance_decode_to_their_class(case, seed):
    rgb_map, index = case
    colours = np.array(list(rgb_map))
    gaps = np.sqrt(((colours[:, None, :].astype(float) - colours[None, :, :]) ** 2).sum(-1))
    gap = gaps[~np.eye(len(colours), dtype=bool)].min()
    radius = np.floor((gap - 1) / 2 / np.sqrt(3))                       # per-channel step, < gap/2 in distance
    rgb = index_to_rgb(index, rgb_map).astype(int)
    noise = np.random.default_rng(seed).integers(-radius, radius + 1, rgb.shape) if radius > 0 else 0
    noisy = np.clip(rgb + noise, 0, 255)
    tolerance = float(np.sqrt(3) * radius) + 1e-6                       # the largest disturbance, and a hair
    decoded = rgb_to_index(noisy.astype(np.uint8), rgb_map, tolerance=tolerance)
    np.testing.assert_array_equal(decoded.index, index)


@SETTINGS
@given(palettes_and_indices())
def test_foreign_colours_are_counted_exactly(case):
    rgb_map, index = case
    foreign = next(c for c in ((255, 0, 255), (1, 2, 3), (254, 253, 252), (7, 77, 177)) if c not in rgb_map)
    rgb = index_to_rgb(index, rgb_map)
    rgb[0, 0] = foreign
    decoded = rgb_to_index(rgb, rgb_map, map_unmapped=True)
    assert decoded.unmapped == {foreign: 1}
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    try:
        image_to_index(Image.open(buf), rgb_map)
    except Exception as exc:   # MaskError only, naming the colour and its count
        assert type(exc).__name__ == "MaskError" and f"{foreign}: 1 px" in str(exc)
    else:
        raise AssertionError("a foreign colour was accepted without tolerance or map_unmapped")


# --------------------------------------------------------------------------- output names


@SETTINGS
@given(st.text(max_size=40))
def test_any_input_name_stays_inside_the_output_folder(name):
    out = BASE / "flexunet-out"
    try:
        path = safe_output_path(out, name)
    except DataError:
        return
    assert path.parent == out and path.name not in ("", ".", "..") and "/" not in path.name
