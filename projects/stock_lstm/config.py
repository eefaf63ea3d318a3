"""Settings of the stock forecasting project (every field is a command-line flag)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import ConfigError, TrainConfig, option

CELLS = ("simplernn", "lstm", "gru")


@dataclass(frozen=True)
class StockConfig(TrainConfig):
    """Forecast daily closing prices with a SimpleRNN/LSTM/GRU and compare it with baselines."""

    QUICK = {"epochs": 2, "window": 20, "units": 8, "start": "2021-01-01", "patience": 2}

    epochs: int = option(60, "Maximum passes over the training windows.", minimum=1)
    batch_size: int = option(64, "Global batch size.", minimum=1)
    ticker: str = option("AAPL", "Yahoo Finance symbol (bundled offline: AAPL GOOGL MSFT NVDA).")
    csv: str = option(
        "",
        "Train on this CSV (Date, Close; Open/High/Low/Volume used if present). Given several "
        "times (each file ending in .csv), train one global model on all of them, as --tickers.",
        repeatable=True,
    )
    tickers: str = option(
        "",
        "Train one global model on several series, comma-separated tickers or .csv files "
        "(e.g. AAPL,MSFT,NVDA,GOOGL or AAPL,my.csv), each normalised on its own, scored per "
        "series.",
    )
    start: str = option("2013-01-01", "First date of the price history (YYYY-MM-DD).")
    end: str = option("2024-01-01", "Day after the last date (YYYY-MM-DD).")
    cache_dir: str = option("", "Folder caching downloaded prices (default: .cache/prices).")
    window: int = option(60, "Past trading days the model sees.", minimum=2)
    horizon: int = option(1, "Future trading days forecast at once.", minimum=1)
    target: str = option(
        "price",
        "What to forecast: price (the log returns to the next --horizon closes) or "
        "volatility (the realised volatility of the next --horizon days, against naive, "
        "HAR-RV and GARCH(1,1)).",
        choices=("price", "volatility"),
    )
    cell: str = option("lstm", "Recurrent cell.", choices=CELLS)
    units: int = option(64, "Units per recurrent layer.", minimum=1)
    layers: int = option(1, "Stacked recurrent layers.", minimum=1)
    dropout: float = option(0.0, "Dropout after each recurrent layer.", minimum=0.0, maximum=0.9)
    learning_rate: float = option(1e-3, "Adam learning rate.", minimum=0.0, exclusive_minimum=True)
    patience: int = option(10, "Stop after this many epochs without validation gain.", minimum=1)
    val_fraction: float = option(0.15, "Share of windows for validation.", minimum=0.01)
    test_fraction: float = option(0.15, "Share of windows for the test period.", minimum=0.01)
    walk_forward: int = option(
        0, "Also evaluate on K consecutive test periods (rolling origin); 0 = off.", minimum=0
    )
    interval: float = option(0.8, "Prediction-interval coverage.", minimum=0.5, maximum=0.99)
    interval_gamma: float = option(
        0.05,
        "Step size of adaptive conformal inference: how fast the interval's miscoverage "
        "level follows the misses of the test days (0.05: its long-run coverage is within "
        "about 4 points of --interval over 400 days).",
        minimum=0.0,
        maximum=0.5,
    )
    ma_window: int = option(20, "Days averaged by the moving-average baseline.", minimum=1)

    @classmethod
    def merge_repeated(cls, name: str, values: list, given: dict) -> dict:
        """Several ``--csv`` files: one global model on them (``--tickers a.csv,b.csv``)."""
        if name != "csv":
            return super().merge_repeated(name, values, given)
        if given.get("tickers"):
            raise ConfigError(
                "--csv given several times already names the global model's series; "
                "drop --tickers, or list every series in --tickers."
            )
        for path in values:
            if not path.lower().endswith(".csv") or "," in path:
                raise ConfigError(
                    f"--csv {path!r}: a global model's price files must end in .csv and have "
                    "no comma in their path; rename the file."
                )
        return {"tickers": ",".join(values)}

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checked here, so that a bad symbol is refused before TensorFlow loads (seconds).
        from shared.prices import PriceDataError, validate_ticker  # pandas, not TensorFlow

        series = parse_tickers(self.tickers) if self.tickers else [self.ticker]
        for symbol in series:
            if not symbol.lower().endswith(".csv"):
                try:
                    validate_ticker(symbol)
                except PriceDataError as error:
                    raise ConfigError(str(error)) from None
        if self.tickers and (self.csv or self.walk_forward):
            raise ConfigError(
                "--tickers trains a global model on downloaded or bundled prices; it does not "
                "combine with --csv or --walk-forward."
            )
        if self.target == "volatility" and self.walk_forward:
            raise ConfigError(
                "--walk-forward evaluates price forecasts only; drop it or use --target price."
            )
        test_periods = max(self.walk_forward, 1)
        if self.val_fraction + test_periods * self.test_fraction >= 0.9:
            raise ConfigError(
                "--val-fraction plus --test-fraction (times --walk-forward periods) must "
                "leave 10% of the windows for training; lower --test-fraction or --walk-forward."
            )


def parse_tickers(text: str) -> list[str]:
    """``"AAPL, msft, my.csv"`` -> ``["AAPL", "MSFT", "my.csv"]``; at least two, no repeats.

    Entries ending in ``.csv`` are price files (as ``--csv`` reads them), kept as written.
    """
    tickers = [
        part.strip() if part.strip().lower().endswith(".csv") else part.strip().upper()
        for part in text.split(",")
        if part.strip()
    ]
    if len(tickers) < 2 or len(set(tickers)) != len(tickers):
        raise ConfigError(
            f"--tickers {text!r}: give two or more different tickers separated by commas, "
            "e.g. --tickers AAPL,MSFT,NVDA,GOOGL."
        )
    return tickers
