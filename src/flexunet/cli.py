"""``flexunet <command> ...``: thin entries over the stage functions.

Each command parses its arguments, loads the config (with ``--set`` overrides) and calls
one typed function.  Stage modules are imported inside the command, so ``--help`` and
the data commands never pay for TensorFlow's import.  A user error prints one line and
exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Callable

from flexunet import __version__
from flexunet.errors import FlexUNetError

log = logging.getLogger("flexunet")


# --------------------------------------------------------------------------- plumbing


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


def _setup_logging(verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("flexunet")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


# commands that import TensorFlow (the others never pay for it)
TF_COMMANDS = frozenset({"train", "evaluate", "infer", "export", "report", "bench", "demo", "inspect"})

# what TensorFlow's C++ core writes to fd 2 while it is imported, before absl logging is
# initialised and whatever TF_CPP_MIN_LOG_LEVEL says: absl-format info/warning lines and the
# "All log messages before absl::InitializeLog()" notice (GPU builds add factory-registration errors)
_TF_STARTUP_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                               r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
                               r"|E\d{4} [\d:.]+\s.*(Unable to register cu\w+ factory|already been registered))")


def _quiet_tensorflow(verbose: bool, command: str) -> None:
    """Keep TensorFlow's C++ and Python chatter out of the user's output (unless --verbose).

    Environment variables must be set before TensorFlow is imported: C++ log level 3
    (errors from the C++ core still surface as Python exceptions).  TensorFlow is then
    imported with fd 2 captured, its start-up notices dropped and anything else passed on;
    afterwards TensorFlow's, absl's and Keras' Python loggers and UserWarnings are quieted
    (e.g. the tf.function retracing warning).
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow|absl)(\.|$)")
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if command in TF_COMMANDS:
        _import_tensorflow_quietly()


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if not _TF_STARTUP_NOISE.search(line):
                    print(line, file=sys.stderr)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass


def _load(args: argparse.Namespace):
    from flexunet.config import load_config
    from flexunet.errors import ConfigError

    # with --strict the warnings become the error below: do not print them twice
    logging.getLogger("flexunet.config").setLevel(logging.ERROR if args.strict else logging.NOTSET)
    cfg = load_config(args.config, args.set or ())
    if args.strict and cfg.warnings:
        raise ConfigError(f"{cfg.warnings[0]} (--strict: unknown keys and sections are errors)")
    return cfg


def _load_run(args: argparse.Namespace):
    """The config with the run folder's network and input/output keys (one line per differing key)."""
    from flexunet.run import apply_run

    return apply_run(_load(args), strict=args.strict)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="train_eval_infer.config file")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


# --------------------------------------------------------------------------- commands


def _is_model_target(target: str) -> bool:
    path = Path(target)
    return path.is_dir() or path.name.endswith((".keras", ".h5", ".json"))


def cmd_inspect(args: argparse.Namespace) -> int:
    if _is_model_target(args.config):
        from flexunet.run import inspect_target

        sys.stdout.write(inspect_target(Path(args.config)))
        return 0
    cfg = _load(args)
    from flexunet.inspect import inspect_model

    inspect_model(cfg, save=not args.no_save)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from flexunet.synth import synthesize
    from flexunet.synth_lesions import SynthOptions, parse_range

    options = SynthOptions(
        ischemic_hu=parse_range(args.ischemic_hu), hemorrhage_hu=parse_range(args.hemorrhage_hu),
        lesion_size=parse_range(args.lesion_size) if args.lesion_size else None,
        prevalence=args.prevalence, noise=args.noise, lookalikes=args.lookalikes)
    synthesize(Path(args.out), count=args.count, seed=args.seed, size=args.size,
               overwrite=args.overwrite, progress=not args.quiet, workers=args.workers, options=options)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from flexunet.plan import plan_dataset

    classes = args.classes.split(",") if args.classes else None
    plan_dataset(Path(args.dataset), Path(args.out), minutes=args.minutes, size=args.size, classes=classes,
                 overwrite=args.overwrite)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from flexunet.prepare import prepare_dataset

    prepare_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from flexunet.split import split_dataset

    split_dataset(_load(args), overwrite=args.overwrite)
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from flexunet.augment import augment_dataset

    augment_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from flexunet.stats import dataset_stats

    out = Path(args.out) if args.out else None
    dataset_stats(Path(args.dataset_dir), out_dir=out, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flexunet.train import train

    cfg = _load(args)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                    strict=args.strict)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items()
                        if k.startswith(("val_dice", "val_iou", "val_mean", "val_loss")))
    log.info("train: %d epochs, best %s %.5g at epoch %s (%s); %s", summary["epochs"], summary["monitor"],
             summary["best"], summary["best_epoch"], summary["best_model"], figures)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flexunet.evaluate import evaluate_model

    evaluate_model(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                   allow_overlap=args.allow_overlap)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from flexunet.infer import infer_images

    infer_images(_load_run(args), tiled=args.tiled, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from flexunet.export import export_model

    path = export_model(_load_run(args), args.format, Path(args.out) if args.out else None)
    log.info("export: %s", path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flexunet.report import build_report

    result = build_report(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                          allow_overlap=args.allow_overlap)
    log.info("report: %s", result["html"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flexunet.demo import run_demo

    run_demo(Path(args.out), size=args.size, epochs=args.epochs, count=args.count, seed=args.seed,
             progress=not args.quiet)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from flexunet.autotune import cache_command

    return cache_command(args.action)


def cmd_bench(args: argparse.Namespace) -> int:
    from flexunet.bench import main as bench_main

    return bench_main(args.bench_args)


Command = tuple[str, str, Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]


def _args_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="train_eval_infer.config file, or a model file / run folder (prints its "
                                  "metadata)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.num_layers=5 (repeatable)")
    p.add_argument("--no-save", action="store_true", help="print only; do not write <model_dir>/summary.txt")


def _args_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output folder; the raw layout goes to OUT/STROKE-DATASET/...")
    p.add_argument("--count", type=int, default=200, help="number of slices (default 200)")
    p.add_argument("--seed", type=int, default=137, help="random seed (default 137)")
    p.add_argument("--size", type=int, default=512, help="slice size in pixels (default 512)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing synthetic set")
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


def _args_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset folder holding train/ valid/ test/, each with images/ and masks/")
    p.add_argument("--out", default="train_eval_infer.config",
                   help="config to write; fingerprint.json goes beside it (default ./train_eval_infer.config)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget in minutes (default 10)")
    p.add_argument("--size", type=int, default=None, help="network input size in px (default: the images')")
    p.add_argument("--classes", help="class names in colour order (green, blue, red, ...), comma-separated")
    p.add_argument("--overwrite", action="store_true", help="replace an existing config")


def _args_overwrite(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs of this stage")


def _args_train(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--resume", action="store_true", help="continue the run in model_dir from its last epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in model_dir")


def _add_overwrite_into(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder this command did not create (its other files are kept)")


def _add_allow_overlap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-overlap", action="store_true",
                   help="score test images the model trained or validated on (warned and counted) instead of "
                        "refusing")


def _args_evaluate(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    _add_overwrite_into(p)
    _add_allow_overlap(p)


def _args_report(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    _add_overwrite_into(p)
    _add_allow_overlap(p)


def _args_infer(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    _add_overwrite_into(p)
    p.add_argument("--tiled", action="store_true", help="use [tiledinfer]: tile images larger than the model")


def _args_export(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--format", choices=("keras", "savedmodel", "onnx"), default="keras")
    p.add_argument("--out", help="output path (default: <model_dir>/export/...)")


def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="flexunet-demo", help="demo folder (default ./flexunet-demo)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--count", type=int, default=240, help="synthetic slices (default 240)")
    p.add_argument("--seed", type=int, default=137, help="seed of the synthetic data (default 137)")


def _args_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("bench_args", nargs=argparse.REMAINDER,
                   help="the benchmark's own options (flexunet bench --help lists them)")


def _args_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset_dir", help="dataset folder holding train/ valid/ test/")
    p.add_argument("--out", help="where the charts go (default: DATASET_DIR)")
    _add_overwrite_into(p)


COMMANDS: list[Command] = [
    ("demo", "the whole pipeline on synthetic stroke CT, in minutes on a CPU", cmd_demo, _args_demo),
    ("synth", "write a synthetic stroke-CT dataset in the raw TEKNOFEST layout", cmd_synth, _args_synth),
    ("prepare", "raw PNG/DICOM + colour masks -> master dataset of square PNGs", cmd_prepare, _args_overwrite),
    ("split", "master dataset -> leak-free train/valid/test (grouped, seeded)", cmd_split, _args_overwrite),
    ("augment", "offline augmentation of the train subset ([augmentor])", cmd_augment, _args_overwrite),
    ("stats", "dataset statistics charts and sample grids", cmd_stats, _args_stats),
    ("plan", "fingerprint a dataset and write a config fitted to it and to this machine", cmd_plan, _args_plan),
    ("train", "train the configured model (streaming, resumable)", cmd_train, _args_train),
    ("evaluate", "evaluate the best model on the test set", cmd_evaluate, _args_evaluate),
    ("infer", "predict masks for [infer] images_dir", cmd_infer, _args_infer),
    ("export", "export the best model (keras, savedmodel, onnx)", cmd_export, _args_export),
    ("report", "one self-contained HTML report of data, training and evaluation", cmd_report, _args_report),
    ("bench", "training and inference speed against the hardware's convolution peak", cmd_bench, _args_bench),
    ("cache", "show or clear the measured choices of [train] jit_compile / mixed_precision = \"auto\"", cmd_cache,
     lambda p: p.add_argument("action", choices=("show", "clear"))),
    ("inspect", "layer summary, parameter count and GFLOPs of the configured model, or a trained model's "
     "metadata", cmd_inspect, _args_inspect),
]


def build_parser() -> argparse.ArgumentParser:
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
    for name, help_text, func, add_args in COMMANDS:
        # bench passes every option, --help included, to the benchmark's own parser
        p = sub.add_parser(name, help=help_text, description=help_text, add_help=name != "bench")
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "bench":  # its options belong to the benchmark's parser
        args.bench_args = unknown + args.bench_args
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _setup_logging(args.verbose, args.quiet)
    _quiet_tensorflow(args.verbose, args.command)
    try:
        return int(args.func(args) or 0)
    except FlexUNetError as exc:
        kind = "" if exc.exit_code == 130 else "error: "  # Ctrl-C is not an error
        print(f"flexunet {args.command}: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"flexunet {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"flexunet {args.command}: error: {where}{exc.strerror}; previous results were left as "
                  f"they were", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
