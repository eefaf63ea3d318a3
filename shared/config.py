"""Frozen-dataclass configs and the command line built from them.

A project declares its settings once, as a frozen dataclass whose fields carry
their help text and limits::

    @dataclass(frozen=True)
    class XorConfig(TrainConfig):
        hidden_units: int = option(8, "Neurons in the hidden layer.", minimum=1)
        QUICK = {"epochs": 5}

`parse_config(XorConfig, argv)` turns every field into a ``--kebab-case`` flag
with its type and help, rejects unknown flags (listing the valid ones), rejects
values outside the declared limits, and applies the class's ``QUICK`` overrides
when ``--quick`` is given. Flags given explicitly win over ``--quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import sys
import typing
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from shared.errors import UserError

STRATEGY_CHOICES = ("auto", "default", "mirrored", "multiworker")
KEEP_CHOICES = ("best", "last")

ConfigT = TypeVar("ConfigT", bound="TrainConfig")


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the flag and the fix."""


def option(
    default: Any,
    help: str,  # noqa: A002 - mirrors argparse's own keyword
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[Any] | None = None,
    exclusive_minimum: bool = False,
    repeatable: bool = False,
) -> Any:
    """Declare a config field with its help text and the values it accepts.

    Args:
        default: The value used when the flag is not given.
        help: One sentence for ``--help``.
        minimum: Smallest accepted value (inclusive unless ``exclusive_minimum``).
        maximum: Largest accepted value (inclusive).
        choices: The only accepted values.
        exclusive_minimum: Makes ``minimum`` itself invalid (for "must be > 0").
        repeatable: The flag may be given several times; the config class's
            `TrainConfig.merge_repeated` decides what several values mean.

    Returns:
        A ``dataclasses.field`` carrying the metadata `parse_config` reads.
    """
    metadata = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": tuple(choices) if choices is not None else None,
        "exclusive_minimum": exclusive_minimum,
        "repeatable": repeatable,
    }
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings every training entry point accepts.

    Subclasses add their own fields with `option` and may set ``QUICK``, a dict
    of field overrides for a run that finishes end to end in seconds, and
    ``PRESETS``, defaults that depend on another field's value:
    ``{"cell": {"transformer": {"layers": 4}}}`` makes ``--layers`` default to 4
    when ``--cell transformer`` is chosen. Build such a config with `create`.
    """

    QUICK: ClassVar[dict[str, Any]] = {}
    PRESETS: ClassVar[dict[str, dict[Any, dict[str, Any]]]] = {}

    @classmethod
    def create(cls: type[ConfigT], **values: Any) -> ConfigT:
        """The config for ``values``, with ``QUICK`` and ``PRESETS`` applied as on the command line.

        Precedence: ``values``, then ``QUICK`` (when ``quick=True``), then the
        presets of the chosen values (e.g. of ``cell``), then the field defaults.
        """
        chosen = dict(cls.QUICK) if values.get("quick") else {}
        chosen.update(values)
        defaults = {field.name: field.default for field in dataclasses.fields(cls)}
        preset: dict[str, Any] = {}
        for field_name, by_value in cls.PRESETS.items():
            preset.update(by_value.get(chosen.get(field_name, defaults[field_name]), {}))
        return cls(**{**preset, **chosen})

    epochs: int = option(10, "Passes over the training data.", minimum=1)
    batch_size: int = option(
        32, "Global batch size (split across replicas when distributed).", minimum=1
    )
    seed: int = option(0, "Seed for Python, NumPy and Keras.", minimum=0)
    run_dir: str = option(
        "", "Run directory (default: runs/<project>/<UTC time>). Re-use one to resume."
    )
    strategy: str = option(
        "auto",
        "Distribution: auto (all GPUs, else CPU; multiworker when TF_CONFIG names 2+ "
        "workers), default (one device), mirrored (all GPUs, or all logical CPUs) or "
        "multiworker (the processes named by TF_CONFIG; see python -m shared.launch).",
        choices=STRATEGY_CHOICES,
    )
    keep: str = option(
        "best",
        "Which epoch model.keras holds (and metrics.json scores): best (the best validation "
        "score; the last epoch is kept as last.keras) or last (the best is kept as best.keras).",
        choices=KEEP_CHOICES,
    )
    quick: bool = option(False, "Tiny end-to-end run (seconds) for smoke tests.")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_limits(field, getattr(self, field.name))

    @classmethod
    def merge_repeated(cls, name: str, values: list[Any], given: dict[str, Any]) -> dict[str, Any]:
        """The field values meant by a ``repeatable`` flag given more than once.

        Args:
            name: The field's name.
            values: Its values, in command-line order (two or more).
            given: Every other flag given on the command line (field name -> value).

        Returns:
            Field name -> value, applied to the config.

        Raises:
            ConfigError: Several values have no meaning for this field.
        """
        raise ConfigError(f"{flag_name(name)} can be given only once, got {len(values)} values.")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-serialisable values."""
        return dataclasses.asdict(self)


def _check_limits(field: dataclasses.Field, value: Any) -> None:
    meta = field.metadata
    flag = flag_name(field.name)
    # float("inf") and float("nan") parse; neither is a usable setting.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}.")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{flag} {value!r} is not valid; choose one of: "
            + ", ".join(str(choice) for choice in choices)
        )
    minimum = meta.get("minimum")
    if minimum is not None:
        if meta.get("exclusive_minimum") and not value > minimum:
            raise ConfigError(f"{flag} must be greater than {minimum}, got {value}.")
        if not meta.get("exclusive_minimum") and value < minimum:
            raise ConfigError(f"{flag} must be at least {minimum}, got {value}.")
    maximum = meta.get("maximum")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{flag} must be at most {maximum}, got {value}.")


def program_name() -> str | None:
    """``python -m package.module`` when run that way (argparse would say ``module.py``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return f"python -m {spec.name}"
    return None


class _StrictParser(argparse.ArgumentParser):
    """An ArgumentParser whose unknown-flag error lists the valid flags."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("prog", program_name())
        super().__init__(*args, allow_abbrev=False, **kwargs)
        self.valid_flags: list[str] = []

    def reject_unknown(self, unknown: Sequence[str]) -> None:
        flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
        shown = flags or list(unknown)
        hints = []
        for flag in flags:
            close = difflib.get_close_matches(flag, self.valid_flags, n=1)
            if close:
                hints.append(f"did you mean {close[0]}?")
        message = (
            f"unknown argument(s): {' '.join(shown)}"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f"\nvalid flags: {' '.join(self.valid_flags)}"
        )
        self.error(message)


def build_parser(config_class: type[ConfigT], description: str | None = None) -> _StrictParser:
    """Build the command-line parser for a config dataclass.

    Every dataclass field becomes a ``--kebab-case`` flag. Booleans become
    ``--flag`` / ``--no-flag`` pairs. Defaults are shown in ``--help``.

    Args:
        config_class: A frozen dataclass derived from `TrainConfig`.
        description: Text shown at the top of ``--help``.

    Returns:
        The parser; use `parse_config` to get a validated config.
    """
    types = typing.get_type_hints(config_class)
    fields = dataclasses.fields(config_class)
    valid_flags = ["--help"]
    parser = _StrictParser(
        description=description or (config_class.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    for field in fields:
        flag = flag_name(field.name)
        field_type = types[field.name]
        # argparse %-formats help texts: "5%" in a text would crash --help.
        help_text = field.metadata.get("help", "").replace("%", "%%")
        help_text += "".join(
            f" [{flag_name(chooser)} {value}: {overrides[field.name]!r}]"
            for chooser, by_value in config_class.PRESETS.items()
            for value, overrides in by_value.items()
            if field.name in overrides
        )
        choices = field.metadata.get("choices")
        if field_type is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                help=f"{help_text} (default: {field.default})",
            )
            valid_flags.extend([flag, "--no-" + flag[2:]])
            continue
        if field_type not in (int, float, str):
            raise TypeError(
                f"{config_class.__name__}.{field.name}: config fields must be "
                f"int, float, str or bool, not {field_type!r}"
            )
        parser.add_argument(
            flag,
            action="append" if field.metadata.get("repeatable") else "store",
            type=field_type,
            choices=choices,
            metavar=None if choices else field.name.upper(),
            help=f"{help_text} (default: {field.default!r})",
        )
        valid_flags.append(flag)
    parser.valid_flags = valid_flags
    return parser


def parse_config(
    config_class: type[ConfigT],
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> ConfigT:
    """Parse command-line flags into a validated, frozen config.

    Order of precedence: explicit flags, then ``QUICK`` overrides (only with
    ``--quick``), then ``PRESETS`` of the chosen values, then the dataclass
    defaults. Invalid input exits with status 2
    and a message naming the flag, as argparse does.

    Args:
        config_class: A frozen dataclass derived from `TrainConfig`.
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
        description: Text shown at the top of ``--help``.

    Returns:
        An instance of ``config_class``.
    """
    parser = build_parser(config_class, description)
    namespace, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if unknown:
        parser.reject_unknown(unknown)
    given = vars(namespace)
    try:
        for field in dataclasses.fields(config_class):
            values = given.get(field.name)
            if field.metadata.get("repeatable") and isinstance(values, list):
                if len(values) == 1:
                    given[field.name] = values[0]
                else:
                    others = {key: value for key, value in given.items() if key != field.name}
                    del given[field.name]
                    given.update(config_class.merge_repeated(field.name, values, others))
        return config_class.create(**given)
    except ConfigError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits
