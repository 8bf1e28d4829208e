"""The one set of formatters: every unit boundary, and unknown values."""

from __future__ import annotations

import math

import pytest

from lib.formatting import (
    MISSING,
    format_bytes,
    format_error,
    format_estimate,
    format_factor,
    format_percent,
    format_rate,
    format_ratio_words,
    format_seconds,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (23.6, "23.6 s"),
        (1.274, "1.27 s"),
        (1.234, "1.23 s"),
        (0.738, "738 ms"),
        (0.0482, "48.2 ms"),
        (0.0176, "17.6 ms"),
        (0.00085, "0.85 ms"),
    ],
)
def test_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [(8_978_344, "8.98 MB"), (494_700, "494.7 kB"), (164_895, "164.9 kB"), (512, "512 B"), (2.5e9, "2.50 GB")],
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
    ("seconds", "text"), [(19.3, "about 19 s"), (89.4, "about 89 s"), (90.0, "about 2 min"), (200, "about 3 min")]
)
def test_estimate(seconds: float, text: str) -> None:
    assert format_estimate(seconds) == text


def test_the_comparison_tables_former_cases_read_the_same() -> None:
    """What lib.comparison's own format_seconds / format_ratio gave, from the shared formatters."""
    assert format_seconds(0.00042) == "0.42 ms" and format_seconds(0.0042) == "4.2 ms"
    assert format_seconds(0.042) == "42.0 ms" and format_seconds(1.5) == "1.50 s"
    assert format_ratio_words(0.0123) == "81× less" and format_ratio_words(1.0) == "1.0× (same)"
    assert format_ratio_words(38.2) == "38× more"
    assert format_ratio_words(0.5) == "2.0× less" and format_ratio_words(1234.0) == "1,234× more"
    assert format_ratio_words(None) == "–"


@pytest.mark.parametrize(
    "formatter",
    [
        format_seconds,
        format_bytes,
        format_factor,
        format_ratio_words,
        format_rate,
        format_percent,
        format_error,
        format_estimate,
    ],
)
@pytest.mark.parametrize("unknown", [None, math.nan, math.inf, True])
def test_unknown_values_read_missing(formatter, unknown) -> None:  # type: ignore[no-untyped-def]
    assert formatter(unknown) == MISSING
