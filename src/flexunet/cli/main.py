"""``flexunet <command> ...``: thin entries over the stage functions.

Each command (its arguments are built in ``cli_args``) loads the config (with ``--set``
overrides) and calls one typed function.  Stage modules are imported inside the command, so ``--help`` and
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

from flexunet.cli.args import COMMANDS, build_parser  # noqa: F401  (COMMANDS: the table, for tests)
from flexunet.utils.errors import FlexUNetError

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
    from flexunet.config.loader import load_config
    from flexunet.utils.errors import ConfigError

    # with --strict the warnings become the error below: do not print them twice
    logging.getLogger("flexunet.config.loader").setLevel(logging.ERROR if args.strict else logging.NOTSET)
    cfg = load_config(args.config, args.set or ())
    if args.strict and cfg.warnings:
        raise ConfigError(f"{cfg.warnings[0]} (--strict: unknown keys and sections are errors)")
    return cfg


def _load_run(args: argparse.Namespace):
    """The config with the run folder's network and input/output keys (one line per differing key)."""
    from flexunet.model.run_folder import apply_run

    return apply_run(_load(args), strict=args.strict)


# --------------------------------------------------------------------------- commands


def _is_model_target(target: str) -> bool:
    path = Path(target)
    return path.is_dir() or path.name.endswith((".keras", ".h5", ".json"))


def cmd_inspect(args: argparse.Namespace) -> int:
    if _is_model_target(args.config):
        from flexunet.model.run_folder import inspect_target

        sys.stdout.write(inspect_target(Path(args.config)))
        return 0
    cfg = _load(args)
    from flexunet.model.inspection import inspect_model

    inspect_model(cfg)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from flexunet.synthetic.synth import synthesize
    from flexunet.synthetic.lesions import SynthOptions, parse_range

    options = SynthOptions(
        ischemic_hu=parse_range(args.ischemic_hu), hemorrhage_hu=parse_range(args.hemorrhage_hu),
        lesion_size=parse_range(args.lesion_size) if args.lesion_size else None,
        prevalence=args.prevalence, noise=args.noise, lookalikes=args.lookalikes)
    synthesize(Path(args.out), count=args.count, seed=args.seed, size=args.size,
               overwrite=args.overwrite, progress=not args.quiet, workers=args.workers, options=options)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from flexunet.planning.plan import plan_dataset

    classes = args.classes.split(",") if args.classes else None
    plan_dataset(Path(args.dataset), Path(args.out), minutes=args.minutes, size=args.size, classes=classes,
                 overwrite=args.overwrite)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from flexunet.dataset.prepare import prepare_dataset

    prepare_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from flexunet.dataset.split import split_dataset

    split_dataset(_load(args), overwrite=args.overwrite)
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from flexunet.dataset.augment import augment_dataset

    augment_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from flexunet.dataset.stats import dataset_stats

    out = Path(args.out) if args.out else None
    dataset_stats(Path(args.dataset_dir), out_dir=out, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from flexunet.training.train import train

    cfg = _load(args)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                    strict=args.strict, allow_data_change=args.allow_data_change)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items()
                        if k.startswith(("val_dice", "val_iou", "val_mean", "val_loss")))
    log.info("train: %d epochs, best %s %.5g at epoch %s (%s); %s", summary["epochs"], summary["monitor"],
             summary["best"], summary["best_epoch"], summary["best_model"], figures)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flexunet.evaluation.evaluate import evaluate_model

    evaluate_model(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                   allow_overlap=args.allow_overlap)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from flexunet.inference.infer import infer_images

    infer_images(_load_run(args), tiled=args.tiled, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from flexunet.inference.export import export_model

    path = export_model(_load_run(args), args.format, Path(args.out) if args.out else None,
                        overwrite=args.overwrite)
    log.info("export: %s", path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flexunet.report.build import build_report

    result = build_report(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                          allow_overlap=args.allow_overlap)
    log.info("report: %s", result["html"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flexunet.cli.demo import run_demo

    run_demo(Path(args.out), size=args.size, epochs=args.epochs, count=args.count, seed=args.seed,
             progress=not args.quiet)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from flexunet.training.autotune import cache_command

    return cache_command(args.action)


def cmd_bench(args: argparse.Namespace) -> int:
    from flexunet.bench.runner import run_bench

    run_bench(configs=[c.strip() for c in args.configs.split(",") if c.strip()], out=args.out,
              workdir=args.workdir, quick=args.quick, steps=_positive("steps", args.steps),
              repeats=_positive("repeats", args.repeats), images=_positive("images", args.images),
              infer_images=_positive("infer-images", args.infer_images), xla=_on_off(args.xla),
              precisions=[p.strip() for p in args.precision.split(",")] if args.precision else None,
              memory=not args.no_memory, sets=args.set, seed=args.seed,
              progress=not (args.quiet or args.bench_quiet))
    return 0


def _on_off(text: str) -> tuple[bool, ...]:
    table = {"off": False, "on": True, "false": False, "true": True}
    try:
        return tuple(table[t.strip().lower()] for t in text.split(",") if t.strip())
    except KeyError:
        raise FlexUNetError(f"--xla {text}: expected off, on or off,on") from None


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise FlexUNetError(f"--{name} {value}: expected an integer >= 1")
    return value


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo, "synth": cmd_synth, "prepare": cmd_prepare, "split": cmd_split, "augment": cmd_augment,
    "stats": cmd_stats, "plan": cmd_plan, "train": cmd_train, "evaluate": cmd_evaluate, "infer": cmd_infer,
    "export": cmd_export, "report": cmd_report, "bench": cmd_bench, "cache": cmd_cache,
    "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    _quiet_tensorflow(args.verbose, args.command)
    try:
        return int(HANDLERS[args.command](args) or 0)
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
