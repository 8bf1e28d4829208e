"""lib.comparison and lib.comparison_view: the live scheme comparison, its table and charts.

Unit tests use a fake session factory (no services); one integration test runs real ckks and bfv
sessions against the Azurite and scoring service from tests/conftest.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from batch_fakes import Factory, FakeSession, data, run_all, toy_model

from lib.comparison import ComparisonRun, default_digits, session_factory
from lib.comparison_view import METRICS, chart_points, latency_points, metric_rows, ratio
from lib.digits import gallery
from lib.errors import StorageUnavailable
from lib.reference import REFERENCE_MODEL_FILE, load_reference_model
from lib.settings import AppSettings


def test_each_scheme_gets_a_fresh_session_and_cold_and_warm_are_apart() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = ComparisonRun.plan({"ei": 2, "ckks": 5, "bfv": 5}, labels, seed=3)
    assert run.schemes[0].indices == run.schemes[1].indices[:2]  # ei runs a subset of the same digits
    assert run.progress() == (0.0, "ei: making a key pair and uploading its public keys")
    steps = run_all(run, factory, images, labels, model)
    assert steps == 3 + 2 + 5 + 5  # one key setup per scheme, one step per digit
    assert run.finished and run.progress()[0] == 1.0
    assert [s.scheme_name for s in factory.sessions] == ["ei", "ckks", "bfv"]
    assert all(s.closed for s in factory.sessions)  # every key blob deleted at the end

    ei, ckks, bfv = run.summaries()
    assert ei.phase == "done" and ei.done == 2 and ckks.done == 5
    assert ckks.cold_cache == "miss"
    assert ckks.server_cold_s == pytest.approx(0.001 + 0.1 + 0.01)  # parse + key fetch + compute
    assert ckks.server_warm_s == pytest.approx(0.001 + 0.01)
    assert ckks.key_bytes == 500_000 and ckks.keygen_s == pytest.approx(0.02)
    assert ckks.request_bytes == 40_000 and ckks.response_bytes == 80_000
    assert ckks.decrypt_s == pytest.approx(0.0005)
    assert ckks.max_abs_error == pytest.approx(1e-6)
    assert ckks.accuracy == 1.0 and ckks.plain_accuracy == 1.0 and ckks.agreement == 1.0

    key_bytes = next(m for m in METRICS if m.key == "key_bytes")
    assert ratio([ei, ckks, bfv], key_bytes, "ckks") == pytest.approx(500_000 / 9_000_000)
    rows = {row["metric"]: row for row in metric_rows([ei, ckks, bfv])}
    assert rows["Public keys in blob storage"]["ei"] == "9.00 MB"
    assert rows["Public keys in blob storage"]["ckks / ei"] == "18× less"
    assert rows["Digits classified"]["ei"] == "2 of 2"
    assert rows["Accuracy"]["bfv"] == "100.0%"
    assert rows["Server time, key cache warm"]["ckks"] == "11.0 ms"
    points = chart_points([ei, ckks, bfv], key_bytes)
    assert [p["scheme"] for p in points] == ["ei", "ckks", "bfv"]
    assert points[1]["label"] == "500.0 kB (18× less than ei)" and "×" not in points[0]["label"]
    strip = latency_points(run.schemes)
    assert len(strip) == 12
    assert [p["cache"] for p in strip if p["scheme"] == "ckks"] == ["miss"] + ["hit"] * 4


def test_without_ei_there_are_no_ratios() -> None:
    images, labels = data()
    model = toy_model()
    run = ComparisonRun.plan({"ckks": 2, "bfv": 2}, labels, seed=0)
    run_all(run, Factory(model), images, labels, model)
    rows = metric_rows(run.summaries())
    assert set(rows[0]) == {"metric", "ckks", "bfv"}
    summary = run.summaries()[0]
    assert summary.server_warm_s is not None
    one = ComparisonRun.plan({"bfv": 1}, labels, seed=0)
    run_all(one, Factory(model), images, labels, model)
    assert one.summaries()[0].server_warm_s is None  # one digit: no warm request


def test_a_failing_scheme_is_reported_and_the_run_goes_on() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model, fail={"ei": StorageUnavailable("storage is down")}, fail_after={"ckks": 1})
    run = ComparisonRun.plan({"ei": 2, "ckks": 3, "bfv": 2}, labels, seed=0)
    run_all(run, factory, images, labels, model)
    ei, ckks, bfv = run.schemes
    assert ei.phase == "failed" and ei.error == "storage is down" and not ei.digits
    assert ckks.phase == "failed" and "unknown_scheme" in ckks.error and len(ckks.digits) == 1
    assert bfv.phase == "done" and len(bfv.digits) == 2
    assert all(s.closed for s in factory.sessions)
    rows = {row["metric"]: row for row in metric_rows(run.summaries())}
    assert rows["Key generation"]["ei"] == "–" and rows["Key generation"]["ckks / ei"] == "–"


def test_stop_ends_the_scheme_under_way_and_closes_its_session() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = ComparisonRun.plan({"ckks": 5, "bfv": 5}, labels, seed=0)
    for _ in range(3):  # key setup and two digits of ckks
        run.step(factory, images, labels, model)
    assert run.progress()[1] == "ckks: digit 3 of 5"
    run.stop()
    assert not run.active and run.step(factory, images, labels, model) is None
    run.close()
    assert factory.sessions[0].closed and len(factory.sessions) == 1
    assert [s.phase for s in run.schemes] == ["stopped", "stopped"]
    assert run.summaries()[0].done == 2


def test_planning() -> None:
    labels = np.repeat(np.arange(10), 3)
    with pytest.raises(ValueError, match="between 1 and 30"):
        ComparisonRun.plan({"ckks": 31}, labels)
    with pytest.raises(ValueError):
        ComparisonRun.plan({}, labels)
    assert default_digits("ei") < default_digits("ckks") == default_digits("bfv")
    # The formatting cases that were here are in tests/test_formatting.py (the shared formatters).


# --- with the real services --------------------------------------------------------------------


def test_real_ckks_and_bfv_sessions(app_env: dict[str, str]) -> None:
    settings = AppSettings(
        blob_connection_string=app_env["BLOB_CONNECTION_STRING"], scoring_url=app_env["SCORING_URL"]
    )
    images, labels = gallery()
    model = load_reference_model() if REFERENCE_MODEL_FILE.is_file() else None
    run = ComparisonRun.plan({"ckks": 3, "bfv": 3}, labels, seed=7)
    run_all(run, session_factory(settings), images, labels, model)
    for summary in run.summaries():
        assert summary.phase == "done" and summary.done == 3 and not summary.error, summary
        assert summary.cold_cache == "miss"
        assert summary.key_bytes and summary.key_bytes < 2_000_000
        assert summary.request_bytes and summary.response_bytes
        assert summary.server_cold_s is not None and summary.server_warm_s is not None
        assert summary.keygen_s is not None and summary.decrypt_s is not None
        if model is not None:
            assert summary.agreement == 1.0
            assert summary.max_abs_error is not None and summary.max_abs_error < 1e-2
    assert not any(s.notice for s in run.schemes)  # every key blob deleted


def test_an_unexpected_failure_is_a_message_not_a_traceback() -> None:
    images, labels = data()
    model = toy_model()

    def broken(scheme: str, progress) -> FakeSession:
        raise RuntimeError("boom")

    run = ComparisonRun.plan({"bfv": 2}, labels, seed=0)
    run_all(run, broken, images, labels, model)
    assert run.schemes[0].phase == "failed" and "RuntimeError" in run.schemes[0].error
    assert "boom" not in run.schemes[0].error and "run the comparison again" in run.schemes[0].error
