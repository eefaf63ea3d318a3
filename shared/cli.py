"""Entry-point plumbing: flags before TensorFlow, quiet start-up, logging, clean exits.

Every script answers ``--help`` and bad flags before TensorFlow loads (loading
it takes seconds), so each one starts like this::

    from projects.xor_mlp.config import XorConfig
    from shared.cli import parse_before_tensorflow

    if __name__ == "__main__":
        parse_before_tensorflow(XorConfig)  # --help, bad flags: answered in a blink

    import keras  # noqa: E402 - deliberately after the flags are checked

`load_tensorflow_quietly` then imports TensorFlow with its known-harmless
start-up lines removed (the oneDNN and CPU-instruction banners, and the CUDA
lines of a machine without NVIDIA drivers); everything else it prints is
passed through. ``KERAS_PROJECTS_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from shared.config import TrainConfig, parse_config
from shared.errors import UserError
from shared.saving import check_model_file, finished_run_files

ConfigT = TypeVar("ConfigT", bound=TrainConfig)

log = logging.getLogger(__name__)

VERBOSE_VARIABLE = "KERAS_PROJECTS_VERBOSE"

# Lines TensorFlow prints at start-up (some on every machine, some only on some
# CPUs, such as the oneDNN line), that need no action.
_HARMLESS_STARTUP_LINES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Could not find cuda drivers on your machine",
)
# Harmless only where there is no NVIDIA driver at all (the line above was printed);
# on a machine with a GPU the same line means the GPU cannot be used.
_CPU_ONLY_MACHINE_LINES = ("failed call to cuInit",)

# Configs parsed by `parse_before_tensorflow`, reused by `run_training_cli`.
_PARSED_CONFIGS: dict[type, TrainConfig] = {}


def verbose() -> bool:
    """Whether ``KERAS_PROJECTS_VERBOSE`` asks for TensorFlow's full start-up output."""
    return os.environ.get(VERBOSE_VARIABLE, "").strip() not in ("", "0")


def filter_startup_lines(text: str) -> str:
    """``text`` without TensorFlow's known-harmless start-up lines.

    Args:
        text: What TensorFlow wrote to stderr while loading.

    Returns:
        The remaining lines, in order.
    """
    lines = text.splitlines(keepends=True)
    cpu_only = any("Could not find cuda drivers" in line for line in lines)
    hidden = _HARMLESS_STARTUP_LINES + (_CPU_ONLY_MACHINE_LINES if cpu_only else ())
    return "".join(line for line in lines if not any(marker in line for marker in hidden))


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file; yield a list that receives its text."""
    sys.stderr.flush()
    saved = os.dup(2)
    captured: list[str] = []
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            captured.append(capture.read().decode(errors="replace"))


def load_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras, hiding only their known-harmless start-up lines.

    Does nothing when TensorFlow is already loaded. With ``KERAS_PROJECTS_VERBOSE=1``
    nothing is hidden. Also sets ``TF_CPP_MIN_LOG_LEVEL=1`` (TensorFlow's own
    INFO lines off, warnings and errors kept) unless it is set already.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    with _stderr_captured() as captured:
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # CUDA's start-up lines come here
    remaining = filter_startup_lines(captured[0])
    if remaining:
        sys.stderr.write(remaining)
        sys.stderr.flush()


def parse_before_tensorflow(
    config_class: type[ConfigT],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> ConfigT:
    """Parse a training script's flags, then load TensorFlow quietly.

    ``--help`` and invalid flags exit here, before TensorFlow is imported.
    `run_training_cli` reuses the parsed config.
    """
    config = parse_config(config_class, argv, description)
    _PARSED_CONFIGS[config_class] = config
    load_tensorflow_quietly()
    return config


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1 (else argparse's usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def parse_args_before_tensorflow(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    check: Callable[[argparse.Namespace], Any] | None = None,
) -> argparse.Namespace:
    """`parse_before_tensorflow` for an inference script's own ``argparse`` parser.

    A ``--run-dir`` that is not a finished, usable run (missing, unfinished,
    diverged, or without the model file ``--which`` names) is refused here too,
    in a second rather than after TensorFlow's start-up: every script with that
    flag reads a run.

    Args:
        parser: The script's parser.
        argv: The arguments (default: the command line's).
        check: Called with the parsed arguments before TensorFlow loads; a
            `UserError` it raises is printed as one line, with exit status 2.
    """
    args = parser.parse_args(argv)
    if check is not None:
        setup_logging(logging.WARNING)
        exit_on_user_error(lambda: check(args))
    run_dir = getattr(args, "run_dir", None)
    if isinstance(run_dir, str):
        setup_logging(logging.WARNING)
        which = getattr(args, "which", "model")
        exit_on_user_error(lambda: check_model_file(finished_run_files(run_dir, which).model_file))
    load_tensorflow_quietly()
    return args


def setup_logging(level: int = logging.INFO) -> None:
    """Send log records to stderr as ``HH:MM:SS message``.

    Args:
        level: The root logging level.
    """
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # TensorFlow logs every collective op at INFO under multi-worker training.
    logging.getLogger("tensorflow").setLevel(max(level, logging.WARNING))


def fit_verbosity() -> int:
    """``verbose`` for ``fit``: a progress bar on a terminal, else one line per epoch."""
    return 1 if sys.stdout.isatty() else 2


def exit_on_user_error(function: Callable[[], Any]) -> Any:
    """Call ``function``; turn expected failures into one line and an exit status.

    A `UserError` exits with status 2, an operating-system error (a file that
    cannot be written, a full disk) with 1, Ctrl-C with 130; each prints one
    line instead of a traceback.

    Args:
        function: What to run.

    Returns:
        What ``function`` returned.
    """
    try:
        return function()
    except UserError as error:
        log.error("error: %s", error)
        raise SystemExit(2) from None
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        log.error("error: %s%s%s", error.strerror or error, where, os_error_hint(error))
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        log.error("Interrupted.")
        raise SystemExit(130) from None


def os_error_hint(error: OSError) -> str:
    """What to do about an operating-system error, as ``": ..."`` (or ``""``)."""
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        # makedirs met a file where an output folder (--out, --run-dir) has to go.
        return ": a file is where a folder has to be made; choose another output folder"
    if isinstance(error, PermissionError) or error.errno == errno.EROFS:
        return ": choose an output folder you can write to"
    if error.errno == errno.ENOSPC:
        return ": free some disk space and run the command again"
    return ""


_INTERRUPT_REQUESTED = threading.Event()
# How many Keras loops (fit, and the evaluate inside it; predict) are running with
# shared.callbacks.StopOnInterrupt among their callbacks: while any is, a first Ctrl-C
# only asks it to stop at the end of the current step.
_LOOPS_STOPPING_AT_STEP_ENDS = 0


def interrupt_requested() -> bool:
    """Whether Ctrl-C was pressed during training (see `run_training_cli`)."""
    return _INTERRUPT_REQUESTED.is_set()


def stop_at_step_ends(entering: bool | None) -> None:
    """Enter (``True``) or leave (``False``) a Keras loop that stops at its step ends.

    `shared.callbacks.StopOnInterrupt` calls this as a loop begins and ends, and
    with ``None`` (every such loop ends) as it raises KeyboardInterrupt. While a
    loop runs, the first Ctrl-C only records the request, and the callback raises
    KeyboardInterrupt after the current step: raised at once, it can land while
    TensorFlow's C++ code is calling back into Python, and TensorFlow then aborts
    the process ("Check failed: !PyErr_Occurred()", a C++ stack trace, status -6)
    instead of saying how to resume. A second Ctrl-C stops at once.
    """
    global _LOOPS_STOPPING_AT_STEP_ENDS
    if entering is None:
        _LOOPS_STOPPING_AT_STEP_ENDS = 0
    else:
        _LOOPS_STOPPING_AT_STEP_ENDS = max(
            0, _LOOPS_STOPPING_AT_STEP_ENDS + (1 if entering else -1)
        )


def _on_interrupt(signum: int, frame: Any) -> None:
    global _LOOPS_STOPPING_AT_STEP_ENDS
    first = not _INTERRUPT_REQUESTED.is_set()
    _INTERRUPT_REQUESTED.set()
    if first and _LOOPS_STOPPING_AT_STEP_ENDS > 0:
        # No logging here: a signal handler can interrupt a write to the same stream.
        # On a terminal, Keras's progress bar holds the line: start a new one.
        with contextlib.suppress(OSError):
            newline = b"\n" if os.isatty(2) else b""
            os.write(2, newline + b"Stopping after this step (Ctrl-C again stops at once).\n")
        return
    _LOOPS_STOPPING_AT_STEP_ENDS = 0
    # Outside a Keras loop Python raises KeyboardInterrupt wherever the main thread
    # is; inside a finalizer (__del__, which TensorFlow's objects run often) it is
    # printed as "Exception ignored" and dropped. The flag survives:
    # shared.callbacks.StopOnInterrupt raises it again at the next step.
    raise KeyboardInterrupt


def run_training_cli(
    main: Callable[[ConfigT], Any],
    config_class: type[ConfigT],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> Any:
    """Parse flags into ``config_class`` and call ``main(config)``.

    Ctrl-C during training prints how to resume instead of a traceback.

    Args:
        main: The project's ``main(config) -> metrics``.
        config_class: The project's config dataclass.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: ``--help`` text (default: the config's docstring).

    Returns:
        What ``main`` returned.
    """
    setup_logging()
    config = _PARSED_CONFIGS.pop(config_class, None) if argv is None else None
    if config is None:
        config = parse_config(config_class, argv, description)

    def train() -> Any:
        # A job its shell started with Ctrl-C ignored (`cmd &` in a script) stays so.
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, _on_interrupt)
        try:
            return main(config)
        except KeyboardInterrupt:
            pass
        except Exception:
            if not interrupt_requested():
                raise
            # Ctrl-C reached every worker of a multi-worker run; one that stopped at
            # its step's end leaves the others' next collective failing ("tasks are
            # unhealthy"). That failure is the interruption, not a crash.
        _explain_interruption()
        if main_thread:
            _exit_now(130)
        raise SystemExit(130) from None

    return exit_on_user_error(train)


def _exit_now(status: int) -> None:
    """Exit at once, skipping the interpreter's teardown.

    An interrupted ``fit`` leaves TensorFlow's threads (input pipeline, eager
    executor) running; tearing the interpreter down under them crashed once in
    about thirty interruptions (signal 11 instead of status 130). Everything
    the run keeps is already on disk (each file written atomically), so the
    process only flushes its output and ends.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _explain_interruption() -> None:
    from shared.distribute import cluster_spec, worker_role  # loaded by now
    from shared.runs import active_run

    run = active_run()
    if run is None:
        log.error("Training was interrupted before it started; nothing was written.")
        return
    run.close_log()
    is_chief, index = worker_role()
    if not is_chief:  # its run directory is a scratch copy; the chief's message is the one
        log.error("Training interrupted (worker %d); the chief says how to resume.", index)
        return
    arguments = list(sys.orig_argv[1:])
    if "--run-dir" not in arguments and not any(a.startswith("--run-dir=") for a in arguments):
        arguments += ["--run-dir", str(run.path)]
    how = (
        "start every worker again with the same command and the same --run-dir (under "
        "shared.launch: the same launch command, with this --run-dir)"
        if cluster_spec() is not None
        else "run the same command with the same --run-dir"
    )
    log.error(
        "Training interrupted. Completed epochs are kept in %s; to resume from the last "
        "one, %s:\n  python %s",
        run.path,
        how,
        shlex.join(arguments),
    )
