"""The rgb_map codec: colour <-> class index <-> palette PNG."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import RGB_MAP
from flexunet.utils.errors import MaskError
from flexunet.dataset.masks import (flat_palette, image_to_index, index_to_palette_image, index_to_rgb, one_hot,
                            read_mask, rgb_to_index, save_rgb_mask)



def _index(h: int = 5, w: int = 7) -> np.ndarray:
    # rows of class 0, 1, 2 in a fixed pattern: (h, w) uint8
    return (np.add.outer(np.arange(h), np.arange(w)) % 3).astype(np.uint8)


def test_index_rgb_round_trip():
    idx = _index()
    rgb = index_to_rgb(idx, RGB_MAP)
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (0, 255, 0) and tuple(rgb[0, 2]) == (0, 0, 255)
    decoded = rgb_to_index(rgb, RGB_MAP)
    np.testing.assert_array_equal(decoded.index, idx)
    assert decoded.unmapped == {}


def test_palette_png_holds_class_index_and_rgb_map_palette(tmp_path):
    idx = _index()
    path = tmp_path / "m.png"
    index_to_palette_image(idx, RGB_MAP).save(path)          # as infer writes its masks
    with Image.open(path) as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), idx)
        assert img.getpalette()[:9] == [0, 0, 0, 0, 255, 0, 0, 0, 255]
        np.testing.assert_array_equal(image_to_index(img, RGB_MAP).index, idx)
    np.testing.assert_array_equal(read_mask(path, RGB_MAP).index, idx)


def test_rgb_png_and_rgba_png_decode(tmp_path):
    idx = _index()
    save_rgb_mask(tmp_path / "m.png", idx, RGB_MAP)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", RGB_MAP).index, idx)
    rgba = np.concatenate([index_to_rgb(idx, RGB_MAP), np.full((5, 7, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png", RGB_MAP).index, idx)


def test_unmapped_colours_are_counted_and_refused_by_default():
    rgb = index_to_rgb(_index(), RGB_MAP)
    rgb[0, 0] = (10, 240, 5)     # near green: distance ~ 19.4
    rgb[1, 1] = (200, 50, 50)    # far from everything
    rgb[1, 2] = (200, 50, 50)
    with pytest.raises(MaskError) as err:
        rgb_to_index(rgb, RGB_MAP, source="x.png")
    msg = str(err.value)
    assert msg.startswith("x.png: 3 pixel(s) in 2 colour(s) not in rgb_map")
    assert "(200, 50, 50): 2 px" in msg and "(10, 240, 5): 1 px" in msg
    # a tolerance covers the near colour only
    with pytest.raises(MaskError, match=r"1 colour\(s\)"):
        rgb_to_index(rgb, RGB_MAP, tolerance=20)
    decoded = rgb_to_index(rgb, RGB_MAP, tolerance=20, map_unmapped=True)
    assert decoded.index[0, 0] == 1
    assert decoded.unmapped == {(200, 50, 50): 2}
    assert decoded.index[1, 1] == 0  # nearest of (200,50,50) is black (distance 212 vs 255+)


def test_jpeg_masks_are_refused(tmp_path):
    path = tmp_path / "m.jpg"
    Image.fromarray(index_to_rgb(_index(), RGB_MAP)).save(path)
    with pytest.raises(MaskError, match="JPEG mask refused"):
        read_mask(path, RGB_MAP)


def test_npz_masks_by_index_or_one_hot(tmp_path):
    idx = _index()
    np.savez(tmp_path / "i.npz", mask=idx)
    np.savez(tmp_path / "o.npz", mask=one_hot(idx, 3))
    np.testing.assert_array_equal(read_mask(tmp_path / "i.npz", RGB_MAP).index, idx)
    np.testing.assert_array_equal(read_mask(tmp_path / "o.npz", RGB_MAP).index, idx)
    np.savez(tmp_path / "bad.npz", mask=idx + 5)
    with pytest.raises(MaskError, match="expected class indices 0..2"):
        read_mask(tmp_path / "bad.npz", RGB_MAP)


def test_palette_order_follows_class_index():
    rgb_map = {(255, 0, 0): 1, (0, 0, 0): 0}
    assert flat_palette(rgb_map)[:6] == [0, 0, 0, 255, 0, 0]
    img = index_to_palette_image(np.array([[0, 1]], np.uint8), rgb_map)
    assert img.convert("RGB").getpixel((1, 0)) == (255, 0, 0)


def test_one_hot():
    oh = one_hot(np.array([[0, 2]]), 3)
    assert oh.shape == (1, 2, 3) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh[0, 1], [0, 0, 1])


def test_data_files_are_never_unpickled(tmp_path):
    from flexunet.utils.errors import MaskError
    from flexunet.dataset.masks import read_mask

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.savez(tmp_path / "m.npz", mask=np.array([Payload()], dtype=object))
    marker.unlink(missing_ok=True)
    with pytest.raises(MaskError, match=r"m\.npz: cannot read key 'mask'"):
        read_mask(tmp_path / "m.npz", RGB_MAP)
    assert not marker.exists()


# --------------------------------------------------------------------------- class-index masks ([mask] format = "index")


def _write(path, array, mode=None, palette=None):
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    if palette is not None:
        img.putpalette(palette)
    img.save(path)
    return path


@pytest.mark.parametrize("kind", ["L", "I;16", "P", "RGB grey"])
def test_index_masks_of_every_single_channel_kind(tmp_path, kind):
    idx = _index()
    if kind == "L":
        path = _write(tmp_path / "m.png", idx)
    elif kind == "I;16":
        path = _write(tmp_path / "m.png", idx.astype(np.uint16))
    elif kind == "P":            # the palette draws 1 blue and 2 green: only the values are the classes
        path = _write(tmp_path / "m.png", idx, palette=[0, 0, 0, 0, 0, 255, 0, 255, 0])
    else:
        path = _write(tmp_path / "m.png", np.repeat(idx[..., None], 3, -1))
    with Image.open(path) as img:
        assert img.mode == kind.split()[0]
    decoded = read_mask(path, RGB_MAP, mask_format="index")
    np.testing.assert_array_equal(decoded.index, idx)
    assert decoded.index.dtype == np.uint8 and decoded.unmapped == {}
    assert (decoded.palette is not None) == (kind == "P")


def test_an_index_value_past_the_classes_is_one_line_naming_file_and_value(tmp_path):
    idx = _index()
    idx[1, 1] = 3
    path = _write(tmp_path / "bad.png", idx)
    with pytest.raises(MaskError) as err:
        read_mask(path, RGB_MAP, mask_format="index")
    msg = str(err.value)
    assert msg.startswith(f"{path}: pixel value 3 is not a class index (1 px out of range)")
    assert "values 0..2" in msg and "num_classes = 3" in msg and "\n" not in msg


def test_a_colour_mask_read_as_index_is_refused_and_an_index_mask_read_as_colour_gets_a_hint(tmp_path):
    colour = tmp_path / "colour.png"
    save_rgb_mask(colour, _index(), RGB_MAP)
    with pytest.raises(MaskError, match=r"colour\.png: a colour mask \(RGB\), but \[mask\] format is \"index\""):
        read_mask(colour, RGB_MAP, mask_format="index")
    grey = _write(tmp_path / "grey.png", _index())
    with pytest.raises(MaskError) as err:
        read_mask(grey, RGB_MAP)
    assert "not in rgb_map" in str(err.value) and 'look like class indices: if they are, set [mask] format = "index"' \
        in str(err.value)


@pytest.mark.parametrize("palette", [None, [0, 0, 0, 9, 9, 9, 200, 0, 0]])
def test_index_masks_are_written_back_as_read(tmp_path, palette):
    from flexunet.dataset.masks import save_mask

    path = tmp_path / "m.png"
    save_mask(path, _index(), RGB_MAP, "index", palette)
    with Image.open(path) as img:
        assert img.mode == ("P" if palette else "L")
        np.testing.assert_array_equal(np.asarray(img), _index())
        if palette:
            assert img.getpalette()[:9] == palette
    again = read_mask(path, RGB_MAP, mask_format="index")
    np.testing.assert_array_equal(again.index, _index())
    assert (again.palette or [])[:9] == (palette or [])


def test_default_colours_are_distinct_for_many_classes():
    from flexunet.config.colours import default_rgb_map

    assert list(default_rgb_map(3)) == [(0, 0, 0), (0, 255, 0), (0, 0, 255)]
    many = default_rgb_map(300)
    assert len(many) == 300 and sorted(many.values()) == list(range(300))


# --------------------------------------------------------------------------- properties (hypothesis)
# any palette of unique colours round-trips class indices through RGB arrays, RGB PNGs and palette PNGs;
# colours disturbed by less than the tolerance still decode to their class

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
