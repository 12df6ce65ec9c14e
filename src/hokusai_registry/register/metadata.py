"""Validation of what a third party passes in, as pure functions (no request is made before these pass).

Rules for the tokenized-model metadata are the ones in docs/register.md ("The metadata"); model-name
and tag rules mirror what MLflow's server enforces, so a bad value fails here and not half-way through.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hokusai_registry.client import MISSING_KEY, MISSING_URL
from hokusai_registry.register import scan
from hokusai_registry.register.errors import InvalidInput

TOKEN_ID = re.compile(r"[A-Z0-9](?:[A-Z0-9-]{0,62}[A-Z0-9])?")
MAX_METRIC_CHARS = 250
MAX_MODEL_NAME_CHARS = 256  # the registered_models.name column
MAX_TAG_KEY_CHARS = 250
MAX_TAG_VALUE_CHARS = 5000
TAG_KEY = re.compile(r"[\w./ :-]+")  # MLflow's tag-key rule

TAG_TOKEN_ID = "hokusai_token_id"  # noqa: S105 (a tag name, not a secret)
TAG_METRIC = "benchmark_metric"
TAG_VALUE = "benchmark_value"
TAG_STATUS = "hokusai_status"
RESERVED_TAGS = frozenset({TAG_TOKEN_ID, TAG_METRIC, TAG_VALUE, TAG_STATUS})


@dataclass(frozen=True)
class Metadata:
    """The validated, normalized metadata of one tokenized model version."""

    name: str
    token_id: str
    metric: str
    baseline: float
    tags: Mapping[str, str]

    def version_tags(self) -> dict[str, str]:
        """Tags set when the version is created; ``hokusai_status`` follows only after the round trip."""
        return {
            **self.tags,
            TAG_TOKEN_ID: self.token_id,
            TAG_METRIC: self.metric,
            TAG_VALUE: baseline_text(self.baseline),
        }


def token_id(value: str) -> str:
    """1-64 of A-Z, 0-9 and '-', no leading or trailing '-'; lowercase is upper-cased."""
    if not isinstance(value, str):
        raise InvalidInput("token_id", f"must be text, got {type(value).__name__}")
    normalized = value.upper()
    if not TOKEN_ID.fullmatch(normalized):
        raise InvalidInput(
            "token_id",
            f"{value!r} is not a token id: use 1-64 characters of A-Z, 0-9 and '-', "
            "not starting or ending with '-'",
        )
    return normalized


def metric(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("metric", "the benchmark metric name must not be empty")
    if len(value) > MAX_METRIC_CHARS:
        raise InvalidInput("metric", f"the name has {len(value)} characters; at most {MAX_METRIC_CHARS}")
    return value


def baseline(value: float | int | str) -> float:
    """A finite number; text is parsed, so the CLI and the Python call share one rule."""
    if isinstance(value, bool):
        raise InvalidInput("baseline", "must be a number, not a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("baseline", f"{value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidInput("baseline", f"{value!r} is not a finite number")
    return number


def baseline_text(number: float) -> str:
    """How the baseline is stored: the shortest text that reads back as the same float."""
    return repr(number)


def model_name(value: str) -> str:
    """Non-empty, no '/' or ':', not a relative path like '..' (MLflow's own rules), and short enough."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("name", "the model name must not be empty")
    if "/" in value or ":" in value:
        raise InvalidInput("name", f"{value!r} contains '/' or ':', which MLflow does not allow")
    if posixpath.normpath(value) != value or value == "." or value.startswith(".."):
        raise InvalidInput("name", f"{value!r} is not a valid model name")
    if len(value) > MAX_MODEL_NAME_CHARS:
        raise InvalidInput("name", f"the name has {len(value)} characters; at most {MAX_MODEL_NAME_CHARS}")
    return value


def experiment_name(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise InvalidInput("experiment", "the experiment name must not be empty")
    return value


def tags(values: Mapping[str, str] | None) -> dict[str, str]:
    """Extra version tags; the four metadata tags are set from their own arguments only."""
    checked: dict[str, str] = {}
    for key, value in (values or {}).items():
        if not isinstance(key, str) or not TAG_KEY.fullmatch(key) or len(key) > MAX_TAG_KEY_CHARS:
            raise InvalidInput(
                "tags", f"tag key {key!r}: use 1-{MAX_TAG_KEY_CHARS} of letters, digits, _ - . / : space"
            )
        if key in RESERVED_TAGS:
            raise InvalidInput("tags", f"tag {key!r} is set by register itself; pass it as its own argument")
        if key.startswith(scan.TAG_PREFIX):
            raise InvalidInput("tags", f"tag {key!r}: {scan.TAG_PREFIX}* tags are set by the registry's scan")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidInput(
                "tags", f"tag {key!r}: the value must be text of at most {MAX_TAG_VALUE_CHARS} characters"
            )
        checked[key] = value
    return checked


def parse_tags(pairs: Iterable[str]) -> dict[str, str]:
    """``K=V`` strings from the command line into a mapping (the value may contain '=')."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput("tags", f"{pair!r} is not KEY=VALUE")
        parsed[key] = value
    return parsed


def model_dir(path: str | Path) -> Path:
    """An existing directory with an ``MLmodel`` file, i.e. what ``mlflow.*.save_model`` writes."""
    directory = Path(path)
    if not directory.is_dir():
        raise InvalidInput("model", f"{str(path)!r} is not a directory")
    if not (directory / "MLmodel").is_file():
        raise InvalidInput(
            "model", f"{str(path)!r} has no MLmodel file, so it is not an MLflow model directory"
        )
    return directory


def scan_timeout(value: float) -> float:
    """Seconds to wait for the registry's model scan: a finite number, at least 0 (0: do not wait)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput("scan_timeout", f"{value!r} is not a number of seconds (at least 0)")
    return float(value)


def api_key(value: str | None) -> str:
    """The key ``hokusai_registry.client.resolve_key`` found, checked (this module reads no environment)."""
    if not value or not value.strip():
        raise InvalidInput("api_key", MISSING_KEY)
    return value.strip()


def url(value: str | None) -> str:
    """The URL ``hokusai_registry.client.resolve_url`` found, checked: http(s), trailing '/' removed."""
    if not value:
        raise InvalidInput("url", MISSING_URL)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput("url", f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def metadata(
    name: str,
    token: str,
    metric_name: str,
    value: float | int | str,
    extra_tags: Mapping[str, str] | None,
) -> Metadata:
    return Metadata(model_name(name), token_id(token), metric(metric_name), baseline(value), tags(extra_tags))
