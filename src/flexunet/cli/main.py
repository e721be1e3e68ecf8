"""``flexunet <command> ...``: thin entries over the stage functions.

The arguments are parsed (the parser: ``cli.args``) before anything else loads; then logging is
set up, TensorFlow quieted (and, for the commands that need it, imported with its start-up
noise dropped), and only then the command handlers (``cli.commands``, which import every stage
module) are loaded and one of them run: ``--help`` never pays for the stage modules, and no
command pays for TensorFlow's import unless it uses it.  A user error prints one line and
exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import tempfile
import warnings

from flexunet.cli.args import COMMANDS, build_parser  # noqa: F401  (COMMANDS: the table, for tests)
from flexunet.utils.errors import FlexUNetError

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


# --------------------------------------------------------------------------- the entry point


# Ctrl-C's exception, kept until run()'s os._exit: its traceback holds the frames of an interrupted
# ``fit`` and so the training tf.data iterator; freed in the main thread, that iterator's destructor waits
# for an element of the Python map function, which needs the interpreter lock the main thread holds (the
# Ctrl-C test hung after its "interrupted" line once in a full-suite run, passing alone).
_INTERRUPTED: list[BaseException] = []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    _quiet_tensorflow(args.verbose, args.command)
    from flexunet.cli.commands import HANDLERS  # the stage modules: only once the arguments parse

    try:
        return int(HANDLERS[args.command](args) or 0)
    except FlexUNetError as exc:
        kind = "" if exc.exit_code == 130 else "error: "  # Ctrl-C is not an error
        print(f"flexunet {args.command}: {kind}{exc}", file=sys.stderr)
        if exc.exit_code == 130:
            _INTERRUPTED.append(exc)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"flexunet {args.command}: interrupted", file=sys.stderr)
        _INTERRUPTED.append(exc)
        return 130
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"flexunet {args.command}: error: {where}{exc.strerror}; previous results were left as "
                  f"they were", file=sys.stderr)
            return 1
        raise


def run() -> None:
    """The console entry (``flexunet``, ``python -m flexunet``): :func:`main`, then exit with its code.

    After Ctrl-C (130) the process ends at once, once its streams are flushed.  A ``train`` interrupted
    mid-epoch printed its line and then never exited in 4 of 5 tries: gdb shows interpreter shutdown
    garbage-collecting the training tf.data iterator, whose ``MapAndBatchDatasetOp`` destructor waits for
    its runner thread, itself waiting in ``ParallelMapDatasetOp::GetNextInternal`` for an element whose
    Python map function (the tf.numpy_function augmentation) no longer runs once the interpreter is
    finalizing.  Everything a command writes is whole, or removed, before :func:`main` returns, so
    nothing is left for shutdown to do."""
    code = main()
    if code == 130:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    raise SystemExit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
