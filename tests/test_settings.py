"""AppSettings: environment, then secrets, then defaults; every bad value names its setting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from lib.errors import SettingsError
from lib.settings import AppSettings, azurite_connection_string

ENV_NAMES = (
    "BLOB_CONNECTION_STRING",
    "BLOB_CONTAINER",
    "SCORING_URL",
    "SCORING_TIMEOUT_S",
    "SAS_TTL_MINUTES",
)
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENV_NAMES, "AZURITE_PORT"):
        monkeypatch.delenv(name, raising=False)


class MissingSecrets(Mapping):
    """Behaves like st.secrets without a secrets.toml: every access raises FileNotFoundError."""

    def __getitem__(self, key: str) -> object:
        raise FileNotFoundError("No secrets found")

    def __iter__(self) -> Iterator[str]:
        raise FileNotFoundError("No secrets found")

    def __len__(self) -> int:
        raise FileNotFoundError("No secrets found")


def test_defaults_point_at_local_stack() -> None:
    settings = AppSettings.load()
    assert settings.blob_container == "public-keys"
    assert settings.scoring_url == "http://127.0.0.1:5001/score"
    assert settings.scoring_timeout_s == 120.0
    assert settings.sas_ttl_minutes == 60
    assert "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1" in settings.blob_connection_string
    assert "AccountName=devstoreaccount1" in settings.blob_connection_string
    assert settings.blob_endpoint == "http://127.0.0.1:10000/devstoreaccount1"


def test_azurite_port_changes_default_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURITE_PORT", "10123")
    assert AppSettings.load().blob_endpoint == "http://127.0.0.1:10123/devstoreaccount1"
    monkeypatch.setenv("AZURITE_PORT", "notaport")
    with pytest.raises(SettingsError, match="AZURITE_PORT"):
        AppSettings.load()


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_URL", "https://score.example.org/score")
    monkeypatch.setenv("SCORING_TIMEOUT_S", "7.5")
    monkeypatch.setenv("SAS_TTL_MINUTES", "15")
    monkeypatch.setenv("BLOB_CONTAINER", "keys-2")
    monkeypatch.setenv("BLOB_CONNECTION_STRING", azurite_connection_string(12345))
    settings = AppSettings.load()
    assert settings.scoring_url == "https://score.example.org/score"
    assert settings.scoring_timeout_s == 7.5
    assert settings.sas_ttl_minutes == 15
    assert settings.blob_container == "keys-2"
    assert settings.blob_endpoint == "http://127.0.0.1:12345/devstoreaccount1"


def test_secrets_fill_in_and_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"SCORING_URL": "http://10.0.0.5:5001/score", "sas_ttl_minutes": 30, "SCORING_TIMEOUT_S": 9}
    settings = AppSettings.load(secrets)
    assert settings.scoring_url == "http://10.0.0.5:5001/score"
    assert settings.sas_ttl_minutes == 30
    assert settings.scoring_timeout_s == 9.0
    monkeypatch.setenv("SCORING_URL", "http://127.0.0.1:6000/score")
    assert AppSettings.load(secrets).scoring_url == "http://127.0.0.1:6000/score"


def test_empty_environment_value_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_URL", "  ")
    assert AppSettings.load({"SCORING_URL": "http://h:1/score"}).scoring_url == "http://h:1/score"


def test_missing_secrets_file_is_not_an_error() -> None:
    assert AppSettings.load(MissingSecrets()).scoring_url == "http://127.0.0.1:5001/score"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCORING_URL", "ftp://example.org/score"),
        ("SCORING_URL", "not a url"),
        ("SCORING_URL", "http://user:pw@example.org/score"),
        ("SCORING_URL", "http://example.org:99999/score"),
        ("SCORING_TIMEOUT_S", "0"),
        ("SCORING_TIMEOUT_S", "-3"),
        ("SCORING_TIMEOUT_S", "nan"),
        ("SCORING_TIMEOUT_S", "soon"),
        ("SAS_TTL_MINUTES", "0"),
        ("SAS_TTL_MINUTES", "1.5"),
        ("SAS_TTL_MINUTES", "100000"),
        ("BLOB_CONTAINER", "Public-Keys"),
        ("BLOB_CONTAINER", "ab"),
        ("BLOB_CONTAINER", "a--b"),
        ("BLOB_CONTAINER", "-abc"),
        ("BLOB_CONTAINER", "abc-"),
        ("BLOB_CONTAINER", "a" * 64),
        ("BLOB_CONNECTION_STRING", "garbage"),
        ("BLOB_CONNECTION_STRING", "AccountName=x;BlobEndpoint=http://127.0.0.1:1/x"),
        ("BLOB_CONNECTION_STRING", "BlobEndpoint=https://x.blob.core.windows.net;SharedAccessSignature=sv=1"),
        ("BLOB_CONNECTION_STRING", f"AccountName=a;AccountKey={AZURITE_KEY};BlobEndpoint=nope"),
    ],
)
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        AppSettings.load()
    assert name in info.value.message


def test_valid_container_names() -> None:
    for name in ("abc", "public-keys", "a1-b2-c3", "0" * 63):
        assert AppSettings(blob_container=name).blob_container == name


def test_bool_is_not_a_number() -> None:
    with pytest.raises(SettingsError, match="SCORING_TIMEOUT_S"):
        AppSettings.load({"SCORING_TIMEOUT_S": True})


def test_direct_construction_normalises_numbers() -> None:
    settings = AppSettings(scoring_timeout_s="3", sas_ttl_minutes="5")  # type: ignore[arg-type]
    assert settings.scoring_timeout_s == 3.0 and isinstance(settings.sas_ttl_minutes, int)


def test_settings_are_frozen() -> None:
    settings = AppSettings.load()
    with pytest.raises(AttributeError):
        settings.scoring_url = "http://elsewhere/score"  # type: ignore[misc]


def test_repr_hides_account_key() -> None:
    settings = AppSettings.load()
    assert AZURITE_KEY not in repr(settings)
    assert "AccountKey" not in repr(settings)


def test_use_development_storage_is_accepted() -> None:
    settings = AppSettings.load({"BLOB_CONNECTION_STRING": "UseDevelopmentStorage=true"})
    assert settings.blob_endpoint == "http://127.0.0.1:10000/devstoreaccount1"
