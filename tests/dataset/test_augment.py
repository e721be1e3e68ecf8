"""flexunet.dataset.augment: offline outputs and their names, reproducibility, the written dataset.

The test pair encodes the mask in the image: image = mask * 80 in every channel, so
after any geometric transform the image must still read as its mask.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from flexunet.dataset import augment as A
from flexunet.config.loader import parse_config
from flexunet.utils.errors import FlexUNetError
from flexunet.utils.io import read_image, save_image
from flexunet.dataset.masks import read_mask, save_rgb_mask
from flexunet.utils.outputs import OWNER_FILE, folder_owners

RGB_MAP = {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}

BASE = """\
[model]
image_width = 64
image_height = 64
num_classes = 3
num_layers = 3

[train]
seed = 137
{train}

[mask]
rgb_map = {{(0,0,0):0, (0,255,0):1, (0,0,255):2}}

"""

# the TEKNOFEST generation: hflip, 3 deformations, 3 distortions, 5 cumulative barrel centres
SEED_OPTIONS = """\
[augmentor]
rotation = False
vflip = False
hflip = True
shrinks = []
deformation = True
distortion = True
barrdistortion = True

[deformation]
alpah = 1300
sigmoids = [8, 9, 10]

[distortion]
gaussian_filter_rsigma = 40
gaussian_filter_sigma = 0.5
distortions = [0.02, 0.03, 0.04]

[barrdistortion]
radius = 0.3
amount = 0.3
centers = [(0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)]
"""


def make_cfg(tmp_path: Path, extra: str = "", train: str = ""):
    return parse_config(BASE.format(train=train) + extra, base_dir=tmp_path)


def pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) image = mask * 80 and an (H, W) mask with a class-1 and a class-2 block."""
    mask = np.zeros((size, size), np.uint8)
    s = size / 64
    mask[int(10 * s):int(34 * s), int(8 * s):int(30 * s)] = 1
    mask[int(36 * s):int(56 * s), int(34 * s):int(58 * s)] = 2
    return np.repeat((mask * 80)[..., None], 3, axis=-1), mask


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- variants and names


def test_variant_names_for_the_seed_options(tmp_path):
    names = [v.name for v in A.variants(make_cfg(tmp_path, SEED_OPTIONS))]
    assert names == [
        "hflipped",
        "deformed_alpha_1300_sigmoid_8", "deformed_alpha_1300_sigmoid_9", "deformed_alpha_1300_sigmoid_10",
        "distorted_0.02_rsigma0.5_sigma40", "distorted_0.03_rsigma0.5_sigma40",
        "distorted_0.04_rsigma0.5_sigma40",
        "barrdistorted_1001_0.3_0.3", "barrdistorted_1002_0.3_0.3", "barrdistorted_1003_0.3_0.3",
        "barrdistorted_1004_0.3_0.3", "barrdistorted_1005_0.3_0.3",
    ]
    v = A.variants(make_cfg(tmp_path, SEED_OPTIONS))[1]
    assert v.filename("10001.png") == "deformed_alpha_1300_sigmoid_8_10001.png" and v.random


def test_variant_names_for_every_option(tmp_path):
    extra = """\
[augmentor]
angles = [90, 22.5]
shrinks = [0.8]
shears = [0.2, -0.1]
sharpening = True
brightening = True
pincdistortion = True

[sharpening]
k = 1.0

[pincdistortion]
radius = 0.3
amount = -0.3
centers = [(0.5, 0.5), (0.3, 0.3)]
"""
    names = [v.name for v in A.variants(make_cfg(tmp_path, extra))]
    assert names == ["hflipped", "vflipped", "rotated_90", "rotated_22.5", "shrinked_0_8", "sheared_0_2",
                     "sheared_-0_1", "pincdistorted_1001_0.3_-0.3", "pincdistorted_1002_0.3_-0.3",
                     "sharpened_1", "brightened_1.2_10"]
    repeated = make_cfg(tmp_path, "[augmentor]\nangles = [90, 90.0]\nshrinks = []\n")
    assert [v.name for v in A.variants(repeated)] == ["hflipped", "vflipped", "rotated_90"]
    defaults = [v.name for v in A.variants(make_cfg(tmp_path))]
    assert defaults == ["hflipped", "vflipped", "rotated_90", "rotated_180", "rotated_270", "shrinked_0_8"]


def test_is_augmented():
    assert A.is_augmented("hflipped_10001.png") and A.is_augmented("barrdistorted_1005_0.3_0.3_10019.png")
    assert A.is_augmented(Path("x/deformed_alpha_1300_sigmoid_8_10003.png"))
    assert not A.is_augmented("10001.png") and not A.is_augmented("rotatedbrain.png")


def test_variant_rng_depends_on_seed_source_and_variant_only():
    draw = lambda *key: A.variant_rng(*key).random()  # noqa: E731
    assert draw(137, "10001", "hflipped") == draw(137, "10001", "hflipped")
    assert len({draw(137, "10001", "a"), draw(138, "10001", "a"), draw(137, "10002", "a"),
                draw(137, "10001", "b")}) == 4


# --------------------------------------------------------------------------- augment_dataset


def make_dataset(root: Path, counts: dict[str, int]) -> Path:
    """<root>/Stroke/<subset>/{images,masks} with small pairs; returns <root>/Stroke."""
    base = root / "Stroke"
    image, mask = pair(32)
    first = {"train": 10001, "valid": 10101, "test": 10201}
    for subset, n in counts.items():
        for k in range(n):
            stem = f"{first[subset] + k}"
            save_image(base / subset / "images" / f"{stem}.png", np.roll(image, k, axis=1))
            save_rgb_mask(base / subset / "masks" / f"{stem}.png", np.roll(mask, k, axis=1), RGB_MAP)
    return base


def dataset_cfg(tmp_path: Path, augmentor: str):
    paths = 'images_dir = "Stroke/train/images"\nmasks_dir = "Stroke/train/masks"'
    extra = "".join(f"[{s}]\nimages_dir = \"Stroke/{s}/images\"\nmasks_dir = \"Stroke/{s}/masks\"\n\n"
                    for s in ("valid", "test"))
    return make_cfg(tmp_path, extra + augmentor, train=paths)


AUGMENTOR = """\
[augmentor]
vflip = False
angles = [90]
shrinks = []
deformation = True

[deformation]
alpha = 100
sigmoids = [4]
"""


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_augment_dataset_writes_variants_and_refuses_a_rerun(tmp_path):
    base = make_dataset(tmp_path, {"train": 2, "valid": 1, "test": 1})
    cfg = dataset_cfg(tmp_path, AUGMENTOR)
    before_valid, before_test = listing(base / "valid" / "images"), listing(base / "test" / "masks")
    summary = A.augment_dataset(cfg, progress=False)
    assert summary["sources"] == 2 and summary["written"] == 6 and summary["subsets"] == {"train": 2}
    assert summary["variants"] == {"hflipped": 2, "rotated_90": 2, "deformed_alpha_100_sigmoid_4": 2}
    assert summary["seconds"] >= 0
    expected = {f"{p}_{s}.png" for p in ("hflipped", "rotated_90", "deformed_alpha_100_sigmoid_4")
                for s in ("10001", "10002")} | {"10001.png", "10002.png"}
    for sub in ("images", "masks"):
        assert {p.name for p in (base / "train" / sub).iterdir()} == expected | {OWNER_FILE}
        assert folder_owners(base / "train" / sub) == {"augment": sorted(expected - {"10001.png", "10002.png"})}
    # written masks are colour PNGs of known classes, aligned with their images
    for name in expected - {"10001.png", "10002.png"}:
        index = read_mask(base / "train" / "masks" / name, RGB_MAP).index
        image = read_image(base / "train" / "images" / name)
        assert (np.rint(image[..., 0] / 80) == index).mean() >= 0.97
    assert listing(base / "valid" / "images") == before_valid and listing(base / "test" / "masks") == before_test

    first = listing(base / "train" / "images")
    with pytest.raises(FlexUNetError, match="already exist.*overwrite"):
        A.augment_dataset(cfg, progress=False)
    again = A.augment_dataset(cfg, overwrite=True, progress=False)
    assert again["sources"] == 2 and again["written"] == 6                # augmented files are not sources
    assert listing(base / "train" / "images") == first                    # same seed: identical files


def test_augment_valid_when_asked_and_test_never(tmp_path):
    base = make_dataset(tmp_path, {"train": 1, "valid": 1, "test": 1})
    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nvflip = False\nshrinks = []\naugment_valid = True\n")
    before_test = listing(base / "test" / "images")
    summary = A.augment_dataset(cfg, progress=False)
    assert summary["subsets"] == {"train": 1, "valid": 1} and summary["written"] == 2
    assert (base / "valid" / "images" / "hflipped_10101.png").is_file()
    assert (base / "valid" / "masks" / "hflipped_10101.png").is_file()
    assert listing(base / "test" / "images") == before_test


def test_split_manifest_names_the_originals(tmp_path):
    base = make_dataset(tmp_path, {"train": 3})
    # the layout flexunet.dataset.split writes
    doc = {"seed": 137, "subsets": {"train": {"count": 2, "files": ["10001.png", "10003.png"]},
                                    "valid": {"count": 0, "files": []}, "test": {"count": 0, "files": []}}}
    (base / "split.json").write_text(json.dumps(doc))
    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nvflip = False\nshrinks = []\n")
    summary = A.augment_dataset(cfg, progress=False)
    assert summary["sources"] == 2
    names = {p.name for p in (base / "train" / "images").iterdir()}
    assert "hflipped_10001.png" in names and "hflipped_10003.png" in names
    assert "hflipped_10002.png" not in names
    (base / "split.json").write_text(json.dumps({"train": ["10002.png"]}))   # a plain list also works
    assert A.augment_dataset(cfg, progress=False)["sources"] == 1

def test_npz_masks_stay_npz(tmp_path):
    base = tmp_path / "Stroke" / "train"
    image, mask = pair(32)
    save_image(base / "images" / "10001.png", image)
    (base / "masks").mkdir(parents=True)
    np.savez(base / "masks" / "10001.npz", mask=mask)
    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nvflip = False\nshrinks = []\n")
    cfg = cfg.replace("mask", mask_file_format=".npz")
    assert A.augment_dataset(cfg, progress=False)["written"] == 1
    assert np.array_equal(read_mask(base / "masks" / "hflipped_10001.npz", RGB_MAP).index, mask[:, ::-1])


def test_a_failed_augment_takes_back_the_files_it_added(tmp_path, monkeypatch):
    import flexunet.dataset.augment
    from conftest import leftovers, make_tiny_dataset, snapshot

    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nshrinks = ()\nhflip = True\nvflip = False\n")
    make_tiny_dataset(tmp_path / "Stroke" / "train", n=3)
    before = snapshot(tmp_path / "Stroke")
    calls = []

    def boom(path, image, format="PNG"):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("crash on the second image")
        real(path, image, format)

    real = flexunet.dataset.augment.save_image
    monkeypatch.setattr(flexunet.dataset.augment, "save_image", boom)
    with pytest.raises(RuntimeError):
        A.augment_dataset(cfg, progress=False)
    assert snapshot(tmp_path / "Stroke") == before and not leftovers(tmp_path)


def test_a_users_file_named_as_an_augmented_copy_is_never_replaced(tmp_path):
    from conftest import make_tiny_dataset, snapshot

    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nshrinks = ()\nhflip = True\nvflip = False\n")
    make_tiny_dataset(tmp_path / "Stroke" / "train", n=2)
    for sub in ("images", "masks"):
        folder = tmp_path / "Stroke" / "train" / sub
        shutil.copy(folder / "1001.png", folder / "hflipped_1000.png")     # the user's, named as a copy
    before = snapshot(tmp_path / "Stroke")
    for overwrite in (False, True):
        with pytest.raises(FlexUNetError, match=r"2 file\(s\) named as augmented copies were not written by "
                                                r"`flexunet augment` \(e.g. hflipped_1000.png\)"):
            A.augment_dataset(cfg, overwrite=overwrite, progress=False)
        assert snapshot(tmp_path / "Stroke") == before


@pytest.mark.parametrize("palette", [None, [0, 0, 0, 200, 10, 10, 10, 10, 200]])
def test_index_masks_are_written_back_in_the_format_read(tmp_path, palette):
    """[mask] format = "index": a grey source gives grey copies, a palette source palette copies (its palette)."""
    from PIL import Image

    from flexunet.dataset.masks import save_mask

    base = tmp_path / "Stroke" / "train"
    image, mask = pair(32)
    save_image(base / "images" / "10001.png", image)
    save_mask(base / "masks" / "10001.png", mask, RGB_MAP, "index", palette)
    cfg = dataset_cfg(tmp_path, "[augmentor]\nrotation = False\nvflip = False\nshrinks = []\nangles = [90]\n")
    cfg = cfg.replace("mask", format="index")
    assert A.augment_dataset(cfg, progress=False)["written"] == 1
    out = base / "masks" / "hflipped_10001.png"
    with Image.open(out) as img:
        assert img.mode == ("P" if palette else "L")
        np.testing.assert_array_equal(np.asarray(img), mask[:, ::-1])
        assert (img.getpalette()[:9] if palette else None) == palette
    np.testing.assert_array_equal(read_mask(out, RGB_MAP, mask_format="index").index, mask[:, ::-1])
