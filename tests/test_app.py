"""AppTest (streamlit.testing.v1): the app's pages, the pick-a-digit flow, and failures as messages.

The classification tests use the real Azurite and scoring service from tests/conftest.py (so they
are ``integration`` tests); the "service down" tests point the app at closed ports. The canvas is
an unknown element to AppTest (it returns no drawing), which is exactly the empty-canvas case.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import ContainerClient
from streamlit.testing.v1 import AppTest

from lib.app_state import AppState
from lib.digits import gallery
from lib.formatting import format_bytes, format_seconds
from lib.reference import REFERENCE_MODEL_FILE, load_reference_model
from lib.schemes import DEFAULT_SCHEME, SPECS
from lib.settings import azurite_connection_string
from scripts.local_stack import LocalStack, free_port

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 180  # a cold key (about 2 s) plus one encrypted prediction (1-2 s), on a busy 2-core machine
PICK = ":material/casino: Pick a test digit"
PAGES = {
    "pages/1_How_it_works.py": "How it works",
    "pages/2_Encrypted_accuracy.py": "Encrypted accuracy",
    "pages/3_What_the_server_sees.py": "What the server sees",
    "pages/4_Schemes.py": "Schemes",
}


def start_app(monkeypatch: pytest.MonkeyPatch, blob_connection_string: str, scoring_url: str) -> AppTest:
    monkeypatch.setenv("BLOB_CONNECTION_STRING", blob_connection_string)
    monkeypatch.setenv("SCORING_URL", scoring_url)
    app = AppTest.from_file(APP, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, app.exception
    return app


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/score"


def texts(app: AppTest) -> str:
    """Everything a user can read on the page (main area and sidebar), one item per line."""
    parts: list[str] = []
    for kind in (
        "title",
        "header",
        "subheader",
        "markdown",
        "caption",
        "error",
        "warning",
        "info",
        "success",
        "code",
    ):
        parts += [str(element.value) for element in getattr(app, kind)]
    parts += [f"{metric.label}: {metric.value}" for metric in app.metric]
    return "\n".join(parts)


def app_state(app: AppTest) -> AppState:
    return app.session_state["app_state"]


def shown_prediction(app: AppTest) -> int:
    """The big predicted digit on the main page."""
    for element in app.markdown:
        match = re.search(r"id='predicted-digit'[^>]*>(\d)<", element.value)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no prediction on the page:\n{texts(app)}")


def wait_until(condition, timeout: float = 120.0, app: AppTest | None = None) -> None:
    """Poll ``condition`` (rerunning ``app`` between polls, as a user's next click would)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)
        if app is not None:
            app.run()
            assert not app.exception, app.exception


# --- no services needed ------------------------------------------------------------------------


@pytest.mark.slow
def test_empty_canvas_gives_a_message_not_a_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    app = start_app(monkeypatch, azurite_connection_string(free_port()), closed_port_url())
    assert "Encrypted MNIST inference" in app.title[0].value
    app.button(key="classify").click().run()
    assert not app.exception
    assert any("canvas is empty" in w.value and "draw a digit" in w.value for w in app.warning), texts(app)
    assert "predicted-digit" not in texts(app)


def test_a_bad_setting_is_named_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_URL", "localhost:5001/score")
    app = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not app.exception, app.exception
    message = " ".join(e.value for e in app.error)
    assert "not configured" in message and "SCORING_URL" in message and "secrets.toml" in message


@pytest.mark.parametrize("page", list(PAGES))
def test_pages_render_with_services_down(monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    app = start_app(monkeypatch, azurite_connection_string(free_port()), closed_port_url())
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert PAGES[page] in app.title[0].value
    body = texts(app)
    assert "not reachable" in body  # the shared health banner and sidebar are on every page
    if page.startswith("pages/1"):
        assert "128-bit security" in body and "SAS" in body
    if page.startswith("pages/3"):
        assert "No prediction yet" in body
    if page.startswith("pages/4"):
        assert all(info.public_material in body and info.title in body for info in SPECS.values())
        assert "Run comparison" in [b.label for b in app.button]


@pytest.mark.slow
def test_a_comparison_with_storage_down_says_what_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    app = start_app(monkeypatch, azurite_connection_string(free_port()), closed_port_url())
    app.switch_page("pages/4_Schemes.py").run()
    app.multiselect(key="cmp_schemes").set_value(["bfv"]).run()
    app.number_input(key="cmp_n_bfv").set_value(2).run()
    app.button(key="cmp_start").click().run()
    assert not app.exception, app.exception
    errors = " ".join(e.value for e in app.error)
    assert "bfv" in errors and "stopped after 0 of 2 digits" in errors and "local_stack up" in errors, errors


@pytest.mark.slow
def test_scoring_service_down_says_what_to_do(monkeypatch: pytest.MonkeyPatch, azurite) -> None:
    app = start_app(monkeypatch, azurite.connection_string, closed_port_url())
    banner = " ".join(e.value for e in app.error)
    assert "scoring service" in banner and "not reachable" in banner
    assert "scripts.local_stack up" in banner and "scripts/run_demo.sh" in banner

    app.segmented_control(key="mode").set_value(PICK).run()
    app.button(key="pick_random").click().run()  # picking classifies at once
    assert not app.exception, app.exception
    errors = [e.value for e in app.error]
    assert any("not reachable (connection failed)" in e and "local_stack up" in e for e in errors), errors
    assert "predicted-digit" not in texts(app)


@pytest.mark.slow
def test_storage_down_then_back_recovers_by_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scoring_service
) -> None:
    port = free_port()
    app = start_app(monkeypatch, azurite_connection_string(port), scoring_service.url)
    body = texts(app)
    assert "Blob storage" in body and "not reachable" in body
    wait_until(lambda: app_state(app).key.status().phase == "failed", 30, app)
    app.run()
    assert "retries by itself" in texts(app)

    with LocalStack(azurite=True, scoring=False, azurite_port=port, stack_dir=tmp_path, in_memory=True):
        # Each rerun re-checks health; once storage answers, key setup starts again by itself.
        wait_until(lambda: app_state(app).key.status().usable, 120, app)
        app.run()
        status = app_state(app).key.status()
        body = texts(app)
        assert "**Blob storage**: reachable" in body
        assert not [e.value for e in app.error if "Blob storage" in e.value]
        assert status.key_id in body and "public-keys/" + status.key_id in body
        app_state(app).close()  # delete the key blob while Azurite still runs


# --- with the real services --------------------------------------------------------------------


@pytest.mark.slow
def test_pick_a_test_digit_shows_a_prediction(
    monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]
) -> None:
    app = start_app(monkeypatch, app_env["BLOB_CONNECTION_STRING"], app_env["SCORING_URL"])
    app.segmented_control(key="mode").set_value(PICK).run()
    app.pills(key="pick_label").set_value(3).run()  # a random 3, classified at once
    assert not app.exception, app.exception

    result = app_state(app).last
    assert result is not None and result.digit.true_label == 3
    assert result.scheme == DEFAULT_SCHEME == result.prediction.request_body["scheme"]["name"]
    assert shown_prediction(app) == result.label
    body = texts(app)
    assert "True label **3**" in body and f"Encrypted with **{SPECS[DEFAULT_SCHEME].title}**" in body
    metrics = {m.label: m.value for m in app.metric}
    sizes = result.prediction.sizes
    assert metrics["Ciphertext sent"] == format_bytes(sizes["ciphertext_bytes"]), metrics
    assert metrics["Public keys uploaded"] == format_bytes(sizes["key_bytes"]), metrics
    assert metrics["Response"] == format_bytes(sizes["response_bytes"]), metrics
    assert all(re.fullmatch(r"\d+(\.\d+)? (kB|MB)", metrics[m]) for m in ("Ciphertext sent", "Response"))
    assert metrics["Latency"] == format_seconds(result.prediction.total_s), metrics
    app.run()  # in a browser the sidebar's fragment triggers this rerun once the key is ready
    sidebar = texts(app)
    assert result.key_id in sidebar and result.key_blob_url in sidebar  # key id, and where it is stored
    assert shown_prediction(app) == result.label  # the result stays on the page

    if REFERENCE_MODEL_FILE.is_file():
        # The encrypted path agrees with the plaintext model on the same pixels.
        model = load_reference_model()
        images, _ = gallery()
        assert result.label == int(model.predict(images[[result.digit.gallery_index]], DEFAULT_SCHEME)[0])
        assert metrics["Agreement"].startswith("Yes")
        assert result.reference is not None and result.reference.max_abs_error < 2e-2  # the network's CKKS noise

    # "What the server sees": the body that was sent, ciphertexts cut, SAS signature hidden.
    app.switch_page("pages/3_What_the_server_sees.py").run()
    assert not app.exception, app.exception
    shown = "\n".join(c.value for c in app.code)
    sent = result.prediction.request_body
    assert '"ciphertexts"' in shown and "more base64 characters" in shown
    assert sent["ciphertexts"][0][:120] in shown and sent["ciphertexts"][0] not in shown
    assert "sig=<signature hidden>" in shown
    signature = re.search(r"[?&]sig=([^&]+)", sent["keys"]["url"]).group(1)
    assert signature not in texts(app)
    assert result.key_blob_url in shown

    # "New key": a new key pair in the background; the sidebar then shows the new key.
    app.button(key="key_rotate").click().run()
    wait_until(lambda: app_state(app).key.status().usable, 120, app)
    new_key = app_state(app).key.status().key_id
    assert new_key and new_key != result.key_id
    app.run()
    assert f"public-keys/{new_key}" in texts(app)  # the sidebar's "Stored at"


def test_encrypted_accuracy_runs_and_reports(
    monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]
) -> None:
    app = start_app(monkeypatch, app_env["BLOB_CONNECTION_STRING"], app_env["SCORING_URL"])
    app.switch_page("pages/2_Encrypted_accuracy.py").run()
    app.number_input(key="accuracy_n").set_value(2).run()
    app.button(key="accuracy_start").click().run()  # Start: the page classifies both digits, then reruns
    assert not app.exception, app.exception
    run = app.session_state["accuracy_run"]
    assert run.finished and len(run.items) == 2 and not run.errors
    metrics = {m.label: m.value for m in app.metric}
    assert re.fullmatch(r"(0|50|100)\.0%", metrics["Accuracy"]), metrics
    assert metrics["Median latency"] == format_seconds(run.summary().latency_p50_s), metrics
    if REFERENCE_MODEL_FILE.is_file():
        assert metrics["Agreement with plaintext"] == "100.0%"
    assert any("Done: 2 digits" in s.value for s in app.success)
    assert np.isfinite([i.total_s for i in run.items]).all()


def blob_names(connection_string: str) -> set[str]:
    """The public-key blobs in storage right now."""
    with ContainerClient.from_connection_string(connection_string, "public-keys") as container:
        return {blob.name for blob in container.list_blobs()}


@pytest.mark.slow
def test_switching_the_scheme_in_the_sidebar(
    monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]
) -> None:
    app = start_app(monkeypatch, app_env["BLOB_CONNECTION_STRING"], app_env["SCORING_URL"])
    wait_until(lambda: app_state(app).key.status().usable, 120, app)
    old = app_state(app).key.status()
    assert old.scheme == DEFAULT_SCHEME == app.radio(key="scheme_choice").value
    assert old.key_id in blob_names(app_env["BLOB_CONNECTION_STRING"])

    app.radio(key="scheme_choice").set_value("bfv").run()  # a new bfv key, made in the background
    assert not app.exception, app.exception
    bfv = SPECS["bfv"]
    assert app_state(app).scheme == "bfv"
    body = texts(app)
    assert bfv.public_material in body and bfv.security in body  # the sidebar says what goes where
    assert bfv.title in app.caption[0].value  # the main page's text follows the choice at once
    wait_until(lambda: app_state(app).key.status().usable, 120, app)
    new = app_state(app).key.status()
    assert new.scheme == "bfv" and new.key_id != old.key_id and not new.notice
    names = blob_names(app_env["BLOB_CONNECTION_STRING"])
    assert new.key_id in names and old.key_id not in names  # the old key's blob is deleted
    app.run()
    assert f"**Scheme** {bfv.title}" in texts(app) and f"public-keys/{new.key_id}" in texts(app)

    app.segmented_control(key="mode").set_value(PICK).run()
    app.pills(key="pick_label").set_value(0).run()
    assert not app.exception, app.exception
    result = app_state(app).last
    assert result is not None and result.scheme == "bfv" and result.key_id == new.key_id
    assert result.prediction.request_body["scheme"]["name"] == "bfv"
    assert shown_prediction(app) == result.label
    if REFERENCE_MODEL_FILE.is_file():
        assert result.reference is not None and result.reference.agrees
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Public keys uploaded"] == format_bytes(new.key_bytes)

    # The choice survives page switches; the other pages speak of the chosen scheme.
    app.switch_page("pages/1_How_it_works.py").run()
    assert not app.exception, app.exception
    assert app.radio(key="scheme_choice").value == "bfv" and bfv.title in texts(app)
    app.switch_page("pages/3_What_the_server_sees.py").run()
    assert bfv.title in texts(app) and bfv.public_material in texts(app)
    app.switch_page("app.py").run()
    assert app.radio(key="scheme_choice").value == "bfv" and app_state(app).key.status().key_id == new.key_id
    assert shown_prediction(app) == result.label
    app_state(app).close()


@pytest.mark.slow
def test_schemes_page_compares_the_schemes(monkeypatch: pytest.MonkeyPatch, app_env: dict[str, str]) -> None:
    app = start_app(monkeypatch, app_env["BLOB_CONNECTION_STRING"], app_env["SCORING_URL"])
    wait_until(lambda: app_state(app).key.status().usable, 120, app)
    sidebar_key = app_state(app).key.status().key_id
    app.switch_page("pages/4_Schemes.py").run()
    assert not app.exception, app.exception
    assert app.multiselect(key="cmp_schemes").value == ["ei", "ckks", "bfv", "network"]
    assert app.number_input(key="cmp_n_ei").value == 5 and app.number_input(key="cmp_n_ckks").value == 100
    app.number_input(key="cmp_n_ei").set_value(2).run()
    app.number_input(key="cmp_n_ckks").set_value(3).run()
    app.number_input(key="cmp_n_bfv").set_value(3).run()
    app.number_input(key="cmp_n_network").set_value(3).run()
    blobs_before = blob_names(app_env["BLOB_CONNECTION_STRING"])
    app.button(key="cmp_start").click().run()  # runs to the end, then reruns to show the results
    assert not app.exception, app.exception

    run = app.session_state["comparison_run"]
    assert run.finished and [s.phase for s in run.schemes] == ["done"] * 4, [s.error for s in run.schemes]
    assert any("Done: ei on 2, ckks on 3, bfv on 3, network on 3 digits" in s.value for s in app.success)
    table = app.dataframe[0].value
    assert list(table.columns) == ["ei", "ckks", "bfv", "network", "ckks / ei", "bfv / ei", "network / ei"]
    assert table.loc["Digits classified", "network"] == "3 of 3"
    assert table.loc["Digits classified", "bfv"] == "3 of 3"
    assert table.loc["Public keys in blob storage", "ei"].endswith("MB")
    assert re.fullmatch(r"[\d,.]+× less", table.loc["Public keys in blob storage", "ckks / ei"])
    assert re.fullmatch(
        r"[\d,.]+× (less|more)|1\.0× \(same\)", table.loc["Server time, key cache warm", "bfv / ei"]
    )
    assert len(app.get("vega_lite_chart")) >= 10  # a bar chart per metric, and every digit
    # Its own sessions: the sidebar's key is untouched, and no comparison key blob is left behind.
    assert app_state(app).key.status().key_id == sidebar_key
    # (Subset, not equality: an earlier test's ended session may delete its own blob meanwhile.)
    blobs_after = blob_names(app_env["BLOB_CONNECTION_STRING"])
    assert blobs_after <= blobs_before and sidebar_key in blobs_after
    app_state(app).close()


def test_how_it_works_explains_the_browser_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The How it works page has a second diagram and a trust model for "Encrypt in my browser"."""
    from service.shared.specs import BROWSER

    app = start_app(monkeypatch, azurite_connection_string(free_port()), closed_port_url())
    app.switch_page("pages/1_How_it_works.py").run()
    assert not app.exception, app.exception
    charts = [chart.proto.spec for chart in app.get("graphviz_chart")]
    assert len(charts) == 2, charts  # the app's own flow, then the browser tab's
    tab_flow = charts[1]
    assert "Your browser tab: trusted, holds the secret key" in tab_flow
    assert "sees ciphertexts and public keys" in tab_flow and "secret key: never leaves the tab" in tab_flow
    assert "node-seal" in tab_flow and "SAS link" in tab_flow
    body = " ".join(texts(app).split())  # the markdown's line breaks as spaces
    assert "In your browser: the mode where the app's server sees nothing either" in body
    assert "keeps the **secret key** in the tab's memory" in body
    assert "**relays only, and sees ciphertexts and public keys**" in body
    assert BROWSER.public_material in body and "tests/test_browser_mode.py" in body
    assert "does not remove the need to trust the code" in body
