"""The command handlers of ``flexunet <command>``: each loads the config (with ``--set`` overrides; the
run folder's keys for the commands that use a trained model) and calls one typed stage function.

:func:`flexunet.cli.main.main` imports this module once the arguments parse, so ``--help`` never
loads the stage modules; they import TensorFlow only inside the functions that need it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from flexunet.bench.runner import run_bench
from flexunet.cli.demo import run_demo
from flexunet.config.loader import load_config
from flexunet.dataset.augment import augment_dataset
from flexunet.dataset.prepare import prepare_dataset
from flexunet.dataset.split import split_dataset
from flexunet.dataset.stats import dataset_stats
from flexunet.evaluation.evaluate import evaluate_model
from flexunet.inference.export import export_model
from flexunet.inference.infer import infer_images
from flexunet.model.inspection import describe_members, inspect_model, inspect_target
from flexunet.model.run_folder import apply_run
from flexunet.planning.plan import plan_dataset
from flexunet.report.build import build_report
from flexunet.synthetic.lesions import SynthOptions, parse_range
from flexunet.synthetic.nifti_writer import synthesize_nifti
from flexunet.synthetic.synth import synthesize
from flexunet.training.autotune import cache_command
from flexunet.training.train import train
from flexunet.utils.errors import ConfigError, DataError, FlexUNetError

log = logging.getLogger("flexunet")


def _load(args: argparse.Namespace):
    # with --strict the warnings become the error below: do not print them twice
    logging.getLogger("flexunet.config.loader").setLevel(logging.ERROR if args.strict else logging.NOTSET)
    cfg = load_config(args.config, args.set or ())
    if args.strict and cfg.warnings:
        raise ConfigError(f"{cfg.warnings[0]} (--strict: unknown keys and sections are errors)")
    return cfg


def _load_run(args: argparse.Namespace):
    """The config with the run folder's network and input/output keys (one line per differing key)."""
    return apply_run(_load(args), strict=args.strict)


def _is_model_target(target: str) -> bool:
    path = Path(target)
    return path.is_dir() or path.name.endswith((".keras", ".h5", ".json"))


def cmd_inspect(args: argparse.Namespace) -> int:
    if _is_model_target(args.config):
        sys.stdout.write(inspect_target(Path(args.config)))
        return 0
    inspect_model(_load(args))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    options = SynthOptions(
        ischemic_hu=parse_range(args.ischemic_hu), hemorrhage_hu=parse_range(args.hemorrhage_hu),
        lesion_size=parse_range(args.lesion_size) if args.lesion_size else None,
        prevalence=args.prevalence, noise=args.noise, lookalikes=args.lookalikes)
    if args.format == "nifti":
        if args.family != "phantom" or args.scanner != "standard":
            raise DataError(f"synth: --format nifti writes the phantom family through the standard scanner, not "
                            f"--family {args.family} --scanner {args.scanner}; drop them or use --format teknofest")
        synthesize_nifti(Path(args.out), count=args.count, seed=args.seed, size=args.size, overwrite=args.overwrite,
                         progress=not args.quiet, workers=args.workers, options=options)
    else:
        synthesize(Path(args.out), count=args.count, seed=args.seed, size=args.size, overwrite=args.overwrite,
                   progress=not args.quiet, workers=args.workers, options=options, family=args.family,
                   scanner=args.scanner)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    classes = args.classes.split(",") if args.classes else None
    plan_dataset(Path(args.dataset), Path(args.out), minutes=args.minutes, size=args.size, classes=classes,
                 overwrite=args.overwrite)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    classes = args.classes.split(",") if args.classes else None
    prepare_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet, classes=classes)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    split_dataset(_load(args), overwrite=args.overwrite)
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    augment_dataset(_load(args), overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    dataset_stats(Path(args.dataset_dir), out_dir=out, progress=not args.quiet, overwrite=args.overwrite)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load(args)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet,
                    strict=args.strict, allow_data_change=args.allow_data_change)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items()
                        if k.startswith(("val_dice", "val_iou", "val_mean", "val_loss")))
    if summary.get("members"):
        log.info("train: the mean of %d members (%s): %s", len(summary["members"]), summary["best_model"],
                 describe_members(summary["members"], summary["monitor"]))
        return 0
    log.info("train: %d epochs, best %s %.5g at epoch %s (%s); %s", summary["epochs"], summary["monitor"],
             summary["best"], summary["best_epoch"], summary["best_model"], figures)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    evaluate_model(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                   allow_overlap=args.allow_overlap)
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    infer_images(_load_run(args), tiled=args.tiled, progress=not args.quiet, overwrite=args.overwrite,
                 fmt=args.format)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path = export_model(_load_run(args), args.format, Path(args.out) if args.out else None,
                        overwrite=args.overwrite)
    log.info("export: %s", path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    result = build_report(_load_run(args), progress=not args.quiet, overwrite=args.overwrite,
                          allow_overlap=args.allow_overlap)
    log.info("report: %s", result["html"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), size=args.size, epochs=args.epochs, count=args.count, seed=args.seed,
             progress=not args.quiet)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    return cache_command(args.action)


def cmd_bench(args: argparse.Namespace) -> int:
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
