"""The settings classes: one frozen dataclass per config section, each key with its default,
kind and one-line doc (docs/config.md, the config reference, is generated from these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flexunet.config.values import (NONNEG_INT, OPT_PATH, POS_FLOAT, POS_INT, Auto, Bool, ClassWeights, Float, Int,
                                    Optional, Pair, PathKind, RgbMap, Seq, Str, opt)


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
    centre_intensity: bool = opt(False, Bool(), "subtract each image's mean grey of its mid-grey pixels "
                                 "(0.05..0.95 of the range: the brain in a brain window) inside the model, so a "
                                 "scanner's calibration offset cancels (plan writes True)")
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
    members: int = opt(1, Int(lo=1, hi=8), "networks averaged: train fits this many of the network apart, with "
                       "seeds seed, seed+1, ... (in model_dir/members/), and the model is the mean of their "
                       "softmax outputs; 1: one network, as the original")


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
    seed: int = opt(137, Int(lo=0, hi=2**32 - 1), "one seed for split, augmentation, shuffling and initialisation")
    monitor: str = opt("val_loss", Str(), "logged value the checkpoint, reducer and early stopping watch "
                                           "(loss, a metric, or their val_ forms)")
    deterministic: bool = opt(False, Bool(), "op determinism: bit-identical runs on CPU (slower)")
    jit_compile: bool | str = opt("auto", Auto(Bool()), "XLA compilation of the train step; \"auto\": the "
                                  "faster of on and off, timed on the model at start-up (cached per machine)")
    mixed_precision: str | None = opt("auto", Auto(Optional(Str(("float16", "bfloat16"), lower=True))),
                                      "mixed precision policy (None: float32); \"auto\": bfloat16 (CPUs with "
                                      "AVX512_BF16 or AMX) or float16 (GPUs) where faster and as accurate as "
                                      "float32 on a probe (cached per machine); float32 without a probe on a "
                                      "CPU with neither")
    strategy: str = opt("default", Str(("default", "mirrored", "multiworker"), lower=True),
                        "tf.distribute strategy")
    cache: bool = opt(False, Bool(), "cache decoded training data in memory")
    shuffle_buffer: int = opt(256, POS_INT, "unused (accepted with a warning): every epoch is a full "
                                            "seeded permutation of the file list")
    tensorboard: bool = opt(True, Bool(), "write TensorBoard logs under model_dir/logs")
    foreground_oversampling: float = opt(0.0, Float(lo=0.0, hi=1.0),
                                         "share of each batch drawn from slices with a foreground class "
                                         "(classes in turn, rarest first), per (seed, epoch); 0: uniform order")
    output_bias: str = opt("zeros", Str(("zeros", "prior"), lower=True),
                           "the output layer's starting bias: zeros (every class 1/num_classes at first), or "
                           "prior: log of each class's share of the training mask pixels, so the first steps "
                           "already predict the class frequencies and rare lesions are learned sooner")
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
    ema: float = opt(0.0, Float(lo=0.0, hi=1.0, hi_open=True),
                     "weight averaging: the momentum of an exponential moving average of the weights, taken "
                     "every step (0.99: about the last 100 steps); validation, the best model and every saved "
                     "checkpoint use the averaged weights; 0: off")
    average_best: int = opt(0, NONNEG_INT, "when training ends, the best model becomes the mean of the weights of "
                            "the K epochs with the best monitored values (kept in model_dir/best_epochs/ as they "
                            "come); 0 or 1: the single best epoch")
    member_folds: bool = opt(False, Bool(), "with [model] members >= 2: member 1 validates on [valid]; member k "
                             "validates on a fold of the training patients as large as [valid] (seed + k - 1) "
                             "and trains on the other training patients and [valid]; the run's post-processing "
                             "and validation interval come from each member's own validation (out of fold); "
                             "False: every member trains on [train] and validates on [valid]")


@dataclass(frozen=True)
class SubsetSettings:
    images_dir: Path | None = opt(None, OPT_PATH, "images folder")
    masks_dir: Path | None = opt(None, OPT_PATH, "masks folder")


@dataclass(frozen=True)
class InferSettings:
    images_dir: Path | None = opt(None, OPT_PATH, "images to predict (PNG, JPG, TIF, BMP, DICOM), or NIfTI "
                                  "volumes (a label volume each)")
    output_dir: Path | None = opt(None, OPT_PATH, "where predicted masks go")
    batch_size: int = opt(4, POS_INT, "images per inference batch")
    overlays: bool = opt(False, Bool(), "also write mask-over-image overlays")
    overlay_alpha: float = opt(0.45, Float(lo=0.0, hi=1.0), "overlay opacity")
    class_index_masks: bool = opt(False, Bool(), "also write class-index PNGs (pixel = class)")
    flip_tta: bool = opt(False, Bool(), "average predictions over horizontal/vertical flips")
    foreground_weight: float = opt(1.0, Float(lo=1.0, hi=100.0),
                                   "each foreground class's probability times this before the argmax (1: the "
                                   "plain argmax; plan writes 3: Dice rewards marking a pixel the net is unsure "
                                   "of); evaluate, the report and the end of training decide the same way")
    min_component_size: int | str = opt("auto", Auto(NONNEG_INT),
                                        "remove predicted components smaller than this many pixels (0: keep all); "
                                        "\"auto\": per class, the size the run chose on its validation set "
                                        "(postprocess.json in [train] model_dir; none: keep all)")
    volumes: bool = opt(True, Bool(), "DICOM and NIfTI inputs: write volumes.csv (mL per patient, series and "
                        "class); missing or uneven slice spacing: a warning and no volumes (set True: an error)")
    uncertainty: bool = opt(False, Bool(), "write per-pixel uncertainty maps (entropy over flip TTA; an "
                            "uncertainty volume per NIfTI input) and uncertain_slices.csv")


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
    mask_file_format: str = opt(".png", Str((".png", ".npz")), "mask files: PNG (see format) or .npz (key 'mask')")
    format: str = opt("auto", Str(("auto", "rgb", "index"), lower=True),
                      "what a mask pixel holds: \"rgb\" a class colour (through rgb_map), \"index\" the class "
                      "index itself (grey or palette PNGs of values 0..num_classes-1, as nnU-Net's raw masks); "
                      "\"auto\": \"rgb\" when rgb_map is set, else \"index\"")
    rgb_map: dict = opt(None, RgbMap(), "colour of each class, {(r,g,b): index}: required for format \"rgb\"; "
                        "with \"index\" only the colours predicted masks and overlays are drawn in (default: "
                        "black, green, blue, red, yellow, ...)")
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
    intensity: bool = opt(False, Bool(), "online only: a random contrast gain, brightness shift and noise per "
                                         "image ([intensity]); images only")
    lesion_paste: bool = opt(False, Bool(), "online only: one lesion of a training image copied to another "
                                            "place of like tissue in the same image (docs/generalisation.md)")
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
class IntensitySettings:
    gain: float = opt(0.1, Float(lo=0.0, hi=0.9), "largest contrast change about the mean of the non-black "
                                                  "pixels: a gain drawn from 1 - gain .. 1 + gain")
    offset: float = opt(8.0, Float(lo=0.0), "largest brightness shift in grey levels (drawn from -offset .. offset)")
    noise: float = opt(2.0, Float(lo=0.0), "largest standard deviation of added Gaussian noise, grey levels")
    kernel: float = opt(0.0, Float(lo=0.0, hi=1.0), "largest reconstruction-kernel change: an amount drawn from "
                                                    "-kernel .. kernel blurs (< 0) or sharpens (> 0) the slice")
    gamma: float = opt(0.0, Float(lo=0.0, hi=2.0), "largest gamma change: a gamma drawn from 1/(1+gamma) .. "
                                                   "1+gamma on the grey levels")
    lowres: float = opt(0.0, Float(lo=0.0, hi=0.9), "largest resolution loss: in half the draws the slice is "
                                                    "shrunk to a zoom drawn from 1 - lowres .. 1 (nearest) and enlarged "
                                                    "back (linear), as a coarser scan shows it")


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
    raw_dir: Path | None = opt(None, OPT_PATH, "folder holding PNG/ MASKS/ DICOM/ (or a parent of it); for "
                               "source \"nifti\": nnU-Net's raw layout (dataset.json, imagesTr/, labelsTr/) or "
                               "images/ + labels/ of NIfTI volumes")
    source: str = opt("png", Str(("png", "dicom", "nifti"), lower=True),
                      "slices from PNG/ or from DICOM/, or the axial slices of NIfTI volumes (reoriented to RAS+)")
    output_dir: Path | None = opt(None, OPT_PATH, "master dataset folder (images/ masks/ manifest)")
    size: int = opt(512, POS_INT, "output size (square) in pixels")
    image_resize: str = opt("area", Str(("area", "bilinear"), lower=True), "image resampling")
    window_center: float = opt(40.0, Float(), "DICOM / NIfTI window centre in HU (brain window)")
    window_width: float = opt(80.0, POS_FLOAT, "DICOM / NIfTI window width in HU")
    three_windows: bool = opt(False, Bool(), "DICOM / NIfTI to RGB = brain / subdural / bone windows")
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
    "intensity": IntensitySettings,
    "barrdistortion": BarrDistortionSettings,
    "pincdistortion": PincDistortionSettings,
    "prepare": PrepareSettings,
    "split": SplitSettings,
    "report": ReportSettings,
}

# [mask] rgb_map is required too when [mask] format is "rgb" (config.py resolves the format)
REQUIRED: tuple[tuple[str, str], ...] = (("model", "num_classes"),)
