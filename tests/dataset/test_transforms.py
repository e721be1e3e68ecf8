"""flexunet.dataset.transforms: paired transforms keep image and mask aligned; online draws are seeded.

The test pair encodes the mask in the image: image = mask * 80 in every channel, so
after any geometric transform the image must still read as its mask.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from flexunet.dataset import transforms as A

from conftest import coded_pair, make_cfg

# the TEKNOFEST generation: hflip, 3 deformations, 3 distortions, 5 cumulative barrel centres
def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


GEOMETRIC = {
    "hflip": lambda i, m: A.hflip(i, m),
    "vflip": lambda i, m: A.vflip(i, m),
    "rotate90": lambda i, m: A.rotate(i, m, 90),
    "rotate30": lambda i, m: A.rotate(i, m, 30),
    "shrink": lambda i, m: A.shrink(i, m, 0.8),
    "shear": lambda i, m: A.shear(i, m, 0.2),
    "elastic": lambda i, m: A.elastic(i, m, 300, 6, rng(1)),
    "elastic_seed_params": lambda i, m: A.elastic(i, m, 1300, 8, rng(2)),
    "grid": lambda i, m: A.grid_distort(i, m, 0.05, 40, 0.5, rng(3)),
    "barrel": lambda i, m: A.barrel_distort(i, m, 0.3, 0.3, [(0.3, 0.3), (0.5, 0.5), (0.7, 0.7)]),
    "pincushion": lambda i, m: A.barrel_distort(i, m, 0.5, -0.5, (0.5, 0.5)),
}


# --------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_geometric_transform_keeps_image_and_mask_aligned(name):
    image, mask = coded_pair()
    out_image, out_mask = GEOMETRIC[name](image, mask)
    assert out_image.shape == image.shape and out_image.dtype == np.uint8
    assert out_mask.shape == mask.shape and out_mask.dtype == mask.dtype
    assert set(np.unique(out_mask)) <= set(np.unique(mask))           # no new classes
    grey = out_image[..., 0].astype(int)
    assert (out_image == out_image[..., :1]).all()                     # channels moved together
    # nearest class read from the image agrees with the mask almost everywhere ...
    assert (np.rint(grey / 80) == out_mask).mean() >= 0.97
    # ... and exactly away from class borders of the output
    interior = (ndimage.maximum_filter(out_mask, 5) == ndimage.minimum_filter(out_mask, 5))
    assert interior.mean() > 0.6
    assert (grey[interior] == out_mask[interior].astype(int) * 80).mean() >= 0.99


@pytest.mark.parametrize("name", ["rotate30", "elastic", "grid", "barrel"])
def test_geometric_transform_moves_something(name):
    image, mask = coded_pair()
    out_image, out_mask = GEOMETRIC[name](image, mask)
    assert (out_mask != mask).mean() > 0.005


def test_flips_and_right_angle_rotation_are_exact_permutations():
    image, mask = coded_pair()
    image = image.copy()
    image[..., 1] = np.arange(64, dtype=np.uint8)[None, :]              # an asymmetric channel
    assert all(np.array_equal(a, b) for a, b in zip(A.hflip(image, mask), (image[:, ::-1], mask[:, ::-1])))
    assert all(np.array_equal(a, b) for a, b in zip(A.vflip(image, mask), (image[::-1], mask[::-1])))
    # counter-clockwise on screen, as the original's cv2.getRotationMatrix2D
    assert all(np.array_equal(a, b) for a, b in zip(A.rotate(image, mask, 90), (np.rot90(image), np.rot90(mask))))
    assert all(np.array_equal(a, b) for a, b in zip(A.rotate(image, mask, 0), (image, mask)))
    assert all(np.array_equal(a, b) for a, b in zip(A.shrink(image, mask, 1.0), (image, mask)))


def test_uncovered_area_takes_image_background_and_mask_zero():
    mask = np.ones((32, 32), np.uint8)
    image = np.full((32, 32, 3), 30, np.uint8)                           # border background 30
    out_image, out_mask = A.rotate(image, mask, 45)
    assert out_mask[0, 0] == 0 and out_mask[16, 16] == 1
    assert (out_image[0, 0] == 30).all()
    small_image, small_mask = A.shrink(image, mask, 0.5)
    assert small_mask[0, 0] == 0 and small_mask[16, 16] == 1 and (small_image[0, 0] == 30).all()
    assert 0.2 < small_mask.mean() < 0.3                                 # about half the side


def test_grey_image_without_channel_axis():
    image, mask = coded_pair(32)
    out_image, out_mask = A.rotate(image[..., 0], mask, 90)
    assert out_image.shape == (32, 32) and np.array_equal(out_image, np.rot90(image[..., 0]))


def test_size_mismatch_is_refused():
    with pytest.raises(ValueError, match="same size"):
        A.hflip(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8))


@pytest.mark.parametrize("fn", [lambda i, m, g: A.elastic(i, m, 300, 6, g),
                                lambda i, m, g: A.grid_distort(i, m, 0.05, 40, 0.5, g)])
def test_random_transforms_are_reproducible(fn):
    image, mask = coded_pair()
    a, b, c = fn(image, mask, rng(5)), fn(image, mask, rng(5)), fn(image, mask, rng(6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_intensity_transforms_touch_the_image_only():
    image, mask = coded_pair()
    for out_image, out_mask in (A.sharpen(image, mask, 1.0), A.brighten(image, mask, 1.2, 10)):
        assert out_mask is mask and np.array_equal(out_mask, coded_pair()[1])
        assert out_image.dtype == np.uint8 and not np.array_equal(out_image, image)


def test_brighten_values():
    image = np.array([[[0], [100], [250]]], np.uint8)                    # (1, 3, 1)
    out, _ = A.brighten(image, np.zeros((1, 3), np.uint8), 1.2, 10)
    assert out[0, :, 0].tolist() == [10, 130, 255]                       # 1.2x + 10, clipped


def test_sharpen_values():
    flat = np.full((5, 5, 3), 100, np.uint8)
    assert np.array_equal(A.sharpen(flat, np.zeros((5, 5), np.uint8), 2.0)[0], flat)
    step = np.zeros((5, 6, 1), np.uint8)
    step[:, 3:] = 100
    out, _ = A.sharpen(step, np.zeros((5, 6), np.uint8), 0.5)
    # x + 9k (x - mean3x3): at the edge 0 -> 0 - 4.5 * 100/3 clipped, 100 -> 100 + 4.5 * 100/3
    assert out[2, 2, 0] == 0 and out[2, 3, 0] == 250 and out[2, 0, 0] == 0 and out[2, 5, 0] == 100
    assert np.array_equal(A.sharpen(step, np.zeros((5, 6), np.uint8), 0.0)[0], step)


def test_barrel_centres_apply_in_turn():
    image, mask = coded_pair()
    one = A.barrel_distort(image, mask, 0.3, 0.3, [(0.3, 0.3)])
    both = A.barrel_distort(image, mask, 0.3, 0.3, [(0.3, 0.3), (0.7, 0.7)])
    assert np.array_equal(one[1], A.barrel_distort(image, mask, 0.3, 0.3, (0.3, 0.3))[1])
    assert not np.array_equal(one[1], both[1])


# --------------------------------------------------------------------------- online


ALL_ON = """\
[augmentor]
shears = [0.1]
deformation = True
distortion = True
sharpening = True
brightening = True
barrdistortion = True
pincdistortion = True

[deformation]
alpha = 300
sigmoids = [6]

[distortion]
distortions = [0.03]
"""


def test_random_augment_is_reproducible_and_aligned(tmp_path):
    cfg = make_cfg(tmp_path, extra=ALL_ON.replace("sharpening = True\nbrightening = True\n", ""))
    image, mask = coded_pair()
    results = [A.random_augment(image, mask, cfg, rng(s)) for s in range(8)]
    again = A.random_augment(image, mask, cfg, rng(0))
    assert np.array_equal(results[0][0], again[0]) and np.array_equal(results[0][1], again[1])
    assert len({r[1].tobytes() for r in results}) > 4                     # draws differ
    for out_image, out_mask in results:
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 1, 2}
        assert (np.rint(out_image[..., 0] / 80) == out_mask).mean() >= 0.95


def test_random_augment_with_every_option_and_off_switches(tmp_path):
    image, mask = coded_pair()
    out = A.random_augment(image, mask, make_cfg(tmp_path, extra=ALL_ON), rng(3))
    assert out[0].dtype == np.uint8 and set(np.unique(out[1])) <= {0, 1, 2}
    intensity_only = """\
[augmentor]
rotation = False
hflip = False
vflip = False
shrinks = []
sharpening = True
brightening = True
"""
    for s in range(4):
        assert np.array_equal(A.random_augment(image, mask, make_cfg(tmp_path, extra=intensity_only), rng(s))[1], mask)
    off = make_cfg(tmp_path, extra=ALL_ON + "\n[generator]\naugmentation = False\n")
    assert A.random_augment(image, mask, off, rng(0))[0] is image


def test_vary_intensity_changes_grey_levels_inside_the_body_only():
    image = np.zeros((40, 40, 3), np.uint8)
    image[8:32, 8:32] = 100
    image[16:24, 16:24] = 130                                     # a brighter "lesion" inside the body
    body = image[..., 0] > 0
    outs = [A.vary_intensity(image, 0.2, 10.0, 3.0, rng(s)) for s in range(6)]
    for out in outs:
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert (out[~body] == 0).all()                           # black stays black
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()   # grey stays grey
        inner, outer = out[16:24, 16:24, 0].mean(), out[8:12, 8:32, 0].mean()
        assert 30 * 0.8 - 3 < inner - outer < 30 * 1.2 + 3     # the contrast is kept within the gain
        assert abs(outer - 100) <= 10 + 0.2 * 30 + 2           # the shift stays within offset + gain
    assert len({o.tobytes() for o in outs}) == 6                  # every draw differs
    assert np.array_equal(A.vary_intensity(image, 0.2, 10.0, 3.0, rng(2)), outs[2])   # seeded
    assert np.array_equal(A.vary_intensity(image, 0.0, 0.0, 0.0, rng(0)), image)      # all zero: unchanged


def test_random_augment_draws_the_intensity_change_and_leaves_the_mask(tmp_path):
    image, mask = coded_pair()
    cfg = make_cfg(tmp_path, extra="[augmentor]\nrotation = False\nhflip = False\nvflip = False\nshrinks = []\n"
                             "intensity = True\n[intensity]\noffset = 20\nnoise = 0\ngain = 0\n")
    outs = [A.random_augment(image, mask, cfg, rng(s)) for s in range(8)]
    assert all(np.array_equal(m, mask) for _, m in outs)
    changed = [not np.array_equal(o, image) for o, _ in outs]
    assert 0 < sum(changed) < 8                                   # drawn with probability p = 0.5
    off = make_cfg(tmp_path, extra="[augmentor]\nrotation = False\nhflip = False\nvflip = False\nshrinks = []\n")
    assert all(np.array_equal(A.random_augment(image, mask, off, rng(s))[0], image) for s in range(4))


def _edge_image() -> np.ndarray:
    image = np.zeros((40, 40), np.uint8)
    image[8:32, 8:32] = 80
    image[8:32, 20:32] = 160                                      # a sharp edge inside the body
    return image


def test_vary_intensity_kernel_blurs_or_sharpens_the_edge_within_the_body():
    image = _edge_image()
    body = image > 0
    step = lambda out: np.abs(np.diff(out[12:28, 14:26].astype(float), axis=1)).max()   # noqa: E731
    outs = [A.vary_intensity(image, 0.0, 0.0, 0.0, rng(s), kernel=1.0) for s in range(12)]
    steps = [step(o) for o in outs]
    assert min(steps) < step(image) < max(steps)                 # some draws soften the edge, some sharpen it
    for out in outs:
        assert (out[~body] == 0).all()                            # black stays black
    assert np.array_equal(A.vary_intensity(image, 0.0, 0.0, 0.0, rng(3), kernel=1.0), outs[3])   # seeded


def test_vary_intensity_gamma_keeps_the_order_of_grey_levels():
    image = _edge_image()
    outs = [A.vary_intensity(image, 0.0, 0.0, 0.0, rng(s), gamma=0.5) for s in range(8)]
    darker, brighter = outs[0][16, 10], outs[0][16, 24]
    assert all(o[16, 10] < o[16, 24] for o in outs)               # a monotone curve: contrast sign kept
    assert len({(int(o[16, 10]), int(o[16, 24])) for o in outs}) > 1 and darker < brighter
    assert {int(o[16, 10]) for o in outs} != {80}                 # grey levels move



def test_vary_intensity_lowres_loses_a_small_lesion_s_detail_in_half_the_draws():
    image = np.zeros((40, 40), np.uint8)
    image[4:36, 4:36] = 80
    image[19:21, 19:21] = 200                                     # a bright 2x2 px spot: a small bleed
    outs = [A.vary_intensity(image, 0.0, 0.0, 0.0, rng(s), lowres=0.5) for s in range(20)]
    changed = [not np.array_equal(o, image) for o in outs]
    assert 4 <= sum(changed) <= 16                                # about half the draws resample the slice
    for out, moved in zip(outs, changed):
        assert out.shape == image.shape and out.dtype == image.dtype
        assert (out[image == 0] == 0).all()                       # black stays black
        if moved:                                                 # the spot spread thin, never brighter
            assert out[19:21, 19:21].max() <= 200 and np.abs(out.astype(int) - image).sum() > 0
    assert max(200 - int(o[19:21, 19:21].max()) for o in outs) > 20     # some draws dim the spot
    assert np.array_equal(A.vary_intensity(image, 0.0, 0.0, 0.0, rng(5), lowres=0.5), outs[5])   # seeded
    rgb = np.repeat(image[..., None], 3, axis=-1)                 # a colour image keeps R = G = B
    out = A.vary_intensity(rgb, 0.0, 0.0, 0.0, rng(next(i for i, c in enumerate(changed) if c)), lowres=0.5)
    assert out.shape == rgb.shape and (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
