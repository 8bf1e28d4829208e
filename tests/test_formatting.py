"""The one set of formatters: every unit boundary, and unknown values."""

from __future__ import annotations

import math

import pytest

from lib.formatting import (
    MISSING,
    format_bytes,
    format_error,
    format_factor,
    format_percent,
    format_rate,
    format_ratio_words,
    format_seconds,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(23.6, "23.6 s"), (1.274, "1.27 s"), (0.738, "738 ms"), (0.0176, "17.6 ms"), (0.00085, "0.85 ms")],
)
def test_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(8_978_344, "8.98 MB"), (494_700, "494.7 kB"), (512, "512 B"), (2.5e9, "2.50 GB")],
)
def test_bytes(count: float, text: str) -> None:
    assert format_bytes(count) == text


def test_factors_rates_percent_error() -> None:
    assert format_factor(1234.4) == "1,234×"
    assert format_factor(15.24) == "15.2×"
    assert format_factor(0.851) == "0.85×"
    assert format_rate(1234) == "1,234/s"
    assert format_rate(1.26) == "1.3/s"
    assert format_percent(0.9213) == "92.1%"
    assert format_percent(0.9213, 0) == "92%"
    assert format_error(3.04e-4) == "3.0e-04"


@pytest.mark.parametrize(
    ("value", "text"),
    [(1 / 156, "156× less"), (1.0, "1.0× (same)"), (38.2, "38× more"), (2.5, "2.5× more"), (0.0, "0×")],
)
def test_ratio_words(value: float, text: str) -> None:
    assert format_ratio_words(value) == text


@pytest.mark.parametrize(
    "formatter",
    [format_seconds, format_bytes, format_factor, format_ratio_words, format_rate, format_percent, format_error],
)
@pytest.mark.parametrize("unknown", [None, math.nan, math.inf, True])
def test_unknown_values_read_missing(formatter, unknown) -> None:  # type: ignore[no-untyped-def]
    assert formatter(unknown) == MISSING
