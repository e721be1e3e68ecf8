"""flexunet.preprocessing.pipeline: the tf.data pipeline pairs, decodes, orders, caches and augments reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import RGB_MAP
from flexunet.config.loader import load_config
from flexunet.utils.errors import DataError


def test_pipeline_yields_paired_one_hot_masks(train_project):
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

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
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    cfg = load_config(train_project)
    pairs = subset_pairs(cfg, "train")

    def first_batches(epochs):
        return [b[0].numpy()[:, 5, 5, 0].tolist() for b in make_dataset(cfg, pairs, training=True, epochs=epochs)]

    full = first_batches((0, 3))
    assert first_batches((2, 3)) == full[4:]  # 2 batches per epoch: epoch 2 alone equals its slice
    assert full[:2] != full[2:4]              # reshuffled between epochs


@pytest.mark.parametrize("size", [32, 24])  # 32: stored at the model size (uint8 cache); 24: resampled (float32)
def test_cached_pipeline_yields_the_same_batches_as_streaming(train_project, size):
    from flexunet.preprocessing.pipeline import _cache_variables, decode_image, decode_mask, make_dataset, subset_pairs

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
    from flexunet.preprocessing.pipeline import subset_pairs

    cfg = load_config(train_project)
    (cfg.train.masks_dir / "1003.png").unlink()
    with pytest.raises(DataError, match=r"1003\.png: no mask with the same name"):
        subset_pairs(cfg, "train")


AUGMENTED = ["model.generator=True", "augmentor.rotation=False", "augmentor.shrinks=()", "augmentor.hflip=True",
             "augmentor.vflip=True"]


def test_online_augmentation_is_seeded_aligned_and_off_when_asked(train_project):
    """generator = True draws flips per (seed, epoch, slice): same batches on every run, masks on their pixels;
    [generator] augmentation = False gives the plain batches."""
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    cfg = load_config(train_project, AUGMENTED)
    pairs = subset_pairs(cfg, "train")

    def batches(c):
        return [(x.numpy(), y.numpy()) for x, y in make_dataset(c, pairs, training=True, epochs=(0, 2))]

    plain = batches(load_config(train_project))
    first, again = batches(cfg), batches(cfg)
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, plain))      # something was flipped
    for images, masks in first:
        index, grey = masks.argmax(-1), images[..., 0]
        assert grey[index == 1].mean() > 190 and grey[index == 2].mean() < 50     # still on their pixels
    off = batches(load_config(train_project, AUGMENTED + ["generator.augmentation=False"]))
    for (xo, yo), (xp, yp) in zip(off, plain):
        np.testing.assert_array_equal(xo, xp)
        np.testing.assert_array_equal(yo, yp)


def _index_masks(colour_dir, out_dir, mode: str) -> None:
    """``colour_dir``'s masks (green 1, blue 2) as class-index PNGs: grey ``L``, or palette ``P`` drawing 1 red."""
    from PIL import Image

    from flexunet.dataset.masks import read_mask

    out_dir.mkdir(parents=True)
    for path in sorted(colour_dir.glob("*.png")):
        img = Image.fromarray(read_mask(path, RGB_MAP).index)
        if mode == "P":
            img.putpalette([0, 0, 0, 255, 0, 0, 255, 255, 0])
        img.save(out_dir / path.name)


@pytest.mark.parametrize("mode,size", [("L", 32), ("P", 24)])      # 24: masks resampled (nearest) on the way
def test_index_masks_give_the_batches_colour_masks_give(train_project, mode, size):
    from flexunet.preprocessing.pipeline import check_masks, decode_mask, make_dataset, subset_pairs

    sizes = [f"model.image_width={size}", f"model.image_height={size}"]
    colour = load_config(train_project, sizes)
    _index_masks(colour.train.masks_dir, train_project.parent / "index_masks", mode)
    index = load_config(train_project, [*sizes, "mask.format=index", "train.masks_dir=" +
                                        str(train_project.parent / "index_masks")])
    assert index.mask.format == "index" and colour.mask.format == "rgb"
    for c in (colour, index):
        assert decode_mask(str(subset_pairs(c, "train")[0][1]), c).numpy().shape == (size, size)
    np.testing.assert_array_equal(check_masks(index, subset_pairs(index, "train")),
                                  check_masks(colour, subset_pairs(colour, "train")))
    got = [[(x.numpy(), y.numpy()) for x, y in make_dataset(c, subset_pairs(c, "train"), training=True,
                                                             epochs=(0, 2))] for c in (colour, index)]
    assert len(got[0]) == len(got[1]) == 4
    for (xc, yc), (xi, yi) in zip(*got):
        np.testing.assert_array_equal(xc, xi)
        np.testing.assert_array_equal(yc, yi)
    assert all(y[..., 1:].any() for _, y in got[1])


def test_an_index_mask_value_past_num_classes_is_one_line_from_train(train_project, capsys):
    from PIL import Image

    from flexunet.cli.main import main

    cfg = load_config(train_project)
    _index_masks(cfg.train.masks_dir, train_project.parent / "index_masks", "L")
    bad = train_project.parent / "index_masks" / "1002.png"
    index = np.asarray(Image.open(bad)).copy()
    index[0, :2] = 5
    Image.fromarray(index).save(bad)
    text = train_project.read_text().replace('masks_dir = "./data/train/masks"', 'masks_dir = "./index_masks"')
    train_project.write_text(text.replace("[mask]\n", '[mask]\nformat = "index"\n'))
    assert main(["train", str(train_project)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "pixel value 5 is not a class index (2 px out of range)" in err[0]
    assert not (train_project.parent / "models").exists()


def _off_colour_masks(masks_dir, far: bool) -> None:
    """Repaint the masks with colours near the class colours (at most 9.9 away), and with ``far`` a colour
    between green and blue (nearest green; about 180 from every class colour) in a corner of each."""
    from PIL import Image

    rng = np.random.default_rng(5)
    near = {(0, 0, 0): [(4, 4, 4), (0, 7, 0)], (0, 255, 0): [(5, 247, 3), (0, 250, 8)], (0, 0, 255): [(6, 0, 248)]}
    for path in sorted(masks_dir.glob("*.png")):
        rgb = np.asarray(Image.open(path).convert("RGB")).copy()
        for colour, nearby in near.items():
            hit = (rgb == colour).all(-1) & (rng.random(rgb.shape[:2]) < 0.5)
            rgb[hit] = np.array(nearby)[rng.integers(0, len(nearby), int(hit.sum()))]
        if far:
            rgb[:2, :3] = (0, 128, 127)
        Image.fromarray(rgb).save(path)


@pytest.mark.parametrize("settings,far", [(["mask.tolerance=10"], False), (["mask.map_unmapped=True"], True)])
def test_pipeline_masks_are_the_classes_read_mask_gives(train_project, settings, far):
    """Off-colour masks (within [mask] tolerance, or farther with map_unmapped): every pixel of the pipeline's
    masks is read_mask's class; the masks are decoded one way for training and for every other stage."""
    from flexunet.dataset.masks import read_mask
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    cfg = load_config(train_project, settings)
    pairs = subset_pairs(cfg, "train")
    _off_colour_masks(cfg.train.masks_dir, far)
    m = cfg.mask
    expected = np.stack([read_mask(mask, m.rgb_map, m.tolerance, m.map_unmapped).index for _, mask in pairs])
    got = np.concatenate([y.numpy() for _, y in make_dataset(cfg, pairs, training=False)]).argmax(-1)
    np.testing.assert_array_equal(got, expected)
    assert (expected > 0).any()
    if far:
        assert (got[:, :2, :3] == 1).all()                  # mapped to the nearest class colour, green


def test_pipeline_refuses_a_mask_colour_beyond_tolerance_as_read_mask_does(train_project):
    from flexunet.preprocessing.pipeline import make_dataset, subset_pairs

    cfg = load_config(train_project, ["mask.tolerance=10"])
    pairs = subset_pairs(cfg, "train")
    _off_colour_masks(cfg.train.masks_dir, far=True)
    with pytest.raises(tf.errors.OpError, match=rf"{pairs[0][1].name}: 6 pixel\(s\) in 1 colour\(s\) not in rgb_map"):
        next(iter(make_dataset(cfg, pairs, training=False)))
