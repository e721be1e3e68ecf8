"""flexunet.dataset.paste: one lesion copied to another place of like tissue in the same slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from flexunet.dataset import transforms as A
from flexunet.dataset.paste import paste_lesion

from conftest import make_cfg


def _slice(tissue: tuple[int, int] = (110, 110)) -> tuple[np.ndarray, np.ndarray]:
    """A 64-px head: tissue of grey tissue[0] (left) / tissue[1] (right) in a disc inside a white skull ring,
    a bright 4-px-radius lesion of class 2 in its upper left."""
    yy, xx = np.mgrid[:64, :64]
    r2 = (yy - 32) ** 2 + (xx - 32) ** 2
    image = np.zeros((64, 64, 3), np.uint8)
    image[r2 < 30 ** 2] = 255
    image[r2 < 27 ** 2] = tissue[0]
    image[(r2 < 27 ** 2) & (xx >= 32)] = tissue[1]
    lesion = (yy - 22) ** 2 + (xx - 20) ** 2 < 4 ** 2
    image[lesion] = 200
    mask = np.zeros((64, 64), np.uint8)
    mask[lesion] = 2
    return image, mask


def test_the_lesion_is_copied_whole_into_tissue_and_the_inputs_are_kept() -> None:
    image, mask = _slice()
    before = image.copy(), mask.copy()
    for seed in range(6):
        out_image, out_mask = paste_lesion(image, mask, np.random.default_rng(seed))
        labels, count = ndimage.label(out_mask == 2)
        assert count == 2 and (labels > 0).sum() == 2 * (mask == 2).sum()     # the original and its copy
        copy = (out_mask == 2) & (mask == 0)
        assert (out_image[copy] == 200).all() and (out_image[mask == 2] == 200).all()
        changed = (out_image != image).any(-1)
        near_copy = ndimage.binary_dilation(copy, iterations=2)
        assert changed.any() and not (changed & ~near_copy).any()             # nothing else is touched
        assert not (near_copy & (image[..., 0] == 255)).any()                  # never on the skull
        assert out_image.dtype == image.dtype and out_mask.dtype == mask.dtype
    assert np.array_equal(image, before[0]) and np.array_equal(mask, before[1])


def test_the_copy_is_shifted_to_its_new_surroundings_and_never_lands_in_unlike_tissue() -> None:
    image, mask = _slice(tissue=(110, 118))        # the right half 8 grey levels brighter: within the tolerance
    shifted = set()
    for seed in range(12):
        out_image, out_mask = paste_lesion(image, mask, np.random.default_rng(seed))
        copy = (out_mask == 2) & (mask == 0)
        ring = ndimage.binary_dilation(copy, iterations=2) & ~copy
        values = set(np.unique(out_image[copy][:, 0]).tolist())
        assert values == {round(200 + image[ring][:, 0].mean() - 110)}         # the lesion's grey + the shift
        shifted |= values
    assert {200, 208} <= shifted                                                # left and right half
    image, mask = _slice(tissue=(110, 150))        # 40 levels brighter: no place there fits
    for seed in range(12):
        out_mask = paste_lesion(image, mask, np.random.default_rng(seed))[1]
        assert not ((out_mask == 2) & (mask == 0))[:, 33:].any()


def test_slices_without_a_lesion_or_a_place_come_back_unchanged() -> None:
    image, mask = _slice()
    empty = np.zeros_like(mask)
    assert paste_lesion(image, empty, np.random.default_rng(0))[1] is empty
    wide = np.zeros_like(mask)
    wide[10:40, 10:40] = 1                          # wider than a quarter of the side: not copied
    assert paste_lesion(image, wide, np.random.default_rng(0))[0] is image
    full = np.full((16, 16, 3), 110, np.uint8)
    small = np.zeros((16, 16), np.uint8)
    small[5:11, 5:11] = 1                           # no free place for it and its ring in a 16-px slice
    assert paste_lesion(full, small, np.random.default_rng(0))[0] is full


def test_online_augmentation_pastes_only_when_asked_and_reproducibly(tmp_path) -> None:
    image, mask = _slice()
    still = "[augmentor]\nrotation = False\nhflip = False\nvflip = False\nshrinks = []\n"
    off = make_cfg(tmp_path, extra=still)
    on = make_cfg(tmp_path, extra=still + "lesion_paste = True\n")
    assert not off.augmentor.lesion_paste
    assert all(np.array_equal(A.random_augment(image, mask, off, np.random.default_rng(s))[1], mask)
               for s in range(6))
    outs = [A.random_augment(image, mask, on, np.random.default_rng(s)) for s in range(8)]
    pasted = [ndimage.label(m == 2)[1] == 2 for _, m in outs]
    assert any(pasted) and not all(pasted)          # in about half the draws
    again = A.random_augment(image, mask, on, np.random.default_rng(0))
    assert np.array_equal(again[0], outs[0][0]) and np.array_equal(again[1], outs[0][1])
