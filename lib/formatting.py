"""The one set of number formatters for the pages, the command line and the benchmark.

A figure reads the same everywhere: 0.85 ms is "0.85 ms" on the main page, on the Schemes page,
in ``lib.cli`` and in the benchmark's tables. Unknown values (None, NaN, infinities) read "–".
Sizes are decimal (1 kB = 1000 B), as the benchmark states under its table.
"""

from __future__ import annotations

import math

__all__ = [
    "MISSING",
    "format_bytes",
    "format_error",
    "format_estimate",
    "format_factor",
    "format_percent",
    "format_rate",
    "format_ratio_words",
    "format_seconds",
    "is_number",
]

MISSING = "–"
KB = 1e3
MB = 1e6
GB = 1e9


def is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_seconds(seconds: float | None) -> str:
    """A duration with a readable unit: '23.6 s', '1.27 s', '738 ms', '17.6 ms', '0.85 ms'."""
    if not is_number(seconds):
        return MISSING
    assert seconds is not None
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 1:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def format_bytes(count: float | None) -> str:
    """A byte count in decimal units: '8.98 MB', '494.7 kB', '512 B'."""
    if not is_number(count):
        return MISSING
    assert count is not None
    if count >= GB:
        return f"{count / GB:.2f} GB"
    if count >= MB:
        return f"{count / MB:.2f} MB"
    if count >= KB:
        return f"{count / KB:.1f} kB"
    return f"{int(count)} B"


def format_factor(value: float | None) -> str:
    """How many times faster or smaller: '1,234×', '15.2×', '0.85×'."""
    if not is_number(value):
        return MISSING
    assert value is not None
    if value >= 100:
        return f"{value:,.0f}×"
    if value >= 10:
        return f"{value:.1f}×"
    return f"{value:.2f}×"


def format_ratio_words(value: float | None) -> str:
    """A ratio (this / baseline) in words: '156× less', '1.0× (same)', '38× more'."""
    if not is_number(value):
        return MISSING
    assert value is not None
    if value <= 0:
        return "0×"
    if 0.95 <= value <= 1.05:
        return "1.0× (same)"
    factor = value if value > 1 else 1 / value
    amount = f"{factor:,.0f}×" if factor >= 10 else f"{factor:.1f}×"
    return f"{amount} {'more' if value > 1 else 'less'}"


def format_rate(per_second: float | None) -> str:
    """A rate: '1,234/s', '82/s', '1.3/s'."""
    if not is_number(per_second):
        return MISSING
    assert per_second is not None
    return f"{per_second:,.0f}/s" if per_second >= 10 else f"{per_second:.1f}/s"


def format_percent(fraction: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage: 0.921 -> '92.1%' (decimals=1) or '92%' (decimals=0)."""
    if not is_number(fraction):
        return MISSING
    assert fraction is not None
    return f"{fraction:.{decimals}%}"


def format_error(value: float | None) -> str:
    """A small error in scientific notation: '3.0e-04'."""
    if not is_number(value):
        return MISSING
    assert value is not None
    return f"{value:.1e}"


def format_estimate(seconds: float | None) -> str:
    """A rough planning time, whole units only: 'about 19 s', 'about 3 min' (from 90 s on)."""
    if not is_number(seconds):
        return MISSING
    assert seconds is not None
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"
