"""lib.batch_run and lib.batch_parts: the one engine behind Encrypted accuracy and the Schemes comparison.

No services: the fake sessions of tests/batch_fakes.py stand in for EncryptedSession.
"""

from __future__ import annotations

import gc
import logging

import numpy as np
import pytest
from batch_fakes import Factory, FakeSession, data, toy_model

from lib.accuracy import AccuracyRun
from lib.batch_parts import DigitResult, SchemeRun, plan_schemes, step_weights
from lib.batch_run import BatchRun, FreshSessions, SessionInUse
from lib.errors import StorageUnavailable
from lib.reference import reference_check
from lib.session import Prediction, Stage


def fresh(digits: dict[str, int], seed: int = 0) -> BatchRun:
    return BatchRun(plan_schemes(digits, data()[1], seed))


def test_fresh_sessions_make_the_key_in_a_step_of_its_own_and_close_it_at_the_end() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = fresh({"ckks": 2})
    first = run.advance(FreshSessions(factory), images, labels, model)
    assert first is not None and first.message == "key ready" and first.digit is None
    assert run.schemes[0].phase == "running" and factory.sessions[0].calls == 0
    assert run.schemes[0].key_bytes == 500_000 and run.schemes[0].keygen_s == pytest.approx(0.02)
    second = run.advance(FreshSessions(factory), images, labels, model)
    assert second is not None and second.message == "digit 1 of 2" and second.digit is not None
    assert second.digit.index == run.schemes[0].indices[0] and second.digit.key_cache == "miss"
    assert not factory.sessions[0].closed
    last = run.advance(FreshSessions(factory), images, labels, model)
    assert last is not None and last.message == "done" and last.digit is not None
    assert factory.sessions[0].closed and run.finished and run.complete
    assert run.advance(FreshSessions(factory), images, labels, model) is None


def test_a_session_in_use_classifies_at_once_names_the_part_and_is_never_closed() -> None:
    images, labels = data()
    model = toy_model()
    session = FakeSession("bfv", model)
    run = fresh({"": 3})
    report = run.advance(SessionInUse(session), images, labels, model)
    assert report is not None and report.digit is not None and report.scheme == "bfv"
    assert run.schemes[0].name == "bfv" and run.schemes[0].key_bytes is None  # no key setup measured
    while run.active:
        run.advance(SessionInUse(session), images, labels, model)
    assert run.complete and session.calls == 3 and not session.closed


def test_stop_then_resume_goes_on_with_the_same_session_and_digits() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = fresh({"ckks": 4})
    for _ in range(2):  # key setup, one digit
        run.advance(FreshSessions(factory), images, labels, model)
    run.stop()
    assert not run.active and not run.finished
    assert run.advance(FreshSessions(factory), images, labels, model) is None
    assert factory.sessions[0].calls == 1  # nothing was done while stopped
    run.resume()
    assert run.active
    while run.active:
        run.advance(FreshSessions(factory), images, labels, model)
    assert len(factory.sessions) == 1 and factory.sessions[0].closed
    assert [d.index for d in run.schemes[0].digits] == run.schemes[0].indices


def test_stop_and_close_end_the_run_and_resume_opens_a_fresh_session() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = fresh({"ckks": 3, "bfv": 2})
    for _ in range(2):
        run.advance(FreshSessions(factory), images, labels, model)
    run.stop()
    run.close()
    assert [s.phase for s in run.schemes] == ["stopped", "stopped"] and factory.sessions[0].closed
    assert run.finished and not run.complete
    run.resume()
    assert [s.phase for s in run.schemes] == ["waiting", "waiting"] and run.active
    while run.active:
        run.advance(FreshSessions(factory), images, labels, model)
    assert [s.scheme_name for s in factory.sessions] == ["ckks", "ckks", "bfv"]
    assert all(s.closed for s in factory.sessions) and run.complete
    assert [len(s.digits) for s in run.schemes] == [3, 2]


def test_a_failure_ends_only_that_schemes_part_and_resume_tries_it_again() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model, fail={"ei": StorageUnavailable("storage is down")}, fail_after={"ckks": 1})
    run = fresh({"ei": 1, "ckks": 3, "bfv": 2})
    reports = []
    while run.active:
        report = run.advance(FreshSessions(factory), images, labels, model)
        assert report is not None
        reports.append(report.message)
    assert reports[0] == "failed: storage is down"
    ei, ckks, bfv = run.schemes
    assert ei.phase == "failed" and ei.error == "storage is down" and not ei.digits
    assert ckks.phase == "failed" and "unknown_scheme" in ckks.error and len(ckks.digits) == 1
    assert factory.sessions[0].closed  # a failed part's session is closed (its key blob deleted)
    assert bfv.phase == "done" and len(bfv.digits) == 2
    assert run.finished and not run.complete

    factory.fail, factory.fail_after = {}, {}
    run.resume()
    assert not ei.error and not ckks.error and bfv.phase == "done"
    while run.active:
        run.advance(FreshSessions(factory), images, labels, model)
    assert run.complete and [d.index for d in ckks.digits] == ckks.indices
    assert all(s.closed for s in factory.sessions)


def test_fail_ends_the_part_under_way_with_a_message() -> None:
    run = fresh({"": 2})
    run.fail("No session key: storage is down.")
    assert run.schemes[0].phase == "failed" and run.schemes[0].error == "No session key: storage is down."
    assert not run.active
    run.resume()
    assert run.active and not run.schemes[0].error


def test_an_unexpected_failure_is_logged_and_named_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    images, labels = data()
    model = toy_model()

    class Broken(FakeSession):
        def predict(self, pixels: np.ndarray) -> Prediction:
            raise KeyError("secret detail")

    run = fresh({"": 2})
    with caplog.at_level(logging.ERROR, logger="encrypted_mnist.batch_run"):
        report = run.advance(SessionInUse(Broken("ckks", model)), images, labels, model)
    assert report is not None and report.message == "failed"
    error = run.schemes[0].error
    assert "KeyError" in error and "secret detail" not in error and BatchRun.AGAIN in error
    assert any(r.exc_info for r in caplog.records)  # the traceback went to the log


def test_progress_weighs_each_step_and_shows_the_key_setup_message() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = fresh({"ei": 2, "bfv": 2})
    assert run.fraction() == 0.0 and run.fraction(step_weights) == 0.0
    run.advance(FreshSessions(factory), images, labels, model)  # ei's key
    assert run.step_message == "Generating the key pair"  # what the factory reported last
    run.advance(FreshSessions(factory), images, labels, model)  # one ei digit
    assert run.fraction() == pytest.approx(1 / 4)  # digits only
    (ei_setup, ei_digit), (bfv_setup, bfv_digit) = step_weights("ei"), step_weights("bfv")
    total = ei_setup + 2 * ei_digit + bfv_setup + 2 * bfv_digit
    assert run.fraction(step_weights) == pytest.approx((ei_setup + ei_digit) / total)
    run.stop()
    run.close()
    assert run.fraction() == 1.0  # every part ended


def test_measure_is_the_reference_check_of_the_same_pixels() -> None:
    images, labels = data()
    model = toy_model()
    prediction = FakeSession("ckks", model).predict(images[4])
    digit = DigitResult.measure(4, int(labels[4]), images[4], prediction, model, "ckks")
    check = reference_check(model, images[4], prediction.scores, "ckks")
    assert digit.plain_label == check.plain_label and digit.max_abs_error == check.max_abs_error
    assert digit.max_abs_error == pytest.approx(1e-6) and digit.correct and digit.agrees
    assert digit.server_s == pytest.approx(prediction.server_seconds)
    assert digit.compute_s == prediction.stage_seconds("compute") == pytest.approx(0.01)
    assert digit.encrypt_s == pytest.approx(0.001) and digit.decrypt_s == pytest.approx(0.0005)
    assert digit.request_bytes == 40_000 and digit.result_bytes == 40_000
    blind = DigitResult.measure(4, int(labels[4]), images[4], prediction, None, "ckks")
    assert blind.plain_label is None and blind.max_abs_error is None and blind.agrees is None


def _digit(total_s: float, cache: str = "hit", label: int = 1) -> DigitResult:
    return DigitResult(0, 1, label, None, None, cache, total_s, 0.0, 0.0, total_s / 2, 0.0, 1, 2, 3, 4)


def test_summary_splits_cold_from_warm_and_gives_latency_percentiles() -> None:
    part = SchemeRun("bfv", indices=list(range(6)))
    assert part.summary().latency_p50_s is None and part.summary().accuracy is None
    part.digits = [_digit(5.0, "miss"), _digit(1.0), _digit(2.0), _digit(3.0, label=7), _digit(4.0)]
    summary = part.summary()
    assert summary.done == 5 and summary.planned == 6 and part.left == 1
    assert summary.cold_cache == "miss" and summary.e2e_cold_s == 5.0 and summary.server_cold_s == 2.5
    assert summary.e2e_warm_s == 2.5 and summary.server_warm_s == 1.25  # median of the other four
    assert summary.latency_p50_s == 3.0 and summary.latency_max_s == 5.0
    assert summary.latency_p90_s == pytest.approx(4.6)
    assert summary.accuracy == pytest.approx(4 / 5) and summary.agreement is None


def test_a_dropped_run_still_closes_the_session_it_opened() -> None:
    images, labels = data()
    model = toy_model()
    factory = Factory(model)
    run = fresh({"ckks": 3})
    run.advance(FreshSessions(factory), images, labels, model)
    del run
    gc.collect()
    assert factory.sessions[0].closed  # its key blob is deleted even if nobody closed the run


def test_planning() -> None:
    labels = data()[1]
    parts = plan_schemes({"ei": 2, "ckks": 10}, labels, seed=1)
    assert parts[0].indices == parts[1].indices[:2]
    assert sorted(labels[parts[1].indices]) == list(range(10))  # balanced by label
    with pytest.raises(ValueError, match="for ckks must be between 1 and 30, got 31"):
        plan_schemes({"ckks": 31}, labels)
    with pytest.raises(ValueError, match=r"^the number of digits must be between 1 and 30, got 0$"):
        plan_schemes({"": 0}, labels)
    with pytest.raises(ValueError, match="at least one scheme"):
        BatchRun([])


def test_prediction_stage_seconds_and_server_seconds() -> None:
    prediction = FakeSession("ckks", toy_model()).predict(data()[0][0])
    assert prediction.stage_seconds("compute") == pytest.approx(0.01)
    assert prediction.stage_seconds("no such stage") == 0.0
    assert prediction.server_seconds == pytest.approx(0.001 + 0.1 + 0.01)  # parse, key fetch, compute
    doubled = Prediction(
        scores=prediction.scores,
        label=prediction.label,
        stages=[*prediction.stages, Stage("compute", 0.5, "server")],
        sizes={},
        key_cache="hit",
        total_s=1.0,
        request_body={},
    )
    assert doubled.stage_seconds("compute") == pytest.approx(0.51)


# --- the accuracy run on the engine --------------------------------------------------------------


def test_accuracy_progress_resume_after_a_scheme_change_and_complete() -> None:
    images, labels = data()
    model = toy_model()
    ckks = FakeSession("ckks", model)
    run = AccuracyRun.plan(labels, 3, seed=0)
    assert run.progress() == (0.0, "0 of 3 digits") and run.scheme is None and run.next_index() == run.indices[0]
    digit = run.step(ckks, images, labels, model)
    assert run.progress(digit) == (pytest.approx(1 / 3), "1 of 3 digits · last: correct")
    assert run.step(FakeSession("bfv", model), images, labels, model) is None
    assert run.errors and "from ckks to bfv" in run.errors[0] and run.finished and not run.complete
    run.resume()  # back on the run's own scheme: it goes on where it was
    assert not run.errors and run.active
    while run.active:
        run.step(ckks, images, labels, model)
    assert run.complete and run.next_index() is None and len(run.items) == 3 and not ckks.closed
    assert run.summary().agreement == 1.0 and run.summary().max_abs_error == pytest.approx(1e-6)


def test_accuracy_unexpected_failure_says_press_resume(caplog: pytest.LogCaptureFixture) -> None:
    images, labels = data()

    class Broken(FakeSession):
        def predict(self, pixels: np.ndarray) -> Prediction:
            raise RuntimeError("boom")

    run = AccuracyRun.plan(labels, 2, seed=0)
    with caplog.at_level(logging.ERROR, logger="encrypted_mnist.batch_run"):
        assert run.step(Broken("ckks", toy_model()), images, labels, None) is None
    assert "RuntimeError" in run.errors[0] and "press Resume" in run.errors[0] and "boom" not in run.errors[0]
