"""The benchmark's parts that need no stack: formatting, ratios, targets, report, charts, options.

Nothing here is timed. The full runs are never started (they need an idle machine); the mixed
load's one small real run (slow) checks answers and the printed table, not latencies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from lib import formatting as fmt
from lib.errors import ServiceRejected
from lib.reference import PlaintextModel
from scripts.benchmark import __main__ as cli
from scripts.benchmark import (
    cpu,
    figures,
    load,
    mixed,
    mixed_run,
    mixed_session,
    report,
    results,
    tab,
    targets,
)
from scripts.benchmark.measure import InProcessScorer
from scripts.benchmark.mixed_session import Answer, SessionOutcome
from scripts.benchmark.results import Digits, Measured, Throughput
from scripts.local_stack import free_port
from service.scoring import ScoringService, load_model
from service.settings import ServiceSettings
from service.shared.network_model import load_network

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
        ("network", "server_http_warm"): ("<=", 0.040),
        ("network", "key_bytes"): ("<=", 6_000_000),
        ("network", "response_bytes"): ("<=", 200_000),
        ("network", "plaintext_accuracy"): (">=", 0.98),
        ("network", "agreement"): (">=", 0.999),
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
        "network": _measured(
            "network", http_server_warm_s=0.045, key_bytes=5_100_000, response_bytes=175_000,
            plaintext_accuracy=0.9807, digits=1000, agree=999,
        ),
    }
    found = targets.evaluate(measured, reference)
    assert len(found) == len(targets.TARGETS)
    verdicts = _verdicts(found)
    assert verdicts[("ei", "speedup_server_http")] == "met"  # 24 / 1.2 = 20x
    assert verdicts[("ckks", "response_bytes")] == "NOT met"  # 140 kB > 130 kB
    assert verdicts[("ckks", "key_bytes")] == "met"
    assert verdicts[("bfv", "throughput_verified")] == "met"  # 400/s
    assert verdicts[("network", "server_http_warm")] == "NOT met"  # 45 ms > 40 ms
    assert verdicts[("network", "plaintext_accuracy")] == verdicts[("network", "agreement")] == "met"
    # agreement needs 1,000 digits: over 10 it is not measured at all, even if all 10 agree
    few = _measured("network", digits=10, agree=10)
    assert _verdicts(targets.evaluate({"network": few}, None))[("network", "agreement")] == "not measured"
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
    "plaintext model's accuracy, whole real test set",
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
    "network": (0.0365, 0.0512, (5_118_400, 175_400, 175_300), 1.1e-2, 40.0),
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
    header = next(i for i, line in enumerate(lines) if line.split() == ["reference", "ei", "ckks", "bfv", "network"])
    rule, rows = lines[header + 1], lines[header + 2 : header + 2 + len(FIGURE_ROWS)]
    assert set(rule.replace(" ", "")) == {"-"}
    widths = [len(cell) for cell in rule.split()]
    assert [row[: widths[0]].rstrip() for row in rows] == FIGURE_ROWS
    assert len({len(line) for line in [lines[header], rule, *rows]}) == 1
    assert rows[0].split()[-5:] == ["EIServer.predict", "ei-1", "ckks-1", "bfv-1", "network-1"]
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
    bfv_rate = next(line for line in target_lines if line.startswith("bfv") and "predictions/s" in line)
    assert bfv_rate.endswith("NOT met")  # 149/s < 300/s
    # 10 digits are too few to tell 99.9 % agreement from 99 %
    assert target_lines[-1].split()[0] == "network" and target_lines[-1].endswith("not measured")
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
    model_dir = cli.ROOT / "service" / "model" / "mnist" / "1"
    service = ScoringService(*load_model(model_dir), ServiceSettings.from_env(), network=load_network(model_dir))
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


# --- the mixed load (--mixed): statistics, targets and report on fakes ---------------------------


def _sample(
    scheme: str,
    started: float,
    seconds: float,
    *,
    phase: str = mixed.TIMED,
    status: int = 200,
    session: int = 0,
    key_cache: str = "hit",
    server_s: float | None = None,
    wrong: bool = False,
    error: str = "",
) -> mixed.Sample:
    return mixed.Sample(
        scheme=scheme, session=session, phase=phase, digit=0, started=started, finished=started + seconds,
        status=status, key_cache=key_cache if status == 200 else "", server_s=server_s,
        compute_s=None if server_s is None else server_s / 2, wrong=wrong, error=error,
    )  # fmt: skip


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(60, 0, -1)]  # 1..60, unsorted
    assert mixed.percentile(values, 95) == 57.0  # 3 of 60 took longer
    assert mixed.percentile(values, 50) == 30.0
    assert mixed.percentile(values, 100) == 60.0
    assert mixed.percentile([0.2, 0.1, 0.4, 0.3], 50) == 0.2  # a measured value, never interpolated
    assert mixed.percentile([5.0], 95) == 5.0
    assert mixed.percentile([], 95) is None
    with pytest.raises(ValueError):
        mixed.percentile([1.0], 0)


def test_parse_sessions_and_replicas() -> None:
    known = ("ei", "ckks", "bfv")
    assert mixed.parse_sessions("bfv=6, ckks=6,EI=4", known) == {"bfv": 6, "ckks": 6, "ei": 4}
    assert mixed.parse_sessions("bfv=2,ei=0", known) == {"bfv": 2}  # 0 sessions: left out
    for bad in ("bfv", "paillier=2", "bfv=two", "bfv=1,bfv=2", "bfv=-1", "ei=0", ""):
        with pytest.raises(ValueError):
            mixed.parse_sessions(bad, known)
    assert mixed.parse_replicas("1,2,1") == [1, 2]
    for bad in ("0", "x", ""):
        with pytest.raises(ValueError):
            mixed.parse_replicas(bad)
    assert mixed.describe_sessions({"bfv": 6, "ckks": 6, "ei": 4}) == "16 sessions (6 bfv, 6 ckks, 4 ei)"


def test_mixed_options() -> None:
    args = cli.parse_args(["--mixed", "--replicas", "1", "--sessions", "bfv=1,ei=1", "--predictions", "2"])
    assert args.mixed and args.replicas == [1] and args.sessions == {"bfv": 1, "ei": 1}
    assert args.predictions == 2 and args.warmup is None
    default = cli.parse_args([])
    assert not default.mixed  # the default mode is unchanged
    assert default.replicas == [1, 2] and default.sessions == {"bfv": 6, "ckks": 6, "ei": 4}
    assert default.predictions == 10
    for bad in (["--sessions", "rsa=1"], ["--replicas", "0"], ["--predictions", "0"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            cli.parse_args(["--mixed", *bad])


def _fake_load() -> dict[str, mixed.SchemeLoad]:
    """bfv: 10 requests of 10..90 and 250 ms, the last two after ei finished; ei: 2 timed + 1 warm-up;
    ckks: one right, one lost, one wrong."""
    samples = [_sample("ei", 0.0, 2.0, phase=mixed.WARMUP, key_cache="miss", server_s=1.9)]
    samples += [
        _sample("ei", 2.0, 1.0, server_s=0.9),
        _sample("ei", 3.0, 1.5, server_s=1.4, key_cache="miss"),
    ]
    samples += [_sample("bfv", 0.5 * i, 0.01 * (i + 1), server_s=0.004) for i in range(8)]  # during ei
    samples += [_sample("bfv", 5.0, 0.09), _sample("bfv", 5.5, 0.25)]  # ei is done by 4.5 s
    samples += [
        _sample("ckks", 0.1, 0.02, server_s=0.01),
        _sample("ckks", 0.2, 0.5, status=mixed.LOST_STATUS, error="ConnectionResetError: reset"),
        _sample("ckks", 0.3, 0.03, server_s=0.01, wrong=True, error="label 3, the plaintext model says 5"),
    ]
    return mixed.summarise(samples, {"bfv": 2, "ckks": 1, "ei": 1})


def test_summarise_keeps_warmups_apart_and_marks_requests_while_ei_ran() -> None:
    loads = _fake_load()
    assert list(loads) == ["bfv", "ckks", "ei"]
    bfv, ckks, ei = loads["bfv"], loads["ckks"], loads["ei"]
    assert (ei.requests, len(ei.warmups), ei.misses) == (2, 1, 1)  # the warm-up's miss is not counted
    assert bfv.requests == 10 and len(bfv.during_slow) == 8
    assert bfv.p95_s == pytest.approx(0.25) and bfv.max_s == pytest.approx(0.25)
    assert bfv.p95_during_slow_s == pytest.approx(0.08)  # the two after ei finished are left out
    assert bfv.p50_s == pytest.approx(0.05)
    assert bfv.span_s == pytest.approx(5.75)
    assert bfv.throughput == pytest.approx(10 / 5.75)
    assert (ckks.wrong, ckks.lost) == (1, 1)
    assert ckks.throughput == pytest.approx(1 / 0.6)  # only the right answer counts, over 0.1..0.7 s
    assert ckks.p95_s == pytest.approx(0.03)  # a lost request has no latency
    assert ckks.first_errors == ["ConnectionResetError: reset", "label 3, the plaintext model says 5"]
    assert ei.p95_during_slow_s is None and ei.p95_s == pytest.approx(1.5)
    assert ei.server_percentile("server", 50) == pytest.approx(0.9)
    assert ei.server_percentile("outside", 95) == pytest.approx(0.1)
    every = mixed.combined(loads)
    assert (every.requests, every.sessions, every.lost, every.wrong) == (15, 4, 1, 1)


def test_overlap_is_strict() -> None:
    a, b = _sample("bfv", 1.0, 1.0), _sample("ei", 2.0, 1.0)  # b starts as a ends
    assert not a.overlaps(b) and not b.overlaps(a)
    assert a.overlaps(_sample("ei", 1.5, 0.1)) and a.overlaps(_sample("ei", 0.0, 5.0))


def test_mixed_targets_are_the_issues() -> None:
    goals = {(t.scheme, t.metric): (t.comparison, t.threshold) for t in targets.MIXED_TARGETS}
    assert goals == {
        ("bfv", "p95_during_ei"): ("<=", 0.150),
        ("ckks", "p95_during_ei"): ("<=", 0.150),
        ("ei", "p95"): ("<=", 3.0),
        ("*", "wrong"): ("<=", 0),
        ("*", "lost"): ("<=", 0),
    }
    assert all(t.metric in targets.LOAD_METRICS for t in targets.MIXED_TARGETS)


def test_evaluate_load_verdicts() -> None:
    loads = _fake_load()
    found = {(v.scheme, v.target.metric): v for v in targets.evaluate_load(loads)}
    assert len(found) == 3 + 3 * 2  # every scheme gets the wrong and lost targets
    assert found[("bfv", "p95_during_ei")].verdict == "met"
    assert found[("bfv", "p95_during_ei")].shown == "80.0 ms"
    assert found[("ei", "p95")].verdict == "met"
    assert found[("ckks", "wrong")].verdict == found[("ckks", "lost")].verdict == "NOT met"
    assert found[("bfv", "lost")].verdict == "met" and found[("bfv", "lost")].shown == "0"
    assert found[("ckks", "p95_during_ei")].goal == "p95 round trip while ei runs <= 150 ms"
    assert not targets.all_met(list(found.values()))
    slow = {"ei": mixed.SchemeLoad("ei", timed=[_sample("ei", 0.0, 3.5)])}
    assert [v.verdict for v in targets.evaluate_load(slow)] == ["NOT met", "met", "met"]
    # without ei in the load, "while ei runs" cannot be measured, and so is no pass
    alone = {"bfv": mixed.SchemeLoad("bfv", timed=[_sample("bfv", 0.0, 0.01)])}
    verdicts = targets.evaluate_load(alone)
    assert verdicts[0].verdict == "not measured" and not targets.all_met(verdicts)
    assert not targets.all_met([])


def _topology(loads: dict[str, mixed.SchemeLoad], replicas: int = 1) -> mixed.Topology:
    sessions = {name: load.sessions for name, load in loads.items()}
    return mixed.Topology(
        replicas, f"{replicas} replica(s)", sessions, predictions=10, warmup=1, loads=loads, wall_s=5.0,
        service_cpu_s=9.0, client_cpu_s=0.05, other_cpu=0.02, cpus=2,
    )  # fmt: skip


def _rows(text: str) -> dict[str, list[str]]:
    """The load table's rows by scheme: the cells split on runs of two or more spaces."""
    import re

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("scheme ") and "p95" in line)
    header = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("("):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return {name: dict(zip(header, cells, strict=True)) for name, cells in rows.items()}  # type: ignore[misc]


def test_topology_report_shows_every_scheme_and_the_verdict() -> None:
    text = report.topology_report(_topology(_fake_load()))
    rows = _rows(text)
    assert list(rows) == ["bfv", "ckks", "ei", "all"]
    assert rows["bfv"]["p95"] == "250 ms" and rows["bfv"]["p95 while ei ran"] == "80.0 ms"
    assert rows["bfv"]["while ei ran"] == "8/10" and rows["bfv"]["predictions/s"] == "1.7/s"
    assert (rows["ckks"]["wrong"], rows["ckks"]["lost"]) == ("1", "1")
    assert rows["ei"]["key-cache misses"] == "1" and rows["ei"]["p95 while ei ran"] == fmt.MISSING
    assert rows["all"]["requests"] == "15"
    assert "ckks: ConnectionResetError: reset" in text
    assert "result: FAIL (7 of 9 targets met)" in text
    warmups = "warm-ups (untimed, before the timed phase, not in the tables above): ei 1 requests"
    assert f"{warmups}, each session's first p50 2.00 s, max 2.00 s" in text
    assert "p50 of each session: bfv 50.0 ms; ckks 20.0 ms; ei 1.00 s" in text
    assert "the stack (scoring, Azurite) 9.00 s (90% of the machine)" in text


def test_mixed_report_passes_skips_and_summarises() -> None:
    good = {
        "bfv": mixed.SchemeLoad("bfv", 1, timed=[_sample("bfv", 0.1, 0.02, server_s=0.01)]),
        "ei": mixed.SchemeLoad("ei", 1, timed=[_sample("ei", 0.0, 1.2, server_s=1.0)]),
    }
    good = mixed.summarise([*good["bfv"].timed, *good["ei"].timed], {"bfv": 1, "ei": 1})
    skipped = mixed.Topology(2, "2 replicas behind nginx", {"bfv": 1}, 10, 4, skipped="skipped: no twin yet")
    text = report.mixed_report([_topology(good), skipped])
    assert "result: PASS (6 of 6 targets met)" in text
    assert "== 2 replicas behind nginx ==\n\nskipped: no twin yet" in text
    assert "== summary ==" not in text  # one topology ran
    both = report.mixed_report([_topology(good), _topology(_fake_load(), replicas=2)])
    summary = both.split("== summary ==")[1]
    assert "20.0 ms (20.0 ms)" in summary and "250 ms (80.0 ms)" in summary
    assert summary.strip().splitlines()[-1].split() == ["result", "PASS", "FAIL"]
    dumped = json.loads(mixed.samples_json([_topology(good), skipped]))
    assert [t["replicas"] for t in dumped] == [1]  # the skipped topology has no samples
    assert [s["scheme"] for s in dumped[0]["samples"]] == ["bfv", "ei"]
    assert dumped[0]["samples"][1]["round_trip_s"] == pytest.approx(1.2)


# --- the mixed load: the parts around the processes ------------------------------------------------


def test_jobs_deal_out_distinct_digits_and_hide_secrets() -> None:
    digits = Digits(np.random.default_rng(1).random((40, 784)), np.arange(40) % 10, "test")
    jobs = mixed_run.jobs_for(
        {"bfv": 2, "ei": 1}, 3, 1, digits, scoring_url="http://127.0.0.1:1/score",
        connection_string="AccountKey=secret", scoring_key="key-123",
    )  # fmt: skip
    assert [(j.scheme, j.number) for j in jobs] == [("bfv", 0), ("bfv", 1), ("ei", 2)]
    picked = [d for j in jobs for d in j.digits]
    assert len(picked) == len(set(picked)) == 12
    assert np.array_equal(jobs[1].pixels, digits.images[list(jobs[1].digits)])
    assert "secret" not in repr(jobs[0]) and "key-123" not in repr(jobs[0])


def test_stack_arguments_per_topology() -> None:
    assert mixed_run._stack_kwargs(1) == ({"replicas": 0}, "")  # the plain service
    kwargs, key = mixed_run._stack_kwargs(2)
    assert kwargs["replicas"] == 2 and kwargs["scoring_key"] == key and len(key) >= 24
    assert mixed_run._stack_kwargs(2)[1] != key  # a fresh key per run
    assert mixed_run.key_caches(1) == 2 and mixed_run.key_caches(2) == 4  # a cache per gunicorn worker
    assert mixed_run.default_warmup(1) == 6 and mixed_run.default_warmup(2) == 12


def test_the_twin_topology_is_skipped_without_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(mixed_run, "twin_available", lambda: False)
    digits = Digits(np.zeros((1, 784)), np.zeros(1), "test")
    log = io.StringIO()
    topology = mixed_run.run_topology(2, {"bfv": 1}, 2, None, digits, _fake_model(), log=log)
    assert "no `replicas` parameter" in topology.skipped and not topology.loads
    assert "skipped" in log.getvalue()
    assert mixed_run.twin_available() is not None  # the real check reads LocalStack's signature


def _fake_model() -> PlaintextModel:
    """Scores = the first ten pixels: a digit whose pixel k is largest is class k."""
    coef = np.zeros((10, 784))
    coef[np.arange(10), np.arange(10)] = 1.0
    return PlaintextModel(coef=coef, intercept=np.zeros(10), path=Path("fake"))


def test_samples_are_checked_against_the_plaintext_model() -> None:
    images = np.zeros((3, 784))
    images[0, 3] = images[1, 5] = images[2, 7] = 1.0
    digits = Digits(images, np.array([3, 5, 7]), "fake")
    right, wrong = np.eye(10)[3], np.eye(10)[2]
    answers = [
        Answer(
            mixed.WARMUP,
            0,
            0.0,
            1.0,
            200,
            key_cache="miss",
            replica="127.0.0.1:9",
            timings_ms={"parse": 10.0, "key_fetch": 50.0, "compute": 800.0, "total": 900.0},
            scores=right,
        ),
        Answer(mixed.TIMED, 1, 1.0, 1.5, 200, key_cache="hit", timings_ms={"total": 400.0}, scores=wrong),
        Answer(mixed.TIMED, 2, 1.5, 1.6, 200, key_cache="hit", error="bad answer: InvalidInput: not valid"),
        Answer(mixed.TIMED, 2, 1.6, 1.7, 503, error="HTTP 503 busy"),
    ]
    samples = mixed_run.samples_of(SessionOutcome("ei", 4, answers), _fake_model(), digits)
    assert [(s.phase, s.wrong, s.ok) for s in samples] == [
        ("warm-up", False, True),
        ("timed", True, True),  # label 2, the plaintext model says 5
        ("timed", True, True),  # undecryptable
        ("timed", False, False),  # lost
    ]
    assert samples[0].server_s == pytest.approx(0.9) and samples[0].compute_s == pytest.approx(0.8)
    assert samples[0].server_wait_s == pytest.approx(0.04) and samples[0].replica == "127.0.0.1:9"
    assert samples[1].server_wait_s is None  # parts missing: not guessed
    assert samples[1].error == "label 2, the plaintext model says 5"
    assert samples[3].error == "HTTP 503 busy" and samples[0].session == 4


def test_send_all_times_each_request_with_the_key_and_counts_losses() -> None:
    from http.server import BaseHTTPRequestHandler

    from tests.http_stub import serve

    seen: list[tuple[str, bytes, int]] = []  # (Authorization, body, client port: one per connection)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers.get("Authorization", ""), body, self.client_address[1]))
            status = 200 if body != b"refuse" else 403
            cache = b"miss" if body.startswith(b"miss") else b"hit"
            data = b'{"server":{"key_cache":"%s"}}' % cache if status == 200 else b'{"error":"forbidden"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Replica", "127.0.0.1:7")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serve(Handler) as base:
        sent = mixed_session.send_all(f"{base}/score", [b"a", b"refuse", b"b"], key="k1")
        assert len({port for *_, port in seen}) == 1  # one kept-alive connection
        seen.clear()
        warmups = mixed_session.send_all(
            f"{base}/score", [b"miss1", b"hit", b"miss2", b"never sent"], reuse=False, stop_after_misses=2
        )
        assert [b for _, b, _ in seen] == [b"miss1", b"hit", b"miss2"]  # stopped at the second miss
        assert len({port for *_, port in seen}) == 3  # a new connection each
    assert len(warmups) == 3
    assert [(s[2], s[5]) for s in sent] == [(200, "127.0.0.1:7"), (403, "127.0.0.1:7"), (200, "127.0.0.1:7")]
    assert all(s[0] <= s[1] for s in sent) and sent[0][1] <= sent[1][0]  # back to back, in order
    assert mixed_session._refusal(403, sent[1][3]) == "HTTP 403 forbidden"
    assert mixed_session._refusal(502, b"<html>") == "HTTP 502"
    port = free_port()  # nothing listens there: every request is lost, none retried
    lost = mixed_session.send_all(f"http://127.0.0.1:{port}/score", [b"a", b"b"], timeout_s=5)
    assert [s[2] for s in lost] == [mixed.LOST_STATUS] * 2 and lost[0][4].startswith("ConnectionRefusedError")


def test_key_header_only_when_a_key_is_set() -> None:
    from http.server import BaseHTTPRequestHandler

    from tests.http_stub import serve

    auth: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            auth.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with serve(Handler) as base:
        mixed_session.send_all(f"{base}/score", [b"x"], key="k1")
        mixed_session.send_all(f"{base}/score", [b"x"])
    assert auth == ["Bearer k1", None]


def test_per_session_and_replica_figures() -> None:
    samples = [
        _sample("ei", 0.0, 1.0, session=2), _sample("ei", 1.0, 3.0, session=2), _sample("ei", 4.0, 2.0, session=2),
        _sample("ei", 0.0, 5.0, session=1),
        _sample("ei", 5.0, 1.0, session=1, status=mixed.LOST_STATUS),  # no latency: not in its p50
    ]  # fmt: skip
    loads = mixed.summarise(samples, {"ei": 2})
    assert mixed.per_session_p50(loads["ei"]) == [5.0, 2.0]  # session 1, then session 2
    assert "ei 5.00 s, 2.00 s" in report.per_session_line(loads)
    assert mixed.replica_counts(loads) == {} and report.replicas_line(loads) is None
    twin = [dataclasses.replace(s, replica=f"127.0.0.1:{1 + i % 2}") for i, s in enumerate(samples)]
    twin_loads = mixed.summarise(twin, {"ei": 2})
    assert mixed.replica_counts(twin_loads) == {"127.0.0.1:1": 3, "127.0.0.1:2": 2}
    assert (
        report.replicas_line(twin_loads)
        == "timed answers per replica (X-Replica): 127.0.0.1:1 3, 127.0.0.1:2 2"
    )


class _FakeBarrier:
    def __init__(self) -> None:
        self.aborted = False

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True


def test_a_session_that_cannot_start_reports_and_breaks_the_barriers() -> None:
    job = mixed_session.SessionJob(
        scheme="paillier", number=3, scoring_url="http://127.0.0.1:1/score",
        connection_string="UseDevelopmentStorage=true", container="public-keys",
        digits=(0,), pixels=np.zeros((1, 784)), warmup=1,
    )  # fmt: skip
    ready, warm, done, out = _FakeBarrier(), _FakeBarrier(), _FakeBarrier(), []

    class _Queue:
        def put(self, obj: object) -> None:
            out.append(obj)

    with pytest.raises(Exception, match="paillier"):
        mixed_session.session_main(job, ready, warm, done, _Queue())
    assert ready.aborted and warm.aborted and done.aborted
    assert len(out) == 1 and out[0].number == 3
    assert out[0].failure.startswith("preparing the session failed") and not out[0].answers


@pytest.mark.slow
@pytest.mark.integration
def test_a_small_real_mixed_run_answers_every_scheme_right(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 replica, 1 session per scheme, 2 predictions: a real stack, real processes, real digits."""
    from lib.schemes import SCHEME_NAMES

    # An earlier AppTest leaves app.py as __main__, which spawned processes would run again (as
    # `python -m scripts.benchmark`, the benchmark's own __main__ is harmless).
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))

    sessions = ",".join(f"{name}=1" for name in SCHEME_NAMES)
    code = cli.main(["--mixed", "--replicas", "1", "--sessions", sessions, "--predictions", "2"])
    text = capsys.readouterr().out
    rows = _rows(text.split("== 1 replica")[1])
    assert set(rows) == {*SCHEME_NAMES, "all"}
    for name in SCHEME_NAMES:
        assert (rows[name]["requests"], rows[name]["wrong"], rows[name]["lost"]) == ("2", "0", "0"), rows[
            name
        ]
        assert rows[name]["p95"] != fmt.MISSING
    assert "result: " in text and code in (0, 1)  # latency targets are printed, never asserted here


def test_warmup_line_shows_each_sessions_first_request() -> None:
    samples = [
        _sample("bfv", 0.0, 0.5, phase=mixed.WARMUP, key_cache="miss", session=0),
        _sample("bfv", 0.5, 0.1, phase=mixed.WARMUP, session=0),
        _sample("bfv", 0.0, 0.3, phase=mixed.WARMUP, key_cache="miss", session=1),
        _sample("bfv", 1.0, 0.01, session=0),
    ]
    line = report.warmup_line(mixed.summarise(samples, {"bfv": 2}))
    assert line.endswith("bfv 3 requests, each session's first p50 300 ms, max 500 ms")


# --- the tab mode's benchmark (scripts/benchmark/tab.py): its targets and spreads, no browser ------------


def test_tab_targets_are_met_up_to_the_limit_and_not_just_over_it() -> None:
    rows = tab.target_rows({"keygen_encrypt": 300.0, "end_to_end_warm": 500.1, "assets": 1_694_587})
    assert [row.met for row in rows] == [True, False, True]
    assert rows[1].ratio == pytest.approx(500.1 / 500)
    assert rows[0].cells() == ["key generation plus encryption ≤ 300 ms", "300 ms", "1.00×", "yes"]
    assert rows[1].cells()[1:] == ["500 ms", "1.00×", "NO"]  # shown rounded, still not met
    assert rows[2].cells()[1:] == ["1.69 MB", "0.34×", "yes"]
    assert not tab.all_met(rows)
    assert tab.all_met(tab.target_rows({"keygen_encrypt": 130.0, "end_to_end_warm": 300.0, "assets": 5e6}))


def test_a_tab_target_not_measured_is_not_met() -> None:
    rows = tab.target_rows({"keygen_encrypt": 130.0, "end_to_end_warm": float("nan")})  # no assets
    assert [row.met for row in rows] == [True, False, False]
    assert [row.ratio for row in rows[1:]] == [None, None]
    assert rows[2].cells()[1:] == [fmt.MISSING, fmt.MISSING, "not measured"]
    assert not tab.all_met(rows)
    assert not tab.all_met([])


def test_tab_spread_median_and_nearest_rank_p95_and_the_plan() -> None:
    values = [float(v) for v in range(20, 0, -1)]  # 20 .. 1, unsorted on purpose
    assert tab.spread(values) == tab.Spread(20, 10.5, 19.0, 1.0, 20.0)  # p95 of 20: the 19th smallest
    assert tab.spread([7.0]) == tab.Spread(1, 7.0, 7.0, 7.0, 7.0)
    assert tab.spread([]) == tab.Spread(0, None, None, None, None)
    assert tab.split_warm(20, 3) == [7, 7, 6]
    assert tab.plan_digits(4, 3, 3) == [[0, 1, 2], [0, 1], [2, 0]]  # a first prediction each, then the warm
    assert tab.ratio(1.0, 0.0) is None and tab.ratio(3.0, 2.0) == 1.5
