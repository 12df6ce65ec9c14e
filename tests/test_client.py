"""What every client command shares: which key and URL it uses, the streaming hash, error bodies."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hokusai_registry.client import (
    CHUNK,
    Digest,
    ErrorBody,
    Sha256Meter,
    error_body,
    hash_file,
    hash_stream,
    read_chunks,
    resolve_key,
    resolve_url,
)

KEY_VARS = ("HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*KEY_VARS, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_key_is_the_option_then_hokusai_api_key_then_mlflows_token(clean_env: pytest.MonkeyPatch) -> None:
    assert resolve_key(None) is None
    clean_env.setenv("MLFLOW_TRACKING_TOKEN", "from-mlflow")
    assert resolve_key(None) == "from-mlflow"
    clean_env.setenv("HOKUSAI_API_KEY", "from-hokusai")
    assert resolve_key(None) == "from-hokusai"
    assert resolve_key("given") == "given"


def test_an_empty_key_counts_as_none_at_every_level(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOKUSAI_API_KEY", "")
    clean_env.setenv("MLFLOW_TRACKING_TOKEN", "from-mlflow")
    assert resolve_key("") == "from-mlflow"


def test_the_url_is_the_option_then_mlflow_tracking_uri(clean_env: pytest.MonkeyPatch) -> None:
    assert resolve_url(None) is None
    clean_env.setenv("MLFLOW_TRACKING_URI", "https://from-env.example.com")
    assert resolve_url(None) == "https://from-env.example.com"
    assert resolve_url("") == "https://from-env.example.com"
    assert resolve_url("https://given.example.com") == "https://given.example.com"


def test_the_url_is_not_taken_from_the_key_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HOKUSAI_API_KEY", "k")
    assert resolve_url(None) is None


@pytest.mark.parametrize("seed", range(5))
def test_hash_stream_matches_hashlib_however_the_bytes_are_cut(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 3 * CHUNK))
    cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randrange(0, 50))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert b"".join(chunks) == data
    assert hash_stream(iter(chunks)) == Digest(hashlib.sha256(data).hexdigest(), len(data))


def test_the_meter_hashes_chunk_by_chunk_and_an_empty_stream_is_the_empty_digest() -> None:
    meter = Sha256Meter()
    assert meter.digest() == Digest(hashlib.sha256(b"").hexdigest(), 0)
    meter.update(b"abc")
    meter.update(b"")
    meter.update(b"def")
    assert meter.digest() == Digest(hashlib.sha256(b"abcdef").hexdigest(), 6)
    assert hash_stream([]) == Digest(hashlib.sha256(b"").hexdigest(), 0)


def test_a_file_is_read_in_chunks_and_hashed_whole(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(2 * CHUNK + 5)
    (tmp_path / "weights.bin").write_bytes(data)
    assert [len(c) for c in read_chunks(tmp_path / "weights.bin")] == [CHUNK, CHUNK, 5]
    assert hash_file(tmp_path / "weights.bin") == Digest(hashlib.sha256(data).hexdigest(), len(data))


def test_digests_compare_by_value_and_are_frozen() -> None:
    assert Digest("ab", 1) == Digest("ab", 1) != Digest("ab", 2)
    with pytest.raises(AttributeError):
        Digest("ab", 1).size = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No such file"}),
         ErrorBody("RESOURCE_DOES_NOT_EXIST", "No such file", is_json=True)),
        (json.dumps({"error_code": "UNAUTHENTICATED", "message": "bad key", "detail": "ignored"}),
         ErrorBody("UNAUTHENTICATED", "bad key", is_json=True)),
        (json.dumps({"detail": "Artifact serving is disabled."}),
         ErrorBody("", "Artifact serving is disabled.", is_json=True)),
        (json.dumps({"error_code": 404}), ErrorBody("404", "", is_json=True)),
        ("{}", ErrorBody("", "", is_json=True)),
        ("<html>\n  <h1>413 Request Entity\tToo Large</h1>\n</html>",
         ErrorBody("", "<html> <h1>413 Request Entity Too Large</h1> </html>", is_json=False)),
        ("", ErrorBody("", "", is_json=False)),
        ('["UNAUTHENTICATED"]', ErrorBody("", '["UNAUTHENTICATED"]', is_json=True)),
        ('"Forbidden"', ErrorBody("", '"Forbidden"', is_json=True)),
    ],
)  # fmt: skip
def test_error_body(text: str, expected: ErrorBody) -> None:
    assert error_body(text) == expected


def test_a_long_page_is_cut_to_200_characters() -> None:
    said = error_body("<p>" + "x " * 500 + "</p>")
    assert len(said.message) == 200 and said.message.startswith("<p>x x")
    assert not said.is_json


def test_the_module_stays_light() -> None:
    """Client commands load it without MLflow or the server."""
    code = (
        "import sys, hokusai_registry.client; print([m for m in sys.modules "
        "if m.split('.')[0] == 'mlflow' or m.startswith('hokusai_registry.server')])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
