"""The config dialect: the seed loads as written, bad values are refused with file:line."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (RGB_MAP_TEXT, TINY_RUN_CONFIG, line_of, one_error, one_process_error, run_process,
                      config_text)
from flexunet.config.loader import class_metric_names, dump_config, load_config, logged_names, parse_config, reference
from flexunet.config.values import Expected, literal
from flexunet.utils.errors import ConfigError


def test_stroke_config_loads_with_every_value_typed_as_written(stroke_config_path):
    cfg = load_config(stroke_config_path)
    base = stroke_config_path.parent
    m = cfg.model
    assert (m.model, m.generator) == ("TensorFlowFlexUNet", False)
    assert (m.image_width, m.image_height, m.image_channels) == (512, 512, 3)
    assert (m.input_normalize, m.normalization, m.num_classes) == (False, False, 3)
    assert (m.base_filters, m.base_kernels, m.num_layers) == (16, (9, 9), 8)
    assert m.dropout_rate == 0.04 and isinstance(m.dropout_rate, float)
    assert m.dilation == (1, 1)
    assert (m.optimizer, m.learning_rate, m.clipvalue) == ("Adam", 0.00005, 0.4)
    assert m.loss == "categorical_crossentropy"
    assert m.metrics == ("dice_coef_multiclass",)
    assert m.show_summary is False
    assert cfg.dataset.class_name == "ImageCategorizedMaskDataset"
    t = cfg.train
    assert (t.epochs, t.batch_size, t.patience) == (100, 2, 10)
    assert t.metrics == ("dice_coef_multiclass", "val_dice_coef_multiclass")
    assert t.model_dir == base / "models" and t.eval_dir == base / "eval"
    assert t.images_dir == (base / "../../dataset/Stroke/train/images").resolve()
    assert (t.create_backup, t.learning_rate_reducer) == (False, True)
    assert (t.reducer_factor, t.reducer_patience) == (0.4, 4)
    assert (t.epoch_change_infer, t.num_infer_images, t.save_weights_only) == (True, 6, True)
    assert t.epoch_change_infer_dir == base / "epoch_change_infer"
    assert cfg.valid.masks_dir == (base / "../../dataset/Stroke/valid/masks").resolve()
    assert cfg.test.images_dir == (base / "../../dataset/Stroke/test/images").resolve()
    assert cfg.infer.output_dir == base / "mini_test_output"
    assert cfg.image.color_order == "RGB"
    assert (cfg.mask.mask_datatype, cfg.mask.mask_file_format) == ("categorized", ".png")
    assert cfg.mask.rgb_map == {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}
    assert list(cfg.mask.rgb_map) == [(0, 0, 0), (0, 255, 0), (0, 0, 255)]
    assert cfg.warnings == ()


def test_original_layout_and_defaults(write_config, tiny_config_text):
    cfg = load_config(write_config(tiny_config_text))
    # defaults from the original where the file is silent
    assert cfg.model.activation == "relu" and cfg.model.dilation == (1, 1)
    assert cfg.train.reducer_factor == 0.4 and cfg.train.num_infer_images == 6
    assert cfg.augmentor.angles == (90, 180, 270) and cfg.deformation.alpha == 1300.0
    assert cfg.tiledinfer.split_size == 512 and cfg.tiledinfer.overlapping == 64


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    (sub / "c.config").write_text("[model]\nnum_classes=2\n[mask]\nrgb_map={(0,0,0):0,(255,255,255):1}\n"
                                  "[train]\nimages_dir='./data/images/'\nmodel_dir='../models'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "project" / "c.config")
    assert cfg.train.images_dir == sub / "data" / "images"
    assert cfg.train.model_dir == tmp_path / "models"


def test_keys_case_insensitive_comments_and_multiline_values(write_config):
    cfg = load_config(write_config(
        "# hash comment\n[MODEL]\nNum_Classes = 3\n; semicolon comment\n[mask]\nrgb_map = {(0,0,0):0,\n"
        "   (0,255,0):1,\n   (0,0,255):2}\n[train]\nepochs = 7 ; trailing comment\n"))
    assert cfg.model.num_classes == 3 and len(cfg.mask.rgb_map) == 3 and cfg.train.epochs == 7


BAD_VALUES = [
    ("num_layers = 0", "[model] num_layers = 0: expected an integer >= 1"),
    ("num_layers = 'eight'", "[model] num_layers = 'eight': expected an integer >= 1"),
    ("num_layers = 9", "image_height"),  # 64 is not a multiple of 2**8
    ("base_kernels = (4,4)", "[model] base_kernels = (4,4): expected an odd square kernel"),
    ("base_kernels = (3,5)", "odd square kernel"),
    ("dilation = (1,2)", "[model] dilation = (1,2): expected a square dilation"),
    ("dropout_rate = 1.0", "[model] dropout_rate = 1.0: expected a number in [0.0, 1.0)"),
    ("dropout_rate = -0.1", "expected a number in [0.0, 1.0)"),
    ("normalization = 'yes'", "[model] normalization = 'yes': expected True or False"),
    ("optimizer = Adam", 'write strings in quotes, e.g. "Adam"'),
    ("optimizer = 'Adagrad'", "expected one of"),
    ("loss = 'mse'", "[model] loss = 'mse': expected one of"),
    ("image_width = 66", "[model] image_width = 66: expected a multiple of 2**(num_layers-1) = 4"),
    ("learning_rate = 0", "[model] learning_rate = 0: expected a number > 0.0"),
    ("num_classes = 1", "[model] num_classes = 1: expected an integer >= 2"),
    ("num_classes = 4", "[mask] rgb_map"),  # rgb_map has only 3 classes
]


@pytest.mark.parametrize("line,message", BAD_VALUES)
def test_each_rule_rejects_a_bad_value_with_file_and_line(write_config, tiny_config_text, line, message):
    key = line.split("=")[0].strip()
    lines = [ln for ln in tiny_config_text.splitlines() if not ln.startswith(key + " ")]
    lines.insert(1, line)  # line 2, right after [model]
    path = write_config("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    if "[model]" in message and "(default)" not in message:
        assert text.startswith(f"{path}:2 [model] {key} = ")


def test_rgb_map_rules(write_config, tiny_config_text):
    def load_with(rgb: str):
        text = tiny_config_text.replace(f"rgb_map = {RGB_MAP_TEXT}", f"rgb_map = {rgb}")
        return load_config(write_config(text))

    with pytest.raises(ConfigError, match=r"\(0, 0, 0\) appears twice"):
        load_with("{(0,0,0):0, (0,0,0):1, (0,0,255):2}")
    with pytest.raises(ConfigError, match=r"one colour per class index 0..2.*got indices \[0, 1, 1\]"):
        load_with("{(0,0,0):0, (0,255,0):1, (0,0,255):1}")
    with pytest.raises(ConfigError, match=r"got indices \[1, 2, 3\]"):
        load_with("{(0,0,0):1, (0,255,0):2, (0,0,255):3}")
    with pytest.raises(ConfigError, match=r"0..255 colour components"):
        load_with("{(0,0,0):0, (0,256,0):1, (0,0,255):2}")
    with pytest.raises(ConfigError, match=r"\.config:\d+ \[mask\] rgb_map = "):
        load_with("[(0,0,0), (0,255,0)]")


def test_mask_format_reads_the_originals_configs_as_colour_masks_and_needs_no_rgb_map_for_indices(
        write_config, stroke_config_path):
    original = load_config(stroke_config_path)           # written for the original: "auto" is "rgb", as before
    assert original.mask.format == "rgb" and ("mask", "format") not in original.origins
    assert "format = 'rgb'" in dump_config(original)
    index = load_config(write_config("[model]\nnum_classes = 4\n"))
    assert index.mask.format == "index"
    assert index.mask.rgb_map == {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2, (255, 0, 0): 3}   # drawn in these
    chosen = load_config(write_config('[model]\nnum_classes = 2\n[mask]\nformat = "Index"\n'
                                      'rgb_map = {(0,0,0):0, (255,0,255):1}\n'))
    assert chosen.mask.format == "index" and chosen.mask.rgb_map == {(0, 0, 0): 0, (255, 0, 255): 1}
    with pytest.raises(ConfigError) as err:
        load_config(write_config('[model]\nnum_classes = 2\n[mask]\nformat = "rgb"\n'))
    assert "[mask] rgb_map: missing; expected a dict" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r':4 \[mask\] format = "grey": expected one of "auto", "rgb", "index"'):
        load_config(write_config('[model]\nnum_classes = 2\n[mask]\nformat = "grey"\n'))


def test_missing_required_key(write_config):
    with pytest.raises(ConfigError, match=r"\[model\] num_classes: missing; expected an integer >= 2"):
        load_config(write_config("[model]\nbase_filters = 8\n[mask]\nrgb_map={(0,0,0):0,(1,1,1):1}\n"))


def test_code_in_a_value_is_refused_and_never_run(write_config, tiny_config_text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tiny_config_text.replace("[train]", "[train]\nmodel_dir = __import__('os').system('touch PWNED')")
    with pytest.raises(ConfigError, match=r"\[train\] model_dir = __import__.*expressions and calls are never run"):
        load_config(write_config(text))
    assert not (tmp_path / "PWNED").exists()
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("text,needle", [
    ("[model\nnum_classes=3\n", ":1: expected a section header"),
    ("num_classes = 3\n", ":1: 'num_classes = 3' comes before any [section]"),
    ("[model]\njust some words\n", ":2: expected 'key = value'"),
    ("[model]\nnum_classes = 3\nnum_classes = 3\n", ":3 [model] num_classes: key appears twice (first at line 2)"),
    ("[model]\nnum_classes = (3,\n", ":2 [model] num_classes = (3,: expected a Python literal"),
    ("[model]\nnum_classes =\n", "expected a value after '='"),
])
def test_syntax_errors_name_the_line(write_config, text, needle):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(text))
    assert needle in str(err.value)


def test_unknown_keys_and_sections_warn_with_did_you_mean(write_config, tiny_config_text, caplog):
    text = tiny_config_text.replace("[train]", "[train]\nepohcs = 3\nbatchsize = 2\nnum_classes = 3") + "[tarin]\nx = 1\n"
    with caplog.at_level(logging.WARNING, logger="flexunet"):
        cfg = load_config(write_config(text))
    joined = "\n".join(cfg.warnings)
    assert "[train] unknown key 'epohcs' ignored; did you mean 'epochs'?" in joined
    assert "did you mean 'batch_size'?" in joined
    assert "'num_classes' belongs in [model]" in joined
    assert "unknown section [tarin] ignored; did you mean 'train'?" in joined
    assert cfg.train.epochs == 2  # the misspelt key did not apply
    assert "epohcs" in caplog.text


def test_original_misspelt_alias_is_accepted(write_config, tiny_config_text):
    cfg = load_config(write_config(tiny_config_text + "[deformation]\nalpah = 1500\nsigmoid = 9\n"))
    assert cfg.deformation.alpha == 1500.0 and cfg.deformation.sigmoid == 9.0
    assert cfg.warnings == ()


def test_overrides_apply_and_are_checked(write_config, tiny_config_text, tmp_path, monkeypatch):
    path = write_config(tiny_config_text)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ["train.epochs=3", "model.base_filters=8", "train.images_dir=data/imgs",
                             "model.optimizer='AdamW'"])
    assert cfg.train.epochs == 3 and cfg.model.base_filters == 8 and cfg.model.optimizer == "AdamW"
    assert cfg.train.images_dir == tmp_path / "data" / "imgs"
    with pytest.raises(ConfigError, match=r"^--set \[train\] epochs = 0: expected an integer >= 1$"):
        load_config(path, ["train.epochs=0"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["epochs=3"])


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.config")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    binary = tmp_path / "bin.config"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)


def test_require_dir_names_the_key(write_config, tiny_config_text):
    cfg = load_config(write_config(tiny_config_text.replace("[train]", "[train]\nimages_dir = './nowhere'")))
    with pytest.raises(ConfigError, match=r"\.config:\d+ \[train\] images_dir = './nowhere': expected an existing"):
        cfg.require_dir("train", "images_dir")
    with pytest.raises(ConfigError, match=r"\[valid\] images_dir: missing"):
        cfg.require_dir("valid", "images_dir")


def test_dump_round_trips(stroke_config_path, tmp_path):
    cfg = load_config(stroke_config_path)
    again = parse_config(dump_config(cfg), source="dumped", base_dir=tmp_path)
    assert again == cfg


def test_reference_lists_every_section():
    ref = reference()
    for section in ("[model]", "[train]", "[mask]", "[deformation]", "[prepare]", "[split]"):
        assert section in ref
    assert "alpha (alias alpah)" in ref


def test_docs_config_reference_is_current():
    root = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    page = (root / "docs" / "config.md").read_text(encoding="utf-8")
    assert reference() in page, "regenerate docs/config.md's config reference: python scripts/sync_docs.py"


# ------------------------------------------------------------ issue 12: dropout depth, metric names, unused keys


def _load_tiny(write_config, tiny_config_text, *overrides: str):
    return load_config(write_config(tiny_config_text), overrides)


@pytest.mark.parametrize("layers,rate,largest", [(3, 0.5, "0.5"), (6, 0.2, "0.2"), (6, 0.3, "0.2")])
def test_deepest_level_dropout_must_stay_below_one(write_config, tiny_config_text, layers, rate, largest):
    text = tiny_config_text.replace("image_width = 64", "image_width = 256").replace(
        "image_height = 64", "image_height = 256")
    with pytest.raises(ConfigError) as err:
        _load_tiny(write_config, text, f"model.num_layers={layers}", f"model.dropout_rate={rate}")
    message = str(err.value)
    assert "[model] dropout_rate" in message and f"num_layers = {layers}" in message
    assert f"below 1/(num_layers-1) = {largest}" in message and "\n" not in message
    # just below the limit builds
    below = float(largest) * 0.99
    assert _load_tiny(write_config, text, f"model.num_layers={layers}",
                      f"model.dropout_rate={below}").model.dropout_rate == below


def test_monitor_must_be_a_logged_name_with_did_you_mean(write_config, tiny_config_text):
    with pytest.raises(ConfigError) as err:
        _load_tiny(write_config, tiny_config_text, "train.monitor=val_mean_dise")
    message = str(err.value)
    assert message.startswith("--set [train] monitor = 'val_mean_dise': expected names among loss, ")
    assert message.endswith("did you mean 'val_mean_dice'?") and "\n" not in message
    for name in ("val_loss", "loss", "val_mean_iou", "val_dice_class_1", "iou_class_2", "val_dice_coef_multiclass"):
        assert _load_tiny(write_config, tiny_config_text, f"train.monitor={name}").train.monitor == name
    with pytest.raises(ConfigError, match="'learning_rate' is not one"):
        _load_tiny(write_config, tiny_config_text, "train.monitor=learning_rate")


def test_monitor_names_follow_class_names(write_config, tiny_config_text):
    text = tiny_config_text + '\n[dataset]\nclass_names = ["background", "Ischemic Stroke", "hemorrhagic"]\n'
    cfg = _load_tiny(write_config, text, "train.monitor=val_dice_ischemic_stroke")
    assert cfg.train.monitor == "val_dice_ischemic_stroke"
    with pytest.raises(ConfigError, match="did you mean 'val_dice_ischemic_stroke'"):
        _load_tiny(write_config, text, "train.monitor=val_dice_ischemic")


def test_model_metrics_choose_the_extra_metric_and_unknown_names_are_errors(write_config, tiny_config_text):
    from flexunet.model.losses import make_metrics

    def names(cfg):
        return [getattr(m, "name", getattr(m, "__name__", None)) for m in make_metrics(cfg)]

    default = _load_tiny(write_config, tiny_config_text)
    assert names(default)[0] == "dice_coef_multiclass"
    # what the model logs is what the config checks monitor and [train] metrics against
    assert ["loss", *names(default)] == [n for n in logged_names(default) if not n.startswith("val_")]
    off = _load_tiny(write_config, tiny_config_text, "model.metrics=[]", "train.metrics=['mean_dice','val_mean_dice']")
    assert "dice_coef_multiclass" not in names(off)
    assert names(off) == ["dice_class_1", "dice_class_2", "iou_class_1", "iou_class_2", "mean_dice", "mean_iou",
                          "pred_class_1", "pred_class_2"]
    with pytest.raises(ConfigError, match=r"\[model\] metrics = \['dice_coef'\]: .*did you mean "
                                          r"'dice_coef_multiclass'\?"):
        _load_tiny(write_config, tiny_config_text, "model.metrics=['dice_coef']")
    # the default [train] metrics name dice_coef_multiclass: refused when it is no longer logged
    with pytest.raises(ConfigError, match=r"\[train\] metrics = .*'dice_coef_multiclass' is not one \(it is "
                                          r"logged only when \[model\] metrics lists 'dice_coef_multiclass'\)"):
        _load_tiny(write_config, tiny_config_text, "model.metrics=[]")
    with pytest.raises(ConfigError, match=r"\[train\] metrics = .*'val_los' is not one; did you mean 'val_loss'"):
        _load_tiny(write_config, tiny_config_text, "train.metrics=['loss','val_los']")
    assert _load_tiny(write_config, tiny_config_text,
                      "train.metrics=['learning_rate','val_mean_iou']").train.metrics[0] == "learning_rate"


def test_ignored_values_are_warned_about_once_each(write_config, tiny_config_text, caplog):
    with caplog.at_level(logging.WARNING, logger="flexunet.config.loader"):
        _load_tiny(write_config, tiny_config_text)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="flexunet.config.loader"):
        cfg = _load_tiny(write_config, tiny_config_text, "model.final_activation='sigmoid'",
                         "train.shuffle_buffer=64")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("--set [model] final_activation = 'sigmoid': the head is softmax")
    assert messages[1].startswith("--set [train] shuffle_buffer = 64: unused")
    assert cfg.warnings == ()  # not unknown keys: --strict still accepts them
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flexunet.config.loader"):
        _load_tiny(write_config, tiny_config_text, "augmentor.intensity=True", "augmentor.lesion_paste=True",
                   "model.generator=False")
    assert [r.getMessage() for r in caplog.records] == [
        "--set [augmentor] intensity = True: online augmentation only ([model] generator = True); "
        "`flexunet augment` writes no intensity variants",
        "--set [augmentor] lesion_paste = True: online augmentation only ([model] generator = True); "
        "`flexunet augment` writes no lesion paste variants"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flexunet.config.loader"):  # the original's alpha at 128 px
        _load_tiny(write_config, tiny_config_text, "augmentor.deformation=True", "model.generator=True",
                   "model.image_width=128", "model.image_height=128", "deformation.alpha=1300")
        _load_tiny(write_config, tiny_config_text, "augmentor.deformation=True", "model.generator=True",
                   "model.image_width=128", "model.image_height=128", "deformation.alpha=150")
    assert [r.getMessage() for r in caplog.records] == [
        "--set [deformation] alpha = 1300: with sigma 8 it moves pixels by about 26 px (rms) on 128-px images, "
        "21% of the side: lesions lose their shape (the original's 1300 with sigma 8 is 5% of a 512-px slice)"]


# --------------------------------------------------------------------------- the seed's range is numpy's


def test_a_seed_beyond_numpys_range_is_refused_before_anything_is_made(tmp_path):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(TINY_RUN_CONFIG)
    line = one_process_error(run_process("train", str(config), "--set", "train.seed=4294967296", cwd=tmp_path))
    assert line == ("flexunet train: error: --set [train] seed = 4294967296: expected an integer in "
                    "[0, 4294967295]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]   # no model_dir


def test_the_seed_range_ends_where_numpys_does():
    import numpy as np

    assert parse_config(TINY_RUN_CONFIG.replace("seed = 7", f"seed = {2**32 - 1}")).train.seed == 2**32 - 1
    np.random.seed(2**32 - 1)  # the largest seed the config accepts is one numpy takes
    for bad in (2**32, -1):
        with pytest.raises(ConfigError, match=r"\[train\] seed = .*: expected an integer in \[0, 4294967295\]"):
            parse_config(TINY_RUN_CONFIG.replace("seed = 7", f"seed = {bad}"))


# --------------------------------------------------------------------------- class names


@pytest.mark.parametrize("names,why", [
    ('["background", "lesion", "lesion"]', "'lesion' appears twice"),
    ('["background", "lesion", "Lesion"]', "'lesion' and 'Lesion' differ only in case"),
    ('["Background", "background", "lesion"]', "'Background' and 'background' differ only in case"),
    ('["background", "core lesion", "core-lesion"]', "'core lesion' and 'core-lesion' would both be logged as "
                                                     "dice_core_lesion"),
])
def test_class_names_must_differ(tmp_path, capsys, names, why):
    config = tmp_path / "train_eval_infer.config"
    config.write_text(TINY_RUN_CONFIG.replace('class_names = ["background", "bright", "dark"]', f"class_names = {names}"))
    line = one_error(capsys, "train", str(config))
    assert line == (f"flexunet train: error: {config}:{line_of(TINY_RUN_CONFIG, 'class_names')} [dataset] "
                    f"class_names = {names}: expected a different name for each class (case and punctuation "
                    f"aside); {why}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_eval_infer.config"]


def test_distinct_class_names_keep_their_metric_names():
    cfg = parse_config(TINY_RUN_CONFIG.replace('"bright", "dark"', '"Core Lesion", "penumbra-2"'))
    assert class_metric_names(cfg.class_names)[:2] == ["dice_core_lesion", "dice_penumbra_2"]


# --------------------------------------------------------------------------- properties (hypothesis)
# any text, and any --set override, either parses or raises ConfigError (never another exception, never
# anything run); what parses is a whole config: dumped and read again it is the same config.

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASE = Path(tempfile.gettempdir())
VALID = config_text()


def parses_or_config_error(text: str, overrides: tuple[str, ...] = ()):
    """The config ``text`` (with ``overrides``) parses to a whole config, or raises a ConfigError of one line;
    anything else fails the test.  A parsed config is checked: its classes are num_classes colours, and
    dumped (dump_config) and read again it is the same config.  Returns the config, or None."""
    try:
        cfg = parse_config(text, source="prop.config", base_dir=BASE, overrides=overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(("prop.config", "--set")) and "\n" not in message, message
        return None
    assert sorted(cfg.mask.rgb_map.values()) == list(range(cfg.model.num_classes))
    assert len(cfg.class_names) == cfg.model.num_classes
    assert parse_config(dump_config(cfg), source="dumped", base_dir=BASE) == cfg
    return cfg


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
    """VALID with ``[section] key = value`` (in place of the key where VALID's [section] has it)."""
    lines = VALID.splitlines()
    if f"[{section}]" not in lines:
        lines.append(f"[{section}]")
    start = lines.index(f"[{section}]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    body = [ln for ln in lines[start:end] if not ln.startswith(f"{key} =")]
    return "\n".join(lines[:start] + [f"{key} = {value}"] + body + lines[end:]) + "\n"


@SETTINGS
@given(st.sampled_from(["model", "train", "infer", "prepare", "split", "augmentor", "deformation", "tiledinfer"]),
       KEYS.filter(bool), VALUES.filter(lambda v: "\n" not in v and v.strip() == v and v and v[0] not in ";#"))
def test_a_set_override_is_the_value_written_in_the_file(section, key, value):
    """--set section.key=value gives the config that ``key = value`` written into [section] gives, or both fail.
    The command line's two rules: a value that is no Python literal is the string it reads as (a bare path),
    and a relative path is relative to the current folder (here the file's own, BASE)."""
    try:
        literal(value)
        written = value
    except Expected:
        written = repr(value)
    with contextlib.chdir(BASE):
        by_set = parses_or_config_error(VALID, (f"{section}.{key}={value}",))
    in_file = parses_or_config_error(with_value(section, key, written))
    assert by_set == in_file


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


