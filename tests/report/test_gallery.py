"""flexunet.report.gallery: the gallery shows the slices of the folders the evaluation scored."""

from __future__ import annotations

import shutil

from PIL import Image

from flexunet.config.loader import load_config
from flexunet.report.gallery import evaluated_pairs


def test_the_gallery_pairs_come_from_the_evaluated_folders(synth_project):
    """Same names as [test], other files: the gallery reads the evaluated folder, not [test]."""
    cfg = load_config(synth_project)
    root = synth_project.parent
    other = root / "other"
    shutil.copytree(root / "dataset/D/test", other)
    for path in (other / "images").glob("*.png"):
        Image.open(path).transpose(Image.FLIP_TOP_BOTTOM).save(path)
    shown = evaluated_pairs(cfg, (other / "images", other / "masks"))
    default = evaluated_pairs(cfg, None)
    assert shown.keys() == default.keys()
    assert all(shown[n][0].parent == other / "images" for n in shown)
    assert any(shown[n][0].read_bytes() != default[n][0].read_bytes() for n in shown)
