"""Entry-point plumbing: logging set-up and clean exits on user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from shared.config import TrainConfig, parse_config
from shared.errors import UserError

ConfigT = TypeVar("ConfigT", bound=TrainConfig)

log = logging.getLogger(__name__)


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


def exit_on_user_error(function: Callable[[], Any]) -> Any:
    """Call ``function``; on a `UserError` log its message and exit with status 2.

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


def run_training_cli(
    main: Callable[[ConfigT], Any],
    config_class: type[ConfigT],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> Any:
    """Parse flags into ``config_class`` and call ``main(config)``.

    Args:
        main: The project's ``main(config) -> metrics``.
        config_class: The project's config dataclass.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: ``--help`` text (default: the config's docstring).

    Returns:
        What ``main`` returned.
    """
    setup_logging()
    config = parse_config(config_class, argv, description)
    return exit_on_user_error(lambda: main(config))
