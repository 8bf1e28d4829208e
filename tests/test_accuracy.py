"""lib.accuracy: the Encrypted accuracy page's run (balanced, stoppable, one scheme).

No services: a fake EncryptedSession (tests/app_fakes.py) stands in for the real one.
"""

from __future__ import annotations

import numpy as np
import pytest
from app_fakes import FakeSession

from lib.accuracy import AccuracyRun
from lib.batch_parts import balanced_order


def test_accuracy_run_is_balanced_stoppable_and_summarised() -> None:
    labels = np.repeat(np.arange(10), 3)
    order = balanced_order(labels, np.random.default_rng(0))
    assert sorted(order) == list(range(30))
    assert sorted(labels[order[:10]]) == list(range(10))

    run = AccuracyRun.plan(labels, 4, seed=1)
    images = np.ones((30, 784), dtype=np.float32)
    session = FakeSession()
    assert run.step(session, images, labels, None).encrypted_label == 9
    run.stopped = True
    assert not run.active and len(run.items) == 1
    run.stopped = False
    while run.active:
        run.step(session, images, labels, None)
    summary = run.summary()
    assert summary.done == 4 and summary.agreement is None
    assert summary.accuracy == sum(labels[i] == 9 for i in run.indices) / 4
    assert summary.latency_p50_s == pytest.approx(1.1)


def test_accuracy_run_stops_rather_than_mix_schemes() -> None:
    labels = np.repeat(np.arange(10), 3)
    images = np.ones((30, 784), dtype=np.float32)
    run = AccuracyRun.plan(labels, 5, seed=2)
    run.step(FakeSession(scheme="ckks"), images, labels, None)
    assert run.scheme == "ckks"
    assert run.step(FakeSession(scheme="bfv"), images, labels, None) is None
    assert not run.active and len(run.items) == 1
    assert "changed from ckks to bfv" in run.errors[0] and "press Start" in run.errors[0]
