"""The command line's words: ``flexunet``'s parser, one argument builder per command.

Each builder is registered with :func:`_command` under its name and one-line help, in the
order ``flexunet --help`` lists them; the functions that run the commands are in ``cli``.
"""

from __future__ import annotations

import argparse
from typing import Callable

from flexunet import __version__

AddArgs = Callable[[argparse.ArgumentParser], None]

# name, one-line help, argument builder: in the order --help lists them
COMMANDS: list[tuple[str, str, AddArgs]] = []


def _command(name: str, help_text: str) -> Callable[[AddArgs], AddArgs]:
    def register(add_args: AddArgs) -> AddArgs:
        COMMANDS.append((name, help_text, add_args))
        return add_args

    return register


# --------------------------------------------------------------------------- shared options


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="train_eval_infer.config file")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace this stage's own earlier output (never a file it did not write)")


def _add_overwrite_into(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write beside files this command did not write (none of them is replaced or deleted)")


def _add_allow_overlap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-overlap", action="store_true",
                   help="score test images the model trained or validated on (warned and counted) instead of "
                        "refusing")


# --------------------------------------------------------------------------- commands


@_command("demo", "the whole pipeline on synthetic stroke CT, in minutes on a CPU")
def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="flexunet-demo", help="demo folder (default ./flexunet-demo)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--count", type=int, default=240, help="synthetic slices (default 240)")
    p.add_argument("--seed", type=int, default=137, help="seed of the synthetic data (default 137)")


@_command("synth", "write a synthetic stroke-CT dataset in the raw TEKNOFEST layout (or nnU-Net's, NIfTI)")
def _args_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder; the raw layout goes to OUT/STROKE-DATASET/...")
    p.add_argument("--count", type=int, default=200, help="number of slices (default 200)")
    p.add_argument("--seed", type=int, default=137, help="random seed (default 137)")
    p.add_argument("--size", type=int, default=512, help="slice size in pixels (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic set written by flexunet synth")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--ischemic-hu", default="8,14", metavar="LO,HI",
                   help="infarct drop below white matter in HU (default 8,14; 3,5 is subtle)")
    p.add_argument("--hemorrhage-hu", default="60,80", metavar="LO,HI", help="haemorrhage HU (default 60,80)")
    p.add_argument("--lesion-size", metavar="MIN,MAX",
                   help="lesion radius in mm (default 4.5,30 ischemic and 4,25 haemorrhagic)")
    p.add_argument("--prevalence", type=float, default=1.0,
                   help="share of slices allowed lesions, 0..1 (default 1: every slice its patient's)")
    p.add_argument("--noise", type=float, default=None, help="noise sd in HU (default 2.5-3.5 per patient)")
    p.add_argument("--lookalikes", action="store_true",
                   help="unlabelled periventricular hypodensities and calcifications")
    p.add_argument("--format", choices=("teknofest", "nifti"), default="teknofest",
                   help="teknofest: PNG/DICOM slices in the TEKNOFEST layout (default); nifti: one volume per "
                        "patient in nnU-Net's raw layout")
    p.add_argument("--family", default="phantom", choices=("phantom", "territory"),
                   help="generator: phantom (the demo's; the options above) or territory (a second one, designed "
                        "apart: vascular-territory infarcts, other anatomy, look-alikes, a scanner per patient)")
    p.add_argument("--scanner", default="standard", choices=("standard", "sharp", "soft"),
                   help="scanner profile shifting the images: standard (none), sharp (sharper kernel, more noise, "
                        "+2..5 HU), soft (smoother kernel, thick slices, -2..-4 HU)")


def _args_stage(p: argparse.ArgumentParser) -> None:
    """A data stage over the config: CONFIG [--set ...] [--overwrite]."""
    _add_config(p)
    _add_overwrite(p)


@_command("prepare", "raw PNG/DICOM slices or NIfTI volumes + masks -> master dataset of square PNGs")
def _args_prepare(p: argparse.ArgumentParser) -> None:
    _args_stage(p)
    p.add_argument("--classes", help="class names, comma-separated, background optional (default: [dataset] "
                                     "class_names, else a NIfTI dataset.json's labels)")


for _name, _help in (("split", "master dataset -> leak-free train/valid/test (grouped, seeded)"),
                     ("augment", "offline augmentation of the train subset ([augmentor])")):
    _command(_name, _help)(_args_stage)


@_command("stats", "dataset statistics charts and sample grids")
def _args_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset_dir", help="dataset folder holding train/ valid/ test/")
    p.add_argument("--out", help="where the charts go (default: DATASET_DIR)")
    _add_overwrite_into(p)


@_command("plan", "fingerprint a dataset and write a config fitted to it and to this machine")
def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder holding train/ valid/ test/, each with images/ and masks/")
    p.add_argument("--out", default="train_eval_infer.config",
                   help="config to write; fingerprint.json goes beside it (default ./train_eval_infer.config)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget in minutes (default 10)")
    p.add_argument("--size", type=int, default=None, help="network input size in px (default: the images')")
    p.add_argument("--classes", help="class names in colour order (green, blue, red, ...), comma-separated")
    p.add_argument("--overwrite", action="store_true", help="replace a config (and fingerprint.json) plan wrote")


@_command("train", "train the configured model (streaming, resumable)")
def _args_train(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="continue the run in model_dir from its last epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in model_dir (only the files train recorded writing)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue on train/valid files other than the run's (recorded in "
                        "data_record.json) instead of refusing")


@_command("evaluate", "evaluate the best model on the test set")
def _args_scored(p: argparse.ArgumentParser) -> None:
    """A command that scores the test images (evaluate, report): the leak guard's --allow-overlap."""
    _add_config(p)
    _add_overwrite_into(p)
    _add_allow_overlap(p)


@_command("infer", "predict masks for [infer] images_dir")
def _args_infer(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    _add_overwrite_into(p)
    p.add_argument("--tiled", action="store_true", help="use [tiledinfer]: tile images larger than the model")
    p.add_argument("--format", choices=("nifti", "png"), default=None,
                   help="NIfTI inputs: a label volume per volume (nifti, the default) or PNG masks per slice (png)")


@_command("export", "export the best model (keras, savedmodel, onnx)")
def _args_export(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--format", choices=("keras", "savedmodel", "onnx"), default="keras")
    p.add_argument("--out", help="output path (default: <model_dir>/export/...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export (never a file export did not write)")


_command("report", "one self-contained HTML report of data, training and evaluation")(_args_scored)


@_command("bench", "training and inference speed against the hardware's convolution peak")
def _args_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", default="stroke,demo",
                   help="comma-separated: stroke, demo, or config file paths (default stroke,demo)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--workdir", help="keep data and outputs here (and reuse the data); default: a temp folder")
    p.add_argument("--quick", action="store_true",
                   help="smaller plans: fewer images and timings (about 3/4 of the time)")
    p.add_argument("--steps", type=int, help="training steps per timing (default: per config)")
    p.add_argument("--repeats", type=int, help="timings per figure; medians are reported (default: per config)")
    p.add_argument("--images", type=int, help="N, training images of the throughput run (default: per config)")
    p.add_argument("--infer-images", type=int, help="images per inference pass (default: per config)")
    p.add_argument("--xla", default="off,on", help="jit_compile settings to run: off, on or off,on (default)")
    p.add_argument("--precision", help="float32 and/or bfloat16 (mixed; a GPU or a CPU with AVX512_BF16 / "
                                       "AMX), float16 (mixed; GPU only); default float32, plus bfloat16 on a "
                                       "CPU with native bf16, float16 on a GPU")
    p.add_argument("--no-memory", action="store_true", help="skip the 10 x N peak-memory run")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of every benchmarked config, e.g. --set train.cache=False (repeatable)")
    p.add_argument("--seed", type=int, default=137, help="seed of data and weights (default 137)")
    p.add_argument("--quiet", action="store_true", dest="bench_quiet", help="no progress bars (as flexunet -q)")


@_command("cache", "show or clear the measured choices of [train] jit_compile / mixed_precision = \"auto\"")
def _args_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("show", "clear"))


@_command("inspect", "layer summary, parameter count and GFLOPs of the configured model, or a trained "
          "model's metadata")
def _args_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="train_eval_infer.config file, or a model file / run folder (prints its "
                                  "metadata)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.num_layers=5 (repeatable)")
    p.add_argument("--no-save", action="store_true",
                   help="accepted for older scripts: inspect only prints (train writes <model_dir>/summary.txt)")


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """``flexunet [-v] [-q] [--strict] <command> ...``: the command is in ``args.command``."""
    parser = argparse.ArgumentParser(
        prog="flexunet",
        description="Config-driven multiclass U-Net segmentation: data, training, evaluation, inference.")
    parser.add_argument("--version", action="version", version=f"flexunet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and TensorFlow's own log lines and warnings (hidden by default)")
    parser.add_argument("--strict", action="store_true",
                        help="treat unknown config keys and sections, and config keys that differ from the "
                             "trained run's, as errors (default: warnings)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only; no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, help_text, add_args in COMMANDS:
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser
