"""Price loading: cache -> Yahoo Finance -> bundled data, and every bad input.

Yahoo Finance cannot be reached from the test machines, so ``yf.download`` is
replaced by a fake that returns frames in yfinance's documented format: a
DatetimeIndex named ``Date`` and columns ``Adj Close, Close, High, Low, Open,
Volume``, as a (Price, Ticker) MultiIndex unless ``multi_level_index=False``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yfinance
from yfinance.exceptions import YFRateLimitError

from shared import prices
from shared.prices import (
    BUNDLED_TICKERS,
    PriceDataError,
    clean_prices,
    load_prices,
    read_price_csv,
    validate_ticker,
)


def yahoo_frame(ticker: str, start: str, end: str, multi_level_index: bool) -> pd.DataFrame:
    dates = pd.bdate_range(start, end, inclusive="left", name="Date")
    close = 100 * np.exp(np.cumsum(np.full(len(dates), 0.001)))
    fields = {
        "Adj Close": close * 0.98,
        "Close": close,
        "High": close * 1.01,
        "Low": close * 0.99,
        "Open": close,
        "Volume": np.full(len(dates), 1_000_000.0),
    }
    frame = pd.DataFrame(fields, index=dates)
    if multi_level_index:
        frame.columns = pd.MultiIndex.from_product(
            [list(fields), [ticker]], names=["Price", "Ticker"]
        )
    return frame


class FakeDownload:
    """Stands in for ``yfinance.download``; records its calls."""

    def __init__(self, outcomes=None):
        self.calls: list[dict] = []
        self.outcomes = list(outcomes or [])

    def __call__(
        self,
        tickers,
        start=None,
        end=None,
        auto_adjust=True,
        multi_level_index=True,
        progress=True,
        **kwargs,
    ):
        self.calls.append(
            dict(
                tickers=tickers,
                start=start,
                end=end,
                auto_adjust=auto_adjust,
                multi_level_index=multi_level_index,
                progress=progress,
            )
        )
        outcome = self.outcomes.pop(0) if self.outcomes else "data"
        if outcome == "rate-limit":
            raise YFRateLimitError()
        if outcome == "empty":
            return pd.DataFrame(columns=["Adj Close", "Close", "High", "Low", "Open", "Volume"])
        return yahoo_frame(tickers, start, end, multi_level_index)


@pytest.fixture
def fake_yahoo(monkeypatch):
    fake = FakeDownload()
    monkeypatch.setattr(yfinance, "download", fake)
    monkeypatch.setattr(prices, "RATE_LIMIT_FIRST_WAIT_SECONDS", 0.01)
    return fake


def test_download_passes_explicit_arguments_and_fills_the_cache(fake_yahoo, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    frame = load_prices("ibm", "2020-01-01", "2020-03-01", cache_dir=tmp_path)
    assert fake_yahoo.calls == [
        dict(
            tickers="IBM",
            start="2020-01-01",
            end="2020-03-01",
            auto_adjust=False,
            multi_level_index=False,
            progress=False,
        )
    ]
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert frame.index.name == "Date" and frame.index.is_monotonic_increasing
    assert frame.index[0] == pd.Timestamp("2020-01-01")
    assert "Yahoo Finance" in caplog.text
    cached = tmp_path / "IBM_2020-01-01_2020-03-01.csv"
    assert cached.exists()

    caplog.clear()
    again = load_prices("IBM", "2020-01-01", "2020-03-01", cache_dir=tmp_path)
    assert len(fake_yahoo.calls) == 1  # served from the cache
    pd.testing.assert_frame_equal(again, frame, check_freq=False)
    assert f"cache {cached}" in caplog.text


def test_a_corrupt_cache_file_is_reported_and_fetched_again(fake_yahoo, tmp_path, caplog):
    cached = tmp_path / "IBM_2020-01-01_2020-03-01.csv"
    cached.write_text("Date,Open\n2020-01-02,oops\n")
    frame = load_prices("IBM", "2020-01-01", "2020-03-01", cache_dir=tmp_path)
    assert "is corrupt" in caplog.text and str(cached) in caplog.text
    assert len(fake_yahoo.calls) == 1
    assert read_price_csv(cached)["Close"].equals(frame["Close"])


def test_an_empty_download_falls_back_to_the_bundled_prices(fake_yahoo, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    fake_yahoo.outcomes = ["empty"]
    frame = load_prices("AAPL", "2013-01-01", "2024-01-01", cache_dir=tmp_path)
    assert len(frame) == 2768
    assert frame.index[0] == pd.Timestamp("2013-01-02")
    assert frame.index[-1] == pd.Timestamp("2023-12-29")
    source_lines = [r.message for r in caplog.records if r.message.startswith("Prices of AAPL")]
    assert len(source_lines) == 1 and "bundled copy" in source_lines[0]
    assert not list(tmp_path.iterdir())  # bundled data is not copied into the cache


def test_rate_limits_are_retried_with_backoff(fake_yahoo, tmp_path):
    fake_yahoo.outcomes = ["rate-limit", "rate-limit", "data"]
    frame = load_prices("IBM", "2020-01-01", "2020-02-01", cache_dir=tmp_path)
    assert len(fake_yahoo.calls) == 3 and len(frame) > 0


def test_persistent_rate_limits_fall_back_to_bundled(fake_yahoo, tmp_path):
    fake_yahoo.outcomes = ["rate-limit"] * prices.RATE_LIMIT_RETRIES
    frame = load_prices("MSFT", "2020-01-01", "2020-02-01", cache_dir=tmp_path)
    assert len(fake_yahoo.calls) == prices.RATE_LIMIT_RETRIES
    assert frame.index[0] == pd.Timestamp("2020-01-02")


def test_a_ticker_no_source_has_names_the_alternatives(fake_yahoo, tmp_path):
    fake_yahoo.outcomes = ["empty"]
    with pytest.raises(PriceDataError) as raised:
        load_prices("ZZZZ", "2020-01-01", "2020-02-01", cache_dir=tmp_path)
    message = str(raised.value)
    assert all(ticker in message for ticker in BUNDLED_TICKERS)
    assert "--csv" in message


@pytest.mark.parametrize("ticker", ["../etc/passwd", "a/b", "..", "AAPL/..", "x\\y", "", "A B"])
def test_tickers_with_path_characters_are_rejected_before_any_file_access(
    ticker, fake_yahoo, tmp_path
):
    cache = tmp_path / "cache"
    with pytest.raises(PriceDataError, match="invalid ticker"):
        load_prices(ticker, "2020-01-01", "2020-02-01", cache_dir=cache)
    assert not cache.exists()
    assert fake_yahoo.calls == []


def test_real_world_symbols_are_accepted():
    assert [validate_ticker(t) for t in ["brk-b", "^GSPC", "EURUSD=X", "RDS.A"]] == [
        "BRK-B",
        "^GSPC",
        "EURUSD=X",
        "RDS.A",
    ]


def test_yahoo_multiindex_frames_are_flattened():
    raw = yahoo_frame("NVDA", "2021-01-01", "2021-02-01", multi_level_index=True)
    frame = clean_prices(raw, "test")
    assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert frame.index.name == "Date"


def test_csv_without_close_or_date_is_rejected_naming_the_column(tmp_path):
    no_close = tmp_path / "no_close.csv"
    no_close.write_text("Date,Open\n2020-01-02,1.0\n")
    with pytest.raises(PriceDataError, match="no 'Close' column"):
        read_price_csv(no_close)
    no_date = tmp_path / "no_date.csv"
    no_date.write_text("Day,Close\n2020-01-02,1.0\n")
    with pytest.raises(PriceDataError, match="no 'Date' column"):
        read_price_csv(no_date)
    with pytest.raises(PriceDataError, match="no CSV file at"):
        read_price_csv(tmp_path / "absent.csv")


def test_nan_rows_are_dropped_and_counted(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "gaps.csv"
    path.write_text(
        "Date,Close,Volume\n2020-01-03,2.0,5\n2020-01-02,1.0,\n2020-01-06,,7\n2020-01-07,4.0,9\n"
    )
    frame = read_price_csv(path)
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2020-01-03", "2020-01-07"]
    assert "skipped 2 row(s) with a missing date or value (line 3, line 4)" in caplog.text


def write_csv(tmp_path, rows: list[str], header: str = "Date,Close") -> Path:
    path = tmp_path / "prices.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def days(count: int) -> list[str]:
    return [f"{day:%Y-%m-%d}" for day in pd.bdate_range("2020-01-01", periods=count)]


def test_thousands_separators_are_read_as_numbers(tmp_path):
    # Every other close written as "1,588.65", as spreadsheets export them.
    dates = days(20)
    rows = [
        f'{date},"{1 + i},{500 + i:03d}.65"' if i % 2 else f"{date},{1 + i}{500 + i:03d}.65"
        for i, date in enumerate(dates)
    ]
    frame = read_price_csv(write_csv(tmp_path, rows))
    assert len(frame) == 20
    assert frame["Close"].iloc[1] == pytest.approx(2501.65)
    assert frame["Close"].iloc[0] == pytest.approx(1500.65)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("n.a.", "'n.a.'"), ("12O.5", "'12O.5'"), ("1.588,65", "'1.588,65'"), ("$12", "'$12'")],
)
def test_values_that_are_not_numbers_are_refused_with_their_line(tmp_path, value, shown):
    rows = [f"{date},{100 + i}" for i, date in enumerate(days(10))]
    rows[3] = f'{days(10)[3]},"{value}"'
    with pytest.raises(PriceDataError) as raised:
        read_price_csv(write_csv(tmp_path, rows))
    message = str(raised.value)
    assert f"column Close has values that are not numbers: {shown} (line 5)" in message
    assert "1588.65" in message


def test_an_entirely_textual_close_column_names_its_values(tmp_path):
    rows = [f"{date},price" for date in days(8)]
    with pytest.raises(
        PriceDataError,
        match=r"not numbers: 'price' \(line 2\), 'price' "
        r"\(line 3\), 'price' \(line 4\) and 5 more",
    ):
        read_price_csv(write_csv(tmp_path, rows))


def test_more_than_a_handful_of_missing_rows_stops(tmp_path):
    rows = [f"{date},{'' if i % 2 else 100 + i}" for i, date in enumerate(days(30))]
    with pytest.raises(
        PriceDataError,
        match=r"15 rows have a missing date or value \(first: "
        r"line 3\); at most 5 are skipped",
    ):
        read_price_csv(write_csv(tmp_path, rows))


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_prices_are_refused_by_line_and_date(tmp_path, value):
    rows = [f"{date},{100 + i}" for i, date in enumerate(days(10))]
    rows[6] = f"{days(10)[6]},{value}"
    with pytest.raises(PriceDataError, match=f"Close is infinite on line 8, {days(10)[6]}"):
        read_price_csv(write_csv(tmp_path, rows))


def test_an_infinite_volume_is_refused_too(tmp_path):
    rows = [f"{date},{100 + i},{1000 + i}" for i, date in enumerate(days(10))]
    rows[2] = f"{days(10)[2]},102,inf"
    with pytest.raises(PriceDataError, match="Volume is infinite on line 4"):
        read_price_csv(write_csv(tmp_path, rows, header="Date,Close,Volume"))


def test_non_positive_closes_name_the_line_and_date(tmp_path):
    rows = [f"{date},{100 + i}" for i, date in enumerate(days(10))]
    rows[4] = f"{days(10)[4]},0"
    with pytest.raises(PriceDataError, match=f"line 6, {days(10)[4]} has 0"):
        read_price_csv(write_csv(tmp_path, rows))


def test_integer_dates_are_refused_with_the_accepted_format(tmp_path):
    rows = [f"{20200101 + i},{100 + i}" for i in range(10)]
    with pytest.raises(PriceDataError) as raised:
        read_price_csv(write_csv(tmp_path, rows))
    message = str(raised.value)
    assert "the Date column holds numbers (e.g. 20200101 on line 2), not dates" in message
    assert "YYYY-MM-DD" in message and "\n" not in message


def test_day_month_year_dates_are_refused_in_one_line(tmp_path, recwarn):
    rows = [
        f"{day:%d/%m/%Y},{100 + i}"
        for i, day in enumerate(pd.bdate_range("2020-01-01", periods=20))
    ]
    with pytest.raises(PriceDataError) as raised:
        read_price_csv(write_csv(tmp_path, rows))
    message = str(raised.value)
    assert "the Date '01/01/2020' on line 2 is not a date" in message
    assert "YYYY-MM-DD" in message and "ambiguous" in message and "\n" not in message
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_words_in_the_date_column_give_only_the_clean_error(tmp_path, recwarn):
    rows = [f"{date},{100 + i}" for i, date in enumerate(days(5))]
    rows[2] = f"yesterday,{102}"
    with pytest.raises(PriceDataError, match="the Date 'yesterday' on line 4 is not a date"):
        read_price_csv(write_csv(tmp_path, rows))
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_yahoo_csv_dates_with_time_zones_are_read(tmp_path):
    rows = ["2020-03-06 00:00:00-05:00,10", "2020-03-09 00:00:00-04:00,11"]
    frame = read_price_csv(write_csv(tmp_path, rows))
    assert list(frame.index.strftime("%Y-%m-%d")) == ["2020-03-06", "2020-03-09"]


def test_bundled_files_are_complete():
    for ticker in BUNDLED_TICKERS:
        frame = read_price_csv(prices.BUNDLED_DIR / f"{ticker}.csv")
        assert len(frame) == 2768
        assert list(frame.columns) == ["Open", "High", "Low", "Close", "Volume"]


def test_a_cache_folder_that_cannot_be_written_costs_only_a_warning(fake_yahoo, caplog):
    frame = load_prices("IBM", "2020-01-01", "2020-03-01", cache_dir="/dev/null/cache")
    assert len(frame) > 30
    assert "Could not cache the prices in /dev/null/cache" in caplog.text
