"""The train_eval_infer.config dialect, parsed safely into frozen, typed settings.

The dialect is the original TensorFlow-FlexUNet's: INI sections, case-insensitive keys,
full-line ``;`` and ``#`` comments, and values written as Python literals::

    [model]
    base_kernels = (9,9)
    rgb_map      = {(0,0,0):0, (0,255,0):1, (0,0,255):2}

Values go through :func:`ast.literal_eval` only; nothing in a config is ever executed.
Every value is checked against the kind its key expects, and a bad one raises a
:class:`~flexunet.errors.ConfigError` naming ``file:line [section] key = value`` and
what was expected.  Unknown keys and sections are warnings with a "did you mean".
Relative paths resolve against the config file's folder (``--set`` paths against the
current directory, as any command-line path).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from flexunet.errors import ConfigError

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- kinds


class _Expected(Exception):
    """Raised by a kind: the value is not what the key expects."""


@dataclass(frozen=True)
class Kind:
    """What a key accepts: a description for messages and a converter."""

    expected: str
    convert: Callable[[Any, Path], Any]

    def __call__(self, value: Any, base: Path) -> Any:
        return self.convert(value, base)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _bounds_text(lo: Any, hi: Any, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def Int(lo: int | None = None, hi: int | None = None) -> Kind:
    expected = "an integer" + _bounds_text(lo, hi)

    def convert(v: Any, base: Path) -> int:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _Expected(expected)
        return v

    return Kind(expected, convert)


def Float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
          hi_open: bool = False) -> Kind:
    expected = "a number" + _bounds_text(lo, hi, lo_open, hi_open)

    def convert(v: Any, base: Path) -> float:
        if not _is_number(v) or v != v:
            raise _Expected(expected)
        v = float(v)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise _Expected(expected)
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise _Expected(expected)
        return v

    return Kind(expected, convert)


def Bool() -> Kind:
    def convert(v: Any, base: Path) -> bool:
        if not isinstance(v, bool):
            raise _Expected("True or False")
        return v

    return Kind("True or False", convert)


def Str(choices: Iterable[str] | None = None, lower: bool = False, keep_case: bool = False) -> Kind:
    """A string; ``lower`` matches choices case-insensitively (``keep_case`` keeps it as written)."""
    options = tuple(choices) if choices is not None else None
    expected = ("one of " + ", ".join(f'"{c}"' for c in options)) if options else "a quoted string"

    def convert(v: Any, base: Path) -> str:
        if not isinstance(v, str):
            raise _Expected(expected)
        key = v.lower() if lower else v
        if options is not None and key not in options:
            raise _Expected(expected)
        return v if keep_case else key

    return Kind(expected, convert)


def PathKind() -> Kind:
    """A path string; relative paths resolve against ``base`` (the config's folder)."""

    def convert(v: Any, base: Path) -> Path:
        if not isinstance(v, str) or not v.strip():
            raise _Expected("a quoted path")
        p = Path(os.path.expanduser(v.strip()))
        return Path(os.path.normpath(p if p.is_absolute() else base / p))

    return Kind("a quoted path", convert)


def Optional(kind: Kind) -> Kind:
    def convert(v: Any, base: Path) -> Any:
        return None if v is None else kind(v, base)

    return Kind(f"None or {kind.expected}", convert)


def Auto(kind: Kind) -> Kind:
    """``kind``, or the string "auto" (the value is then chosen by measurement at run time)."""
    expected = f'"auto" or {kind.expected}'

    def convert(v: Any, base: Path) -> Any:
        if isinstance(v, str) and v.lower() == "auto":
            return "auto"
        try:
            return kind(v, base)
        except _Expected:
            raise _Expected(expected) from None

    return Kind(expected, convert)


def Seq(item: Kind, min_len: int = 0) -> Kind:
    expected = f"a list or tuple of {item.expected.removeprefix('a ').removeprefix('an ')}s"
    if min_len:
        expected += f" (at least {min_len})"

    def convert(v: Any, base: Path) -> tuple:
        if not isinstance(v, (list, tuple)) or len(v) < min_len:
            raise _Expected(expected)
        try:
            return tuple(item(x, base) for x in v)
        except _Expected:
            raise _Expected(expected) from None

    return Kind(expected, convert)


def Pair(item: Kind) -> Kind:
    expected = f"a pair ({item.expected}, {item.expected})"

    def convert(v: Any, base: Path) -> tuple:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise _Expected(expected)
        try:
            return tuple(item(x, base) for x in v)
        except _Expected:
            raise _Expected(expected) from None

    return Kind(expected, convert)


def RgbMap() -> Kind:
    expected = "a dict {(r,g,b): class_index} with 0..255 colour components"

    def convert(v: Any, base: Path) -> dict:
        if not isinstance(v, dict) or not v:
            raise _Expected(expected)
        out: dict[tuple[int, int, int], int] = {}
        for colour, index in v.items():
            if (not isinstance(colour, tuple) or len(colour) != 3
                    or not all(_is_int(c) and 0 <= c <= 255 for c in colour)
                    or not _is_int(index) or index < 0):
                raise _Expected(expected)
            out[colour] = index
        return out

    return Kind(expected, convert)


def ClassWeights() -> Kind:
    return Optional(Seq(Float(lo=0.0), min_len=1))


# --------------------------------------------------------------------------- fields


def opt(default: Any, kind: Kind, doc: str = "", aliases: tuple[str, ...] = ()) -> Any:
    """Declare a config key: its default, its kind, a one-line doc and accepted aliases."""
    return field(default=default, metadata={"kind": kind, "doc": doc, "aliases": aliases})


POS_INT = Int(lo=1)
NONNEG_INT = Int(lo=0)
POS_FLOAT = Float(lo=0.0, lo_open=True)
OPT_PATH = Optional(PathKind())

LOSSES = ("categorical_crossentropy", "dice", "dice_loss", "ce_dice", "bce_dice_loss",
          "focal", "tversky")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


@dataclass(frozen=True)
class ModelSettings:
    model: str = opt("TensorFlowFlexUNet", Str(), "model class name (only TensorFlowFlexUNet)")
    generator: bool = opt(False, Bool(), "True: augment training batches on the fly ([augmentor])")
    image_width: int = opt(512, POS_INT, "network input width in pixels")
    image_height: int = opt(512, POS_INT, "network input height in pixels")
    image_channels: int = opt(3, Int(lo=1, hi=4), "input channels (3 = RGB, 1 = grey)")
    input_normalize: bool = opt(True, Bool(), "scale inputs from 0..255 to 0..1 inside the model")
    normalization: bool = opt(False, Bool(), "BatchNormalization after each convolution")
    num_classes: int = opt(None, Int(lo=2), "classes including background (required)")
    base_filters: int = opt(16, POS_INT, "filters at level 0; level i has base_filters*2**i")
    max_filters: int | None = opt(None, Optional(POS_INT), "cap on filters per level (None: no cap)")
    base_kernels: tuple = opt((3, 3), Pair(POS_INT), "kernel at level 0 (odd, square); -2 per level, floor 3")
    num_layers: int = opt(6, Int(lo=1), "levels including the bridge")
    dropout_rate: float = opt(0.05, Float(lo=0.0, hi=1.0, hi_open=True), "dropout at level i is rate*i")
    dilation: tuple = opt((1, 1), Pair(POS_INT), "dilation at level 0 (square); -1 per level, floor 1")
    activation: str = opt("relu", Str(("relu", "elu", "gelu", "selu", "swish", "silu", "leaky_relu", "tanh")),
                          "activation of the convolutions")
    final_activation: str = opt("softmax", Str(("softmax", "sigmoid")),
                                "head activation: always softmax (num_classes >= 2), as the original; "
                                "\"sigmoid\" is accepted with a warning")
    dropout_seed_fixing: bool = opt(False, Bool(), "seed the dropout layers with [train] seed")
    optimizer: str = opt("adam", Str(OPTIMIZERS, lower=True, keep_case=True), "Adam, AdamW, SGD or RMSprop")
    learning_rate: float = opt(0.0001, POS_FLOAT, "initial learning rate")
    clipvalue: float | None = opt(0.2, Optional(POS_FLOAT), "gradient clipping by value (None: off)")
    loss: str = opt("categorical_crossentropy", Str(LOSSES), "training loss")
    class_weights: tuple | None = opt(None, ClassWeights(), "per-class loss weights (one per class)")
    focal_gamma: float = opt(2.0, Float(lo=0.0), "focal loss gamma")
    tversky_alpha: float = opt(0.3, Float(lo=0.0, hi=1.0), "Tversky weight of false positives")
    tversky_beta: float = opt(0.7, Float(lo=0.0, hi=1.0), "Tversky weight of false negatives")
    metrics: tuple = opt(("dice_coef_multiclass",), Seq(Str()),
                         "extra training metrics: list \"dice_coef_multiclass\" to log it; per-class "
                         "dice_/iou_<class>, mean_dice and mean_iou are always logged")
    show_summary: bool = opt(False, Bool(), "print the layer summary when building")


@dataclass(frozen=True)
class DatasetSettings:
    class_name: str = opt("ImageCategorizedMaskDataset", Str(), "dataset class of the original (informative)")
    class_names: tuple | None = opt(None, Optional(Seq(Str())), "a name per class, background first")


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = opt(100, POS_INT, "maximum epochs")
    batch_size: int = opt(4, POS_INT, "global batch size")
    patience: int = opt(10, NONNEG_INT, "EarlyStopping patience in epochs (0: off)")
    metrics: tuple = opt(("dice_coef_multiclass", "val_dice_coef_multiclass"), Seq(Str()),
                         "the two logged values written to train_metrics.csv")
    model_dir: Path = opt(Path("models"), PathKind(), "where models and checkpoints go")
    eval_dir: Path = opt(Path("eval"), PathKind(), "where training curves and CSVs go")
    images_dir: Path | None = opt(None, OPT_PATH, "training images folder")
    masks_dir: Path | None = opt(None, OPT_PATH, "training masks folder")
    create_backup: bool = opt(False, Bool(), "keep a dated copy of a previous model_dir (original's option)")
    learning_rate_reducer: bool = opt(False, Bool(), "ReduceLROnPlateau on the monitored value")
    reducer_factor: float = opt(0.4, Float(lo=0.0, hi=1.0, lo_open=True, hi_open=True), "LR multiplier")
    reducer_patience: int = opt(4, NONNEG_INT, "epochs without improvement before the LR is reduced")
    epoch_change_infer: bool = opt(False, Bool(), "predict a few [infer] images after every epoch")
    epoch_change_infer_dir: Path = opt(Path("epoch_change_infer"), PathKind(), "where those go")
    num_infer_images: int = opt(6, POS_INT, "how many images the epoch-change inferencer predicts")
    save_weights_only: bool = opt(False, Bool(), "best model as weights only (original's option)")
    steps_per_epoch: int | None = opt(None, Optional(POS_INT), "steps per epoch (None: whole set)")
    validation_steps: int | None = opt(None, Optional(POS_INT), "validation steps (None: whole set)")
    seed: int = opt(137, NONNEG_INT, "one seed for split, augmentation, shuffling and initialisation")
    monitor: str = opt("val_loss", Str(), "logged value the checkpoint, reducer and early stopping watch "
                                           "(loss, a metric, or their val_ forms)")
    deterministic: bool = opt(False, Bool(), "op determinism: bit-identical runs on CPU (slower)")
    jit_compile: bool | str = opt("auto", Auto(Bool()), "XLA compilation of the train step; \"auto\": the "
                                  "faster of on and off, timed on the model at start-up (cached per machine)")
    mixed_precision: str | None = opt(None, Auto(Optional(Str(("float16", "bfloat16"), lower=True))),
                                      "mixed precision policy (None: float32); \"auto\": bfloat16 (CPUs with "
                                      "AVX512_BF16 or AMX) or float16 (GPUs) where faster and as accurate as "
                                      "float32 on a probe (cached per machine)")
    strategy: str = opt("default", Str(("default", "mirrored", "multiworker"), lower=True),
                        "tf.distribute strategy")
    cache: bool = opt(False, Bool(), "cache decoded training data in memory")
    shuffle_buffer: int = opt(256, POS_INT, "unused (accepted with a warning): every epoch is a full "
                                            "seeded permutation of the file list")
    tensorboard: bool = opt(True, Bool(), "write TensorBoard logs under model_dir/logs")
    foreground_oversampling: float = opt(0.0, Float(lo=0.0, hi=1.0),
                                         "share of each batch drawn from slices with a foreground class "
                                         "(classes in turn, rarest first), per (seed, epoch); 0: uniform order")
    lr_schedule: str = opt("constant", Str(("constant", "poly", "cosine"), lower=True),
                           "learning rate per epoch after warm-up: constant, poly (power 0.9) or cosine decay "
                           "to ~0 at [train] epochs; learning_rate_reducer's cuts multiply it")
    warmup_epochs: int = opt(0, NONNEG_INT, "epochs of linear learning-rate warm-up from 0")
    on_collapse: str = opt("stop", Str(("warn", "stop"), lower=True),
                           "every foreground class of the training masks predicted on under 5% of its "
                           "pixels (training and validation) for collapse_patience epochs while the loss "
                           "falls by under 2% an epoch: warn, or stop the run (its files kept); one such "
                           "class while others learn: a warning")
    collapse_patience: int = opt(3, POS_INT, "epochs in a row a present class must go (almost) unpredicted")


@dataclass(frozen=True)
class SubsetSettings:
    images_dir: Path | None = opt(None, OPT_PATH, "images folder")
    masks_dir: Path | None = opt(None, OPT_PATH, "masks folder")


@dataclass(frozen=True)
class InferSettings:
    images_dir: Path | None = opt(None, OPT_PATH, "images to predict (PNG, JPG, TIF, BMP, DICOM)")
    output_dir: Path | None = opt(None, OPT_PATH, "where predicted masks go")
    batch_size: int = opt(4, POS_INT, "images per inference batch")
    overlays: bool = opt(False, Bool(), "also write mask-over-image overlays")
    overlay_alpha: float = opt(0.45, Float(lo=0.0, hi=1.0), "overlay opacity")
    class_index_masks: bool = opt(False, Bool(), "also write class-index PNGs (pixel = class)")
    flip_tta: bool = opt(False, Bool(), "average predictions over horizontal/vertical flips")
    min_component_size: int = opt(0, NONNEG_INT, "remove predicted components smaller than this")
    volumes: bool = opt(True, Bool(), "DICOM inputs: write volumes.csv (mL per patient, series and class); "
                        "missing or uneven slice spacing: a warning and no volumes (set True: an error)")
    uncertainty: bool = opt(False, Bool(), "write per-pixel uncertainty maps (entropy over flip TTA) and "
                            "uncertain_slices.csv")


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = opt(4, POS_INT, "images per evaluation batch")
    eval_dir: Path | None = opt(None, OPT_PATH, "where the evaluation report goes (default: [train] eval_dir)")
    evaluation_csv: Path = opt(Path("evaluation.csv"), PathKind(), "the original's two-line evaluation file")


@dataclass(frozen=True)
class ImageSettings:
    color_order: str = opt("RGB", Str(("RGB", "BGR")), "channel order of the images")


@dataclass(frozen=True)
class MaskSettings:
    mask_datatype: str = opt("categorized", Str(("categorized",)), "masks hold one colour per class")
    mask_file_format: str = opt(".png", Str((".png", ".npz")), "mask files: colour PNG or .npz (key 'mask')")
    rgb_map: dict = opt(None, RgbMap(), "colour of each class, {(r,g,b): index} (required)")
    tolerance: float = opt(0.0, Float(lo=0.0), "max RGB distance at which a colour counts as a class colour")
    map_unmapped: bool = opt(False, Bool(), "map colours beyond tolerance to the nearest class (else error)")
    binarize: bool = opt(False, Bool(), "original's option (unused)")
    threshold: int = opt(128, Int(lo=0, hi=255), "original's option (unused)")
    blur: bool = opt(False, Bool(), "original's option (unused)")
    blur_size: tuple = opt((3, 3), Pair(POS_INT), "original's option (unused)")


@dataclass(frozen=True)
class TiledInferSettings:
    images_dir: Path | None = opt(None, OPT_PATH, "large images to predict tile by tile")
    output_dir: Path | None = opt(None, OPT_PATH, "where their masks go")
    split_size: int = opt(512, POS_INT, "tile size in pixels")
    overlapping: int = opt(64, NONNEG_INT, "overlap between tiles in pixels")


@dataclass(frozen=True)
class GeneratorSettings:
    augmentation: bool = opt(True, Bool(), "augment in generator mode")


@dataclass(frozen=True)
class AugmentorSettings:
    rotation: bool = opt(True, Bool(), "rotate by each of angles")
    angles: tuple = opt((90, 180, 270), Seq(Float()), "rotation angles in degrees")
    shrinks: tuple = opt((0.8,), Seq(POS_FLOAT), "shrink factors")
    shears: tuple = opt((), Seq(Float()), "shear factors")
    hflip: bool = opt(True, Bool(), "horizontal flip")
    vflip: bool = opt(True, Bool(), "vertical flip")
    deformation: bool = opt(False, Bool(), "elastic deformation ([deformation])")
    distortion: bool = opt(False, Bool(), "grid distortion ([distortion])")
    sharpening: bool = opt(False, Bool(), "sharpening ([sharpening]); images only")
    brightening: bool = opt(False, Bool(), "brightening ([brightening]); images only")
    barrdistortion: bool = opt(False, Bool(), "barrel distortion ([barrdistortion])")
    pincdistortion: bool = opt(False, Bool(), "pincushion distortion ([pincdistortion])")
    augment_valid: bool = opt(False, Bool(), "offline augmentation of valid too (test never)")


@dataclass(frozen=True)
class DeformationSettings:
    alpha: float = opt(1300.0, Float(lo=0.0), "elastic displacement scale", aliases=("alpah",))
    sigmoid: float = opt(8.0, POS_FLOAT, "elastic smoothing sigma")
    sigmoids: tuple = opt((8.0,), Seq(POS_FLOAT), "smoothing sigmas, one output each")


@dataclass(frozen=True)
class DistortionSettings:
    gaussian_filter_rsigma: float = opt(40.0, POS_FLOAT, "smoothing of the distortion field")
    gaussian_filter_sigma: float = opt(0.5, POS_FLOAT, "image smoothing sigma")
    distortions: tuple = opt((0.02,), Seq(POS_FLOAT), "distortion strengths, one output each")


@dataclass(frozen=True)
class SharpeningSettings:
    k: float = opt(1.0, POS_FLOAT, "unsharp-mask strength")


@dataclass(frozen=True)
class BrighteningSettings:
    alpha: float = opt(1.2, POS_FLOAT, "contrast gain")
    beta: float = opt(10.0, Float(), "brightness offset")


@dataclass(frozen=True)
class BarrDistortionSettings:
    radius: float = opt(0.5, POS_FLOAT, "relative radius")
    amount: float = opt(0.5, Float(), "distortion amount (> 0 barrel)")
    centers: tuple = opt(((0.5, 0.5),), Seq(Pair(Float(lo=0.0, hi=1.0))), "relative centres")


@dataclass(frozen=True)
class PincDistortionSettings:
    radius: float = opt(0.5, POS_FLOAT, "relative radius")
    amount: float = opt(-0.5, Float(), "distortion amount (< 0 pincushion)")
    centers: tuple = opt(((0.5, 0.5),), Seq(Pair(Float(lo=0.0, hi=1.0))), "relative centres")


@dataclass(frozen=True)
class PrepareSettings:
    raw_dir: Path | None = opt(None, OPT_PATH, "folder holding PNG/ MASKS/ DICOM/ (or a parent of it)")
    source: str = opt("png", Str(("png", "dicom"), lower=True), "slices from PNG/ or from DICOM/")
    output_dir: Path | None = opt(None, OPT_PATH, "master dataset folder (images/ masks/ manifest)")
    size: int = opt(512, POS_INT, "output size (square) in pixels")
    image_resize: str = opt("area", Str(("area", "bilinear"), lower=True), "image resampling")
    window_center: float = opt(40.0, Float(), "DICOM window centre in HU (brain window)")
    window_width: float = opt(80.0, POS_FLOAT, "DICOM window width in HU")
    three_windows: bool = opt(False, Bool(), "DICOM to RGB = brain / subdural / bone windows")
    strict_pairs: bool = opt(False, Bool(), "an image without mask (or the reverse) is an error")
    workers: int = opt(0, NONNEG_INT, "processes (0: one per core)")


@dataclass(frozen=True)
class SplitSettings:
    master_dir: Path | None = opt(None, OPT_PATH, "master dataset from prepare (default: [prepare] output_dir)")
    output_dir: Path | None = opt(None, OPT_PATH, "dataset root; subsets go to <output_dir>/<name>/")
    name: str = opt("Stroke", Str(), "dataset name (the folder the original's configs point at)")
    ratios: tuple = opt((0.80, 0.15, 0.05), Seq(Float(lo=0.0, hi=1.0), min_len=3),
                        "train / valid / test fractions")
    group_by: str = opt("patient", Str(("patient", "slice"), lower=True),
                        "keep each patient (when known) or each source slice in one subset")
    stratify: bool = opt(True, Bool(), "balance the classes present across subsets")
    mini_test_count: int = opt(6, NONNEG_INT, "test images copied to mini_test/ for quick inference")


@dataclass(frozen=True)
class ReportSettings:
    output_dir: Path = opt(Path("report"), PathKind(), "where report.html and its figures go")
    dataset_dir: Path | None = opt(None, OPT_PATH, "split dataset for the statistics (default: [split] output_dir/name)")
    gallery_per_rank: int = opt(2, NONNEG_INT, "test slices shown for each of best, median and worst Dice")


SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "dataset": DatasetSettings,
    "train": TrainSettings,
    "valid": SubsetSettings,
    "test": SubsetSettings,
    "infer": InferSettings,
    "eval": EvalSettings,
    "image": ImageSettings,
    "mask": MaskSettings,
    "tiledinfer": TiledInferSettings,
    "generator": GeneratorSettings,
    "augmentor": AugmentorSettings,
    "deformation": DeformationSettings,
    "distortion": DistortionSettings,
    "sharpening": SharpeningSettings,
    "brightening": BrighteningSettings,
    "barrdistortion": BarrDistortionSettings,
    "pincdistortion": PincDistortionSettings,
    "prepare": PrepareSettings,
    "split": SplitSettings,
    "report": ReportSettings,
}

REQUIRED: tuple[tuple[str, str], ...] = (("model", "num_classes"), ("mask", "rgb_map"))


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for messages."""

    source: str          # the config file as given, or "--set"
    line: int | None
    raw: str

    def where(self, section: str, key: str) -> str:
        loc = f"{self.source}:{self.line}" if self.line is not None else self.source
        raw = " ".join(self.raw.splitlines())  # a multi-line value, on the message's one line
        return f"{loc} [{section}] {key} = {raw}"


@dataclass(frozen=True)
class Config:
    """A whole config: one frozen settings object per section."""

    path: Path | None = field(compare=False)
    model: ModelSettings
    dataset: DatasetSettings
    train: TrainSettings
    valid: SubsetSettings
    test: SubsetSettings
    infer: InferSettings
    eval: EvalSettings
    image: ImageSettings
    mask: MaskSettings
    tiledinfer: TiledInferSettings
    generator: GeneratorSettings
    augmentor: AugmentorSettings
    deformation: DeformationSettings
    distortion: DistortionSettings
    sharpening: SharpeningSettings
    brightening: BrighteningSettings
    barrdistortion: BarrDistortionSettings
    pincdistortion: PincDistortionSettings
    prepare: PrepareSettings
    split: SplitSettings
    report: ReportSettings
    origins: Mapping[tuple[str, str], Origin] = field(default_factory=dict, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False, repr=False)
    source: str = field(default="<config>", compare=False, repr=False)

    # -- messages -----------------------------------------------------------------
    def where(self, section: str, key: str) -> str:
        origin = self.origins.get((section, key))
        if origin is not None:
            return origin.where(section, key)
        value = getattr(getattr(self, section), key)
        return f"{self.source} [{section}] {key} = {_format_value(value)} (default)"

    def error(self, section: str, key: str, expected: str) -> ConfigError:
        """A ConfigError about one key, in the file:line [section] key = value form."""
        return ConfigError(f"{self.where(section, key)}: expected {expected}")

    def require(self, section: str, key: str, expected: str = "a value") -> Any:
        """The value of a key a command needs; a clear error if it is not set."""
        value = getattr(getattr(self, section), key)
        if value is None:
            raise ConfigError(f"{self.source} [{section}] {key}: missing; expected {expected}")
        return value

    def require_dir(self, section: str, key: str, what: str = "folder") -> Path:
        """An existing folder a command reads from."""
        path = self.require(section, key, f"the path of an existing {what}")
        if not Path(path).is_dir():
            raise self.error(section, key, f"an existing {what} ({path} does not exist)")
        return Path(path)

    # -- derived --------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.dataset.class_names
        if names is not None:
            return tuple(names)
        return tuple("background" if i == 0 else f"class_{i}" for i in range(self.model.num_classes))

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    def replace(self, section: str, **changes: Any) -> "Config":
        """A copy with some values of one section changed (already typed)."""
        new_section = dataclasses.replace(getattr(self, section), **changes)
        cfg = dataclasses.replace(self, **{section: new_section})
        _validate(cfg)
        return cfg


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Raw:
    text: str
    line: int | None
    source: str
    base: Path


_DELIM = re.compile(r"[=:]")


def _read_ini(text: str, source: str, base: Path) -> tuple[dict[str, dict[str, _Raw]], dict[str, int]]:
    """Split INI text into sections of raw values, keeping line numbers."""
    sections: dict[str, dict[str, _Raw]] = {}
    section_lines: dict[str, int] = {}
    current: str | None = None
    key: str | None = None
    key_line = 0
    chunks: list[str] = []

    def flush() -> None:
        nonlocal key
        if key is not None and current is not None:
            sections[current][key] = _Raw("\n".join(chunks).strip(), key_line, source, base)
        key = None

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            flush()
            continue
        if stripped[0] in ";#":
            continue
        if line[0].isspace() and key is not None:
            chunks.append(stripped)  # continuation of a multi-line value
            continue
        flush()
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise ConfigError(f"{source}:{lineno}: expected a section header like [model], got {stripped!r}")
            current = stripped[1:-1].strip().lower()
            if current in sections:
                raise ConfigError(f"{source}:{lineno} [{current}]: section appears twice "
                                  f"(first at line {section_lines[current]}); expected each section once")
            sections[current] = {}
            section_lines[current] = lineno
            continue
        match = _DELIM.search(stripped)
        if match is None or not stripped[:match.start()].strip():
            raise ConfigError(f"{source}:{lineno}: expected 'key = value', a [section] header "
                              f"or a ; comment, got {stripped!r}")
        if current is None:
            raise ConfigError(f"{source}:{lineno}: '{stripped}' comes before any [section]; "
                              f"expected a section header such as [model] first")
        key = stripped[:match.start()].strip().lower()
        if key in sections[current]:
            raise ConfigError(f"{source}:{lineno} [{current}] {key}: key appears twice "
                              f"(first at line {sections[current][key].line}); expected each key once")
        key_line = lineno
        chunks = [stripped[match.end():].strip()]
    flush()
    return sections, section_lines


_INLINE_COMMENT = re.compile(r"\s+[;#][^'\"]*$")
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError)


def _literal(raw: str) -> Any:
    """A Python literal, or _Expected; never evaluates anything else."""
    for text in (raw, _INLINE_COMMENT.sub("", raw)):
        try:
            tree = ast.parse(text, mode="eval")
            value = ast.literal_eval(tree)
        except _LITERAL_ERRORS:
            continue
        _check_dict_keys(tree)
        return value
    if raw.isidentifier() and raw not in ("True", "False", "None"):
        raise _Expected(f'a Python literal; write strings in quotes, e.g. "{raw}"')
    if not raw:
        raise _Expected("a value after '='")
    raise _Expected("a Python literal (quoted string, number, True/False, None, tuple, list or dict); "
                    "expressions and calls are never run")


def _check_dict_keys(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            seen = set()
            for k in node.keys:
                if k is None:
                    continue
                key = ast.literal_eval(k)
                try:
                    if key in seen:
                        raise _Expected(f"each dict key once; {key!r} appears twice")
                    seen.add(key)
                except TypeError:  # unhashable key: literal_eval already refused it
                    pass


def _format_value(value: Any) -> str:
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _section_keys(cls: type) -> dict[str, str]:
    """Accepted key -> field name, aliases included."""
    keys: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        keys[f.name] = f.name
        for alias in f.metadata.get("aliases", ()):
            keys[alias] = f.name
    return keys


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _build(raw: dict[str, dict[str, _Raw]], source: str, base: Path) -> tuple[dict[str, Any], dict, list[str]]:
    warnings: list[str] = []
    origins: dict[tuple[str, str], Origin] = {}
    built: dict[str, Any] = {}
    for name in raw:
        if name not in SECTIONS:
            warnings.append(f"{source}: unknown section [{name}] ignored{_did_you_mean(name, SECTIONS)}")
    for name, cls in SECTIONS.items():
        accepted = _section_keys(cls)
        kinds = {f.name: f.metadata["kind"] for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, item in raw.get(name, {}).items():
            if key not in accepted:
                others = [s for s, c in SECTIONS.items() if key in _section_keys(c)]
                hint = "" if others else _did_you_mean(key, accepted)
                if not hint:
                    hint = f"; '{key}' belongs in [{others[0]}]" if others else ""
                loc = f"{item.source}:{item.line}" if item.line is not None else item.source
                warnings.append(f"{loc} [{name}] unknown key '{key}' ignored{hint}")
                continue
            field_name = accepted[key]
            origin = Origin(item.source, item.line, item.text)
            origins[(name, field_name)] = origin
            try:
                values[field_name] = kinds[field_name](_literal(item.text), item.base)
            except _Expected as exc:
                raise ConfigError(f"{origin.where(name, key)}: expected {exc}") from None
        for f in dataclasses.fields(cls):  # relative default paths: against the config's folder too
            if f.name not in values and isinstance(f.default, Path):
                values[f.name] = kinds[f.name](str(f.default), base)
        built[name] = cls(**values)
    return built, origins, warnings


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None,
                 overrides: Iterable[str] = (), path: Path | None = None) -> Config:
    """Parse config text (and ``section.key=value`` overrides) into a validated Config."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    raw, _ = _read_ini(text, source, base)
    for item in overrides:
        section, key, value = _split_override(item)
        raw.setdefault(section, {})[key] = _Raw(value, None, "--set", Path.cwd())
    built, origins, warnings = _build(raw, source, base)
    cfg = Config(path=path, origins=origins, warnings=tuple(warnings), source=source, **built)
    for section, key in REQUIRED:
        if getattr(getattr(cfg, section), key) is None:
            cfg.require(section, key, _REQUIRED_HINT[(section, key)])
    _validate(cfg)
    for w in warnings + _notices(cfg):
        log.warning(w)
    return cfg


_REQUIRED_HINT = {
    ("model", "num_classes"): "an integer >= 2 (classes including background)",
    ("mask", "rgb_map"): "a dict {(r,g,b): class_index} such as {(0,0,0):0, (0,255,0):1, (0,0,255):2}",
}


def _split_override(item: str) -> tuple[str, str, str]:
    name, sep, value = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        shown = " ".join(item.splitlines())
        raise ConfigError(f"--set {shown}: expected section.key=value, e.g. --set train.epochs=3")
    section, key, value = section.strip().lower(), key.strip().lower(), value.strip()
    try:
        _literal(value)
    except _Expected:
        value = repr(value)  # a bare word or path on the command line is a string
    return section, key, value


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read and validate a config file; relative paths resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; expected a train_eval_infer.config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); expected an INI config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); expected a readable config file") from None
    return parse_config(text, source=str(path), base_dir=p.resolve().parent, overrides=overrides,
                        path=p.resolve())


# --------------------------------------------------------------------------- logged names

# metrics [model] metrics may switch on; the honest per-class ones are always logged
EXTRA_METRICS = ("dice_coef_multiclass",)


def metric_suffix(name: str) -> str:
    """A class name as it appears in metric names: lower case, [a-z0-9_] only."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_") or "class"


def class_metric_names(class_names: Iterable[str]) -> list[str]:
    """The always-logged metrics: Dice and IoU per foreground class, their foreground means, then the
    predicted-pixel share per foreground class (the collapse guard reads it)."""
    fg = [metric_suffix(n) for n in list(class_names)[1:]]
    return ([f"dice_{s}" for s in fg] + [f"iou_{s}" for s in fg] + ["mean_dice", "mean_iou"]
            + [f"pred_{s}" for s in fg])


def logged_names(cfg: Config) -> list[str]:
    """What training logs each epoch: loss, the chosen extras, the per-class metrics, and their val_ forms."""
    chosen = [name for name in EXTRA_METRICS if name in cfg.model.metrics]
    train = ["loss", *chosen, *class_metric_names(cfg.class_names)]
    return train + [f"val_{name}" for name in train]


# --------------------------------------------------------------------------- validation


def _validate(cfg: Config) -> None:
    m = cfg.model
    levels = 2 ** (m.num_layers - 1)
    for key in ("image_height", "image_width"):
        if getattr(m, key) % levels:
            raise cfg.error("model", key, f"a multiple of 2**(num_layers-1) = {levels} "
                                          f"for num_layers = {m.num_layers}")
    k = m.base_kernels
    if k[0] != k[1] or k[0] % 2 == 0:
        raise cfg.error("model", "base_kernels", "an odd square kernel such as (3,3) or (9,9)")
    if m.dilation[0] != m.dilation[1]:
        raise cfg.error("model", "dilation", "a square dilation such as (1,1) or (2,2)")
    deepest = m.dropout_rate * (m.num_layers - 1)
    if deepest >= 1:
        raise cfg.error("model", "dropout_rate", f"a rate below 1/(num_layers-1) = {1 / (m.num_layers - 1):.4g} "
                                                 f"for num_layers = {m.num_layers}: level i drops dropout_rate*i, "
                                                 f"so the deepest level would drop {deepest:.3g}")
    if m.max_filters is not None and m.max_filters < m.base_filters:
        raise cfg.error("model", "max_filters", f"None or >= base_filters ({m.base_filters})")
    rgb_map = cfg.mask.rgb_map
    indices = sorted(rgb_map.values())
    if indices != list(range(m.num_classes)):
        raise cfg.error("mask", "rgb_map", f"one colour per class index 0..{m.num_classes - 1} "
                                           f"(num_classes = {m.num_classes}), got indices {indices}")
    if m.class_weights is not None and len(m.class_weights) != m.num_classes:
        raise cfg.error("model", "class_weights", f"{m.num_classes} weights, one per class")
    names = cfg.dataset.class_names
    if names is not None and len(names) != m.num_classes:
        raise cfg.error("dataset", "class_names", f"{m.num_classes} names, background first")
    ratios = cfg.split.ratios
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise cfg.error("split", "ratios", "three fractions train, valid, test summing to 1 (train > 0)")
    _validate_metric_names(cfg)


def _validate_metric_names(cfg: Config) -> None:
    """[model] metrics, [train] metrics and [train] monitor name values training really logs."""
    selectable = [*EXTRA_METRICS, *class_metric_names(cfg.class_names)]
    for name in cfg.model.metrics:
        if name not in selectable:
            raise cfg.error("model", "metrics", _names_expected(name, selectable))
    logged = logged_names(cfg)
    for name in cfg.train.metrics:
        if name not in logged + ["learning_rate"]:
            raise cfg.error("train", "metrics", _names_expected(name, logged + ["learning_rate"]))
    if cfg.train.monitor not in logged:
        raise cfg.error("train", "monitor", _names_expected(cfg.train.monitor, logged))


def _names_expected(name: str, known: list[str]) -> str:
    base = name.removeprefix("val_")
    longer = [k for k in known if k.startswith(name)]
    hint = f"; did you mean {longer[0]!r}?" if name and longer else _did_you_mean(name, known)
    if base in EXTRA_METRICS and base not in known:
        hint = f" (it is logged only when [model] metrics lists {base!r})"
    return f"names among {', '.join(known)}; {name!r} is not one{hint}"


def _notices(cfg: Config) -> list[str]:
    """Warnings about values that are accepted but change nothing."""
    out = []
    if cfg.model.final_activation == "sigmoid":
        out.append(f"{cfg.where('model', 'final_activation')}: the head is softmax whenever num_classes > 1 "
                   f"(as the original); \"sigmoid\" is ignored")
    if ("train", "shuffle_buffer") in cfg.origins:
        out.append(f"{cfg.where('train', 'shuffle_buffer')}: unused; every epoch is a full seeded "
                   f"permutation of the file list (the key can be removed)")
    return out


# --------------------------------------------------------------------------- writing


def dump_config(cfg: Config) -> str:
    """The resolved config as INI text in the same dialect (absolute paths)."""
    lines = ["; resolved by flexunet: every key with its effective value", ""]
    for name in SECTIONS:
        settings = getattr(cfg, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(settings):
            lines.append(f"{f.name} = {_format_value(getattr(settings, f.name))}")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """A Markdown table of every section and key: default, expected value, meaning."""
    out = []
    for name, cls in SECTIONS.items():
        if name == "test":
            continue
        title = "[valid] and [test]" if name == "valid" else f"[{name}]"
        out += [f"#### {title}", "", "| key | default | expects | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            aliases = f.metadata.get("aliases", ())
            key = f.name + (f" (alias {', '.join(aliases)})" if aliases else "")
            default = _format_value(f.default).replace("|", "\\|")
            out.append(f"| {key} | `{default}` | {f.metadata['kind'].expected.replace('|', '/')} "
                       f"| {f.metadata['doc']} |")
        out.append("")
    return "\n".join(out)
