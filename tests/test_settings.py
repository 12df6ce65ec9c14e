from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from hokusai_registry.settings import ConfigError, Settings


def test_embedded_default_keeps_everything_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert settings.auth_database_uri == f"sqlite:///{tmp_path.resolve()}/auth.db"
    assert settings.artifacts_uri == str(tmp_path.resolve() / "artifacts")
    assert settings.default_artifact_root == "mlflow-artifacts:/"


def test_postgresql_holds_auth_data_too() -> None:
    settings = Settings(backend_store_uri="postgresql://u@db/registry")
    assert settings.auth_database_uri == "postgresql://u@db/registry"


def test_every_option_is_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_REGISTRY_PORT", "6001")
    monkeypatch.setenv("HOKUSAI_REGISTRY_ALLOWED_HOSTS", "registry.example.com,registry.example.com:443")
    settings = Settings()
    assert settings.port == 6001
    assert settings.allowed_hosts == "registry.example.com,registry.example.com:443"


@pytest.mark.parametrize("root", ["s3://bucket/prefix", "file:///tmp/a", "mlflow-artifacts://other-host/"])
def test_artifact_roots_that_bypass_the_server_are_refused(root: str) -> None:
    with pytest.raises(ValidationError, match="bypass the server"):
        Settings(default_artifact_root=root)


def test_revocation_bound_caps_the_cache_ttl() -> None:
    with pytest.raises(ValidationError):
        Settings(cache_ttl_seconds=6)


def test_secrets_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    first = Settings(data_dir=tmp_path).with_data_dir_secrets(create=True)
    again = Settings(data_dir=tmp_path).with_data_dir_secrets(create=False)
    assert first.hash_secret() == again.hash_secret()
    assert stat.S_IMODE((tmp_path / "secrets.json").stat().st_mode) == 0o600


def test_environment_secrets_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Settings(data_dir=tmp_path).with_data_dir_secrets(create=True)
    monkeypatch.setenv("HOKUSAI_REGISTRY_KEY_HASH_SECRET", "from-secrets-manager")
    assert (
        Settings(data_dir=tmp_path).with_data_dir_secrets(create=False).hash_secret()
        == b"from-secrets-manager"
    )


def test_missing_hash_secret_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOKUSAI_REGISTRY_KEY_HASH_SECRET"):
        Settings(data_dir=tmp_path).with_data_dir_secrets(create=False).hash_secret()


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://auth.example.com/", "https://auth.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://auth.example.com", None),
        ("http://10.0.0.5", None),
        ("auth.example.com", None),
        ("ftp://auth.example.com", None),
    ],
)
def test_the_key_service_is_reached_over_https_unless_local(url: str, accepted: str | None) -> None:
    if accepted is None:
        with pytest.raises(ValidationError, match="auth_url"):
            Settings(auth_url=url)
    else:
        assert Settings(auth_url=url).auth_url == accepted


def test_external_answers_are_cached_at_most_five_minutes() -> None:
    assert Settings(auth_cache_ttl_seconds=300).auth_cache_ttl_seconds == 300
    with pytest.raises(ValidationError, match="auth_cache_ttl_seconds"):
        Settings(auth_cache_ttl_seconds=301)


def test_log_format_is_text_unless_set_to_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOKUSAI_REGISTRY_LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("HOKUSAI_REGISTRY_LOG_FORMAT", "json")
    assert Settings().log_format == "json"
    assert Settings().to_env()["HOKUSAI_REGISTRY_LOG_FORMAT"] == "json"  # the workers read it back
    monkeypatch.setenv("HOKUSAI_REGISTRY_LOG_FORMAT", "JSON")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
