"""The one settings object: every option is also an environment variable ``HOKUSAI_REGISTRY_<NAME>``.

`up` resolves the settings once, writes what the workers need into their environment, and the
workers (and the `keys` commands) read the same variables back, so all processes agree.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVED_ARTIFACT_ROOT = "mlflow-artifacts:/"
SECRETS_FILE = "secrets.json"
AUTH_INI_NAME = "auth.ini"  # MLflow's auth config, written by `up` into the data dir
KEEP_ALIVE_MARGIN_SECONDS = 5
MIN_SECRET_LENGTH = 16  # generated secrets are 43 characters (32 random bytes)


class ConfigError(ValueError):
    """A configuration the registry refuses to run with; the message says why and what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOKUSAI_REGISTRY_", extra="ignore")

    data_dir: Path = Path(".hokusai-registry")
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64)
    # The idle timeout of the load balancer in front (the ALB's default is 60 s). Workers keep an idle
    # connection open KEEP_ALIVE_MARGIN_SECONDS longer, so the load balancer always closes it first:
    # a connection the server closes just as the balancer reuses it fails that request (a 502).
    lb_idle_timeout_seconds: int = Field(60, ge=1, le=4000)
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    default_artifact_root: str = SERVED_ARTIFACT_ROOT
    serve_artifacts: bool = True
    allowed_hosts: str | None = None
    # Where MLflow's users/permissions and our key table live; defaults from the backend store.
    auth_db_uri: str | None = None
    default_permission: str = "NO_PERMISSIONS"
    admin_username: str = "admin"
    # Print a first admin key on first start. Off in the container: its stdout is a log (CloudWatch).
    first_admin_key: bool = True

    flask_secret_key: SecretStr | None = None
    admin_password: SecretStr | None = None
    key_hash_secret: SecretStr | None = None

    # Prometheus metrics at GET /metrics (docs/operations.md); off only to measure what they cost.
    metrics: bool = True
    # Sent as X-Hokusai-Replica on every answer; `up` draws one per start unless it is set.
    replica_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")

    # Exempt start-up objects from garbage collection (see server/app.py); off only to compare.
    gc_freeze: bool = True

    # text: uvicorn's and MLflow's log lines as they are; json: one JSON object per line (server/logs.py).
    log_format: Literal["text", "json"] = "text"

    # PostgreSQL prepares statements a connection repeats (server/database.py); off behind a
    # transaction-pooling proxy (PgBouncer, RDS Proxy), where a prepared statement pins or fails.
    prepared_statements: bool = True

    # Key, user and grant look-ups are cached per worker for this long; it bounds revocation.
    cache_ttl_seconds: float = Field(2.0, ge=0, le=5)

    # Model scanning (docs/scanning.md): block serves only clean or released versions, warn serves
    # every version with its verdict tagged, off does not scan.
    scan_policy: Literal["block", "warn", "off"] = "block"
    # A model up to this size is scanned inside its create_model_version request.
    scan_inline_max_bytes: int = Field(16 * 1024 * 1024, ge=0)
    # Background scans (larger models) at once per worker.
    scan_concurrency: int = Field(1, ge=1, le=16)

    # Operator limits on keys (docs/keys.md): creation beyond the lifetime is refused (it is also
    # the default lifetime); a key unused this long stops working. Both off by default.
    max_key_lifetime_days: float | None = Field(None, gt=0, le=36_500)
    expire_unused_days: float | None = Field(None, gt=0, le=36_500)

    # Optional external key service (keys issued elsewhere), see server/external.py.
    auth_url: str | None = None
    auth_service_id: str = "mlflow-registry"
    # A key revoked at the service keeps working here until its cached answer expires.
    auth_cache_ttl_seconds: float = Field(5.0, ge=0, le=300)
    auth_timeout_seconds: float = Field(3.0, gt=0)

    @field_validator("serve_artifacts")
    @classmethod
    def _serving_stays_on(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "artifact serving cannot be turned off: clients upload models through this server "
                "(/api/2.0/mlflow-artifacts/...); without it every upload fails with 404/503"
            )
        return value

    @field_validator("flask_secret_key", "admin_password", "key_hash_secret")
    @classmethod
    def _secrets_are_not_trivial(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters (an empty or short secret makes keys, "
                "sessions or the admin account guessable); unset it and the registry generates one, "
                "or use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("auth_url")
    @classmethod
    def _keys_travel_encrypted(cls, value: str | None) -> str | None:
        if not value:
            return None
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"must be an http(s) URL like https://auth.example.com, not {value!r}")
        if url.scheme == "http" and not _is_loopback(url.hostname):
            raise ValueError(
                f"must use https: {value!r} would send every API key in clear text to {url.hostname} "
                "(plain http is accepted only for localhost)"
            )
        return value.rstrip("/")

    @field_validator("default_artifact_root")
    @classmethod
    def _artifact_root_is_served(cls, value: str) -> str:
        if value.rstrip("/") + "/" != SERVED_ARTIFACT_ROOT:
            raise ValueError(
                f"default artifact root must be {SERVED_ARTIFACT_ROOT!r}, not {value!r}: any other root "
                "gives new experiments a location clients write to directly (they then need storage "
                "credentials and bypass the server); set --artifacts-destination for where the "
                "server stores artifacts"
            )
        return SERVED_ARTIFACT_ROOT

    @property
    def keep_alive_seconds(self) -> int:
        """How long uvicorn keeps an idle connection: longer than the load balancer does."""
        return self.lb_idle_timeout_seconds + KEEP_ALIVE_MARGIN_SECONDS

    @property
    def tracking_uri(self) -> str:
        return self.backend_store_uri or f"sqlite:///{self.data_dir.resolve() / 'mlflow.db'}"

    @property
    def auth_database_uri(self) -> str:
        if self.auth_db_uri:
            return self.auth_db_uri
        if self.backend_store_uri and not self.backend_store_uri.startswith("sqlite"):
            return self.backend_store_uri  # MLflow's auth tables use their own alembic version table
        return f"sqlite:///{self.data_dir.resolve() / 'auth.db'}"

    def recorded_auth_db_uri(self) -> str | None:
        """The auth database a previous `up` with this data dir used, so `keys` finds the same one."""
        config = configparser.ConfigParser()
        config.read(self.data_dir / AUTH_INI_NAME)
        return config.get("mlflow", "database_uri", fallback=None)

    @property
    def artifacts_uri(self) -> str:
        return self.artifacts_destination or str(self.data_dir.resolve() / "artifacts")

    @property
    def public_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def hash_secret(self) -> bytes:
        if self.key_hash_secret is None:
            raise ConfigError(
                "no key hash secret: run `hokusai-registry up` once with this --data-dir, or set "
                "HOKUSAI_REGISTRY_KEY_HASH_SECRET to the value the server uses"
            )
        return self.key_hash_secret.get_secret_value().encode()

    def with_data_dir_secrets(self, *, create: bool) -> Settings:
        """Fill the unset secrets from ``<data-dir>/secrets.json`` (mode 0600), creating it if asked."""
        path = self.data_dir / SECRETS_FILE
        stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        names = ("flask_secret_key", "admin_password", "key_hash_secret")
        missing = [name for name in names if name not in stored]
        if create and missing:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            stored |= {name: secrets.token_urlsafe(32) for name in missing}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump(stored, file)
            path.chmod(0o600)
        updates: dict[str, Any] = {
            name: SecretStr(stored[name]) for name in names if getattr(self, name) is None and name in stored
        }
        return self.model_copy(update=updates)

    def to_env(self) -> dict[str, str]:
        """The environment that makes a worker process resolve exactly these settings."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"HOKUSAI_REGISTRY_{name.upper()}"] = str(value)
        env["HOKUSAI_REGISTRY_DATA_DIR"] = str(self.data_dir.resolve())
        return env


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
