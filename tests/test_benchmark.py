"""The benchmark's pure helpers: formatting, ratios, targets, option parsing (nothing is timed here)."""

from __future__ import annotations

import math

import pytest

from scripts import benchmark as bm


def test_fmt_seconds_picks_a_readable_unit() -> None:
    assert bm.fmt_seconds(23.61) == "23.6 s"
    assert bm.fmt_seconds(1.274) == "1.27 s"
    assert bm.fmt_seconds(0.2304) == "230 ms"
    assert bm.fmt_seconds(0.0176) == "17.6 ms"
    assert bm.fmt_seconds(0.00085) == "0.85 ms"
    assert bm.fmt_seconds(None) == "-"
    assert bm.fmt_seconds(float("nan")) == "-"


def test_fmt_bytes_uses_decimal_units() -> None:
    assert bm.fmt_bytes(8_978_335) == "8.98 MB"
    assert bm.fmt_bytes(215_300) == "215.3 kB"
    assert bm.fmt_bytes(999) == "999 B"
    assert bm.fmt_bytes(None) == "-"


def test_ratio_is_reference_over_value_and_none_when_unknown() -> None:
    assert bm.ratio(24.0, 1.2) == pytest.approx(20.0)
    assert bm.ratio(None, 1.0) is None
    assert bm.ratio(1.0, None) is None
    assert bm.ratio(1.0, 0.0) is None
    assert bm.ratio(float("nan"), 1.0) is None


def test_fmt_ratio() -> None:
    assert bm.fmt_ratio(1234.4) == "1,234x"
    assert bm.fmt_ratio(15.24) == "15.2x"
    assert bm.fmt_ratio(0.853) == "0.85x"
    assert bm.fmt_ratio(None) == "-"


def test_fmt_rate() -> None:
    assert bm.fmt_rate(1234.4) == "1,234/s"
    assert bm.fmt_rate(82.4) == "82/s"
    assert bm.fmt_rate(1.33) == "1.3/s"
    assert bm.fmt_rate(None) == "-"


def test_fmt_error() -> None:
    assert bm.fmt_error(1.5e-4) == "1.5e-04"
    assert bm.fmt_error(None) == "-"


def test_median_of_nothing_is_none() -> None:
    assert bm.median([]) is None
    assert bm.median([3.0, 1.0, 2.0]) == 2.0


def test_format_table_aligns_columns() -> None:
    text = bm.format_table(["", "ei", "bfv"], [["server", "1.27 s", "3.4 ms"], ["keys", "8.98 MB", "131 kB"]])
    lines = text.splitlines()
    assert lines[0].split() == ["ei", "bfv"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("server")
    # right-aligned: every line (rule included) ends at the same column
    assert len({len(line) for line in lines}) == 1


def test_format_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError):
        bm.format_table(["a", "b"], [["1"]])


@pytest.mark.parametrize(
    ("value", "limit", "at_least", "verdict"),
    [
        (0.004, 0.005, False, "met"),
        (0.005, 0.005, False, "met"),
        (0.006, 0.005, False, "NOT met"),
        (350.0, 300.0, True, "met"),
        (250.0, 300.0, True, "NOT met"),
        (None, 300.0, True, "not measured"),
        (math.nan, 0.005, False, "not measured"),
    ],
)
def test_target_verdict(value: float | None, limit: float, at_least: bool, verdict: str) -> None:
    target = bm.Target("bfv", "x", value, limit, at_least=at_least)
    assert target.verdict == verdict
    assert target.line().endswith(verdict)
    assert len(target.line(40)) >= 40


def test_split_cold_warm() -> None:
    cold, warm = bm.split_cold_warm([("miss", 1), ("hit", 2), ("miss", 3), ("hit", 4)])
    assert cold == 1
    assert warm == [2, 4]
    assert bm.split_cold_warm([("hit", 5)]) == (None, [5])


def test_parse_schemes() -> None:
    known = ("ei", "ckks", "bfv")
    assert bm.parse_schemes("bfv, ei,bfv", known) == ["bfv", "ei"]
    assert bm.parse_schemes("CKKS", known) == ["ckks"]
    with pytest.raises(ValueError, match="unknown scheme"):
        bm.parse_schemes("ei,paillier", known)
    with pytest.raises(ValueError):
        bm.parse_schemes(" , ", known)


def test_key_cache_of_finds_the_field_without_parsing() -> None:
    assert bm.key_cache_of(b'{"result":["AAAA"],"server":{"key_cache": "hit","x":1}}') == "hit"
    assert bm.key_cache_of(b'{"server":{"key_cache":"miss"}}') == "miss"
    assert bm.key_cache_of(b'{"error":"bad_json"}') == ""


def test_decoded_length() -> None:
    assert bm.decoded_length(["AAAA", "AAE="]) == 5


def _figures(name: str, **values: object) -> bm.Figures:
    figures = bm.Figures(name)
    for key, value in values.items():
        setattr(figures, key, value)
    return figures


def test_targets_cover_every_scheme_and_use_the_reference() -> None:
    reference = _figures("reference", inproc_server_warm_s=24.0, inproc_e2e_warm_s=25.0)
    results = {
        "ei": _figures("ei", http_server_warm_s=1.2, http_e2e_warm_s=1.5),
        "ckks": _figures(
            "ckks",
            http_server_warm_s=0.02,
            key_bytes=600_000,
            response_bytes=140_000,
            errors=[1e-4],
            http_e2e_warm_s=0.03,
        ),
        "bfv": _figures(
            "bfv",
            http_server_warm_s=0.004,
            http_e2e_warm_s=0.01,
            throughput=bm.Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=10),
        ),
    }
    verdicts = {(t.scheme, t.what.split()[0]): t.verdict for t in bm.targets(results, reference)}
    assert verdicts[("ei", ">=")] == "met"  # 24 / 1.2 = 20x
    assert verdicts[("ckks", "response")] == "NOT met"  # 140 kB > 130 kB
    assert verdicts[("ckks", "public")] == "met"
    assert verdicts[("bfv", ">=")] == "met"  # 400/s
    assert all(v in ("met", "NOT met") for v in verdicts.values())


def test_targets_without_reference_and_with_wrong_answers() -> None:
    results = {
        "ei": _figures("ei", http_server_warm_s=1.2),
        "bfv": _figures(
            "bfv", throughput=bm.Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=9)
        ),
    }
    verdicts = {(t.scheme, t.what.split()[0]): t.verdict for t in bm.targets(results, None)}
    assert verdicts[("ei", ">=")] == "not measured"
    assert verdicts[("bfv", ">=")] == "not measured"  # a wrong decryption voids the throughput figure


def test_tables_render_with_missing_figures() -> None:
    reference = _figures("reference", inproc_server_warm_s=24.0, key_bytes=8_978_335)
    scheme = _figures("bfv", scheme_id="bfv-seal4", http_server_warm_s=0.004, key_bytes=131_000)
    text = bm.figures_table([reference, scheme], warm=5, clients=8)
    assert "bfv-seal4" in text and "8.98 MB" in text and "4.0 ms" in text
    ratios = bm.ratios_table(reference, [scheme])
    assert "6,000x" in ratios  # 24 s / 4 ms
    assert "68.5x" in ratios  # key bytes


def test_other_cpu_share() -> None:
    # 10 s on 2 CPUs; the machine was busy 12 CPU-s, 7 of them ours: others used 5 of 20
    assert bm.other_cpu_share(12.0, 7.0, 10.0, 2) == pytest.approx(0.25)
    assert bm.other_cpu_share(5.0, 7.0, 10.0, 2) == 0.0  # clock skew between the readings
    assert bm.other_cpu_share(5.0, 1.0, 0.0, 2) is None
    assert bm.fmt_share(0.25) == "25%"
    assert bm.fmt_share(None) == "-"


def test_cpu_meter_reads_proc_or_says_unknown() -> None:
    meter = bm.CpuMeter({0})
    start = meter.snapshot()
    share = meter.other_share(start)
    assert share is None or 0.0 <= share <= 1.0
