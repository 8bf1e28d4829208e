"""The benchmark's parts that need no stack: formatting, ratios, targets, report, charts, options.

Nothing here is timed, and the real run is never started (it needs an idle machine).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from lib import formatting as fmt
from lib.errors import ServiceRejected
from scripts.benchmark import __main__ as cli
from scripts.benchmark import cpu, figures, load, report, results, targets
from scripts.benchmark.measure import InProcessScorer
from scripts.benchmark.results import Digits, Measured, Throughput
from service.scoring import ScoringService, load_model
from service.settings import ServiceSettings

# --- the figures read as before (the benchmark formats with lib.formatting) -----------------------


def _share(value: float | None) -> str:
    return fmt.format_percent(value, 0)


# Every figure the old benchmark's own formatters were tested on, now read by lib.formatting
# (unknown values read fmt.MISSING instead of "-", factors "×" instead of "x").
FIGURES_AS_BEFORE = [
    (fmt.format_seconds, 23.61, "23.6 s"),
    (fmt.format_seconds, 1.274, "1.27 s"),
    (fmt.format_seconds, 0.2304, "230 ms"),
    (fmt.format_seconds, 0.0176, "17.6 ms"),
    (fmt.format_seconds, 0.00085, "0.85 ms"),
    (fmt.format_seconds, None, fmt.MISSING),
    (fmt.format_seconds, math.nan, fmt.MISSING),
    (fmt.format_bytes, 8_978_335, "8.98 MB"),
    (fmt.format_bytes, 215_300, "215.3 kB"),
    (fmt.format_bytes, 999, "999 B"),
    (fmt.format_bytes, None, fmt.MISSING),
    (fmt.format_factor, 1234.4, "1,234×"),
    (fmt.format_factor, 15.24, "15.2×"),
    (fmt.format_factor, 0.853, "0.85×"),
    (fmt.format_factor, None, fmt.MISSING),
    (fmt.format_rate, 1234.4, "1,234/s"),
    (fmt.format_rate, 82.4, "82/s"),
    (fmt.format_rate, 1.33, "1.3/s"),
    (fmt.format_rate, None, fmt.MISSING),
    (fmt.format_error, 1.5e-4, "1.5e-04"),
    (fmt.format_error, None, fmt.MISSING),
    (_share, 0.25, "25%"),
    (_share, None, fmt.MISSING),
]


@pytest.mark.parametrize(("show", "value", "text"), FIGURES_AS_BEFORE)
def test_figures_read_as_before(show: Callable[[float | None], str], value: float | None, text: str) -> None:
    assert show(value) == text


def test_ratio_is_reference_over_value_and_none_when_unknown() -> None:
    assert results.ratio(24.0, 1.2) == pytest.approx(20.0)
    assert results.ratio(None, 1.0) is None
    assert results.ratio(1.0, None) is None
    assert results.ratio(1.0, 0.0) is None
    assert results.ratio(float("nan"), 1.0) is None


def test_median_of_nothing_is_none() -> None:
    assert results.median([]) is None
    assert results.median([3.0, 1.0, 2.0]) == 2.0


def test_split_cold_warm() -> None:
    cold, warm = results.split_cold_warm([("miss", 1), ("hit", 2), ("miss", 3), ("hit", 4)])
    assert cold == 1
    assert warm == [2, 4]
    assert results.split_cold_warm([("hit", 5)]) == (None, [5])


def test_decoded_length() -> None:
    assert results.decoded_length(["AAAA", "AAE="]) == 5


def test_throughput_counts_only_when_the_sample_decrypts_right() -> None:
    right = Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=10)
    wrong = Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=9)
    assert right.per_second == right.verified_per_second == 400.0
    assert wrong.per_second == 400.0
    assert wrong.verified_per_second is None
    assert Throughput(clients=1, seconds=0.0).per_second is None
    assert Measured("bfv", throughput=right).throughput_verified == 400.0
    assert Measured("bfv").throughput_verified is None


# --- options ---------------------------------------------------------------------------------


def test_parse_schemes() -> None:
    known = ("ei", "ckks", "bfv")
    assert cli.parse_schemes("bfv, ei,bfv", known) == ["bfv", "ei"]
    assert cli.parse_schemes("CKKS", known) == ["ckks"]
    with pytest.raises(ValueError, match="unknown scheme"):
        cli.parse_schemes("ei,paillier", known)
    with pytest.raises(ValueError):
        cli.parse_schemes(" , ", known)


def test_options_figures_folder_and_checks(tmp_path: Path) -> None:
    args = cli.parse_args(["--schemes", "bfv,ckks", "--warm", "3"])
    assert args.schemes == ["bfv", "ckks"]
    assert args.figures == cli.ROOT / "artifacts" / "benchmark"
    assert not args.no_figures
    assert cli.parse_args(["--figures", str(tmp_path)]).figures == tmp_path
    assert cli.parse_args(["--no-figures"]).no_figures
    for bad in (["--figures", str(tmp_path), "--no-figures"], ["--warm", "0"], ["--schemes", "paillier"]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)


# --- the load generator and CPU accounting -----------------------------------------------------


def test_key_cache_of_finds_the_field_without_parsing() -> None:
    assert load.key_cache_of(b'{"result":["AAAA"],"server":{"key_cache": "hit","x":1}}') == "hit"
    assert load.key_cache_of(b'{"server":{"key_cache":"miss"}}') == "miss"
    assert load.key_cache_of(b'{"error":"bad_json"}') == ""


def test_other_cpu_share() -> None:
    # 10 s on 2 CPUs; the machine was busy 12 CPU-s, 7 of them ours: others used 5 of 20
    assert cpu.other_cpu_share(12.0, 7.0, 10.0, 2) == pytest.approx(0.25)
    assert cpu.other_cpu_share(5.0, 7.0, 10.0, 2) == 0.0  # clock skew between the readings
    assert cpu.other_cpu_share(5.0, 1.0, 0.0, 2) is None


def test_cpu_meter_measures_with_psutil() -> None:
    meter = cpu.CpuMeter([psutil.Process().pid, 2**22 + 12345])  # a pid that does not exist is skipped
    start = meter.snapshot()
    assert start.machine_busy_s > 0 and start.ours_s > 0
    assert start.ours_s == pytest.approx(cpu.process_tree_seconds([psutil.Process()]), rel=0.5)
    share = meter.other_share(start)
    assert share is not None and 0.0 <= share <= 1.0
    assert meter.other_share(None) is None
    assert cpu.own_cpu_seconds() > 0


# --- targets as data ---------------------------------------------------------------------------


def _verdicts(found: list[targets.Verdict]) -> dict[tuple[str, str], str]:
    return {(v.scheme, v.target.metric): v.verdict for v in found}


def test_the_targets_are_the_benchmarks_goals() -> None:
    goals = {(t.scheme, t.metric): (t.comparison, t.threshold) for t in targets.TARGETS}
    assert goals == {
        ("ei", "server_http_warm"): ("<=", 1.3),
        ("ei", "speedup_server_http"): (">=", 15.0),
        ("ei", "e2e_http_warm"): ("<=", 1.6),
        ("ckks", "server_http_warm"): ("<=", 0.025),
        ("ckks", "key_bytes"): ("<=", 700_000),
        ("ckks", "response_bytes"): ("<=", 130_000),
        ("ckks", "max_error"): ("<=", 1e-3),
        ("ckks", "e2e_http_warm"): ("<=", 0.050),
        ("bfv", "server_http_warm"): ("<=", 0.005),
        ("bfv", "e2e_http_warm"): ("<=", 0.020),
        ("bfv", "throughput_verified"): (">=", 300),
    }
    assert all(t.metric in targets.METRICS for t in targets.TARGETS)


@pytest.mark.parametrize(
    ("value", "comparison", "threshold", "verdict"),
    [
        (0.004, "<=", 0.005, "met"),
        (0.005, "<=", 0.005, "met"),
        (0.006, "<=", 0.005, "NOT met"),
        (350.0, ">=", 300.0, "met"),
        (300.0, ">=", 300.0, "met"),
        (250.0, ">=", 300.0, "NOT met"),
        (None, ">=", 300.0, "not measured"),
        (math.nan, "<=", 0.005, "not measured"),
    ],
)
def test_target_verdict(
    value: float | None, comparison: targets.Comparison, threshold: float, verdict: str
) -> None:
    assert targets.verdict_of(value, comparison, threshold) == verdict
    # the same through the data path: one target, evaluated and printed
    table = [targets.Target("bfv", "server_http_warm", comparison, threshold)]
    found = targets.evaluate({"bfv": Measured("bfv", http_server_warm_s=value)}, None, table)
    assert [v.verdict for v in found] == [verdict]
    lines = report.targets_table(found).splitlines()
    assert lines[-1].rstrip().endswith(verdict)
    assert lines[-1].startswith("bfv")


def test_evaluate_met_not_met_and_missing_with_shown_values() -> None:
    table = [
        targets.Target("ckks", "server_http_warm", "<=", 0.025),
        targets.Target("ckks", "key_bytes", "<=", 0.7e6),
        targets.Target("ckks", "max_error", "<=", 1e-3),
        targets.Target("bfv", "e2e_http_warm", "<=", 0.020),  # bfv not measured: skipped
    ]
    found = targets.evaluate(
        {"ckks": Measured("ckks", http_server_warm_s=0.0111, key_bytes=800_000)}, None, table
    )
    assert [(v.scheme, v.verdict) for v in found] == [
        ("ckks", "met"),
        ("ckks", "NOT met"),
        ("ckks", "not measured"),
    ]
    assert [v.goal for v in found] == [
        "server time (HTTP, warm) <= 25.0 ms",
        "public keys <= 700.0 kB",
        "max |decrypted - plaintext model| <= 1.0e-03",
    ]
    assert [v.shown for v in found] == ["11.1 ms", "800.0 kB", fmt.MISSING]


def _measured(name: str, **values: object) -> Measured:
    measured = Measured(name)
    for key, value in values.items():
        assert hasattr(measured, key), key
        setattr(measured, key, value)
    return measured


def test_targets_cover_every_scheme_and_use_the_reference() -> None:
    reference = _measured("reference", inproc_server_warm_s=24.0, inproc_e2e_warm_s=25.0)
    measured = {
        "ei": _measured("ei", http_server_warm_s=1.2, http_e2e_warm_s=1.5),
        "ckks": _measured(
            "ckks",
            http_server_warm_s=0.02,
            key_bytes=600_000,
            response_bytes=140_000,
            errors=[1e-4],
            http_e2e_warm_s=0.03,
        ),
        "bfv": _measured(
            "bfv",
            http_server_warm_s=0.004,
            http_e2e_warm_s=0.01,
            throughput=Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=10),
        ),
    }
    found = targets.evaluate(measured, reference)
    assert len(found) == len(targets.TARGETS)
    verdicts = _verdicts(found)
    assert verdicts[("ei", "speedup_server_http")] == "met"  # 24 / 1.2 = 20x
    assert verdicts[("ckks", "response_bytes")] == "NOT met"  # 140 kB > 130 kB
    assert verdicts[("ckks", "key_bytes")] == "met"
    assert verdicts[("bfv", "throughput_verified")] == "met"  # 400/s
    assert all(v in ("met", "NOT met") for v in verdicts.values())
    speedup = next(v for v in found if v.target.metric == "speedup_server_http")
    assert speedup.shown == "20.0×"


def test_targets_without_reference_and_with_wrong_answers() -> None:
    measured = {
        "ei": _measured("ei", http_server_warm_s=1.2),
        "bfv": _measured(
            "bfv", throughput=Throughput(clients=8, seconds=5.0, ok=2000, checked=10, correct=9)
        ),
    }
    verdicts = _verdicts(targets.evaluate(measured, None))
    assert verdicts[("ei", "speedup_server_http")] == "not measured"
    assert verdicts[("bfv", "throughput_verified")] == "not measured"  # a wrong decryption voids it
    assert verdicts[("ei", "server_http_warm")] == "met"


# --- the report (tabulate) ---------------------------------------------------------------------


def test_table_aligns_columns() -> None:
    text = report.table(["", "ei", "bfv"], [["server", "1.27 s", "3.4 ms"], ["keys", "8.98 MB", "131 kB"]])
    lines = text.splitlines()
    assert lines[0].split() == ["ei", "bfv"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("server")
    # right-aligned: every line (rule included) ends at the same column
    assert len({len(line) for line in lines}) == 1


def test_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError):
        report.table(["a", "b"], [["1"]])


def test_tables_render_with_missing_figures() -> None:
    reference = _measured("reference", inproc_server_warm_s=24.0, key_bytes=8_978_335)
    scheme = _measured("bfv", scheme_id="bfv-seal4", http_server_warm_s=0.004, key_bytes=131_000)
    text = report.figures_table([reference, scheme], warm=5, clients=8)
    assert "bfv-seal4" in text and "8.98 MB" in text and "4.0 ms" in text
    ratios = report.ratios_table(reference, [scheme])
    assert "6,000×" in ratios  # 24 s / 4 ms
    assert "68.5×" in ratios  # key bytes


FIGURE_ROWS = [
    "scheme",
    "key generation (client)",
    "public key bytes",
    "key upload to Azurite",
    "encrypt (client)",
    "request bytes (JSON body)",
    "  of which ciphertexts (decoded)",
    "server, in process, cold (key-cache miss)",
    "server, in process, warm (median of 9)",
    "server, HTTP, cold (key-cache miss)",
    "server, HTTP, warm (median of 9)",
    "  of which compute (the rest: parse and checks)",
    "response bytes (JSON body)",
    "  of which result ciphertexts (decoded)",
    "decrypt (client)",
    "end to end, in process, warm",
    "end to end, HTTP, warm",
    "max |decrypted - plaintext model|",
    "accuracy vs true labels (HTTP)",
    "same label as the plaintext model",
    "throughput, HTTP, 2 workers, 8 clients",
    "  sampled responses decrypted correctly",
    "machine CPU used by other processes meanwhile",
]
RATIO_ROWS = [
    "server, in process, warm",
    "server, HTTP, warm",
    "end to end, in process, warm",
    "end to end, HTTP, warm",
    "key generation",
    "public key bytes",
    "request bytes",
    "response bytes",
]


# The last real run, rounded: server warm s, end to end s, key / request / response bytes, max error, rate.
LAST_RUN = {
    "reference": (19.3, 19.9, (8_980_000, 220_200, 3_070_000), 1.6e-6, 0.0),
    "ei": (0.738, 0.845, (8_980_000, 220_300, 3_070_000), 3.5e-6, 1.2),
    "ckks": (0.0111, 0.0189, (494_700, 42_000, 82_600), 3.0e-4, 157.0),
    "bfv": (0.0047, 0.0156, (134_100, 124_500, 118_400), 1.6e-4, 149.0),
}


def _run() -> tuple[dict[str, Measured], Measured]:
    """A small synthetic run from LAST_RUN: (the schemes by name, the reference)."""
    columns = {}
    for name, (server_s, e2e_s, (keys, request, response), error, rate) in LAST_RUN.items():
        m = Measured(name, scheme_id=f"{name}-1", keygen_s=0.0108, errors=[error], other_cpu=0.02)
        m.key_bytes, m.request_bytes, m.response_bytes = keys, request, response
        m.inproc_server_warm_s, m.inproc_e2e_warm_s = server_s * 0.8, e2e_s * 0.7
        m.http_server_cold_s, m.http_server_warm_s, m.http_e2e_warm_s = server_s * 3, server_s, e2e_s
        m.digits, m.correct, m.agree, m.upload_s = 10, 9, 10, 0.02
        m.throughput = Throughput(clients=8, seconds=5.0, ok=int(rate * 5), checked=24, correct=24)
        columns[name] = m
    reference = columns.pop("reference")
    reference.scheme_id, reference.keygen_s, reference.other_cpu = "EIServer.predict", 2.03, 0.0
    reference.inproc_server_cold_s, reference.inproc_server_warm_s = 19.3, 19.3
    reference.inproc_e2e_warm_s = 19.9
    reference.http_server_cold_s = reference.http_server_warm_s = reference.http_e2e_warm_s = None
    reference.upload_s, reference.digits, reference.throughput = None, 0, None
    return columns, reference


def test_report_shape() -> None:
    measured, reference = _run()
    digits = Digits(np.zeros((10, 784)), np.zeros(10), "MNIST test set")
    text = report.render(measured, reference, digits, warm=9, clients=8, reference_runs=1, other_cpu=0.3)
    lines = text.splitlines()
    # the figures table: a header of the columns, a rule, then one row per figure in the old order
    header = next(i for i, line in enumerate(lines) if line.split() == ["reference", "ei", "ckks", "bfv"])
    rule, rows = lines[header + 1], lines[header + 2 : header + 2 + len(FIGURE_ROWS)]
    assert set(rule.replace(" ", "")) == {"-"}
    widths = [len(cell) for cell in rule.split()]
    assert [row[: widths[0]].rstrip() for row in rows] == FIGURE_ROWS
    assert len({len(line) for line in [lines[header], rule, *rows]}) == 1
    assert rows[0].split()[-4:] == ["EIServer.predict", "ei-1", "ckks-1", "bfv-1"]
    assert "1,739×" in text and "157/s" in text and "24/24" in text and "30%" in text
    # the ratios table: one row per ratio, the same labels as results.RATIOS
    ratios = next(
        i for i, line in enumerate(lines) if line.startswith("× faster / smaller than the reference")
    )
    ratio_rows = lines[ratios + 2 : ratios + 2 + len(RATIO_ROWS)]
    assert [r.label for r in results.RATIOS] == RATIO_ROWS
    assert [row.split("  ")[0] for row in ratio_rows] == RATIO_ROWS
    # the targets, one line each, after their heading
    start = lines.index("targets (printed, never asserted)")
    target_lines = lines[start + 3 :]
    assert len(target_lines) == len(targets.TARGETS)
    assert target_lines[-1].split()[0] == "bfv" and target_lines[-1].endswith("NOT met")  # 149/s < 300/s
    assert "note: other processes used 30%" in text


def test_report_without_reference() -> None:
    measured, _ = _run()
    digits = Digits(np.zeros((1, 784)), np.zeros(1), "held-out gallery")
    text = report.render(measured, None, digits, warm=3, clients=8, reference_runs=1)
    assert "ratios to the reference: not measured (--skip-reference)" in text
    assert "× faster" not in text
    assert "note: other processes" not in text


# --- the charts --------------------------------------------------------------------------------


@pytest.mark.slow
def test_figures_are_written_as_png_and_svg(tmp_path: Path) -> None:
    measured, reference = _run()
    paths = figures.write_figures(tmp_path / "charts", reference, list(measured.values()))
    names = sorted(path.name for path in paths)
    assert names == sorted(f"{c.name}{suffix}" for c in figures.CHARTS for suffix in (".png", ".svg"))
    assert {c.name for c in figures.CHARTS} == {"time", "bytes", "error"}
    for path in paths:
        assert path.is_file()
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG") and len(data) > 30_000
        else:
            assert b"<svg" in data[:2000] and len(data) > 5_000
    svg = {path.stem: path.read_text(encoding="utf-8") for path in paths if path.suffix == ".svg"}
    # labels are text in the SVG, with the ratios of this run: 19.3 s / 11.1 ms, 8.98 MB / 134.1 kB
    assert "11.1 ms" in svg["time"] and "1,739× faster" in svg["time"]
    assert "134.1 kB" in svg["bytes"] and "67.0× smaller" in svg["bytes"]
    assert "same as the reference" in svg["bytes"]  # ei's keys are the seed's
    assert "3.0e-04" in svg["error"] and "188× more than the reference" in svg["error"]
    assert all("the seed's EIServer.predict" in text for text in svg.values())


@pytest.mark.slow
def test_figures_without_reference_have_no_ratios(tmp_path: Path) -> None:
    measured, _ = _run()
    measured["bfv"].http_e2e_warm_s = None  # not measured: its bar is missing, the chart still draws
    paths = figures.write_figures(tmp_path, None, list(measured.values()))
    time_svg = (tmp_path / "time.svg").read_text(encoding="utf-8")
    assert len(paths) == 6
    assert "faster" not in time_svg and "not measured" in time_svg
    assert "--skip-reference" in time_svg and "EIServer.predict" not in time_svg


@pytest.mark.parametrize("log", [True, False])
def test_chart_limits_leave_room_for_labels(log: bool) -> None:
    values = [19.3, 0.738, 0.0111] if log else [220_200.0, 42_000.0]
    labels = ["19.3 s", "738 ms   26.2× faster", "11.1 ms   1,739× faster"][: len(values)]
    left, right = figures._limits(values, labels, log)
    for value, label in zip(values, labels, strict=True):
        if log:
            share = (math.log10(value) - math.log10(left)) / (math.log10(right) - math.log10(left))
        else:
            share = (value - left) / (right - left)
        assert share + len(label) * figures.CHAR_WIDTH <= 0.981


# --- the in-process scorer -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service() -> Iterator[ScoringService]:
    service = ScoringService(*load_model(cli.ROOT / "service" / "model" / "mnist-linear" / "1"), ServiceSettings.from_env())
    service.wait_ready()
    yield service
    service.close()


def test_in_process_scorer_refuses_like_http_and_replays(service: ScoringService) -> None:
    scorer = InProcessScorer(service)
    with pytest.raises(ServiceRejected) as refused:
        scorer.score({"contract": "something else"})
    assert refused.value.status == 400 and refused.value.code == "bad_request"
    raw = json.dumps({"contract": "encrypted-mnist/v1", "scheme": "bfv-1", "result": ["AAAA"]}).encode()
    scorer.replay(raw)
    call = scorer.score({"ignored": True})  # answered with the recorded body, not by the service
    assert call.body["scheme"] == "bfv-1" and call.response_bytes == len(raw)
    with pytest.raises(ServiceRejected):  # the queue is empty again: the service answers
        scorer.score({"contract": "something else"})
