"""Config dataclass -> command line: flags, types, help, errors, --quick."""

from __future__ import annotations

import dataclasses
import math

import pytest

from projects.cifar_cnn.config import DEFAULT_EPOCHS, CifarConfig
from projects.shakespeare.config import ShakespeareConfig
from projects.stock_lstm.config import StockConfig
from projects.xor_mlp.config import XorConfig
from shared.config import ConfigError, TrainConfig, build_parser, option, parse_config


@dataclasses.dataclass(frozen=True)
class DemoConfig(TrainConfig):
    """A demo config."""

    QUICK = {"epochs": 1, "hidden_units": 2}

    hidden_units: int = option(16, "Neurons per layer.", minimum=1)
    learning_rate: float = option(0.01, "Step size.", minimum=0.0, exclusive_minimum=True)
    cell: str = option("lstm", "Recurrent cell.", choices=("lstm", "gru"))
    shuffle: bool = option(True, "Shuffle the data.")


def parse_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        parse_config(DemoConfig, argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def test_defaults_come_from_the_dataclass():
    config = parse_config(DemoConfig, [])
    assert config == DemoConfig()
    assert config.epochs == 10 and config.strategy == "auto" and config.quick is False


def test_flags_are_kebab_case_and_typed():
    config = parse_config(
        DemoConfig,
        [
            "--hidden-units",
            "7",
            "--learning-rate",
            "0.5",
            "--cell",
            "gru",
            "--no-shuffle",
            "--batch-size",
            "64",
            "--run-dir",
            "somewhere",
            "--strategy",
            "mirrored",
        ],
    )
    assert config.hidden_units == 7 and isinstance(config.hidden_units, int)
    assert config.learning_rate == 0.5 and isinstance(config.learning_rate, float)
    assert config.cell == "gru"
    assert config.shuffle is False
    assert config.batch_size == 64
    assert config.run_dir == "somewhere"
    assert config.strategy == "mirrored"


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DemoConfig().epochs = 3  # type: ignore[misc]


def test_help_lists_every_field_with_its_help_text():
    text = build_parser(DemoConfig).format_help()
    for flag in [
        "--epochs",
        "--batch-size",
        "--seed",
        "--run-dir",
        "--strategy",
        "--quick",
        "--hidden-units",
        "--learning-rate",
        "--cell",
        "--shuffle",
        "--no-shuffle",
    ]:
        assert flag in text
    assert "Neurons per layer." in text
    assert "Global batch size" in text


def test_unknown_flag_is_rejected_with_the_valid_flags(capsys):
    err = parse_error(["--hidden-unit", "3"], capsys)
    assert "unknown argument(s): --hidden-unit" in err
    assert "did you mean --hidden-units?" in err
    assert "valid flags:" in err and "--learning-rate" in err and "--epochs" in err


def test_abbreviated_flags_are_not_accepted(capsys):
    err = parse_error(["--epoch", "3"], capsys)
    assert "--epoch" in err and "valid flags" in err


def test_out_of_range_values_name_the_flag(capsys):
    assert "--epochs must be at least 1, got -1" in parse_error(["--epochs", "-1"], capsys)
    assert "--learning-rate must be greater than 0.0" in parse_error(
        ["--learning-rate", "0"], capsys
    )


def test_wrong_type_and_bad_choice_are_rejected(capsys):
    assert "invalid int value: 'ten'" in parse_error(["--epochs", "ten"], capsys)
    assert "invalid choice: 'rnn'" in parse_error(["--cell", "rnn"], capsys)
    assert "invalid choice: 'tpu'" in parse_error(["--strategy", "tpu"], capsys)


def test_invalid_values_fail_when_built_from_python_too():
    with pytest.raises(ConfigError, match="--batch-size must be at least 1"):
        DemoConfig(batch_size=0)
    with pytest.raises(ConfigError, match="--cell 'rnn' is not valid; choose one of: lstm, gru"):
        DemoConfig(cell="rnn")


def test_quick_applies_overrides_and_explicit_flags_win():
    quick = parse_config(DemoConfig, ["--quick"])
    assert quick.quick is True and quick.epochs == 1 and quick.hidden_units == 2
    mixed = parse_config(DemoConfig, ["--quick", "--epochs", "4"])
    assert mixed.epochs == 4 and mixed.hidden_units == 2
    mixed_order = parse_config(DemoConfig, ["--epochs", "4", "--quick"])
    assert mixed_order.epochs == 4


ALL_CONFIGS = (XorConfig, StockConfig, ShakespeareConfig, CifarConfig)


@pytest.mark.parametrize("config_class", ALL_CONFIGS)
def test_every_project_quick_config_is_valid_and_smaller(config_class):
    quick = parse_config(config_class, ["--quick"])
    default = config_class()
    # --epochs 0 means CIFAR's model's own recipe, or Shakespeare's 20-minute budget.
    default_epochs = default.epochs or DEFAULT_EPOCHS.get(getattr(default, "model", ""), math.inf)
    assert quick.quick and 1 <= quick.epochs <= default_epochs
    assert quick != dataclasses.replace(default, quick=True), "QUICK changes nothing"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_non_finite_floats_are_rejected_naming_the_flag(value, capsys):
    err = parse_error([f"--learning-rate={value}"], capsys)
    assert "--learning-rate must be a finite number" in err


def test_non_finite_floats_fail_when_built_from_python_too():
    with pytest.raises(ConfigError, match="--learning-rate must be a finite number, got inf"):
        XorConfig(learning_rate=float("inf"))


@dataclasses.dataclass(frozen=True)
class PresetConfig(DemoConfig):
    """A demo config whose defaults depend on the cell."""

    PRESETS = {"cell": {"gru": {"hidden_units": 64, "learning_rate": 0.5}}}


def test_presets_set_defaults_for_the_chosen_value_only():
    assert parse_config(PresetConfig, []) == PresetConfig()  # lstm: no preset
    gru = parse_config(PresetConfig, ["--cell", "gru"])
    assert (gru.hidden_units, gru.learning_rate) == (64, 0.5)
    # Explicit flags win over the preset, and --quick's overrides too.
    assert parse_config(PresetConfig, ["--cell", "gru", "--hidden-units", "8"]).hidden_units == 8
    quick = parse_config(PresetConfig, ["--cell", "gru", "--quick"])
    assert (quick.hidden_units, quick.learning_rate, quick.epochs) == (2, 0.5, 1)
    # The same from Python, and --help tells the preset.
    assert PresetConfig.create(cell="gru", epochs=3) == gru.__class__(
        cell="gru", hidden_units=64, learning_rate=0.5, epochs=3
    )
    assert "[--cell gru: 64]" in " ".join(build_parser(PresetConfig).format_help().split())
    # The transformer's --quick run: --quick's sizes, the preset's blocks and dropout.
    quick = ShakespeareConfig.create(quick=True, cell="transformer")
    assert (quick.embedding_dim, quick.layers, quick.dropout) == (16, 4, 0.1)


def test_transformer_width_must_divide_into_heads(capsys):
    with pytest.raises(ConfigError, match="--embedding-dim 100 must be divisible by --heads 8"):
        ShakespeareConfig.create(cell="transformer", embedding_dim=100, heads=8)
    assert ShakespeareConfig.create(cell="transformer").embedding_dim == 128


def test_validation_windows_follow_nanogpt_unless_the_transformer_reads_less():
    assert ShakespeareConfig().validation_window == 256  # RNNs: nanoGPT's block size
    assert ShakespeareConfig(eval_length=100).validation_window == 100
    transformer = ShakespeareConfig.create(cell="transformer", seq_length=128)
    assert transformer.validation_window == 128  # it reads no more than its window
    with pytest.raises(ConfigError, match="--eval-length 200 is longer than --seq-length 128"):
        ShakespeareConfig.create(cell="transformer", seq_length=128, eval_length=200)


def test_shakespeare_trains_the_lstm_for_twenty_minutes_unless_told_otherwise():
    default = parse_config(ShakespeareConfig, [])
    assert (default.cell, default.learning_rate, default.budget_minutes) == ("lstm", 3e-3, 20)
    assert parse_config(ShakespeareConfig, ["--cell", "gru"]).learning_rate == 2e-3
    assert parse_config(ShakespeareConfig, ["--epochs", "5"]).budget_minutes == 0
    assert parse_config(ShakespeareConfig, ["--quick"]).budget_minutes == 0  # 1 epoch
    assert parse_config(ShakespeareConfig, ["--minutes", "3"]).budget_minutes == 3
    # An explicit budget decides the epochs even when --epochs is given too.
    assert parse_config(ShakespeareConfig, ["--epochs", "5", "--minutes", "3"]).budget_minutes == 3
