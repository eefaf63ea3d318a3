"""Daily stock prices: local cache, then Yahoo Finance (yfinance), then bundled real data.

    frame = load_prices("AAPL", "2013-01-01", "2024-01-01")

returns a frame indexed by ``Date`` with float columns ``Open, High, Low, Close,
Volume`` (``Close`` always; the others when the source has them), sorted, one
row per trading day, no missing values. One log line names the source used.

Prices are split-adjusted but not dividend-adjusted (yfinance's
``auto_adjust=False`` ``Close``), the same as the bundled files, so a model
trained on one source sees the same kind of series from another.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import UserError
from shared.saving import atomic_path

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "datasets" / "stocks"
BUNDLED_TICKERS = ("AAPL", "GOOGL", "MSFT", "NVDA")
DEFAULT_CACHE_DIR = Path(".cache") / "prices"
PRICE_COLUMNS = ("Open", "High", "Low", "Close", "Volume")
RATE_LIMIT_RETRIES = 3
RATE_LIMIT_FIRST_WAIT_SECONDS = 2.0

# Yahoo symbols: letters, digits and . - ^ = (e.g. BRK-B, ^GSPC, EURUSD=X).
_TICKER_PATTERN = re.compile(r"[A-Za-z0-9^][A-Za-z0-9.^=-]{0,19}")


class PriceDataError(UserError):
    """Prices cannot be had, or a price file is malformed."""


def validate_ticker(ticker: str) -> str:
    """Return ``ticker`` upper-cased, or raise `PriceDataError` if it is not a plain symbol.

    The ticker becomes part of a cache file name, so anything that could
    reach outside the cache folder (``/``, ``\\``, ``..``) is refused before
    the file system is touched.
    """
    if not _TICKER_PATTERN.fullmatch(ticker) or ".." in ticker:
        raise PriceDataError(
            f"invalid ticker {ticker!r}: use a plain symbol of letters, digits and . - ^ = "
            "(e.g. AAPL, BRK-B, ^GSPC); paths are not allowed (use --csv for a file)."
        )
    return ticker.upper()


def _validate_dates(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    try:
        first, last = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as error:
        raise PriceDataError(f"dates must look like 2013-01-31: {error}") from None
    if first >= last:
        raise PriceDataError(f"start {start} must be before end {end}.")
    return first, last


# More rows with a missing value than this stop the run instead of leaving holes in the series.
MAX_SKIPPED_ROWS = 5
# 1,588.65 or -12,345: digits grouped in threes by commas (thousands separators).
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")
_DATE_FORMATS = (
    "dates must be written YYYY-MM-DD (e.g. 2023-01-31), optionally with a time "
    "(2023-01-31 16:00:00-05:00)"
)


def clean_prices(raw: pd.DataFrame, source: str, first_line: int | None = None) -> pd.DataFrame:
    """Turn any frame with a date and a Close column into the standard shape.

    Accepts a ``Date`` column or a date index, and yfinance's MultiIndex columns
    (``(Price, Ticker)``). Prices may use thousands separators (``1,588.65``).
    Up to `MAX_SKIPPED_ROWS` rows with a missing value are skipped, with a log
    line; duplicate dates keep their last row.

    Args:
        raw: The frame as read or downloaded.
        source: Where it came from, for messages.
        first_line: The file line of the first row (2 for a CSV with a header),
            so messages can name lines; None names rows instead.

    Returns:
        The cleaned frame.

    Raises:
        PriceDataError: No ``Date`` or ``Close``; a date that is not YYYY-MM-DD;
            a value that is not a number; an infinite, zero or negative close;
            too many missing values; or no rows. The message names the first
            offending row.
    """
    frame = raw.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        # yfinance's default layout: level 0 is the field, level 1 the ticker.
        frame.columns = frame.columns.get_level_values(0)
    frame.columns = [str(column).strip() for column in frame.columns]
    if "Date" not in frame.columns:
        if isinstance(frame.index, pd.DatetimeIndex) or frame.index.name in ("Date", "Datetime"):
            frame = frame.reset_index().rename(columns={frame.index.name or "index": "Date"})
        else:
            raise PriceDataError(f"{source} has no 'Date' column (columns: {list(frame.columns)}).")
    if "Close" not in frame.columns:
        raise PriceDataError(
            f"{source} has no 'Close' column (columns: {list(frame.columns)}); "
            "a price file needs at least Date and Close."
        )
    frame = frame.reset_index(drop=True)

    def where(position: int) -> str:
        if first_line is None:
            return f"row {position + 1}"
        return f"line {position + first_line}"

    dates = _parse_dates(frame["Date"], source, where)
    columns = [column for column in PRICE_COLUMNS if column in frame.columns]
    values = pd.DataFrame(
        {column: _parse_numbers(frame[column], column, source, where) for column in columns}
    )
    values.index = pd.DatetimeIndex(dates, name="Date")

    def at(position: int) -> str:
        date = values.index[position]
        return where(position) + ("" if pd.isna(date) else f", {date:%Y-%m-%d}")

    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        row, column = np.argwhere(infinite)[0]
        raise PriceDataError(
            f"{source}: {columns[column]} is infinite on {at(row)}; prices must be finite "
            "numbers. Fix or remove that row."
        )
    incomplete = np.flatnonzero(values.isna().any(axis=1).to_numpy() | values.index.isna())
    if len(incomplete) > MAX_SKIPPED_ROWS:
        raise PriceDataError(
            f"{source}: {len(incomplete)} rows have a missing date or value (first: "
            f"{where(incomplete[0])}); at most {MAX_SKIPPED_ROWS} are skipped, since more "
            "would leave holes in the series. Fill in or remove those rows."
        )
    if len(incomplete):
        log.warning(
            "%s: skipped %d row(s) with a missing date or value (%s)",
            source,
            len(incomplete),
            ", ".join(where(position) for position in incomplete),
        )
    not_positive = np.flatnonzero((values["Close"] <= 0).to_numpy())
    if len(not_positive):
        position = not_positive[0]
        raise PriceDataError(
            f"{source}: Close prices must be positive; {at(position)} has "
            f"{values['Close'].iloc[position]:g}."
        )
    values = values.drop(values.index[incomplete]) if len(incomplete) else values
    values = values[~values.index.duplicated(keep="last")].sort_index()
    if values.empty:
        raise PriceDataError(f"{source} has no rows with a date and a Close price.")
    return values


def _parse_dates(column: pd.Series, source: str, where) -> pd.DatetimeIndex:
    """Dates at midnight, no time zone; NaT where missing. Only YYYY-MM-DD is accepted."""
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif pd.api.types.is_numeric_dtype(column) and column.notna().any():
        first = column.dropna().iloc[0].item()
        raise PriceDataError(
            f"{source}: the Date column holds numbers (e.g. {first!r} on "
            f"{where(int(column.first_valid_index()))}), not dates; {_DATE_FORMATS}."
        )
    else:
        text = column.astype("string").str.strip()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = pd.to_datetime(text, format="ISO8601", utc=True)
        except (ValueError, TypeError, OverflowError):
            for position, value in enumerate(text):
                if pd.isna(value):
                    continue
                try:
                    pd.to_datetime(value, format="ISO8601")
                except (ValueError, TypeError, OverflowError):
                    hint = (
                        " Day/month/year and month/day/year dates are ambiguous: convert them."
                        if "/" in value or "." in value
                        else ""
                    )
                    raise PriceDataError(
                        f"{source}: the Date {value!r} on {where(position)} is not a date; "
                        f"{_DATE_FORMATS}.{hint}"
                    ) from None
            raise
    return pd.DatetimeIndex(parsed.dt.tz_localize(None).dt.normalize())


def _parse_numbers(column: pd.Series, name: str, source: str, where) -> pd.Series:
    """``column`` as float64: missing values stay NaN; text that is not a number is refused."""
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    text = column.astype("string").str.strip()
    grouped = text.str.fullmatch(_THOUSANDS).fillna(False).to_numpy(dtype=bool)
    text = text.where(~grouped, text.str.replace(",", "", regex=False))
    numbers = pd.to_numeric(text, errors="coerce")
    not_numbers = np.flatnonzero((numbers.isna() & text.notna() & (text != "")).to_numpy())
    if len(not_numbers):
        shown = ", ".join(
            f"{column.iloc[position]!r} ({where(position)})" for position in not_numbers[:3]
        )
        more = f" and {len(not_numbers) - 3} more" if len(not_numbers) > 3 else ""
        raise PriceDataError(
            f"{source}: column {name} has values that are not numbers: {shown}{more}. "
            "Write plain numbers such as 1588.65 (thousands separators like 1,588.65 are "
            "accepted)."
        )
    return numbers.astype("float64")


def read_price_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV with at least ``Date`` and ``Close`` columns into the standard frame.

    Args:
        path: The CSV file.

    Returns:
        The cleaned frame (see `clean_prices`).
    """
    path = Path(path)
    if not path.is_file():
        raise PriceDataError(f"no CSV file at {path}.")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise PriceDataError(f"{path} is not a readable CSV file ({error}).") from None
    return clean_prices(raw, str(path), first_line=2)


def _cache_file(cache_dir: Path, ticker: str, start: pd.Timestamp, end: pd.Timestamp) -> Path:
    return cache_dir / f"{ticker}_{start:%Y-%m-%d}_{end:%Y-%m-%d}.csv"


def _from_cache(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    try:
        return read_price_csv(path)
    except PriceDataError as error:
        log.warning("Cache file %s is corrupt (%s); deleting it and fetching again", path, error)
        path.unlink(missing_ok=True)
        return None


def _from_yfinance(ticker: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
    try:
        import yfinance as yf
        from yfinance.exceptions import YFRateLimitError
    except ImportError:
        log.info("yfinance is not installed; skipping the download")
        return None
    wait = RATE_LIMIT_FIRST_WAIT_SECONDS
    for attempt in range(1, RATE_LIMIT_RETRIES + 1):
        try:
            with _quiet_yfinance():
                raw = yf.download(
                    ticker,
                    start=f"{start:%Y-%m-%d}",
                    end=f"{end:%Y-%m-%d}",
                    auto_adjust=False,
                    multi_level_index=False,
                    progress=False,
                )
        except YFRateLimitError:
            if attempt == RATE_LIMIT_RETRIES:
                log.info("Yahoo Finance rate limit: gave up after %d attempts", attempt)
                return None
            log.info("Yahoo Finance rate limit; retrying in %.0f s", wait)
            time.sleep(wait)
            wait *= 2
            continue
        except Exception as error:  # yfinance raises many types for network failures.
            log.debug("Yahoo Finance download of %s failed: %s", ticker, error)
            return None
        # yfinance reports most failures as an empty frame, not an exception.
        if raw is None or raw.empty:
            log.debug("Yahoo Finance returned no data for %s", ticker)
            return None
        try:
            return clean_prices(raw, f"Yahoo Finance ({ticker})")
        except PriceDataError as error:
            log.warning("Yahoo Finance data for %s unusable: %s", ticker, error)
            return None
    return None


@contextlib.contextmanager
def _quiet_yfinance() -> Iterator[None]:
    """Hide yfinance's own log lines and warnings; this module logs the outcome once."""
    logger = logging.getLogger("yfinance")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _write_cache(frame: pd.DataFrame, path: Path) -> None:
    try:
        with atomic_path(path) as temporary:
            frame.to_csv(temporary, index_label="Date", date_format="%Y-%m-%d")
    except OSError as error:  # a cache that cannot be written costs a download next time
        log.warning("Could not cache the prices in %s (%s)", path, error.strerror or error)


def _from_bundled(ticker: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame | None:
    path = BUNDLED_DIR / f"{ticker}.csv"
    if not path.exists():
        return None
    frame = read_price_csv(path)
    selected = frame[(frame.index >= start) & (frame.index < end)]
    if selected.empty:
        raise PriceDataError(
            f"the bundled {ticker} prices cover {frame.index[0]:%Y-%m-%d} to "
            f"{frame.index[-1]:%Y-%m-%d}, none of {start:%Y-%m-%d}..{end:%Y-%m-%d}."
        )
    return selected


def load_prices(
    ticker: str,
    start: str,
    end: str,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Daily prices of ``ticker`` from ``start`` (inclusive) to ``end`` (exclusive).

    Sources, in order: the cache folder; Yahoo Finance (written to the cache);
    the real prices bundled in ``shared/datasets/stocks`` (AAPL, GOOGL, MSFT,
    NVDA, 2013-01-02 to 2023-12-29).

    Args:
        ticker: A Yahoo Finance symbol.
        start: First date, ``YYYY-MM-DD``.
        end: Day after the last date, ``YYYY-MM-DD``.
        cache_dir: Cache folder (default ``.cache/prices``).

    Returns:
        The cleaned frame (see `clean_prices`).

    Raises:
        PriceDataError: Invalid ticker or dates, or no source has the prices.
    """
    ticker = validate_ticker(ticker)
    first, last = _validate_dates(start, end)
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    cache_file = _cache_file(cache_dir, ticker, first, last)

    frame = _from_cache(cache_file)
    if frame is not None:
        log.info("Prices of %s: cache %s (%d days)", ticker, cache_file, len(frame))
        return frame
    frame = _from_yfinance(ticker, first, last)
    if frame is not None:
        _write_cache(frame, cache_file)
        log.info(
            "Prices of %s: Yahoo Finance (%d days), cached in %s", ticker, len(frame), cache_file
        )
        return frame
    frame = _from_bundled(ticker, first, last)
    if frame is not None:
        log.info(
            "Prices of %s: bundled copy, %s to %s (%d days); Yahoo Finance did not answer",
            ticker,
            f"{frame.index[0]:%Y-%m-%d}",
            f"{frame.index[-1]:%Y-%m-%d}",
            len(frame),
        )
        return frame
    raise PriceDataError(
        f"no prices for {ticker}: not cached, Yahoo Finance did not answer, and it is not "
        f"bundled (bundled: {', '.join(BUNDLED_TICKERS)}). Use one of those, or train on "
        "your own file with --csv PATH (a CSV with Date and Close columns)."
    )
